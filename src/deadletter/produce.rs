//! The dead-letter producer: rdkafka's `BaseProducer` with a polling thread of our own.
//! Guarantees: every send gets its delivery result (acknowledged, or the producer's error); an idle
//! producer's thread only blocks in librdkafka, waking ten times a second. Limits: after an event
//! the rest of that 100 ms window can still end in up to 1 ms of zero-timeout polls (see below).
//!
//! Why not rust-rdkafka's `FutureProducer`: its thread calls `poll(100 ms)`, which waits in
//! whole milliseconds of the time left (truncated): 99 ms, then the last fraction of a millisecond
//! with timeout 0 in a busy loop, every window. Idle, `elevate-sink run` spent 0.92 % of a core in
//! that thread (276 ms of CPU in 30 s, 27 ticks; the whole process 308 ms), and 0.04 % in this one
//! (12–13 ms, 0 ticks; the process 47–50 ms). We poll 100 ms and 50 µs: the first wait is the
//! whole 100 ms, and a timed wait returns late by about the kernel's timer slack (50 µs) or more,
//! so no fraction is left to spin on. `poll(Timeout::Never)` would never wake, but nothing safe can
//! wake it to stop the thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::client::{Client, ClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer as _, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::IntoOpaque;
use tokio::sync::oneshot;

/// One poll of the thread: 100 ms, plus a fraction no longer than the kernel's timer slack
/// (50 µs) and far longer than the time between `poll` taking its deadline and converting it (well
/// under 1 µs; some µs in a debug build), so the truncated first wait is the whole 100 ms and
/// nothing is left after it. If the thread is preempted in between, that one window waits 99 ms
/// and spins up to 1 ms, as `FutureProducer` does in every window.
const POLL: Duration = Duration::from_micros(100_050);

/// How long a send waits before it tries a full queue again (as `FutureProducer::send`).
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(100);

/// The polling thread's name when none is given.
const THREAD_NAME: &str = "deadletter-poll";

/// Why the producer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// librdkafka refused the configuration.
    #[error("the dead-letter producer could not be created: {0}")]
    Kafka(#[from] KafkaError),
    /// The polling thread could not be spawned.
    #[error("the dead-letter producer's polling thread could not start: {0}")]
    Thread(#[source] std::io::Error),
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    /// The partition it was written to.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
}

/// The delivery result a send waits for.
type Report = Result<Delivered, KafkaError>;

/// Hands each delivery report to the send waiting for it.
pub struct ReportContext;

impl ClientContext for ReportContext {}

impl ProducerContext for ReportContext {
    type DeliveryOpaque = Box<oneshot::Sender<Report>>;

    fn delivery(&self, result: &DeliveryResult<'_>, tx: Self::DeliveryOpaque) {
        let report = match result {
            Ok(m) => Ok(Delivered {
                partition: m.partition(),
                offset: m.offset(),
            }),
            Err((e, _)) => Err(e.clone()),
        };
        // The send may have been dropped (its task cancelled): nobody to tell.
        let _ = tx.send(report);
    }
}

/// The producer and its polling thread, which stops (and is joined) when this is dropped.
pub struct DeadLetterProducer {
    /// Shared with the polling thread.
    base: Arc<BaseProducer<ReportContext>>,
    /// Tells the thread to stop after its current poll.
    stop: Arc<AtomicBool>,
    /// The polling thread, joined on drop.
    thread: Option<JoinHandle<()>>,
}

impl DeadLetterProducer {
    /// A producer from `config` (e.g. `kafka::producer_config`) with its polling thread.
    pub fn new(config: &ClientConfig) -> Result<Self, StartError> {
        Self::with_thread_name(config, THREAD_NAME)
    }

    /// [`DeadLetterProducer::new`] with the polling thread named `name` (at most 15 bytes show in
    /// `/proc`), so that a test can find its thread.
    pub fn with_thread_name(config: &ClientConfig, name: &str) -> Result<Self, StartError> {
        let base: Arc<BaseProducer<ReportContext>> = Arc::new(config.create_with_context(ReportContext)?);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (base, stop) = (base.clone(), stop.clone());
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        base.poll(POLL);
                    }
                })
                .map_err(StartError::Thread)?
        };
        Ok(DeadLetterProducer {
            base,
            stop,
            thread: Some(thread),
        })
    }

    /// Sends `record` and waits for its delivery report: `Ok` once the broker acknowledged it, or
    /// the producer's error. A full local queue is tried again every 100 ms until `queue_timeout`
    /// has passed, then reported as `QueueFull` (as `FutureProducer::send`).
    pub async fn send<K, P>(&self, record: BaseRecord<'_, K, P>, queue_timeout: Duration) -> Report
    where
        K: rdkafka::message::ToBytes + ?Sized,
        P: rdkafka::message::ToBytes + ?Sized,
    {
        let start = Instant::now();
        let (tx, rx) = oneshot::channel();
        let mut record = with_opaque(record, Box::new(tx));
        loop {
            match self.base.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if start.elapsed() < queue_timeout =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
        // Every queued record gets a report, at the latest when the producer is dropped (it purges
        // them); a lost one (never seen) would be librdkafka's bug, reported as cancelled.
        rx.await.unwrap_or(Err(KafkaError::Canceled))
    }

    /// The librdkafka client (e.g. its fatal error).
    pub fn client(&self) -> &Client<ReportContext> {
        self.base.client()
    }
}

/// `record` with the delivery opaque `opaque` (rdkafka only sets one on a record that has one).
fn with_opaque<'a, K, P, D>(record: BaseRecord<'a, K, P>, opaque: D) -> BaseRecord<'a, K, P, D>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
    D: IntoOpaque,
{
    BaseRecord {
        topic: record.topic,
        partition: record.partition,
        payload: record.payload,
        key: record.key,
        timestamp: record.timestamp,
        headers: record.headers,
        delivery_opaque: opaque,
    }
}

impl Drop for DeadLetterProducer {
    /// Stops the thread after its current poll (at most about 100 ms), then the producer itself
    /// is dropped: librdkafka purges what is still queued (reporting it as purged) and closes.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::warn!("the dead-letter producer's polling thread panicked");
            }
        }
    }
}
