//! Work: what happens to one consumed record, shared by `run` and `replay` — decode, select +
//! map, track in the ledger, then one task per notification (send, or park) that completes its
//! claim. Guarantees: a record's offset is tracked before any of its work starts and completes
//! only after every notification was delivered (204) or parked (dead-letter acked); records of
//! partitions we do not own are refused untouched; records a previous owner finished (in the
//! partition's seeded done map) are done at once, sending nothing, counted as
//! `skipped_total{reason="already_delivered"}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::{Config, MappingConfig, Secret};
use crate::deadletter::{DeadLetter, ParkCause, ParkReason};
use crate::decode::Invalid;
use crate::kafka::{producer_config, SourceRecord};
use crate::ledger::{Claim, Ledger, Track};
use crate::metrics::{label, Metrics};
use crate::replay::Ages;
use crate::select::{map_record, Mapped, Notification, SkipReason};
use crate::send::{Outcome, Sender};
use crate::util::{lock, now_ms};
use crate::wire::Sources;

mod framed;

/// The `skipped_total` reason of a record a previous owner of its partition finished.
pub const ALREADY_DELIVERED: &str = "already_delivered";

/// A partition key: (topic, partition).
pub type Tp = (String, i32);

/// The shared ledger of owned partitions.
pub type SharedLedger = Arc<Mutex<Ledger<Tp>>>;

/// Everything a record needs on its way; share it in an `Arc`.
pub struct Work {
    /// Where fields live in an event.
    pub mapping: MappingConfig,
    /// Sends notifications.
    pub sender: Arc<Sender>,
    /// Parks records.
    pub dead_letter: Arc<DeadLetter>,
    /// Offsets and ownership.
    pub ledger: SharedLedger,
    /// Series to update.
    pub metrics: Arc<Metrics>,
    /// Woken whenever a record completes (backpressure, drain, commit).
    pub wake: Arc<Notify>,
    /// Skip (as `too_old`) events older than this (replay's `--max-age`).
    pub max_age: Option<Duration>,
    /// Ages of delivered notifications' events, when collected (replay's summary): a bounded
    /// histogram, the same size whatever the window.
    pub ages: Option<Mutex<Ages>>,
    /// Topics whose values are Avro or Protobuf, and their decoders (`work/framed.rs`).
    pub sources: Arc<Sources>,
}

/// Maps one record as `run` and `replay` both do: decode + select + map, then the `--max-age`
/// rule (an event older than `max_age` at `now_ms`, by its event time or else the record's
/// timestamp, has its notifications skipped as `too_old`). Pure.
pub fn plan(
    mapping: &MappingConfig,
    src: &SourceRecord,
    max_age: Option<Duration>,
    now_ms: i64,
) -> Result<Mapped, Invalid> {
    Ok(age_rule(
        map_record(mapping, src.value.as_deref())?,
        src,
        max_age,
        now_ms,
    ))
}

/// The `--max-age` rule of [`plan`] on a mapped record.
pub(crate) fn age_rule(
    mut mapped: Mapped,
    src: &SourceRecord,
    max_age: Option<Duration>,
    now_ms: i64,
) -> Mapped {
    let event_ms = mapped.event_time_ms.or(src.timestamp_ms);
    if let (Some(max_age), Some(t)) = (max_age, event_ms) {
        if now_ms - t > max_age.as_millis() as i64 {
            let too_old = mapped.notifications.drain(..).map(|_| SkipReason::TooOld);
            mapped.skipped.extend(too_old);
        }
    }
    mapped
}

impl Work {
    /// The work of `run` and `replay`: the dead-letter producer from `cfg` (idempotent,
    /// acks=all), no `--max-age`, no age collection (set those fields after, for replay).
    pub fn from_config(
        cfg: &Config,
        secrets: &[(String, Secret)],
        sender: Arc<Sender>,
        ledger: SharedLedger,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> Result<Self, crate::pipeline::PipelineError> {
        let producer: rdkafka::producer::FutureProducer = producer_config(cfg, secrets).create()?;
        Ok(Work {
            mapping: cfg.mapping.clone(),
            sender,
            dead_letter: Arc::new(DeadLetter::new(
                producer,
                cfg.dead_letter.topic.clone(),
                metrics.clone(),
            )),
            ledger,
            metrics,
            wake,
            max_age: None,
            ages: None,
            sources: Arc::new(Sources::from_config(cfg)?),
        })
    }

    /// Takes one record. Returns false (and does nothing) if its partition is not owned.
    pub fn take(self: &Arc<Self>, src: SourceRecord) -> bool {
        let key: Tp = (src.topic.clone(), src.partition);
        self.metrics
            .records_consumed
            .get_or_create(&label("topic", &src.topic))
            .inc();
        if self.sources.decoder(&src.topic).is_some() {
            return self.take_framed(src);
        }
        let mapped = plan(&self.mapping, &src, self.max_age, now_ms());
        let mapped = match mapped {
            Ok(m) => m,
            Err(invalid) => {
                let generation = match self.track(&key, src.offset, 1) {
                    Track::Tracked(generation) => generation,
                    Track::AlreadyDelivered => return true,
                    Track::NotOwned | Track::Redelivery => return false,
                };
                let why = ParkReason {
                    reason: ParkCause::Invalid(invalid.reason),
                    detail: invalid.detail,
                    status: None,
                    attempts: 0,
                    line: None,
                };
                let claim = Claim {
                    key,
                    generation,
                    offset: src.offset,
                };
                let this = self.clone();
                tokio::spawn(async move {
                    this.dead_letter.park(&src, &why).await;
                    this.finish(&claim);
                });
                return true;
            }
        };
        let parts = mapped.notifications.len() as u32;
        let generation = match self.track(&key, src.offset, parts) {
            Track::Tracked(generation) => generation,
            Track::AlreadyDelivered => return true,
            Track::NotOwned | Track::Redelivery => return false,
        };
        for reason in &mapped.skipped {
            self.metrics
                .skipped
                .get_or_create(&label("reason", reason.as_str()))
                .inc();
        }
        if parts == 0 {
            return true;
        }
        let src = Arc::new(src);
        for n in mapped.notifications {
            let this = self.clone();
            let src = src.clone();
            let claim = Claim {
                key: key.clone(),
                generation,
                offset: src.offset,
            };
            tokio::spawn(async move {
                if this.deliver(&n, &src, &claim).await {
                    this.finish(&claim);
                }
            });
        }
        true
    }

    /// Sends one notification, or parks it; false when abandoned (the partition was revoked).
    async fn deliver(&self, n: &Notification, src: &SourceRecord, claim: &Claim<Tp>) -> bool {
        let (k, g) = (&claim.key, claim.generation);
        match self.sender.send(n, || lock(&self.ledger).is_current(k, g)).await {
            Outcome::Delivered { .. } => {
                if let (Some(ages), Some(t)) = (&self.ages, n.event_time_ms.or(src.timestamp_ms)) {
                    lock(ages).record(now_ms() - t);
                }
            }
            Outcome::Park(why) => self.dead_letter.park(src, &why).await,
            Outcome::Abandoned => return false,
        }
        true
    }

    /// Tracks a record in the ledger ([`Ledger::track_record`]), counting one a previous owner
    /// finished as `skipped_total{reason="already_delivered"}`.
    pub(crate) fn track(&self, key: &Tp, offset: i64, parts: u32) -> Track {
        let track = lock(&self.ledger).track_record(key, offset, parts);
        if track == Track::AlreadyDelivered {
            self.metrics
                .skipped
                .get_or_create(&label("reason", ALREADY_DELIVERED))
                .inc();
        }
        track
    }

    fn finish(&self, claim: &Claim<Tp>) {
        let mut ledger = lock(&self.ledger);
        ledger.complete(claim);
        self.metrics
            .in_flight_records
            .set(ledger.records_in_flight() as i64);
        self.metrics
            .in_flight_notifications
            .set(ledger.parts_in_flight() as i64);
        drop(ledger);
        self.wake.notify_one();
    }
}
