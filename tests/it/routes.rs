//! Routes through the real binary, the real broker and the stand-in (issue 14): a cart topic and an
//! order topic feed add-to-cart, click, favourites, end and payment at once; each kind's request
//! follows the contract, bad records park naming the field and the route, the payment Api-Key
//! stays out of logs, `/metrics` and dead-letter headers, bots are skipped, trace context flows.

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use elevate_standin::{Accepted, Kind, StandIn, UserContext};

use crate::support::kafka::{bootstrap, consume_all, create_topic, header, produce, unique, Rec};

const BIN: &str = env!("CARGO_BIN_EXE_elevate-sink");
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// `elevate-sink run` with stderr captured; killed when dropped.
struct Sink {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Sink {
    fn start(config: &std::path::Path, api_key: &str) -> Sink {
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("ELEVATE_SINK_CONFIG")
            .env("ROUTES_IT_API_KEY", api_key)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn elevate-sink run");
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Sink { child, stderr }
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn metrics(admin: SocketAddr) -> String {
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    match c.get(format!("http://{admin}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Every kind's route over two topics; debug logging, so a leak would show.
fn config(
    bs: &str,
    cart: &str,
    orders: &str,
    dlq: &str,
    group: &str,
    base: &str,
    admin: SocketAddr,
) -> String {
    format!(
        r#"
[kafka]
bootstrap_servers = "{bs}"
group_id = "{group}"
topics = ["{cart}", "{orders}"]
[kafka.properties]
"fetch.wait.max.ms" = "50"
[elevate]
base_url = "{base}"
payment_api_key = {{ env = "ROUTES_IT_API_KEY" }}
[dead_letter]
topic = "{dlq}"
[pipeline]
commit_interval = "200ms"
[retry]
initial_backoff = "50ms"
[admin]
listen = "{admin}"
[log]
level = "debug"

[[routes]]
name = "cart"
kind = "add-to-cart"
topics = ["{cart}"]
[[routes]]
name = "clicks"
kind = "click"
topics = ["{cart}"]
[[routes]]
name = "fav-add"
kind = "add-favorite"
topics = ["{cart}"]
[[routes]]
name = "fav-remove"
kind = "remove-favorite"
topics = ["{cart}"]
[[routes]]
name = "ends"
kind = "end"
topics = ["{cart}"]
[[routes]]
name = "payments"
kind = "payment"
topics = ["{orders}"]
"#
    )
}

/// An event of `type` for session `s` (customer `c-{s}`) with `extra` fields.
fn event(kind: &str, s: &str, extra: Value) -> Value {
    let mut e = json!({
        "type": kind, "market": "SE", "customerKey": format!("c-{s}"), "sessionKey": s,
        "visitor": {"userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "ip": "203.0.113.7"},
    });
    e.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    e
}

fn line(variant: &str, quantity: Value, price: Value, cost: f64) -> Value {
    json!({"variantKey": variant, "quantity": quantity, "sellingPrice": price, "cost": cost})
}

/// The one accepted request of session `s`.
fn of_session<'a>(accepted: &'a [Accepted], s: &str) -> &'a Accepted {
    let mine: Vec<&Accepted> = accepted
        .iter()
        .filter(|a| a.session_key.as_deref() == Some(s))
        .collect();
    assert_eq!(mine.len(), 1, "session {s}: {mine:?}");
    mine[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_over_two_topics_follows_the_contract_and_parks_bad_records() {
    let bs = bootstrap().await;
    let (cart, orders, dlq, group) = (
        unique("routes-cart"),
        unique("routes-orders"),
        unique("routes-dlq"),
        unique("routes-g"),
    );
    for t in [&cart, &orders, &dlq] {
        create_topic(&bs, t, 1).await;
    }
    let api_key = format!("adm-{}", unique("key"));
    let standin = StandIn::start_with_api_key(api_key.clone()).await.unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        config(&bs, &cart, &orders, &dlq, &group, &standin.base_url(), admin),
    )
    .unwrap();

    let tag = unique("s");
    let s = |n: &str| format!("{tag}-{n}");
    let cart_line = |t: &str| json!({"lines": [{"source": "elevate", "ticket": t}, {"source": "shop", "productKey": "p9"}]});
    let cart_records = vec![
        Rec::json(&event("add_to_cart", &s("atc"), cart_line("T-atc"))),
        Rec::json(&event("click", &s("click"), json!({"ticket": "T-click"})))
            .header("traceparent", TRACEPARENT),
        Rec::json(&event("add_favorite", &s("fav"), json!({"productKey": "p1"}))),
        Rec::json(&event(
            "remove_favorite",
            &s("unfav"),
            json!({"variantKey": "v1"}),
        )),
        Rec::json(&event("session_end", &s("end"), json!({}))),
        // Bad: both keys.
        Rec::json(&event(
            "add_favorite",
            &s("fav-both"),
            json!({"productKey": "p1", "variantKey": "v1"}),
        )),
        // A bot's add-to-cart: skipped, never sent.
        Rec::json(&{
            let mut e = event("add_to_cart", &s("bot"), cart_line("T-bot"));
            e["visitor"]["userAgent"] =
                json!("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)");
            e
        }),
        // ANONYMOUS click: no keys sent.
        Rec::json(&json!({"type": "click", "market": "SE", "userContext": "ANONYMOUS", "ticket": "T-anon"})),
    ];
    let order_records = vec![
        Rec::json(&event(
            "order_placed",
            &s("pay"),
            json!({"lines": [
            line("v-shirt", json!(2), json!(39.0), 15.2), line("v-socks", json!(1), json!(9.5), 2.1)]}),
        )),
        Rec::json(&event(
            "order_placed",
            &s("pay-q0"),
            json!({"lines": [line("v1", json!(0), json!(1.0), 1.0)]}),
        )),
        Rec::json(&event(
            "order_placed",
            &s("pay-neg"),
            json!({"lines": [line("v1", json!(1), json!(-5.0), 1.0)]}),
        )),
    ];
    produce(&bs, &cart, cart_records).await;
    produce(&bs, &orders, order_records).await;

    let sink = Sink::start(&cfg, &api_key);
    if let Err(n) = standin.wait_for_accepted(7, Duration::from_secs(60)).await {
        panic!(
            "accepted {n} of 7: {:?}\nlog:\n{}",
            standin.accepted(),
            sink.log()
        );
    }
    let parked = consume_all(&bs, &dlq, 3, Duration::from_secs(30)).await;
    assert_eq!(parked.len(), 3, "log:\n{}", sink.log());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = metrics(admin).await;
        if text.contains("elevate_sink_skipped_total{reason=\"bot\"} 1")
            && text.contains("route=\"payments\"")
        {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "bot skip not counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // Each kind's request, exactly.
    let accepted = standin.accepted();
    assert_eq!(accepted.len(), 7, "{accepted:?}");
    let expect = [
        ("atc", Kind::AddToCart, json!({"ticket": "T-atc"})),
        ("click", Kind::Click, json!({"ticket": "T-click"})),
        ("fav", Kind::AddFavorite, json!({"productKey": "p1"})),
        ("unfav", Kind::RemoveFavorite, json!({"variantKey": "v1"})),
        ("end", Kind::End, Value::Null),
        (
            "pay",
            Kind::Payment,
            json!({"lines": [
            {"variantKey": "v-shirt", "quantity": 2, "sellingPrice": 39.0, "cost": 15.2},
            {"variantKey": "v-socks", "quantity": 1, "sellingPrice": 9.5, "cost": 2.1}]}),
        ),
    ];
    for (name, kind, body) in expect {
        let a = of_session(&accepted, &s(name));
        assert_eq!(a.kind, kind, "{name}");
        assert_eq!(a.body, body, "{name}");
        assert_eq!(a.market, "SE");
        assert_eq!(
            a.customer_key.as_deref(),
            Some(format!("c-{}", s(name)).as_str()),
            "{name}"
        );
        assert_eq!(a.user_context, None, "{name}");
        let tp = a.traceparent.as_deref();
        assert_eq!(
            tp,
            (name == "click").then_some(TRACEPARENT),
            "{name}: traceparent only where the record had it"
        );
    }
    let anon: Vec<&Accepted> = accepted.iter().filter(|a| a.ticket == "T-anon").collect();
    assert_eq!(anon.len(), 1);
    assert_eq!(
        (anon[0].kind, anon[0].user_context),
        (Kind::Click, Some(UserContext::Anonymous))
    );
    assert_eq!((&anon[0].customer_key, &anon[0].session_key), (&None, &None));
    assert!(
        accepted
            .iter()
            .all(|a| a.session_key.as_deref() != Some(s("bot").as_str())),
        "bot sent"
    );

    // Parked: reason naming the field, the route, never the key.
    let mut by_session = std::collections::BTreeMap::new();
    for m in &parked {
        let v: Value = serde_json::from_slice(rdkafka::Message::payload(m).unwrap()).unwrap();
        let detail = header(m, "elevate-sink-detail").unwrap_or_default();
        let route = header(m, "elevate-sink-route").unwrap_or_default();
        let reason = header(m, "elevate-sink-reason").unwrap_or_default();
        let all_headers: String = rdkafka::message::Headers::iter(rdkafka::Message::headers(m).unwrap())
            .map(|h| {
                format!(
                    "{}={}",
                    h.key,
                    String::from_utf8_lossy(h.value.unwrap_or_default())
                )
            })
            .collect();
        assert!(
            !all_headers.contains(&api_key),
            "Api-Key in dead-letter headers: {all_headers}"
        );
        by_session.insert(
            v["sessionKey"].as_str().unwrap().to_string(),
            (route, reason, detail),
        );
    }
    let (route, reason, detail) = &by_session[&s("fav-both")];
    assert_eq!(
        (route.as_str(), reason.as_str()),
        ("fav-add", "bad_value"),
        "{detail}"
    );
    assert!(
        detail.contains("product_key") && detail.contains("variant_key"),
        "{detail}"
    );
    let (route, _, detail) = &by_session[&s("pay-q0")];
    assert_eq!(route, "payments");
    assert!(
        detail.contains("lines[0] quantity") && detail.contains("positive integer"),
        "{detail}"
    );
    let (route, _, detail) = &by_session[&s("pay-neg")];
    assert_eq!(route, "payments");
    assert!(
        detail.contains("lines[0] selling_price") && detail.contains("non-negative"),
        "{detail}"
    );

    // Nothing else reached Elevate's door (the bad ones were never sent).
    assert_eq!(standin.requests_total(), 7);
    let log = sink.log();
    assert!(!log.is_empty(), "debug logging produced nothing");
    assert!(!log.contains(&api_key), "Api-Key in the log");
    assert!(!text.contains(&api_key), "Api-Key in /metrics");
    for (route, kind) in [
        ("cart", "add-to-cart"),
        ("clicks", "click"),
        ("payments", "payment"),
        ("ends", "end"),
    ] {
        let series = format!("elevate_sink_route_delivered_total{{route=\"{route}\",kind=\"{kind}\"}}");
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
    let seen: HashSet<Kind> = accepted.iter().map(|a| a.kind).collect();
    assert_eq!(seen.len(), 6, "every kind arrived");
}
