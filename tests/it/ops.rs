//! The operating surface, through the built binary: `check` (named errors, secrets shown only as
//! their source), `run` as a child process against the real broker (secrets and customer/session
//! keys absent from its logs, the named `/metrics` series, `/readyz` before and after joining the
//! group, exit 0 on SIGTERM) and `demo`. Every wait is on a condition with a bounded timeout.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elevate_standin::StandIn;
use tokio::net::{TcpListener, TcpStream};

use crate::support::kafka::{bootstrap, names, produce, unique, wait_until_async, Names, Rec};

const BIN: &str = env!("CARGO_BIN_EXE_elevate-sink");

// -------------------------------------------------------------------------------------------
// helpers

/// Runs the binary to completion; returns (status, stdout, stderr).
pub(crate) fn run_bin(
    args: &[&str],
    env: &[(&str, &str)],
    cwd: Option<&Path>,
) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("ELEVATE_SINK_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd.output().expect("run elevate-sink");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free local port (bound, read, released).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// `elevate-sink run` as a child process; its stderr is captured; killed if dropped running.
pub(crate) struct Service {
    /// The child.
    child: Child,
    /// Everything written to stderr so far.
    stderr: Arc<Mutex<String>>,
}

impl Service {
    pub(crate) fn start(config: &Path, env: &[(&str, &str)]) -> Service {
        let mut cmd = Command::new(BIN);
        cmd.args(["run", "--config"])
            .arg(config)
            .env_remove("RUST_LOG")
            .env_remove("ELEVATE_SINK_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn elevate-sink run");
        let mut pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Service { child, stderr }
    }

    pub(crate) fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub(crate) async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for child") {
                // Let the reader thread drain the pipe: the process is gone, so EOF is near.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    loop {
                        if Arc::strong_count(&self.stderr) == 1 {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "elevate-sink did not exit within {timeout:?} of SIGTERM; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// GET `http://addr{path}`: (status, body), or None while nothing answers.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .ok()?;
    let resp = client.get(format!("http://{addr}{path}")).send().await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// A TCP gate in front of the broker: connections queue until it is opened, then are proxied.
/// It holds the service "before assignment" for as long as a test needs.
pub(crate) struct Gate {
    /// Where clients connect.
    pub(crate) addr: SocketAddr,
    /// Opens the gate.
    pub(crate) open: tokio::sync::watch::Sender<bool>,
}

pub(crate) async fn gate_to(target: String) -> Gate {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
    let addr = listener.local_addr().expect("gate address");
    let (open, mut opened) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        if opened.wait_for(|o| *o).await.is_err() {
            return;
        }
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Gate { addr, open }
}

/// Names for one service run.
/// A service config: real broker (or gate), stand-in, a fixed admin port, plus `extra` TOML.
pub(crate) fn service_toml(
    bootstrap: &str,
    n: &Names,
    base_url: &str,
    admin: SocketAddr,
    extra: &str,
) -> String {
    format!(
        "[kafka]\nbootstrap_servers = \"{bootstrap}\"\ngroup_id = \"{}\"\ntopics = [\"{}\"]\n\
         {extra}\n\
         [elevate]\nbase_url = \"{base_url}\"\n\
         [dead_letter]\ntopic = \"{}\"\n\
         [pipeline]\ncommit_interval = \"200ms\"\n\
         [retry]\ninitial_backoff = \"50ms\"\n\
         [shutdown]\ndrain_deadline = \"5s\"\ngrace_period = \"10s\"\n\
         [admin]\nlisten = \"{admin}\"\n",
        n.group, n.topic, n.dlq
    )
}

fn add_to_cart(ticket: &str, customer_key: &str, session_key: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "add_to_cart",
        "market": "SE",
        "customerKey": customer_key,
        "sessionKey": session_key,
        "visitor": {"userAgent": "ops-test/1.0", "ip": "203.0.113.9"},
        "lines": [
            {"source": "elevate", "ticket": ticket, "productKey": "p1", "quantity": 1},
            {"source": "shop", "productKey": "p2", "quantity": 1}
        ]
    })
}

// -------------------------------------------------------------------------------------------
// check

#[test]
fn check_names_an_unknown_key_a_bad_combination_and_a_missing_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let base = "[elevate]\nbase_url = \"http://127.0.0.1:8080\"\n";

    let cases = [
        (
            write("unknown.toml", &format!("{base}[rate]\nrequests_per_sec = 10\n")),
            vec!["requests_per_sec"],
        ),
        (
            write(
                "combination.toml",
                &format!("{base}[shutdown]\ndrain_deadline = \"40s\"\ngrace_period = \"30s\"\n"),
            ),
            vec!["shutdown.drain_deadline", "grace_period"],
        ),
        (
            write("scheme.toml", "[elevate]\nbase_url = \"ftp://example.com\"\n"),
            vec!["elevate.base_url", "ftp"],
        ),
        (
            write("type.toml", &format!("{base}[pipeline]\nmax_in_flight_records = \"many\"\n")),
            vec!["max_in_flight_records"],
        ),
        (
            write(
                "secret.toml",
                &format!(
                    "{base}[kafka.secret_properties]\n\"sasl.password\" = {{ file = \"/nonexistent/elevate-sink/pw\" }}\n"
                ),
            ),
            vec!["kafka.secret_properties.\"sasl.password\"", "/nonexistent/elevate-sink/pw"],
        ),
    ];
    for (path, needles) in cases {
        let (status, stdout, stderr) = run_bin(&["check", "--config", &path], &[], None);
        assert_eq!(status.code(), Some(1), "{path}: stdout {stdout} stderr {stderr}");
        assert!(stderr.starts_with("error: "), "{path}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{path}: {needle:?} not in {stderr}");
        }
    }

    // An unknown key from the environment is named too.
    let ok = write("ok.toml", base);
    let (status, _, stderr) = run_bin(&["check", "-c", &ok], &[("ELEVATE_SINK__RATE__BURTS", "5")], None);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("burts"), "{stderr}");

    // And a good file passes, with the environment override applied.
    let (status, stdout, stderr) =
        run_bin(&["check", "-c", &ok], &[("ELEVATE_SINK__RATE__BURST", "7")], None);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("burst 7"), "{stdout}");
}

/// `run` and `replay` load their configuration once, before the runtime exists (its
/// `pipeline.worker_threads` shapes the runtime): a bad file or override still stops them at start
/// with exit 2 and the key named, before any Kafka client exists (none is reachable here).
#[test]
fn run_and_replay_stop_at_start_on_a_bad_config_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[pipeline]\nworker_threads = \"two\"\n").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[kafka]\nbootstrap_servers = \"127.0.0.1:9\"\n[elevate]\nbase_url = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let replay = ["replay", "--topic", "t", "--dry-run"];
    // (arguments, environment, what the error names)
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 4] = [
        (vec!["run", "-c", bad.to_str().unwrap()], vec![], "worker_threads"),
        (
            vec!["run", "-c", good.to_str().unwrap()],
            vec![("ELEVATE_SINK__PIPELINE__WORKER_THREADS", "0")],
            "worker_threads",
        ),
        (
            [&replay[..], &["-c", bad.to_str().unwrap()]].concat(),
            vec![],
            "worker_threads",
        ),
        (
            [&replay[..], &["-c", good.to_str().unwrap()]].concat(),
            vec![("ELEVATE_SINK__RATE__BURTS", "5")],
            "burts",
        ),
    ];
    for (args, env, needle) in cases {
        let (status, stdout, stderr) = run_bin(&args, &env, None);
        assert_eq!(
            status.code(),
            Some(2),
            "{args:?}: stdout {stdout} stderr {stderr}"
        );
        assert!(stderr.starts_with("error: configuration"), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {needle:?} not in {stderr}");
    }
}

#[test]
fn check_shows_secret_sources_never_their_values() {
    let dir = tempfile::tempdir().unwrap();
    let file_secret = format!("file-secret-{}", unique("v"));
    let env_secret = format!("env-secret-{}", unique("v"));
    let secret_path = dir.path().join("kafka-password");
    std::fs::write(&secret_path, format!("{file_secret}\n")).unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbootstrap_servers = \"broker:9093\"\n[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\n\
             \"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"sink\"\n\
             [kafka.secret_properties]\n\"sasl.password\" = {{ file = \"{}\" }}\n\
             \"ssl.key.password\" = {{ env = \"OPS_TEST_KEY_PASSWORD\" }}\n\
             [elevate]\ncluster_id = \"w1234\"\n",
            secret_path.display()
        ),
    )
    .unwrap();
    let sample = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/examples/add-to-cart-multi-line.json"
    );
    let (status, stdout, stderr) = run_bin(
        &["check", "--config", config.to_str().unwrap(), "--sample", sample],
        &[("OPS_TEST_KEY_PASSWORD", &env_secret)],
        None,
    );
    assert!(status.success(), "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(!all.contains(&file_secret) && !all.contains(&env_secret), "{all}");
    assert!(
        stdout.contains(&format!("sasl.password = <from file {}>", secret_path.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains("ssl.key.password = <from env OPS_TEST_KEY_PASSWORD>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("POST https://w1234.elevate-api.cloud/api/storefront/v3/notifications/add-to-cart?"),
        "{stdout}"
    );
    assert!(stdout.contains("skip: not_from_elevate"), "{stdout}");

    // The unset variable is an error naming the key, not the value of anything.
    let (status, _, stderr) = run_bin(&["check", "--config", config.to_str().unwrap()], &[], None);
    assert_eq!(status.code(), Some(1));
    assert!(
        stderr.contains("ssl.key.password") && stderr.contains("OPS_TEST_KEY_PASSWORD"),
        "{stderr}"
    );
    assert!(!stderr.contains(&file_secret), "{stderr}");
}

#[test]
fn check_sample_with_every_example_exits_zero_and_counts_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let mut jsonl = String::new();
    for (_, text) in elevate_sink::demo::SAMPLE_EVENTS {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        jsonl.push_str(&v.to_string());
        jsonl.push('\n');
    }
    jsonl.push_str("{not json\n");
    let sample = dir.path().join("events.jsonl");
    std::fs::write(&sample, jsonl).unwrap();
    let (status, stdout, stderr) = run_bin(
        &["check", "--sample", sample.to_str().unwrap()],
        &[("ELEVATE_SINK__ELEVATE__BASE_URL", "http://127.0.0.1:9")],
        None,
    );
    assert!(status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("dead-letter: missing_field: customerKey is missing"),
        "{stdout}"
    );
    assert!(stdout.contains("dead-letter: malformed_json"), "{stdout}");
    assert!(stdout.contains("3 dead-lettered"), "{stdout}");
    assert!(stdout.contains("userContext=ANONYMOUS"), "{stdout}");
}

// -------------------------------------------------------------------------------------------
// run against the real broker

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_before_assignment_and_200_after_healthz_always_200() {
    let bs = bootstrap().await;
    let n = names(&bs, "ops-ready", 3).await;
    let standin = StandIn::start().await.unwrap();
    let gate = gate_to(bs.clone()).await;
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        service_toml(&gate.addr.to_string(), &n, &standin.base_url(), admin, ""),
    )
    .unwrap();
    let mut svc = Service::start(&config, &[]);

    // Until the gate opens the consumer cannot reach the broker, so it cannot have joined.
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, body) = loop {
        if let Some(answer) = get(admin, "/readyz").await {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "admin listener never answered; log:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("not yet a member"), "{body}");
    assert_eq!(get(admin, "/healthz").await.map(|r| r.0), Some(200));

    gate.open.send(true).unwrap();
    wait_until_async(
        Duration::from_secs(60),
        "/readyz 200 after assignment",
        || async { matches!(get(admin, "/readyz").await, Some((200, _))) },
    )
    .await;
    assert_eq!(get(admin, "/healthz").await.map(|r| r.0), Some(200));
    let status = svc.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "exit {status:?}; log:\n{}", svc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_run_exposes_metrics_and_logs_no_secrets_nor_customer_keys() {
    let bs = bootstrap().await;
    let n = names(&bs, "ops-run", 3).await;
    let standin = StandIn::start().await.unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Secrets: one from a file, one from the environment. PLAINTEXT does not use them.
    let file_secret = format!("pw-file-{}", unique("s"));
    let env_secret = format!("pw-env-{}", unique("s"));
    let secret_path = dir.path().join("password");
    std::fs::write(&secret_path, &file_secret).unwrap();
    let extra = format!(
        "[kafka.properties]\n\"statistics.interval.ms\" = \"500\"\n\
         [kafka.secret_properties]\n\"sasl.password\" = {{ file = \"{}\" }}\n\
         \"ssl.key.password\" = {{ env = \"OPS_RUN_KEY_PASSWORD\" }}\n",
        secret_path.display()
    );
    let config = dir.path().join("c.toml");
    std::fs::write(&config, service_toml(&bs, &n, &standin.base_url(), admin, &extra)).unwrap();

    // Events with personal keys that must never reach the logs: 6 delivered (one after a 500),
    // 1 dead-lettered for a missing key, 1 skipped record.
    let tag = unique("k");
    let keys: Vec<(String, String)> = (0..6)
        .map(|i| (format!("cust-{tag}-{i}"), format!("sess-{tag}-{i}")))
        .collect();
    let tickets: Vec<String> = (0..6).map(|i| format!("ticket-{tag}-{i}")).collect();
    let mut records: Vec<Rec> = keys
        .iter()
        .zip(&tickets)
        .map(|((ck, sk), t)| Rec::json(&add_to_cart(t, ck, sk)).key(ck.clone()))
        .collect();
    let lone_session = format!("sess-{tag}-lone");
    let mut missing = add_to_cart(&format!("ticket-{tag}-dl"), "", &lone_session);
    missing.as_object_mut().unwrap().remove("customerKey");
    records.push(Rec::json(&missing));
    records.push(Rec::json(
        &serde_json::json!({"type": "page_view", "market": "SE",
        "customerKey": keys[0].0, "sessionKey": keys[0].1}),
    ));
    standin.script(tickets[0].clone(), [500]);
    produce(&bs, &n.topic, records).await;

    let mut svc = Service::start(&config, &[("OPS_RUN_KEY_PASSWORD", &env_secret)]);
    let expected: std::collections::HashSet<String> = tickets.iter().cloned().collect();
    if let Err(missing) = standin.wait_for_tickets(&expected, Duration::from_secs(60)).await {
        panic!("tickets not delivered: {missing:?}; log:\n{}", svc.log());
    }

    // The named series, with samples once the run has done its work.
    let needles = [
        format!("elevate_sink_records_consumed_total{{topic=\"{}\"}} 8", n.topic),
        "elevate_sink_notifications_total{outcome=\"delivered\",status=\"204\"} 6".to_string(),
        "elevate_sink_retries_total{class=\"transient\",status=\"500\"} 1".to_string(),
        "elevate_sink_skipped_total{reason=\"not_add_to_cart\"} 1".to_string(),
        "elevate_sink_skipped_total{reason=\"not_from_elevate\"} 6".to_string(),
        "elevate_sink_dead_lettered_total{reason=\"missing_field\"} 1".to_string(),
        "elevate_sink_in_flight_records 0".to_string(),
        "elevate_sink_in_flight_notifications 0".to_string(),
        "elevate_sink_in_flight_requests 0".to_string(),
        "elevate_sink_limiter_wait_seconds_total ".to_string(),
        "elevate_sink_request_duration_seconds_bucket{le=\"".to_string(),
        "elevate_sink_request_duration_seconds_count 7".to_string(),
        "elevate_sink_commit_failures_total 0".to_string(),
        format!("elevate_sink_consumer_lag{{topic=\"{}\",partition=\"", n.topic),
        "elevate_sink_paused_partitions 0".to_string(),
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = match get(admin, "/metrics").await {
            Some((200, body)) => body,
            _ => String::new(),
        };
        let missing: Vec<&String> = needles.iter().filter(|n| !text.contains(n.as_str())).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics lacks {missing:?}:\n{text}\nlog:\n{}",
            svc.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let status = svc.terminate(Duration::from_secs(20)).await;
    let log = svc.log();
    assert!(status.success(), "exit {status:?}; log:\n{log}");
    assert!(log.contains("admin listener up"), "{log}");
    assert!(log.contains("partitions assigned"), "{log}");
    for secret in [&file_secret, &env_secret] {
        assert!(!log.contains(secret.as_str()), "a secret reached the log:\n{log}");
    }
    for (ck, sk) in &keys {
        assert!(
            !log.contains(ck.as_str()) && !log.contains(sk.as_str()),
            "a key reached the log:\n{log}"
        );
    }
    assert!(
        !log.contains(&lone_session),
        "a session key reached the log:\n{log}"
    );
    assert!(
        !log.contains(&tag),
        "an event's personal value reached the log:\n{log}"
    );
}

// -------------------------------------------------------------------------------------------
// demo

#[test]
fn demo_exits_zero_and_reports_what_happened() {
    // From an unrelated directory: the examples are embedded in the binary.
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (status, stdout, stderr) = run_bin(&["demo"], &[], Some(dir.path()));
    let took = started.elapsed();
    assert!(status.success(), "demo failed ({status:?}):\n{stdout}\n{stderr}");
    for needle in [
        "consumed       28 records: cart-events 22, orders 6",
        "sent           18 notifications",
        "route cart (add-to-cart) from cart-events\n  arrived (204)  12",
        "route clicks (click) from cart-events\n  arrived (204)  2",
        "route payments (payment) from orders, with the Api-Key (checked by the stand-in)\n  arrived (204)  4",
        "dead-lettered  6",
        "missing_field: customerKey is missing",
        "wrong_type: lines[0] ticket",
        "bad_value: lines[0] quantity at /quantity must be a positive integer",
        "no_route 4",
        "cart-events/0   committed",
        "orders/1        committed",
    ] {
        assert!(stdout.contains(needle), "{needle:?} not in:\n{stdout}");
    }
    assert!(!stdout.contains("NOT DONE"), "{stdout}");
    assert_eq!(stdout.matches("all done").count(), 5, "{stdout}");
    assert!(took < Duration::from_secs(30), "demo took {took:?}");
}

// -------------------------------------------------------------------------------------------
// the binary's allocator

/// The binary's jemalloc runs with the settings `src/main.rs` gives it (`malloc_conf`), and
/// `MALLOC_CONF` from the environment still overrides them key by key. jemalloc's own report,
/// printed at exit (`stats_print`), shows both sources and the options in force.
#[cfg(target_os = "linux")]
#[test]
fn the_binary_allocator_runs_with_its_settings_and_the_environment_overrides_them() {
    let opts = |env: &str| {
        let (status, _, stderr) = run_bin(&["--version"], &[("MALLOC_CONF", env)], None);
        assert!(status.success(), "{stderr}");
        stderr
    };
    let report = opts("stats_print:true");
    assert!(
        report
            .contains("Global variable malloc_conf: \"slab_sizes:1-16384:16,tcache_gc_incr_bytes:1048576\""),
        "{report}"
    );
    assert!(report.contains("opt.tcache_gc_incr_bytes: 1048576"), "{report}");
    let report = opts("stats_print:true,tcache_gc_incr_bytes:65536");
    assert!(report.contains("opt.tcache_gc_incr_bytes: 65536"), "{report}");
}
