//! The Elevate stand-in over real HTTP: contract checks, recording, fault injection, control API.
//! No Kafka needed. (The standalone binary's test is the stand-in crate's own,
//! `crates/standin/tests/binary.rs`: only there does cargo build and name the binary.)

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use elevate_standin::{Accepted, Faults, Kind, Limits, StandIn, UserContext, ADD_TO_CART_PATH};
use serde_json::Value;

const JSON: &str = "application/json;charset=utf-8";
const WAIT: Duration = Duration::from_secs(5);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn url(s: &StandIn, query: &str) -> String {
    format!("{}{ADD_TO_CART_PATH}?{query}", s.base_url())
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

/// A valid PERSONALIZED request for `ticket`; returns the status.
async fn send(c: &reqwest::Client, s: &StandIn, ticket: &str) -> reqwest::Result<u16> {
    let r = post(
        c,
        &url(s, "market=SE&customerKey=c1&sessionKey=s1"),
        Some(JSON),
        &ticket_body(ticket),
    )
    .await?;
    Ok(r.status().as_u16())
}

async fn message_of(r: reqwest::Response) -> String {
    let v: Value = r.json().await.expect("JSON error body");
    v["message"].as_str().expect("message field").to_owned()
}

/// (ticket, query, expected customerKey, expected sessionKey, expected userContext)
type UserContextCase = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    Option<UserContext>,
);

#[tokio::test]
async fn valid_request_per_user_context_is_accepted_and_recorded() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    let cases: [UserContextCase; 6] = [
        (
            "T-default",
            "market=SE&customerKey=c1&sessionKey=s1",
            Some("c1"),
            Some("s1"),
            None,
        ),
        (
            "T-pers",
            "market=SE&customerKey=c%202&sessionKey=s2&userContext=PERSONALIZED",
            Some("c 2"),
            Some("s2"),
            Some(UserContext::Personalized),
        ),
        (
            "T-unpers",
            "market=NO&sessionKey=s3&userContext=UNPERSONALIZED",
            None,
            Some("s3"),
            Some(UserContext::Unpersonalized),
        ),
        (
            "T-anon",
            "market=DK&userContext=ANONYMOUS",
            None,
            None,
            Some(UserContext::Anonymous),
        ),
        (
            "T-synth",
            "market=FI&userContext=SYNTHETIC",
            None,
            None,
            Some(UserContext::Synthetic),
        ),
        (
            "T-synth-keys",
            "market=FI&userContext=SYNTHETIC&customerKey=c9&sessionKey=s9",
            Some("c9"),
            Some("s9"),
            Some(UserContext::Synthetic),
        ),
    ];
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (ticket, query, ..) in &cases {
        let r = c
            .post(url(&s, query))
            .header("content-type", JSON)
            .header("user-agent", format!("agent-{ticket}"))
            .header("x-forwarded-for", "203.0.113.7")
            .body(ticket_body(ticket))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{query}");
        assert_eq!(r.text().await.unwrap(), "");
    }
    // text/plain;charset=utf-8 is accepted too.
    let r = post(
        &c,
        &url(&s, "market=SE&userContext=ANONYMOUS"),
        Some("text/plain;charset=utf-8"),
        &ticket_body("T-text"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 204);

    let accepted = s.accepted();
    assert_eq!(accepted.len(), cases.len() + 1);
    for (a, (ticket, query, customer_key, session_key, user_context)) in accepted.iter().zip(&cases) {
        let market = query.split('&').next().unwrap().trim_start_matches("market=");
        assert_eq!(
            (a.ticket.as_str(), a.market.as_str()),
            (*ticket, market),
            "order and market"
        );
        assert_eq!(a.customer_key.as_deref(), *customer_key, "{ticket}");
        assert_eq!(a.session_key.as_deref(), *session_key, "{ticket}");
        assert_eq!(a.user_context, *user_context, "{ticket}");
        assert_eq!(a.user_agent, Some(format!("agent-{ticket}")));
        assert_eq!(a.forwarded_for.as_deref(), Some("203.0.113.7"));
        assert!(a.received_at_ms >= before && a.received_at_ms < before + 60_000);
    }
    assert_eq!(accepted.last().unwrap().forwarded_for, None);
    assert_eq!(s.status_counts(), BTreeMap::from([(204, cases.len() as u64 + 1)]));
    assert_eq!(s.requests_total(), cases.len() as u64 + 1);
}

#[tokio::test]
async fn bad_requests_get_400_naming_the_problem() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    let good_body = ticket_body("T1");
    let cases: &[(&str, &str, Option<&str>, &str, &str)] = &[
        (
            "missing market",
            "customerKey=c&sessionKey=s",
            Some(JSON),
            &good_body,
            "`market`",
        ),
        (
            "customerKey under ANONYMOUS",
            "market=SE&customerKey=c&userContext=ANONYMOUS",
            Some(JSON),
            &good_body,
            "`customerKey` must not be sent when userContext is ANONYMOUS",
        ),
        (
            "sessionKey missing under UNPERSONALIZED",
            "market=SE&userContext=UNPERSONALIZED",
            Some(JSON),
            &good_body,
            "missing query parameter `sessionKey`",
        ),
        (
            "customerKey under UNPERSONALIZED",
            "market=SE&customerKey=c&sessionKey=s&userContext=UNPERSONALIZED",
            Some(JSON),
            &good_body,
            "`customerKey` must not be sent",
        ),
        (
            "customerKey missing under PERSONALIZED",
            "market=SE&sessionKey=s",
            Some(JSON),
            &good_body,
            "missing query parameter `customerKey`",
        ),
        (
            "bad userContext",
            "market=SE&userContext=anonymous",
            Some(JSON),
            &good_body,
            "invalid `userContext`",
        ),
        (
            "empty ticket",
            "market=SE&userContext=ANONYMOUS",
            Some(JSON),
            r#"{"ticket":""}"#,
            "`ticket` must not be empty",
        ),
        (
            "ticket not a string",
            "market=SE&userContext=ANONYMOUS",
            Some(JSON),
            r#"{"ticket":42}"#,
            "`ticket` must be a string",
        ),
        (
            "ticket missing",
            "market=SE&userContext=ANONYMOUS",
            Some(JSON),
            r#"{"tiket":"x"}"#,
            "missing `ticket`",
        ),
        (
            "malformed JSON",
            "market=SE&userContext=ANONYMOUS",
            Some(JSON),
            r#"{"ticket": "x""#,
            "malformed JSON",
        ),
        (
            "body not an object",
            "market=SE&userContext=ANONYMOUS",
            Some(JSON),
            r#"["x"]"#,
            "JSON object",
        ),
        (
            "empty body",
            "market=SE&userContext=ANONYMOUS",
            Some(JSON),
            "",
            "empty body",
        ),
        (
            "wrong content type",
            "market=SE&userContext=ANONYMOUS",
            Some("application/x-www-form-urlencoded"),
            &good_body,
            "Content-Type",
        ),
        (
            "text/plain without charset",
            "market=SE&userContext=ANONYMOUS",
            Some("text/plain"),
            &good_body,
            "charset=utf-8",
        ),
        (
            "no content type",
            "market=SE&userContext=ANONYMOUS",
            None,
            &good_body,
            "Content-Type",
        ),
        (
            "unknown query parameter",
            "market=SE&userContext=ANONYMOUS&utm_source=x",
            Some(JSON),
            &good_body,
            "unknown query parameter `utm_source`",
        ),
        (
            "lowercase customerkey",
            "market=SE&customerkey=c&sessionKey=s",
            Some(JSON),
            &good_body,
            "unknown query parameter `customerkey`",
        ),
    ];
    for (what, query, ct, body, needle) in cases {
        let r = post(&c, &url(&s, query), *ct, body).await.unwrap();
        assert_eq!(r.status(), 400, "{what}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{what}"
        );
        let m = message_of(r).await;
        assert!(m.contains(needle), "{what}: message {m:?} lacks {needle:?}");
        assert!(m.len() < 300, "{what}: message too long");
    }
    assert!(s.accepted().is_empty(), "nothing invalid is recorded");
    assert_eq!(s.status_counts(), BTreeMap::from([(400, cases.len() as u64)]));
}

#[tokio::test]
async fn wrong_path_is_404_and_wrong_method_is_405() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    let body = ticket_body("T1");
    for path in [
        "/api/storefront/v3/notifications/remove-recently-viewed",
        "/api/storefront/v3/notifications/add-to-cart/",
        "/",
    ] {
        let u = format!("{}{path}?market=SE&userContext=ANONYMOUS", s.base_url());
        let r = post(&c, &u, Some(JSON), &body).await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = c
        .get(url(&s, "market=SE&userContext=ANONYMOUS"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "POST");
    let r = c
        .put(url(&s, "market=SE&userContext=ANONYMOUS"))
        .header("content-type", JSON)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(s.status_counts(), BTreeMap::from([(404, 3), (405, 2)]));
    assert!(s.accepted().is_empty());
}

#[tokio::test]
async fn scripted_statuses_are_consumed_per_ticket() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    s.script("T1", [500, 500, 204]);
    assert_eq!(send(&c, &s, "T2").await.unwrap(), 204, "other tickets unaffected");
    assert_eq!(send(&c, &s, "T1").await.unwrap(), 500);
    assert!(s.accepted_tickets() == ["T2"]);
    assert_eq!(send(&c, &s, "T1").await.unwrap(), 500);
    assert_eq!(send(&c, &s, "T1").await.unwrap(), 204);
    assert_eq!(send(&c, &s, "T1").await.unwrap(), 204, "script exhausted: normal");
    assert_eq!(s.accepted_tickets(), ["T2", "T1", "T1"]);

    // A scripted 204 still runs the contract check.
    s.script("T3", [204, 503]);
    let r = post(&c, &url(&s, "market=SE"), Some(JSON), &ticket_body("T3"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "scripted 204 on an invalid request");
    assert_eq!(send(&c, &s, "T3").await.unwrap(), 503);
    assert_eq!(send(&c, &s, "T3").await.unwrap(), 204);

    // 0 drops the connection.
    s.script("T4", [0]);
    assert!(send(&c, &s, "T4").await.is_err());
    assert_eq!(send(&c, &s, "T4").await.unwrap(), 204);

    assert_eq!(
        s.status_counts(),
        BTreeMap::from([(204, 5), (400, 1), (500, 2), (503, 1)])
    );
    assert_eq!(s.requests_total(), 10);
    assert_eq!(s.dropped_total(), 1);
    assert_eq!(s.accepted_tickets(), ["T2", "T1", "T1", "T3", "T4"]);
}

#[tokio::test]
async fn throttle_answers_429_with_retry_after() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    s.set_faults(Faults {
        throttle_next: 2,
        retry_after_secs: 7,
        ..Faults::default()
    });
    for _ in 0..2 {
        let r = post(
            &c,
            &url(&s, "market=SE&userContext=ANONYMOUS"),
            Some(JSON),
            &ticket_body("T1"),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
    }
    assert_eq!(s.faults().throttle_next, 0, "counter consumed");
    assert_eq!(send(&c, &s, "T1").await.unwrap(), 204);

    // Ratio 1.0: every request; a scripted 429 carries Retry-After too.
    s.set_faults(Faults {
        throttle_ratio: 1.0,
        ..Faults::default()
    });
    let r = c
        .post(url(&s, "market=SE&userContext=ANONYMOUS"))
        .header("content-type", JSON)
        .body(ticket_body("T2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    s.clear_faults();
    s.script("T5", [429]);
    let r = post(
        &c,
        &url(&s, "market=SE&userContext=ANONYMOUS"),
        Some(JSON),
        &ticket_body("T5"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(s.status_counts(), BTreeMap::from([(204, 1), (429, 4)]));
    assert_eq!(s.accepted_tickets(), ["T1"]);
}

#[tokio::test]
async fn outage_refuses_connections_then_recovers_on_the_same_port() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    let addr = s.addr();
    assert_eq!(send(&c, &s, "before").await.unwrap(), 204);

    s.outage_start().await;
    assert!(!s.is_listening().await);
    // Raw connect: refused, not merely failing at HTTP level.
    let e = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    // Through the client, including its pooled keep-alive connection.
    let e = send(&c, &s, "during").await.unwrap_err();
    let e = if e.is_connect() {
        e
    } else {
        // The pooled connection may have been closed under the client; the retry must be refused.
        send(&c, &s, "during").await.unwrap_err()
    };
    assert!(e.is_connect(), "expected connection refused, got {e:?}");

    s.outage_end().await.unwrap();
    assert_eq!(s.addr(), addr);
    assert_eq!(send(&c, &s, "after").await.unwrap(), 204);
    assert_eq!(s.accepted_tickets(), ["before", "after"]);

    // Timed outage via the control API: the answer comes, then connections are refused,
    // then it listens again by itself.
    let r = c
        .post(format!("{}/_standin/outage", s.base_url()))
        .json(&serde_json::json!({ "seconds": 0.5 }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let e = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    let deadline = Instant::now() + WAIT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "did not come back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(send(&c, &s, "after2").await.unwrap(), 204);
}

#[tokio::test]
async fn dropped_connections_fail_the_client_and_are_not_recorded() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    s.set_faults(Faults {
        drop_next: 2,
        ..Faults::default()
    });
    for _ in 0..2 {
        let e = send(&c, &s, "T1").await.unwrap_err();
        assert!(!e.is_timeout() && !e.is_status(), "{e:?}");
    }
    assert_eq!(send(&c, &s, "T1").await.unwrap(), 204);
    assert_eq!(s.dropped_total(), 2);
    assert_eq!(s.requests_total(), 3);
    assert_eq!(s.status_counts(), BTreeMap::from([(204, 1)]));
    assert_eq!(s.accepted_tickets(), ["T1"]);

    // A raw connection sees EOF without any answer.
    s.set_faults(Faults {
        drop_ratio: 1.0,
        ..Faults::default()
    });
    let raw = raw_exchange(&s, &[valid_raw_request("T9")], 1).await;
    assert_eq!(raw, "", "no bytes answered");
}

#[tokio::test]
async fn fixed_status_failure_ratio_and_latency() {
    let s = StandIn::start().await.unwrap();
    let c = client();

    s.set_faults(Faults {
        fixed_status: Some(401),
        ..Faults::default()
    });
    assert_eq!(send(&c, &s, "T1").await.unwrap(), 401);
    let r = post(&c, &url(&s, ""), None, "").await.unwrap();
    assert_eq!(r.status(), 401, "even invalid requests");

    s.set_faults(Faults {
        failure_ratio: 1.0,
        ..Faults::default()
    });
    assert_eq!(send(&c, &s, "T1").await.unwrap(), 500);
    let r = post(&c, &url(&s, "market=SE"), Some(JSON), &ticket_body("T1"))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "only valid requests fail with 500");

    // Seeded ratio: same seed, same sequence; roughly the asked fraction.
    let mut runs = Vec::new();
    for _ in 0..2 {
        s.set_faults(Faults {
            failure_ratio: 0.3,
            seed: 42,
            ..Faults::default()
        });
        let mut statuses = Vec::new();
        for i in 0..200 {
            statuses.push(send(&c, &s, &format!("R{i}")).await.unwrap());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "seeded RNG is reproducible");
    let failed = runs[0].iter().filter(|&&st| st == 500).count();
    assert!((30..=90).contains(&failed), "{failed} of 200 failed at 0.3");

    s.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let t = Instant::now();
    assert_eq!(send(&c, &s, "slow").await.unwrap(), 204);
    assert!(t.elapsed() >= Duration::from_millis(300));
    s.clear_faults();
    let t = Instant::now();
    assert_eq!(send(&c, &s, "fast").await.unwrap(), 204);
    assert!(t.elapsed() < Duration::from_millis(300));

    let counts = s.status_counts();
    assert_eq!(counts[&401], 2);
    assert_eq!(counts[&400], 1);
    assert_eq!(counts[&500], 1 + 2 * failed as u64);
    assert_eq!(counts[&204], 2 * (200 - failed as u64) + 2);
    assert_eq!(s.requests_total(), 4 + 400 + 2);
    assert_eq!(s.accepted_count() as u64, counts[&204]);
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let s = StandIn::start().await.unwrap();
    let answer = raw_exchange(
        &s,
        &[
            valid_raw_request("K1"),
            valid_raw_request("K2"),
            valid_raw_request("K3"),
        ],
        3,
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 204").count(), 3, "{answer}");
    assert_eq!(s.accepted_tickets(), ["K1", "K2", "K3"]);
}

#[tokio::test]
async fn wait_for_accepted_and_tickets() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    let want: HashSet<String> = (0..20).map(|i| format!("W{i}")).collect();

    let missing = s
        .wait_for_tickets(&want, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(missing, want);
    assert_eq!(s.wait_for_accepted(1, Duration::from_millis(50)).await, Err(0));

    let waiter = {
        let s = s.clone();
        let want = want.clone();
        tokio::spawn(async move { s.wait_for_tickets(&want, WAIT).await })
    };
    let counter = {
        let s = s.clone();
        tokio::spawn(async move { s.wait_for_accepted(20, WAIT).await })
    };
    let mut sends = Vec::new();
    for t in &want {
        let c = c.clone();
        let s = s.clone();
        let t = t.clone();
        sends.push(tokio::spawn(async move { send(&c, &s, &t).await.unwrap() }));
    }
    for h in sends {
        assert_eq!(h.await.unwrap(), 204);
    }
    waiter.await.unwrap().unwrap();
    counter.await.unwrap().unwrap();

    // Partial: reports exactly what is missing.
    let more: HashSet<String> = ["W1", "nope"].iter().map(|t| t.to_string()).collect();
    let missing = s
        .wait_for_tickets(&more, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(missing, HashSet::from(["nope".to_string()]));
}

#[tokio::test]
async fn control_api_and_dump() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    let base = s.base_url();
    assert_eq!(send(&c, &s, "C1").await.unwrap(), 204);
    let r = post(&c, &url(&s, "market=SE"), Some(JSON), &ticket_body("C1"))
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
    assert_eq!(stats["requests_total"], 2, "control requests are not counted");
    assert_eq!(stats["accepted"], 1);
    assert_eq!(stats["by_status"]["204"], 1);
    assert_eq!(stats["by_status"]["400"], 1);

    let r = c
        .post(format!("{base}/_standin/script"))
        .json(&serde_json::json!({"ticket": "C2", "statuses": [502]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(send(&c, &s, "C2").await.unwrap(), 502);

    let r = c
        .post(format!("{base}/_standin/faults"))
        .json(&serde_json::json!({"fixed_status": 403}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(send(&c, &s, "C3").await.unwrap(), 403);
    let r = c
        .post(format!("{base}/_standin/faults"))
        .json(&serde_json::json!({"failure_ratio": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(message_of(r).await.contains("failure_ratio"));
    let r = c
        .post(format!("{base}/_standin/faults"))
        .json(&serde_json::json!({"bogus": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let f: Faults = c
        .get(format!("{base}/_standin/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(f.fixed_status, Some(403));
    let r = c.delete(format!("{base}/_standin/faults")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(send(&c, &s, "C4").await.unwrap(), 204);

    let lines = c
        .get(format!("{base}/_standin/accepted"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tickets: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<Accepted>(l).unwrap().ticket)
        .collect();
    assert_eq!(tickets, ["C1", "C4"]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("accepted.jsonl");
    assert_eq!(s.dump_jsonl(&path).await.unwrap(), 2);
    let dumped: Vec<Accepted> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(dumped, s.accepted());
    let path2 = dir.path().join("via-control.jsonl");
    let r = c
        .post(format!("{base}/_standin/dump"))
        .json(&serde_json::json!({"path": path2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(std::fs::read_to_string(&path2).unwrap().lines().count(), 2);

    let r = c.get(format!("{base}/_standin/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let r = c.post(format!("{base}/_standin/reset")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.requests_total(), 0);
    assert!(s.accepted().is_empty());
    assert!(s.status_counts().is_empty());
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    assert_eq!(send(&c, &s, "S1").await.unwrap(), 204);
    s.shutdown().await;
    let e = tokio::net::TcpStream::connect(s.addr()).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    s.outage_end().await.unwrap();
    assert!(!s.is_listening().await, "outage_end after shutdown does nothing");
    assert_eq!(s.accepted_tickets(), ["S1"], "data stays queryable");
}

fn valid_raw_request(ticket: &str) -> String {
    let body = ticket_body(ticket);
    format!(
        "POST {ADD_TO_CART_PATH}?market=SE&userContext=ANONYMOUS HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Writes `requests` on one connection (pipelined); returns what is answered until `expect`
/// responses have arrived, or EOF, or 5 s.
async fn raw_exchange(s: &StandIn, requests: &[String], expect: usize) -> String {
    let addr = s.addr();
    let requests = requests.concat();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        stream.write_all(requests.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&out).matches("HTTP/1.1 ").count() < expect {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn arrivals_are_recorded_for_every_request_before_injected_latency() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    s.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    // Three at once (one valid, one refused by the contract, one valid): all arrive together,
    // although each answer takes 300 ms.
    let (bad_url, bad_body) = (url(&s, "market=SE"), ticket_body("A2"));
    let (a, b, d) = tokio::join!(
        send(&c, &s, "A1"),
        post(&c, &bad_url, Some(JSON), &bad_body),
        send(&c, &s, "A3"),
    );
    assert_eq!(a.unwrap(), 204);
    assert_eq!(b.unwrap().status(), 400);
    assert_eq!(d.unwrap(), 204);
    let arrivals = s.arrivals_us();
    assert_eq!(arrivals.len(), 3);
    assert_eq!(s.requests_total(), 3);
    assert!(arrivals.iter().all(|&t| t >= before));
    assert!(
        arrivals[2] - arrivals[0] < 200_000,
        "arrivals are stamped before the 300 ms latency: {arrivals:?}"
    );
    assert_eq!(s.max_arrivals_in(Duration::from_millis(200)), 3);
    s.reset();
    assert!(s.arrivals_us().is_empty());
}

/// POSTs `body` as a valid PERSONALIZED request (keys `c1`/`s1`) would be sent.
async fn post_valid(c: &reqwest::Client, s: &StandIn, body: &str) -> reqwest::Response {
    let u = url(s, "market=SE&customerKey=c1&sessionKey=s1");
    post(c, &u, Some(JSON), body).await.unwrap()
}

#[tokio::test]
async fn size_limits_answer_413_414_431_like_a_real_server() {
    let s = StandIn::start().await.unwrap();
    let c = client();
    // Without limits: a body over 1 MiB is a 400, as always.
    let huge = ticket_body(&"x".repeat((1 << 20) + 1));
    assert_eq!(post_valid(&c, &s, &huge).await.status(), 400);

    let limits = Limits {
        max_uri_bytes: Some(2048),
        max_header_bytes: Some(4096),
        max_body_bytes: Some(64 * 1024),
    };
    s.set_limits(limits);
    assert_eq!(s.limits(), limits);
    let big_ticket = "b".repeat(64 * 1024);
    let big = ticket_body(&big_ticket);
    let r = post_valid(&c, &s, &big).await;
    assert_eq!(r.status(), 413);
    assert!(message_of(r).await.contains("larger than 65536"));
    // With a body limit set it replaces the 1 MiB cap: 413, not 400.
    assert_eq!(post_valid(&c, &s, &huge).await.status(), 413);
    let long_key = "k".repeat(2048);
    let r = post(
        &c,
        &url(&s, &format!("market=SE&customerKey={long_key}&sessionKey=s1")),
        Some(JSON),
        &ticket_body("L1"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 414);
    assert!(message_of(r).await.contains("longer than 2048"));
    let r = c
        .post(url(&s, "market=SE&customerKey=c1&sessionKey=s1"))
        .header("content-type", JSON)
        .header("user-agent", "u".repeat(5000))
        .body(ticket_body("L2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    // Limits come before scripts: the big ticket's scripted 503 is not consumed.
    s.script(big_ticket.as_str(), [503]);
    assert_eq!(post_valid(&c, &s, &big).await.status(), 413);
    // Just under every limit: accepted.
    assert_eq!(send(&c, &s, &"ok".repeat(1000)).await.unwrap(), 204);
    assert_eq!(s.accepted_tickets(), ["ok".repeat(1000)]);
    assert_eq!(
        s.status_counts(),
        BTreeMap::from([(204, 1), (400, 1), (413, 3), (414, 1), (431, 1)])
    );
    assert_eq!(s.arrivals_us().len(), 7, "refused requests arrived too");
    // A body over the limit (3 MiB, more than the server's read buffer) is read to its end before
    // the 413, so the connection keeps serving: a valid request pipelined behind it is answered.
    // (Without the drain, the connection closes after the 413: only one answer.)
    let over = ticket_body(&"p".repeat(3 << 20));
    let raw_over = format!(
        "POST {ADD_TO_CART_PATH}?market=SE&userContext=ANONYMOUS HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{over}",
        over.len()
    );
    let answers = raw_exchange(&s, &[raw_over, valid_raw_request("after-413")], 2).await;
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answers[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["413", "204"], "{answers:.300}");
    s.set_limits(Limits::default());
    let r = post_valid(&c, &s, &big).await;
    assert_eq!(
        r.status(),
        503,
        "the script was left for the first request under the limits"
    );
    s.set_limits(limits);

    // Reset keeps the limits (server configuration); the control API reads and replaces them.
    s.reset();
    assert_eq!(s.limits(), limits);
    let base = s.base_url();
    let got: Limits = c
        .get(format!("{base}/_standin/limits"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, limits);
    let r = c
        .post(format!("{base}/_standin/limits"))
        .json(&serde_json::json!({"max_body_bytes": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.limits(),
        Limits {
            max_body_bytes: Some(10),
            ..Limits::default()
        }
    );
    assert_eq!(send(&c, &s, "too-long").await.unwrap(), 413);
    let r = c
        .post(format!("{base}/_standin/limits"))
        .json(&serde_json::json!({"max_bodybytes": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "unknown field");
    s.set_limits(Limits::default());
    assert_eq!(send(&c, &s, "too-long").await.unwrap(), 204);
}

#[tokio::test]
async fn every_kind_is_served_and_recorded_with_its_kind_and_trace_headers() {
    let s = StandIn::start_with_api_key("k-123").await.unwrap();
    let c = client();
    let q = "customerKey=c1&market=SE&sessionKey=s1";
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let payment = r#"{"lines":[{"variantKey":"v1","quantity":2,"sellingPrice":39.0,"cost":15.2}]}"#;
    let cases = [
        (Kind::Click, r#"{"ticket":"T1"}"#),
        (Kind::AddFavorite, r#"{"productKey":"p1"}"#),
        (Kind::RemoveFavorite, r#"{"variantKey":"v1"}"#),
        (Kind::End, ""),
        (Kind::Payment, payment),
    ];
    for (kind, body) in cases {
        let mut r = c
            .post(format!("{}?{q}", s.url_of(kind)))
            .header("traceparent", tp)
            .header("api-key", "k-123")
            .body(body);
        if !body.is_empty() {
            r = r.header("content-type", JSON);
        }
        assert_eq!(r.send().await.unwrap().status(), 204, "{kind:?}");
    }
    let r = c
        .post(format!("{}?{q}", s.url_of(Kind::Payment)))
        .header("content-type", JSON)
        .header("api-key", "k-124")
        .body(payment)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(!message_of(r).await.contains("k-12"));
    let accepted = s.accepted();
    let kinds: Vec<Kind> = accepted.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, cases.map(|c| c.0).to_vec());
    assert!(accepted.iter().all(|a| a.traceparent.as_deref() == Some(tp)));
    assert_eq!(s.accepted_of(Kind::Click)[0].ticket, "T1");
    assert_eq!(s.accepted_of(Kind::End)[0].body, Value::Null);
    assert_eq!(
        s.accepted_of(Kind::Payment)[0].body,
        serde_json::from_str::<Value>(payment).unwrap()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kinds.jsonl");
    assert_eq!(s.dump_jsonl(&path).await.unwrap(), 5);
    let dumped = std::fs::read_to_string(&path).unwrap();
    assert!(!dumped.contains("k-123"), "the Api-Key is never recorded");
    let first: Accepted = serde_json::from_str(dumped.lines().next().unwrap()).unwrap();
    assert_eq!(first, accepted[0]);
}
