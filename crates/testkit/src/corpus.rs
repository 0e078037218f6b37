//! The hostile corpus: the files of `tests/data/corpus/` with the outcome `tests/data/expected.json`
//! records for each (mapped tickets, skip reasons, invalid reason). Guarantees: every record of
//! `expected.json` is loaded with its bytes, or loading fails naming the record; nothing is inferred.

use std::path::PathBuf;

use serde_json::Value;

/// Why the corpus could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `expected.json` is not JSON.
    #[error("tests/data/expected.json: {0}")]
    Json(#[from] serde_json::Error),
    /// `expected.json` lacks a field or has one of the wrong shape.
    #[error("tests/data/expected.json: {0}")]
    Shape(String),
}

/// One record of `tests/data/expected.json`.
#[derive(Debug, Clone)]
pub struct Entry {
    /// File name under `tests/data/corpus/` (or `tombstone`).
    pub name: String,
    /// What is nasty about it.
    pub what: String,
    /// `mapped`, `skipped` or `invalid`.
    pub outcome: String,
    /// For `invalid`: the reason label.
    pub reason: Option<String>,
    /// For `invalid`: a piece of the detail.
    pub detail_contains: Option<String>,
    /// For `mapped`: the tickets, in line order.
    pub tickets: Vec<String>,
    /// Skip reasons, in line order.
    pub skipped: Vec<String>,
    /// The record value; `None` for a tombstone.
    pub value: Option<Vec<u8>>,
}

impl Entry {
    /// Whether the record must be parked in the dead-letter topic.
    pub fn invalid(&self) -> bool {
        self.outcome == "invalid"
    }
}

/// `tests/data/`.
pub fn data_dir() -> PathBuf {
    crate::repo_root().join("tests/data")
}

/// Every record of `tests/data/expected.json`, in its order, with its bytes.
pub fn load() -> Result<Vec<Entry>, CorpusError> {
    let dir = data_dir();
    let path = dir.join("expected.json");
    let text = std::fs::read_to_string(&path).map_err(|source| CorpusError::Read { path, source })?;
    let doc: Value = serde_json::from_str(&text)?;
    let records = doc["records"]
        .as_array()
        .ok_or_else(|| CorpusError::Shape("no `records` array".into()))?;
    records.iter().map(|r| entry(&dir, r)).collect()
}

fn entry(dir: &std::path::Path, r: &Value) -> Result<Entry, CorpusError> {
    let field = |k: &str| {
        r[k].as_str()
            .map(String::from)
            .ok_or_else(|| CorpusError::Shape(format!("a record without `{k}`: {r}")))
    };
    let name = field("name")?;
    let value = if r["tombstone"].as_bool().unwrap_or(false) {
        None
    } else {
        let path = dir.join("corpus").join(&name);
        Some(std::fs::read(&path).map_err(|source| CorpusError::Read { path, source })?)
    };
    let list = |k: &str, f: fn(&Value) -> Result<String, CorpusError>| -> Result<Vec<String>, CorpusError> {
        r[k].as_array()
            .map_or(Ok(Vec::new()), |a| a.iter().map(f).collect())
    };
    Ok(Entry {
        what: r["what"].as_str().unwrap_or("").to_string(),
        outcome: field("outcome")?,
        reason: r["reason"].as_str().map(String::from),
        detail_contains: r["detail_contains"].as_str().map(String::from),
        tickets: list("tickets", ticket)?,
        skipped: list("skipped", |s| {
            s.as_str()
                .map(String::from)
                .ok_or_else(|| CorpusError::Shape(format!("skip reason {s}")))
        })?,
        value,
        name,
    })
}

/// A ticket as recorded: a string, or `{"prefix", "repeat", "times"}` for a long one.
fn ticket(v: &Value) -> Result<String, CorpusError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => {
            let bad = || CorpusError::Shape(format!("bad ticket {v}"));
            let times = o.get("times").and_then(Value::as_u64).ok_or_else(bad)? as usize;
            let prefix = o.get("prefix").and_then(Value::as_str).ok_or_else(bad)?;
            let repeat = o.get("repeat").and_then(Value::as_str).ok_or_else(bad)?;
            Ok(format!("{prefix}{}", repeat.repeat(times)))
        }
        other => Err(CorpusError::Shape(format!("bad ticket {other}"))),
    }
}
