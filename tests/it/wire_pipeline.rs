//! Avro and Protobuf topics through the whole `run` pipeline, on the real broker, the real
//! schema registry (`SCHEMA_REGISTRY_URL`) and the Elevate stand-in (issue 16): the wire-format
//! twins of the cart and order examples (orders through a payment route) send exactly the
//! requests their JSON originals send and park the same records; bad wire input is parked naming
//! why; a registry that does not answer makes records wait (nothing parked, `/readyz` says why)
//! until it does; registry credentials never reach the logs.

use std::time::Duration;

use serde_json::Value;

use elevate_sink::config::Config;
use elevate_sink::wire::frame;
use elevate_standin::StandIn;

use crate::ops::{free_port, gate_to, get, service_toml, Service};
use crate::support::kafka::{
    bootstrap, consume_all, names, produce, setup, unique, wait_until, wait_until_async, Names, Rec,
};
use crate::support::registry::{self as reg, SchemaType};
use crate::support::sink::{committed_reach_end, config_toml, header, InProcess};
use crate::wire::{
    avro_twin, cart_routes, example, payment_route, proto_twin, Shape, AVSC, EXAMPLES, ORDER_AVSC,
    ORDER_PROTO, PROTO,
};

/// The value format of a test topic.
#[derive(Clone, Copy, Debug)]
enum Format {
    Json,
    Avro,
    Protobuf,
}

/// The examples of `shape` as records of `format`: JSON as is, or the wire-format twins under
/// `id`.
fn records(shape: Shape, format: Format, id: u32) -> Vec<Rec> {
    let avro = shape.avro_schema();
    let desc = shape.descriptor();
    shape
        .examples()
        .iter()
        .map(|name| {
            let text = example(name);
            let json: Value = serde_json::from_str(&text).unwrap();
            Rec::new(match format {
                Format::Json => text.into_bytes(),
                Format::Avro => frame::frame(id, &avro_twin(&avro, &json)),
                Format::Protobuf => frame::frame(id, &proto_twin(&desc, &json)),
            })
        })
        .collect()
}

/// A pipeline config for `n` whose topic has `format`, on the shared registry; `extra` is more
/// TOML (routes), `env` more overrides.
fn config(
    bs: &str,
    n: &Names,
    base_url: &str,
    format: &str,
    extra: &str,
    mut env: Vec<(String, String)>,
) -> Config {
    let extra = format!(
        "[registry]\nurl = \"{}\"\n[pipeline]\ncommit_interval = \"200ms\"\n{extra}",
        reg::url()
    );
    env.push((
        "ELEVATE_SINK__KAFKA__VALUE_FORMAT".to_string(),
        format.to_string(),
    ));
    Config::from_toml_with_env(&config_toml(bs, n, base_url, &extra), "", env).expect("test config is valid")
}

/// Runs `records` of `shape` through a fresh pipeline until committed: cart events through an
/// add-to-cart and a click route, order events through a payment route (`payments`) whose Api-Key the stand-in
/// requires. Returns what the stand-in accepted (arrival time left out, sorted) and the parked
/// records' "reason: detail [route R]" (`-` when no route is named), sorted.
async fn deliver(prefix: &str, shape: Shape, format: &str, records: Vec<Rec>) -> (Vec<String>, Vec<String>) {
    let (bs, n) = setup(prefix, 1).await;
    let secrets = tempfile::tempdir().unwrap();
    let (standin, routes, env) = match shape {
        Shape::Cart => (StandIn::start().await.unwrap(), cart_routes(&n.topic), Vec::new()),
        Shape::Order => {
            let key = unique("adm-key");
            let file = secrets.path().join("api-key");
            std::fs::write(&file, &key).unwrap();
            let source = format!("{{ file = {:?} }}", file.to_str().unwrap());
            (
                StandIn::start_with_api_key(key).await.unwrap(),
                payment_route(&n.topic),
                vec![("ELEVATE_SINK__ELEVATE__PAYMENT_API_KEY".to_string(), source)],
            )
        }
    };
    produce(&bs, &n.topic, records).await;
    let sink = InProcess::start(config(&bs, &n, &standin.base_url(), format, &routes, env));
    wait_until_async(Duration::from_secs(60), "every record committed", || {
        committed_reach_end(&bs, &n)
    })
    .await;
    sink.stop().await;
    let mut accepted: Vec<String> = standin
        .accepted()
        .into_iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap();
            v.as_object_mut().unwrap().remove("received_at_ms");
            v.to_string()
        })
        .collect();
    accepted.sort();
    let parked = consume_all(&bs, &n.dlq, 100, Duration::from_secs(3)).await;
    let mut reasons: Vec<String> = parked
        .iter()
        .map(|m| {
            format!(
                "{}: {} [route {}]",
                header(m, "elevate-sink-reason").unwrap(),
                header(m, "elevate-sink-detail").unwrap(),
                header(m, "elevate-sink-route").as_deref().unwrap_or("-")
            )
        })
        .collect();
    reasons.sort();
    (accepted, reasons)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_and_protobuf_twins_are_delivered_exactly_like_their_json_originals() {
    let avro_id = reg::registered("wp-twin-a", SchemaType::Avro, AVSC).await;
    let proto_id = reg::registered("wp-twin-p", SchemaType::Protobuf, PROTO).await;
    let cart = |format, id| records(Shape::Cart, format, id);
    let json = deliver("wp-json", Shape::Cart, "json", cart(Format::Json, 0)).await;
    let avro = deliver("wp-avro", Shape::Cart, "avro", cart(Format::Avro, avro_id)).await;
    let proto = deliver(
        "wp-proto",
        Shape::Cart,
        "protobuf",
        cart(Format::Protobuf, proto_id),
    )
    .await;
    assert_eq!(
        json.0.len(),
        7,
        "the examples send 6 add-to-carts and a click: {:?}",
        json.0
    );
    assert_eq!(
        json.0.iter().filter(|a| a.contains("\"kind\":\"click\"")).count(),
        1,
        "click.json's click: {:?}",
        json.0
    );
    assert_eq!(json.1.len(), 1, "one example breaks the contract: {:?}", json.1);
    assert!(json.1[0].starts_with("missing_field: "), "{:?}", json.1);
    assert_eq!(
        avro, json,
        "Avro twins: the same requests and the same parked record"
    );
    assert_eq!(
        proto, json,
        "Protobuf twins: the same requests and the same parked record"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_and_protobuf_order_twins_send_the_json_originals_payments_and_park_the_same_order() {
    let avro_id = reg::registered("wp-order-a", SchemaType::Avro, ORDER_AVSC).await;
    let proto_id = reg::registered("wp-order-p", SchemaType::Protobuf, ORDER_PROTO).await;
    let orders = |format, id| records(Shape::Order, format, id);
    let json = deliver("wp-order-json", Shape::Order, "json", orders(Format::Json, 0)).await;
    let avro = deliver(
        "wp-order-avro",
        Shape::Order,
        "avro",
        orders(Format::Avro, avro_id),
    )
    .await;
    let proto = deliver(
        "wp-order-proto",
        Shape::Order,
        "protobuf",
        orders(Format::Protobuf, proto_id),
    )
    .await;
    assert_eq!(json.0.len(), 2, "the two good orders are paid: {:?}", json.0);
    assert!(
        json.0.iter().all(|a| a.contains(r#""kind":"payment""#)),
        "{:?}",
        json.0
    );
    assert_eq!(
        json.1,
        ["bad_value: lines[0] quantity at /quantity must be a positive integer [route payments]"],
        "the bad quantity is parked naming the line, the field and the route"
    );
    assert_eq!(
        avro, json,
        "Avro twins: the same payments and the same parked order"
    );
    assert_eq!(
        proto, json,
        "Protobuf twins: the same payments and the same parked order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wire_input_is_parked_naming_why_and_good_records_still_flow() {
    let avro_id = reg::registered("wp-bad-a", SchemaType::Avro, AVSC).await;
    let proto_id = reg::registered("wp-bad-p", SchemaType::Protobuf, PROTO).await;
    let good = &records(Shape::Cart, Format::Avro, avro_id)[3]; // add-to-cart-single
    assert_eq!(EXAMPLES[3], "add-to-cart-single");
    let bad = [
        ("unknown_schema_id", frame::frame(i32::MAX as u32, b"\x00")),
        ("schema_mismatch", frame::frame(avro_id, b"\x64abc")),
        ("wire_unknown_magic", example("add-to-cart-single").into_bytes()),
        ("wrong_schema_format", frame::frame(proto_id, b"\x00")),
        ("wire_too_short", vec![0, 0]),
    ];
    let mut recs: Vec<Rec> = bad.iter().map(|(_, v)| Rec::new(v.clone())).collect();
    recs.push(Rec::new(good.value.clone().unwrap()));
    let (accepted, reasons) = deliver("wp-bad", Shape::Cart, "avro", recs).await;
    assert_eq!(
        accepted.len(),
        1,
        "the good record after the bad ones is delivered: {accepted:?}"
    );
    let mut want: Vec<&str> = bad.iter().map(|(r, _)| *r).collect();
    want.sort();
    let got: Vec<&str> = reasons.iter().map(|r| r.split(':').next().unwrap()).collect();
    assert_eq!(got, want, "each bad record parked with its reason: {reasons:#?}");
    let detail = |reason: &str| reasons.iter().find(|r| r.starts_with(reason)).unwrap().clone();
    let mismatch = detail("schema_mismatch");
    assert!(
        mismatch.contains(&format!("payload does not match AVRO schema {avro_id}")),
        "{mismatch}"
    );
    let unknown = detail("unknown_schema_id");
    assert!(
        unknown.contains(&format!("schema {} is unknown", i32::MAX)),
        "{unknown}"
    );
    let magic = detail("wire_unknown_magic");
    assert!(magic.contains("0x7b"), "{magic}");
}

/// An Avro add-to-cart record under schema `id` with one Elevate line per ticket.
fn lines_record(id: u32, tickets: &[String]) -> Rec {
    let mut json: Value = serde_json::from_str(&example("add-to-cart-multi-line")).unwrap();
    json["lines"] = tickets
        .iter()
        .map(|t| serde_json::json!({"source": "elevate", "ticket": t, "productKey": "p", "quantity": 1}))
        .collect();
    Rec::new(frame::frame(id, &avro_twin(&Shape::Cart.avro_schema(), &json)))
}

/// Ends the stand-in's outage, then waits until every ticket of `batches` arrived and every
/// record of `n` is committed.
async fn back_until_all_arrive(standin: &StandIn, bs: &str, n: &Names, batches: Vec<Vec<String>>) {
    standin.outage_end().await.unwrap();
    let all = batches.into_iter().flatten().collect();
    standin
        .wait_for_tickets(&all, Duration::from_secs(60))
        .await
        .unwrap();
    wait_until_async(Duration::from_secs(20), "every record committed", || {
        committed_reach_end(bs, n)
    })
    .await;
}

/// Records taken while their schema is fetched (a fresh sink's cache is empty) count as one
/// notification each until decoded, then as their lines: with Elevate down, five records of ten
/// lines are 50 notifications in flight (5 before they were re-counted), and all arrive after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_that_wait_for_their_schema_count_their_lines_once_decoded() {
    let id = reg::registered("wp-late-a", SchemaType::Avro, AVSC).await;
    let (bs, n) = setup("wp-late", 1).await;
    let standin = StandIn::start().await.unwrap();
    standin.outage_start().await;
    let batches: Vec<Vec<String>> = (0..5)
        .map(|r| (0..10).map(|l| format!("w{r}-{l}")).collect())
        .collect();
    produce(&bs, &n.topic, batches.iter().map(|b| lines_record(id, b))).await;
    let retry = "[retry]\ninitial_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n";
    let sink = InProcess::start(config(&bs, &n, &standin.base_url(), "avro", retry, Vec::new()));
    wait_until(Duration::from_secs(30), "every line counted in flight", || {
        sink.series("elevate_sink_in_flight_notifications") >= 50.0
    })
    .await;
    assert_eq!(sink.series("elevate_sink_in_flight_notifications"), 50.0);
    assert_eq!(sink.series("elevate_sink_in_flight_records"), 5.0);
    assert!(
        sink.series("elevate_sink_registry_waits_total") == 0.0,
        "the registry answered"
    );

    back_until_all_arrive(&standin, &bs, &n, batches).await;
    assert_eq!(standin.accepted_count(), 50, "each line sent once");
    sink.stop().await;
}

/// An Avro record whose schema is cached counts one notification per Elevate line, as a JSON
/// record does, so `pipeline.max_pending_notifications` bounds what is taken: with Elevate down
/// and a bound of 20, two records of ten lines are in flight (not twenty records of ten lines
/// counted as one each), and everything arrives once Elevate is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avro_records_with_a_cached_schema_count_each_notification_against_the_bound() {
    let id = reg::registered("wp-bound-a", SchemaType::Avro, AVSC).await;
    let record = |tickets: &[String]| lines_record(id, tickets);
    let (bs, n) = setup("wp-bound", 1).await;
    let standin = StandIn::start().await.unwrap();
    let env = vec![(
        "ELEVATE_SINK__PIPELINE__MAX_PENDING_NOTIFICATIONS".to_string(),
        "20".to_string(),
    )];
    let retry = "[retry]\ninitial_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n";
    let sink = InProcess::start(config(&bs, &n, &standin.base_url(), "avro", retry, env));
    // The first record caches the schema.
    let warm = vec!["warm".to_string()];
    produce(&bs, &n.topic, [record(&warm)]).await;
    standin
        .wait_for_tickets(&warm.iter().cloned().collect(), Duration::from_secs(30))
        .await
        .unwrap();

    standin.outage_start().await;
    let batches: Vec<Vec<String>> = (0..20)
        .map(|r| (0..10).map(|l| format!("b{r}-{l}")).collect())
        .collect();
    produce(&bs, &n.topic, batches.iter().map(|b| record(b))).await;
    wait_until(Duration::from_secs(30), "the notification bound reached", || {
        sink.series("elevate_sink_in_flight_notifications") >= 20.0
    })
    .await;
    // Every notification in flight retried a few times over: the loop turned often enough to
    // have taken more records, had the bound let it (the partitions pause only after 5 s).
    let retries = sink.series("elevate_sink_retries_total");
    wait_until(
        Duration::from_secs(4),
        "the notifications in flight retried",
        || sink.series("elevate_sink_retries_total") >= retries + 60.0,
    )
    .await;
    assert_eq!(
        sink.series("elevate_sink_paused_partitions"),
        0.0,
        "read before the pause"
    );
    assert_eq!(
        sink.series("elevate_sink_in_flight_records"),
        2.0,
        "two records of ten lines"
    );
    assert_eq!(sink.series("elevate_sink_in_flight_notifications"), 20.0);

    back_until_all_arrive(&standin, &bs, &n, batches).await;
    sink.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_registry_makes_records_wait_unready_then_delivers_and_never_logs_credentials() {
    let bs = bootstrap().await;
    let n = names(&bs, "wp-wait", 1).await;
    let avro_id = reg::registered("wp-wait-a", SchemaType::Avro, AVSC).await;
    let upstream = url::Url::parse(&reg::url()).unwrap();
    let target = format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port_or_known_default().unwrap()
    );
    // Connections to the gate queue unanswered (timeouts) until it opens onto the registry.
    let gate = gate_to(target).await;
    let standin = StandIn::start().await.unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let password = "sr-pa55-never-logged";
    let extra = format!(
        "value_format = \"avro\"\n[registry]\nurl = \"http://{}{}\"\nusername = \"sr-user\"\n\
         password = {{ env = \"WP_REGISTRY_PASSWORD\" }}\nconnect_timeout = \"1s\"\nrequest_timeout = \"1s\"\n",
        gate.addr,
        upstream.path()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, service_toml(&bs, &n, &standin.base_url(), admin, &extra)).unwrap();
    produce(
        &bs,
        &n.topic,
        records(Shape::Cart, Format::Avro, avro_id)
            .into_iter()
            .skip(3)
            .take(1),
    )
    .await;
    let mut service = Service::start(&path, &[("WP_REGISTRY_PASSWORD", password)]);

    wait_until_async(Duration::from_secs(60), "/readyz names the registry", || async {
        matches!(get(admin, "/readyz").await, Some((503, body)) if body.contains("schema registry"))
    })
    .await;
    wait_until_async(Duration::from_secs(30), "registry waits counted", || async {
        get(admin, "/metrics").await.is_some_and(|(_, m)| {
            testkit::metrics::value(&m, "elevate_sink_registry_waits_total").is_some_and(|v| v >= 2.0)
        })
    })
    .await;
    assert_eq!(standin.accepted_count(), 0);
    assert!(
        !committed_reach_end(&bs, &n).await,
        "the partition's commit waits behind the record"
    );
    assert!(
        consume_all(&bs, &n.dlq, 1, Duration::from_secs(1))
            .await
            .is_empty(),
        "nothing parked"
    );

    gate.open.send(true).unwrap();
    wait_until(
        Duration::from_secs(60),
        "delivered once the registry answers",
        || standin.accepted_count() == 1,
    )
    .await;
    wait_until_async(Duration::from_secs(30), "committed and ready", || async {
        committed_reach_end(&bs, &n).await && matches!(get(admin, "/readyz").await, Some((200, _)))
    })
    .await;
    assert!(
        consume_all(&bs, &n.dlq, 1, Duration::from_secs(1))
            .await
            .is_empty(),
        "nothing parked"
    );
    service.terminate(Duration::from_secs(20)).await;
    let log = service.log();
    assert!(
        log.contains("schema registry unavailable"),
        "the wait is logged: {log}"
    );
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("sr-user:{password}"));
    assert!(
        !log.contains(password) && !log.contains(&basic),
        "credentials in the log: {log}"
    );
}

#[tokio::test]
async fn check_decodes_a_wire_format_sample_through_the_registry() {
    let avro_id = reg::registered("wp-check-a", SchemaType::Avro, AVSC).await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.avro");
    std::fs::write(
        &good,
        records(Shape::Cart, Format::Avro, avro_id)[3]
            .value
            .clone()
            .unwrap(),
    )
    .unwrap();
    let unknown = dir.path().join("unknown.avro");
    std::fs::write(&unknown, frame::frame(i32::MAX as u32, b"\x00")).unwrap();
    let url = reg::url();
    let check = |file: &std::path::Path| {
        let args = [
            "check",
            "--sample",
            file.to_str().unwrap(),
            "--sample-format",
            "avro",
            "--registry-url",
            &url,
        ];
        crate::ops::run_bin(
            &args,
            &[("ELEVATE_SINK__ELEVATE__BASE_URL", "http://127.0.0.1:9")],
            None,
        )
    };
    let (status, stdout, stderr) = check(&good);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("event 1 (avro wire format): 1 notification"),
        "{stdout}"
    );
    assert!(stdout.contains("customerKey=c-5f2b9a"), "{stdout}");
    let (status, stdout, stderr) = check(&unknown);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("dead-letter: unknown_schema_id: "), "{stdout}");
    // A registry that is not there fails check rather than waiting.
    let args = [
        "check",
        "--sample",
        good.to_str().unwrap(),
        "--sample-format",
        "avro",
        "--registry-url",
        "http://127.0.0.1:9",
    ];
    let (status, _, stderr) = crate::ops::run_bin(
        &args,
        &[("ELEVATE_SINK__ELEVATE__BASE_URL", "http://127.0.0.1:9")],
        None,
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unreachable"), "{stderr}");
}
