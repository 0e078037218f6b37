//! The send path at its edges (issue 11, items 4, 5 and 7), against the real broker and the
//! Elevate stand-in: answers about the data's size or shape are parked, not retried forever; the
//! transient budget is charged only for transient attempts; and the quota holds where it is
//! promised, at Elevate's door (the stand-in's arrival times), whatever Elevate's latency does and
//! however the share changes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use elevate_sink::config::{ElevateConfig, MappingConfig, RateConfig, RetryConfig};
use elevate_sink::metrics::Metrics;
use elevate_sink::Limiter;
use elevate_sink::{map_record, Notification};
use elevate_sink::{Outcome, Sender};
use elevate_standin::{max_in_window, Faults, StandIn};

use crate::support::kafka::{consume_all, produce, setup, wait_until, wait_until_async};
use crate::support::sink::{committed_reach_end, config_toml, header, parse, simple, spread, InProcess};

// -------------------------------------------------------------------------------------------
// helpers

fn event(ticket: &str, market: &str) -> serde_json::Value {
    json!({
        "type": "add_to_cart", "market": market, "customerKey": "cust-1", "sessionKey": "sess-1",
        "lines": [{"source": "elevate", "ticket": ticket, "productKey": "p"}],
    })
}

/// The notification the default mapping makes of a one-line event.
fn notification(ticket: &str, market: &str) -> Notification {
    let value = serde_json::to_vec(&event(ticket, market)).unwrap();
    let mut mapped = map_record(&MappingConfig::default(), Some(&value)).expect("event maps");
    assert_eq!(mapped.notifications.len(), 1);
    mapped.notifications.remove(0)
}

/// A sender straight at the stand-in (no Kafka): for the retry budget and the market quotas.
fn sender(standin: &StandIn, in_flight: usize, rate: RateConfig, retry: RetryConfig) -> Arc<Sender> {
    let elevate = ElevateConfig {
        base_url: Some(standin.base_url()),
        request_timeout: Duration::from_secs(10),
        max_in_flight_requests: in_flight,
        ..ElevateConfig::default()
    };
    let limiter = Arc::new(Limiter::new(&rate));
    Arc::new(Sender::new(&elevate, &retry, limiter, Arc::new(Metrics::new())).expect("sender"))
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        ..RetryConfig::default()
    }
}

/// How much later than it left a request may be stamped at the stand-in: the sink and the
/// stand-in share this process's runtime and the test machine's cores, so a request granted at t
/// can be handled at t + tens of ms while a later one is handled at once. Arrivals inside T
/// seconds therefore left within T + `DOOR_JITTER` seconds, and the bound is taken over that.
/// (The fault this guards against was 915 requests in one second at a 100/s quota.)
const DOOR_JITTER: f64 = 0.1;

/// The quota promise checked on arrival times (µs, sorted): in every window of T seconds at most
/// `burst + rate × (T + DOOR_JITTER)` requests, for several T. Returns the densest count per
/// window for the log.
fn assert_quota_at_the_door(who: &str, arrivals_us: &[u64], burst: f64, rate: f64) -> Vec<(f64, usize)> {
    let seen: Vec<(f64, usize)> = [0.5, 1.0, 2.0, 5.0]
        .into_iter()
        .map(|t| (t, max_in_window(arrivals_us, Duration::from_secs_f64(t))))
        .collect();
    for &(t, densest) in &seen {
        let bound = burst + rate * (t + DOOR_JITTER);
        assert!(
            densest as f64 <= bound,
            "{who}: {densest} requests arrived within {t} s; the quota allows {burst} + {rate} × \
             ({t} + {DOOR_JITTER} jitter) = {bound} (densest per window: {seen:?}; {} requests in all)",
            arrivals_us.len()
        );
    }
    seen
}

// -------------------------------------------------------------------------------------------
// item 4: answers about the data's size or shape are data, not configuration

/// 413, 414, 422 and 431 describe the record: it is parked with its status and the commit moves
/// past it (before the fix they were configuration-class and pinned the partition forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_and_shape_answers_are_parked_with_their_status_and_the_commit_moves_past() {
    let (bs, n) = setup("shape", 1).await;
    let standin = StandIn::start().await.unwrap();
    let poison = [
        ("huge", 413),
        ("long-uri", 414),
        ("bad-shape", 422),
        ("big-headers", 431),
    ];
    for (ticket, status) in poison {
        // A deterministic answer: the same every time.
        standin.script(ticket, [status; 1000]);
    }
    let mut records = vec![simple("ok1")];
    records.extend(poison.iter().map(|(t, _)| simple(t)));
    records.push(simple("ok2"));
    let landed = produce(&bs, &n.topic, records).await;
    let sink = InProcess::start(parse(&config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[pipeline]\ncommit_interval = \"50ms\"\n",
    )));
    wait_until_async(
        Duration::from_secs(30),
        "the commit moves past the records answered 413/414/422/431",
        || committed_reach_end(&bs, &n),
    )
    .await;
    let dl = consume_all(&bs, &n.dlq, poison.len(), Duration::from_secs(10)).await;
    assert_eq!(dl.len(), poison.len(), "one parked record per poison record");
    for (i, (ticket, status)) in poison.iter().enumerate() {
        let offset = landed[i + 1].offset.to_string();
        let m = dl
            .iter()
            .find(|m| header(m, "elevate-sink-source-offset").as_deref() == Some(offset.as_str()))
            .unwrap_or_else(|| panic!("{ticket} (answered {status}) not parked"));
        assert_eq!(
            header(m, "elevate-sink-reason").as_deref(),
            Some("rejected"),
            "{ticket}"
        );
        assert_eq!(
            header(m, "elevate-sink-http-status"),
            Some(status.to_string()),
            "{ticket}"
        );
        assert_eq!(
            header(m, "elevate-sink-attempts").as_deref(),
            Some("1"),
            "{ticket}: parked at once"
        );
    }
    let accepted: HashSet<String> = standin.accepted_tickets().into_iter().collect();
    assert_eq!(accepted, HashSet::from(["ok1".to_string(), "ok2".to_string()]));
    sink.stop().await;
}

// -------------------------------------------------------------------------------------------
// item 5: the transient budget is charged for transient attempts only

/// 401, 401, 500, 204 with `max_attempts = 2`: one transient attempt, so it is delivered (before the
/// fix the two 401s counted and the 500 spent the budget: parked as `retries_exhausted`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_answers_do_not_spend_the_transient_budget() {
    let standin = StandIn::start().await.unwrap();
    standin.script("t", [401, 401, 500, 204]);
    let s = sender(
        &standin,
        4,
        RateConfig {
            requests_per_second: 1000.0,
            ..RateConfig::default()
        },
        RetryConfig {
            max_attempts: 2,
            ..fast_retry()
        },
    );
    let outcome = s.send(&notification("t", "SE"), || true).await;
    assert_eq!(outcome, Outcome::Delivered { attempts: 4 });
    assert_eq!(standin.accepted_tickets(), vec!["t".to_string()]);
}

/// A long wait for the rate limiter before the first send does not eat `max_elapsed`: one 500
/// after it is retried, not parked (before the fix the clock started before the limiter wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_limiter_wait_does_not_eat_max_elapsed() {
    let standin = StandIn::start().await.unwrap();
    standin.script("second", [500, 204]);
    let s = sender(
        &standin,
        4,
        // One request every 800 ms, no burst beyond one.
        RateConfig {
            requests_per_second: 1.25,
            burst: 1,
            ..RateConfig::default()
        },
        RetryConfig {
            max_elapsed: Duration::from_millis(400),
            ..fast_retry()
        },
    );
    assert_eq!(
        s.send(&notification("first", "SE"), || true).await,
        Outcome::Delivered { attempts: 1 }
    );
    let started = Instant::now();
    let outcome = s.send(&notification("second", "SE"), || true).await;
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "the limiter made the first attempt wait ({:?})",
        started.elapsed()
    );
    assert_eq!(outcome, Outcome::Delivered { attempts: 2 });
}

/// The budget still works: a ticket answered 500 for longer than `max_elapsed` is parked as
/// `retries_exhausted` (a guard that the fixes above did not switch the budget off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_longer_than_max_elapsed_is_parked() {
    let standin = StandIn::start().await.unwrap();
    standin.script("down", [500; 100]);
    let s = sender(
        &standin,
        4,
        RateConfig {
            requests_per_second: 1000.0,
            ..RateConfig::default()
        },
        RetryConfig {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(50),
            max_elapsed: Duration::from_millis(300),
            ..RetryConfig::default()
        },
    );
    match s.send(&notification("down", "SE"), || true).await {
        Outcome::Park(why) => {
            assert_eq!(why.reason.as_str(), "retries_exhausted");
            assert_eq!(why.status, Some(500));
            assert!(why.attempts >= 2, "{why:?}");
        }
        other => panic!("expected a park, got {other:?}"),
    }
}

/// An answer slower than `elevate.request_timeout` ends the attempt at the timeout as a
/// transient `timeout` (the client's own timer is the only one around an attempt): two attempts
/// of 200 ms against answers of 2 s are parked as `retries_exhausted` well before one answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_slower_than_the_request_timeout_is_a_transient_timeout() {
    let standin = StandIn::start().await.unwrap();
    standin.set_faults(Faults {
        latency_ms: 2000,
        ..Faults::default()
    });
    let elevate = ElevateConfig {
        base_url: Some(standin.base_url()),
        request_timeout: Duration::from_millis(200),
        ..ElevateConfig::default()
    };
    let retry = RetryConfig {
        max_attempts: 2,
        ..fast_retry()
    };
    let rate = RateConfig {
        requests_per_second: 1000.0,
        ..RateConfig::default()
    };
    let limiter = Arc::new(Limiter::new(&rate));
    let s = Sender::new(&elevate, &retry, limiter, Arc::new(Metrics::new())).expect("sender");
    let started = Instant::now();
    match s.send(&notification("slow", "SE"), || true).await {
        Outcome::Park(why) => {
            assert_eq!(why.reason.as_str(), "retries_exhausted", "{why:?}");
            assert_eq!((why.status, why.attempts), (None, 2), "{why:?}");
            assert!(why.detail.ends_with("last answer timeout"), "{why:?}");
        }
        other => panic!("expected a park, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the attempts were not cut at the timeout: {:?}",
        started.elapsed()
    );
}

// -------------------------------------------------------------------------------------------
// item 7: the quota at Elevate's door

/// Elevate slow (3 s answers) while the concurrency bound is the bottleneck, then fast: the densest
/// window at the stand-in stays within `burst + rate × T` (before the fix every task that waited
/// for a slot already held its rate token, and they all fired together when Elevate sped up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_holds_at_the_door_when_latency_drops() {
    let (bs, n) = setup("door-latency", 2).await;
    let standin = StandIn::start().await.unwrap();
    standin.set_faults(Faults {
        latency_ms: 3000,
        ..Faults::default()
    });
    let tickets: Vec<String> = (0..400).map(|i| format!("l{i}")).collect();
    produce(&bs, &n.topic, tickets.iter().map(|t| simple(t))).await;
    let (rate, burst) = (10.0, 5.0);
    // 8 slots at 3 s per answer: 2.7 requests/s, well under the 10/s quota while Elevate is slow.
    let sink = InProcess::start(parse(
        &config_toml(
            &bs,
            &n,
            &standin.base_url(),
            "[rate]\nrequests_per_second = 10\nburst = 5\n",
        )
        .replace("max_in_flight_requests = 32", "max_in_flight_requests = 8")
        // The 3 s answers must not time out (a timeout would be retried: more requests).
        .replace("request_timeout = \"5s\"", "request_timeout = \"10s\""),
    ));
    wait_until(Duration::from_secs(60), "two rounds of slow answers", || {
        standin.requests_total() >= 16
    })
    .await;
    standin.clear_faults();
    let at_drop = standin.requests_total();
    wait_until(Duration::from_secs(60), "six seconds of fast answers", || {
        standin.requests_total() >= at_drop + 60
    })
    .await;
    sink.stop().await;
    let seen = assert_quota_at_the_door("one replica", &standin.arrivals_us(), burst, rate);
    println!("door, latency drop: densest windows {seen:?} (bound {burst} + {rate} × T)");
}

/// A second member joins (the share halves) and leaves (it doubles back) while both have a
/// backlog: each replica's densest window at its own stand-in stays within its
/// `burst_share + rate_share × T` (before the fix each share change started a fresh limiter
/// with a full burst while the old one kept serving its queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_holds_at_the_door_across_a_rebalance() {
    let (bs, n) = setup("door-rebalance", 4).await;
    let (door_a, door_b) = (StandIn::start().await.unwrap(), StandIn::start().await.unwrap());
    let tickets: Vec<String> = (0..600).map(|i| format!("r{i}")).collect();
    // Dealt over the four partitions: B's half must hold records to send.
    produce(&bs, &n.topic, spread(&tickets, 4)).await;
    let (rate, burst) = (10.0, 10.0);
    // Short drains: each replica holds a backlog it cannot send within a drain at its share, and
    // the default 20 s drain made each stop take 20 s.
    let extra = "[rate]\nrequests_per_second = 10\nburst = 10\n[pipeline]\ncommit_interval = \"100ms\"\n\
                 [shutdown]\ndrain_deadline = \"1s\"\ngrace_period = \"10s\"\n";
    let a = InProcess::start(parse(&config_toml(&bs, &n, &door_a.base_url(), extra)));
    wait_until(Duration::from_secs(60), "replica A alone at full share", || {
        door_a.requests_total() >= 30
    })
    .await;
    let b = InProcess::start(parse(&config_toml(&bs, &n, &door_b.base_url(), extra)));
    wait_until(Duration::from_secs(60), "replica B sending its half", || {
        door_b.requests_total() >= 20
    })
    .await;
    b.stop().await;
    let at_leave = door_a.requests_total();
    // Eight seconds at the full share, plus the rebalance. Before the fix A first spent a token
    // on every queued record of the partitions it had lost (about 300, 58 s at 5/s): a revoked
    // backlog held the quota hostage.
    let left = std::time::Instant::now();
    wait_until(
        Duration::from_secs(30),
        "replica A alone again for eight seconds",
        || door_a.requests_total() >= at_leave + 80,
    )
    .await;
    println!(
        "door, rebalance: A sent 80 more {:?} after B left",
        left.elapsed()
    );
    a.stop().await;
    let seen_a = assert_quota_at_the_door("replica A (share 1)", &door_a.arrivals_us(), burst, rate);
    // B owned half of the partitions whenever it sent anything.
    let seen_b = assert_quota_at_the_door(
        "replica B (share 1/2)",
        &door_b.arrivals_us(),
        burst / 2.0,
        rate / 2.0,
    );
    println!("door, rebalance: A {seen_a:?}, B {seen_b:?} (bounds {burst} + {rate} × T and half of it)");
}

/// A market quota holds at the door too, and a market throttled by its own quota does not starve
/// the others of concurrency slots: DK (no market quota) finishes its 30 requests long before SE's
/// backlog could at SE's 2 requests/s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn market_quota_holds_at_the_door_without_starving_other_markets() {
    let standin = StandIn::start().await.unwrap();
    standin.set_faults(Faults {
        latency_ms: 500,
        ..Faults::default()
    });
    let s = sender(
        &standin,
        4,
        RateConfig {
            requests_per_second: 1000.0,
            burst: 100,
            markets: BTreeMap::from([("SE".to_string(), 2.0)]),
            ..RateConfig::default()
        },
        fast_retry(),
    );
    let stop_se = Arc::new(AtomicBool::new(false));
    let mut se = Vec::new();
    for i in 0..40 {
        let (s, stop) = (s.clone(), stop_se.clone());
        se.push(tokio::spawn(async move {
            s.send(&notification(&format!("se{i}"), "SE"), || {
                !stop.load(Ordering::Relaxed)
            })
            .await
        }));
    }
    let started = Instant::now();
    let mut dk = Vec::new();
    for i in 0..30 {
        let s = s.clone();
        dk.push(tokio::spawn(async move {
            s.send(&notification(&format!("dk{i}"), "DK"), || true).await
        }));
    }
    for t in dk {
        assert_eq!(t.await.unwrap(), Outcome::Delivered { attempts: 1 });
    }
    let dk_took = started.elapsed();
    // Let SE run on for a while after DK is done, then give up the rest.
    let se_so_far = standin.accepted().iter().filter(|a| a.market == "SE").count();
    wait_until(Duration::from_secs(30), "SE goes on at its own pace", || {
        standin.accepted().iter().filter(|a| a.market == "SE").count() >= se_so_far + 4
    })
    .await;
    stop_se.store(true, Ordering::Relaxed);
    for t in se {
        let _ = t.await.unwrap();
    }
    let at = |market: &str| -> Vec<u64> {
        let mut v: Vec<u64> = standin
            .accepted()
            .iter()
            .filter(|a| a.market == market)
            .map(|a| a.received_at_ms * 1000)
            .collect();
        v.sort_unstable();
        v
    };
    let seen = assert_quota_at_the_door("market SE", &at("SE"), 2.0, 2.0);
    println!("door, market SE: densest windows {seen:?} (bound 2 + 2 × T); DK's 30 took {dk_took:?}");
    assert!(
        dk_took < Duration::from_secs(10),
        "DK waited {dk_took:?}: SE's quota starved it of slots"
    );
}
