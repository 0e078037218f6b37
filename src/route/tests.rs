use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::decode::InvalidReason;
use crate::request::{build, endpoint_for};
use crate::select::{map_record, Body, Notification};

const ROUTES: &str = r#"
[kafka]
topics = ["carts", "orders"]
[elevate]
base_url = "http://h"
payment_api_key = { env = "ELEVATE_SINK_TEST_NO_SUCH_VAR" }
bot_patterns = ["^acme-monitor/"]
[[routes]]
name = "cart"
kind = "add-to-cart"
topics = ["carts"]
[[routes]]
name = "clicks"
kind = "click"
topics = ["carts"]
[[routes]]
name = "fav"
kind = "add-favorite"
topics = ["carts"]
[[routes]]
name = "unfav"
kind = "remove-favorite"
topics = ["carts"]
[[routes]]
name = "bye"
kind = "end"
topics = ["carts"]
[[routes]]
name = "payments"
kind = "payment"
topics = ["orders"]
mapping = { lines = "/items" }
"#;

fn cfg(toml: &str) -> Result<Config, ConfigError> {
    Config::from_toml_with_env(toml, "", Vec::new())
}

fn routes() -> Routes {
    Routes::from_config(&cfg(ROUTES).unwrap()).unwrap()
}

fn map(topic: &str, v: serde_json::Value) -> Result<Mapped, RouteInvalid> {
    routes().map(topic, Some(v.to_string().as_bytes()))
}

/// The (url, body) of every notification of a record.
fn requests(topic: &str, v: serde_json::Value) -> Vec<(String, String)> {
    let base = url::Url::parse("http://h").unwrap();
    map(topic, v)
        .unwrap()
        .notifications
        .iter()
        .map(|n| {
            let r = build(&endpoint_for(&base, n.route.kind), n, true);
            (r.url, r.body)
        })
        .collect()
}

fn visitor(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"market": "SE", "customerKey": "c1", "sessionKey": "s1"});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
}

#[test]
fn no_routes_is_the_add_to_cart_route_exactly_as_before() {
    let c = cfg("[elevate]\nbase_url = \"http://h\"\n").unwrap();
    let r = Routes::from_config(&c).unwrap();
    assert_eq!(r.routes.len(), 1);
    assert_eq!(r.routes[0].tag, RouteTag::default());
    assert_eq!(&*r.routes[0].tag.name, "add-to-cart");
    for v in [
        json!({"type": "add_to_cart", "market": "SE", "customerKey": "c", "sessionKey": "s",
               "lines": [{"source": "elevate", "ticket": "T"}, {"source": "shop"}]}),
        json!({"type": "page_view"}),
        json!({"type": "add_to_cart", "lines": [{"source": "elevate", "ticket": "T"}]}),
    ] {
        let bytes = v.to_string();
        let old = map_record(&c.mapping, Some(bytes.as_bytes()));
        let new = r.map("cart-events", Some(bytes.as_bytes()));
        match (old, new) {
            (Ok(o), Ok(n)) => {
                assert_eq!(o.notifications, n.notifications, "{v}");
                assert_eq!(o.skipped, n.skipped, "{v}");
            }
            (Err(o), Err(n)) => assert_eq!(o, n.invalid, "{v}"),
            (o, n) => panic!("{v}: {o:?} vs {n:?}"),
        }
    }
}

#[test]
fn every_kind_builds_its_contract_request() {
    let q = "?customerKey=c1&market=SE&sessionKey=s1";
    let sf = "http://h/api/storefront/v3/notifications";
    assert_eq!(
        requests("carts", visitor(json!({"type": "click", "ticket": "Tk"}))),
        vec![(format!("{sf}/click{q}"), r#"{"ticket":"Tk"}"#.to_string())]
    );
    assert_eq!(
        requests(
            "carts",
            visitor(json!({"type": "add_favorite", "productKey": "p1"}))
        ),
        vec![(
            format!("{sf}/add-favorite{q}"),
            r#"{"productKey":"p1"}"#.to_string()
        )]
    );
    assert_eq!(
        requests(
            "carts",
            visitor(json!({"type": "remove_favorite", "variantKey": "v1"}))
        ),
        vec![(
            format!("{sf}/remove-favorite{q}"),
            r#"{"variantKey":"v1"}"#.to_string()
        )]
    );
    assert_eq!(
        requests("carts", visitor(json!({"type": "logout"}))),
        vec![(format!("{sf}/end{q}"), String::new())]
    );
    let order = visitor(json!({"type": "order_placed", "items": [
        {"variantKey": "v1", "quantity": 2, "sellingPrice": 39.0, "cost": 15.2},
        {"variantKey": "v2", "quantity": 1, "sellingPrice": 0, "cost": 0}]}));
    assert_eq!(
        requests("orders", order),
        vec![(
            format!("http://h/api/admin/v4/notifications/payment{q}"),
            r#"{"lines":[{"cost":15.2,"quantity":2,"sellingPrice":39.0,"variantKey":"v1"},{"cost":0.0,"quantity":1,"sellingPrice":0.0,"variantKey":"v2"}]}"#
                .to_string()
        )]
    );
    let m = map("orders", visitor(json!({"type": "order_placed", "items": [{"variantKey": "v", "quantity": 1, "sellingPrice": 1, "cost": 1}]}))).unwrap();
    let n = &m.notifications[0];
    assert_eq!((&*n.route.name, n.route.kind), ("payments", Kind::Payment));
    assert!(
        build(
            &endpoint_for(&url::Url::parse("http://h").unwrap(), Kind::Payment),
            n,
            true
        )
        .api_key
    );
}

/// One bad record per field of every kind: (topic, event, the route it is invalid for, what the
/// reason must name).
fn bad_records() -> Vec<(&'static str, serde_json::Value, &'static str, &'static str)> {
    vec![
        (
            "carts",
            visitor(json!({"type": "click", "ticket": 5})),
            "cart",
            "ticket",
        ),
        (
            "carts",
            visitor(json!({"type": "add_favorite"})),
            "fav",
            "product_key",
        ),
        (
            "carts",
            visitor(json!({"type": "add_favorite", "productKey": "p", "variantKey": "v"})),
            "fav",
            "exactly one",
        ),
        (
            "carts",
            visitor(json!({"type": "remove_favorite", "productKey": 3})),
            "unfav",
            "product_key",
        ),
        (
            "carts",
            json!({"type": "session_end", "market": "SE", "customerKey": "c"}),
            "bye",
            "sessionKey",
        ),
        (
            "orders",
            visitor(json!({"type": "order_placed", "items": []})),
            "payments",
            "lines",
        ),
        (
            "orders",
            visitor(
                json!({"type": "order_placed", "items": [{"quantity": 1, "sellingPrice": 1, "cost": 1}]}),
            ),
            "payments",
            "lines[0] variant_key",
        ),
        (
            "orders",
            visitor(
                json!({"type": "order_placed", "items": [{"variantKey": "v", "quantity": 0, "sellingPrice": 1, "cost": 1}]}),
            ),
            "payments",
            "lines[0] quantity",
        ),
        (
            "orders",
            visitor(
                json!({"type": "order_placed", "items": [{"variantKey": "v", "quantity": 1.5, "sellingPrice": 1, "cost": 1}]}),
            ),
            "payments",
            "lines[0] quantity",
        ),
        (
            "orders",
            visitor(
                json!({"type": "order_placed", "items": [{"variantKey": "v", "quantity": 1, "sellingPrice": -1, "cost": 1}]}),
            ),
            "payments",
            "lines[0] selling_price",
        ),
        (
            "orders",
            visitor(
                json!({"type": "order_placed", "items": [{"variantKey": "v", "quantity": 1, "sellingPrice": 1, "cost": "1"}]}),
            ),
            "payments",
            "lines[0] cost",
        ),
        (
            "orders",
            visitor(
                json!({"type": "order_placed", "items": [{"variantKey": "v", "quantity": 1, "sellingPrice": 1}]}),
            ),
            "payments",
            "lines[0] cost",
        ),
        (
            "orders",
            json!({"type": "order_placed", "items": [{"variantKey": "v", "quantity": 1, "sellingPrice": 1, "cost": 1}]}),
            "payments",
            "market",
        ),
    ]
}

/// Each of [`bad_records`] is invalid for its route, naming the field.
#[test]
fn bad_records_of_each_kind_name_the_field() {
    for (topic, v, route, needle) in bad_records() {
        // A click whose ticket is not a string is the click route's, whatever the order.
        let err = map(topic, v.clone()).expect_err(&v.to_string());
        let want = if needle == "ticket" { "clicks" } else { route };
        assert_eq!(err.route.as_ref().map(|r| &*r.name), Some(want), "{v}");
        assert!(err.invalid.detail.contains(needle), "{v}: {}", err.invalid);
    }
    let err = map("orders", json!("x")).unwrap_err();
    assert_eq!(err.invalid.reason, InvalidReason::NotAnObject);
    assert_eq!(
        err.route.map(|r| r.name.to_string()).as_deref(),
        Some("payments"),
        "one route on the topic"
    );
}

#[test]
fn consent_rules_apply_to_every_kind() {
    for v in [
        json!({"type": "click", "ticket": "T"}),
        json!({"type": "add_favorite", "productKey": "p"}),
        json!({"type": "logout"}),
    ] {
        let mut anon = v.clone();
        anon.as_object_mut().unwrap().extend(
            json!({"market": "SE", "userContext": "ANONYMOUS", "customerKey": "c", "sessionKey": "s"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let reqs = requests("carts", anon);
        assert_eq!(reqs.len(), 1, "{v}");
        assert!(
            reqs[0].0.ends_with("?market=SE&userContext=ANONYMOUS"),
            "{v}: {}",
            reqs[0].0
        );
        let mut personal = v.clone();
        personal
            .as_object_mut()
            .unwrap()
            .insert("market".into(), json!("SE"));
        let err = map("carts", personal).unwrap_err();
        assert!(err.invalid.detail.contains("customerKey"), "{v}: {}", err.invalid);
    }
    let order = json!({"type": "order_placed", "market": "SE", "userContext": "UNPERSONALIZED",
        "customerKey": "c", "sessionKey": "s", "items": [{"variantKey": "v", "quantity": 1, "sellingPrice": 1, "cost": 1}]});
    let reqs = requests("orders", order);
    assert!(
        reqs[0]
            .0
            .ends_with("payment?market=SE&sessionKey=s&userContext=UNPERSONALIZED"),
        "{}",
        reqs[0].0
    );
}

/// Among notifications of several User-Agents, in runs and repeated, exactly the bots' are
/// dropped, in order, with one `bot` skip each.
#[test]
fn exactly_the_bots_notifications_are_dropped() {
    let routes = Routes::from_config(&cfg(ROUTES).unwrap()).unwrap();
    let bot = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
    let human = "Mozilla/5.0 (X11; Linux x86_64) Firefox/133.0";
    let agents = [
        Some(bot),
        Some(bot),
        Some(human),
        None,
        Some(bot),
        Some(human),
        Some(human),
    ];
    let notification = |line: usize, ua: Option<&str>| Notification {
        route: Default::default(),
        body: Body::Ticket(format!("t{line}")),
        market: "SE".into(),
        customer_key: None,
        session_key: None,
        user_context: None,
        user_agent: ua.map(Into::into),
        visitor_ip: None,
        line,
        event_time_ms: None,
        trace: Vec::new(),
    };
    let m = Mapped {
        notifications: agents
            .iter()
            .enumerate()
            .map(|(i, ua)| notification(i, *ua))
            .collect(),
        ..Mapped::default()
    };
    let m = routes.without_bots(m);
    let kept: Vec<usize> = m.notifications.iter().map(|n| n.line).collect();
    assert_eq!(kept, [2, 3, 5, 6]);
    assert_eq!(m.skipped, [SkipReason::Bot; 3]);
}

#[test]
fn unrouted_records_and_bots_are_skipped() {
    let m = map("carts", json!({"type": "order_placed"})).unwrap();
    assert_eq!(m.skipped, vec![SkipReason::NoRoute]);
    assert!(m.notifications.is_empty());
    for ua in [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "acme-monitor/1.0",
    ] {
        let v = visitor(json!({"type": "click", "ticket": "T", "visitor": {"userAgent": ua}}));
        let m = map("carts", v).unwrap();
        assert!(m.notifications.is_empty(), "{ua}");
        assert_eq!(m.skipped, vec![SkipReason::Bot], "{ua}");
        assert_eq!(&*m.route_skips[0].0.name, "clicks");
    }
    let human = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
    let v = visitor(json!({"type": "click", "ticket": "T", "visitor": {"userAgent": human}}));
    assert_eq!(map("carts", v.clone()).unwrap().notifications.len(), 1);
    let off = Routes::from_config(
        &cfg(&ROUTES.replace("bot_patterns", "skip_bots = false\nbot_patterns")).unwrap(),
    )
    .unwrap();
    let bot = visitor(json!({"type": "click", "ticket": "T", "visitor": {"userAgent": "Googlebot/2.1"}}));
    assert_eq!(
        off.map("carts", Some(bot.to_string().as_bytes()))
            .unwrap()
            .notifications
            .len(),
        1
    );
}

#[test]
fn config_errors_name_the_route_key() {
    let err = |extra: &str| cfg(&format!("{ROUTES}{extra}")).unwrap_err().to_string();
    assert!(err("[[routes]]\nname = \"cart\"\nkind = \"click\"\n").contains("routes[6].name"));
    assert!(
        err("[[routes]]\nname = \"x\"\nkind = \"click\"\ntopics = [\"nope\"]\n").contains("routes[6].topics")
    );
    assert!(
        err("[[routes]]\nname = \"x\"\nkind = \"click\"\nmapping = { no_such = \"/a\" }\n")
            .contains("routes[6].mapping")
    );
    assert!(
        err("[[routes]]\nname = \"x\"\nkind = \"click\"\nrequests_per_second = 0.0\n")
            .contains("routes[6].requests_per_second")
    );
    assert!(err("[[routes]]\nname = \"x\"\nkind = \"refund\"\n").contains("refund"));
    let no_key = ROUTES.replace(
        "payment_api_key = { env = \"ELEVATE_SINK_TEST_NO_SUCH_VAR\" }\n",
        "",
    );
    assert!(cfg(&no_key)
        .unwrap_err()
        .to_string()
        .contains("elevate.payment_api_key"));
    let orphan = ROUTES.replace("topics = [\"orders\"]\nmapping", "topics = [\"carts\"]\nmapping");
    assert!(cfg(&orphan)
        .unwrap_err()
        .to_string()
        .contains("\"orders\", which feeds no route"));
    let bad = ROUTES.replace("^acme-monitor/", "(unclosed");
    assert!(cfg(&bad)
        .unwrap_err()
        .to_string()
        .contains("elevate.bot_patterns"));
}

proptest! {
    /// Any order lines: mapped (every line, in order) or invalid naming a line field; never a panic.
    #[test]
    fn payment_lines_are_all_mapped_or_the_record_is_invalid(
        lines in proptest::collection::vec((proptest::option::of("[a-z]{0,3}"), -2i64..4, -2.0f64..50.0, proptest::bool::ANY), 0..6)
    ) {
        let items: Vec<_> = lines.iter().map(|(v, q, p, int_cost)| {
            let cost = if *int_cost { json!(1) } else { json!(p / 2.0) };
            json!({"variantKey": v, "quantity": q, "sellingPrice": p, "cost": cost})
        }).collect();
        let ok = !lines.is_empty() && lines.iter().all(|(v, q, p, _)| v.as_deref().is_some_and(|v| !v.is_empty()) && *q > 0 && *p >= 0.0);
        match map("orders", visitor(json!({"type": "order_placed", "items": items}))) {
            Ok(m) => {
                prop_assert!(ok);
                let Body::Payment(got) = &m.notifications[0].body else { panic!("not a payment") };
                prop_assert_eq!(got.len(), lines.len());
            }
            Err(e) => {
                prop_assert!(!ok);
                prop_assert!(e.invalid.detail.contains("lines"), "{}", e.invalid);
            }
        }
    }
}

/// A price is the number it denotes, not its spelling: a JSON integer price (`199`) sends the
/// same body as the double an Avro or Protobuf twin of the order carries (`199.0`).
#[test]
fn whole_prices_send_one_body_whether_written_as_integer_or_float() {
    let order = |price: serde_json::Value, cost: serde_json::Value| {
        visitor(json!({"type": "order_placed", "items": [
            {"variantKey": "v", "quantity": 1, "sellingPrice": price, "cost": cost}]}))
    };
    let int = requests("orders", order(json!(199), json!(0)));
    let float = requests("orders", order(json!(199.0), json!(0.0)));
    assert_eq!(int, float);
    assert!(
        int[0]
            .1
            .contains(r#""cost":0.0,"quantity":1,"sellingPrice":199.0"#),
        "{}",
        int[0].1
    );
    assert_eq!(
        map("orders", order(json!(199), json!(80))),
        map("orders", order(json!(199.0), json!(80.0)))
    );
}

#[test]
fn order_examples_map_to_what_their_names_say() {
    let c = cfg("[kafka]\ntopics = [\"orders\"]\n[elevate]\nbase_url = \"http://h\"\npayment_api_key = { env = \"X\" }\n[[routes]]\nname = \"payments\"\nkind = \"payment\"\n").unwrap();
    let r = Routes::from_config(&c).unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/schemas/examples/orders");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read(&path).unwrap();
        let got = r.map("orders", Some(&text));
        if name.starts_with("invalid-") {
            let e = got.expect_err(&name);
            assert!(
                e.invalid.detail.contains("lines[0] quantity"),
                "{name}: {}",
                e.invalid
            );
        } else {
            let m = got.unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(matches!(m.notifications[0].body, Body::Payment(_)), "{name}");
        }
        seen += 1;
    }
    assert_eq!(seen, 3);
}

#[test]
fn check_sample_never_shows_the_api_key() {
    let dir = std::env::temp_dir().join(format!("elevate-sink-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("api-key");
    std::fs::write(&key, "sekrit-admin-key-42\n").unwrap();
    let toml = format!(
        "[kafka]\ntopics = [\"orders\"]\n[elevate]\nbase_url = \"http://h\"\npayment_api_key = {{ file = {:?} }}\n[[routes]]\nname = \"payments\"\nkind = \"payment\"\n",
        key.display().to_string()
    );
    let c = cfg(&toml).unwrap();
    let order = include_str!("../../schemas/examples/orders/order-placed.json");
    let events = [crate::check::SampleEvent {
        label: "order".into(),
        value: order.as_bytes().to_vec(),
        undecodable: None,
    }];
    let out = crate::check::sample_report(&c, "orders.jsonl", &events);
    assert!(out.contains("/api/admin/v4/notifications/payment?"), "{out}");
    assert!(out.contains("api-key: ***"), "{out}");
    assert!(!out.contains("sekrit"), "{out}");
    assert!(!format!("{c:?}").contains("sekrit"));
    // The sender holds it as a sensitive header value: its Debug shows no key either.
    let sender = crate::send::Sender::new(
        &c.elevate,
        &c.retry,
        std::sync::Arc::new(crate::limit::Limiter::new(&c.rate)),
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    )
    .unwrap();
    let n = &routes_of(&c)
        .map("orders", Some(order.as_bytes()))
        .unwrap()
        .notifications[0];
    let req = sender.request_for(n);
    assert!(req.api_key && !format!("{req:?}").contains("sekrit"));
    assert!(!serde_json::to_string(&req).unwrap().contains("sekrit"));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn routes_of(c: &Config) -> Routes {
    Routes::from_config(c).unwrap()
}

/// README "Routes", the worked example: exactly what it says each event becomes.
#[test]
fn the_readme_worked_example_holds() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("topics = [\"shop.cart-events\", \"shop.orders\"]")
        .unwrap();
    let toml = &readme[readme[..start].rfind("```toml").unwrap() + 7..];
    let toml = &toml[..toml.find("```").unwrap()];
    let c = cfg(toml).unwrap();
    let r = Routes::from_config(&c).unwrap();
    let base = c.elevate.base_url().unwrap();
    let req = |topic: &str, v: &str| {
        let m = r.map(topic, Some(v.as_bytes())).unwrap();
        let n = &m.notifications[0];
        let r = build(&endpoint_for(&base, n.route.kind), n, true);
        (r.url, r.body)
    };
    let q = "?customerKey=c1&market=SE&sessionKey=s1";
    assert_eq!(
        req(
            "shop.cart-events",
            r#"{"type":"product_click","market":"SE","customerKey":"c1","sessionKey":"s1","ticket":"Oy9m"}"#
        ),
        (
            format!("{base}api/storefront/v3/notifications/click{q}"),
            r#"{"ticket":"Oy9m"}"#.into()
        )
    );
    assert_eq!(
        req(
            "shop.orders",
            r#"{"type":"order_placed","market":"SE","customerKey":"c1","sessionKey":"s1","items":[{"variantKey":"v1","quantity":2,"price":{"amount":39.0},"cost":15.2}]}"#
        ),
        (
            format!("{base}api/admin/v4/notifications/payment{q}"),
            r#"{"lines":[{"cost":15.2,"quantity":2,"sellingPrice":39.0,"variantKey":"v1"}]}"#.into()
        )
    );
}

#[test]
fn each_topic_feeds_its_routes_in_config_order_and_an_unknown_topic_none() {
    let r = routes();
    let names = |topic: &str| {
        r.for_topic(topic)
            .map(|x| x.tag.name.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names("carts"), ["cart", "clicks", "fav", "unfav", "bye"]);
    assert_eq!(names("orders"), ["payments"]);
    assert!(names("elsewhere").is_empty());
    // A record of a topic no route reads is parsed for what every route reads, and skipped.
    let m = r
        .map("elsewhere", Some(br#"{"type":"add_to_cart","market":"SE"}"#))
        .unwrap();
    assert!(m.notifications.is_empty());
    assert_eq!(m.skipped, [SkipReason::NotAddToCart]);
    assert!(m.route_skips.is_empty());
    let bad = r.map("elsewhere", Some(b"not json")).unwrap_err();
    assert_eq!(bad.route, None);
}
