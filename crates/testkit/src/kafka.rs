//! Broker helpers: the one client config, topic creation, produce, offsets and reading back.
//! Guarantees: `create_topic` returns once every partition has a leader; `produce` returns once
//! every record is acknowledged (`acks=all`, idempotent), in input order. Limits: the broker is
//! given (`bootstrap`); errors are typed, and the tests' support turns them into panics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

/// Largest record the helpers' topics and producers take when asked to (`max.message.bytes`,
/// `message.max.bytes`): the hostile corpus has 1 MiB records plus headers.
pub const BIG_RECORD_BYTES: &str = "4194304";

/// Timeout of one admin or metadata round trip, and of the wait for a new topic's leaders.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client call failed.
    #[error("{what}: {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    /// The broker answered, but not what was needed.
    #[error("{0}")]
    Broker(String),
}

fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
    let what = what.into();
    move |source| Error::Kafka { what, source }
}

// -------------------------------------------------------------------------------------------
// names and configs

/// A name no other test or run (nor an earlier one against the same broker) uses:
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

/// The one client config: `bootstrap.servers` and nothing else; callers add what they need.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// A fast, safe producer's config: idempotent, `acks=all`, large batches and queues, records up
/// to [`BIG_RECORD_BYTES`], a minute to deliver each.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .set("message.max.bytes", BIG_RECORD_BYTES)
        .set("message.timeout.ms", "60000");
    c
}

// -------------------------------------------------------------------------------------------
// topics

/// Creates `name` with `partitions` partitions (replication factor 1) and topic `configs`
/// (e.g. `&[("retention.ms", "-1")]`), then waits until every partition has a leader. Fails on
/// "already exists" too: use [`unique`] names.
pub async fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(bootstrap).create().map_err(kafka("admin client"))?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(OP_TIMEOUT));
    let results = admin
        .create_topics([&topic], &opts)
        .await
        .map_err(kafka(format!("create topic {name} at {bootstrap}")))?;
    for r in results {
        if let Err((t, code)) = r {
            return Err(Error::Broker(format!("create topic {t} at {bootstrap}: {code}")));
        }
    }
    let (bootstrap, name) = (bootstrap.to_owned(), name.to_owned());
    blocking(move || await_leaders(&bootstrap, &name, partitions)).await
}

/// Polls the metadata every 50 ms until `name` shows `partitions` partitions, all with a leader.
fn await_leaders(bootstrap: &str, name: &str, partitions: i32) -> Result<(), Error> {
    let c: BaseConsumer = client_config(bootstrap)
        .create()
        .map_err(kafka("metadata client"))?;
    let deadline = Instant::now() + OP_TIMEOUT;
    loop {
        if let Ok(md) = c.fetch_metadata(Some(name), Duration::from_secs(5)) {
            let ready = md.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            });
            if ready {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Broker(format!(
                "topic {name} created but its {partitions} partitions have no leaders after {OP_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Broker(format!("blocking broker task failed: {e}")))?
}

// -------------------------------------------------------------------------------------------
// producing

/// One record to produce. Build with [`Rec::new`] and the chained setters, or convert from a
/// value or a tuple `(partition, key, value, timestamp_ms, headers)`.
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

    /// The record as librdkafka takes it, to `topic`.
    pub fn to_record<'a>(&'a self, topic: &'a str) -> FutureRecord<'a, [u8], [u8]> {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            headers = headers.insert(Header {
                key: k.as_str(),
                value: Some(v.as_slice()),
            });
        }
        let mut fr: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(k) = &self.key {
            fr = fr.key(k.as_slice());
        }
        if let Some(v) = &self.value {
            fr = fr.payload(v.as_slice());
        }
        if let Some(p) = self.partition {
            fr = fr.partition(p);
        }
        if let Some(ts) = self.timestamp_ms {
            fr = fr.timestamp(ts);
        }
        fr
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

/// Enqueues `record`, waiting (2 ms at a time) while the producer's queue is full.
pub async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture, Error>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err((e, _)) => return Err(kafka("produce: enqueue failed")(e)),
        }
    }
}

/// Awaits every delivery; where each record landed, in order, or the first failure.
pub async fn delivered(pending: Vec<DeliveryFuture>) -> Result<Vec<Landed>, Error> {
    futures::future::join_all(pending)
        .await
        .into_iter()
        .enumerate()
        .map(|(i, r)| match r {
            Ok(Ok(d)) => Ok(Landed {
                partition: d.partition,
                offset: d.offset,
            }),
            Ok(Err((e, _))) => Err(kafka(format!("record #{i} not delivered"))(e)),
            Err(_) => Err(Error::Broker(format!("record #{i}: producer dropped"))),
        })
        .collect()
}

/// Produces all `records` to `topic` ([`producer_config`]), waits for every delivery report, and
/// returns where each record landed, in input order. Sends everything before awaiting, so 10,000
/// records take well under a second on a local broker.
pub async fn produce<R, I>(bootstrap: &str, topic: &str, records: I) -> Result<Vec<Landed>, Error>
where
    R: Into<Rec>,
    I: IntoIterator<Item = R>,
{
    let records: Vec<Rec> = records.into_iter().map(Into::into).collect();
    let producer: FutureProducer = producer_config(bootstrap).create().map_err(kafka("producer"))?;
    let mut pending = Vec::with_capacity(records.len());
    for rec in &records {
        pending.push(enqueue(&producer, rec.to_record(topic)).await?);
    }
    delivered(pending).await
}

// -------------------------------------------------------------------------------------------
// offsets and reading back

/// The partition ids of `topic`, sorted, from a client already made.
pub fn partitions_of(c: &BaseConsumer, topic: &str) -> Result<Vec<i32>, Error> {
    let md = c
        .fetch_metadata(Some(topic), OP_TIMEOUT)
        .map_err(kafka(format!("metadata for {topic}")))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| Error::Broker(format!("topic {topic} not in metadata")))?;
    if let Some(err) = t.error() {
        return Err(Error::Broker(format!("metadata for {topic}: {err:?}")));
    }
    let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The partition ids of `topic`, sorted.
pub async fn partitions(bootstrap: &str, topic: &str) -> Result<Vec<i32>, Error> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    blocking(move || {
        let c: BaseConsumer = client_config(&bootstrap)
            .create()
            .map_err(kafka("metadata client"))?;
        partitions_of(&c, &topic)
    })
    .await
}

/// The committed offsets of consumer group `group` for `topic`'s `partitions`: `None` where the
/// group has committed nothing. Reads the group's offsets without joining it.
pub async fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: impl IntoIterator<Item = i32>,
) -> Result<BTreeMap<i32, Option<i64>>, Error> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition(topic, p);
    }
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    blocking(move || {
        let c: BaseConsumer = client_config(&bootstrap)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka("offsets client"))?;
        let got = c
            .committed_offsets(tpl, OP_TIMEOUT)
            .map_err(kafka(format!("committed offsets of group {group} on {topic}")))?;
        Ok(got
            .elements_for_topic(&topic)
            .into_iter()
            .map(|e| {
                let off = match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                };
                (e.partition(), off)
            })
            .collect())
    })
    .await
}

/// The high watermark (next offset to be written) of every partition of `topic`.
pub async fn high_watermarks(bootstrap: &str, topic: &str) -> Result<BTreeMap<i32, i64>, Error> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    blocking(move || {
        let c: BaseConsumer = client_config(&bootstrap)
            .create()
            .map_err(kafka("watermark client"))?;
        partitions_of(&c, &topic)?
            .into_iter()
            .map(|p| {
                let (_low, high) = c
                    .fetch_watermarks(&topic, p, OP_TIMEOUT)
                    .map_err(kafka(format!("watermarks of {topic}/{p}")))?;
                Ok((p, high))
            })
            .collect()
    })
    .await
}

/// Whether `group` has committed exactly `ends` (partition → offset) on `topic`.
pub async fn committed_at(
    bootstrap: &str,
    group: &str,
    topic: &str,
    ends: &BTreeMap<i32, i64>,
) -> Result<bool, Error> {
    let got = committed_offsets(bootstrap, group, topic, ends.keys().copied()).await?;
    Ok(ends.iter().all(|(p, end)| got.get(p) == Some(&Some(*end))))
}

/// Reads `topic` from the beginning of every partition (manual assignment, a throwaway group
/// that commits nothing) until `expected` records have arrived or `timeout` has passed, and
/// returns what it read, in arrival order (ordered within each partition). Callers check the
/// count: fewer than `expected` means the timeout hit.
pub async fn consume_all(
    bootstrap: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<Vec<OwnedMessage>, Error> {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    blocking(move || {
        let c: BaseConsumer = client_config(&bootstrap)
            .set("group.id", unique("consume-all"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .map_err(kafka("reader"))?;
        let mut tpl = TopicPartitionList::new();
        for p in partitions_of(&c, &topic)? {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)
                .map_err(kafka("add partition"))?;
        }
        c.assign(&tpl).map_err(kafka(format!("assign {topic}")))?;
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
                Some(Err(e)) => return Err(kafka(format!("consume {topic}"))(e)),
            }
        }
        Ok(out)
    })
    .await
}

/// The payload of a message as UTF-8 text (empty for a tombstone). Panics on other bytes.
pub fn payload_str(m: &OwnedMessage) -> &str {
    m.payload_view::<str>()
        .transpose()
        .expect("payload is not UTF-8")
        .unwrap_or("")
}

/// The first header `name` of a message, as (lossy) UTF-8 text.
pub fn header(m: &OwnedMessage, name: &str) -> Option<String> {
    m.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
