//! The replay window, pure: parsing `--from`/`--to`, turning them into per-partition offsets
//! from watermarks and offsets-for-times answers, applying a checkpoint, naming the checkpoint
//! group. No I/O; the Kafka look-ups happen in the caller and arrive here as plain numbers.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, UNIX_EPOCH};

use crate::offsetmap::{to_fingerprint, ReplayWindow};

/// One end of the window as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The low watermark (oldest record still retained).
    Earliest,
    /// The high watermark when the replay starts (fixed then; later records are not chased).
    Now,
    /// This offset, in every selected partition (clamped to what is retained).
    Offset(i64),
    /// The first record whose Kafka timestamp is at or after this instant (epoch ms).
    Time(i64),
}

impl FromStr for Bound {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("earliest") {
            return Ok(Bound::Earliest);
        }
        if t.eq_ignore_ascii_case("now") {
            return Ok(Bound::Now);
        }
        if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
            return t
                .parse()
                .map(Bound::Offset)
                .map_err(|e| format!("offset {t:?}: {e}"));
        }
        parse_rfc3339_ms(t)
            .map(Bound::Time)
            .map_err(|e| format!("{t:?} is not an offset, an RFC 3339 timestamp, `earliest` or `now`: {e}"))
    }
}

impl fmt::Display for Bound {
    /// The canonical form (timestamps in UTC with milliseconds), used in the checkpoint name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Earliest => f.write_str("earliest"),
            Bound::Now => f.write_str("now"),
            Bound::Offset(o) => write!(f, "{o}"),
            Bound::Time(ms) => f.write_str(&format_ms(*ms)),
        }
    }
}

/// An epoch-milliseconds instant as RFC 3339 UTC with milliseconds.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 timestamp with a `Z` or `±HH:MM` zone into epoch milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, String> {
    let b = s.as_bytes();
    let (local, offset_min) = if let Some(rest) = s.strip_suffix(['Z', 'z']) {
        (rest, 0i64)
    } else if b.len() > 6 && matches!(b[b.len() - 6], b'+' | b'-') && b[b.len() - 3] == b':' {
        let zone = &s[s.len() - 6..];
        let hh: i64 = zone[1..3].parse().map_err(|_| format!("bad zone {zone:?}"))?;
        let mm: i64 = zone[4..6].parse().map_err(|_| format!("bad zone {zone:?}"))?;
        if hh > 23 || mm > 59 {
            return Err(format!("bad zone {zone:?}"));
        }
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        (&s[..s.len() - 6], sign * (hh * 60 + mm))
    } else {
        return Err("a timestamp needs a zone: `Z` or `±HH:MM` (e.g. 2026-03-01T10:00:00Z)".into());
    };
    let utc = humantime::parse_rfc3339(&format!("{local}Z")).map_err(|e| e.to_string())?;
    let ms = utc
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "timestamps before 1970 are not supported".to_string())?
        .as_millis() as i64;
    Ok(ms - offset_min * 60_000)
}

/// What the broker told us about one partition, as the resolution needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marks {
    /// Low watermark (oldest retained offset).
    pub low: i64,
    /// High watermark at start (next offset to be written).
    pub high: i64,
    /// offsets-for-times answer for `--from` when it is a timestamp (None: no record at or after).
    pub from_time: Option<i64>,
    /// offsets-for-times answer for `--to` when it is a timestamp (None: no record at or after).
    pub to_time: Option<i64>,
}

/// Where one partition's replay starts and ends: offsets `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionWindow {
    /// Partition id.
    pub partition: i32,
    /// The window's first offset as resolved from `--from` (before any checkpoint).
    pub first: i64,
    /// Where reading starts: `first`, or the checkpoint when resuming.
    pub start: i64,
    /// One past the last offset of the window (exclusive), fixed when the replay started.
    pub end: i64,
    /// The checkpoint this run resumed from, if any.
    pub resumed_from: Option<i64>,
}

impl PartitionWindow {
    /// Records (offsets) this run has to go through.
    pub fn len(&self) -> u64 {
        (self.end - self.start).max(0) as u64
    }

    /// True when there is nothing left to read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn resolve(bound: Bound, m: &Marks, by_time: Option<i64>) -> i64 {
    let o = match bound {
        Bound::Earliest => m.low,
        Bound::Now => m.high,
        Bound::Offset(o) => o,
        Bound::Time(_) => by_time.unwrap_or(m.high),
    };
    o.clamp(m.low, m.high)
}

/// Resolves `[from, to)` for one partition; an inverted window becomes empty.
pub fn resolve_window(partition: i32, from: Bound, to: Bound, m: &Marks) -> PartitionWindow {
    let start = resolve(from, m, m.from_time);
    let end = resolve(to, m, m.to_time).max(start);
    PartitionWindow {
        partition,
        first: start,
        start,
        end,
        resumed_from: None,
    }
}

/// Checks the bounds make a window at all (same kind, from before to).
pub fn check_bounds(from: Bound, to: Bound) -> Result<(), String> {
    match (from, to) {
        (Bound::Offset(a), Bound::Offset(b)) if a > b => {
            Err(format!("--from offset {a} is after --to offset {b}"))
        }
        (Bound::Time(a), Bound::Time(b)) if a > b => {
            Err(format!("--from {} is after --to {}", format_ms(a), format_ms(b)))
        }
        (Bound::Now, Bound::Earliest) => Err("--from now --to earliest is an empty window".into()),
        _ => Ok(()),
    }
}

/// The window committed with each checkpoint (in the commit metadata, beside the done map, see
/// [`crate::offsetmap`]): as the first start resolved it (`first`, `end`), with a fingerprint of
/// the canonical `--to` it was resolved from.
pub fn checkpoint_window(w: &PartitionWindow, to: Bound) -> ReplayWindow {
    ReplayWindow {
        first: w.first,
        end: w.end,
        to: Some(to_fingerprint(&to.to_string())),
    }
}

/// The end recorded with a checkpoint for a replay up to `to`: None when there is none or it
/// names another `--to` (a `--checkpoint-group` reused for another window). A window recorded
/// without its `--to` (before the field existed) counts as matching.
fn recorded_end(recorded: Option<ReplayWindow>, to: Bound) -> Option<i64> {
    let r = recorded?;
    r.to.is_none_or(|f| f == to_fingerprint(&to.to_string()))
        .then_some(r.end)
}

/// What applying a checkpoint did to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointUse {
    /// No checkpoint for this partition.
    None,
    /// Resumed from the checkpoint.
    Resumed,
    /// A checkpoint outside the window was ignored (the window starts over).
    Ignored(i64),
}

/// Applies the checkpoint group's committed position (and the window recorded with it) to a
/// window.
///
/// The end recorded by the first start is kept, whatever form `--to` has (`now`, a timestamp
/// with no record at or after it, an offset past the high watermark: all resolve against the
/// high watermark of the moment), so a restart does not chase records produced since (the live
/// service handles those). A committed position within `[first, end]` becomes the start; one
/// outside is ignored.
pub fn apply_checkpoint(
    w: &mut PartitionWindow,
    committed: Option<i64>,
    recorded: Option<ReplayWindow>,
    to: Bound,
) -> CheckpointUse {
    let Some(c) = committed else {
        return CheckpointUse::None;
    };
    if let Some(e) = recorded_end(recorded, to) {
        if e >= w.first {
            w.end = w.end.min(e);
        }
    }
    if c >= w.first && c <= w.end {
        w.start = c;
        w.resumed_from = Some(c);
        CheckpointUse::Resumed
    } else {
        CheckpointUse::Ignored(c)
    }
}

/// Whether a record's Kafka timestamp lies inside the timestamp bounds of the window (bounds
/// given as offsets or watermarks do not filter). Makes a timestamp window exact even when
/// producers' CreateTime is out of order inside the resolved offset range.
pub fn in_time_window(from: Bound, to: Bound, ts_ms: Option<i64>) -> bool {
    let Some(ts) = ts_ms else {
        return true;
    };
    if let Bound::Time(f) = from {
        if ts < f {
            return false;
        }
    }
    if let Bound::Time(t) = to {
        if ts >= t {
            return false;
        }
    }
    true
}

/// FNV-1a, 64 bit: a hash that is stable across Rust versions and platforms.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The default checkpoint group: `{group_id}.replay.{8 hex digits}` over topic, partitions
/// (sorted, or `*` for all), and the canonical from/to. The same arguments give the same group.
pub fn checkpoint_group(group_id: &str, topic: &str, partitions: &[i32], from: Bound, to: Bound) -> String {
    let mut ps = partitions.to_vec();
    ps.sort_unstable();
    ps.dedup();
    let parts = if ps.is_empty() {
        "*".to_string()
    } else {
        ps.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
    };
    let key = format!("{topic}\0{parts}\0{from}\0{to}");
    format!("{group_id}.replay.{:08x}", fnv1a(key.as_bytes()) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_parse() {
        assert_eq!("earliest".parse::<Bound>(), Ok(Bound::Earliest));
        assert_eq!("NOW".parse::<Bound>(), Ok(Bound::Now));
        assert_eq!("42".parse::<Bound>(), Ok(Bound::Offset(42)));
        let z = "2026-03-01T10:00:00Z".parse::<Bound>().unwrap();
        let plus = "2026-03-01T12:00:00+02:00".parse::<Bound>().unwrap();
        let minus = "2026-03-01T09:30:00.000-00:30".parse::<Bound>().unwrap();
        assert_eq!(z, plus);
        assert_eq!(z, minus);
        assert_eq!(z.to_string(), "2026-03-01T10:00:00.000Z");
        assert!("2026-03-01T10:00:00".parse::<Bound>().is_err(), "zone required");
        assert!("yesterday".parse::<Bound>().is_err());
        assert!("-5".parse::<Bound>().is_err());
    }

    fn marks(low: i64, high: i64) -> Marks {
        Marks {
            low,
            high,
            from_time: None,
            to_time: None,
        }
    }

    #[test]
    fn windows_resolve_and_clamp() {
        let m = marks(10, 100);
        let w = resolve_window(0, Bound::Earliest, Bound::Now, &m);
        assert_eq!((w.start, w.end), (10, 100));
        let w = resolve_window(0, Bound::Offset(5), Bound::Offset(500), &m);
        assert_eq!((w.start, w.end), (10, 100));
        let m2 = Marks {
            from_time: Some(40),
            to_time: None,
            ..m
        };
        let w = resolve_window(0, Bound::Time(1), Bound::Time(2), &m2);
        assert_eq!(
            (w.start, w.end),
            (40, 100),
            "no record after --to: the high watermark"
        );
        let w = resolve_window(0, Bound::Now, Bound::Offset(20), &m);
        assert_eq!((w.start, w.end, w.len()), (100, 100, 0), "inverted: empty");
        assert!(check_bounds(Bound::Offset(3), Bound::Offset(2)).is_err());
        assert!(check_bounds(Bound::Time(3), Bound::Time(3)).is_ok());
    }

    #[test]
    fn checkpoint_resumes_and_keeps_the_first_end() {
        let mut w = resolve_window(1, Bound::Earliest, Bound::Now, &marks(0, 80));
        let meta = Some(checkpoint_window(&PartitionWindow { end: 50, ..w }, Bound::Now));
        assert_eq!(meta.map(|m| m.end), Some(50));
        assert_eq!(
            apply_checkpoint(&mut w, Some(30), meta, Bound::Now),
            CheckpointUse::Resumed
        );
        assert_eq!((w.first, w.start, w.end, w.resumed_from), (0, 30, 50, Some(30)));
        let mut w = resolve_window(1, Bound::Offset(10), Bound::Offset(20), &marks(0, 80));
        assert_eq!(
            apply_checkpoint(&mut w, Some(5), None, Bound::Offset(20)),
            CheckpointUse::Ignored(5)
        );
        assert_eq!((w.start, w.end), (10, 20));
        assert_eq!(
            apply_checkpoint(&mut w, Some(20), None, Bound::Offset(20)),
            CheckpointUse::Resumed
        );
        assert!(w.is_empty());
        assert_eq!(
            apply_checkpoint(&mut w, None, None, Bound::Now),
            CheckpointUse::None
        );
    }

    /// Issue 11 item 9: the end resolved at the first start is kept on resume for every form
    /// of `--to`, also when it was the high watermark because nothing was at or after it.
    #[test]
    fn every_form_of_to_keeps_its_first_end_on_resume() {
        let t = 1_796_032_800_000; // --to's instant
                                   // First start: 50 records, none at or after `t` (and none at offset 500).
        let at_start = marks(0, 50);
        // Restart: 30 more records arrived, stamped before `t` (late events); still none at
        // or after it, so offsets-for-times answers "none" again.
        let at_restart = marks(0, 80);
        for to in [Bound::Time(t), Bound::Offset(500), Bound::Now] {
            let first = resolve_window(0, Bound::Earliest, to, &at_start);
            assert_eq!(first.end, 50, "{to}");
            let meta = Some(checkpoint_window(&first, to));
            let mut w = resolve_window(0, Bound::Earliest, to, &at_restart);
            assert_eq!(
                apply_checkpoint(&mut w, Some(20), meta, to),
                CheckpointUse::Resumed,
                "{to}"
            );
            assert_eq!(
                (w.start, w.end),
                (20, 50),
                "--to {to}: the end must not move on resume"
            );
        }
    }

    /// A checkpoint group reused for another `--to` does not impose its end; one recorded
    /// before `--to` was kept (the legacy metadata without `to=`) does.
    #[test]
    fn a_recorded_end_applies_only_to_the_same_to() {
        let first = resolve_window(0, Bound::Earliest, Bound::Offset(30), &marks(0, 80));
        let meta = Some(checkpoint_window(&first, Bound::Offset(30)));
        let mut w = resolve_window(0, Bound::Earliest, Bound::Offset(60), &marks(0, 80));
        apply_checkpoint(&mut w, Some(20), meta, Bound::Offset(60));
        assert_eq!((w.start, w.end), (20, 60), "another --to: its own end");
        let legacy = crate::offsetmap::decode("elevate-sink-replay first=0 end=30", 20).window;
        let mut w = resolve_window(0, Bound::Earliest, Bound::Offset(60), &marks(0, 80));
        apply_checkpoint(&mut w, Some(20), legacy, Bound::Offset(60));
        assert_eq!((w.start, w.end), (20, 30), "no --to recorded: the recorded end");
        let with_to = crate::offsetmap::decode("elevate-sink-replay first=0 end=30 to=60", 20).window;
        let mut w = resolve_window(0, Bound::Earliest, Bound::Offset(60), &marks(0, 80));
        apply_checkpoint(&mut w, Some(20), with_to, Bound::Offset(60));
        assert_eq!((w.start, w.end), (20, 30), "a legacy checkpoint of the same --to");
    }

    #[test]
    fn time_filter_only_for_time_bounds() {
        assert!(in_time_window(Bound::Earliest, Bound::Now, Some(1)));
        assert!(!in_time_window(Bound::Time(10), Bound::Now, Some(9)));
        assert!(in_time_window(Bound::Time(10), Bound::Time(20), Some(10)));
        assert!(!in_time_window(Bound::Time(10), Bound::Time(20), Some(20)));
        assert!(in_time_window(Bound::Time(10), Bound::Time(20), None));
    }

    #[test]
    fn checkpoint_group_is_stable_and_argument_specific() {
        let a = checkpoint_group("g", "t", &[2, 0, 1], Bound::Earliest, Bound::Now);
        let b = checkpoint_group("g", "t", &[0, 1, 2, 2], Bound::Earliest, Bound::Now);
        let c = checkpoint_group("g", "t", &[], Bound::Earliest, Bound::Now);
        let d = checkpoint_group("g", "t", &[], Bound::Offset(0), Bound::Now);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(c, d);
        assert!(
            a.starts_with("g.replay.") && a.len() == "g.replay.".len() + 8,
            "{a}"
        );
    }
}
