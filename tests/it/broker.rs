//! The test bed itself: the real broker takes records and gives them back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::message::{Headers, Message};

use crate::support::kafka::{self, Rec};

#[tokio::test]
async fn produce_and_consume_round_trip_on_real_broker() {
    let bootstrap = kafka::bootstrap().await;
    let topic = kafka::unique("it-broker");
    kafka::create_topic(&bootstrap, &topic, 3).await;
    assert_eq!(kafka::partitions(&bootstrap, &topic).await, vec![0, 1, 2]);

    const N: usize = 300;
    let records = (0..N).map(|i| {
        Rec::new(format!("{{\"n\":{i}}}"))
            .key(format!("key-{}", i % 17))
            .header("seq", i.to_string())
    });
    let landed = kafka::produce(&bootstrap, &topic, records).await;
    assert_eq!(landed.len(), N);

    // Same key, same partition; offsets per partition are dense from 0.
    let mut per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for l in &landed {
        *per_partition.entry(l.partition).or_default() += 1;
    }
    let hw = kafka::high_watermarks(&bootstrap, &topic).await;
    assert_eq!(hw.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    for (p, high) in &hw {
        assert_eq!(
            *high as usize,
            per_partition.get(p).copied().unwrap_or(0),
            "high watermark of partition {p}"
        );
    }
    assert_eq!(hw.values().sum::<i64>() as usize, N);

    let got = kafka::consume_all(&bootstrap, &topic, N, Duration::from_secs(30)).await;
    assert_eq!(got.len(), N, "read back all records");

    let mut seen = BTreeSet::new();
    let mut key_partition: BTreeMap<String, i32> = BTreeMap::new();
    for m in &got {
        let value: serde_json::Value = serde_json::from_str(kafka::payload_str(m)).expect("value is JSON");
        let n = value["n"].as_u64().expect("n") as usize;
        let key = std::str::from_utf8(m.key().expect("key")).unwrap().to_owned();
        assert_eq!(key, format!("key-{}", n % 17));
        let headers = m.headers().expect("headers");
        let seq = headers.iter().find(|h| h.key == "seq").expect("seq header");
        assert_eq!(seq.value, Some(n.to_string().as_bytes()));
        assert_eq!(
            landed[n].partition,
            m.partition(),
            "record {n} read where produced"
        );
        assert_eq!(landed[n].offset, m.offset(), "record {n} offset");
        let p = *key_partition.entry(key.clone()).or_insert(m.partition());
        assert_eq!(p, m.partition(), "key {key} stays on one partition");
        assert!(seen.insert(n), "record {n} read twice");
    }
    assert_eq!(seen.len(), N);

    // A group that never committed has no offsets; reading them does not create any.
    let group = kafka::unique("it-broker-group");
    let committed = kafka::committed_offsets(&bootstrap, &group, &topic, 0..3).await;
    assert_eq!(committed, BTreeMap::from([(0, None), (1, None), (2, None)]));
}

#[tokio::test]
async fn unique_names_differ() {
    let a = kafka::unique("t");
    let b = kafka::unique("t");
    assert_ne!(a, b);
    assert!(a.starts_with("t-"));
    assert_eq!(kafka::unique("a b/c").split('-').next(), Some("a"));
}

#[tokio::test]
async fn wait_until_returns_once_condition_holds() {
    let start = std::time::Instant::now();
    let mut calls = 0;
    kafka::wait_until(Duration::from_secs(5), "third call", || {
        calls += 1;
        calls >= 3
    })
    .await;
    assert_eq!(calls, 3);
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
#[should_panic(expected = "timed out after")]
async fn wait_until_panics_with_what_on_timeout() {
    kafka::wait_until(Duration::from_millis(200), "never", || false).await;
}

#[tokio::test]
async fn produce_ten_thousand_records() {
    let bootstrap = kafka::bootstrap().await;
    let topic = kafka::unique("it-broker-bulk");
    kafka::create_topic(&bootstrap, &topic, 3).await;

    const N: usize = 10_000;
    let start = std::time::Instant::now();
    let landed = kafka::produce(
        &bootstrap,
        &topic,
        (0..N).map(|i| Rec::new(format!("v{i}")).key(format!("k{i}"))),
    )
    .await;
    let took = start.elapsed();
    assert_eq!(landed.len(), N);
    let hw = kafka::high_watermarks(&bootstrap, &topic).await;
    assert_eq!(hw.values().sum::<i64>() as usize, N);
    assert!(hw.values().all(|&h| h > 0), "keys spread over partitions");
    eprintln!("produced {N} records in {took:?}");
}
