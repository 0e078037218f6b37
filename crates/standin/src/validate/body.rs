//! Request bodies per kind: `{"ticket"}` (add-to-cart, click), exactly one of productKey/variantKey
//! (favourites), none (end), `{"lines"}` (payment). Pure. Fields the contract does not name are
//! ignored, as Elevate does; a message names the field, never more than a short piece of a value.

use serde_json::{Map, Value};

use super::{short, Kind};

/// The ticket (empty for kinds without one) and the parsed body (`null` for end).
pub(super) fn check(kind: Kind, body: &[u8]) -> Result<(String, Value), String> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    if kind == Kind::End {
        return if body.is_empty() {
            Ok((String::new(), Value::Null))
        } else {
            Err("end takes no body".into())
        };
    }
    if blank {
        let expected = match kind {
            Kind::AddToCart | Kind::Click => "a `ticket`",
            Kind::AddFavorite | Kind::RemoveFavorite => "a `productKey` or a `variantKey`",
            _ => "`lines`",
        };
        return Err(format!("empty body; expected a JSON object with {expected}"));
    }
    let object = parse_object(body)?;
    let ticket = match kind {
        Kind::AddToCart | Kind::Click => ticket(&object)?,
        Kind::AddFavorite | Kind::RemoveFavorite => {
            product(&object)?;
            String::new()
        }
        _ => {
            lines(&object)?;
            String::new()
        }
    };
    Ok((ticket, Value::Object(object)))
}

/// A JSON object without duplicate keys.
fn parse_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("malformed JSON body: {e}"))?;
    let Value::Object(object) = value else {
        return Err(format!("body must be a JSON object, got {}", json_kind(&value)));
    };
    // serde_json keeps the last of duplicate keys; a server reading the first would disagree.
    match serde_json::from_slice::<NoDuplicates>(body) {
        Ok(NoDuplicates) => Ok(object),
        Err(e) => Err(format!("invalid body: {e}")),
    }
}

/// Deserializes only when no key repeats at the top level.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = NoDuplicates;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object without duplicate keys")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<NoDuplicates, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if seen.contains(&key) {
                        let name = short(&key).into_owned();
                        return Err(serde::de::Error::custom(format!("duplicate key `{name}`")));
                    }
                    seen.insert(key);
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(NoDuplicates)
            }
        }
        d.deserialize_map(Visitor)
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A non-empty string at `name` (`missing` when absent or null).
fn non_empty(object: &Map<String, Value>, name: &str, at: &str) -> Result<Option<String>, String> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{at}`{name}` must not be empty")),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{at}`{name}` must be a string, got {}", json_kind(other))),
    }
}

fn ticket(object: &Map<String, Value>) -> Result<String, String> {
    non_empty(object, "ticket", "")?.ok_or_else(|| "missing `ticket` in body".into())
}

fn product(object: &Map<String, Value>) -> Result<(), String> {
    let p = non_empty(object, "productKey", "")?;
    let v = non_empty(object, "variantKey", "")?;
    match (p, v) {
        (Some(_), None) | (None, Some(_)) => Ok(()),
        (Some(_), Some(_)) => Err("both `productKey` and `variantKey` given; send exactly one".into()),
        (None, None) => Err("missing `productKey` or `variantKey`; send exactly one".into()),
    }
}

fn lines(object: &Map<String, Value>) -> Result<(), String> {
    let lines = match object.get("lines") {
        None | Some(Value::Null) => return Err("missing `lines` in body".into()),
        Some(Value::Array(a)) if a.is_empty() => return Err("`lines` must not be empty".into()),
        Some(Value::Array(a)) => a,
        Some(other) => return Err(format!("`lines` must be an array, got {}", json_kind(other))),
    };
    for (i, line) in lines.iter().enumerate() {
        let at = format!("lines[{i}] ");
        let Value::Object(line) = line else {
            return Err(format!("{at}must be an object, got {}", json_kind(line)));
        };
        if non_empty(line, "variantKey", &at)?.is_none() {
            return Err(format!("{at}missing `variantKey`"));
        }
        match line.get("quantity") {
            Some(Value::Number(n)) if n.as_u64().is_some_and(|q| q > 0) => {}
            Some(Value::Number(n)) => {
                return Err(format!(
                    "{at}`quantity` must be a positive integer, got {}",
                    short(&n.to_string())
                ))
            }
            None | Some(Value::Null) => return Err(format!("{at}missing `quantity`")),
            Some(other) => {
                return Err(format!(
                    "{at}`quantity` must be a number, got {}",
                    json_kind(other)
                ))
            }
        }
        for name in ["sellingPrice", "cost"] {
            match line.get(name) {
                Some(Value::Number(n)) if n.as_f64().is_some_and(|x| x.is_finite() && x >= 0.0) => {}
                Some(Value::Number(n)) => {
                    return Err(format!(
                        "{at}`{name}` must be a finite, non-negative number, got {}",
                        short(&n.to_string())
                    ))
                }
                None | Some(Value::Null) => return Err(format!("{at}missing `{name}`")),
                Some(other) => {
                    return Err(format!("{at}`{name}` must be a number, got {}", json_kind(other)))
                }
            }
        }
    }
    Ok(())
}
