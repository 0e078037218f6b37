//! `--dry-run`: the window is read and mapped as a replay would, and each notification that
//! would be sent is printed as one JSON object per line on stdout (the exact request from
//! [`crate::send::Sender::request_for`] plus where it came from), or each record that would be
//! dead-lettered. Guarantees: nothing is sent and nothing is committed. Limits: a reader that goes
//! away (`| head`) ends the run early and quietly; counts are of what would be sent.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::Message;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::time::{interval, MissedTickBehavior};

use crate::consumer::{on_consume_error, pause_partitions};
use crate::kafka::SourceRecord;
use crate::request::HttpRequest;
use crate::send::Sender;
use crate::util::now_ms;

use super::window::{self, format_ms};
use super::{Pass, Reader};

/// What a dry run prints and counts.
#[derive(Default)]
struct Output {
    /// Lines not written yet.
    text: String,
    skipped: BTreeMap<String, u64>,
    dead: BTreeMap<String, u64>,
}

impl Output {
    /// Writes what is buffered to stdout; Ok(false): the reader went away (`| head`): stop
    /// early, quietly.
    fn flush(&mut self) -> anyhow::Result<bool> {
        if !self.text.is_empty() {
            let mut so = std::io::stdout().lock();
            match so.write_all(self.text.as_bytes()).and_then(|()| so.flush()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
                Err(e) => return Err(e).context("writing to stdout"),
            }
            self.text.clear();
        }
        Ok(true)
    }

    /// The lines of one record inside the window: what it maps to, or why it would be parked.
    fn record(&mut self, r: &Reader<'_>, sender: &Sender, pass: &mut Pass, src: &SourceRecord) {
        match crate::work::plan(r.routes, src, r.plan.max_age, now_ms()) {
            Err(crate::route::RouteInvalid { invalid, .. }) => {
                *self.dead.entry(invalid.reason.as_str().to_string()).or_default() += 1;
                self.text
                    .push_str(&dead_letter_line(src, invalid.reason.as_str(), &invalid.detail));
                self.text.push('\n');
            }
            Ok(mapped) => {
                for reason in &mapped.skipped {
                    *self.skipped.entry(reason.as_str().to_string()).or_default() += 1;
                }
                for n in &mapped.notifications {
                    let req = sender.request_for(n);
                    let t = n.event_time_ms.or(src.timestamp_ms);
                    self.text.push_str(&notification_line(src, n.line, t, &req));
                    self.text.push('\n');
                    pass.summary.sent += 1;
                    if let Some(t) = t {
                        pass.summary.ages.record(now_ms() - t);
                    }
                }
            }
        }
    }
}

/// The dry pass: reads every partition to the end of its window (or until `shutdown`), printing
/// instead of sending; the position reached is what was read.
pub(super) async fn run(
    r: &Reader<'_>,
    pass: &mut Pass,
    sender: &Sender,
    shutdown: &mut watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let consumer: &StreamConsumer<_> = r.consumer;
    let topic = r.plan.topic.as_str();
    let mut house_tick = interval(Duration::from_millis(250));
    house_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut out = Output::default();
    while !pass.cursors.all_done() {
        tokio::select! {
            biased;
            Ok(()) = shutdown.changed() => { pass.interrupt(None); break }
            _ = house_tick.tick() => if !out.flush()? { pass.interrupt(None); break },
            m = consumer.recv() => match m {
                Ok(m) => {
                    let (take, ended) = pass.cursors.on_message(m.partition(), m.offset());
                    if ended {
                        pause_partitions(consumer, topic, &[m.partition()], true);
                    }
                    if !take {
                        continue;
                    }
                    let src = SourceRecord::from_message(&m);
                    drop(m);
                    pass.summary.records += 1;
                    if !window::in_time_window(r.plan.from, r.plan.to, src.timestamp_ms) {
                        pass.outside_window += 1;
                        continue;
                    }
                    out.record(r, sender, pass, &src);
                    if out.text.len() > 1 << 16 && !out.flush()? {
                        pass.interrupt(None);
                        break;
                    }
                }
                Err(KafkaError::PartitionEOF(p)) => {
                    if pass.cursors.on_eof(p) {
                        pause_partitions(consumer, topic, &[p], true);
                    }
                }
                Err(e) => if let Some(s) = on_consume_error(&e, r.metrics) {
                    pass.interrupt(Some(s));
                    break;
                },
            },
        }
        if pass.progress.due() {
            let done = r.done(&pass.cursors, true);
            pass.progress.update(done, 0);
        }
    }
    if !pass.summary.interrupted && !out.flush()? {
        pass.summary.interrupted = true;
    }
    pass.summary.skipped = out.skipped;
    pass.summary.dead_lettered = out.dead;
    for w in r.windows {
        let reached = pass.cursors.next(w.partition).unwrap_or(w.start).min(w.end);
        pass.summary.reached.insert(w.partition, reached);
    }
    Ok(())
}

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
            api_key: false,
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
