//! The standalone `elevate-standin` binary: serves, dumps what it accepted, and exits 0 on
//! SIGTERM. Here, in the stand-in's own crate, because cargo builds a package's binaries (and
//! names them, `CARGO_BIN_EXE_…`) only for that package's integration tests; the in-process
//! stand-in's tests are in the product's one test binary (`tests/it/standin.rs`).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use elevate_standin::{Accepted, UserContext, ADD_TO_CART_PATH};
use serde_json::Value;

const JSON: &str = "application/json;charset=utf-8";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    content_type: Option<&str>,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    let mut req = c.post(url).body(body.to_owned());
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.send().await
}

fn ticket_body(t: &str) -> String {
    serde_json::json!({ "ticket": t }).to_string()
}

#[tokio::test]
async fn standalone_binary_serves_dumps_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump.jsonl");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_elevate-standin"))
        .args(["--listen", "127.0.0.1:0", "--dump"])
        .arg(&dump)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line.trim().to_owned();
    assert!(base.starts_with("http://127.0.0.1:"), "{base:?}");

    let c = client();
    let r = post(
        &c,
        &format!("{base}{ADD_TO_CART_PATH}?market=SE&userContext=ANONYMOUS"),
        Some(JSON),
        &ticket_body("B1"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let r = post(
        &c,
        &format!("{base}{ADD_TO_CART_PATH}?userContext=ANONYMOUS"),
        Some(JSON),
        &ticket_body("B2"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let stats: Value = c
        .get(format!("{base}/_standin/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["by_status"]["400"], 1);

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    let dumped: Vec<Accepted> = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dumped.len(), 1);
    assert_eq!(dumped[0].ticket, "B1");
    assert_eq!(dumped[0].user_context, Some(UserContext::Anonymous));
}
