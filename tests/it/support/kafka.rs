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
//! The helpers panic with context on failure: they are for tests.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Environment variable that names the broker.
pub const BOOTSTRAP_ENV: &str = "KAFKA_BOOTSTRAP_SERVERS";

/// Timeout for single admin/metadata round trips against the test broker.
const OP_TIMEOUT: Duration = Duration::from_secs(15);

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
// names and configs

/// A name no other test (nor an earlier run against the same broker) uses:
/// `PREFIX-PID-MILLIS-COUNTER`, restricted to characters legal in topic names.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let prefix: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{prefix}-{}-{millis}-{n}", std::process::id())
}

/// A client config pointing at `bootstrap`, for tests that build their own clients.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

// -------------------------------------------------------------------------------------------
// topics

/// Creates `name` with `partitions` partitions (replication factor 1) and waits until every
/// partition has a leader in the metadata. Panics if creation fails (including "already
/// exists": use [`unique`] names).
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32) {
    create_topic_with(bootstrap, name, partitions, &[]).await
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

/// [`create_topic`] with topic configs, e.g. `&[("retention.ms", "-1")]`.
pub async fn create_topic_with(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = client_config(bootstrap)
        .create()
        .expect("create Kafka admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    let results = admin
        .create_topics([&topic], &opts)
        .await
        .unwrap_or_else(|e| panic!("create topic {name} at {bootstrap}: {e}"));
    for r in results {
        if let Err((t, code)) = r {
            panic!("create topic {t} at {bootstrap}: {code}");
        }
    }
    // Wait for the metadata to show every partition with a leader.
    let (bootstrap, name) = (bootstrap.to_owned(), name.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = client_config(&bootstrap)
            .create()
            .expect("create metadata client");
        let deadline = Instant::now() + OP_TIMEOUT;
        loop {
            if let Ok(md) = consumer.fetch_metadata(Some(&name), Duration::from_secs(5)) {
                if let Some(t) = md.topics().iter().find(|t| t.name() == name) {
                    if t.error().is_none()
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| p.leader() >= 0)
                    {
                        return;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "topic {name} created but its {partitions} partitions have no leaders after {OP_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .expect("metadata wait panicked");
}

// -------------------------------------------------------------------------------------------
// producing

/// One record to produce. Build with [`Rec::new`] and the chained setters, or convert from a
/// tuple `(partition, key, value, timestamp_ms, headers)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rec {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Rec {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Rec {
            value: Some(value.into()),
            ..Rec::default()
        }
    }
    /// A record with a JSON value.
    pub fn json(value: &serde_json::Value) -> Self {
        Rec::new(serde_json::to_vec(value).expect("serialize JSON"))
    }
    /// A record with a null value.
    pub fn tombstone() -> Self {
        Rec::default()
    }
    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
    pub fn timestamp_ms(mut self, ts: i64) -> Self {
        self.timestamp_ms = Some(ts);
        self
    }
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type RecTuple = (
    Option<i32>,
    Option<Vec<u8>>,
    Vec<u8>,
    Option<i64>,
    Vec<(String, Vec<u8>)>,
);

impl From<RecTuple> for Rec {
    fn from((partition, key, value, timestamp_ms, headers): RecTuple) -> Self {
        Rec {
            partition,
            key,
            value: Some(value),
            timestamp_ms,
            headers,
        }
    }
}

impl From<Vec<u8>> for Rec {
    fn from(value: Vec<u8>) -> Self {
        Rec::new(value)
    }
}

impl From<&str> for Rec {
    fn from(value: &str) -> Self {
        Rec::new(value)
    }
}

impl From<String> for Rec {
    fn from(value: String) -> Self {
        Rec::new(value)
    }
}

/// Where a produced record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Landed {
    pub partition: i32,
    pub offset: i64,
}

/// Produces all `records` to `topic` (idempotent producer, `acks=all`), waits for every
/// delivery report, and returns where each record landed, in input order. Panics on any
/// delivery failure. Sends everything before awaiting, so 10,000 records take well under a
/// second on a local broker.
pub async fn produce<R, I>(bootstrap: &str, topic: &str, records: I) -> Vec<Landed>
where
    R: Into<Rec>,
    I: IntoIterator<Item = R>,
{
    let records: Vec<Rec> = records.into_iter().map(Into::into).collect();
    let producer: FutureProducer = client_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.timeout.ms", "30000")
        .create()
        .expect("create Kafka producer");

    let mut pending = Vec::with_capacity(records.len());
    for rec in &records {
        let mut headers = OwnedHeaders::new_with_capacity(rec.headers.len());
        for (k, v) in &rec.headers {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: Some(v.as_slice()),
            });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = &rec.key {
            fr = fr.key(k.as_slice());
        }
        if let Some(v) = &rec.value {
            fr = fr.payload(v.as_slice());
        }
        if let Some(p) = rec.partition {
            fr = fr.partition(p);
        }
        if let Some(ts) = rec.timestamp_ms {
            fr = fr.timestamp(ts);
        }
        loop {
            match producer.send_result(fr) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    fr = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => panic!("produce to {topic}: enqueue failed: {e}"),
            }
        }
    }

    let results = futures::future::join_all(pending).await;
    results
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok(Ok(d)) => Landed {
                partition: d.partition,
                offset: d.offset,
            },
            Ok(Err((e, _))) => panic!("produce to {topic}: record #{i} not delivered: {e}"),
            Err(_) => panic!("produce to {topic}: record #{i}: producer dropped"),
        })
        .collect()
}

// -------------------------------------------------------------------------------------------
// offsets and reading back

/// The partition ids of `topic`, sorted. Panics if the topic does not exist.
pub async fn partitions(bootstrap: &str, topic: &str) -> Vec<i32> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bootstrap)
            .create()
            .expect("create metadata client");
        partitions_blocking(&c, &topic)
    })
    .await
    .expect("metadata task panicked")
}

fn partitions_blocking(c: &BaseConsumer, topic: &str) -> Vec<i32> {
    let md = c
        .fetch_metadata(Some(topic), OP_TIMEOUT)
        .unwrap_or_else(|e| panic!("metadata for {topic}: {e}"));
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .unwrap_or_else(|| panic!("topic {topic} not in metadata"));
    if let Some(err) = t.error() {
        panic!("metadata for {topic}: {err:?}");
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    ids
}

/// The committed offsets of consumer group `group` for `topic`'s `partitions`: `None` where the
/// group has committed nothing. Reads the group's offsets without joining it.
pub async fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> BTreeMap<i32, Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("create offsets client");
        let got = c
            .committed_offsets(tpl, OP_TIMEOUT)
            .unwrap_or_else(|e| panic!("committed offsets of group {group} on {topic}: {e}"));
        got.elements_for_topic(&topic)
            .into_iter()
            .map(|e| {
                let off = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (e.partition(), off)
            })
            .collect()
    })
    .await
    .expect("committed offsets task panicked")
}

/// The high watermark (next offset to be written) of every partition of `topic`.
pub async fn high_watermarks(bootstrap: &str, topic: &str) -> BTreeMap<i32, i64> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bootstrap)
            .create()
            .expect("create watermark client");
        partitions_blocking(&c, &topic)
            .into_iter()
            .map(|p| {
                let (_low, high) = c
                    .fetch_watermarks(&topic, p, OP_TIMEOUT)
                    .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
                (p, high)
            })
            .collect()
    })
    .await
    .expect("watermark task panicked")
}

/// Reads `topic` from the beginning of every partition (manual assignment, a throwaway group
/// that commits nothing) until `expected` records have arrived or `timeout` has passed, and
/// returns what it read, in arrival order (ordered within each partition). Callers assert on
/// the count: fewer than `expected` means the timeout hit.
pub async fn consume_all(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<OwnedMessage> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bootstrap)
            .set("group.id", unique("consume-all"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .expect("create reader");
        let mut tpl = TopicPartitionList::new();
        for p in partitions_blocking(&c, &topic) {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .expect("add partition");
        }
        c.assign(&tpl).unwrap_or_else(|e| panic!("assign {topic}: {e}"));
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match c.poll(left.min(Duration::from_millis(100))) {
                Some(Ok(m)) => out.push(m.detach()),
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                Some(Err(e)) => panic!("consume {topic}: {e}"),
            }
        }
        out
    })
    .await
    .expect("consume task panicked")
}

/// The payload of a message as UTF-8 text (empty for a tombstone).
pub fn payload_str(m: &OwnedMessage) -> &str {
    m.payload_view::<str>()
        .transpose()
        .expect("payload is not UTF-8")
        .unwrap_or("")
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
