//! Avro and Protobuf in the Confluent wire format through the real schema registry
//! (`SCHEMA_REGISTRY_URL`, see `scripts/registry`): the schemas of `schemas/` registered, records
//! encoded as producers do, decoded by `elevate_sink::wire` into the JSON decode.rs (cart events)
//! and a payment route (order events) map. Bad input gets its classified error; a counting HTTP
//! proxy in front of the registry shows what the client really asks for. No Kafka needed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use apache_avro::Schema as AvroSchema;
use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor};
use serde_json::Value;

use elevate_sink::config::{Config, MappingConfig, SecretSource};
use elevate_sink::wire::protobuf::ProtoSchema;
use elevate_sink::wire::{
    frame, Credentials, Decoder, Registry, RegistryConfig, RegistryError, SchemaFormat, WireError,
};
use elevate_sink::Body;
use elevate_sink::Routes;
use elevate_sink::{decode, decode_value};

use crate::support::registry::{self as reg, subject, SchemaType};

pub(crate) const AVSC: &str = include_str!("../../schemas/cart-event.avsc");
pub(crate) const PROTO: &str = include_str!("../../schemas/cart-event.proto");
pub(crate) const ORDER_AVSC: &str = include_str!("../../schemas/order-event.avsc");
pub(crate) const ORDER_PROTO: &str = include_str!("../../schemas/order-event.proto");

/// Every example but `invalid-ticket-number.json`, whose ticket is a number: no Avro or
/// Protobuf record of these schemas can carry it (their ticket is a string), so it has no twin.
pub(crate) const EXAMPLES: &[&str] = &[
    "add-to-cart-anonymous",
    "add-to-cart-multi-line",
    "add-to-cart-not-from-elevate",
    "add-to-cart-single",
    "add-to-cart-synthetic",
    "add-to-cart-unpersonalized",
    "click",
    "invalid-missing-customer-key",
    "page-view",
    "remove-from-cart",
];

/// Every order example (`schemas/examples/orders/`), each with twins: the bad quantity is an int 0.
pub(crate) const ORDER_EXAMPLES: &[&str] = &[
    "orders/invalid-order-quantity",
    "orders/order-anonymous",
    "orders/order-placed",
];

/// The event shapes of `schemas/` that have Avro and Protobuf twins.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Shape {
    /// `cart-event.{schema.json,avsc,proto}`, the examples of [`EXAMPLES`].
    Cart,
    /// `order-event.{schema.json,avsc,proto}`, the examples of [`ORDER_EXAMPLES`].
    Order,
}

impl Shape {
    pub(crate) fn avsc(self) -> &'static str {
        match self {
            Shape::Cart => AVSC,
            Shape::Order => ORDER_AVSC,
        }
    }

    pub(crate) fn proto(self) -> &'static str {
        match self {
            Shape::Cart => PROTO,
            Shape::Order => ORDER_PROTO,
        }
    }

    /// Its examples that have twins, as [`example`] names them.
    pub(crate) fn examples(self) -> &'static [&'static str] {
        match self {
            Shape::Cart => EXAMPLES,
            Shape::Order => ORDER_EXAMPLES,
        }
    }

    pub(crate) fn avro_schema(self) -> AvroSchema {
        AvroSchema::parse_str(self.avsc()).unwrap_or_else(|e| panic!("{self:?} .avsc: {e}"))
    }

    /// The `.proto` file's first message (message index [0]).
    pub(crate) fn descriptor(self) -> MessageDescriptor {
        ProtoSchema::parse(self.proto(), &[])
            .unwrap_or_else(|e| panic!("{self:?} .proto does not compile: {e}"))
            .message(&[0])
            .unwrap()
    }
}

/// The `[[routes]]` entry of a payment route named `payments` fed by `topic`, default mapping.
/// The routes of a cart topic: add-to-cart and click (a click event carries its ticket itself).
pub(crate) fn cart_routes(topic: &str) -> String {
    format!(
        "[[routes]]\nname = \"cart\"\nkind = \"add-to-cart\"\ntopics = [\"{topic}\"]\n\
         [[routes]]\nname = \"clicks\"\nkind = \"click\"\ntopics = [\"{topic}\"]\n"
    )
}

pub(crate) fn payment_route(topic: &str) -> String {
    format!("[[routes]]\nname = \"payments\"\nkind = \"payment\"\ntopics = [\"{topic}\"]\n")
}

/// An id the in-memory test registry never hands out (ids count up from 1).
const UNKNOWN_ID: u32 = i32::MAX as u32;

pub(crate) fn example(name: &str) -> String {
    let path = format!("{}/schemas/examples/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn decoder(url: &str, format: SchemaFormat) -> Decoder {
    Decoder::new(
        Registry::new(&RegistryConfig::new(url)).expect("registry client"),
        format,
    )
}

/// `occurredAt` as epoch millis, whichever form the JSON example uses.
fn millis(v: &Value) -> Option<i64> {
    match v.get("occurredAt")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => {
            let t = humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            Some(t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64)
        }
        other => panic!("occurredAt {other}"),
    }
}

/// The Avro record a producer would write for a JSON example (occurredAt as timestamp-millis).
pub(crate) fn avro_twin(schema: &AvroSchema, json: &Value) -> Vec<u8> {
    let mut json = json.clone();
    if let Some(ms) = millis(&json) {
        json["occurredAt"] = ms.into();
    }
    let value = apache_avro::types::Value::from(json)
        .resolve(schema)
        .unwrap_or_else(|e| panic!("example does not fit the .avsc: {e}"));
    apache_avro::to_avro_datum(schema, value).expect("encode Avro")
}

/// The Protobuf message a producer would write (occurredAt as a Timestamp), message index [0].
pub(crate) fn proto_twin(desc: &MessageDescriptor, json: &Value) -> Vec<u8> {
    let mut json = json.clone();
    if let Some(ms) = millis(&json) {
        let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
        json["occurredAt"] = humantime::format_rfc3339_millis(t).to_string().into();
    }
    let opts = DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(desc.clone(), json, &opts)
        .unwrap_or_else(|e| panic!("example does not fit the .proto: {e}"));
    let mut out = frame::message_indexes(&[0]);
    out.extend(msg.encode_to_vec());
    out
}

#[tokio::test]
async fn avro_and_protobuf_twins_of_every_example_map_to_the_same_cart_event() {
    let url = reg::url();
    let avro_id = reg::registered("wire-avro", SchemaType::Avro, AVSC).await;
    let proto_id = reg::registered("wire-proto", SchemaType::Protobuf, PROTO).await;
    let avro = decoder(&url, SchemaFormat::Avro);
    let proto = decoder(&url, SchemaFormat::Protobuf);
    let avro_schema = Shape::Cart.avro_schema();
    let desc = Shape::Cart.descriptor();
    let mapping = MappingConfig::default();
    let (mut sendable, mut invalid, mut other_types) = (0, 0, 0);

    for name in EXAMPLES {
        let text = example(name);
        let json: Value = serde_json::from_str(&text).unwrap();
        let want = decode(&mapping, Some(text.as_bytes()));
        match &want {
            Ok(e) if !e.is_add_to_cart => other_types += 1,
            Ok(e) => sendable += e.lines.iter().filter(|l| l.would_send()).count(),
            Err(_) => invalid += 1,
        }

        let a = avro
            .decode(&frame::frame(avro_id, &avro_twin(&avro_schema, &json)))
            .await
            .unwrap_or_else(|e| panic!("{name} (Avro): {e}"));
        assert_eq!(
            decode_value(&mapping, &a),
            want,
            "{name}: Avro twin decoded to {a}"
        );

        let p = proto
            .decode(&frame::frame(proto_id, &proto_twin(&desc, &json)))
            .await
            .unwrap_or_else(|e| panic!("{name} (Protobuf): {e}"));
        assert_eq!(
            decode_value(&mapping, &p),
            want,
            "{name}: Protobuf twin decoded to {p}"
        );
    }
    // Lines that are sent, and other event types (page_view, remove_from_cart, click: the click's
    // own route is checked through the pipeline in wire_pipeline.rs). (decode.rs reads but does
    // not judge consent: invalid-missing-customer-key decodes, and select rejects the equal
    // CartEvent alike.)
    assert_eq!((sendable, invalid, other_types), (7, 0, 3));
}

#[tokio::test]
async fn avro_and_protobuf_twins_of_every_order_example_map_to_the_same_payment() {
    let dir = format!("{}/schemas/examples/orders", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .map(|f| format!("orders/{}", f.trim_end_matches(".json")))
        .collect();
    files.sort();
    assert_eq!(files, ORDER_EXAMPLES, "every order example has twins");

    let avro_id = reg::registered("wire-order-a", SchemaType::Avro, ORDER_AVSC).await;
    let proto_id = reg::registered("wire-order-p", SchemaType::Protobuf, ORDER_PROTO).await;
    let avro = decoder(&reg::url(), SchemaFormat::Avro);
    let proto = decoder(&reg::url(), SchemaFormat::Protobuf);
    let (avro_schema, desc) = (Shape::Order.avro_schema(), Shape::Order.descriptor());
    let toml = format!(
        "[kafka]\ntopics = [\"orders\"]\n[elevate]\nbase_url = \"http://h\"\n\
         payment_api_key = {{ env = \"ELEVATE_SINK_TEST_NO_SUCH_VAR\" }}\n{}",
        payment_route("orders")
    );
    let config = Config::from_toml_with_env(&toml, "", Vec::new()).unwrap();
    let routes = Routes::from_config(&config).unwrap();
    let (mut payments, mut parked) = (0, Vec::new());

    for name in ORDER_EXAMPLES {
        let text = example(name);
        let json: Value = serde_json::from_str(&text).unwrap();
        let want = routes.map("orders", Some(text.as_bytes()));
        match &want {
            Ok(m) => {
                assert!(
                    m.notifications.iter().all(|n| matches!(n.body, Body::Payment(_))),
                    "{name}: {m:?}"
                );
                payments += m.notifications.len();
            }
            Err(e) => parked.push(e.invalid.detail.clone()),
        }

        let a = avro
            .decode(&frame::frame(avro_id, &avro_twin(&avro_schema, &json)))
            .await
            .unwrap_or_else(|e| panic!("{name} (Avro): {e}"));
        assert_eq!(
            routes.map_value("orders", &a),
            want,
            "{name}: Avro twin decoded to {a}"
        );

        let p = proto
            .decode(&frame::frame(proto_id, &proto_twin(&desc, &json)))
            .await
            .unwrap_or_else(|e| panic!("{name} (Protobuf): {e}"));
        assert_eq!(
            routes.map_value("orders", &p),
            want,
            "{name}: Protobuf twin decoded to {p}"
        );
    }
    // Two orders paid, one parked naming the line and field (the Protobuf twin's quantity 0 is
    // set, not left out as missing: the field is `optional`).
    assert_eq!(payments, 2);
    assert_eq!(
        parked,
        ["lines[0] quantity at /quantity must be a positive integer"]
    );
}

#[tokio::test]
async fn decoded_values_follow_the_documented_mapping() {
    let avro_id = reg::registered("wire-map-a", SchemaType::Avro, AVSC).await;
    let proto_id = reg::registered("wire-map-p", SchemaType::Protobuf, PROTO).await;
    let json: Value = serde_json::from_str(&example("add-to-cart-single")).unwrap();

    let a = decoder(&reg::url(), SchemaFormat::Avro)
        .decode(&frame::frame(
            avro_id,
            &avro_twin(&AvroSchema::parse_str(AVSC).unwrap(), &json),
        ))
        .await
        .unwrap();
    // Unions untagged, absent optionals as null, the timestamp as epoch millis.
    assert_eq!(a["customerKey"], "c-5f2b9a");
    assert_eq!(a["userContext"], Value::Null);
    assert_eq!(a["occurredAt"], 1_796_033_700_000_i64);
    assert_eq!(a["visitor"]["ip"], "203.0.113.7");
    assert_eq!(a["lines"][0]["source"], "elevate");
    assert_eq!(a["lines"][0]["quantity"], 1);

    let p = decoder(&reg::url(), SchemaFormat::Protobuf)
        .decode(&frame::frame(
            proto_id,
            &proto_twin(&Shape::Cart.descriptor(), &json),
        ))
        .await
        .unwrap();
    // lowerCamel names, the Timestamp as RFC 3339, unset fields left out.
    assert_eq!(p["customerKey"], "c-5f2b9a");
    assert_eq!(p.get("userContext"), None);
    assert_eq!(p["occurredAt"], "2026-11-30T10:15:00Z");
    assert_eq!(p["visitor"]["userAgent"], json["visitor"]["userAgent"]);
    assert_eq!(p["lines"][0]["productKey"], "p-1001");
}

#[tokio::test]
async fn protobuf_references_are_fetched_and_compiled() {
    let registry = reg::Registry::from_env();
    let dep_subject = subject("wire-ref-dep");
    let dep = "syntax = \"proto3\"; package shop.ref; message Line { string ticket = 1; }";
    registry
        .register_ok(&dep_subject, SchemaType::Protobuf, dep)
        .await;
    let top = "syntax = \"proto3\"; package shop.ref;\nimport \"shop/ref/line.proto\";\n\
               message Cart { string type = 1; repeated Line lines = 2; }";
    let id = registry
        .register_with_references(
            &subject("wire-ref-top"),
            SchemaType::Protobuf,
            top,
            &[("shop/ref/line.proto", &dep_subject, 1)],
        )
        .await
        .unwrap_or_else(|e| panic!("register with a reference: {e:?}"));
    // type = "add_to_cart", lines = [{ticket: "T"}]
    let mut msg = vec![0x0a, 11];
    msg.extend(b"add_to_cart");
    msg.extend([0x12, 3, 0x0a, 1, b'T']);
    let mut payload = frame::message_indexes(&[0]);
    payload.extend(msg);
    let v = decoder(&reg::url(), SchemaFormat::Protobuf)
        .decode(&frame::frame(id, &payload))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        v,
        serde_json::json!({"type": "add_to_cart", "lines": [{"ticket": "T"}]})
    );
}

#[tokio::test]
async fn unknown_schema_id_is_permanent() {
    let err = decoder(&reg::url(), SchemaFormat::Avro)
        .decode(&frame::frame(UNKNOWN_ID, b"\x02x"))
        .await
        .expect_err("nobody registered this id");
    assert!(
        matches!(&err, WireError::Registry(RegistryError::UnknownId { id, .. }) if *id == UNKNOWN_ID),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(err.reason(), "unknown_schema_id");
    assert!(
        err.to_string()
            .contains(&format!("schema {UNKNOWN_ID} is unknown")),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_registry_is_transient() {
    // A bound socket that does not listen: connecting is refused, and the port stays ours.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = format!("http://{}/apis/ccompat/v7", socket.local_addr().unwrap());
    let err = decoder(&closed, SchemaFormat::Avro)
        .decode(&frame::frame(1, b"\x02x"))
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(&err, WireError::Registry(RegistryError::Unreachable { .. })),
        "{err:?}"
    );
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.reason(), "registry_unavailable");

    // A registry that accepts the connection and never answers: the request times out.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let mut cfg = RegistryConfig::new(url);
    cfg.request_timeout = Duration::from_millis(300);
    let err = Decoder::new(Registry::new(&cfg).unwrap(), SchemaFormat::Avro)
        .decode(&frame::frame(1, b"\x02x"))
        .await
        .expect_err("no answer");
    held.abort();
    assert!(
        matches!(&err, WireError::Registry(RegistryError::Unreachable { .. })),
        "{err:?}"
    );
    assert!(
        err.is_transient() && err.to_string().contains("timed out"),
        "{err}"
    );
}

#[tokio::test]
async fn payload_that_does_not_match_its_schema_is_permanent_and_names_it() {
    let avro_id = reg::registered("wire-bad-a", SchemaType::Avro, AVSC).await;
    let proto_id = reg::registered("wire-bad-p", SchemaType::Protobuf, PROTO).await;
    let avro = decoder(&reg::url(), SchemaFormat::Avro);
    let proto = decoder(&reg::url(), SchemaFormat::Protobuf);

    // Avro: the type string claims 50 bytes and the payload ends after 3.
    let err = avro.decode(&frame::frame(avro_id, b"\x64abc")).await.unwrap_err();
    assert_mismatch(&err, &format!("payload does not match AVRO schema {avro_id}: "));
    // Avro: a complete record followed by bytes no field reads.
    let json: Value = serde_json::from_str(&example("page-view")).unwrap();
    let mut long = avro_twin(&AvroSchema::parse_str(AVSC).unwrap(), &json);
    long.extend(b"junk");
    let err = avro.decode(&frame::frame(avro_id, &long)).await.unwrap_err();
    assert_mismatch(&err, "4 bytes left after the datum");

    // Protobuf: field 1 (`type`, a string) sent as a varint.
    let err = proto
        .decode(&frame::frame(proto_id, &[0, 0x08, 0x01]))
        .await
        .unwrap_err();
    assert_mismatch(
        &err,
        &format!("payload does not match PROTOBUF schema {proto_id}: elevate_sink.cart.CartEvent: "),
    );
    // Protobuf: message index 7 of a file with 3 top-level messages.
    let err = proto.decode(&frame::frame(proto_id, &[2, 14])).await.unwrap_err();
    assert_mismatch(&err, "message index 7 out of range");
    // Protobuf: message indexes cut short (a count of 2, one index).
    let err = proto.decode(&frame::frame(proto_id, &[4, 0])).await.unwrap_err();
    assert_eq!(err.reason(), "wire_bad_message_indexes");
    assert!(
        !err.is_transient() && err.to_string().contains("ends inside a varint"),
        "{err}"
    );

    // An Avro schema id read as Protobuf, and plain JSON through a wire decoder.
    let err = proto.decode(&frame::frame(avro_id, b"\0")).await.unwrap_err();
    assert!(
        matches!(err, WireError::WrongFormat { .. }) && !err.is_transient(),
        "{err:?}"
    );
    let err = avro.decode(br#"{"type":"add_to_cart"}"#).await.unwrap_err();
    assert_eq!(err.reason(), "wire_unknown_magic");
    assert!(
        !err.is_transient() && err.to_string().contains("unknown magic byte 0x7b"),
        "{err}"
    );
}

fn assert_mismatch(err: &WireError, needle: &str) {
    assert!(matches!(err, WireError::Mismatch { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert_eq!(err.reason(), "schema_mismatch");
    assert!(err.to_string().contains(needle), "{needle:?} not in: {err}");
}

#[tokio::test]
async fn a_schema_that_does_not_parse_is_permanent() {
    // The registry accepts this Protobuf text (it parses), but it imports a file it does not
    // have as a reference: the client cannot compile it.
    let registry = reg::Registry::from_env();
    let text =
        "syntax = \"proto3\"; package shop.broken; import \"not/here.proto\"; message M { string a = 1; }";
    let id = match registry
        .register(&subject("wire-broken"), SchemaType::Protobuf, text)
        .await
    {
        Ok(id) => id,
        Err(e) => panic!("the registry refused the schema, pick another broken one: {e:?}"),
    };
    let err = decoder(&reg::url(), SchemaFormat::Protobuf)
        .decode(&frame::frame(id, &[0]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WireError::Registry(RegistryError::BadSchema { .. })),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("not/here.proto"), "{err}");
}

/// An HTTP proxy in front of the real registry that records every request it forwards.
struct Proxy {
    /// The registry's base URL, through the proxy.
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: Option<String>,
}

impl Proxy {
    async fn start() -> Proxy {
        let upstream = url::Url::parse(&reg::url()).unwrap();
        let origin = upstream.origin().ascii_serialization();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = (origin, reqwest::Client::new(), Arc::clone(&seen));
        let app = axum::Router::new().fallback(forward).with_state(Arc::new(state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{}", listener.local_addr().unwrap(), upstream.path());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Proxy { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type ProxyState = Arc<(String, reqwest::Client, Arc<Mutex<Vec<Seen>>>)>;

async fn forward(
    axum::extract::State(state): axum::extract::State<ProxyState>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (origin, http, seen) = &*state;
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let authorization = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    seen.lock().unwrap().push(Seen {
        path: path.clone(),
        authorization,
    });
    match http
        .get(format!("{origin}{path}"))
        .header("accept", reg::CONTENT_TYPE)
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status();
            let body = r.bytes().await.unwrap_or_default();
            (status, [("content-type", reg::CONTENT_TYPE)], body).into_response()
        }
        Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

#[tokio::test]
async fn each_schema_is_fetched_once_however_many_records_ask_at_once() {
    let avro_id = reg::registered("wire-cache-a", SchemaType::Avro, AVSC).await;
    let proto_id = reg::registered("wire-cache-p", SchemaType::Protobuf, PROTO).await;
    let json: Value = serde_json::from_str(&example("add-to-cart-single")).unwrap();
    let avro_rec = frame::frame(avro_id, &avro_twin(&AvroSchema::parse_str(AVSC).unwrap(), &json));
    let proto_rec = frame::frame(proto_id, &proto_twin(&Shape::Cart.descriptor(), &json));

    let proxy = Proxy::start().await;
    let client = Registry::new(&RegistryConfig::new(&proxy.url)).unwrap();
    let avro = Decoder::new(client.clone(), SchemaFormat::Avro);
    let proto = Decoder::new(client.clone(), SchemaFormat::Protobuf);
    // 32 lookups polled together: all of them ask before any answer can arrive.
    let lookups = (0..16).flat_map(|_| [avro.decode(&avro_rec), proto.decode(&proto_rec)]);
    for r in futures::future::join_all(lookups).await {
        r.unwrap_or_else(|e| panic!("{e}"));
    }
    let want = |ids: &[u32]| -> Vec<String> {
        let mut v: Vec<String> = ids
            .iter()
            .map(|id| format!("{}/schemas/ids/{id}", url::Url::parse(&proxy.url).unwrap().path()))
            .collect();
        v.sort();
        v
    };
    let mut paths = proxy.paths();
    paths.sort();
    assert_eq!(paths, want(&[avro_id, proto_id]), "one fetch per id");
    assert_eq!(client.cached(), 2);

    for _ in 0..10 {
        avro.decode(&avro_rec).await.unwrap();
        proto.decode(&proto_rec).await.unwrap();
    }
    assert_eq!(proxy.paths().len(), 2, "cached ids are not fetched again");

    // A new client has its own cache: the proxy does see its fetch.
    let fresh = Decoder::new(
        Registry::new(&RegistryConfig::new(&proxy.url)).unwrap(),
        SchemaFormat::Avro,
    );
    fresh.decode(&avro_rec).await.unwrap();
    assert_eq!(proxy.paths().len(), 3);

    // Failures are not cached: each record with an unknown id asks again.
    for _ in 0..2 {
        let err = avro
            .decode(&frame::frame(UNKNOWN_ID, b"\x02x"))
            .await
            .unwrap_err();
        assert!(!err.is_transient(), "{err}");
    }
    assert_eq!(proxy.paths().len(), 5);
}

#[tokio::test]
async fn credentials_are_sent_but_never_shown() {
    let registry = reg::Registry::from_env();
    let avro_id = registry
        .register_ok(&subject("wire-auth"), SchemaType::Avro, AVSC)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pa55-w0rd-Zq9\n").unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "tok-3xYz-secret").unwrap();
    let password = SecretSource::File(password_file)
        .resolve("registry.password")
        .unwrap();
    let token = SecretSource::File(token_file).resolve("registry.token").unwrap();
    let basic = Credentials::Basic {
        username: "sink".into(),
        password,
    };
    let bearer = Credentials::Bearer { token };
    // What would leak: the secrets, and the basic header's base64 form.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode("sink:pa55-w0rd-Zq9");
    let forbidden = ["pa55-w0rd-Zq9", "tok-3xYz-secret", encoded.as_str(), "sink"];
    let check = |what: &str, text: String| {
        for f in forbidden {
            assert!(!text.contains(f), "{what} shows a secret: {text}");
        }
    };

    let proxy = Proxy::start().await;
    for creds in [basic, bearer] {
        check("Credentials Debug", format!("{creds:?}"));
        let mut cfg = RegistryConfig::new(&proxy.url);
        cfg.credentials = creds.clone();
        check("RegistryConfig Debug", format!("{cfg:?}"));
        let client = Registry::new(&cfg).unwrap();
        let dec = Decoder::new(client.clone(), SchemaFormat::Avro);
        check("Registry Debug", format!("{client:?}"));
        check("Decoder Debug", format!("{dec:?}"));
        let json: Value = serde_json::from_str(&example("page-view")).unwrap();
        let rec = frame::frame(avro_id, &avro_twin(&AvroSchema::parse_str(AVSC).unwrap(), &json));
        dec.decode(&rec).await.unwrap();
        let err = dec.decode(&frame::frame(UNKNOWN_ID, b"")).await.unwrap_err();
        check("error", format!("{err} {err:?}"));
        // The same credentials against nothing at all: the transient error does not show them.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        cfg.url = format!("http://{}", socket.local_addr().unwrap());
        let err = Decoder::new(Registry::new(&cfg).unwrap(), SchemaFormat::Avro)
            .decode(&frame::frame(1, b""))
            .await
            .unwrap_err();
        assert!(err.is_transient());
        check("transient error", format!("{err} {err:?}"));
    }
    let auth: Vec<Option<String>> = proxy.seen().into_iter().map(|s| s.authorization).collect();
    assert_eq!(
        auth,
        [
            Some(format!("Basic {encoded}")),
            Some(format!("Basic {encoded}")),
            Some("Bearer tok-3xYz-secret".into()),
            Some("Bearer tok-3xYz-secret".into()),
        ],
        "each request carries the credentials"
    );
}
