//! Decode cost per record, JSON vs Avro vs Protobuf (`cargo bench --bench wire`): the same
//! example event (`schemas/examples/`) as JSON text, and as Avro and Protobuf twins of
//! `schemas/cart-event.avsc` / `.proto` in the Confluent wire format. Each bench goes from the
//! record's bytes to the value decode.rs maps ("value"), and on to the `CartEvent` ("event").
//! The schema is parsed once, as the registry client's cache holds it; a cache hit (a mutex
//! and a hash lookup) is not included.

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use elevate_sink::config::MappingConfig;
use elevate_sink::wire::{frame, ParsedSchema, SchemaFormat};
use elevate_sink::{decode, decode_value};
use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage};
use serde_json::Value;

const AVSC: &str = include_str!("../schemas/cart-event.avsc");
const PROTO: &str = include_str!("../schemas/cart-event.proto");

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/schemas/examples/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example")
}

fn ms(json: &Value) -> Option<i64> {
    match json.get("occurredAt")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => Some(
            humantime::parse_rfc3339(s)
                .ok()?
                .duration_since(UNIX_EPOCH)
                .ok()?
                .as_millis() as i64,
        ),
        _ => None,
    }
}

fn avro_record(json: &Value) -> Vec<u8> {
    let schema = apache_avro::Schema::parse_str(AVSC).unwrap();
    let mut json = json.clone();
    if let Some(ms) = ms(&json) {
        json["occurredAt"] = ms.into();
    }
    let v = apache_avro::types::Value::from(json).resolve(&schema).unwrap();
    frame::frame(1, &apache_avro::to_avro_datum(&schema, v).unwrap())
}

fn proto_record(schema: &ParsedSchema, json: &Value) -> Vec<u8> {
    let ParsedSchema::Protobuf(p) = schema else {
        unreachable!()
    };
    let mut json = json.clone();
    if let Some(ms) = ms(&json) {
        let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
        json["occurredAt"] = humantime::format_rfc3339_millis(t).to_string().into();
    }
    let opts = DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(p.message(&[0]).unwrap(), json, &opts).unwrap();
    let mut payload = frame::message_indexes(&[0]);
    payload.extend(msg.encode_to_vec());
    frame::frame(2, &payload)
}

fn wire_value(schema: &ParsedSchema, record: &[u8]) -> Value {
    let f = frame::split(record).unwrap();
    schema.decode(f.payload).unwrap()
}

fn bench(c: &mut Criterion) {
    let mapping = MappingConfig::default();
    let avro = ParsedSchema::parse(SchemaFormat::Avro, AVSC, &[]).unwrap();
    let proto = ParsedSchema::parse(SchemaFormat::Protobuf, PROTO, &[]).unwrap();
    let mut g = c.benchmark_group("wire");
    for name in ["add-to-cart-single", "add-to-cart-multi-line"] {
        let text = example(name);
        let json: Value = serde_json::from_str(&text).unwrap();
        let compact = serde_json::to_vec(&json).unwrap();
        let a = avro_record(&json);
        let p = proto_record(&proto, &json);
        eprintln!(
            "{name}: JSON {} bytes, Avro {} bytes, Protobuf {} bytes (wire format)",
            compact.len(),
            a.len(),
            p.len()
        );
        let want = decode(&mapping, Some(&compact));
        assert_eq!(decode_value(&mapping, &wire_value(&avro, &a)), want);
        assert_eq!(decode_value(&mapping, &wire_value(&proto, &p)), want);

        g.bench_function(BenchmarkId::new("json/value", name), |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(&compact)).unwrap())
        });
        g.bench_function(BenchmarkId::new("avro/value", name), |b| {
            b.iter(|| wire_value(&avro, black_box(&a)))
        });
        g.bench_function(BenchmarkId::new("protobuf/value", name), |b| {
            b.iter(|| wire_value(&proto, black_box(&p)))
        });
        g.bench_function(BenchmarkId::new("json/event", name), |b| {
            b.iter(|| decode(&mapping, Some(black_box(&compact))).unwrap())
        });
        g.bench_function(BenchmarkId::new("avro/event", name), |b| {
            b.iter(|| decode_value(&mapping, &wire_value(&avro, black_box(&a))).unwrap())
        });
        g.bench_function(BenchmarkId::new("protobuf/event", name), |b| {
            b.iter(|| decode_value(&mapping, &wire_value(&proto, black_box(&p))).unwrap())
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
