//! `--dry-run` output: one JSON object per line on stdout, per notification that would be sent
//! (the exact request from [`crate::send::Sender::request_for`] plus where it came from), or per
//! record that would be dead-lettered. Pure rendering; nothing here sends or commits.

use serde_json::{json, Map, Value};

use crate::kafka::SourceRecord;
use crate::request::HttpRequest;

use super::window::format_ms;

fn source(src: &SourceRecord) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("topic".into(), json!(src.topic));
    m.insert("partition".into(), json!(src.partition));
    m.insert("offset".into(), json!(src.offset));
    if let Some(ts) = src.timestamp_ms {
        m.insert("timestamp".into(), json!(format_ms(ts)));
    }
    m
}

/// The line for a notification that would be sent: method, URL with query, headers, body
/// (as JSON), the cart line it came from, its event time, and the source record's position.
pub fn notification_line(
    src: &SourceRecord,
    line: usize,
    event_time_ms: Option<i64>,
    req: &HttpRequest,
) -> String {
    let mut m = source(src);
    m.insert("line".into(), json!(line));
    if let Some(t) = event_time_ms {
        m.insert("event_time".into(), json!(format_ms(t)));
    }
    m.insert("method".into(), json!(req.method));
    m.insert("url".into(), json!(req.url));
    let headers: Map<String, Value> = req
        .headers
        .iter()
        .map(|(k, v)| ((*k).to_string(), json!(v)))
        .collect();
    m.insert("headers".into(), Value::Object(headers));
    let body = serde_json::from_str::<Value>(&req.body).unwrap_or_else(|_| json!(req.body));
    m.insert("body".into(), body);
    Value::Object(m).to_string()
}

/// The line for a record that would be dead-lettered (undecodable or schema-invalid).
pub fn dead_letter_line(src: &SourceRecord, reason: &str, detail: &str) -> String {
    let mut m = source(src);
    m.insert(
        "dead_letter".into(),
        json!({ "reason": reason, "detail": detail }),
    );
    Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src() -> SourceRecord {
        SourceRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            key: None,
            value: None,
            headers: vec![],
            timestamp_ms: Some(0),
        }
    }

    #[test]
    fn lines_are_json_objects() {
        let req = HttpRequest {
            method: "POST",
            url: "http://x/api?market=SE".into(),
            headers: vec![("content-type", "application/json;charset=utf-8".into())],
            body: r#"{"ticket":"a"}"#.into(),
        };
        let v: Value = serde_json::from_str(&notification_line(&src(), 1, Some(1000), &req)).unwrap();
        assert_eq!(v["body"]["ticket"], "a");
        assert_eq!(v["offset"], 7);
        assert_eq!(v["headers"]["content-type"], "application/json;charset=utf-8");
        assert_eq!(v["event_time"], "1970-01-01T00:00:01.000Z");
        let v: Value = serde_json::from_str(&dead_letter_line(&src(), "malformed_json", "x")).unwrap();
        assert_eq!(v["dead_letter"]["reason"], "malformed_json");
    }
}
