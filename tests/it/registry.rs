//! The schema registry test bed (issue 16): the real registry from `scripts/registry`
//! (`SCHEMA_REGISTRY_URL`) speaks the part of the Confluent Schema Registry API the service will
//! use — register under a subject, fetch by id (with `schemaType` for Protobuf), and the
//! documented error for an unknown id. No Kafka needed.

use serde_json::Value;

use crate::support::registry::{subject, Registry, SchemaType};

/// A cart event in Avro, shaped like `schemas/cart-event.schema.json`.
const CART_AVRO: &str = r#"{
  "type": "record",
  "name": "CartEvent",
  "namespace": "shop.events",
  "fields": [
    {"name": "type", "type": "string"},
    {"name": "market", "type": "string"},
    {"name": "customerKey", "type": ["null", "string"], "default": null},
    {"name": "sessionKey", "type": ["null", "string"], "default": null},
    {"name": "userContext", "type": {"type": "enum", "name": "UserContext",
      "symbols": ["PERSONALIZED", "UNPERSONALIZED", "ANONYMOUS"]}},
    {"name": "occurredAt", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "lines", "type": {"type": "array", "items": {
      "type": "record", "name": "Line", "fields": [
        {"name": "source", "type": "string"},
        {"name": "ticket", "type": ["null", "string"], "default": null},
        {"name": "productKey", "type": "string"},
        {"name": "quantity", "type": "int"}
      ]}}}
  ]
}"#;

/// The same cart event in Protobuf.
const CART_PROTO: &str = r#"syntax = "proto3";
package shop.events;

enum UserContext {
  USER_CONTEXT_UNSPECIFIED = 0;
  PERSONALIZED = 1;
  UNPERSONALIZED = 2;
  ANONYMOUS = 3;
}

message Line {
  string source = 1;
  optional string ticket = 2;
  string product_key = 3;
  int32 quantity = 4;
}

message CartEvent {
  string type = 1;
  string market = 2;
  optional string customer_key = 3;
  optional string session_key = 4;
  UserContext user_context = 5;
  int64 occurred_at = 6;
  repeated Line lines = 7;
}
"#;

/// An id the in-memory test registry never hands out (ids count up from 1).
const UNKNOWN_ID: u32 = i32::MAX as u32;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Whitespace-insensitive form of a schema's text.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn avro_schema_registers_under_a_subject_and_comes_back_by_id() {
    let reg = Registry::from_env();
    let subject = subject("reg-avro");

    let id = reg.register_ok(&subject, SchemaType::Avro, CART_AVRO).await;
    let got = reg
        .schema_by_id(id)
        .await
        .unwrap_or_else(|e| panic!("GET /schemas/ids/{id}: {e:?}"));
    assert_eq!(got.kind(), SchemaType::Avro, "Avro is the default type: {got:?}");
    assert_eq!(json(&got.schema), json(CART_AVRO), "the schema of id {id}");

    // Registering the same schema again finds it: same id (what a producer does on every start).
    let again = reg.register_ok(&subject, SchemaType::Avro, CART_AVRO).await;
    assert_eq!(again, id, "re-registering an identical schema under {subject}");
}

#[tokio::test]
async fn protobuf_schema_registers_under_a_subject_and_comes_back_by_id_with_its_type() {
    let reg = Registry::from_env();
    let subject = subject("reg-proto");

    let id = reg.register_ok(&subject, SchemaType::Protobuf, CART_PROTO).await;
    let got = reg
        .schema_by_id(id)
        .await
        .unwrap_or_else(|e| panic!("GET /schemas/ids/{id}: {e:?}"));
    assert_eq!(
        got.schema_type,
        Some(SchemaType::Protobuf),
        "schemaType of id {id}: {got:?}"
    );
    assert_eq!(squash(&got.schema), squash(CART_PROTO), "the schema of id {id}");
}

#[tokio::test]
async fn different_schemas_get_different_ids() {
    let reg = Registry::from_env();
    let avro = reg
        .register_ok(&subject("reg-ids-a"), SchemaType::Avro, CART_AVRO)
        .await;
    let proto = reg
        .register_ok(&subject("reg-ids-p"), SchemaType::Protobuf, CART_PROTO)
        .await;
    assert_ne!(avro, proto);
    assert_eq!(
        reg.schema_by_id(avro).await.map(|s| s.kind()),
        Ok(SchemaType::Avro)
    );
    assert_eq!(
        reg.schema_by_id(proto).await.map(|s| s.kind()),
        Ok(SchemaType::Protobuf)
    );
}

#[tokio::test]
async fn unknown_schema_id_is_404_with_error_code_40403() {
    let reg = Registry::from_env();
    let err = reg
        .schema_by_id(UNKNOWN_ID)
        .await
        .expect_err("an id nobody registered must not resolve");
    assert_eq!((err.status, err.error_code), (404, 40403), "{err:?}");
    assert!(!err.message.is_empty(), "{err:?}");
}

#[tokio::test]
async fn invalid_avro_schema_is_rejected_with_422_and_error_code_42201() {
    let reg = Registry::from_env();
    let err = reg
        .register(
            &subject("reg-bad"),
            SchemaType::Avro,
            r#"{"type": "record", "name": "NoFields"}"#,
        )
        .await
        .expect_err("an Avro record without fields is not a schema");
    assert_eq!((err.status, err.error_code), (422, 42201), "{err:?}");
}
