//! Protobuf: the registry's `.proto` text (and its references) compiled at run time by `protox`,
//! one message decoded by `prost-reflect` and rendered in the proto3 JSON mapping with the options
//! documented in [`super`]. Google's well-known types are built in; other imports must be
//! references of the schema.

use std::collections::HashMap;

use prost_reflect::{DynamicMessage, FileDescriptor, MessageDescriptor, SerializeOptions};
use protox::file::{ChainFileResolver, File, FileResolver, GoogleFileResolver};
use serde_json::Value;

use super::frame;

/// The file name the schema itself is compiled under (references keep their own names).
const ROOT: &str = "elevate-sink/registry-schema.proto";

/// A compiled Protobuf schema: the messages of its file, addressed by message indexes.
#[derive(Debug)]
pub struct ProtoSchema {
    file: FileDescriptor,
}

/// Serves the schema text and its references' texts to the compiler, by import name.
struct Sources(HashMap<String, String>);

impl FileResolver for Sources {
    fn open_file(&self, name: &str) -> Result<File, protox::Error> {
        match self.0.get(name) {
            Some(text) => File::from_source(name, text),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

impl ProtoSchema {
    /// Compiles `text`; `references` are (import name, `.proto` text) pairs.
    pub fn parse(text: &str, references: &[(String, String)]) -> Result<Self, String> {
        let mut sources: HashMap<String, String> = references.iter().cloned().collect();
        sources.insert(ROOT.to_owned(), text.to_owned());
        let mut resolver = ChainFileResolver::new();
        resolver.add(Sources(sources));
        resolver.add(GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.open_file(ROOT).map_err(|e| e.to_string())?;
        let file = compiler
            .descriptor_pool()
            .get_file_by_name(ROOT)
            .ok_or_else(|| "the compiled schema has no file".to_string())?;
        if file.messages().len() == 0 {
            return Err("the schema defines no message".into());
        }
        Ok(ProtoSchema { file })
    }

    /// The message the indexes name: the first picks a top-level message in file order, each
    /// next one a message nested in the previous.
    pub fn message(&self, indexes: &[u32]) -> Result<MessageDescriptor, String> {
        let mut iter = indexes.iter();
        let first = *iter.next().ok_or("no message index")?;
        let mut msg = self.file.messages().nth(first as usize).ok_or_else(|| {
            format!(
                "message index {first} out of range: the schema has {} top-level messages",
                self.file.messages().len()
            )
        })?;
        for &i in iter {
            let child = msg.child_messages().nth(i as usize);
            msg = child.ok_or_else(|| {
                format!(
                    "message index {i} out of range: {} has {} nested messages",
                    msg.full_name(),
                    msg.child_messages().len()
                )
            })?;
        }
        Ok(msg)
    }

    /// The payload after the header (message indexes, then the message) as JSON.
    pub fn decode(&self, payload: &[u8]) -> Result<Value, String> {
        let (indexes, bytes) = frame::split_message_indexes(payload).map_err(|e| e.to_string())?;
        self.decode_message(&indexes, bytes)
    }

    /// The message the indexes name, from its bytes, as JSON.
    pub fn decode_message(&self, indexes: &[u32], bytes: &[u8]) -> Result<Value, String> {
        let desc = self.message(indexes)?;
        let name = desc.full_name().to_owned();
        let msg = DynamicMessage::decode(desc, bytes).map_err(|e| format!("{name}: {e}"))?;
        to_json(&msg).map_err(|e| format!("{name}: {e}"))
    }
}

/// proto3 JSON with lowerCamel names, enum names, 64-bit integers as numbers, defaults left out.
pub fn to_json(msg: &DynamicMessage) -> Result<Value, serde_json::Error> {
    let opts = SerializeOptions::new()
        .use_proto_field_name(false)
        .use_enum_numbers(false)
        .stringify_64_bit_integers(false)
        .skip_default_fields(true);
    msg.serialize_with_options(serde_json::value::Serializer, &opts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;
    use serde_json::json;

    const PROTO: &str = r#"syntax = "proto3";
package t;
import "google/protobuf/timestamp.proto";
enum Kind { KIND_UNSPECIFIED = 0; A = 1; B = 2; }
message Outer {
  message Inner { string s = 1; }
  string customer_key = 1;
  Kind kind = 2;
  int64 big = 3;
  google.protobuf.Timestamp at = 4;
  bytes raw = 5;
  map<string, int32> attrs = 6;
  optional string maybe = 7;
}
message Other { int32 n = 1; }
"#;

    fn encode(schema: &ProtoSchema, idx: &[u32], v: Value) -> Vec<u8> {
        let desc = schema.message(idx).unwrap();
        let msg = DynamicMessage::deserialize(desc, v).unwrap();
        let mut out = frame::message_indexes(idx);
        out.extend(msg.encode_to_vec());
        out
    }

    #[test]
    fn documented_mapping() {
        let s = ProtoSchema::parse(PROTO, &[]).unwrap();
        let v = json!({"customerKey": "c", "kind": "B", "big": 9_007_199_254_740_993_i64,
                       "at": "2026-11-30T10:15:00Z", "raw": "/wA=", "attrs": {"x": 1}});
        let got = s.decode(&encode(&s, &[0], v.clone())).unwrap();
        assert_eq!(
            got, v,
            "lowerCamel, enum names, int64 as a number, absent defaults left out"
        );
        // proto field names are accepted on the way in too (what a producer's JSON may use).
        let snake = encode(&s, &[0], json!({"customer_key": "c", "maybe": ""}));
        assert_eq!(
            s.decode(&snake).unwrap(),
            json!({"customerKey": "c", "maybe": ""})
        );
    }

    #[test]
    fn message_indexes_pick_nested_and_later_messages() {
        let s = ProtoSchema::parse(PROTO, &[]).unwrap();
        assert_eq!(
            s.decode(&encode(&s, &[1], json!({"n": 3}))).unwrap(),
            json!({"n": 3})
        );
        assert_eq!(
            s.decode(&encode(&s, &[0, 0], json!({"s": "x"}))).unwrap(),
            json!({"s": "x"})
        );
        let e = s.message(&[2]).unwrap_err();
        assert!(
            e.contains("message index 2 out of range: the schema has 2"),
            "{e}"
        );
        let e = s.message(&[0, 5]).unwrap_err();
        assert!(e.contains("t.Outer has 2 nested"), "{e}"); // Inner and the map entry
    }

    #[test]
    fn wrong_wire_types_and_bad_text_are_errors() {
        let s = ProtoSchema::parse(PROTO, &[]).unwrap();
        // field 1 (a string) sent as a varint
        let e = s.decode(&[0, 0x08, 0x01]).unwrap_err();
        assert!(e.starts_with("t.Outer: "), "{e}");
        // field 1 with invalid UTF-8
        assert!(s.decode(&[0, 0x0a, 0x01, 0xff]).is_err());
        assert!(ProtoSchema::parse("syntax = \"proto3\"; message {", &[]).is_err());
        assert!(ProtoSchema::parse("syntax = \"proto3\";", &[])
            .unwrap_err()
            .contains("no message"));
    }

    #[test]
    fn references_are_imports_by_name() {
        let dep = (
            "shop/line.proto".to_string(),
            "syntax = \"proto3\"; package shop; message Line { string t = 1; }".to_string(),
        );
        let top =
            "syntax = \"proto3\"; package shop; import \"shop/line.proto\"; message Cart { Line line = 1; }";
        let s = ProtoSchema::parse(top, std::slice::from_ref(&dep)).unwrap();
        let bytes = encode(&s, &[0], json!({"line": {"t": "x"}}));
        assert_eq!(s.decode(&bytes).unwrap(), json!({"line": {"t": "x"}}));
        assert!(ProtoSchema::parse(top, &[])
            .unwrap_err()
            .contains("shop/line.proto"));
    }
}
