//! The offset tracker and the ledger, ns per record (`cargo bench --bench tracker`): track,
//! complete (in order and shuffled within a window like concurrent sends), committable; tracking
//! on a seeded partition; and the cost of one commit's done maps (export + encode).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use elevate_sink::offsetmap::{self, DoneMap, MAX_METADATA_BYTES};
use elevate_sink::OffsetTracker;
use elevate_sink::{Claim, Ledger};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

const RECORDS: i64 = 10_000;

/// Completion order: offsets tracked in order, completed shuffled within windows of `window`
/// (like `window` sends in flight finishing in any order).
fn completion_order(window: usize) -> Vec<i64> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut order: Vec<i64> = (0..RECORDS).collect();
    if window > 1 {
        for chunk in order.chunks_mut(window) {
            chunk.shuffle(&mut rng);
        }
    }
    order
}

fn tracker(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(RECORDS as u64));
    for window in [1usize, 32, 1000] {
        let order = completion_order(window);
        g.bench_with_input(
            BenchmarkId::new("track_complete_committable", window),
            &order,
            |b, order| {
                b.iter(|| {
                    let mut t = OffsetTracker::new();
                    let mut sum = 0i64;
                    for chunk in order.chunks(window) {
                        let base = chunk.iter().min().copied().unwrap_or(0);
                        for o in base..base + chunk.len() as i64 {
                            t.track(o, 1).expect("in order");
                        }
                        for &o in chunk {
                            t.complete(o).expect("pending");
                            sum += t.committable().unwrap_or(0);
                        }
                    }
                    black_box(sum)
                })
            },
        );
    }
    g.finish();
}

fn ledger(c: &mut Criterion) {
    let mut g = c.benchmark_group("ledger");
    g.throughput(Throughput::Elements(RECORDS as u64));
    let order = completion_order(32);
    g.bench_function("4_partitions_track_complete_to_commit_every_1000", |b| {
        b.iter(|| {
            let mut l: Ledger<(String, i32)> = Ledger::new();
            let keys: Vec<(String, i32)> = (0..4).map(|p| ("cart-events".to_string(), p)).collect();
            for k in &keys {
                l.assign(k.clone());
            }
            let mut claims = Vec::with_capacity(32);
            let mut commits = 0usize;
            for chunk in order.chunks(32) {
                let base = chunk.iter().min().copied().unwrap_or(0);
                claims.clear();
                for o in base..base + chunk.len() as i64 {
                    let p = (o % 4) as usize;
                    claims.push(l.claim(&keys[p], o, 1).expect("owned"));
                }
                for &o in chunk {
                    l.complete(&claims[(o - base) as usize]);
                    if o % 1000 == 0 {
                        commits += l.to_commit().len();
                    }
                }
            }
            black_box(commits)
        })
    });
    g.finish();
}

/// Records of a partition taken over with every other offset already delivered.
fn seeded(c: &mut Criterion) {
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(RECORDS as u64));
    let seed = DoneMap::from_offsets(0, (1..RECORDS).filter(|o| o % 2 == 1));
    g.bench_function("track_complete_committable_seeded_half", |b| {
        b.iter(|| {
            let mut t = OffsetTracker::new();
            t.seed(&seed).expect("fresh");
            let mut sum = 0i64;
            for o in 0..RECORDS {
                if t.track(o, 1).expect("in order") == elevate_sink::Tracked::Fresh {
                    t.complete(o).expect("pending");
                }
                sum += t.committable().unwrap_or(0);
            }
            black_box(sum)
        })
    });
    g.finish();
}

/// One commit of 6 partitions with `pipeline.max_in_flight_records` (1000) records each in
/// flight, a third of them still pending at random: `commit_points` + `encode` per partition.
fn commit_maps(c: &mut Criterion) {
    let mut g = c.benchmark_group("offsetmap");
    g.throughput(Throughput::Elements(6));
    let mut rng = StdRng::seed_from_u64(11);
    let mut l: Ledger<i32> = Ledger::new();
    for p in 0..6 {
        l.assign(p);
        let mut claims: Vec<Claim<i32>> = (0..1000).map(|o| l.claim(&p, o, 1).expect("owned")).collect();
        claims.shuffle(&mut rng);
        for claim in &claims[..666] {
            l.complete(claim);
        }
    }
    g.bench_function("6_partitions_1000_in_flight_commit_points_and_encode", |b| {
        b.iter(|| {
            let mut bytes = 0usize;
            for point in l.commit_points() {
                let e = offsetmap::encode(&point.done, None, MAX_METADATA_BYTES).expect("fits");
                bytes += e.text.len();
            }
            black_box(bytes)
        })
    });
    g.finish();
}

criterion_group!(benches, tracker, ledger, seeded, commit_maps);
criterion_main!(benches);
