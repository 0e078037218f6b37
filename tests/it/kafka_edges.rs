//! Trust at the Kafka edges (issue 11, items 2, 3, 6 and 13), against the real broker wherever
//! the fault can be made real: parked records outlive the dead-letter topic's retention and are
//! never refused for their timestamp; a batch that cannot be read stops `run` and `replay` before
//! anything is committed past it (a real corrupt batch on a broker of the test's own); a fatal
//! client error ends the run non-zero and fails readiness, and so does a dead-letter topic that
//! stays unwritable; commit results are observed and the lag gauge forgets revoked partitions.
//! The librdkafka mock cluster is used only for faults a real broker does not do on cue (a
//! failed offset commit, a fatal idempotent-producer state).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use serde_json::json;
use tokio::sync::watch;

use elevate_sink::admin::{self};
use elevate_sink::pipeline::{self};
use elevate_standin::StandIn;
use testkit::metrics;

use crate::support::kafka::{
    bootstrap, client_config, committed_offsets, consume_all, create_topic, create_topic_with, produce,
    unique, wait_until, wait_until_async, Names, Rec,
};
use crate::support::mock::Mock;
use crate::support::sink::{config_toml_with, header, now_ms, parse, InProcess};

const BIN: &str = env!("CARGO_BIN_EXE_elevate-sink");

// -------------------------------------------------------------------------------------------
// helpers

fn add_to_cart(ticket: &str) -> serde_json::Value {
    json!({"type": "add_to_cart", "market": "SE", "customerKey": "c-1", "sessionKey": "s-1",
           "lines": [{"productKey": "p", "source": "elevate", "ticket": ticket}]})
}

/// (low, high) watermarks of `topic`/`partition`.
async fn watermarks(bs: &str, topic: &str, partition: i32) -> (i64, i64) {
    let (bs, topic) = (bs.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&bs).create().expect("watermark client");
        c.fetch_watermarks(&topic, partition, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("watermarks of {topic}/{partition}: {e}"))
    })
    .await
    .expect("watermark task")
}

async fn committed(bs: &str, group: &str, topic: &str, partition: i32) -> Option<i64> {
    committed_offsets(bs, group, topic, [partition])
        .await
        .get(&partition)
        .copied()
        .flatten()
}

/// Waits until the broker's retention check has run at least once after this call: a record
/// stamped two hours ago, in a control topic that keeps one minute, is deleted; then a second
/// one, produced after the first was seen deleted, is deleted too. (The second proves a whole
/// check ran after the call: the first may have been deleted by a check that was already under
/// way and had visited the other logs before the call.)
async fn await_retention_check(bs: &str, control: &str) {
    for round in 0..2 {
        let landed = produce(
            bs,
            control,
            [Rec::new(format!("control {round}")).timestamp_ms(now_ms() - 2 * 3_600_000)],
        )
        .await;
        let offset = landed[0].offset;
        wait_until_async(
            Duration::from_secs(60),
            "the broker's retention check deletes an expired control record",
            || async { watermarks(bs, control, 0).await.0 > offset },
        )
        .await;
    }
}

// -------------------------------------------------------------------------------------------
// 2. parked records and timestamps

/// A record of an event an hour old, answered 400 and parked into a dead-letter topic that keeps
/// ten minutes, is still in the dead-letter topic after the broker's retention check ran: the
/// parked record carries the time of parking; the source timestamp travels in a header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_record_of_an_hour_old_event_outlives_the_dead_letter_retention() {
    let bs = bootstrap().await;
    let n = Names {
        topic: unique("edges-old-in"),
        dlq: unique("edges-old-dlq"),
        group: unique("edges-old-g"),
    };
    let control = unique("edges-old-control");
    create_topic(&bs, &n.topic, 1).await;
    create_topic_with(
        &bs,
        &n.dlq,
        1,
        &[("retention.ms", "600000"), ("segment.ms", "1000")],
    )
    .await;
    create_topic_with(
        &bs,
        &control,
        1,
        &[("retention.ms", "60000"), ("segment.ms", "1000")],
    )
    .await;
    let standin = StandIn::start().await.unwrap();
    standin.script("old-ticket", [400]);
    let source_ts = now_ms() - 3_600_000;
    produce(
        &bs,
        &n.topic,
        [Rec::json(&add_to_cart("old-ticket"))
            .key("k")
            .timestamp_ms(source_ts)],
    )
    .await;
    let parked_after = now_ms();
    let sink = InProcess::start(parse(&config_toml_with(
        &bs,
        &n,
        &standin.base_url(),
        "",
        "[pipeline]\ncommit_interval = \"100ms\"\n",
    )));
    wait_until_async(
        Duration::from_secs(60),
        "the 400 record is parked and its offset committed",
        || async { committed(&bs, &n.group, &n.topic, 0).await == Some(1) },
    )
    .await;
    let parked_before = now_ms();
    await_retention_check(&bs, &control).await;

    let (low, high) = watermarks(&bs, &n.dlq, 0).await;
    let parked = consume_all(&bs, &n.dlq, 1, Duration::from_secs(10)).await;
    sink.stop().await;
    assert_eq!(
        (low, parked.len()),
        (0, 1),
        "the parked record was deleted by the dead-letter topic's retention (watermarks {low}..{high})"
    );
    let m = &parked[0];
    assert_eq!(header(m, "elevate-sink-reason").as_deref(), Some("rejected"));
    assert_eq!(
        header(m, "elevate-sink-source-timestamp"),
        Some(source_ts.to_string()),
        "the source record's timestamp travels in a header"
    );
    let ts = m
        .timestamp()
        .to_millis()
        .expect("the parked record has a timestamp");
    assert!(
        (parked_after - 1_000..=parked_before + 1_000).contains(&ts),
        "the parked record is stamped when it is parked ({ts}), not with the source's time ({source_ts})"
    );
}

/// A source record stamped two hours in the future (more than the broker's default
/// `message.timestamp.after.max.ms`, one hour) is parked, not refused and retried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_stamped_record_is_parked_not_retried_forever() {
    let bs = bootstrap().await;
    let n = Names {
        topic: unique("edges-future-in"),
        dlq: unique("edges-future-dlq"),
        group: unique("edges-future-g"),
    };
    // The source topic accepts the future timestamp (a producer's clock may be wrong); the
    // dead-letter topic has the broker's defaults.
    create_topic_with(
        &bs,
        &n.topic,
        1,
        &[("message.timestamp.after.max.ms", "86400000")],
    )
    .await;
    create_topic(&bs, &n.dlq, 1).await;
    let standin = StandIn::start().await.unwrap();
    standin.script("future-ticket", [400]);
    let source_ts = now_ms() + 2 * 3_600_000;
    produce(
        &bs,
        &n.topic,
        [Rec::json(&add_to_cart("future-ticket")).timestamp_ms(source_ts)],
    )
    .await;
    let sink = InProcess::start(parse(&config_toml_with(
        &bs,
        &n,
        &standin.base_url(),
        "",
        "[pipeline]\ncommit_interval = \"100ms\"\n",
    )));
    wait_until_async(
        Duration::from_secs(45),
        "the future-stamped record is parked and its offset committed",
        || async { committed(&bs, &n.group, &n.topic, 0).await == Some(1) },
    )
    .await;
    let failures = sink.series("elevate_sink_dead_letter_failures_total");
    sink.stop().await;
    let parked = consume_all(&bs, &n.dlq, 1, Duration::from_secs(10)).await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        header(&parked[0], "elevate-sink-source-timestamp"),
        Some(source_ts.to_string())
    );
    assert_eq!(failures, 0.0, "no dead-letter produce was refused");
}

// -------------------------------------------------------------------------------------------
// 3. a corrupt batch on disk

/// A broker of this test's own (`scripts/kafka up` with its own state directory): this test
/// corrupts its data. Stopped, and its directory removed, on drop.
struct OwnBroker {
    dir: tempfile::TempDir,
    bootstrap: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka")
}

impl OwnBroker {
    fn up() -> OwnBroker {
        let dir = tempfile::Builder::new()
            .prefix("elevate-sink-edges-kafka")
            .tempdir()
            .expect("temp dir");
        let out = Command::new(script())
            .arg("up")
            .env("ELEVATE_SINK_KAFKA_DIR", dir.path())
            .env_remove("ELEVATE_SINK_KAFKA_PORT")
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/kafka up");
        assert!(
            out.status.success(),
            "scripts/kafka up failed for the test's own broker"
        );
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_string();
        OwnBroker { dir, bootstrap }
    }

    /// The log segment of `topic`'s partition `p` that starts at offset 0.
    fn segment(&self, topic: &str, p: i32) -> PathBuf {
        self.dir
            .path()
            .join("data")
            .join(format!("{topic}-{p}"))
            .join("00000000000000000000.log")
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("down")
            .env("ELEVATE_SINK_KAFKA_DIR", self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Flips the last byte of the record batch whose base offset is `base` in the segment file (a
/// byte of its last record, covered by the batch's CRC32C). Returns the batch's last offset.
fn corrupt_batch(segment: &Path, base: i64) -> i64 {
    let mut bytes = std::fs::read(segment).unwrap_or_else(|e| panic!("read {}: {e}", segment.display()));
    let mut at = 0usize;
    while at + 61 <= bytes.len() {
        let base_offset = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let last_delta = i32::from_be_bytes(bytes[at + 23..at + 27].try_into().unwrap());
        if base_offset == base {
            let last = at + 12 + len - 1;
            bytes[last] ^= 0xff;
            // Write in place (same inode): the broker serves the page cache we change.
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .open(segment)
                .expect("open the segment for writing");
            f.seek(SeekFrom::Start(last as u64)).unwrap();
            f.write_all(&bytes[last..=last]).unwrap();
            f.sync_all().unwrap();
            return base_offset + i64::from(last_delta);
        }
        at += 12 + len;
    }
    panic!("no batch with base offset {base} in {}", segment.display());
}

/// Three batches of five records; the middle one (offsets 5..=9) is corrupted on disk. `run`
/// with `check.crcs=true` must stall (not ready, still running) with offset 5 committed, never past
/// it, must not send the records after the corrupt batch, and exits 4 on SIGTERM; `replay` over
/// the same topic must stop with exit code 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_batch_stalls_run_and_stops_replay_before_anything_is_committed_past_it() {
    let broker = tokio::task::spawn_blocking(OwnBroker::up).await.unwrap();
    let bs = broker.bootstrap.clone();
    let n = Names {
        topic: unique("edges-crc-in"),
        dlq: unique("edges-crc-dlq"),
        group: unique("edges-crc-g"),
    };
    create_topic(&bs, &n.topic, 1).await;
    create_topic(&bs, &n.dlq, 1).await;
    for batch in ["a", "b", "c"] {
        let recs: Vec<Rec> = (0..5)
            .map(|i| Rec::json(&add_to_cart(&format!("{batch}{i}"))))
            .collect();
        produce(&bs, &n.topic, recs).await;
    }
    let last = corrupt_batch(&broker.segment(&n.topic, 0), 5);
    assert!(last < 10, "batch b holds offsets 5..={last}");

    let standin = StandIn::start().await.unwrap();
    let cfg = parse(&config_toml_with(
        &bs,
        &n,
        &standin.base_url(),
        "\"check.crcs\" = \"true\"",
        "[pipeline]\ncommit_interval = \"100ms\"\n[shutdown]\ndrain_deadline = \"5s\"\ngrace_period = \"10s\"\n",
    ));
    let mut sink = InProcess::start(cfg.clone());
    // The run stalls (readiness fails, the error is counted), and (the bug) must never commit
    // past the unreadable batch. It must not end by itself either: an exit would hand the bad
    // partition to the next replica.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(sink.health.ready() == Err(admin::NOT_READY_UNREADABLE)
        && committed(&bs, &n.group, &n.topic, 0).await == Some(5))
    {
        assert!(
            Instant::now() < deadline,
            "the run stalls on the unreadable batch with offset 5 committed (ready: {:?}, committed: {:?})",
            sink.health.ready(),
            committed(&bs, &n.group, &n.topic, 0).await
        );
        if let Some(s) = sink.ended_within(Duration::from_millis(200)).await {
            panic!("the run ended by itself ({:?}) instead of stalling", s.stop);
        }
        let c = committed(&bs, &n.group, &n.topic, 0).await;
        assert!(
            c.is_none_or(|c| c <= 5),
            "run committed offset {c:?}, past the unreadable batch at 5..={last}"
        );
    }
    // Stalled: still running a while later, still nothing past the batch.
    assert!(
        sink.ended_within(Duration::from_secs(2)).await.is_none(),
        "the stall holds"
    );
    let metrics = sink.metrics.clone();
    let summary = sink.stop().await;
    assert_eq!(
        summary.stop.exit_code(),
        4,
        "SIGTERM after the stall exits 4: {:?}",
        summary.stop
    );
    assert!(summary.final_commit, "the final commit of what is done succeeded");
    assert!(
        metrics::sum(
            &metrics.encode(),
            "elevate_sink_consume_errors_total{code=\"BadMessage\""
        ) >= 1.0,
        "the unreadable batch is counted"
    );
    let c = committed(&bs, &n.group, &n.topic, 0).await;
    assert_eq!(c, Some(5), "what was done before the corrupt batch is committed");
    let tickets = standin.accepted_tickets();
    assert!(
        !tickets.iter().any(|t| t.starts_with('c')),
        "records after the unreadable batch were sent: {tickets:?}"
    );

    // replay over the same topic: fails the same way, its checkpoint never past offset 5.
    let args = elevate_sink::replay::ReplayArgs {
        config: None,
        topic: None,
        partitions: vec![],
        from: "earliest".parse().unwrap(),
        to: "now".parse().unwrap(),
        dry_run: false,
        rate: None,
        max_age: None,
        checkpoint_group: Some(unique("edges-crc-replay")),
    };
    let group = args.checkpoint_group.clone().unwrap();
    let (_tx, rx) = watch::channel(false);
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        elevate_sink::replay::replay(&cfg, &args, rx),
    )
    .await
    .expect("replay ends");
    let c = committed(&bs, &group, &n.topic, 0).await;
    assert!(
        c.is_none_or(|c| c <= 5),
        "replay checkpoint {c:?} is past the unreadable batch"
    );
    let err = result.expect_err("replay fails at an unreadable batch");
    let stop = err
        .downcast_ref::<pipeline::Stop>()
        .unwrap_or_else(|| panic!("replay error is a Stop: {err:#}"));
    assert_eq!(stop.exit_code(), 4);
    drop(broker);
}

// -------------------------------------------------------------------------------------------
// 6. fatal means restart

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

async fn readyz(addr: SocketAddr) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let resp = client.get(format!("http://{addr}/readyz")).send().await.ok()?;
    Some(resp.status().as_u16())
}

/// `elevate-sink run` as a child; killed if dropped running.
struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Two members with the same `group.instance.id` (static membership): the first is fenced by
/// the broker when the second joins. Its process must end with exit code 3 (a client that can
/// no longer work), not warn and linger; the second keeps consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_static_member_exits_with_code_3() {
    let bs = bootstrap().await;
    let n = crate::support::kafka::names(&bs, "edges-fenced", 1).await;
    let standin = StandIn::start().await.unwrap();
    let instance = unique("edges-instance");
    let props = format!("\"group.instance.id\" = \"{instance}\"\n\"session.timeout.ms\" = \"6000\"");
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = config_toml_with(&bs, &n, &standin.base_url(), &props, "").replace(
        "[admin]\nlisten = \"\"",
        &format!("[admin]\nlisten = \"{admin}\""),
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &toml).unwrap();
    let log = std::fs::File::create(dir.path().join("first.log")).unwrap();
    let mut first = Service(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .env_remove("ELEVATE_SINK_CONFIG")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn elevate-sink run"),
    );
    wait_until_async(Duration::from_secs(60), "the first member is ready", || async {
        readyz(admin).await == Some(200)
    })
    .await;

    // The second member, in this process, with the same instance id.
    let second = InProcess::start(parse(&config_toml_with(&bs, &n, &standin.base_url(), &props, "")));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = first.0.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = std::fs::read_to_string(dir.path().join("first.log")).unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("the fenced member is still running 60 s after the second joined; its log:\n{log}")
    });
    assert_eq!(status.code(), Some(3), "fenced member's exit status; log:\n{log}");
    assert!(log.contains("fatal"), "the log says why: {log}");

    // The second member owns the partition and delivers.
    produce(&bs, &n.topic, [Rec::json(&add_to_cart("after-fence"))]).await;
    standin
        .wait_for_tickets(&["after-fence".to_string()].into(), Duration::from_secs(60))
        .await
        .expect("the second member delivers");
    second.stop().await;
}

/// Mock cluster: the dead-letter producer's first produce is answered with an out-of-order
/// sequence error, which puts librdkafka's idempotent producer into its fatal state. The run
/// must end by itself (exit code 3) with readiness failed, and nothing committed past the record
/// that could not be parked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_dead_letter_producer_ends_the_run_and_fails_readiness() {
    let n = Names {
        topic: "fatal-in".into(),
        dlq: "fatal-dlq".into(),
        group: "fatal-g".into(),
    };
    let mock = Mock::new(&[(&n.topic, 1), (&n.dlq, 1)]);
    let bs = mock.bootstrap.clone();
    produce(&bs, &n.topic, [Rec::json(&add_to_cart("bad-ticket"))]).await;
    let standin = StandIn::start().await.unwrap();
    standin.script("bad-ticket", [400]);
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    );
    let mut sink = InProcess::start(parse(&config_toml_with(
        &bs,
        &n,
        &standin.base_url(),
        "\"session.timeout.ms\" = \"6000\"",
        "[pipeline]\ncommit_interval = \"100ms\"\n",
    )));
    let summary = sink
        .ended_within(Duration::from_secs(60))
        .await
        .expect("the run ends by itself after the dead-letter producer failed fatally");
    assert_eq!(summary.stop.exit_code(), 3, "{:?}", summary.stop);
    assert!(sink.health.ready().is_err());
    let c = committed(&bs, &n.group, &n.topic, 0).await;
    assert!(
        c.is_none_or(|c| c == 0),
        "committed {c:?}: past the record that was never parked"
    );
    drop(sink);
    drop(mock);
}

/// Real broker: while the dead-letter topic cannot be written (it does not exist yet, so every
/// produce fails), `/readyz` fails once parking has kept failing for `admin.wedged_after`, and
/// nothing is committed; once the topic exists the record is parked, committed, and the service
/// is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_parking_keeps_failing() {
    let bs = bootstrap().await;
    let n = Names {
        topic: unique("edges-unwritable-in"),
        dlq: unique("edges-unwritable-dlq"),
        group: unique("edges-unwritable-g"),
    };
    create_topic(&bs, &n.topic, 1).await;
    let standin = StandIn::start().await.unwrap();
    standin.script("refused-ticket", [400]);
    produce(&bs, &n.topic, [Rec::json(&add_to_cart("refused-ticket"))]).await;
    let toml = config_toml_with(
        &bs,
        &n,
        &standin.base_url(),
        "",
        "[pipeline]\ncommit_interval = \"100ms\"\n[dead_letter.properties]\n\"message.timeout.ms\" = \"1000\"\n",
    )
    .replace("[admin]\nlisten = \"\"", "[admin]\nlisten = \"\"\nwedged_after = \"2s\"");
    let sink = InProcess::start(parse(&toml));
    wait_until(Duration::from_secs(30), "the sink has joined its group", || {
        sink.series("elevate_sink_assigned_partitions") == 1.0
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "/readyz fails while the dead-letter topic cannot be written",
        || sink.health.ready().is_err(),
    )
    .await;
    assert_eq!(
        sink.health.ready(),
        Err(elevate_sink::admin::NOT_READY_DEAD_LETTER)
    );
    assert!(sink.series("elevate_sink_dead_letter_failures_total") >= 1.0);
    let c = committed(&bs, &n.group, &n.topic, 0).await;
    assert!(
        c.is_none_or(|c| c == 0),
        "committed {c:?}: past the record that was never parked"
    );

    create_topic(&bs, &n.dlq, 1).await;
    wait_until_async(
        Duration::from_secs(60),
        "the record is parked and committed once the topic exists",
        || async { committed(&bs, &n.group, &n.topic, 0).await == Some(1) },
    )
    .await;
    wait_until(Duration::from_secs(10), "ready again", || {
        sink.health.ready().is_ok()
    })
    .await;
    sink.stop().await;
    assert_eq!(
        consume_all(&bs, &n.dlq, 1, Duration::from_secs(10)).await.len(),
        1
    );
}

// -------------------------------------------------------------------------------------------
// 13. commit results and the lag gauge

/// Mock cluster: three offset commits answered with an error are each counted in
/// `commit_failures_total` (the periodic commit is asynchronous, so before its result was served
/// they were invisible); once a commit is acknowledged the position counts as committed and is
/// not sent again, so `commits_total` stays put while nothing new is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_async_commits_are_counted_and_acknowledged_ones_are_not_resent() {
    let n = Names {
        topic: "commit-in".into(),
        dlq: "commit-dlq".into(),
        group: "commit-g".into(),
    };
    let mock = Mock::new(&[(&n.topic, 1), (&n.dlq, 1)]);
    let bs = mock.bootstrap.clone();
    produce(
        &bs,
        &n.topic,
        (0..5).map(|i| Rec::json(&add_to_cart(&format!("t{i}")))),
    )
    .await;
    let standin = StandIn::start().await.unwrap();
    let sink = InProcess::start(parse(&config_toml_with(
        &bs,
        &n,
        &standin.base_url(),
        "\"session.timeout.ms\" = \"6000\"",
        "[pipeline]\ncommit_interval = \"100ms\"\n",
    )));
    wait_until_async(Duration::from_secs(60), "offset 5 committed", || async {
        committed(&bs, &n.group, &n.topic, 0).await == Some(5)
    })
    .await;
    wait_until(Duration::from_secs(10), "the commit is counted", || {
        sink.series("elevate_sink_commits_total") >= 1.0
    })
    .await;

    // Quiet: nothing new is done, so nothing is committed again.
    let before = sink.series("elevate_sink_commits_total");
    tokio::time::sleep(Duration::from_millis(1_000)).await; // ten commit intervals
    assert_eq!(
        sink.series("elevate_sink_commits_total"),
        before,
        "an acknowledged position is committed again and again"
    );

    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3],
    );
    produce(&bs, &n.topic, [Rec::json(&add_to_cart("t5"))]).await;
    wait_until(
        Duration::from_secs(30),
        "three failed async commits counted",
        || sink.series("elevate_sink_commit_failures_total") >= 3.0,
    )
    .await;
    wait_until_async(
        Duration::from_secs(30),
        "offset 6 committed after the failures",
        || async { committed(&bs, &n.group, &n.topic, 0).await == Some(6) },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "the acknowledged commit is counted",
        || sink.series("elevate_sink_commits_total") > before,
    )
    .await;
    assert_eq!(sink.series("elevate_sink_commit_failures_total"), 3.0);
    sink.stop().await;
    drop(mock);
}

/// Real broker, two members: after the second member joins and takes one of the two partitions,
/// the first member's `consumer_lag` has a series only for the partition it still owns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_partitions_leave_the_consumer_lag_gauge() {
    let bs = bootstrap().await;
    let n = crate::support::kafka::names(&bs, "edges-lag", 2).await;
    let standin = StandIn::start().await.unwrap();
    produce(
        &bs,
        &n.topic,
        (0..20).map(|i| Rec::json(&add_to_cart(&format!("l{i}"))).partition(i % 2)),
    )
    .await;
    let props = "\"statistics.interval.ms\" = \"200\"";
    let toml = config_toml_with(
        &bs,
        &n,
        &standin.base_url(),
        props,
        "[pipeline]\ncommit_interval = \"100ms\"\n",
    );
    let first = InProcess::start(parse(&toml));
    wait_until(
        Duration::from_secs(60),
        "the first member reports lag for both partitions",
        || metrics::labelled(&first.metrics.encode(), "elevate_sink_consumer_lag").len() == 2,
    )
    .await;
    let second = InProcess::start(parse(&toml));
    wait_until(Duration::from_secs(60), "each member owns one partition", || {
        first.series("elevate_sink_assigned_partitions") == 1.0
            && second.series("elevate_sink_assigned_partitions") == 1.0
    })
    .await;
    wait_until(
        Duration::from_secs(30),
        "the first member's lag gauge drops the partition it gave up",
        || metrics::labelled(&first.metrics.encode(), "elevate_sink_consumer_lag").len() == 1,
    )
    .await;
    // And statistics that arrive later do not bring it back.
    tokio::time::sleep(Duration::from_millis(1_000)).await; // five statistics intervals
    let text = first.metrics.encode();
    let lag = metrics::labelled(&text, "elevate_sink_consumer_lag");
    assert_eq!(lag.len(), 1, "{lag:?}");
    second.stop().await;
    first.stop().await;
}
