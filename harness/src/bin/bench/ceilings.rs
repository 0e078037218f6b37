//! The two ceilings the sink is measured against: the consume ceiling (a bare consumer with the
//! service's settings; and, as a diagnostic, the consume path with mapping) and the HTTP ceiling
//! (our load generator against the stand-in). Guarantees: each reads everything or fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::{json, Value};
use testkit::events;
use testkit::kafka::{partitions_of, unique};

use elevate_sink::config::{Config, ElevateConfig, MappingConfig};
use elevate_sink::{consumer_config, endpoint, map_record, wire_request, Endpoint, Routes, SourceRecord};

use harness::round;

use crate::procfs::{cpu_split, CpuMeter};

/// Phase 1: a bare consumer with the service's settings reads the whole topic and discards it.
pub fn consume_ceiling(cfg: &Config, topic: &str, expected: u64) -> Result<Value> {
    let c: BaseConsumer = consumer_config(cfg, &[], &unique("bench-ceiling")).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in partitions_of(&c, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let start = Instant::now();
    let mut first = None;
    let mut last = start;
    let mut n = 0u64;
    let mut bytes = 0u64;
    let mut cpu = own_cpu();
    while n < expected {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("consume ceiling: only {n} of {expected} records after 600 s");
        }
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                bytes += m.payload().map_or(0, |p| p.len() as u64);
                n += 1;
                last = Instant::now();
                first.get_or_insert_with(|| {
                    cpu = own_cpu();
                    last
                });
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {}
            Some(Err(e)) => bail!("consume ceiling: {e}"),
        }
    }
    let first = first.unwrap_or(start);
    let secs = (last - first).as_secs_f64().max(1e-3);
    let mut out = json!({
        "records": n,
        "seconds": round(secs, 3),
        "records_per_s": round(n as f64 / secs, 0),
        "mib_per_s": round(bytes as f64 / secs / 1048576.0, 1),
        "startup_s": round((first - start).as_secs_f64(), 3),
    });
    report_cpu(spent(&cpu), &mut out, "record", n);
    Ok(out)
}

/// This process's CPU from now on (librdkafka's threads included).
fn own_cpu() -> CpuMeter {
    CpuMeter::start(&[("self", Some(std::process::id()))])
}

/// The CPU seconds (user, system) this process spent since `meter` started (`/proc/self/stat`,
/// 10 ms ticks).
fn spent(meter: &CpuMeter) -> (f64, f64) {
    meter.split("self").unwrap_or_default()
}

/// Adds `cpu_us_per_{unit}` and `kernel_us_per_{unit}` over `n` to `out`.
fn report_cpu((user, system): (f64, f64), out: &mut Value, unit: &str, n: u64) {
    let per = |secs: f64| round(secs * 1e6 / n.max(1) as f64, 2);
    out[format!("cpu_us_per_{unit}")] = json!(per(user + system));
    out[format!("kernel_us_per_{unit}")] = json!(per(system));
}

/// Phase 1b (diagnostic): the service's consume path without HTTP — a `StreamConsumer` in the
/// group (subscribe), read as `run` reads it (what is ready taken without waiting), each record
/// copied into a `SourceRecord` and mapped by the service's routes as `run` maps it, nothing
/// sent. Its CPU per notification is the sink's per-record work with no request made.
pub async fn stream_ceiling(cfg: &Config, topic: &str, expected: u64) -> Result<Value> {
    use futures::{FutureExt, StreamExt};
    let c: StreamConsumer = consumer_config(cfg, &[], &unique("bench-stream")).create()?;
    c.subscribe(&[topic])?;
    let routes = Routes::from_config(cfg)?;
    let mut stream = c.stream();
    let start = Instant::now();
    let mut first = None;
    let mut last = start;
    let mut n = 0u64;
    let mut notes = 0u64;
    let mut cpu = own_cpu();
    while n < expected {
        if start.elapsed() > Duration::from_secs(600) {
            bail!("stream ceiling: only {n} of {expected} records after 600 s");
        }
        let next = match stream.next().now_or_never() {
            Some(next) => next,
            None => match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
                Ok(next) => next,
                Err(_) => continue,
            },
        };
        let m = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => bail!("stream ceiling: {e}"),
            None => bail!("stream ceiling: the stream ended"),
        };
        let src = SourceRecord::from_message(&m);
        drop(m);
        if let Ok(mapped) = routes.map(&src.topic, src.value.as_deref()) {
            notes += mapped.notifications.len() as u64;
        }
        n += 1;
        last = Instant::now();
        first.get_or_insert_with(|| {
            cpu = own_cpu();
            last
        });
    }
    let first = first.unwrap_or(start);
    let secs = (last - first).as_secs_f64().max(1e-3);
    let mut out = json!({
        "records": n,
        "notifications": notes,
        "seconds": round(secs, 3),
        "records_per_s": round(n as f64 / secs, 0),
        "startup_s": round((first - start).as_secs_f64(), 3),
    });
    let cpu = spent(&cpu);
    report_cpu(cpu, &mut out, "record", n);
    report_cpu(cpu, &mut out, "notification", notes);
    Ok(out)
}

/// Which HTTP client the load generator drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadClient {
    /// The sink's own client (`elevate_sink::Client`, the sink's settings): the ceiling the
    /// ratios use.
    Sink,
    /// An ordinary reqwest client with the settings the sink had before it used its own: a
    /// reference row, what a typical client gets from the same stand-in.
    Reqwest,
}

impl LoadClient {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            LoadClient::Sink => "sink client",
            LoadClient::Reqwest => "reqwest",
        }
    }
}

/// One request's parts, built once by `wire_request`; put together again per request (an
/// `http::Request` does not clone), so the load generator pays no request building.
struct Parts {
    uri: http::Uri,
    headers: http::HeaderMap,
    body: bytes::Bytes,
    /// The same request for reqwest, cloned per request.
    reqwest: reqwest::Request,
}

impl Parts {
    fn of(req: elevate_sink::WireRequest) -> Result<Parts> {
        let (head, body) = req.into_parts();
        let body = body.into_inner().unwrap_or_default();
        let mut r = reqwest::Request::new(reqwest::Method::POST, head.uri.to_string().parse()?);
        *r.headers_mut() = head.headers.clone();
        *r.body_mut() = Some(body.clone().into());
        Ok(Parts {
            uri: head.uri,
            headers: head.headers,
            body,
            reqwest: r,
        })
    }

    fn request(&self) -> elevate_sink::WireRequest {
        let mut req = http::Request::new(http_body_util::Full::new(self.body.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// The client of one load run.
#[derive(Clone)]
enum Driver {
    Sink(Box<elevate_sink::Client>),
    Reqwest(reqwest::Client),
}

impl Driver {
    fn new(client: LoadClient, base: &str, conns: usize) -> Result<Driver> {
        let elevate = ElevateConfig {
            base_url: Some(base.to_string()),
            max_in_flight_requests: conns,
            user_agent: "elevate-sink-bench".into(),
            ..ElevateConfig::default()
        };
        Ok(match client {
            LoadClient::Sink => Driver::Sink(Box::new(elevate_sink::Client::new(&elevate)?)),
            LoadClient::Reqwest => Driver::Reqwest(
                reqwest::Client::builder()
                    .connect_timeout(elevate.connect_timeout)
                    .timeout(elevate.request_timeout)
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(conns)
                    .tcp_nodelay(true)
                    .gzip(true)
                    .redirect(reqwest::redirect::Policy::none())
                    .user_agent(elevate.user_agent.clone())
                    .build()?,
            ),
        })
    }

    /// Sends one request; true on a 204.
    async fn send(&self, p: &Parts) -> bool {
        match self {
            Driver::Sink(c) => matches!(c.exchange(p.request()).await, Ok(a) if a.status == 204),
            Driver::Reqwest(c) => match p.reqwest.try_clone() {
                Some(r) => matches!(c.execute(r).await, Ok(resp) if resp.status().as_u16() == 204),
                None => false,
            },
        }
    }
}

/// Releases `rate` requests per second to the load generator's connections, a millisecond's
/// worth at a time (tokio's timer has millisecond ticks); at most 100 ms of them are banked.
async fn pace(permits: Arc<tokio::sync::Semaphore>, rate: f64, stop: Arc<AtomicBool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last, mut owed) = (Instant::now(), 0.0);
    let cap = (rate / 10.0).max(1.0) as usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let now = Instant::now();
        owed += rate * (now - last).as_secs_f64();
        last = now;
        let whole = owed.floor();
        owed -= whole;
        let room = cap.saturating_sub(permits.available_permits());
        permits.add_permits((whole as usize).min(room));
    }
    permits.close();
}

/// Phase 2: N keep-alive connections post the sink's exact requests (`wire_request`) as fast as
/// answered, through `client`; or, with `paced`, at that many requests per second (the load
/// generator's CPU per request at the sink's own rate: the stand-in then idles as much as it
/// does behind the sink, see docs/performance.md).
pub async fn http_ceiling(
    base: &str,
    client: LoadClient,
    conns: usize,
    secs: f64,
    paced: Option<f64>,
) -> Result<Value> {
    let mapping = MappingConfig::default();
    let ep = Endpoint::new(endpoint(&base.parse()?));
    let mut gen = events::Events::new(99);
    let mut reqs: Vec<Parts> = Vec::new();
    for id in 0..4000 {
        let g = gen.event(1_000_000_000 + id, "2026-11-20T10:15:30.123Z");
        if let Ok(m) = map_record(&mapping, Some(&g.value)) {
            for n in &m.notifications {
                reqs.push(Parts::of(wire_request(&ep, n, true.into(), None)?)?);
            }
        }
    }
    let reqs = Arc::new(reqs);
    let http = Driver::new(client, base, conns)?;
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let permits = Arc::new(tokio::sync::Semaphore::new(0));
    let mut tasks = Vec::new();
    if let Some(rate) = paced {
        tasks.push(tokio::spawn(pace(permits.clone(), rate, stop.clone())));
    }
    for c in 0..conns {
        let (http, reqs, ok, bad, stop) = (http.clone(), reqs.clone(), ok.clone(), bad.clone(), stop.clone());
        let permits = paced.map(|_| permits.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = c * 997;
            while !stop.load(Ordering::Relaxed) {
                if let Some(permits) = &permits {
                    match permits.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                }
                let p = &reqs[i % reqs.len()];
                i += 1;
                if http.send(p).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let me = std::process::id();
    let (ok0, bad0, t0, (user0, sys0)) = (
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        Instant::now(),
        cpu_split(me).unwrap_or_default(),
    );
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let (ok1, bad1, t1, (user1, sys1)) = (
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        Instant::now(),
        cpu_split(me).unwrap_or_default(),
    );
    let per_request = |secs: f64| round(secs * 1e6 / ((ok1 - ok0).max(1)) as f64, 1);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let s = (t1 - t0).as_secs_f64();
    Ok(json!({
        "client": client.name(),
        "paced_per_s": paced.map(|r| round(r, 0)),
        "connections": conns,
        "seconds": round(s, 2),
        "requests_per_s": round((ok1 - ok0) as f64 / s, 0),
        "non_204": bad1 - bad0,
        // The load generator is this process, doing nothing else while it measures.
        "cpu_us_per_request": per_request(user1 + sys1 - user0 - sys0),
        "kernel_us_per_request": per_request(sys1 - sys0),
    }))
}
