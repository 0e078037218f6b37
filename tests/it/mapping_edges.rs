//! Edges of the mapping through the real service (in process), the real broker and the Elevate
//! stand-in (issue 11 items 12 and 14): records that would send nothing are skipped, not
//! dead-lettered, and the visitor's IP reaches Elevate only for the consent levels that allow it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use elevate_sink::admin::Health;
use elevate_sink::config::Config;
use elevate_sink::metrics::Metrics;
use elevate_sink::pipeline;
use elevate_standin::StandIn;
use testkit::metrics;

use crate::support::kafka::{
    committed_offsets, high_watermarks, produce, setup, wait_until_async, Names, Rec,
};

/// The service's config for a test; `elevate` is appended to the `[elevate]` section.
fn config(bs: &str, n: &Names, base_url: &str, elevate: &str) -> Config {
    let toml = format!(
        r#"
[kafka]
bootstrap_servers = "{bs}"
group_id = "{group}"
topics = ["{topic}"]
[kafka.properties]
"fetch.wait.max.ms" = "50"
[elevate]
base_url = "{base_url}"
request_timeout = "5s"
{elevate}
[dead_letter]
topic = "{dlq}"
[pipeline]
commit_interval = "200ms"
[admin]
listen = ""
[log]
level = "warn"
"#,
        group = n.group,
        topic = n.topic,
        dlq = n.dlq,
    );
    Config::from_toml_with_env(&toml, "", Vec::new()).expect("test config is valid")
}

/// Runs the service over everything in `n.topic` (until `last` was accepted and the commit
/// reached the end of every partition), stops it, and returns its metrics exposition.
async fn run_to_the_end(cfg: Config, bs: &str, n: &Names, standin: &StandIn, last: &str) -> String {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(Duration::from_secs(30)));
    let (stop, rx) = watch::channel(false);
    let m = metrics.clone();
    let task = tokio::spawn(async move { pipeline::run(&cfg, m, health, rx).await.expect("pipeline runs") });
    standin
        .wait_for_tickets(&HashSet::from([last.to_string()]), Duration::from_secs(30))
        .await
        .unwrap_or_else(|missing| panic!("not delivered: {missing:?}"));
    wait_until_async(Duration::from_secs(20), "commit reaches the end", || async {
        let high = high_watermarks(bs, &n.topic).await;
        let committed = committed_offsets(bs, &n.group, &n.topic, high.keys().copied()).await;
        high.iter()
            .all(|(p, h)| committed.get(p).copied().flatten() == Some(*h))
    })
    .await;
    let _ = stop.send(true);
    task.await.expect("pipeline task");
    metrics.encode()
}

fn add_to_cart(ticket: &str, ctx: Option<&str>, visitor: Value) -> Value {
    let mut e = json!({
        "type": "add_to_cart", "market": "SE", "customerKey": "cust-edge-1", "sessionKey": "sess-edge-1",
        "visitor": visitor,
        "lines": [{"source": "elevate", "ticket": ticket, "productKey": "p"}],
    });
    if let Some(c) = ctx {
        e["userContext"] = json!(c);
    }
    e
}

/// Item 12: a `page_view` with an odd `userContext` (the issue's example), other records that
/// would produce no request, and keys that the consent level drops are not validated: they are
/// skipped and counted, never dead-lettered. The README: "Only records that would produce a
/// request are checked against the request contract".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_would_send_nothing_are_skipped_not_dead_lettered() {
    let (bs, n) = setup("edges-skip", 1).await;
    let standin = StandIn::start().await.expect("stand-in");
    let records = [
        json!({"type": "page_view", "market": "SE", "userContext": "personal"}),
        json!({"type": "page_view", "market": 7, "visitor": {"ip": 5}, "occurredAt": "yesterday", "lines": {}}),
        json!({"type": "add_to_cart", "market": "SE", "userContext": 1,
               "lines": [{"source": "shop", "ticket": 5}, {"source": "elevate", "ticket": null}]}),
        json!({"type": "add_to_cart", "market": "SE", "userContext": "ANONYMOUS", "customerKey": true,
               "lines": [{"source": "elevate", "ticket": "edge-anon"}]}),
        add_to_cart("edge-last", None, json!({})),
    ];
    produce(&bs, &n.topic, records.iter().map(Rec::json)).await;

    let cfg = config(&bs, &n, &standin.base_url(), "");
    let text = run_to_the_end(cfg, &bs, &n, &standin, "edge-last").await;
    let dead = metrics::by_label(&text, "elevate_sink_dead_lettered_total", "reason");
    assert!(
        dead.values().all(|v| *v == 0.0),
        "records that would send nothing (or only drop bad keys) were dead-lettered: {dead:?}"
    );
    let parked = high_watermarks(&bs, &n.dlq).await;
    assert!(parked.values().all(|h| *h == 0), "dead-letter topic: {parked:?}");
    let skipped = metrics::by_label(&text, "elevate_sink_skipped_total", "reason");
    assert_eq!(skipped.get("not_add_to_cart"), Some(&2.0), "{skipped:?}");
    assert_eq!(skipped.get("not_from_elevate"), Some(&1.0), "{skipped:?}");
    assert_eq!(skipped.get("no_ticket"), Some(&1.0), "{skipped:?}");
    let got: HashSet<String> = standin.accepted_tickets().into_iter().collect();
    assert_eq!(
        got,
        HashSet::from(["edge-anon".to_string(), "edge-last".to_string()])
    );
}

/// The visitor headers each accepted request carried, by ticket: (User-Agent, X-Forwarded-For).
type Seen = BTreeMap<String, (Option<String>, Option<String>)>;

fn seen(standin: &StandIn) -> Seen {
    standin
        .accepted()
        .into_iter()
        .map(|a| (a.ticket, (a.user_agent, a.forwarded_for)))
        .collect()
}

/// One produced case: (ticket, userContext, the visitor IP its event carries).
type Case = (String, Option<&'static str>, String);

/// One event per consent level (and one without `userContext`), each with its own visitor IP.
fn one_per_level(prefix: &str) -> (Vec<Rec>, Vec<Case>) {
    let levels = [
        None,
        Some("PERSONALIZED"),
        Some("UNPERSONALIZED"),
        Some("ANONYMOUS"),
        Some("SYNTHETIC"),
    ];
    let mut recs = Vec::new();
    let mut cases = Vec::new();
    for (i, ctx) in levels.into_iter().enumerate() {
        let ticket = format!("{prefix}-{}", ctx.unwrap_or("omitted").to_lowercase());
        let ip = format!("203.0.113.{}", 10 + i);
        let visitor = json!({"userAgent": format!("ua-{ticket}"), "ip": ip});
        recs.push(Rec::json(&add_to_cart(&ticket, ctx, visitor)));
        cases.push((ticket, ctx, ip));
    }
    (recs, cases)
}

/// Item 14: by default an ANONYMOUS visitor's IP is not forwarded; every other level's is, and
/// the User-Agent is forwarded for all. Checked at the stand-in, which records both headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_ip_is_forwarded_per_consent_level() {
    let (bs, n) = setup("edges-ip", 1).await;
    let standin = StandIn::start().await.expect("stand-in");
    let (mut recs, cases) = one_per_level("ip");
    recs.push(Rec::json(&add_to_cart("ip-last", None, json!({}))));
    produce(&bs, &n.topic, recs).await;

    let cfg = config(&bs, &n, &standin.base_url(), "");
    run_to_the_end(cfg, &bs, &n, &standin, "ip-last").await;
    let seen = seen(&standin);
    for (ticket, ctx, ip) in &cases {
        let (ua, xff) = seen
            .get(ticket)
            .unwrap_or_else(|| panic!("{ticket} not delivered"));
        assert_eq!(ua.as_deref(), Some(format!("ua-{ticket}").as_str()), "{ticket}");
        let want = (*ctx != Some("ANONYMOUS")).then(|| ip.clone());
        assert_eq!(xff, &want, "X-Forwarded-For of {ticket} (userContext {ctx:?})");
    }
}

/// Item 14, configured: `elevate.forward_ip_for` chooses the levels whose IP is forwarded (an
/// operator with a legal basis for it may include ANONYMOUS, or withhold every IP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_ip_for_chooses_the_levels_at_the_standin() {
    let (bs, n) = setup("edges-ip-cfg", 1).await;
    let standin = StandIn::start().await.expect("stand-in");
    let (mut recs, cases) = one_per_level("ipcfg");
    recs.push(Rec::json(&add_to_cart("ipcfg-last", None, json!({}))));
    produce(&bs, &n.topic, recs).await;

    let cfg = config(
        &bs,
        &n,
        &standin.base_url(),
        r#"forward_ip_for = ["ANONYMOUS", "SYNTHETIC"]"#,
    );
    run_to_the_end(cfg, &bs, &n, &standin, "ipcfg-last").await;
    let seen = seen(&standin);
    for (ticket, ctx, ip) in &cases {
        let (ua, xff) = seen
            .get(ticket)
            .unwrap_or_else(|| panic!("{ticket} not delivered"));
        assert!(
            ua.is_some(),
            "{ticket}: the User-Agent is forwarded for every level"
        );
        let want = matches!(ctx, Some("ANONYMOUS" | "SYNTHETIC")).then(|| ip.clone());
        assert_eq!(xff, &want, "X-Forwarded-For of {ticket} (userContext {ctx:?})");
    }
}
