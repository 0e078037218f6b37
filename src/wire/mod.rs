//! Wire formats: a Kafka value in the Confluent wire format (Avro or Protobuf, schema in a
//! registry) decoded into the `serde_json::Value` that [`crate::decode::decode_value`] maps, so a
//! shop's JSON Pointers read the same whatever the format. Guarantee: every failure is a
//! [`WireError`] that names its cause and says by [`WireError::is_transient`] whether to wait
//! (registry unreachable) or to park the record (its bytes or its schema id are bad). Limits: no
//! reader schema (the writer's schema is used as is), JSON Schema-framed values are not
//! supported, the schema cache is never evicted (ids are immutable; a topic sees few of them).
//!
//! Pieces: [`frame`] (header and message indexes, pure), [`registry`] (REST client and cache),
//! [`avro`] and [`protobuf`] (one payload → JSON). [`Decoder::decode`] ties them together.
//!
//! # How a decoded record looks to the mapping
//!
//! | Avro | JSON |
//! |---|---|
//! | record, map | object (record fields in schema order) |
//! | union, any (`["null", T]` and wider) | the branch's value itself, untagged: `null` or the plain value. Not Avro's JSON encoding (`{"string": "x"}`): a pointer reads the field, and decode.rs tells the branches apart by JSON type (`source` may be a string or a boolean). Two branches of one JSON type (two records) cannot be told apart |
//! | enum | its symbol, a string |
//! | `null` (set, or the producer's `null` default) | `null`, which the mapping reads as absent |
//! | int, long, float, double | number; NaN and ±infinity as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | `timestamp-millis`, and `-micros`, `-nanos`, `local-timestamp-*` | **epoch milliseconds**, a number (micros and nanos floored to millis): what `event_time` reads (decode.rs takes epoch millis or RFC 3339) |
//! | `date`, `time-millis`, `time-micros` | the plain number (days; ms, µs of the day) |
//! | bytes, fixed, `decimal` | base64 string (standard alphabet, padded), as proto3 JSON writes bytes; a decimal's scale is not applied |
//! | string, `uuid` | string |
//! | `duration` | `{"months", "days", "millis"}` |
//!
//! Protobuf follows the proto3 JSON mapping (prost-reflect's serde) with these choices: field
//! names in **lowerCamel** (`customer_key` → `customerKey`, the JSON names the default mapping's
//! pointers use); enums as their **names**; **64-bit integers as numbers**, not strings (exact
//! in a `serde_json::Value`); fields at their default value (`""`, `0`, `false`, the zero enum)
//! **left out**, which the mapping reads as absent exactly as decode.rs reads `""` and `null`;
//! `google.protobuf.Timestamp` as an RFC 3339 string, `google.protobuf.Value` as any JSON value
//! (how `source` can be a string or a boolean), bytes as base64, maps as objects, wrappers as
//! their value. An enum field set explicitly to its zero value on an `optional` field is written
//! by name (`USER_CONTEXT_UNSPECIFIED`), which decode.rs rejects as a bad value.

pub mod avro;
pub mod frame;
pub mod protobuf;
pub mod registry;
pub mod source;

use serde_json::Value;

pub use frame::FrameError;
pub use registry::{Credentials, Registry, RegistryConfig, RegistryError};
pub use source::Sources;

/// A value format that goes through a registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemaFormat {
    /// Avro datum after the 5-byte header.
    Avro,
    /// Message indexes, then a Protobuf message, after the 5-byte header.
    Protobuf,
}

impl SchemaFormat {
    /// The format of the API's `schemaType` (absent means Avro); the unsupported type on error.
    pub fn from_api(schema_type: Option<&str>) -> Result<Self, String> {
        match schema_type {
            None | Some("AVRO") => Ok(SchemaFormat::Avro),
            Some("PROTOBUF") => Ok(SchemaFormat::Protobuf),
            Some(other) => Err(other.to_owned()),
        }
    }

    /// The API's name for the format.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaFormat::Avro => "AVRO",
            SchemaFormat::Protobuf => "PROTOBUF",
        }
    }
}

impl std::fmt::Display for SchemaFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registry schema, parsed and ready to decode payloads.
#[derive(Debug)]
pub enum ParsedSchema {
    /// An Avro schema.
    Avro(avro::AvroSchema),
    /// A compiled `.proto` file.
    Protobuf(protobuf::ProtoSchema),
}

impl ParsedSchema {
    /// Parses `text` of `format`; `references` are (name, text) pairs, dependencies first.
    pub fn parse(format: SchemaFormat, text: &str, references: &[(String, String)]) -> Result<Self, String> {
        match format {
            SchemaFormat::Avro => {
                let texts: Vec<String> = references.iter().map(|(_, t)| t.clone()).collect();
                avro::AvroSchema::parse(text, &texts).map(ParsedSchema::Avro)
            }
            SchemaFormat::Protobuf => {
                protobuf::ProtoSchema::parse(text, references).map(ParsedSchema::Protobuf)
            }
        }
    }

    /// The schema's format.
    pub fn format(&self) -> SchemaFormat {
        match self {
            ParsedSchema::Avro(_) => SchemaFormat::Avro,
            ParsedSchema::Protobuf(_) => SchemaFormat::Protobuf,
        }
    }

    /// The payload after the 5-byte header as JSON; the error says how it fails the schema.
    pub fn decode(&self, payload: &[u8]) -> Result<Value, String> {
        match self {
            ParsedSchema::Avro(s) => s.decode(payload),
            ParsedSchema::Protobuf(s) => s.decode(payload),
        }
    }
}

/// Why a wire-format value did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Permanent: not the Confluent wire format.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Transient or permanent, see [`RegistryError::is_transient`].
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Permanent: the schema is of another format than this decoder reads.
    #[error("schema {id} is {found}, the source is configured for {expected}")]
    WrongFormat {
        id: u32,
        expected: SchemaFormat,
        found: SchemaFormat,
    },
    /// Permanent: the payload does not match its schema.
    #[error("payload does not match {format} schema {id}: {reason}")]
    Mismatch {
        id: u32,
        format: SchemaFormat,
        reason: String,
    },
}

impl WireError {
    /// Whether to wait and retry (the registry could not be asked) rather than park the record.
    pub fn is_transient(&self) -> bool {
        match self {
            WireError::Registry(e) => e.is_transient(),
            WireError::Frame(_) | WireError::WrongFormat { .. } | WireError::Mismatch { .. } => false,
        }
    }

    /// Short machine-readable reason (a metric label, a dead-letter header value).
    pub fn reason(&self) -> &'static str {
        self.park_reason()
            .map_or("registry_unavailable", WireReason::as_str)
    }

    /// Why the record is parked; None for a transient failure (the record waits).
    pub fn park_reason(&self) -> Option<WireReason> {
        Some(match self {
            WireError::Frame(FrameError::TooShort { .. }) => WireReason::TooShort,
            WireError::Frame(FrameError::UnknownMagic { .. }) => WireReason::UnknownMagic,
            WireError::Frame(FrameError::MessageIndexes(_)) => WireReason::BadMessageIndexes,
            WireError::Registry(RegistryError::UnknownId { .. }) => WireReason::UnknownSchemaId,
            WireError::Registry(RegistryError::BadSchema { .. }) => WireReason::BadSchema,
            WireError::Registry(_) => return None,
            WireError::WrongFormat { .. } => WireReason::WrongSchemaFormat,
            WireError::Mismatch { .. } => WireReason::SchemaMismatch,
        })
    }
}

/// The permanent wire failures: the closed set of dead-letter reasons a wire-format value adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WireReason {
    /// Shorter than the 5-byte header.
    TooShort,
    /// The first byte is not the wire format's 0 (a JSON record on an Avro topic).
    UnknownMagic,
    /// Protobuf message indexes that do not parse or name no message.
    BadMessageIndexes,
    /// The registry has no schema of that id.
    UnknownSchemaId,
    /// The schema does not parse, or is of an unsupported type.
    BadSchema,
    /// The schema is of another format than the topic's.
    WrongSchemaFormat,
    /// The payload does not match its schema.
    SchemaMismatch,
}

impl WireReason {
    /// Every reason, in declaration order.
    pub const ALL: [WireReason; 7] = [
        WireReason::TooShort,
        WireReason::UnknownMagic,
        WireReason::BadMessageIndexes,
        WireReason::UnknownSchemaId,
        WireReason::BadSchema,
        WireReason::WrongSchemaFormat,
        WireReason::SchemaMismatch,
    ];

    /// Stable label, used in headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            WireReason::TooShort => "wire_too_short",
            WireReason::UnknownMagic => "wire_unknown_magic",
            WireReason::BadMessageIndexes => "wire_bad_message_indexes",
            WireReason::UnknownSchemaId => "unknown_schema_id",
            WireReason::BadSchema => "bad_schema",
            WireReason::WrongSchemaFormat => "wrong_schema_format",
            WireReason::SchemaMismatch => "schema_mismatch",
        }
    }
}

/// Decodes one source's values: Confluent framing, schema by id, payload → JSON.
#[derive(Clone, Debug)]
pub struct Decoder {
    registry: Registry,
    format: SchemaFormat,
}

impl Decoder {
    /// A decoder for values of `format` whose schemas are in `registry`.
    pub fn new(registry: Registry, format: SchemaFormat) -> Self {
        Decoder { registry, format }
    }

    /// The registry this decoder asks.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// One record value as the JSON the mapping reads.
    pub async fn decode(&self, value: &[u8]) -> Result<Value, WireError> {
        let framed = frame::split(value)?;
        let id = framed.schema_id;
        let schema = self.registry.schema(id).await?;
        if schema.format() != self.format {
            return Err(WireError::WrongFormat {
                id,
                expected: self.format,
                found: schema.format(),
            });
        }
        let decoded = match &*schema {
            ParsedSchema::Avro(s) => s.decode(framed.payload),
            ParsedSchema::Protobuf(s) => {
                let (indexes, bytes) = frame::split_message_indexes(framed.payload)?;
                s.decode_message(&indexes, bytes)
            }
        };
        decoded.map_err(|reason| WireError::Mismatch {
            id,
            format: self.format,
            reason,
        })
    }
}
