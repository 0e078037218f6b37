//! Hostile input (issue 8): the corpus of nasty records in `tests/data/` and the fuzz targets'
//! properties, in the normal test suite.
//!
//! * `corpus_*`: every file of `tests/data/corpus/` through `select::map_record`, against the
//!   outcome recorded for it in `tests/data/expected.json` (mapped tickets / skip reasons /
//!   invalid reason). No broker needed.
//! * `generated_*`: the checks of the fuzz targets (`fuzz/src/lib.rs`, included below) over
//!   a large generated corpus, on stable Rust: random bytes, mutations of the corpus files, and
//!   JSON events built with `arbitrary` from random bytes. `HOSTILE_CASES` scales the count.
//! * `hostile_corpus_through_the_real_service`: the whole corpus plus known good tickets
//!   through `pipeline::run` against the real broker (the shared support's) and the
//!   Elevate stand-in: every invalid record parked in the dead-letter topic with its reason and
//!   its original bytes, every skip counted, every ticket delivered, offsets committed to the end.

#[allow(dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rdkafka::message::{Message, OwnedMessage};
use serde_json::json;
use testkit::corpus::{self, Entry};
use testkit::metrics;
use tokio::sync::watch;

use elevate_sink::admin::Health;
use elevate_sink::config::{Config, MappingConfig};
use elevate_sink::map_record;
use elevate_sink::metrics::Metrics;
use elevate_sink::pipeline;
use elevate_standin::StandIn;

use crate::support::kafka::{
    bootstrap, committed_offsets, consume_all, create_topic, create_topic_with, header, produce, unique, Rec,
    BIG_RECORD_BYTES as BIG,
};

// ---------------------------------------------------------------------------------------------
// the corpus

fn corpus() -> Vec<Entry> {
    corpus::load().unwrap_or_else(|e| panic!("the hostile corpus: {e}"))
}

/// Checks one entry's `map_record` outcome; returns a description of the mismatch, if any.
fn check_entry(e: &Entry) -> Result<(), String> {
    let got = map_record(&MappingConfig::default(), e.value.as_deref());
    match (e.outcome.as_str(), &got) {
        ("invalid", Err(inv)) => {
            if Some(inv.reason.as_str()) != e.reason.as_deref() {
                return Err(format!(
                    "reason {} ({}), expected {:?}",
                    inv.reason, inv.detail, e.reason
                ));
            }
            if let Some(needle) = &e.detail_contains {
                if !inv.detail.contains(needle.as_str()) {
                    return Err(format!("detail {:?} lacks {needle:?}", inv.detail));
                }
            }
            Ok(())
        }
        ("mapped" | "skipped", Ok(m)) => {
            let tickets: Vec<String> = m
                .notifications
                .iter()
                .map(|n| n.ticket().unwrap_or_default().to_string())
                .collect();
            let skipped: Vec<String> = m.skipped.iter().map(|s| s.as_str().to_string()).collect();
            if tickets != e.tickets {
                let short: Vec<String> = tickets
                    .iter()
                    .take(3)
                    .map(|t| t.chars().take(40).collect())
                    .collect();
                return Err(format!(
                    "{} tickets {short:?}..., expected {}",
                    tickets.len(),
                    e.tickets.len()
                ));
            }
            if skipped != e.skipped {
                return Err(format!("skipped {skipped:?}, expected {:?}", e.skipped));
            }
            if (e.outcome == "mapped") == tickets.is_empty() {
                return Err(format!("outcome {} but {} tickets", e.outcome, tickets.len()));
            }
            Ok(())
        }
        (want, Err(inv)) => Err(format!("invalid ({inv}), expected {want}")),
        (want, Ok(m)) => Err(format!(
            "mapped {} / skipped {:?}, expected {want} {:?}",
            m.notifications.len(),
            m.skipped,
            e.reason
        )),
    }
}

#[test]
fn corpus_records_have_their_expected_outcomes() {
    let entries = corpus();
    assert!(entries.len() >= 50, "the corpus shrank to {}", entries.len());
    let mut failures = Vec::new();
    for e in &entries {
        if let Err(why) = check_entry(e) {
            failures.push(format!("  {} ({}): {why}", e.name, e.what));
        }
        // The fuzz targets' properties hold on every corpus record too.
        if let Some(v) = &e.value {
            fuzz_checks::check_decode(v);
            fuzz_checks::check_map(v);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus records differ from tests/data/expected.json:\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
    let count = |o: &str| entries.iter().filter(|e| e.outcome == o).count();
    println!(
        "corpus: {} records ({} invalid, {} mapped, {} skipped) as expected",
        entries.len(),
        count("invalid"),
        count("mapped"),
        count("skipped")
    );
}

#[test]
fn corpus_directory_and_expected_json_list_the_same_files() {
    let listed: HashSet<String> = corpus()
        .into_iter()
        .filter(|e| e.value.is_some())
        .map(|e| e.name)
        .collect();
    let on_disk: HashSet<String> = std::fs::read_dir(corpus::data_dir().join("corpus"))
        .expect("tests/data/corpus")
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(listed, on_disk, "run `python3 tests/data/generate.py`");
}

/// Deep nesting must be refused by the parser's limit, also on a small stack: a recursive
/// decoder without a limit would overflow here instead of answering.
#[test]
fn deep_nesting_is_invalid_on_a_small_stack() {
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(|| {
            for depth in [200usize, 10_000, 1_000_000] {
                for (open, close) in [("[", "]"), ("{\"a\":", "}")] {
                    let mut v = b"{\"type\":\"add_to_cart\",\"lines\":".to_vec();
                    v.extend(open.repeat(depth).bytes());
                    v.extend(b"1");
                    v.extend(close.repeat(depth).bytes());
                    v.extend(b"}");
                    let e = map_record(&MappingConfig::default(), Some(&v)).unwrap_err();
                    assert_eq!(e.reason.as_str(), "malformed_json", "{depth} {open}: {e}");
                }
            }
        })
        .unwrap();
    handle.join().expect("no stack overflow");
}

// ---------------------------------------------------------------------------------------------
// the fuzz targets' checks over a generated corpus (stable Rust)

fn cases(default: u32) -> u32 {
    std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Mutates `base` deterministically from `ops` (flip, insert, delete, truncate, splice).
fn mutate(base: &[u8], ops: &[(u8, u32, u8)]) -> Vec<u8> {
    let mut v = base.to_vec();
    for &(op, at, byte) in ops {
        let i = if v.is_empty() { 0 } else { at as usize % v.len() };
        match op % 6 {
            0 if !v.is_empty() => v[i] ^= byte | 1,
            1 => v.insert(i, byte),
            2 if !v.is_empty() => {
                v.remove(i);
            }
            3 => v.truncate(i),
            4 => {
                let tok: &[u8] = [
                    &b"\""[..],
                    b"\\u",
                    b"\\ud800",
                    b"[",
                    b"{",
                    b"}",
                    b",",
                    b":",
                    b"null",
                    b"\xef\xbb\xbf",
                    b"\xff",
                    b"1e999",
                ][byte as usize % 12];
                v.splice(i..i, tok.iter().copied());
            }
            _ => {
                if i < v.len() {
                    let dup = v[i..].to_vec();
                    v.extend(dup);
                }
            }
        }
    }
    v
}

/// The small corpus files (the big ones take too long to mutate thousands of times).
fn small_corpus() -> Vec<Vec<u8>> {
    corpus()
        .into_iter()
        .filter_map(|e| e.value)
        .filter(|v| v.len() <= 4096)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(3000), ..ProptestConfig::default() })]

    /// The `decode` and `map` targets on random bytes.
    #[test]
    fn generated_random_bytes_hold_the_fuzz_properties(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        fuzz_checks::check_decode(&bytes);
        fuzz_checks::check_map(&bytes);
    }

    /// The `map` target's structured half: JSON events and mappings built with `arbitrary`.
    #[test]
    fn generated_json_events_hold_the_fuzz_properties(seed in proptest::collection::vec(any::<u8>(), 64..4096)) {
        let mut u = arbitrary::Unstructured::new(&seed);
        if let Ok(case) = fuzz_checks::MapCase::build(&mut u) {
            fuzz_checks::check_map_case(&case);
            fuzz_checks::check_decode(&case.bytes());
        }
    }

    /// Both targets on mutations of the corpus records.
    #[test]
    fn generated_corpus_mutations_hold_the_fuzz_properties(
        pick in any::<usize>(),
        ops in proptest::collection::vec((any::<u8>(), any::<u32>(), any::<u8>()), 1..8),
    ) {
        static SMALL: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        let small = SMALL.get_or_init(small_corpus);
        let v = mutate(&small[pick % small.len()], &ops);
        fuzz_checks::check_decode(&v);
        fuzz_checks::check_map(&v);
    }
}

// ---------------------------------------------------------------------------------------------
// the corpus through the real service

/// Whether `group` has committed exactly `ends` (partition → offset) on `topic`.
async fn committed_at_end(bs: &str, group: &str, topic: &str, ends: &BTreeMap<i32, i64>) -> bool {
    let got = committed_offsets(bs, group, topic, ends.keys().copied()).await;
    ends.iter().all(|(p, end)| got.get(p) == Some(&Some(*end)))
}

/// Produces (key, value) records with a `corpus-name` header holding the key; where each landed.
async fn produce_named(bs: &str, topic: &str, records: &[(String, Option<Vec<u8>>)]) -> Vec<(i32, i64)> {
    let recs = records.iter().map(|(key, value)| Rec {
        value: value.clone(),
        ..Rec::default()
            .key(key.as_str())
            .header("corpus-name", key.as_str())
    });
    produce(bs, topic, recs)
        .await
        .into_iter()
        .map(|l| (l.partition, l.offset))
        .collect()
}

fn good_event(ticket: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "type": "add_to_cart", "market": "SE", "customerKey": "cust-good", "sessionKey": "sess-good",
        "lines": [{"source": "elevate", "ticket": ticket}],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_corpus_through_the_real_service() {
    let bs = bootstrap().await;
    let entries = corpus();
    let (topic, dlq, group) = (unique("hostile-in"), unique("hostile-dlq"), unique("hostile-g"));
    create_topic_with(&bs, &topic, 3, &[("max.message.bytes", BIG)]).await;
    create_topic_with(&bs, &dlq, 2, &[("max.message.bytes", BIG)]).await;
    let standin = StandIn::start().await.unwrap();

    // Good tickets before, between and after the hostile records.
    let mut records: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut good = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if i % 5 == 0 {
            let t = format!("good-{i}");
            records.push((t.clone(), Some(good_event(&t))));
            good.insert(t);
        }
        records.push((e.name.clone(), e.value.clone()));
    }
    records.push(("good-last".into(), Some(good_event("good-last"))));
    good.insert("good-last".into());
    let landed = produce_named(&bs, &topic, &records).await;
    let mut ends: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, o) in &landed {
        let e = ends.entry(*p).or_insert(0);
        *e = (*e).max(o + 1);
    }
    let at: HashMap<String, (i32, i64)> = records.iter().map(|(k, _)| k.clone()).zip(landed).collect();

    let toml = format!(
        r#"
[kafka]
bootstrap_servers = "{bs}"
group_id = "{group}"
topics = ["{topic}"]
[kafka.properties]
"fetch.wait.max.ms" = "50"
[elevate]
base_url = "{base}"
[rate]
requests_per_second = 5000
burst = 500
[dead_letter]
topic = "{dlq}"
[dead_letter.properties]
"message.max.bytes" = "{BIG}"
[pipeline]
commit_interval = "200ms"
[admin]
listen = ""
[log]
level = "warn"
"#,
        base = standin.base_url()
    );
    let cfg = Config::from_toml_with_env(&toml, "", Vec::new()).expect("config");
    let metrics = Arc::new(Metrics::new());
    let (stop, rx) = watch::channel(false);
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        pipeline::run(&cfg, m, Arc::new(Health::new(Duration::from_secs(30))), rx)
            .await
            .expect("pipeline runs")
    });

    // Every ticket: the good ones and those of the mapped hostile records.
    let mut expected: HashSet<String> = good.clone();
    for e in &entries {
        expected.extend(e.tickets.iter().cloned());
    }
    if let Err(missing) = standin
        .wait_for_tickets(&expected, Duration::from_secs(120))
        .await
    {
        let few: Vec<String> = missing
            .iter()
            .take(5)
            .map(|t| t.chars().take(40).collect())
            .collect();
        panic!(
            "{} tickets never reached the stand-in, e.g. {few:?}",
            missing.len()
        );
    }
    let invalid: Vec<&Entry> = entries.iter().filter(|e| e.invalid()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut parked = Vec::new();
    while Instant::now() < deadline {
        parked = consume_all(&bs, &dlq, invalid.len(), Duration::from_secs(5)).await;
        if parked.len() >= invalid.len() {
            break;
        }
    }
    let mut problems = Vec::new();
    for e in &invalid {
        let (p, o) = at[&e.name];
        let found: Vec<&OwnedMessage> = parked
            .iter()
            .filter(|m| {
                header(m, "elevate-sink-source-partition") == Some(p.to_string())
                    && header(m, "elevate-sink-source-offset") == Some(o.to_string())
            })
            .collect();
        let Some(m) = found.first() else {
            problems.push(format!("  {}: not in the dead-letter topic", e.name));
            continue;
        };
        if header(m, "elevate-sink-reason") != e.reason {
            problems.push(format!(
                "  {}: reason {:?}, expected {:?}",
                e.name,
                header(m, "elevate-sink-reason"),
                e.reason
            ));
        }
        let detail = header(m, "elevate-sink-detail").unwrap_or_default();
        if let Some(needle) = &e.detail_contains {
            if !detail.contains(needle.as_str()) {
                problems.push(format!("  {}: detail {detail:?} lacks {needle:?}", e.name));
            }
        }
        if m.payload() != e.value.as_deref() {
            problems.push(format!("  {}: value not kept byte for byte", e.name));
        }
        if m.key() != Some(e.name.as_bytes()) || header(m, "corpus-name").as_deref() != Some(e.name.as_str())
        {
            problems.push(format!("  {}: key or original headers not kept", e.name));
        }
        if header(m, "elevate-sink-source-topic").as_deref() != Some(topic.as_str()) {
            problems.push(format!("  {}: source topic header wrong", e.name));
        }
    }
    assert!(
        problems.is_empty(),
        "dead-letter problems ({} parked for {} invalid records):\n{}",
        parked.len(),
        invalid.len(),
        problems.join("\n")
    );
    assert_eq!(parked.len(), invalid.len(), "only the invalid records are parked");

    wait_until_committed(&bs, &group, &topic, &ends).await;
    let text = metrics.encode();
    let mut skips: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        for s in &e.skipped {
            *skips.entry(s.clone()).or_default() += 1;
        }
    }
    for (reason, n) in &skips {
        let got = metrics::sum(
            &text,
            &format!("elevate_sink_skipped_total{{reason=\"{reason}\"}}"),
        );
        assert_eq!(got as usize, *n, "skipped {reason}");
    }
    let accepted = standin.accepted_tickets();
    assert_eq!(
        accepted.len(),
        expected.len(),
        "each ticket sent exactly once in a calm run"
    );
    assert_eq!(
        standin.status_counts().get(&400),
        None,
        "no request broke the contract"
    );
    let _ = stop.send(true);
    let summary = task.await.unwrap();
    assert!(summary.final_commit && summary.drained, "{summary:?}");
    println!(
        "hostile service run: {} records ({} good), {} parked, {} tickets delivered, skips {skips:?}",
        records.len(),
        good.len(),
        parked.len(),
        accepted.len()
    );
}

async fn wait_until_committed(bs: &str, group: &str, topic: &str, ends: &BTreeMap<i32, i64>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !committed_at_end(bs, group, topic, ends).await {
        assert!(
            Instant::now() < deadline,
            "committed offsets never reached {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Regression for a core bug this corpus found: a record the service can consume but the
/// dead-letter producer cannot write (here 1,040,000 bytes of malformed JSON: under the broker's
/// default `message.max.bytes` of 1,048,588, which a Java producer's default `max.request.size`
/// of 1 MiB lets through, but over librdkafka's producer default of 1,000,000) used to be
/// retried by `DeadLetter::park` forever, so its partition's commits stopped for good. Now it is
/// parked without its value, with `elevate-sink-value-omitted` giving the size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_too_large_for_the_dead_letter_producer_does_not_wedge_the_partition() {
    let bs = bootstrap().await;
    let (topic, dlq, group) = (
        unique("oversize-in"),
        unique("oversize-dlq"),
        unique("oversize-g"),
    );
    // Default topic settings on both topics: nothing unusual on the broker side.
    create_topic(&bs, &topic, 1).await;
    create_topic(&bs, &dlq, 1).await;
    let standin = StandIn::start().await.unwrap();
    let mut big = b"{\"type\":\"add_to_cart\",\"notes\":\"".to_vec();
    big.resize(1_040_000, b'z');
    let landed = produce_named(
        &bs,
        &topic,
        &[
            ("big".into(), Some(big)),
            ("after".into(), Some(good_event("after-oversize"))),
        ],
    )
    .await;
    let toml = format!(
        "[kafka]\nbootstrap_servers = \"{bs}\"\ngroup_id = \"{group}\"\ntopics = [\"{topic}\"]\n\
         [elevate]\nbase_url = \"{}\"\n[dead_letter]\ntopic = \"{dlq}\"\n[pipeline]\ncommit_interval = \"200ms\"\n\
         [admin]\nlisten = \"\"\n[log]\nlevel = \"warn\"\n",
        standin.base_url()
    );
    let cfg = Config::from_toml_with_env(&toml, "", Vec::new()).unwrap();
    let metrics = Arc::new(Metrics::new());
    let (stop, rx) = watch::channel(false);
    let m = metrics.clone();
    let task = tokio::spawn(async move {
        pipeline::run(&cfg, m, Arc::new(Health::new(Duration::from_secs(30))), rx).await
    });
    standin
        .wait_for_tickets(
            &HashSet::from(["after-oversize".to_string()]),
            Duration::from_secs(30),
        )
        .await
        .expect("the record after it is delivered");
    let ends = BTreeMap::from([(0, landed[1].1 + 1)]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done = false;
    while Instant::now() < deadline && !done {
        done = committed_at_end(&bs, &group, &topic, &ends).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failures = metrics::sum(&metrics.encode(), "elevate_sink_dead_letter_failures_total");
    let _ = stop.send(true);
    let _ = task.await;
    assert!(
        done,
        "commits stuck below the oversized record after 30 s ({failures} failed dead-letter produces)"
    );
    let parked = consume_all(&bs, &dlq, 1, Duration::from_secs(10)).await;
    assert_eq!(parked.len(), 1, "the oversized record is parked");
    assert_eq!(
        header(&parked[0], "elevate-sink-value-omitted").as_deref(),
        Some("1040000")
    );
    assert_eq!(
        header(&parked[0], "elevate-sink-reason").as_deref(),
        Some("malformed_json")
    );
    assert_eq!(
        header(&parked[0], "elevate-sink-source-offset"),
        Some(landed[0].1.to_string())
    );
    assert!(parked[0].payload().is_none(), "parked without its value");
}
