//! `replay` against a real broker and the Elevate stand-in (issue 5). Every test runs the built
//! binary (`elevate-sink replay ...`) as a child process, with its own topics and groups.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use elevate_standin::StandIn;

use crate::support::kafka::{
    client_config, committed_offsets, high_watermarks, produce, setup, unique, Names, Rec,
};
use crate::support::sink::now_ms;

/// Longest a replay child may take in these tests.
const CHILD_TIMEOUT: Duration = Duration::from_secs(40);

/// Writes the replay's config (the same file `run` would use) into `dir`.
fn write_config(dir: &Path, bs: &str, n: &Names, base_url: &str) -> PathBuf {
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "{bs}"
group_id = "{live}"
topics = ["{topic}"]
[kafka.properties]
"fetch.wait.max.ms" = "50"
[elevate]
base_url = "{base_url}"
request_timeout = "5s"
[dead_letter]
topic = "{dlq}"
[pipeline]
commit_interval = "200ms"
[admin]
listen = ""
[log]
level = "warn"
format = "text"
"#,
        live = n.group,
        topic = n.topic,
        dlq = n.dlq,
    );
    let path = dir.join("elevate-sink.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn event(ticket: &str, occurred_ms: Option<i64>) -> Value {
    let mut e = json!({
        "type": "add_to_cart", "market": "SE", "customerKey": "c-1", "sessionKey": "s-1",
        "lines": [{"source": "elevate", "ticket": ticket, "productKey": "p"}],
    });
    if let Some(t) = occurred_ms {
        e["occurredAt"] = json!(t);
    }
    e
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

fn replay_cmd(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_elevate-sink"));
    c.arg("replay")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("ELEVATE_SINK_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs a replay to its end; returns its output (panics on timeout).
async fn run_replay(config: &Path, args: &[&str]) -> Output {
    let child = replay_cmd(config, args)
        .spawn()
        .expect("spawn elevate-sink replay");
    tokio::time::timeout(CHILD_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("replay {args:?} did not finish within {CHILD_TIMEOUT:?}"))
        .expect("wait for replay")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Timestamped records across three partitions; a window of timestamps sends exactly the
/// tickets inside it. One record in partition 1 carries an out-of-order timestamp before the
/// window although its offset lies inside the resolved range: it must not be sent either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_window_sends_exactly_the_tickets_inside() {
    let (bs, n) = setup("replay-window", 3).await;
    let standin = StandIn::start().await.expect("stand-in");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &bs, &n, &standin.base_url());

    // Two hours ago, on a whole minute; one record a minute per partition.
    let t0 = (now_ms() - 2 * 3_600_000) / 60_000 * 60_000;
    let mut recs = Vec::new();
    let mut expected = HashSet::new();
    for p in 0..3 {
        for i in 0..10i64 {
            let ts = t0 + i * 60_000;
            let ticket = format!("win-{p}-{i}");
            if (3..7).contains(&i) {
                expected.insert(ticket.clone());
            }
            recs.push(Rec::json(&event(&ticket, Some(ts))).partition(p).timestamp_ms(ts));
            if p == 1 && i == 4 {
                let ts = t0 + 60_000;
                recs.push(
                    Rec::json(&event("win-1-out-of-order", Some(ts)))
                        .partition(1)
                        .timestamp_ms(ts),
                );
            }
        }
    }
    produce(&bs, &n.topic, recs).await;

    let (from, to) = (rfc3339(t0 + 3 * 60_000), rfc3339(t0 + 7 * 60_000));
    let out = run_replay(&config, &["--from", &from, "--to", &to]).await;
    assert_success(&out, "replay of a timestamp window");
    let stdout = text(&out.stdout);
    println!("{stdout}");

    let got = standin.accepted_tickets();
    let got_set: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(got_set, expected, "exactly the tickets inside [{from}, {to})");
    assert_eq!(got.len(), expected.len(), "a clean run sends each ticket once");
    assert!(stdout.contains("replay complete"), "{stdout}");
    assert!(stdout.contains("outside_window=1"), "{stdout}");
    assert!(
        stdout.contains("WARNING") && stdout.contains("session window"),
        "two-hour-old events are flagged late: {stdout}"
    );
}

/// A replay killed with SIGKILL mid-way and started again with the same arguments: every
/// ticket arrives at least once, and the restart resumes from the checkpoint (it sends less
/// than the whole window again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_replay_then_restart_delivers_every_ticket() {
    let (bs, n) = setup("replay-kill", 3).await;
    let standin = StandIn::start().await.expect("stand-in");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &bs, &n, &standin.base_url());

    let mut recs = Vec::new();
    let mut tickets = HashSet::new();
    for p in 0..3 {
        for i in 0..20 {
            let ticket = format!("kill-{p}-{i}");
            tickets.insert(ticket.clone());
            recs.push(Rec::json(&event(&ticket, None)).partition(p));
        }
    }
    produce(&bs, &n.topic, recs).await;
    let total = tickets.len();
    // A low rate keeps the replay mid-way long enough to kill it there.
    let args = ["--from", "earliest", "--to", "now", "--rate", "10"];

    let mut child = replay_cmd(&config, &args).spawn().expect("spawn replay");
    standin
        .wait_for_accepted(25, Duration::from_secs(30))
        .await
        .unwrap_or_else(|got| panic!("only {got} accepted before the kill"));
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("wait for killed replay");
    assert!(!status.success(), "killed, not finished: {status}");
    let at_kill = standin.accepted_count();
    assert!(at_kill < total, "killed mid-way ({at_kill} of {total} accepted)");

    // Records produced after the first start are outside its window (`--to now` was fixed
    // then), also for the restart.
    let late: Vec<Rec> = (0..3)
        .map(|p| Rec::json(&event(&format!("kill-late-{p}"), None)).partition(p))
        .collect();
    produce(&bs, &n.topic, late).await;

    let out = run_replay(&config, &args).await;
    assert_success(&out, "restarted replay");
    let stdout = text(&out.stdout);
    println!("{stdout}");

    let got = standin.accepted_tickets();
    let unique_got: HashSet<String> = got.iter().cloned().collect();
    let missing: Vec<_> = tickets.difference(&unique_got).collect();
    assert!(missing.is_empty(), "tickets never delivered: {missing:?}");
    let extra: Vec<_> = unique_got.difference(&tickets).collect();
    assert!(
        extra.is_empty(),
        "tickets outside the window were sent: {extra:?}"
    );
    let resent = got.len() - at_kill;
    let duplicates = got.len() - unique_got.len();
    println!(
        "replay sigkill: {total} tickets, {at_kill} accepted before the kill, {resent} after the restart, \
         {duplicates} duplicates"
    );
    assert!(
        resent < total,
        "the restart resumed from the checkpoint ({resent} re-sent of {total})"
    );
}

/// `--dry-run` prints JSON lines (notifications and would-be dead letters), sends nothing and
/// commits nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_json_lines_and_sends_nothing() {
    let (bs, n) = setup("replay-dry", 2).await;
    let standin = StandIn::start().await.expect("stand-in");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &bs, &n, &standin.base_url());

    let mut recs = Vec::new();
    let mut expected = HashSet::new();
    for i in 0..6 {
        let ticket = format!("dry-{i}");
        expected.insert(ticket.clone());
        recs.push(Rec::json(&event(&ticket, Some(now_ms()))).partition(i % 2));
    }
    recs.push(Rec::new("{not json").partition(0));
    recs.push(Rec::json(&json!({"type": "page_view", "market": "SE"})).partition(1));
    produce(&bs, &n.topic, recs).await;

    let group = unique("replay-dry-cp");
    let out = run_replay(&config, &["--dry-run", "--checkpoint-group", &group]).await;
    assert_success(&out, "dry run");
    let stdout = text(&out.stdout);
    let mut tickets = HashSet::new();
    let mut dead = Vec::new();
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert_eq!(v["topic"], json!(n.topic), "{line}");
        assert!(v["partition"].is_i64() && v["offset"].is_i64(), "{line}");
        if let Some(reason) = v.get("dead_letter") {
            dead.push(reason["reason"].as_str().unwrap_or_default().to_string());
            continue;
        }
        assert_eq!(v["method"], "POST", "{line}");
        let url = v["url"].as_str().expect("url");
        assert!(
            url.starts_with(&format!(
                "{}/api/storefront/v3/notifications/add-to-cart?",
                standin.base_url()
            )) && url.contains("market=SE")
                && url.contains("customerKey=c-1"),
            "{url}"
        );
        assert_eq!(
            v["headers"]["content-type"], "application/json;charset=utf-8",
            "{line}"
        );
        tickets.insert(v["body"]["ticket"].as_str().expect("ticket").to_string());
    }
    assert_eq!(tickets, expected);
    assert_eq!(dead, vec!["malformed_json".to_string()]);
    assert_eq!(standin.requests_total(), 0, "a dry run sends nothing");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("would send        6"),
        "summary on stderr: {stderr}"
    );
    let committed = committed_offsets(&bs, &group, &n.topic, [0, 1]).await;
    assert!(
        committed.values().all(Option::is_none),
        "a dry run commits nothing: {committed:?}"
    );
}

/// A replay never moves the live group's offsets; its checkpoint goes to its own group, which
/// is committed without joining (manual assignment). Replaying into the live group is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_group_offsets_are_untouched() {
    let (bs, n) = setup("replay-live", 3).await;
    let standin = StandIn::start().await.expect("stand-in");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &bs, &n, &standin.base_url());

    let mut recs = Vec::new();
    for p in 0..3 {
        for i in 0..5 {
            recs.push(Rec::json(&event(&format!("live-{p}-{i}"), None)).partition(p));
        }
    }
    produce(&bs, &n.topic, recs).await;

    // The live service has committed some progress.
    let live_positions = [(0, 1i64), (1, 2), (2, 3)];
    {
        let (bs, group, topic) = (bs.clone(), n.group.clone(), n.topic.clone());
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = client_config(&bs)
                .set("group.id", &group)
                .set("enable.auto.commit", "false")
                .create()
                .expect("live committer");
            let mut tpl = TopicPartitionList::new();
            for (p, o) in live_positions {
                tpl.add_partition_offset(&topic, p, Offset::Offset(o))
                    .expect("tpl");
            }
            c.commit(&tpl, CommitMode::Sync).expect("commit live offsets");
        })
        .await
        .expect("commit task");
    }
    let before = committed_offsets(&bs, &n.group, &n.topic, [0, 1, 2]).await;
    let want: BTreeMap<i32, Option<i64>> = live_positions.iter().map(|(p, o)| (*p, Some(*o))).collect();
    assert_eq!(before, want);

    let refused = run_replay(&config, &["--checkpoint-group", &n.group]).await;
    assert!(
        !refused.status.success(),
        "replaying into the live group is refused"
    );
    assert!(
        text(&refused.stderr).contains("live consumer group"),
        "{}",
        text(&refused.stderr)
    );

    let cp = unique("replay-live-cp");
    let out = run_replay(&config, &["--checkpoint-group", &cp]).await;
    assert_success(&out, "replay");
    assert_eq!(standin.accepted_count(), 15);

    let after = committed_offsets(&bs, &n.group, &n.topic, [0, 1, 2]).await;
    assert_eq!(after, before, "the live group's offsets are unchanged");
    let ends = high_watermarks(&bs, &n.topic).await;
    let checkpoint = committed_offsets(&bs, &cp, &n.topic, [0, 1, 2]).await;
    let ends: BTreeMap<i32, Option<i64>> = ends.into_iter().map(|(p, h)| (p, Some(h))).collect();
    assert_eq!(checkpoint, ends, "the checkpoint group holds the window's ends");

    // Run again with the same arguments: the checkpoint says the window is done.
    let again = run_replay(&config, &["--checkpoint-group", &cp]).await;
    assert_success(&again, "replay of a finished window");
    assert_eq!(standin.accepted_count(), 15, "nothing is re-sent");
}

/// Issue 11 item 9: `--to <time>` with no record at or after that instant when the replay
/// first starts resolves to the high watermark; that end is kept on resume. Records produced
/// after the first start but stamped before `--to` (late events; the producer sets CreateTime)
/// are outside the window: a restart must not chase them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_time_with_nothing_after_it_keeps_its_end_on_resume() {
    let (bs, n) = setup("replay-to-fixed", 3).await;
    let standin = StandIn::start().await.expect("stand-in");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &bs, &n, &standin.base_url());

    // --to is ten minutes ago; every record is stamped before it.
    let to = (now_ms() - 10 * 60_000) / 1000 * 1000;
    let mut recs = Vec::new();
    let mut tickets = HashSet::new();
    for p in 0..3 {
        for i in 0..20i64 {
            let ticket = format!("fixed-{p}-{i}");
            tickets.insert(ticket.clone());
            let ts = to - 30 * 60_000 + i * 60_000;
            recs.push(Rec::json(&event(&ticket, Some(ts))).partition(p).timestamp_ms(ts));
        }
    }
    produce(&bs, &n.topic, recs).await;
    let to_arg = rfc3339(to);
    let args = ["--from", "earliest", "--to", to_arg.as_str(), "--rate", "10"];

    let mut child = replay_cmd(&config, &args).spawn().expect("spawn replay");
    standin
        .wait_for_accepted(25, Duration::from_secs(30))
        .await
        .unwrap_or_else(|got| panic!("only {got} accepted before the kill"));
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("wait for killed replay");
    assert!(!status.success(), "killed, not finished: {status}");

    // Produced after the first start, stamped a minute before --to: offsets-for-times still
    // finds nothing at or after --to, and their timestamps pass the window's time filter.
    let late: Vec<Rec> = (0..3)
        .map(|p| {
            Rec::json(&event(&format!("fixed-late-{p}"), Some(to - 60_000)))
                .partition(p)
                .timestamp_ms(to - 60_000)
        })
        .collect();
    produce(&bs, &n.topic, late).await;

    let out = run_replay(&config, &args).await;
    assert_success(&out, "restarted replay");
    println!("{}", text(&out.stdout));
    let got: HashSet<String> = standin.accepted_tickets().into_iter().collect();
    let missing: Vec<_> = tickets.difference(&got).collect();
    assert!(missing.is_empty(), "tickets never delivered: {missing:?}");
    let extra: Vec<_> = got.difference(&tickets).collect();
    assert!(
        extra.is_empty(),
        "records produced after the first start were sent (the end moved on resume): {extra:?}"
    );
}
