//! Decode + select + map, ns per record, over realistic default-shape events
//! (`cargo bench --bench map`). The events are those the harness's `bench` preloads.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use elevate_sink::config::MappingConfig;
use elevate_sink::map_record;
use elevate_sink::{build, endpoint};
use testkit::events;

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
    let (values, notes) = sample(1024);
    let mut g = c.benchmark_group("map");
    g.throughput(Throughput::Elements(values.len() as u64));
    g.bench_function("decode_select_map_1024_records", |b| {
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
    let ep = endpoint(&"http://127.0.0.1:8080".parse().expect("URL"));
    g.bench_function("decode_select_map_request_1024_records", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for v in &values {
                if let Ok(m) = map_record(&mapping, Some(black_box(v))) {
                    for n in &m.notifications {
                        bytes += build(&ep, n, true).url.len();
                    }
                }
            }
            bytes
        })
    });
    g.finish();
}

criterion_group!(benches, map);
criterion_main!(benches);
