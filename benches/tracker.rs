//! The offset tracker and the ledger, ns per record (`cargo bench --bench tracker`): track,
//! complete (in order and shuffled within a window like concurrent sends), committable.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use elevate_sink::ledger::{Claim, Ledger};
use elevate_sink::tracker::OffsetTracker;
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
            let mut generations = [0u64; 4];
            let mut commits = 0usize;
            for chunk in order.chunks(32) {
                let base = chunk.iter().min().copied().unwrap_or(0);
                for o in base..base + chunk.len() as i64 {
                    let p = (o % 4) as usize;
                    generations[p] = l.track(&keys[p], o, 1).expect("owned");
                }
                for &o in chunk {
                    let p = (o % 4) as usize;
                    l.complete(&Claim {
                        key: keys[p].clone(),
                        generation: generations[p],
                        offset: o,
                    });
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

criterion_group!(benches, tracker, ledger);
criterion_main!(benches);
