//! What a replay tells its operator: a progress bar on a terminal (a log line every ~5 s
//! otherwise) and the end-of-run summary with the age distribution of what was sent. The
//! summary is plain text; counts are this process's only (a resumed run reports its own part).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::window::PartitionWindow;
use crate::ages::Ages;
use crate::deadletter::ParkCause;
use crate::metrics::{LabelValue, Metrics};
use crate::select::SkipReason;

/// Elevate ends a session after at most an hour without notifications.
pub const SESSION_WINDOW: Duration = Duration::from_secs(3600);

/// How often the non-terminal progress line is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Progress over the records of the window.
pub struct Progress {
    /// The bar, when stderr is a terminal.
    bar: Option<ProgressBar>,
    /// Records to go through in this run.
    total: u64,
    /// When the run started.
    started: Instant,
    /// When the last progress line was logged.
    last_log: Instant,
    /// Records done at the last update.
    done: u64,
    /// When `update` last ran.
    last_update: Instant,
}

impl Progress {
    /// A bar on a terminal, log lines otherwise.
    pub fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(
                "replay {bar:40.cyan/blue} {pos}/{len} records  {msg}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()).with_style(style)
        });
        let now = Instant::now();
        Progress {
            bar,
            total,
            started: now,
            last_log: now,
            done: 0,
            last_update: now,
        }
    }

    /// Whether an update would show anything new (at most ten a second).
    pub fn due(&self) -> bool {
        self.last_update.elapsed() >= Duration::from_millis(100)
    }

    /// Records `done` of `total` are finished; draws or logs when due.
    pub fn update(&mut self, done: u64, in_flight: usize) {
        self.done = done.min(self.total);
        self.last_update = Instant::now();
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / elapsed;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
            bar.set_message(format!("{rate:.0}/s  {in_flight} in flight"));
            return;
        }
        if self.last_log.elapsed() >= LOG_EVERY {
            self.last_log = Instant::now();
            let left = self.total - self.done;
            let eta = if rate > 0.0 {
                humantime::format_duration(Duration::from_secs((left as f64 / rate).ceil() as u64))
                    .to_string()
            } else {
                "unknown".into()
            };
            tracing::info!(
                done = self.done,
                total = self.total,
                percent = format!("{:.1}", 100.0 * self.done as f64 / self.total.max(1) as f64),
                rate = format!("{rate:.1}/s"),
                eta = %eta,
                in_flight,
                "replay progress"
            );
        }
    }

    /// Clears the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn age(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", age(-ms));
    }
    humantime::format_duration(Duration::from_secs((ms as u64) / 1000)).to_string()
}

/// Everything the end-of-run summary reports.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Topic replayed.
    pub topic: String,
    /// Checkpoint group (None in a dry run, which commits nothing).
    pub checkpoint_group: Option<String>,
    /// Whether nothing was sent or committed.
    pub dry_run: bool,
    /// Whether the run was interrupted before the end of the window.
    pub interrupted: bool,
    /// The windows, per partition.
    pub windows: Vec<PartitionWindow>,
    /// Position reached per partition (committed, or read in a dry run).
    pub reached: BTreeMap<i32, i64>,
    /// Records read.
    pub records: u64,
    /// Notifications delivered (204), or printed in a dry run.
    pub sent: u64,
    /// Skipped lines or records, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Dead-lettered lines or records, by reason.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Ages of sent notifications' events at send time (a bounded histogram).
    pub ages: Ages,
    /// Wall time of the run.
    pub duration: Duration,
}

/// Counts keyed by their label values, as the summary prints them.
fn by_name<R: LabelValue>(counts: BTreeMap<R, u64>) -> BTreeMap<String, u64> {
    counts
        .into_iter()
        .map(|(r, n)| (r.as_str().to_string(), n))
        .collect()
}

impl Summary {
    /// Takes what was sent, skipped and parked from this process's counters.
    pub fn count(&mut self, metrics: &Metrics) {
        self.sent = metrics.delivered();
        self.skipped = by_name(metrics.skipped_by::<SkipReason>());
        self.dead_lettered = by_name(metrics.dead_lettered_by::<ParkCause>());
    }

    /// Whether the median age of sent events exceeds Elevate's session window.
    pub fn late(&self) -> bool {
        self.ages
            .stats()
            .is_some_and(|a| a.p50 > SESSION_WINDOW.as_millis() as i64)
    }

    /// The human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let head = match (self.dry_run, self.interrupted) {
            (true, false) => "replay dry run",
            (true, true) => "replay dry run STOPPED EARLY (interrupted, or stdout closed)",
            (false, true) => "replay INTERRUPTED (run again with the same arguments to resume)",
            (false, false) => "replay complete",
        };
        let _ = writeln!(s, "{head}: topic {}", self.topic);
        if let Some(g) = &self.checkpoint_group {
            let _ = writeln!(s, "  checkpoint group  {g}");
        }
        let _ = writeln!(
            s,
            "  duration          {}",
            humantime::format_duration(Duration::from_millis(self.duration.as_millis() as u64))
        );
        let _ = writeln!(
            s,
            "  partition      first      start        end    reached  resumed"
        );
        for w in &self.windows {
            let reached = self.reached.get(&w.partition).copied().unwrap_or(w.start);
            let resumed = w.resumed_from.map_or("-".to_string(), |c| c.to_string());
            let _ = writeln!(
                s,
                "  {:>9} {:>10} {:>10} {:>10} {:>10}  {resumed}",
                w.partition, w.first, w.start, w.end, reached
            );
        }
        let verb = if self.dry_run { "would send" } else { "sent" };
        let _ = writeln!(s, "  records read      {}", self.records);
        let _ = writeln!(s, "  {verb:<17} {}", self.sent);
        let list = |m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                "0".to_string()
            } else {
                let total: u64 = m.values().sum();
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("{total} ({})", parts.join(", "))
            }
        };
        let _ = writeln!(s, "  skipped           {}", list(&self.skipped));
        let dl = if self.dry_run {
            "would dead-letter"
        } else {
            "dead-lettered"
        };
        let _ = writeln!(s, "  {dl:<17} {}", list(&self.dead_lettered));
        match self.ages.stats() {
            Some(a) => {
                let _ = writeln!(
                    s,
                    "  event age         min {}  median {}  p90 {}  p99 {}  max {}",
                    age(a.min),
                    age(a.p50),
                    age(a.p90),
                    age(a.p99),
                    age(a.max)
                );
                if self.late() {
                    let _ = writeln!(
                        s,
                        "  WARNING: the median event is older than Elevate's session window (1h): \
                         these notifications are attributed late (their sessions have ended); \
                         consider --max-age"
                    );
                }
            }
            None => {
                let _ = writeln!(s, "  event age         - (nothing {verb})");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_the_counters() {
        let m = Metrics::new();
        let reason = |r: &str| crate::metrics::label("reason", r);
        m.skipped.get_or_create(&reason("no_ticket")).inc_by(2);
        m.skipped.get_or_create(&reason("too_old")).inc_by(3);
        m.notifications
            .get_or_create(&vec![("outcome", "delivered".into()), ("status", "204".into())])
            .inc_by(7);
        m.notifications
            .get_or_create(&vec![
                ("outcome", "dead_lettered".into()),
                ("status", "400".into()),
            ])
            .inc();
        m.dead_lettered.get_or_create(&reason("rejected")).inc();
        let mut s = Summary::default();
        s.count(&m);
        assert_eq!(s.skipped.get("too_old"), Some(&3));
        assert_eq!(s.skipped.get("no_ticket"), Some(&2));
        assert_eq!(s.sent, 7);
        assert_eq!(s.dead_lettered.get("rejected"), Some(&1));
        assert_eq!(s.dead_lettered.len(), 1);
    }

    #[test]
    fn ages_and_late_warning() {
        let mut s = Summary {
            ages: [1_000, 2 * 3_600_000, 3 * 3_600_000].into_iter().collect(),
            ..Summary::default()
        };
        assert!(s.late());
        assert!(s.render().contains("WARNING"));
        s.ages = [60_000].into_iter().collect();
        assert!(!s.late());
        assert!(s.render().contains("median 1m"), "{}", s.render());
    }
}
