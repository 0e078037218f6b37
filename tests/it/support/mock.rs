//! A librdkafka mock cluster for faults a real broker cannot be made to do on cue (one copy for
//! every test that needs it). Guarantee: the cluster lives as long as the guard.

use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

/// Guard for a librdkafka mock cluster: the client that owns it, and its bootstrap address.
pub struct Mock {
    host: FutureProducer,
    pub bootstrap: String,
}

impl Mock {
    pub fn new(topics: &[(&str, i32)]) -> Mock {
        let host: FutureProducer = ClientConfig::new()
            .set("test.mock.num.brokers", "1")
            .set("log_level", "3")
            .create()
            .expect("start a mock cluster");
        let bootstrap = {
            let mock = host.client().mock_cluster().expect("mock cluster");
            // SAFETY: the handle is the live client that owns the mock cluster; the call only
            // sets a number on it (the first join otherwise waits ~3 s).
            unsafe {
                rdkafka::bindings::rd_kafka_mock_group_initial_rebalance_delay_ms(
                    rdkafka::bindings::rd_kafka_handle_mock_cluster(host.client().native_ptr()),
                    50,
                );
            }
            for (t, p) in topics {
                mock.create_topic(t, *p, 1).expect("mock topic");
            }
            mock.bootstrap_servers()
        };
        Mock { host, bootstrap }
    }

    /// Answers the next requests of `api` with `errors`, in order.
    pub fn request_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.host
            .client()
            .mock_cluster()
            .expect("mock cluster")
            .request_errors(api, errors);
    }
}
