//! Decode + select + map, and the request, per record, over realistic default-shape events
//! (`cargo bench --bench map`). The events are those the harness's `bench` preloads.
//! `routes_*` is what `run` does for each record (the parse keeps only what the mapping reads,
//! `decode/prune.rs`); `whole_parse_*` parses every record whole, as `map_record` does;
//! `wire_request_only_*` builds the requests of the same records' notifications, mapped beforehand.
//! The allocator is the binary's (jemalloc, `src/main.rs`): allocation is a large part of this
//! path, and the figures should be the service's.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use elevate_sink::config::{Config, MappingConfig};
use elevate_sink::{endpoint, map_record, wire_request, Endpoint, Forwarding, Routes};
use testkit::events;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn sample(n: u64) -> (Vec<Vec<u8>>, u64) {
    let mut gen = events::Events::new(42);
    let mut notes = 0;
    let values = (0..n)
        .map(|i| {
            let g = gen.event(i, "2026-11-20T10:15:30.123Z");
            notes += u64::from(g.notifications);
            g.value
        })
        .collect();
    (values, notes)
}

fn map(c: &mut Criterion) {
    let mapping = MappingConfig::default();
    let cfg = Config::default();
    let topic = cfg.kafka.topics[0].clone();
    let routes = Routes::from_config(&cfg).expect("the default routes");
    let (values, notes) = sample(1024);
    let mut g = c.benchmark_group("map");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("whole_parse_decode_select_map_1024_records", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for v in &values {
                if let Ok(m) = map_record(&mapping, Some(black_box(v))) {
                    n += m.notifications.len();
                }
            }
            assert_eq!(n as u64, notes);
            n
        })
    });
    g.bench_function("routes_decode_select_map_1024_records", |b| {
        b.iter(|| {
            let mut n = 0usize;
            for v in &values {
                if let Ok(m) = routes.map(&topic, Some(black_box(v))) {
                    n += m.notifications.len();
                }
            }
            assert_eq!(n as u64, notes);
            n
        })
    });
    let ep = Endpoint::new(endpoint(&"http://127.0.0.1:8080".parse().expect("URL")));
    let forward = Forwarding::from(true);
    g.bench_function("routes_map_wire_request_1024_records", |b| {
        b.iter(|| {
            let mut sent = 0usize;
            for v in &values {
                if let Ok(m) = routes.map(&topic, Some(black_box(v))) {
                    for n in &m.notifications {
                        let req = wire_request(&ep, n, forward, None).expect("a request");
                        sent += req.headers().len();
                    }
                }
            }
            sent
        })
    });
    // The request building alone: the same notifications, mapped once outside the loop.
    let mapped: Vec<_> = values
        .iter()
        .filter_map(|v| routes.map(&topic, Some(v)).ok())
        .flat_map(|m| m.notifications)
        .collect();
    assert_eq!(mapped.len() as u64, notes);
    g.bench_function("wire_request_only_1024_records", |b| {
        b.iter(|| {
            let mut sent = 0usize;
            for n in &mapped {
                let req = wire_request(&ep, black_box(n), forward, None).expect("a request");
                sent += req.headers().len();
            }
            sent
        })
    });
    g.finish();
}

criterion_group!(benches, map);
criterion_main!(benches);
