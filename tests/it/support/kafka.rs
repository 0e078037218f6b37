//! A real Kafka broker for the integration tests, and small helpers around it.
//!
//! The broker comes from `KAFKA_BOOTSTRAP_SERVERS` (normally `scripts/kafka up`, which CI
//! runs). When that is unset and a Docker engine is reachable, one `apache/kafka` container is
//! started with testcontainers and kept for the whole test process. When neither, the tests
//! fail with instructions: they never skip silently.
//!
//! Every test makes its own topics and groups with [`unique`], so tests run in parallel and
//! can be rerun against the same long-lived broker.
//!
//! The broker helpers themselves are `testkit::kafka`'s; here they panic with context on
//! failure: they are for tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::message::OwnedMessage;
pub use testkit::kafka::{client_config, header, payload_str, unique, Landed, Rec, BIG_RECORD_BYTES};

/// Environment variable that names the broker.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";

// -------------------------------------------------------------------------------------------
// the broker

/// The broker's bootstrap address (`host:port`).
///
/// 1. `KAFKA_BOOTSTRAP_SERVERS` if set (e.g. `export KAFKA_BOOTSTRAP_SERVERS=$(scripts/kafka up)`);
/// 2. else, if a Docker engine is reachable, an `apache/kafka` container started once per test
///    process (testcontainers);
/// 3. else panic, saying how to start a broker.
pub async fn bootstrap() -> String {
    if let Some(b) = env_bootstrap() {
        return b;
    }
    if docker_reachable() {
        // Started on a thread with its own runtime, so the container outlives the per-test
        // runtimes of `#[tokio::test]`.
        return tokio::task::spawn_blocking(container_bootstrap)
            .await
            .expect("testcontainers start thread panicked");
    }
    panic!(
        "no Kafka broker for the integration tests: {BOOTSTRAP_ENV} is unset and no Docker \
         engine is reachable (no /var/run/docker.sock, no DOCKER_HOST).\n\
         Start the project's broker and point the tests at it:\n\n    \
         export {BOOTSTRAP_ENV}=$(scripts/kafka up)\n    cargo test --all-targets\n\n\
         (stop it later with `scripts/kafka down`)"
    );
}

fn env_bootstrap() -> Option<String> {
    std::env::var(BOOTSTRAP_ENV)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn docker_reachable() -> bool {
    std::env::var_os("DOCKER_HOST").is_some_and(|v| !v.is_empty())
        || std::path::Path::new("/var/run/docker.sock").exists()
}

fn container_bootstrap() -> String {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kafka-testcontainer".into())
            .spawn(move || {
                use testcontainers::runners::AsyncRunner;
                use testcontainers_modules::kafka::apache;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for testcontainers");
                rt.block_on(async move {
                    let started = async {
                        let node = apache::Kafka::default().start().await?;
                        let port = node.get_host_port_ipv4(apache::KAFKA_PORT).await?;
                        Ok::<_, testcontainers::TestcontainersError>((node, port))
                    }
                    .await;
                    match started {
                        Ok((node, port)) => {
                            let _ = tx.send(Ok(format!("127.0.0.1:{port}")));
                            // Keep the container (and this runtime) alive for the process.
                            let _keep = node;
                            std::future::pending::<()>().await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e.to_string()));
                        }
                    }
                });
            })
            .expect("spawn testcontainers thread");
        match rx.recv() {
            Ok(Ok(addr)) => addr,
            Ok(Err(e)) => panic!(
                "{BOOTSTRAP_ENV} is unset and starting an apache/kafka container failed: {e}\n\
                 Start the project's broker instead: export {BOOTSTRAP_ENV}=$(scripts/kafka up)"
            ),
            Err(_) => panic!("testcontainers thread died before reporting an address"),
        }
    })
    .clone()
}

// -------------------------------------------------------------------------------------------
// topics and names

/// Creates `name` with `partitions` partitions (replication factor 1) and waits until every
/// partition has a leader in the metadata. Panics if creation fails (including "already
/// exists": use [`unique`] names).
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    create_topic_with(bootstrap, name, partitions, &[]).await
}

/// [`create_topic`] with topic configs, e.g. `&[("retention.ms", "-1")]`.
pub async fn create_topic_with(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    testkit::kafka::create_topic(bootstrap, name, partitions, configs)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The topics and group of one test of the service.
pub struct Names {
    /// Source topic (the test's cart events).
    pub topic: String,
    /// Dead-letter topic.
    pub dlq: String,
    /// The service's consumer group (`kafka.group_id`).
    pub group: String,
}

/// Fresh [`Names`] on `bs`, with the source topic (`partitions`) and the dead-letter topic
/// (1 partition) created.
pub async fn names(bs: &str, prefix: &str, partitions: i32) -> Names {
    let names = Names {
        topic: unique(&format!("{prefix}-in")),
        dlq: unique(&format!("{prefix}-dlq")),
        group: unique(&format!("{prefix}-g")),
    };
    create_topic(bs, &names.topic, partitions).await;
    create_topic(bs, &names.dlq, 1).await;
    names
}

/// The broker and fresh [`Names`] on it (see [`names`]).
pub async fn setup(prefix: &str, partitions: i32) -> (String, Names) {
    let bs = bootstrap().await;
    let n = names(&bs, prefix, partitions).await;
    (bs, n)
}

// -------------------------------------------------------------------------------------------
// producing, offsets and reading back

/// Produces all `records` to `topic` (`testkit::kafka::produce`: idempotent, `acks=all`) and
/// returns where each record landed, in input order. Panics on any delivery failure.
pub async fn produce<R, I>(bootstrap: &str, topic: &str, records: I) -> Vec<Landed>
where
    R: Into<Rec>,
    I: IntoIterator<Item = R>,
{
    testkit::kafka::produce(bootstrap, topic, records)
        .await
        .unwrap_or_else(|e| panic!("produce to {topic}: {e}"))
}

/// The partition ids of `topic`, sorted. Panics if the topic does not exist.
pub async fn partitions(bootstrap: &str, topic: &str) -> Vec<i32> {
    testkit::kafka::partitions(bootstrap, topic)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The committed offsets of consumer group `group` for `topic`'s `partitions`: `None` where the
/// group has committed nothing. Reads the group's offsets without joining it.
pub async fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> BTreeMap<i32, Option<i64>> {
    testkit::kafka::committed_offsets(bootstrap, group, topic, partitions)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The high watermark (next offset to be written) of every partition of `topic`.
pub async fn high_watermarks(bootstrap: &str, topic: &str) -> BTreeMap<i32, i64> {
    testkit::kafka::high_watermarks(bootstrap, topic)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Reads `topic` from the beginning until `expected` records have arrived or `timeout` has
/// passed (`testkit::kafka::consume_all`). Callers assert on the count: fewer than `expected`
/// means the timeout hit.
pub async fn consume_all(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    testkit::kafka::consume_all(bootstrap, topic, expected, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

// -------------------------------------------------------------------------------------------
// waiting

/// Polls `f` every 50 ms until it returns true; panics with `what` after `timeout`.
/// Tests await conditions with this instead of sleeping.
pub async fn wait_until<F: FnMut() -> bool>(timeout: Duration, what: &str, mut f: F) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`wait_until`] with an async condition (e.g. one that queries the broker).
pub async fn wait_until_async<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
