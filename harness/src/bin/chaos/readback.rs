//! The end of a run, read back from the broker: what the dead-letter topic holds for the run's
//! source topic, and whether the group committed to the end. Guarantees: read-only, bounded.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use testkit::kafka::client_config;

/// A dead-letter record of the run's source topic.
pub struct Parked {
    /// Source (partition, offset).
    pub source: (i32, i64),
    /// `elevate-sink-http-status`, if any.
    pub status: Option<String>,
}

/// Every dead-letter record whose source topic is `topic`.
pub async fn dead_lettered(bs: &str, dlq: &str, topic: &str) -> Vec<Parked> {
    let (bs, dlq, topic) = (bs.to_string(), dlq.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bs)
            .set("group.id", "chaos-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "100")
            .create()
            .expect("reader");
        let md = c
            .fetch_metadata(Some(&dlq), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for p in md.topics()[0].partitions() {
            let (_, high) = c
                .fetch_watermarks(&dlq, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            ends.insert(p.id(), high);
            tpl.add_partition_offset(&dlq, p.id(), Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut pos: HashMap<i32, i64> = ends.keys().map(|p| (*p, 0)).collect();
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        while pos.iter().any(|(p, o)| *o < ends[p]) && Instant::now() < deadline {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(200)) {
                pos.insert(m.partition(), m.offset() + 1);
                let h = |name: &str| {
                    m.headers().and_then(|hs| {
                        hs.iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                if h("elevate-sink-source-topic").as_deref() == Some(topic.as_str()) {
                    if let (Some(p), Some(o)) = (
                        h("elevate-sink-source-partition").and_then(|s| s.parse().ok()),
                        h("elevate-sink-source-offset").and_then(|s| s.parse().ok()),
                    ) {
                        out.push(Parked {
                            source: (p, o),
                            status: h("elevate-sink-http-status"),
                        });
                    }
                }
            }
        }
        out
    })
    .await
    .expect("reader task")
}

/// A (topic, partition).
pub type Tp = (String, i32);

/// Whether the group's committed offsets equal the high watermarks of every partition of the
/// `(topic, partitions)` given, and how far behind each partition is (-1: could not be read).
pub async fn committed_at_end(bs: &str, group: &str, sources: &[(&str, i32)]) -> (bool, HashMap<Tp, i64>) {
    let (bs, group) = (bs.to_string(), group.to_string());
    let sources: Vec<(String, i32)> = sources.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bs)
            .set("group.id", &group)
            .create()
            .expect("client");
        let mut tpl = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for (topic, partitions) in &sources {
            for p in 0..*partitions {
                let Ok((_, high)) = c.fetch_watermarks(topic, p, Duration::from_secs(10)) else {
                    return (false, HashMap::from([((topic.clone(), p), -1)]));
                };
                ends.insert((topic.clone(), p), high);
                tpl.add_partition(topic, p);
            }
        }
        let Ok(got) = c.committed_offsets(tpl, Duration::from_secs(10)) else {
            return (false, HashMap::from([((String::new(), 0), -1)]));
        };
        let mut behind = HashMap::new();
        for e in got.elements() {
            let c = match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            };
            let tp = (e.topic().to_string(), e.partition());
            let end = ends.get(&tp).copied().unwrap_or(0);
            behind.insert(tp, end - c);
        }
        (behind.values().all(|&b| b == 0), behind)
    })
    .await
    .expect("offsets task")
}
