//! Work: what happens to one consumed record, shared by `run` and `replay` — decode (JSON, or
//! Avro / Protobuf whose schema is cached; one that waits for its schema: `work/framed.rs`),
//! select + map, track in the ledger, then each notification is sent (or parked) and completes
//! its claim: queued in the pool (`work/pool.rs`) when it waits for nothing but a slot and the
//! global quota, else in a task of its own. Guarantees: a record's offset is tracked before any
//! of its work starts and completes only after every notification was delivered (204) or parked
//! (dead-letter acked); records of partitions we do not own are refused untouched; records a
//! previous owner finished (in the partition's seeded done map) are done at once, sending
//! nothing, counted as `skipped_total{reason="already_delivered"}`. Limits: the pool's
//! notifications are sent in the order they were taken; one of a route or market with its own
//! quota waits for that quota holding neither a slot nor a pool worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::ages::Ages;
use crate::backpressure::Bounds;
use crate::config::{Config, Secret};
use crate::deadletter::{DeadLetter, DeadLetterProducer, ParkCause, ParkReason, StartError};
use crate::kafka::{producer_config, SourceRecord};
use crate::ledger::{Claim, Ledger, Track};
use crate::metrics::{label, route_labels, HotCounters, Metrics};
use crate::retry::Backoff;
use crate::route::{RouteInvalid, RouteTag, Routes};
use crate::select::{Mapped, Notification, SkipReason};
use crate::send::{Outcome, Sender, Step};
use crate::util::{lock, now_ms};
use crate::wire::Sources;

mod framed;
mod pool;

use pool::Pool;

/// The `skipped_total` reason of a record a previous owner of its partition finished.
pub const ALREADY_DELIVERED: &str = "already_delivered";

/// Why the work of `run` or `replay` could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WorkError {
    /// The dead-letter producer could not be created.
    #[error(transparent)]
    DeadLetter(#[from] StartError),
    /// The routes (or the value formats) are misconfigured.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// A partition key: (topic, partition).
pub type Tp = (String, i32);

/// The shared ledger of owned partitions.
pub type SharedLedger = Arc<Mutex<Ledger<Tp>>>;

/// Everything a record needs on its way; share it in an `Arc`.
pub struct Work {
    /// Which routes each topic feeds and where their fields live.
    pub routes: Routes,
    /// Per-route quotas (`routes.requests_per_second`), by route name.
    pub route_quotas: crate::route::quota::RouteQuotas,
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
    /// The per-record and per-notification counters, resolved once.
    pub hot: HotCounters,
    /// The loop's in-flight bounds (`[pipeline]`; replay's own), for when to wake it.
    pub bounds: Bounds,
    /// Notifications that wait for nothing but a slot and the global quota, served by at most
    /// `elevate.max_in_flight_requests` workers (`work/pool.rs`, [`Work::queue`]).
    pub(crate) pool: Pool<Job>,
}

/// One notification of a record, queued in the pool.
pub(crate) struct Job {
    n: Notification,
    src: Arc<SourceRecord>,
    claim: Arc<Claim<Tp>>,
}

/// A record parked whole, before any of its notifications is sent: why, and the route it is
/// counted under (`dead_lettered_total` by route) once it is tracked.
struct Unsendable {
    why: ParkReason,
    route: Option<RouteTag>,
}

impl Unsendable {
    /// Counts it under its route, if it has one.
    fn count(&self, work: &Work) {
        if let Some(route) = &self.route {
            work.count_parked(route, &self.why);
        }
    }
}

impl From<RouteInvalid> for Unsendable {
    fn from(RouteInvalid { route, invalid }: RouteInvalid) -> Self {
        Unsendable {
            why: ParkReason {
                reason: ParkCause::Invalid(invalid.reason),
                detail: invalid.detail,
                status: None,
                attempts: 0,
                line: None,
                route: route.as_ref().map(|r| r.name.to_string()),
            },
            route,
        }
    }
}

/// Maps one record as `run` and `replay` both do: decode + select + map for every route its
/// topic feeds, the record's W3C trace headers onto each notification, then the `--max-age`
/// rule (an event older than `max_age` at `now_ms`, by its event time or else the record's
/// timestamp, has its notifications skipped as `too_old`; [`clock`] gives `now_ms`). Pure.
pub fn plan(
    routes: &Routes,
    src: &SourceRecord,
    max_age: Option<Duration>,
    now_ms: i64,
) -> Result<Mapped, RouteInvalid> {
    let mapped = routes.map(&src.topic, src.value.as_deref())?;
    Ok(trace_and_age(mapped, src, max_age, now_ms))
}

/// The `now_ms` of [`plan`]: the time, read only when there is a `--max-age` rule to apply (the
/// rule alone reads it; `run` has none, and a clock read per record is wasted there).
pub(crate) fn clock(max_age: Option<Duration>) -> i64 {
    if max_age.is_some() {
        now_ms()
    } else {
        0
    }
}

/// The trace headers and the `--max-age` rule of [`plan`] on a mapped record.
pub(crate) fn trace_and_age(
    mut mapped: Mapped,
    src: &SourceRecord,
    max_age: Option<Duration>,
    now_ms: i64,
) -> Mapped {
    let trace = crate::route::trace::context(&src.headers);
    for n in &mut mapped.notifications {
        n.trace = trace.clone();
    }
    let event_ms = mapped.event_time_ms.or(src.timestamp_ms);
    if let (Some(max_age), Some(t)) = (max_age, event_ms) {
        if now_ms - t > max_age.as_millis() as i64 {
            for n in mapped.notifications.drain(..) {
                mapped.skipped.push(SkipReason::TooOld);
                mapped.route_skips.push((n.route, SkipReason::TooOld));
            }
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
    ) -> Result<Self, WorkError> {
        let producer = DeadLetterProducer::new(&producer_config(cfg, secrets))?;
        let routes = Routes::from_config(cfg)?;
        Ok(Work {
            bounds: Bounds {
                records: cfg.pipeline.max_in_flight_records,
                parts: cfg.pipeline.max_pending_notifications as u64,
            },
            hot: HotCounters::new(
                &metrics,
                cfg.kafka.topics.iter().map(String::as_str),
                routes.tags(),
            ),
            route_quotas: crate::route::quota::RouteQuotas::new(&routes),
            routes,
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
            pool: Pool::new(cfg.elevate.max_in_flight_requests),
        })
    }

    /// Takes one record. Returns false (and does nothing) if its partition is not owned. A record
    /// of an Avro or Protobuf topic whose schema is cached is decoded here and goes on exactly as
    /// a JSON record; one that has to wait for its schema goes on in a task of its own
    /// (`work/framed.rs`).
    pub fn take(self: &Arc<Self>, src: SourceRecord) -> bool {
        let key: Tp = (src.topic.clone(), src.partition);
        self.hot.consumed(&self.metrics, &src.topic);
        let mapped = match self.sources.decoder(&src.topic) {
            None => plan(&self.routes, &src, self.max_age, clock(self.max_age)).map_err(Unsendable::from),
            Some(decoder) => match self.decode_now(decoder, &src) {
                Some(mapped) => mapped,
                None => return self.take_framed(key, src),
            },
        };
        match mapped {
            Ok(mapped) => self.dispatch(key, src, mapped),
            Err(unsendable) => self.park_record(key, src, unsendable),
        }
    }

    /// Parks a record that cannot be sent at all (tracked as one part, parked in a task of its
    /// own, then done); false if its partition is not owned.
    fn park_record(self: &Arc<Self>, key: Tp, src: SourceRecord, u: Unsendable) -> bool {
        let claim = match self.claim(key, src.offset, 1) {
            Ok(claim) => claim,
            Err(taken) => return taken,
        };
        u.count(self);
        let this = self.clone();
        tokio::spawn(async move {
            this.dead_letter.park(&src, &u.why).await;
            this.finish(&claim);
        });
        true
    }

    /// A mapped record's way on: tracked with one part per notification, its skips counted, its
    /// notifications sent ([`Work::send_all`]); false if its partition is not owned.
    fn dispatch(self: &Arc<Self>, key: Tp, src: SourceRecord, mapped: Mapped) -> bool {
        let parts = mapped.notifications.len() as u32;
        let claim = match self.claim(key, src.offset, parts) {
            Ok(claim) => claim,
            Err(taken) => return taken,
        };
        self.count_skips(&mapped);
        if parts == 0 {
            return true;
        }
        // One claim for all of the record's notifications: no key copy per notification.
        self.send_all(mapped.notifications, Arc::new(src), Arc::new(claim));
        true
    }

    /// Sends a record's notifications, each completing one part of `claim`: queued in the pool,
    /// or, when it waits for a quota of its own, in a task of its own.
    fn send_all(
        self: &Arc<Self>,
        notifications: Vec<Notification>,
        src: Arc<SourceRecord>,
        claim: Arc<Claim<Tp>>,
    ) {
        for n in notifications {
            let (src, claim) = (src.clone(), claim.clone());
            if self.route_quotas.paces(&n.route.name) || self.sender.paces_market(&n.market) {
                // It waits for a quota of its own before its slot: in a task of its own, so
                // the pool's workers never wait behind it.
                let this = self.clone();
                tokio::spawn(async move {
                    if this.deliver(&n, &src, &claim).await {
                        this.finish(&claim);
                    }
                });
            } else {
                self.queue(Job { n, src, claim });
            }
        }
    }

    /// Tracks a record of `parts` parts: its claim, or what [`Work::take`] answers without one
    /// (true: a previous owner finished it; false: its partition is not ours).
    fn claim(&self, key: Tp, offset: i64, parts: u32) -> Result<Claim<Tp>, bool> {
        let claim = lock(&self.ledger).claim(&key, offset, parts);
        claim.map_err(|track| {
            self.count_untracked(track);
            track == Track::AlreadyDelivered
        })
    }

    /// Counts a mapped record's skips, overall and by route.
    fn count_skips(&self, mapped: &Mapped) {
        for reason in &mapped.skipped {
            self.hot.skipped(&self.metrics, *reason);
        }
        for (route, reason) in &mapped.route_skips {
            self.hot.route_skipped(&self.metrics, route, *reason);
        }
    }

    /// Queues `job` in the pool, starting a worker when fewer than the limit are live. A worker
    /// serves jobs until the queue is empty, then stops.
    fn queue(self: &Arc<Self>, job: Job) {
        if self.pool.push(job) {
            let this = self.clone();
            tokio::spawn(async move {
                while let Some(job) = this.pool.next() {
                    this.serve(job).await;
                }
            });
        }
    }

    /// A worker's part of one job: its first attempt. What may take long after it, a retry's
    /// backoff or parking the record, goes on in a task of its own, so the worker takes the next
    /// job at once.
    async fn serve(self: &Arc<Self>, job: Job) {
        let mut backoff = Backoff::new();
        let step = {
            let still_ours = self.still_ours(&job.claim);
            self.sender.step(&job.n, &mut backoff, &still_ours).await
        };
        match step {
            Step::Done(Outcome::Abandoned) => {}
            Step::Done(outcome @ Outcome::Delivered { .. }) => {
                self.conclude(&job.n, &job.src, outcome).await;
                self.finish(&job.claim);
            }
            // Parking, or a retry after its wait: in a task of its own.
            step => {
                let this = self.clone();
                tokio::spawn(async move {
                    let outcome = match step {
                        Step::Done(outcome) => outcome,
                        Step::RetryAfter(wait) => {
                            tokio::time::sleep(wait).await;
                            let still_ours = this.still_ours(&job.claim);
                            this.sender.send_on(&job.n, backoff, still_ours).await
                        }
                    };
                    if this.conclude(&job.n, &job.src, outcome).await {
                        this.finish(&job.claim);
                    }
                });
            }
        }
    }

    /// Whether `claim`'s record is still ours to send: its partition is owned in the assignment
    /// it was taken in (false once the partition was revoked). No lock: [`Claim::is_current`].
    fn still_ours<'a>(&'a self, claim: &'a Claim<Tp>) -> impl Fn() -> bool + 'a {
        move || claim.is_current()
    }

    /// Tracks a record in the ledger ([`Ledger::track_record`]), counting one a previous owner
    /// finished as `skipped_total{reason="already_delivered"}`.
    pub(crate) fn track(&self, key: &Tp, offset: i64, parts: u32) -> Track {
        let track = lock(&self.ledger).track_record(key, offset, parts);
        self.count_untracked(track);
        track
    }

    /// Counts a record a previous owner finished (`track`, not tracked again).
    fn count_untracked(&self, track: Track) {
        if track == Track::AlreadyDelivered {
            self.metrics
                .skipped
                .get_or_create(&label("reason", ALREADY_DELIVERED))
                .inc();
        }
    }

    /// Sends one notification (after its route's quota), or parks it; false when abandoned (the
    /// partition was revoked). The caller completes the claim.
    async fn deliver(&self, n: &Notification, src: &SourceRecord, claim: &Claim<Tp>) -> bool {
        self.route_quotas.wait(&n.route.name).await;
        let outcome = self.sender.send(n, self.still_ours(claim)).await;
        self.conclude(n, src, outcome).await
    }

    /// What follows sending `n`: a delivery counted (and its event's age recorded, when
    /// collected), or the record parked; false when abandoned (the caller completes nothing).
    async fn conclude(&self, n: &Notification, src: &SourceRecord, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Delivered { .. } => {
                self.hot.delivered(&self.metrics, &n.route);
                if let (Some(ages), Some(t)) = (&self.ages, n.event_time_ms.or(src.timestamp_ms)) {
                    lock(ages).record(now_ms() - t);
                }
            }
            Outcome::Park(why) => {
                self.count_parked(&n.route, &why);
                // Boxed: a waiting notification's task stays the size of its wait, not of a
                // produce (see `Sender::send`).
                Box::pin(self.dead_letter.park(src, &why)).await
            }
            Outcome::Abandoned => return false,
        }
        true
    }

    fn count_parked(&self, route: &RouteTag, why: &ParkReason) {
        self.metrics
            .route_dead_lettered
            .get_or_create(&route_labels(route, Some(why.reason.as_str())))
            .inc();
    }

    /// Completes the claim; wakes the loop only when that can change its backpressure decision
    /// or ends a drain ([`Bounds::worth_waking`]); the loop turns at least every 250 ms anyway.
    fn finish(&self, claim: &Claim<Tp>) {
        let mut ledger = lock(&self.ledger);
        let before = ledger.records_in_flight();
        ledger.complete(claim);
        let (records, parts) = (ledger.records_in_flight(), ledger.parts_in_flight());
        drop(ledger);
        self.metrics.in_flight_records.set(records as i64);
        self.metrics.in_flight_notifications.set(parts as i64);
        if self.bounds.worth_waking(records, parts, records < before) {
            self.wake.notify_one();
        }
    }
}

impl From<WorkError> for crate::pipeline::PipelineError {
    fn from(e: WorkError) -> Self {
        match e {
            WorkError::DeadLetter(d) => crate::pipeline::PipelineError::DeadLetter(d),
            WorkError::Config(c) => crate::pipeline::PipelineError::Config(c),
        }
    }
}
