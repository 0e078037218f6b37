//! The `run` pipeline against a real broker and the Elevate stand-in: counting tests for the
//! at-least-once guarantee (issue 3). Each test owns its topics and group; tests that need a
//! process boundary (SIGKILL, SIGTERM) run the built binary.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::message::Message;
use serde_json::json;

use elevate_standin::{Faults, StandIn};

use crate::support::kafka::{
    committed_offsets, consume_all, produce, setup, wait_until, wait_until_async, Rec,
};
use crate::support::sink::{
    committed_reach_end, config_toml, event, header, multiset, parse, simple, spread,
    wait_commit_reaches_end, InProcess, Proc, SIGKILL, SIGTERM,
};

/// 1. 10,000 mixed records: exactly the expected tickets, committed offsets reach the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_mixed_records_deliver_exactly_the_expected_tickets() {
    let (bs, n) = setup("mixed", 4).await;
    let standin = StandIn::start().await.unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let mut expected = HashSet::new();
    let mut records = Vec::new();
    let contexts = [
        None,
        Some("PERSONALIZED"),
        Some("UNPERSONALIZED"),
        Some("ANONYMOUS"),
        Some("SYNTHETIC"),
    ];
    for i in 0..10_000 {
        let kind = if rng.random_bool(0.15) {
            "page_view"
        } else {
            "add_to_cart"
        };
        let nlines = rng.random_range(1..=3);
        let mut lines = Vec::new();
        for j in 0..nlines {
            let t = format!("t{i}-{j}");
            match rng.random_range(0..4) {
                0 => lines.push(json!({"source": "elevate", "ticket": t.clone()})),
                1 => lines.push(json!({"source": "elevate", "ticket": t.clone()})),
                2 => lines.push(json!({"source": "elevate"})),
                _ => lines.push(json!({"source": "shop", "ticket": t.clone()})),
            }
            if kind == "add_to_cart" && lines.last().unwrap()["source"] == "elevate" {
                if let Some(t) = lines.last().unwrap()["ticket"].as_str() {
                    expected.insert(t.to_string());
                }
            }
        }
        let ctx = contexts[i % contexts.len()];
        let mut e = json!({"type": kind, "market": "SE", "customerKey": format!("c{i}"), "sessionKey": format!("s{i}"), "lines": lines});
        if let Some(c) = ctx {
            e["userContext"] = json!(c);
        }
        records.push(Rec::json(&e).key(format!("k{i}")));
    }
    produce(&bs, &n.topic, records).await;
    let cfg = parse(&config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[rate]\nrequests_per_second = 20000\nburst = 1000\n[pipeline]\ncommit_interval = \"200ms\"\n",
    ));
    let sink = InProcess::start(cfg);
    standin
        .wait_for_tickets(&expected, Duration::from_secs(120))
        .await
        .unwrap_or_else(|missing| panic!("{} tickets never arrived", missing.len()));
    wait_until_async(
        Duration::from_secs(30),
        "committed offsets reach the end of every partition",
        || committed_reach_end(&bs, &n),
    )
    .await;
    let accepted = multiset(standin.accepted_tickets());
    let got: HashSet<String> = accepted.keys().cloned().collect();
    assert_eq!(got, expected, "accepted tickets differ from the expected set");
    let dups: usize = accepted.values().map(|c| c - 1).sum();
    assert_eq!(dups, 0, "a clean run sends each ticket once");
    assert_eq!(
        standin.status_counts().get(&400),
        None,
        "every request followed the contract"
    );
    // Consent rules reached the wire: anonymous visitors' keys never left.
    for a in standin.accepted() {
        if a.user_context.map(|c| c.as_str()) == Some("ANONYMOUS") {
            assert!(a.customer_key.is_none() && a.session_key.is_none());
        }
    }
    println!("mixed: {} tickets delivered from 10000 records", expected.len());
    sink.stop().await;
}

/// 2. 500, 500, 204: delivered, and the committed offset stays below it while it is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_ticket_holds_back_the_commit_until_delivered() {
    let (bs, n) = setup("retry", 1).await;
    let standin = StandIn::start().await.unwrap();
    // Each answer takes 1 s, so the retry window is at least 2 s long whatever the jitter.
    standin.set_faults(Faults {
        latency_ms: 1000,
        ..Faults::default()
    });
    standin.script("slow", [500, 500, 204]);
    let landed = produce(&bs, &n.topic, ["a", "slow", "b", "c"].map(simple)).await;
    let slow_offset = landed[1].offset;
    let end = landed[3].offset + 1;
    let cfg = parse(&config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[retry]\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n[pipeline]\ncommit_interval = \"50ms\"\n",
    ));
    let sink = InProcess::start(cfg);
    let others: HashSet<String> = ["a", "b", "c"].map(String::from).into();
    standin
        .wait_for_tickets(&others, Duration::from_secs(30))
        .await
        .unwrap();
    // While "slow" is still being retried, the committed position must not pass it.
    let mut observations = 0;
    while !standin.accepted_tickets().contains(&"slow".to_string()) {
        let c = committed_offsets(&bs, &n.group, &n.topic, [0]).await[&0];
        if standin.accepted_tickets().contains(&"slow".to_string()) {
            break;
        }
        assert!(
            c.unwrap_or(0) <= slow_offset,
            "committed {c:?} passed unfinished offset {slow_offset}"
        );
        observations += 1;
    }
    assert!(
        observations > 0,
        "never observed the commit while the ticket was retried"
    );
    assert_eq!(standin.status_counts().get(&500), Some(&2));
    wait_until_async(Duration::from_secs(20), "commit reaches the end", || async {
        committed_offsets(&bs, &n.group, &n.topic, [0]).await[&0] == Some(end)
    })
    .await;
    println!("retry: {observations} commit observations while retrying, all <= {slow_offset}");
    sink.stop().await;
}

/// 3. A 400: parked with reason, status and source coordinates; committed only after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_request_is_dead_lettered_before_its_offset_is_committed() {
    let (bs, n) = setup("reject", 1).await;
    let standin = StandIn::start().await.unwrap();
    standin.script("bad", [400]);
    let landed = produce(
        &bs,
        &n.topic,
        [
            simple("ok1"),
            simple("bad").key("the-key").header("trace", "abc"),
            simple("ok2"),
        ],
    )
    .await;
    let bad_offset = landed[1].offset;
    let cfg = parse(&config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[pipeline]\ncommit_interval = \"50ms\"\n",
    ));
    let sink = InProcess::start(cfg);
    wait_until_async(
        Duration::from_secs(30),
        "commit passes the rejected record",
        || async { committed_offsets(&bs, &n.group, &n.topic, [0]).await[&0].unwrap_or(0) > bad_offset },
    )
    .await;
    // The commit passed it, so the dead-letter record must already be there.
    let dl = consume_all(&bs, &n.dlq, 1, Duration::from_secs(5)).await;
    assert_eq!(
        dl.len(),
        1,
        "dead-letter record present once the offset is committed"
    );
    let m = &dl[0];
    assert_eq!(m.key(), Some(&b"the-key"[..]));
    assert_eq!(
        header(m, "trace").as_deref(),
        Some("abc"),
        "original headers kept"
    );
    assert_eq!(header(m, "elevate-sink-reason").as_deref(), Some("rejected"));
    assert_eq!(header(m, "elevate-sink-http-status").as_deref(), Some("400"));
    assert_eq!(
        header(m, "elevate-sink-source-topic").as_deref(),
        Some(n.topic.as_str())
    );
    assert_eq!(header(m, "elevate-sink-source-partition").as_deref(), Some("0"));
    assert_eq!(
        header(m, "elevate-sink-source-offset"),
        Some(bad_offset.to_string())
    );
    assert!(header(m, "elevate-sink-detail").is_some_and(|d| !d.is_empty()));
    let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    assert_eq!(v["lines"][0]["ticket"], "bad", "original value kept");
    let accepted: HashSet<String> = standin.accepted_tickets().into_iter().collect();
    assert!(accepted.contains("ok1") && accepted.contains("ok2") && !accepted.contains("bad"));
    assert!(
        sink.series("elevate_sink_commits_total") > 0.0,
        "commits are counted"
    );
    sink.stop().await;
}

/// 4. Hostile records: each parked with a reason naming the problem; the service keeps going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_records_are_dead_lettered_with_named_reasons() {
    let (bs, n) = setup("hostile", 1).await;
    let standin = StandIn::start().await.unwrap();
    let mut no_customer = event(&[("elevate", Some("x"))], Some("PERSONALIZED"));
    no_customer.as_object_mut().unwrap().remove("customerKey");
    let cases: Vec<(Rec, &str, &str)> = vec![
        (Rec::new("{\"type\": \"add_to_cart\", "), "malformed_json", "JSON"),
        (
            Rec::json(
                &json!({"type": "add_to_cart", "market": 46, "lines": [{"source": "elevate", "ticket": "x"}]}),
            ),
            "wrong_type",
            "market",
        ),
        (Rec::json(&no_customer), "missing_field", "customerKey"),
        (
            Rec::new(b"{\"type\":\"add_to_cart\",\"market\":\"S\xffE\"}".to_vec()),
            "invalid_utf8",
            "UTF-8",
        ),
    ];
    let mut records: Vec<Rec> = cases.iter().map(|(r, _, _)| r.clone()).collect();
    records.push(simple("after"));
    produce(&bs, &n.topic, records).await;
    let cfg = parse(&config_toml(&bs, &n, &standin.base_url(), ""));
    let sink = InProcess::start(cfg);
    standin
        .wait_for_tickets(&HashSet::from(["after".to_string()]), Duration::from_secs(30))
        .await
        .unwrap();
    let dl = consume_all(&bs, &n.dlq, cases.len(), Duration::from_secs(20)).await;
    assert_eq!(dl.len(), cases.len());
    for (i, (_, reason, needle)) in cases.iter().enumerate() {
        let m = dl
            .iter()
            .find(|m| header(m, "elevate-sink-source-offset") == Some(i.to_string()))
            .unwrap_or_else(|| panic!("record {i} not dead-lettered"));
        assert_eq!(
            header(m, "elevate-sink-reason").as_deref(),
            Some(*reason),
            "record {i}"
        );
        let detail = header(m, "elevate-sink-detail").unwrap();
        assert!(
            detail.contains(needle),
            "record {i}: detail {detail:?} should name {needle}"
        );
    }
    wait_until_async(Duration::from_secs(20), "commit reaches the end", || {
        committed_reach_end(&bs, &n)
    })
    .await;
    assert!(!sink.is_finished(), "the service keeps running");
    sink.stop().await;
}

/// 5. Elevate down for longer than max.poll.interval.ms: no rebalance, and everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_outage_keeps_the_group_and_loses_nothing() {
    let (bs, n) = setup("outage", 2).await;
    let standin = StandIn::start().await.unwrap();
    let extra = r#"
[retry]
initial_backoff = "100ms"
max_backoff = "500ms"
[pipeline]
max_in_flight_records = 20
max_pending_notifications = 20
commit_interval = "100ms"
"#;
    let mut toml = config_toml(&bs, &n, &standin.base_url(), extra);
    toml = toml.replace(
        "[kafka.properties]\n",
        "[kafka.properties]\n\"max.poll.interval.ms\" = \"6000\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
    );
    let sink = InProcess::start(parse(&toml));
    produce(&bs, &n.topic, (0..5).map(|i| simple(&format!("warm{i}")))).await;
    let warm: HashSet<String> = (0..5).map(|i| format!("warm{i}")).collect();
    standin
        .wait_for_tickets(&warm, Duration::from_secs(30))
        .await
        .unwrap();
    let assigns_before = sink.series("elevate_sink_rebalances_total{kind=\"assign\"}");

    standin.outage_start().await;
    let tickets: HashSet<String> = (0..200).map(|i| format!("o{i}")).collect();
    produce(&bs, &n.topic, tickets.iter().map(|t| simple(t))).await;
    wait_until(
        Duration::from_secs(20),
        "partitions paused for backpressure",
        || sink.series("elevate_sink_paused_partitions") > 0.0,
    )
    .await;
    // The outage itself is the scenario: it must outlast max.poll.interval.ms (6 s).
    tokio::time::sleep(Duration::from_secs(10)).await;
    standin.outage_end().await.unwrap();
    standin
        .wait_for_tickets(&tickets, Duration::from_secs(60))
        .await
        .unwrap();
    wait_until_async(Duration::from_secs(20), "commit reaches the end", || {
        committed_reach_end(&bs, &n)
    })
    .await;
    assert_eq!(
        sink.series("elevate_sink_rebalances_total{kind=\"revoke\"}"),
        0.0,
        "no partition was revoked"
    );
    assert_eq!(
        sink.series("elevate_sink_rebalances_total{kind=\"assign\"}"),
        assigns_before,
        "no reassignment happened"
    );
    assert!(sink.series("elevate_sink_retries_total") > 0.0);
    sink.stop().await;
}

/// 6. SIGKILL mid-stream, restart: every ticket arrives at least once; duplicates are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let (bs, n) = setup("kill", 3).await;
    let standin = StandIn::start().await.unwrap();
    let tickets: Vec<String> = (0..1500).map(|i| format!("k{i}")).collect();
    produce(&bs, &n.topic, tickets.iter().map(|t| simple(t))).await;
    let toml = config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[rate]\nrequests_per_second = 500\nburst = 10\n[pipeline]\ncommit_interval = \"200ms\"\n",
    );
    let mut first = Proc::spawn(&toml);
    wait_until(Duration::from_secs(60), "a third of the tickets arrived", || {
        standin.accepted_count() >= 500
    })
    .await;
    first.signal(SIGKILL);
    first.child.wait().await.unwrap();
    let before = standin.accepted_count();
    assert!(before < tickets.len(), "killed mid-stream");
    let mut second = Proc::spawn(&toml);
    let expected: HashSet<String> = tickets.iter().cloned().collect();
    if let Err(missing) = standin.wait_for_tickets(&expected, Duration::from_secs(90)).await {
        panic!("{} tickets lost; log:\n{}", missing.len(), second.log());
    }
    let dups = standin.accepted_count() - expected.len();
    println!(
        "sigkill: {} tickets, {before} before the kill, {dups} duplicates ({:.2}%)",
        expected.len(),
        dups as f64 * 100.0 / expected.len() as f64
    );
    second.signal(SIGTERM);
    let status = second.child.wait().await.unwrap();
    assert!(
        status.success(),
        "second instance exit: {status}; log:\n{}",
        second.log()
    );
}

/// 7. Two instances in one group, one stopped mid-stream: nothing lost.
///
/// The records are produced only once both members own partitions: produced before, the first
/// member to join could finish them all before the second one joined (it did, now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_stopped_mid_stream_lose_nothing() {
    let (bs, n) = setup("pair", 6).await;
    let standin = StandIn::start().await.unwrap();
    let tickets: Vec<String> = (0..1200).map(|i| format!("p{i}")).collect();
    let toml = config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[rate]\nrequests_per_second = 300\nburst = 10\nshare_by_partitions = false\n[pipeline]\ncommit_interval = \"200ms\"\n",
    )
    .replace("[kafka.properties]\n", "[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n");
    let a = InProcess::start(parse(&toml));
    let b = InProcess::start(parse(&toml));
    wait_until(
        Duration::from_secs(60),
        "the six partitions are split between both members",
        || {
            let (pa, pb) = (
                a.series("elevate_sink_assigned_partitions"),
                b.series("elevate_sink_assigned_partitions"),
            );
            pa > 0.0 && pb > 0.0 && pa + pb == 6.0
        },
    )
    .await;
    // Dealt over the six partitions: both members' partitions must hold records.
    produce(&bs, &n.topic, spread(&tickets, 6)).await;
    wait_until(Duration::from_secs(60), "both members took work", || {
        a.series("elevate_sink_notifications_total") > 0.0
            && b.series("elevate_sink_notifications_total") > 0.0
    })
    .await;
    let summary = b.stop().await;
    println!(
        "pair: stopped one member mid-stream ({summary:?}) at {} accepted",
        standin.accepted_count()
    );
    let expected: HashSet<String> = tickets.into_iter().collect();
    standin
        .wait_for_tickets(&expected, Duration::from_secs(90))
        .await
        .unwrap_or_else(|m| panic!("{} lost", m.len()));
    wait_commit_reaches_end(&bs, &n, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!("pair: {} duplicates", standin.accepted_count() - expected.len());
    a.stop().await;
}

/// 8. SIGTERM under load: exit 0 within the drain deadline, final commit done, and a restart
/// re-sends at most what was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_commits_and_exits_zero() {
    let (bs, n) = setup("term", 2).await;
    let standin = StandIn::start().await.unwrap();
    standin.set_faults(Faults {
        latency_ms: 50,
        ..Faults::default()
    });
    let tickets: Vec<String> = (0..2000).map(|i| format!("s{i}")).collect();
    produce(&bs, &n.topic, tickets.iter().map(|t| simple(t))).await;
    let max_in_flight = 40;
    let toml = config_toml(
        &bs,
        &n,
        &standin.base_url(),
        &format!(
            "[rate]\nrequests_per_second = 400\nburst = 10\n[pipeline]\nmax_in_flight_records = {max_in_flight}\n\
             max_pending_notifications = {max_in_flight}\ncommit_interval = \"5s\"\n[shutdown]\ndrain_deadline = \"5s\"\ngrace_period = \"10s\"\n"
        ),
    );
    let mut p = Proc::spawn(&toml);
    wait_until(Duration::from_secs(60), "load is flowing", || {
        standin.accepted_count() >= 300
    })
    .await;
    let sent = Instant::now();
    p.signal(SIGTERM);
    let status = p.child.wait().await.unwrap();
    let took = sent.elapsed();
    assert!(status.success(), "exit status {status}; log:\n{}", p.log());
    assert!(
        took < Duration::from_secs(5) + Duration::from_secs(3),
        "took {took:?} (deadline 5 s)"
    );
    let first_run = standin.accepted_count();
    // The final commit covered everything the first run delivered (commit_interval is 5 s, so
    // only the shutdown commit can explain this).
    let committed: i64 = committed_offsets(&bs, &n.group, &n.topic, [0, 1])
        .await
        .values()
        .map(|o| o.unwrap_or(0))
        .sum();
    assert!(
        committed as usize >= first_run.saturating_sub(max_in_flight),
        "committed {committed} of {first_run} delivered"
    );
    let mut q = Proc::spawn(&toml);
    let expected: HashSet<String> = tickets.iter().cloned().collect();
    standin
        .wait_for_tickets(&expected, Duration::from_secs(60))
        .await
        .unwrap_or_else(|m| panic!("{} lost", m.len()));
    let dups = standin.accepted_count() - expected.len();
    println!(
        "sigterm: exit in {took:?}, {first_run} delivered before, committed {committed}, {dups} re-sent"
    );
    assert!(
        dups <= max_in_flight,
        "re-sent {dups} > in-flight bound {max_in_flight}"
    );
    q.signal(SIGTERM);
    assert!(q.child.wait().await.unwrap().success());
}

/// 9. A 200/s quota over 10 s: the observed rate is within ±5 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_of_200_per_second_is_held_within_five_percent() {
    let (bs, n) = setup("quota", 2).await;
    let standin = StandIn::start().await.unwrap();
    let tickets: Vec<String> = (0..2600).map(|i| format!("q{i}")).collect();
    produce(&bs, &n.topic, tickets.iter().map(|t| simple(t))).await;
    let cfg = parse(&config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[rate]\nrequests_per_second = 200\nburst = 5\n",
    ));
    let sink = InProcess::start(cfg);
    wait_until(Duration::from_secs(60), "12 s of traffic", || {
        let a = standin.accepted();
        a.len() > 10 && a.last().unwrap().received_at_ms - a[0].received_at_ms >= 12_000
    })
    .await;
    let a = standin.accepted();
    let t0 = a[0].received_at_ms + 1000; // skip the first second (start-up)
    let in_window = a
        .iter()
        .filter(|x| x.received_at_ms >= t0 && x.received_at_ms < t0 + 10_000)
        .count();
    let rate = in_window as f64 / 10.0;
    println!(
        "quota: {rate:.1} requests/s over 10 s at a 200/s quota ({:+.2}%)",
        (rate - 200.0) / 2.0
    );
    assert!((190.0..=210.0).contains(&rate), "observed {rate}/s");
    sink.stop().await;
}

/// Configuration-class answers (401) never dead-letter the stream: the record is retried, the
/// commit stays below it, and it is delivered once Elevate accepts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_stall_but_never_dead_letter() {
    let (bs, n) = setup("cfgerr", 1).await;
    let standin = StandIn::start().await.unwrap();
    standin.set_faults(Faults {
        fixed_status: Some(401),
        ..Faults::default()
    });
    let cfg = parse(&config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[retry]\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\nmax_attempts = 2\n[pipeline]\ncommit_interval = \"50ms\"\n",
    ));
    let sink = InProcess::start(cfg);
    produce(&bs, &n.topic, [simple("held")]).await;
    // Counted by the sink once it has read each answer (the stand-in counts it before that).
    wait_until(
        Duration::from_secs(30),
        "several 401s retried past the transient budget",
        || sink.series("elevate_sink_config_errors_total{status=\"401\"}") >= 4.0,
    )
    .await;
    assert!(standin.status_counts().get(&401).copied().unwrap_or(0) >= 4);
    assert_eq!(
        sink.series("elevate_sink_dead_lettered_total"),
        0.0,
        "nothing parked"
    );
    let held = committed_offsets(&bs, &n.group, &n.topic, [0]).await[&0];
    assert!(held.unwrap_or(0) == 0, "commit passed the held record: {held:?}");
    standin.clear_faults();
    standin
        .wait_for_tickets(&HashSet::from(["held".to_string()]), Duration::from_secs(30))
        .await
        .unwrap();
    wait_until_async(Duration::from_secs(20), "commit reaches the end", || {
        committed_reach_end(&bs, &n)
    })
    .await;
    assert!(
        consume_all(&bs, &n.dlq, 1, Duration::from_secs(1))
            .await
            .is_empty(),
        "dead-letter topic empty"
    );
    sink.stop().await;
}

/// A market held back by its own quota does not hold back the others in the pipeline either:
/// with 4 requests in flight, 40 SE records (SE at 2/s) taken before 30 DK records, DK is all
/// delivered long before SE's backlog could be (20 s). Before the pool sent SE's notifications
/// in tasks of their own, its 4 workers waited on SE's turn and DK came after SE's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_market_with_its_own_quota_does_not_hold_back_the_others() {
    let (bs, n) = setup("marketlane", 1).await;
    let standin = StandIn::start().await.unwrap();
    let in_market = |market: &str, ticket: String| {
        let mut e = event(&[("elevate", Some(ticket.as_str()))], None);
        e["market"] = json!(market);
        Rec::json(&e)
    };
    let se = (0..40).map(|i| in_market("SE", format!("se{i}")));
    let dk = (0..30).map(|i| in_market("DK", format!("dk{i}")));
    produce(&bs, &n.topic, se.chain(dk)).await;
    let mut cfg = parse(&config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[rate]\nrequests_per_second = 1000\nburst = 100\n[rate.markets]\nSE = 2.0\n[shutdown]\ndrain_deadline = \"1s\"\n",
    ));
    cfg.elevate.max_in_flight_requests = 4;
    let started = Instant::now();
    let sink = InProcess::start(cfg);
    let dk_count = || standin.accepted().iter().filter(|a| a.market == "DK").count();
    wait_until(Duration::from_secs(60), "DK's 30 delivered", || dk_count() == 30).await;
    let dk_took = started.elapsed();
    let se_by_then = standin.accepted().iter().filter(|a| a.market == "SE").count();
    println!("DK's 30 took {dk_took:?}; SE had {se_by_then} of 40 by then");
    assert!(
        se_by_then < 40,
        "SE's backlog was through first ({se_by_then}): the test proves nothing"
    );
    assert!(
        dk_took < Duration::from_secs(10),
        "DK waited {dk_took:?} behind SE's quota"
    );
    sink.stop().await;
}

/// A route's own quota holds in the pipeline: 21 notifications of a route at 10/s (burst 1) are
/// spread over at least 2 s at Elevate's door. (The pool's workers do not wait for route quotas:
/// a route with one must send in tasks of its own.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_quota_paces_the_route_in_the_pipeline() {
    let (bs, n) = setup("routelane", 1).await;
    let standin = StandIn::start().await.unwrap();
    produce(&bs, &n.topic, (0..21).map(|i| simple(&format!("r{i}")))).await;
    let cfg = parse(&config_toml(
        &bs,
        &n,
        &standin.base_url(),
        "[[routes]]\nname = \"slow\"\nkind = \"add-to-cart\"\nrequests_per_second = 10.0\n",
    ));
    let sink = InProcess::start(cfg);
    wait_until(Duration::from_secs(60), "21 delivered", || {
        standin.accepted().len() == 21
    })
    .await;
    let at: Vec<i64> = standin
        .accepted()
        .iter()
        .map(|a| a.received_at_ms as i64)
        .collect();
    let span = at.iter().max().unwrap() - at.iter().min().unwrap();
    println!("21 notifications of a 10/s route over {span} ms");
    assert!(span >= 1_900, "21 at 10/s arrived within {span} ms");
    sink.stop().await;
}

/// A retry's wait holds up nothing else: with 4 requests in flight, the first 4 answered 429 with
/// `Retry-After: 5`, the 30 records behind them are delivered while those 4 wait, and the 4 after.
/// (The pool's workers hand a retry to a task of its own and take the next notification.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_waiting_out_a_retry_after_hold_up_nothing_else() {
    let (bs, n) = setup("retrylane", 1).await;
    let standin = StandIn::start().await.unwrap();
    standin.set_faults(Faults {
        throttle_next: 4,
        retry_after_secs: 5,
        ..Faults::default()
    });
    produce(&bs, &n.topic, (0..34).map(|i| simple(&format!("w{i}")))).await;
    let mut cfg = parse(&config_toml(&bs, &n, &standin.base_url(), ""));
    cfg.elevate.max_in_flight_requests = 4;
    let started = Instant::now();
    let sink = InProcess::start(cfg);
    wait_until(Duration::from_secs(60), "30 delivered", || {
        standin.accepted().len() >= 30
    })
    .await;
    let others_took = started.elapsed();
    wait_until(Duration::from_secs(60), "all 34 delivered", || {
        standin.accepted().len() == 34
    })
    .await;
    let all_took = started.elapsed();
    println!("30 delivered after {others_took:?}, all 34 after {all_took:?}");
    assert!(
        others_took < Duration::from_secs(4),
        "the others waited {others_took:?} behind the retries' 5 s"
    );
    assert!(
        all_took >= Duration::from_secs(5),
        "the retries did not wait: {all_took:?}"
    );
    sink.stop().await;
}
