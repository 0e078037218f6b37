//! Elevate stand-in: a real HTTP/1.1 server for the notification family: `POST
//! /api/storefront/v3/notifications/{add-to-cart,click,add-favorite,remove-favorite,end}` and the Admin
//! API's `POST /api/admin/v4/notifications/payment` (with the `Api-Key` set by [`StandIn::set_api_key`]).
//! Guarantees: 204 only to a request that follows its kind's contract (`../shared/elevate-api.md`),
//! each such request recorded once in arrival order with its kind; anything else 400 `{"message"}`
//! naming the problem (401 Api-Key, 404 path, 405 method) and never recorded; faults only when
//! commanded; every answered request counted by status. The Api-Key is never recorded or echoed.
//!
//! Use it in-process ([`StandIn::start`]) or as the `elevate-standin` binary, which adds nothing but
//! flags, signal handling and a dump on exit. Both expose a control API under `/_standin/` on the same
//! port (`GET stats|accepted|faults|limits`, `POST faults|limits|script|outage|reset|dump`); control
//! requests are not counted.
//!
//! It keeps an independent copy of the contract on purpose: no dependency on the product crate.
//!
//! Order for each request: size limits when set ([`Limits`]: 414, 431, 413, as a real server's front
//! end refuses before the application sees the request), latency, dropped connection, fixed status,
//! ticket script, 429, contract check (400/404/405), failure ratio (500), accept (204). A scripted
//! 204 skips the random faults but still runs the contract check.

mod server;
mod validate;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch, Notify};
use tokio::task::JoinHandle;

pub use validate::{
    check, validate, Kind, Parts, Rejection, UserContext, Valid, ADD_FAVORITE_PATH, ADD_TO_CART_PATH,
    CLICK_PATH, END_PATH, PAYMENT_PATH, REMOVE_FAVORITE_PATH,
};

/// One request the stand-in answered 204 and counted as delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// Which endpoint (absent in dumps from before kinds: add-to-cart).
    #[serde(default)]
    pub kind: Kind,
    /// The body's `ticket` (add-to-cart, click); empty for the other kinds.
    pub ticket: String,
    /// The body as received (`null` for end).
    #[serde(default)]
    pub body: serde_json::Value,
    /// The `market` query parameter.
    pub market: String,
    /// The `customerKey` query parameter, if sent.
    pub customer_key: Option<String>,
    /// The `sessionKey` query parameter, if sent.
    pub session_key: Option<String>,
    /// The `userContext` query parameter, if sent (absent means PERSONALIZED).
    pub user_context: Option<UserContext>,
    /// The `User-Agent` header, if sent and valid UTF-8.
    pub user_agent: Option<String>,
    /// The `X-Forwarded-For` header, if sent and valid UTF-8.
    pub forwarded_for: Option<String>,
    /// The W3C `traceparent` header, if sent and valid UTF-8.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The W3C `tracestate` header, if sent and valid UTF-8.
    #[serde(default)]
    pub tracestate: Option<String>,
    /// When the request was accepted, milliseconds since the Unix epoch.
    pub received_at_ms: u64,
}

/// Faults injected into answers; `Faults::default()` injects none.
///
/// JSON form (control API): the same field names, all optional.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction (0..=1) of otherwise valid requests answered 500.
    pub failure_ratio: f64,
    /// Seed of the RNG behind every ratio; set again on each `set_faults`.
    pub seed: u64,
    /// Fixed delay before every answer (and before a drop), in milliseconds.
    pub latency_ms: u64,
    /// Answer the next N requests 429 (counted down, before the contract check).
    pub throttle_next: u64,
    /// Fraction (0..=1) of requests answered 429.
    pub throttle_ratio: f64,
    /// `Retry-After` seconds sent with every 429 (scripted ones too).
    pub retry_after_secs: u64,
    /// Close the connection without answering for the next N requests.
    pub drop_next: u64,
    /// Fraction (0..=1) of requests whose connection is closed without an answer.
    pub drop_ratio: f64,
    /// Answer every request with this status (e.g. 401), valid or not.
    pub fixed_status: Option<u16>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            failure_ratio: 0.0,
            seed: 0,
            latency_ms: 0,
            throttle_next: 0,
            throttle_ratio: 0.0,
            retry_after_secs: 1,
            drop_next: 0,
            drop_ratio: 0.0,
            fixed_status: None,
        }
    }
}

impl Faults {
    /// Checks ratios are in 0..=1 and statuses in 100..=599.
    pub fn check(&self) -> Result<(), String> {
        for (name, r) in [
            ("failure_ratio", self.failure_ratio),
            ("throttle_ratio", self.throttle_ratio),
            ("drop_ratio", self.drop_ratio),
        ] {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("`{name}` must be within 0..=1, got {r}"));
            }
        }
        if let Some(s) = self.fixed_status {
            check_status(s)?;
        }
        Ok(())
    }

    /// True when these faults change nothing.
    fn is_inert(&self) -> bool {
        self.failure_ratio == 0.0
            && self.latency_ms == 0
            && self.throttle_next == 0
            && self.throttle_ratio == 0.0
            && self.drop_next == 0
            && self.drop_ratio == 0.0
            && self.fixed_status.is_none()
    }
}

/// Size limits like a real HTTP server's, checked before anything else; `Limits::default()` sets
/// none (then a body over 1 MiB gets 400, as it always did). They are the server's configuration,
/// like its address: [`StandIn::reset`] keeps them.
///
/// JSON form (control API): the same field names, all optional (`null` = no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest request target (path and query) in bytes; a longer one gets 414 URI Too Long.
    pub max_uri_bytes: Option<usize>,
    /// Largest header section in bytes (each header counts name + value + 4 for `: ` and CRLF);
    /// a larger one gets 431 Request Header Fields Too Large.
    pub max_header_bytes: Option<usize>,
    /// Largest body in bytes; a larger one gets 413 Content Too Large. Replaces the 1 MiB cap.
    pub max_body_bytes: Option<usize>,
}

impl Limits {
    /// The refusal (status, message) for a request of these sizes, in the order a server reads
    /// them: request line, headers, body. Pure.
    pub fn check(&self, uri_bytes: usize, header_bytes: usize, body_bytes: usize) -> Option<(u16, String)> {
        let over = |limit: Option<usize>, n: usize| limit.filter(|&l| n > l);
        if let Some(l) = over(self.max_uri_bytes, uri_bytes) {
            return Some((
                414,
                format!("request target of {uri_bytes} bytes is longer than {l}"),
            ));
        }
        if let Some(l) = over(self.max_header_bytes, header_bytes) {
            return Some((
                431,
                format!("header section of {header_bytes} bytes is larger than {l}"),
            ));
        }
        if let Some(l) = over(self.max_body_bytes, body_bytes) {
            return Some((
                413,
                format!("request body of {body_bytes} bytes is larger than {l}"),
            ));
        }
        None
    }
}

/// A status usable in a script or as `fixed_status`; 0 in a script means "drop the connection".
fn check_status(s: u16) -> Result<(), String> {
    if (100..=599).contains(&s) {
        Ok(())
    } else {
        Err(format!("status {s} is not within 100..=599"))
    }
}

/// How to start a stand-in.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port (kept across outages).
    pub listen: SocketAddr,
    /// File that [`StandIn::dump`] and `POST /_standin/dump` write JSON lines to.
    pub dump_path: Option<PathBuf>,
    /// The `Api-Key` payment requests must carry; `None` refuses every payment (401).
    pub api_key: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            dump_path: None,
            api_key: None,
        }
    }
}

/// Statuses are counted in a fixed table indexed by code.
const STATUS_SLOTS: usize = 600;

/// Request-path state shared by every connection.
struct State {
    /// Accepted requests, in arrival order.
    accepted: Mutex<Vec<Accepted>>,
    /// Woken after every accept and on reset.
    accepted_changed: Notify,
    /// Answers by status code, indexed by code.
    status_counts: Box<[AtomicU64]>,
    /// Requests to the Elevate side (anything but `/_standin/`), answered or dropped.
    requests_total: AtomicU64,
    /// Arrival time of every such request (µs since the Unix epoch, before any injected
    /// latency): what reached Elevate's door and when, for quota checks.
    arrivals: Mutex<Vec<u64>>,
    /// Requests whose connection was closed without an answer.
    dropped_total: AtomicU64,
    /// Fast path: false while `faults` is inert.
    faults_active: AtomicBool,
    /// Current faults.
    faults: RwLock<Faults>,
    /// Fast path: false while no size limit is set.
    limits_active: AtomicBool,
    /// Current size limits.
    limits: RwLock<Limits>,
    /// Remaining "next N" 429s.
    throttle_left: AtomicU64,
    /// Remaining "next N" drops.
    drop_left: AtomicU64,
    /// RNG for the ratios, seeded from `Faults::seed`.
    rng: Mutex<StdRng>,
    /// Fast path: false until a script is set.
    scripts_active: AtomicBool,
    /// Remaining scripted statuses per ticket.
    scripts: Mutex<HashMap<String, VecDeque<u16>>>,
    /// The `Api-Key` payment requests must carry (configuration: reset keeps it).
    api_key: RwLock<Option<String>>,
}

/// Locks, ignoring poisoning (the data stays consistent: every critical section is one operation).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> u64 {
    now_us() / 1000
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The most arrivals (sorted µs timestamps) inside any half-open window `[t, t + window)`.
pub fn max_in_window(sorted_us: &[u64], window: Duration) -> usize {
    densest_window(sorted_us, window).0
}

/// [`max_in_window`] and the first arrival of the densest window (0 when there is none).
pub fn densest_window(sorted_us: &[u64], window: Duration) -> (usize, u64) {
    let w = window.as_micros() as u64;
    let mut start = 0;
    let mut best = (0, 0);
    for (end, &t) in sorted_us.iter().enumerate() {
        while t - sorted_us[start] >= w {
            start += 1;
        }
        if end + 1 - start > best.0 {
            best = (end + 1 - start, sorted_us[start]);
        }
    }
    best
}

/// Takes one from a "next N" counter, if any left.
fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

impl State {
    fn new() -> Self {
        Self {
            accepted: Mutex::new(Vec::new()),
            accepted_changed: Notify::new(),
            status_counts: (0..STATUS_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            requests_total: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
            dropped_total: AtomicU64::new(0),
            faults_active: AtomicBool::new(false),
            faults: RwLock::new(Faults::default()),
            limits_active: AtomicBool::new(false),
            limits: RwLock::new(Limits::default()),
            throttle_left: AtomicU64::new(0),
            drop_left: AtomicU64::new(0),
            rng: Mutex::new(StdRng::seed_from_u64(0)),
            scripts_active: AtomicBool::new(false),
            scripts: Mutex::new(HashMap::new()),
            api_key: RwLock::new(None),
        }
    }

    fn api_key(&self) -> Option<String> {
        self.api_key.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn count_status(&self, status: u16) {
        if let Some(slot) = self.status_counts.get(usize::from(status)) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn status_counts(&self) -> BTreeMap<u16, u64> {
        self.status_counts
            .iter()
            .enumerate()
            .filter_map(|(code, n)| {
                let n = n.load(Ordering::Relaxed);
                (n > 0).then_some((code as u16, n))
            })
            .collect()
    }

    /// Current faults, or `None` when none are active (fast path).
    fn active_faults(&self) -> Option<Faults> {
        if !self.faults_active.load(Ordering::Acquire) {
            return None;
        }
        Some(*self.faults.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set_faults(&self, faults: Faults) {
        let mut current = self.faults.write().unwrap_or_else(|e| e.into_inner());
        *current = faults;
        self.throttle_left.store(faults.throttle_next, Ordering::Release);
        self.drop_left.store(faults.drop_next, Ordering::Release);
        *lock(&self.rng) = StdRng::seed_from_u64(faults.seed);
        self.faults_active.store(!faults.is_inert(), Ordering::Release);
    }

    /// Current limits (no lock while none is set: this runs for every request).
    fn limits(&self) -> Limits {
        if !self.limits_active.load(Ordering::Acquire) {
            return Limits::default();
        }
        *self.limits.read().unwrap_or_else(|e| e.into_inner())
    }

    fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(|e| e.into_inner()) = limits;
        self.limits_active
            .store(limits != Limits::default(), Ordering::Release);
    }

    fn faults(&self) -> Faults {
        let mut f = *self.faults.read().unwrap_or_else(|e| e.into_inner());
        f.throttle_next = self.throttle_left.load(Ordering::Acquire);
        f.drop_next = self.drop_left.load(Ordering::Acquire);
        f
    }

    /// Draws against a ratio (no RNG lock when the ratio is 0 or 1).
    fn roll(&self, ratio: f64) -> bool {
        if ratio <= 0.0 {
            false
        } else if ratio >= 1.0 {
            true
        } else {
            lock(&self.rng).random_bool(ratio)
        }
    }

    fn should_drop(&self, f: &Faults) -> bool {
        take_one(&self.drop_left) || self.roll(f.drop_ratio)
    }

    fn should_throttle(&self, f: &Faults) -> bool {
        take_one(&self.throttle_left) || self.roll(f.throttle_ratio)
    }

    fn script(&self, ticket: String, statuses: Vec<u16>) {
        if statuses.is_empty() {
            return;
        }
        lock(&self.scripts).entry(ticket).or_default().extend(statuses);
        self.scripts_active.store(true, Ordering::Release);
    }

    /// Consumes the next scripted status for `ticket`, if any.
    fn next_scripted(&self, ticket: &str) -> Option<u16> {
        let mut scripts = lock(&self.scripts);
        let queue = scripts.get_mut(ticket)?;
        let next = queue.pop_front();
        if queue.is_empty() {
            scripts.remove(ticket);
        }
        next
    }

    fn record(&self, accepted: Accepted) {
        lock(&self.accepted).push(accepted);
        self.accepted_changed.notify_waiters();
    }

    fn reset(&self) {
        self.set_faults(Faults::default());
        lock(&self.scripts).clear();
        self.scripts_active.store(false, Ordering::Release);
        lock(&self.accepted).clear();
        for slot in self.status_counts.iter() {
            slot.store(0, Ordering::Relaxed);
        }
        self.requests_total.store(0, Ordering::Relaxed);
        lock(&self.arrivals).clear();
        self.dropped_total.store(0, Ordering::Relaxed);
        self.accepted_changed.notify_waiters();
    }

    /// Accepted requests as JSON lines.
    fn accepted_jsonl(&self) -> (Vec<u8>, usize) {
        let accepted = lock(&self.accepted);
        let mut out = Vec::with_capacity(accepted.len() * 160);
        for a in accepted.iter() {
            // Serializing plain strings and numbers into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, a);
            out.push(b'\n');
        }
        (out, accepted.len())
    }
}

/// The accept loop currently running, if any.
struct Listening {
    /// Stops the accept loop (drops the listening socket).
    stop: oneshot::Sender<()>,
    /// The accept loop task.
    task: JoinHandle<()>,
}

/// Listener control: outages and shutdown.
struct Lifecycle {
    /// The running accept loop; `None` during an outage or after shutdown.
    listening: Option<Listening>,
    /// Set by `shutdown`; `outage_end` then does nothing.
    shut_down: bool,
}

/// Everything behind a [`StandIn`] handle.
struct Inner {
    /// The bound address (port resolved), rebound after outages.
    addr: SocketAddr,
    /// Where `dump` writes.
    dump_path: Option<PathBuf>,
    /// Request-path state.
    state: State,
    /// Listener control, serialized.
    lifecycle: tokio::sync::Mutex<Lifecycle>,
    /// Bumped to make open connections close (outage start, shutdown).
    close_connections: watch::Sender<u64>,
}

/// Handle to a running stand-in; cheap to clone, all clones control the same server.
#[derive(Clone)]
pub struct StandIn {
    /// Shared state.
    inner: Arc<Inner>,
}

impl std::fmt::Debug for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Starts on 127.0.0.1 on a free port.
    pub async fn start() -> io::Result<StandIn> {
        Self::start_with(Options::default()).await
    }

    /// Starts on `addr` (port 0 picks a free port).
    pub async fn start_on(addr: SocketAddr) -> io::Result<StandIn> {
        Self::start_with(Options {
            listen: addr,
            ..Options::default()
        })
        .await
    }

    /// Starts on 127.0.0.1 on a free port, taking payments that carry `api_key`.
    pub async fn start_with_api_key(api_key: impl Into<String>) -> io::Result<StandIn> {
        Self::start_with(Options {
            api_key: Some(api_key.into()),
            ..Options::default()
        })
        .await
    }

    /// Starts with full options. Must be called within a tokio runtime.
    pub async fn start_with(options: Options) -> io::Result<StandIn> {
        let listener = server::bind(options.listen)?;
        let addr = listener.local_addr()?;
        let state = State::new();
        *state.api_key.write().unwrap_or_else(|e| e.into_inner()) = options.api_key;
        let inner = Arc::new(Inner {
            addr,
            dump_path: options.dump_path,
            state,
            lifecycle: tokio::sync::Mutex::new(Lifecycle {
                listening: None,
                shut_down: false,
            }),
            close_connections: watch::channel(0).0,
        });
        let listening = server::spawn_accept_loop(inner.clone(), listener);
        inner.lifecycle.lock().await.listening = Some(listening);
        Ok(StandIn { inner })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://IP:PORT`, the base URL to configure a client with.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Full URL of the add-to-cart endpoint (no query).
    pub fn add_to_cart_url(&self) -> String {
        format!("http://{}{ADD_TO_CART_PATH}", self.inner.addr)
    }

    /// Full URL of `kind`'s endpoint (no query).
    pub fn url_of(&self, kind: Kind) -> String {
        format!("http://{}{}", self.inner.addr, kind.path())
    }

    /// Sets the `Api-Key` payment requests must carry; `None` refuses every payment (401).
    /// Configuration like the address: [`StandIn::reset`] keeps it.
    pub fn set_api_key(&self, api_key: Option<String>) {
        *self
            .inner
            .state
            .api_key
            .write()
            .unwrap_or_else(|e| e.into_inner()) = api_key;
    }

    /// Everything accepted so far, in arrival order.
    pub fn accepted(&self) -> Vec<Accepted> {
        lock(&self.inner.state.accepted).clone()
    }

    /// Everything of `kind` accepted so far, in arrival order.
    pub fn accepted_of(&self, kind: Kind) -> Vec<Accepted> {
        lock(&self.inner.state.accepted)
            .iter()
            .filter(|a| a.kind == kind)
            .cloned()
            .collect()
    }

    /// Number of accepted requests.
    pub fn accepted_count(&self) -> usize {
        lock(&self.inner.state.accepted).len()
    }

    /// Tickets of everything accepted so far, in arrival order (duplicates kept).
    pub fn accepted_tickets(&self) -> Vec<String> {
        lock(&self.inner.state.accepted)
            .iter()
            .map(|a| a.ticket.clone())
            .collect()
    }

    /// Answers by status (fault-injected ones included; dropped connections excluded).
    pub fn status_counts(&self) -> BTreeMap<u16, u64> {
        self.inner.state.status_counts()
    }

    /// Requests received on the Elevate side (anything but `/_standin/`), answered or dropped.
    pub fn requests_total(&self) -> u64 {
        self.inner.state.requests_total.load(Ordering::Relaxed)
    }

    /// Arrival times of every request on the Elevate side (answered, refused or dropped), in µs
    /// since the Unix epoch, sorted. Taken before any injected latency: when it reached the door.
    pub fn arrivals_us(&self) -> Vec<u64> {
        let mut a = lock(&self.inner.state.arrivals).clone();
        a.sort_unstable();
        a
    }

    /// The most requests that arrived within any `window` (e.g. 1 s): the quota as Elevate sees it.
    pub fn max_arrivals_in(&self, window: Duration) -> usize {
        max_in_window(&self.arrivals_us(), window)
    }

    /// Requests whose connection was closed without an answer.
    pub fn dropped_total(&self) -> u64 {
        self.inner.state.dropped_total.load(Ordering::Relaxed)
    }

    /// Scripts answers for `ticket`: each request carrying it consumes the next status; then
    /// normal behaviour. 204 means "answer per contract", 0 means "drop the connection".
    /// Appends to an existing script for the same ticket.
    ///
    /// # Panics
    /// On a status that is neither 0 nor within 100..=599.
    pub fn script(&self, ticket: impl Into<String>, statuses: impl IntoIterator<Item = u16>) {
        let statuses: Vec<u16> = statuses.into_iter().collect();
        for &s in &statuses {
            if s != 0 {
                check_status(s).expect("scripted status");
            }
        }
        self.inner.state.script(ticket.into(), statuses);
    }

    /// Replaces the faults (and re-arms the "next N" counters and the RNG seed).
    ///
    /// # Panics
    /// When [`Faults::check`] fails.
    pub fn set_faults(&self, faults: Faults) {
        faults.check().expect("faults");
        self.inner.state.set_faults(faults);
    }

    /// Current faults; `throttle_next` and `drop_next` show what is left.
    pub fn faults(&self) -> Faults {
        self.inner.state.faults()
    }

    /// Removes all faults (scripts stay).
    pub fn clear_faults(&self) {
        self.inner.state.set_faults(Faults::default());
    }

    /// Sets the size limits (see [`Limits`]); `Limits::default()` removes them.
    pub fn set_limits(&self, limits: Limits) {
        self.inner.state.set_limits(limits);
    }

    /// Current size limits.
    pub fn limits(&self) -> Limits {
        self.inner.state.limits()
    }

    /// Clears faults, scripts, accepted requests and counters (size limits stay).
    pub fn reset(&self) {
        self.inner.state.reset();
    }

    /// Starts an outage: stops listening (new connections are refused) and closes open
    /// connections (in-flight requests get their answer first, for at most 1 s). Idempotent.
    pub async fn outage_start(&self) {
        let mut lifecycle = self.inner.lifecycle.lock().await;
        if let Some(l) = lifecycle.listening.take() {
            let _ = l.stop.send(());
            let _ = l.task.await;
        }
        self.inner.close_connections.send_modify(|n| *n += 1);
    }

    /// Ends an outage: listens again on the same address. Idempotent; no-op after shutdown.
    pub async fn outage_end(&self) -> io::Result<()> {
        let mut lifecycle = self.inner.lifecycle.lock().await;
        if lifecycle.shut_down || lifecycle.listening.is_some() {
            return Ok(());
        }
        let listener = server::bind(self.inner.addr)?;
        lifecycle.listening = Some(server::spawn_accept_loop(self.inner.clone(), listener));
        Ok(())
    }

    /// Starts an outage now and ends it after `duration` in the background.
    pub async fn outage_for(&self, duration: Duration) {
        self.outage_start().await;
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            if let Err(e) = this.outage_end().await {
                tracing::error!(error = %e, addr = %this.inner.addr, "stand-in could not listen again after outage");
            }
        });
    }

    /// True while listening (not in an outage, not shut down).
    pub async fn is_listening(&self) -> bool {
        self.inner.lifecycle.lock().await.listening.is_some()
    }

    /// Waits until at least `n` requests were accepted; `Err(count)` on timeout.
    pub async fn wait_for_accepted(&self, n: usize, timeout: Duration) -> Result<(), usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        let state = &self.inner.state;
        loop {
            let changed = state.accepted_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let count = lock(&state.accepted).len();
            if count >= n {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(lock(&state.accepted).len());
            }
        }
    }

    /// Waits until every ticket in `tickets` was accepted; `Err(missing)` on timeout.
    pub async fn wait_for_tickets(
        &self,
        tickets: &HashSet<String>,
        timeout: Duration,
    ) -> Result<(), HashSet<String>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let state = &self.inner.state;
        let mut missing = tickets.clone();
        let mut seen = 0;
        loop {
            let changed = state.accepted_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let accepted = lock(&state.accepted);
                if accepted.len() < seen {
                    // Reset in between: start over.
                    missing = tickets.clone();
                    seen = 0;
                }
                for a in &accepted[seen..] {
                    missing.remove(&a.ticket);
                }
                seen = accepted.len();
            }
            if missing.is_empty() {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(missing);
            }
        }
    }

    /// Writes everything accepted to `path` as JSON lines (one [`Accepted`] per line);
    /// returns how many.
    pub async fn dump_jsonl(&self, path: impl AsRef<Path>) -> io::Result<usize> {
        let (bytes, n) = self.inner.state.accepted_jsonl();
        tokio::fs::write(path, bytes).await?;
        Ok(n)
    }

    /// Dumps to the configured [`Options::dump_path`]; `Ok(None)` when none is configured.
    pub async fn dump(&self) -> io::Result<Option<usize>> {
        match &self.inner.dump_path {
            Some(p) => self.dump_jsonl(p).await.map(Some),
            None => Ok(None),
        }
    }

    /// Stops listening for good and closes open connections (in-flight requests get their
    /// answer first, for at most 1 s). Recorded data stays queryable.
    pub async fn shutdown(&self) {
        self.inner.lifecycle.lock().await.shut_down = true;
        self.outage_start().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_in_window_counts_the_densest_half_open_window() {
        let s = 1_000_000;
        assert_eq!(max_in_window(&[], Duration::from_secs(1)), 0);
        assert_eq!(max_in_window(&[5], Duration::from_secs(1)), 1);
        // 0, 0.5 s, 0.999 s fall in one window; 1.0 s starts the next (half-open).
        let a = [0, s / 2, s - 1, s, 3 * s];
        assert_eq!(max_in_window(&a, Duration::from_secs(1)), 3);
        assert_eq!(max_in_window(&a, Duration::from_secs(2)), 4);
        assert_eq!(densest_window(&a, Duration::from_secs(1)), (3, 0));
        assert_eq!(
            densest_window(&[7, 3 * s, 3 * s + 1], Duration::from_secs(1)),
            (2, 3 * s)
        );
        assert_eq!(densest_window(&[], Duration::from_secs(1)), (0, 0));
    }

    #[test]
    fn limits_refuse_in_the_order_a_server_reads() {
        assert_eq!(Limits::default().check(usize::MAX, usize::MAX, usize::MAX), None);
        let l = Limits {
            max_uri_bytes: Some(100),
            max_header_bytes: Some(200),
            max_body_bytes: Some(300),
        };
        assert_eq!(l.check(100, 200, 300), None, "at the limit is allowed");
        assert_eq!(l.check(101, 201, 301).map(|r| r.0), Some(414));
        assert_eq!(l.check(100, 201, 301).map(|r| r.0), Some(431));
        let (status, message) = l.check(100, 200, 301).unwrap();
        assert_eq!(status, 413);
        assert_eq!(message, "request body of 301 bytes is larger than 300");
    }
}
