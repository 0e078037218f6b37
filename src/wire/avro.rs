//! Avro: a registry schema (with its named references) parsed by `apache-avro`, and one datum
//! decoded with it into the JSON value the mapping reads (see the mapping table in [`super`]).
//! A datum that does not decode, or leaves bytes unread, is the record's fault.

use apache_avro::types::Value as Avro;
use apache_avro::Schema;
use base64::Engine as _;
use serde_json::{Map, Number, Value};

/// A parsed Avro writer schema and the named schemas its references brought.
#[derive(Debug)]
pub struct AvroSchema {
    schema: Schema,
    referenced: Vec<Schema>,
}

impl AvroSchema {
    /// Parses `text`, resolving named types against `references` (their schema texts).
    pub fn parse(text: &str, references: &[String]) -> Result<Self, String> {
        if references.is_empty() {
            let schema = Schema::parse_str(text).map_err(|e| e.to_string())?;
            return Ok(AvroSchema {
                schema,
                referenced: Vec::new(),
            });
        }
        let (schema, referenced) =
            Schema::parse_str_with_list(text, references).map_err(|e| e.to_string())?;
        Ok(AvroSchema { schema, referenced })
    }

    /// The datum in `payload` as JSON; the error says why it does not match the schema.
    pub fn decode(&self, payload: &[u8]) -> Result<Value, String> {
        let mut reader = Guarded {
            rest: payload,
            short: false,
        };
        let datum = if self.referenced.is_empty() {
            apache_avro::from_avro_datum(&self.schema, &mut reader, None)
        } else {
            apache_avro::from_avro_datum_schemata(
                &self.schema,
                self.referenced.iter().collect(),
                &mut reader,
                None,
            )
        }
        .map_err(|e| e.to_string())?;
        if reader.short {
            return Err(format!(
                "the datum is cut short: the payload ends after {} bytes",
                payload.len()
            ));
        }
        if !reader.rest.is_empty() {
            return Err(format!(
                "{} bytes left after the datum ({} bytes read)",
                reader.rest.len(),
                payload.len() - reader.rest.len()
            ));
        }
        Ok(to_json(datum))
    }
}

/// The payload as apache-avro reads it, noting any read past its end: apache-avro 0.21 turns a
/// string, bytes or union index cut short by the end of input into `null` instead of an error,
/// which would let a truncated ticket pass as "no ticket".
struct Guarded<'a> {
    rest: &'a [u8],
    short: bool,
}

impl std::io::Read for Guarded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.len() > self.rest.len() {
            self.short = true;
        }
        let n = buf.len().min(self.rest.len());
        let (head, tail) = self.rest.split_at(n);
        buf[..n].copy_from_slice(head);
        self.rest = tail;
        Ok(n)
    }
}

/// The documented mapping of an Avro value to JSON (module doc of [`super`]).
pub fn to_json(v: Avro) -> Value {
    match v {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => Value::from(i),
        Avro::Long(l) | Avro::TimeMicros(l) => Value::from(l),
        Avro::TimestampMillis(ms) | Avro::LocalTimestampMillis(ms) => Value::from(ms),
        Avro::TimestampMicros(us) | Avro::LocalTimestampMicros(us) => Value::from(us.div_euclid(1_000)),
        Avro::TimestampNanos(ns) | Avro::LocalTimestampNanos(ns) => Value::from(ns.div_euclid(1_000_000)),
        Avro::Float(f) => float(f64::from(f)),
        Avro::Double(d) => float(d),
        Avro::Bytes(b) | Avro::Fixed(_, b) => base64(&b),
        Avro::Decimal(d) => base64(&<Vec<u8>>::try_from(&d).unwrap_or_default()),
        Avro::BigDecimal(d) => Value::String(d.to_string()),
        Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
        Avro::Uuid(u) => Value::String(u.to_string()),
        Avro::Union(_, inner) => to_json(*inner),
        Avro::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Avro::Map(entries) => Value::Object(entries.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Avro::Record(fields) => {
            let mut m = Map::with_capacity(fields.len());
            for (k, v) in fields {
                m.insert(k, to_json(v));
            }
            Value::Object(m)
        }
        Avro::Duration(d) => serde_json::json!({
            "months": u32::from(d.months()),
            "days": u32::from(d.days()),
            "millis": u32::from(d.millis()),
        }),
    }
}

/// A finite float as a number; NaN and the infinities as proto3 JSON writes them.
fn float(f: f64) -> Value {
    match Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::String("NaN".into()),
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

fn base64(b: &[u8]) -> Value {
    Value::String(base64::engine::general_purpose::STANDARD.encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::to_avro_datum;
    use serde_json::json;

    const SCHEMA: &str = r#"{"type":"record","name":"R","fields":[
      {"name":"opt","type":["null","string"],"default":null},
      {"name":"either","type":["null","string","boolean"],"default":null},
      {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
      {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
      {"name":"atMicros","type":{"type":"long","logicalType":"timestamp-micros"}},
      {"name":"raw","type":"bytes"},
      {"name":"attrs","type":{"type":"map","values":"int"}},
      {"name":"ratio","type":"double"}
    ]}"#;

    fn datum(fields: Vec<(&str, Avro)>) -> Vec<u8> {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let rec = Avro::Record(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
        to_avro_datum(&schema, rec).unwrap()
    }

    #[test]
    fn documented_mapping() {
        let s = AvroSchema::parse(SCHEMA, &[]).unwrap();
        let bytes = datum(vec![
            ("opt", Avro::Union(0, Box::new(Avro::Null))),
            ("either", Avro::Union(2, Box::new(Avro::Boolean(true)))),
            ("kind", Avro::Enum(1, "B".into())),
            ("at", Avro::TimestampMillis(1_796_033_700_000)),
            ("atMicros", Avro::TimestampMicros(1_796_033_700_000_999)),
            ("raw", Avro::Bytes(vec![0xff, 0])),
            ("attrs", Avro::Map([("x".to_string(), Avro::Int(1))].into())),
            ("ratio", Avro::Double(f64::NAN)),
        ]);
        assert_eq!(
            s.decode(&bytes).unwrap(),
            json!({"opt": null, "either": true, "kind": "B", "at": 1_796_033_700_000_i64,
                   "atMicros": 1_796_033_700_000_i64, "raw": "/wA=", "attrs": {"x": 1},
                   "ratio": "NaN"})
        );
    }

    #[test]
    fn trailing_bytes_and_short_datums_do_not_match() {
        let s = AvroSchema::parse(
            r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(s.decode(&[2, b'x']).unwrap(), json!({"a": "x"}));
        assert!(s.decode(&[2, b'x', 0]).unwrap_err().contains("1 bytes left"));
        // apache-avro alone reads this as {"a": null}.
        let r = s.decode(&[8, b'x']);
        assert!(r.as_ref().is_err_and(|e| e.contains("cut short")), "{r:?}");
        assert!(s.decode(&[]).is_err(), "no length at all");
        let u = AvroSchema::parse(
            r#"{"type":"record","name":"U","fields":[{"name":"a","type":["null","bytes"]}]}"#,
            &[],
        )
        .unwrap();
        assert_eq!(u.decode(&[2, 2, 7]).unwrap(), json!({"a": "Bw=="}));
        assert!(u.decode(&[2, 4, 7]).is_err(), "bytes cut short");
        assert!(
            u.decode(&[]).unwrap_err().contains("cut short"),
            "union index missing"
        );
    }

    #[test]
    fn named_references_resolve() {
        let line =
            r#"{"type":"record","name":"Line","namespace":"shop","fields":[{"name":"t","type":"string"}]}"#;
        let top = r#"{"type":"record","name":"Cart","namespace":"shop","fields":[{"name":"line","type":"shop.Line"}]}"#;
        let s = AvroSchema::parse(top, &[line.to_string()]).unwrap();
        assert_eq!(s.decode(&[2, b'x']).unwrap(), json!({"line": {"t": "x"}}));
        assert!(
            AvroSchema::parse(top, &[]).is_err(),
            "without the reference shop.Line is unknown"
        );
    }
}
