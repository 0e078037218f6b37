//! Done-offset map: the offsets above a committed position that are done, in the Kafka commit
//! metadata so the partition's next owner skips them; one versioned text format for `run` (the
//! map) and `replay` (its window). Pure, property-tested. Guarantee: nothing decodes as done that
//! the encoder was not given as done — unusable metadata gives a typed [`NoMap`], an oversized map
//! is cut to a prefix. Limit: what a cut map or no map leaves out is sent again (at least once).
//!
//! Use: on commit, [`crate::ledger::Ledger::commit_points`] → [`encode`] each (budget
//! [`MAX_METADATA_BYTES`]) → commit → `acknowledge`; on assignment, [`decode`] the metadata read
//! back with the committed offset → [`crate::ledger::Ledger::seed`] → `track_record` says
//! `AlreadyDelivered` for the offsets to skip.
//!
//! # Wire format, version 1
//!
//! ASCII only (safe as a Kafka metadata string, whose limit `offset.metadata.max.bytes` counts
//! characters; 4096 by default, [`MAX_METADATA_BYTES`]):
//!
//! ```text
//! metadata = "elevate-sink/1" " base=" int [" first=" int " end=" int [" to=" hex8]] [map] " crc=" hex8
//! map      = " runs=" b64(runs) | " bits=" b64(bits)        ; absent when nothing is done
//! int      = "0" | ["-"] [1-9] [0-9]*                        ; an i64, canonical decimal
//! b64      = base64url without padding, canonical            ; alphabet A-Z a-z 0-9 - _
//! hex8     = 8 lowercase hex digits: CRC-32 (IEEE) of every byte before " crc="
//! runs     = (varint(not_done) varint(done))+  ; lengths of alternating runs, from `base`
//!                                              ; on; each >= 1; unsigned LEB128, shortest form
//! bits     = byte+  ; bit i (least significant first) of byte i/8: offset base+i is done;
//!                   ; bit 0 (base itself) is 0, the last byte is not 0
//! ```
//!
//! `base` is the committed position the map was written with (the next offset to read; never
//! done itself). "Done" means nothing left to send: offsets absent from the log between records
//! (compaction, transaction markers) count as done, as the committed position itself moves over
//! them. `first`/`end` are replay's window, `to` a fingerprint of the `--to` it was resolved from
//! ([`to_fingerprint`]). The encoder writes `runs` or `bits`,
//! whichever payload is fewer bytes (`runs` on a tie), and the decoder accepts only that choice,
//! so a string decodes to a map only if it is byte for byte what [`encode`] writes for that map.
//! Example: base 1000, done {1001, 1002, 1003, 1005, 1010..=1019}: `runs` = 1,3,1,1,4,10 (6
//! bytes), `bits` = 2e fc 0f (3 bytes), so:
//! `elevate-sink/1 base=1000 bits=LvwP crc=0f0a44db`.
//!
//! Replay's checkpoints from before this format (`elevate-sink-replay first=F end=E[ to=T]`)
//! still decode, for their window only ([`NoMap::Legacy`]). A later version gets a new number: this
//! version reads it as [`NoMap::Unsupported`] (no map: duplicates, never a wrong skip).
//!
//! # Size rule
//!
//! [`encode`] takes a byte budget. When the whole map does not fit, it keeps the longest prefix
//! of whole done ranges (lowest offsets first, the ones the next owner reads first) that fits,
//! and says how much it left out ([`Encoded::dropped_offsets`]) so the caller can count it. Only
//! when not even the map-less header fits does it fail ([`EncodeError::BudgetTooSmall`]).
//!
//! # Base mismatch
//!
//! A map is relative to the position committed with it. If the committed offset read back is not
//! the map's `base` (someone reset the group's offsets, or another tool wrote them), the map is
//! ignored ([`NoMap::BaseMismatch`]) rather than partly used: an operator who moved the position
//! back wants those records again. The replay window, which does not depend on the position, is
//! still returned.

use std::ops::Range;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// The broker's default `offset.metadata.max.bytes`.
pub const MAX_METADATA_BYTES: usize = 4096;
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

const PREFIX: &str = "elevate-sink/";
const LEGACY_REPLAY_PREFIX: &str = "elevate-sink-replay ";
const CRC_FIELD: &str = " crc=";
const RUNS_FIELD: &str = " runs=";
const BITS_FIELD: &str = " bits=";

/// Done offsets above a base (the committed position): sorted, disjoint, non-adjacent, non-empty
/// ranges, all above `base`. Only [`DoneMap::push`] adds to it, so the invariant always holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoneMap {
    base: i64,
    ranges: Vec<Range<i64>>,
}

impl DoneMap {
    /// A map with nothing done above `base`.
    pub fn empty(base: i64) -> Self {
        DoneMap {
            base,
            ranges: Vec::new(),
        }
    }

    /// A map of the given done offsets (any order; those at or below `base` are left out).
    pub fn from_offsets(base: i64, offsets: impl IntoIterator<Item = i64>) -> Self {
        let mut sorted: Vec<i64> = offsets.into_iter().collect();
        sorted.sort_unstable();
        let mut map = DoneMap::empty(base);
        for o in sorted {
            if o < i64::MAX {
                map.push(o..o + 1);
            }
        }
        map
    }

    /// Adds the offsets of `range` that lie above both `base` and everything already in the map
    /// (so pushing ranges in increasing order adds them all; the rest is ignored, never added).
    pub fn push(&mut self, range: Range<i64>) {
        let floor = match self.ranges.last() {
            Some(last) => last.end,
            None => self.base.saturating_add(1),
        };
        let start = range.start.max(floor);
        if start >= range.end {
            return;
        }
        match self.ranges.last_mut() {
            Some(last) if last.end == start => last.end = range.end,
            _ => self.ranges.push(start..range.end),
        }
    }

    /// The committed position this map is relative to (never done itself).
    pub fn base(&self) -> i64 {
        self.base
    }

    /// The done ranges, increasing.
    pub fn ranges(&self) -> &[Range<i64>] {
        &self.ranges
    }

    /// Whether `offset` is done.
    pub fn contains(&self, offset: i64) -> bool {
        let i = self.ranges.partition_point(|r| r.end <= offset);
        self.ranges.get(i).is_some_and(|r| r.start <= offset)
    }

    /// True when nothing is done above the base.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// How many offsets are done (saturating).
    pub fn offsets(&self) -> u64 {
        count(&self.ranges)
    }

    /// This map with every offset done in `other` added (those above this base): both say what
    /// is done, so together they still claim nothing that was not done.
    pub fn union(&self, other: &DoneMap) -> DoneMap {
        let mut all: Vec<Range<i64>> = self.ranges.iter().chain(&other.ranges).cloned().collect();
        all.sort_unstable_by_key(|r| r.start);
        let mut map = DoneMap::empty(self.base);
        for r in all {
            map.push(r);
        }
        map
    }

    /// Whether every offset done here is done in `other` too.
    pub fn is_subset_of(&self, other: &DoneMap) -> bool {
        self.ranges.iter().all(|r| {
            let i = other.ranges.partition_point(|o| o.end <= r.start);
            other
                .ranges
                .get(i)
                .is_some_and(|o| o.start <= r.start && r.end <= o.end)
        })
    }
}

fn count(ranges: &[Range<i64>]) -> u64 {
    ranges
        .iter()
        .fold(0u64, |n, r| n.saturating_add(r.end.abs_diff(r.start)))
}

/// Replay's window, kept in its checkpoint commits: `[first, end)` as fixed by the first run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The window's first offset as resolved from `--from`.
    pub first: i64,
    /// One past the window's last offset, fixed by the first run.
    pub end: i64,
    /// [`to_fingerprint`] of the canonical `--to` the end was resolved from (None: not recorded,
    /// as in checkpoints written before the field existed).
    pub to: Option<u32>,
}

/// The fingerprint of a canonical `--to` kept with replay's window (CRC-32 of its text): a
/// checkpoint group reused for another `--to` is told apart by it.
pub fn to_fingerprint(to: &str) -> u32 {
    crc32fast::hash(to.as_bytes())
}

/// How a map's payload is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Run lengths (`runs=`): small when done offsets come in long runs.
    Runs,
    /// One bit per offset (`bits=`): small when done and not-done offsets alternate densely.
    Bits,
}

/// One encoded commit metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The metadata (ASCII, at most the budget in bytes).
    pub text: String,
    /// The payload codec, None when no done offset was written.
    pub codec: Option<Codec>,
    /// Done offsets left out to fit the budget (0 when the whole map fits).
    pub dropped_offsets: u64,
}

impl Encoded {
    /// Whether the map was cut to fit the budget.
    pub fn truncated(&self) -> bool {
        self.dropped_offsets > 0
    }
}

/// Why nothing could be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// Even the header without a map is longer than the budget.
    #[error("commit metadata needs {needed} bytes without a done map, budget is {budget}")]
    BudgetTooSmall {
        /// Bytes the header alone takes.
        needed: usize,
        /// The budget given.
        budget: usize,
    },
}

/// Encodes `done` (its base is the position to be committed) and replay's `window` into commit
/// metadata of at most `budget` bytes, cutting the map to a prefix if need be (see the module
/// docs for the format and the size rule).
pub fn encode(done: &DoneMap, window: Option<ReplayWindow>, budget: usize) -> Result<Encoded, EncodeError> {
    let mut head = format!("{PREFIX}{VERSION} base={}", done.base);
    if let Some(w) = window {
        head.push_str(&format!(" first={} end={}", w.first, w.end));
        if let Some(to) = w.to {
            head.push_str(&format!(" to={to:08x}"));
        }
    }
    let fixed = head.len() + CRC_FIELD.len() + 8;
    if fixed > budget {
        return Err(EncodeError::BudgetTooSmall {
            needed: fixed,
            budget,
        });
    }
    let sizes = PrefixSizes::of(done);
    let fits = |k: usize| (fixed + RUNS_FIELD.len()).saturating_add(b64_len(sizes.best(k).1)) <= budget;
    // Sizes grow with the prefix, so the ranges that fit are a prefix: find its end.
    let kept = (1..=done.ranges.len()).take_while(|&k| fits(k)).count();
    let ranges = &done.ranges[..kept];
    let codec = (kept > 0).then(|| sizes.best(kept).0);
    match codec {
        Some(Codec::Runs) => {
            head.push_str(RUNS_FIELD);
            URL_SAFE_NO_PAD.encode_string(runs_payload(done.base, ranges), &mut head);
        }
        Some(Codec::Bits) => {
            head.push_str(BITS_FIELD);
            URL_SAFE_NO_PAD.encode_string(bits_payload(done.base, ranges), &mut head);
        }
        None => {}
    }
    let crc = crc32fast::hash(head.as_bytes());
    head.push_str(&format!("{CRC_FIELD}{crc:08x}"));
    debug_assert!(head.len() <= budget);
    Ok(Encoded {
        text: head,
        codec,
        dropped_offsets: count(&done.ranges[kept..]),
    })
}

/// Payload sizes of every prefix of a map's ranges, computed without building the payloads (a
/// bitset over a wide span would be huge; it is only built when it is the smaller one and fits).
struct PrefixSizes {
    /// runs[k]: bytes of the `runs` payload of the first k ranges.
    runs: Vec<u64>,
    /// bits_end[k - 1]: one past the last offset of range k-1, relative to the base.
    bits_end: Vec<u64>,
}

impl PrefixSizes {
    fn of(done: &DoneMap) -> Self {
        let mut runs = Vec::with_capacity(done.ranges.len() + 1);
        let mut bits_end = Vec::with_capacity(done.ranges.len());
        let (mut total, mut cursor) = (0u64, done.base);
        runs.push(0);
        for r in &done.ranges {
            total += varint_len(r.start.abs_diff(cursor)) + varint_len(r.end.abs_diff(r.start));
            runs.push(total);
            bits_end.push(r.end.abs_diff(done.base));
            cursor = r.end;
        }
        PrefixSizes { runs, bits_end }
    }

    /// The smaller codec for the first `k` (>= 1) ranges, and its payload size in bytes.
    fn best(&self, k: usize) -> (Codec, u64) {
        let runs = self.runs[k];
        let bits = self.bits_end[k - 1].div_ceil(8);
        if runs <= bits {
            (Codec::Runs, runs)
        } else {
            (Codec::Bits, bits)
        }
    }
}

/// Characters of unpadded base64 for `bytes` bytes (saturating: a huge payload never fits).
fn b64_len(bytes: u64) -> usize {
    usize::try_from(bytes.saturating_mul(4).div_ceil(3)).unwrap_or(usize::MAX)
}

fn varint_len(v: u64) -> u64 {
    u64::from((64 - v.leading_zeros()).max(1).div_ceil(7))
}

fn runs_payload(base: i64, ranges: &[Range<i64>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut cursor = base;
    for r in ranges {
        put_varint(&mut out, r.start.abs_diff(cursor));
        put_varint(&mut out, r.end.abs_diff(r.start));
        cursor = r.end;
    }
    out
}

fn bits_payload(base: i64, ranges: &[Range<i64>]) -> Vec<u8> {
    let len = ranges.last().map_or(0, |r| r.end.abs_diff(base).div_ceil(8));
    let mut out = vec![0u8; usize::try_from(len).unwrap_or(0)];
    for r in ranges {
        for i in r.start.abs_diff(base)..r.end.abs_diff(base) {
            out[(i / 8) as usize] |= 1 << (i % 8);
        }
    }
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads one shortest-form LEB128 varint; None when cut short, overlong or over 64 bits.
fn get_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        let low = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return None;
        }
        v |= low << (7 * i);
        if b & 0x80 == 0 {
            // Shortest form: a last byte of 0 is only allowed as the only byte.
            return (b != 0 || i == 0).then_some(v);
        }
    }
    None
}

/// Why commit metadata gave no usable done map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoMap {
    /// No metadata (nothing committed with one yet): normal, not worth a warning.
    #[error("no commit metadata")]
    Missing,
    /// Metadata not written by elevate-sink.
    #[error("commit metadata is not elevate-sink's")]
    Foreign,
    /// A replay checkpoint from before the done map (its window is still used).
    #[error("commit metadata is a replay checkpoint from before the done map")]
    Legacy,
    /// Our format, in a version this build does not read.
    #[error("commit metadata is format version {version}; this build reads version {VERSION}")]
    Unsupported {
        /// The version found.
        version: u32,
    },
    /// Our format and version, but not well formed; names the part that is wrong.
    #[error("commit metadata is malformed ({0})")]
    Malformed(&'static str),
    /// The checksum does not match (damaged or edited).
    #[error("commit metadata checksum does not match")]
    Checksum,
    /// Written for another committed position than the one read back.
    #[error("done map is relative to offset {base}, but the committed offset is {committed}")]
    BaseMismatch {
        /// The map's base.
        base: i64,
        /// The committed offset read back.
        committed: i64,
    },
}

impl NoMap {
    /// A short label for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            NoMap::Missing => "missing",
            NoMap::Foreign => "foreign",
            NoMap::Legacy => "legacy",
            NoMap::Unsupported { .. } => "unsupported_version",
            NoMap::Malformed(_) => "malformed",
            NoMap::Checksum => "checksum",
            NoMap::BaseMismatch { .. } => "base_mismatch",
        }
    }
}

/// What commit metadata says, as far as it can be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// Replay's window, if the metadata carries one (also when the map is unusable for its base).
    pub window: Option<ReplayWindow>,
    /// The done map (relative to the committed offset), or why there is none.
    pub done: Result<DoneMap, NoMap>,
}

impl Decoded {
    fn none(why: NoMap) -> Self {
        Decoded {
            window: None,
            done: Err(why),
        }
    }
}

/// Decodes commit metadata read back with the `committed` offset. Never panics; anything it
/// cannot trust gives no map (see the module docs).
pub fn decode(meta: &str, committed: i64) -> Decoded {
    if meta.is_empty() {
        return Decoded::none(NoMap::Missing);
    }
    if let Some(rest) = meta.strip_prefix(LEGACY_REPLAY_PREFIX) {
        return match legacy_window(rest) {
            Some(w) => Decoded {
                window: Some(w),
                done: Err(NoMap::Legacy),
            },
            None => Decoded::none(NoMap::Malformed("legacy replay checkpoint")),
        };
    }
    let Some(rest) = meta.strip_prefix(PREFIX) else {
        return Decoded::none(NoMap::Foreign);
    };
    let version = rest.split(' ').next().unwrap_or_default();
    match canonical_int::<u32>(version) {
        None => Decoded::none(NoMap::Malformed("version")),
        Some(VERSION) => match decode_v1(meta) {
            Ok((map, window)) if map.base != committed => Decoded {
                window,
                done: Err(NoMap::BaseMismatch {
                    base: map.base,
                    committed,
                }),
            },
            Ok((map, window)) => Decoded {
                window,
                done: Ok(map),
            },
            Err(why) => Decoded::none(why),
        },
        Some(version) => Decoded::none(NoMap::Unsupported { version }),
    }
}

/// `first=F end=E` or `first=F end=E to=T`, exactly as replay wrote it before this format.
fn legacy_window(rest: &str) -> Option<ReplayWindow> {
    let mut fields = rest.split(' ');
    let first = canonical_int(fields.next()?.strip_prefix("first=")?)?;
    let end = canonical_int(fields.next()?.strip_prefix("end=")?)?;
    let to = match fields.next() {
        Some(to) => Some(to_fingerprint(to.strip_prefix("to=").filter(|t| !t.is_empty())?)),
        None => None,
    };
    fields.next().is_none().then_some(ReplayWindow { first, end, to })
}

/// 8 lowercase hex digits, else None.
fn hex8(s: &str) -> Option<u32> {
    let lower_hex = s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    u32::from_str_radix(s, 16).ok().filter(|_| lower_hex)
}

/// An integer in canonical decimal (what `Display` writes), else None.
fn canonical_int<T: std::str::FromStr + ToString>(s: &str) -> Option<T> {
    let v: T = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

fn decode_v1(meta: &str) -> Result<(DoneMap, Option<ReplayWindow>), NoMap> {
    let (body, crc) = meta.rsplit_once(CRC_FIELD).ok_or(NoMap::Malformed("crc"))?;
    let crc = hex8(crc).ok_or(NoMap::Malformed("crc"))?;
    if crc32fast::hash(body.as_bytes()) != crc {
        return Err(NoMap::Checksum);
    }
    let mut fields = body.split(' ').skip(1).peekable();
    let mut field = |name: &'static str| {
        let value = fields.next_if(|f| f.starts_with(name))?;
        Some(&value[name.len()..])
    };
    let int = |v: Option<&str>, name| v.map(|v| canonical_int::<i64>(v).ok_or(NoMap::Malformed(name)));
    let base = int(field("base="), "base").ok_or(NoMap::Malformed("base"))??;
    let window = match int(field("first="), "first").transpose()? {
        Some(first) => {
            let end = int(field("end="), "end").ok_or(NoMap::Malformed("end"))??;
            let to = field("to=")
                .map(|t| hex8(t).ok_or(NoMap::Malformed("to")))
                .transpose()?;
            Some(ReplayWindow { first, end, to })
        }
        None => None,
    };
    let map = match (field("runs="), field("bits=")) {
        (Some(runs), None) => decode_payload(base, runs, Codec::Runs)?,
        (None, Some(bits)) => decode_payload(base, bits, Codec::Bits)?,
        (None, None) => DoneMap::empty(base),
        (Some(_), Some(_)) => return Err(NoMap::Malformed("both runs and bits")),
    };
    if field("").is_some() {
        return Err(NoMap::Malformed("unexpected field"));
    }
    Ok((map, window))
}

/// Decodes a `runs`/`bits` payload and checks that it is the encoder's own choice for the map.
fn decode_payload(base: i64, b64: &str, codec: Codec) -> Result<DoneMap, NoMap> {
    let name = match codec {
        Codec::Runs => "runs",
        Codec::Bits => "bits",
    };
    let bytes = URL_SAFE_NO_PAD.decode(b64).map_err(|_| NoMap::Malformed(name))?;
    let map = match codec {
        Codec::Runs => decode_runs(base, &bytes),
        Codec::Bits => decode_bits(base, &bytes),
    }
    .ok_or(NoMap::Malformed(name))?;
    let sizes = PrefixSizes::of(&map);
    if map.is_empty() || sizes.best(map.ranges.len()).0 != codec {
        return Err(NoMap::Malformed(name));
    }
    Ok(map)
}

fn decode_runs(base: i64, mut bytes: &[u8]) -> Option<DoneMap> {
    let mut map = DoneMap::empty(base);
    let mut cursor = base;
    while !bytes.is_empty() {
        let gap = i64::try_from(get_varint(&mut bytes)?).ok()?;
        let len = i64::try_from(get_varint(&mut bytes)?).ok()?;
        if gap == 0 || len == 0 {
            return None;
        }
        let start = cursor.checked_add(gap)?;
        cursor = start.checked_add(len)?;
        map.push(start..cursor);
    }
    Some(map)
}

fn decode_bits(base: i64, bytes: &[u8]) -> Option<DoneMap> {
    let span = i64::try_from(bytes.len()).ok()?.checked_mul(8)?;
    base.checked_add(span)?;
    if bytes.first()? & 1 != 0 || *bytes.last()? == 0 {
        return None;
    }
    let mut map = DoneMap::empty(base);
    for (i, &b) in bytes.iter().enumerate() {
        for bit in 0..8 {
            if b & (1 << bit) != 0 {
                let o = base + (i as i64) * 8 + bit;
                map.push(o..o + 1);
            }
        }
    }
    Some(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UNLIMITED: usize = usize::MAX;

    /// A map from alternating (not done, done) run lengths above `base`.
    fn map_of(base: i64, runs: &[(i64, i64)]) -> DoneMap {
        let mut map = DoneMap::empty(base);
        let mut cursor = base;
        for &(gap, len) in runs {
            let start = cursor + gap;
            map.push(start..start + len);
            cursor = start + len;
        }
        map
    }

    /// Commit metadata with a correct checksum over `body` (to get past the checksum).
    fn with_crc(body: &str) -> String {
        format!("{body} crc={:08x}", crc32fast::hash(body.as_bytes()))
    }

    #[test]
    fn worked_example_from_the_module_docs() {
        let map = DoneMap::from_offsets(1000, [1001, 1002, 1003, 1005].into_iter().chain(1010..1020));
        let e = encode(&map, None, MAX_METADATA_BYTES).unwrap();
        assert_eq!(e.text, "elevate-sink/1 base=1000 bits=LvwP crc=0f0a44db");
        assert_eq!(e.codec, Some(Codec::Bits));
        assert!(!e.truncated());
        assert_eq!(decode(&e.text, 1000).done, Ok(map));
    }

    #[test]
    fn runs_win_for_long_runs_and_never_build_a_wide_bitset() {
        let map = map_of(7, &[(1, 1_000_000_000_000), (3, 2)]);
        let e = encode(
            &map,
            Some(ReplayWindow {
                first: 0,
                end: 99,
                to: Some(7),
            }),
            MAX_METADATA_BYTES,
        )
        .unwrap();
        assert_eq!(e.codec, Some(Codec::Runs));
        assert!(
            e.text
                .starts_with("elevate-sink/1 base=7 first=0 end=99 to=00000007 runs="),
            "{}",
            e.text
        );
        let d = decode(&e.text, 7);
        assert_eq!(
            d.window,
            Some(ReplayWindow {
                first: 0,
                end: 99,
                to: Some(7)
            })
        );
        assert_eq!(d.done, Ok(map));
    }

    #[test]
    fn a_union_claims_exactly_what_either_map_claims_above_its_base() {
        let a = DoneMap::from_offsets(10, [12, 13, 20]);
        let b = DoneMap::from_offsets(5, [6, 11, 14, 20, 21]);
        let u = a.union(&b);
        assert_eq!(u, DoneMap::from_offsets(10, [11, 12, 13, 14, 20, 21]));
        assert!(a.is_subset_of(&u));
        assert_eq!(u.union(&u), u);
    }

    #[test]
    fn an_empty_map_has_no_payload() {
        let e = encode(&DoneMap::empty(0), None, MAX_METADATA_BYTES).unwrap();
        assert_eq!(e.codec, None);
        assert_eq!(e.text, with_crc("elevate-sink/1 base=0"));
        assert_eq!(decode(&e.text, 0).done, Ok(DoneMap::empty(0)));
    }

    #[test]
    fn what_is_not_a_current_map_gives_a_reason() {
        assert_eq!(decode("", 5).done, Err(NoMap::Missing));
        assert_eq!(decode("checkpoint 17", 5).done, Err(NoMap::Foreign));
        assert_eq!(
            decode(&with_crc("elevate-sink/2 base=5"), 5).done,
            Err(NoMap::Unsupported { version: 2 })
        );
        assert_eq!(
            decode("elevate-sink/one", 5).done,
            Err(NoMap::Malformed("version"))
        );
        assert_eq!(
            decode("elevate-sink/1 base=5", 5).done,
            Err(NoMap::Malformed("crc"))
        );
        assert_eq!(
            decode("elevate-sink/1 base=5 crc=00000000", 5).done,
            Err(NoMap::Checksum)
        );
        assert_eq!(
            decode(&with_crc("elevate-sink/1 base=05"), 5).done,
            Err(NoMap::Malformed("base"))
        );
        assert_eq!(
            decode(&with_crc("elevate-sink/1 base=5 first=1"), 5).done,
            Err(NoMap::Malformed("end"))
        );
        assert_eq!(
            decode(&with_crc("elevate-sink/1 base=5 owner=me"), 5).done,
            Err(NoMap::Malformed("unexpected field"))
        );
        // {6}: bits (1 byte) is smaller than runs (2 bytes), so a runs payload is not ours.
        assert_eq!(
            decode(&with_crc("elevate-sink/1 base=5 runs=AQE"), 5).done,
            Err(NoMap::Malformed("runs"))
        );
        assert_eq!(
            decode(&with_crc("elevate-sink/1 base=5 bits=Ag"), 5)
                .done
                .map(|m| m.offsets()),
            Ok(1)
        );
    }

    #[test]
    fn legacy_replay_checkpoints_keep_their_window() {
        let d = decode("elevate-sink-replay first=10 end=50", 30);
        assert_eq!(
            d.window,
            Some(ReplayWindow {
                first: 10,
                end: 50,
                to: None
            })
        );
        assert_eq!(d.done, Err(NoMap::Legacy));
        let d = decode("elevate-sink-replay first=10 end=50 to=now", 30);
        assert_eq!(d.window.and_then(|w| w.to), Some(to_fingerprint("now")));
        for bad in [
            "elevate-sink-replay first=10 end=50 to=",
            "elevate-sink-replay first=10 end=50 to=now x=1",
            "elevate-sink-replay first=10 end=50 from=now",
        ] {
            assert_eq!(
                decode(bad, 30).done,
                Err(NoMap::Malformed("legacy replay checkpoint")),
                "{bad}"
            );
        }
        assert_eq!(
            decode("elevate-sink-replay end=50", 30).done,
            Err(NoMap::Malformed("legacy replay checkpoint"))
        );
    }

    #[test]
    fn a_map_for_another_position_is_ignored_but_the_window_kept() {
        let map = DoneMap::from_offsets(100, [102, 103]);
        let w = ReplayWindow {
            first: 0,
            end: 500,
            to: None,
        };
        let text = encode(&map, Some(w), MAX_METADATA_BYTES).unwrap().text;
        for committed in [99, 101, 0] {
            let d = decode(&text, committed);
            assert_eq!(d.window, Some(w));
            assert_eq!(d.done, Err(NoMap::BaseMismatch { base: 100, committed }));
        }
    }

    #[test]
    fn a_budget_below_the_header_is_an_error() {
        let map = DoneMap::from_offsets(100, [102]);
        let header = encode(&DoneMap::empty(100), None, UNLIMITED).unwrap().text.len();
        assert_eq!(
            encode(&map, None, header - 1),
            Err(EncodeError::BudgetTooSmall {
                needed: header,
                budget: header - 1
            })
        );
        let e = encode(&map, None, header).unwrap();
        assert_eq!((e.codec, e.dropped_offsets), (None, 1));
    }

    /// Every third offset done over 30,000 offsets: neither codec fits 4096 bytes (runs 20,000
    /// bytes, bits 3,750 bytes = 5,000 characters), so a prefix is kept.
    #[test]
    fn a_large_sparse_map_is_cut_to_a_prefix_at_the_broker_limit() {
        let map = DoneMap::from_offsets(0, (1..30_000).filter(|o| o % 3 == 0));
        let e = encode(
            &map,
            Some(ReplayWindow {
                first: 0,
                end: 30_000,
                to: Some(u32::MAX),
            }),
            MAX_METADATA_BYTES,
        )
        .unwrap();
        assert!(e.text.len() <= MAX_METADATA_BYTES && e.text.len() > MAX_METADATA_BYTES - 8);
        assert_eq!(e.codec, Some(Codec::Bits));
        let kept = decode(&e.text, 0).done.unwrap();
        assert_eq!(kept.ranges(), &map.ranges()[..kept.ranges().len()]);
        assert_eq!(kept.offsets() + e.dropped_offsets, map.offsets());
        assert!(kept.offsets() > 7_900, "kept {}", kept.offsets());
    }

    fn arb_map() -> impl Strategy<Value = DoneMap> {
        let runs = prop_oneof![
            proptest::collection::vec((1i64..4, 1i64..4), 0..200),
            proptest::collection::vec((1i64..100_000, 1i64..1_000_000), 0..20),
        ];
        (0i64..1 << 40, runs).prop_map(|(base, runs)| map_of(base, &runs))
    }

    fn arb_window() -> impl Strategy<Value = Option<ReplayWindow>> {
        proptest::option::of(
            (0i64..1 << 40, 0i64..1 << 40, proptest::option::of(any::<u32>()))
                .prop_map(|(first, end, to)| ReplayWindow { first, end, to }),
        )
    }

    /// Near-miss metadata: our prefix and field names with values good and bad, and a correct
    /// checksum, so the parser (not the checksum) must reject what the encoder would not write.
    fn arb_near_miss() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            Just(String::new()),
            proptest::collection::vec(1u8..12, 1..7).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
            proptest::collection::vec(any::<u8>(), 1..7).prop_map(|b| URL_SAFE_NO_PAD.encode(b)),
            "-?[0-9]{1,3}",
            any::<i64>().prop_map(|v| v.to_string()),
            "[A-Za-z0-9_-]{1,12}",
            "[ -~]{0,6}",
        ];
        let name = prop_oneof![
            Just("base="),
            Just("first="),
            Just("end="),
            Just("to="),
            Just("runs="),
            Just("bits="),
            Just(""),
            Just("crc="),
        ];
        let fields = proptest::collection::vec((name, value).prop_map(|(n, v)| format!("{n}{v}")), 0..5);
        (
            prop_oneof![
                Just("elevate-sink/1"),
                Just("elevate-sink/1 "),
                Just("elevate-sink/01")
            ],
            fields,
        )
            .prop_map(|(head, fields)| {
                with_crc(
                    &[head.to_string()]
                        .into_iter()
                        .chain(fields)
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            })
    }

    /// Forged metadata: well-formed fields with arbitrary payload bytes and a correct checksum,
    /// so the payload checks (not the checksum) must reject what the encoder would not write.
    fn arb_forged() -> impl Strategy<Value = String> {
        let byte = prop_oneof![1u8..12, Just(0u8), Just(0x80u8), any::<u8>()];
        let payload = proptest::collection::vec(byte, 1..7).prop_map(|b| URL_SAFE_NO_PAD.encode(b));
        let field = prop_oneof![Just("runs"), Just("bits")];
        (0i64..20, any::<bool>(), field, payload).prop_map(|(base, window, field, payload)| {
            let window = if window { " first=0 end=9 to=0000abcd" } else { "" };
            with_crc(&format!("elevate-sink/1 base={base}{window} {field}={payload}"))
        })
    }

    proptest! {
        #[test]
        fn round_trip(map in arb_map(), window in arb_window()) {
            let e = encode(&map, window, UNLIMITED).unwrap();
            prop_assert!(!e.truncated());
            prop_assert!(e.text.is_ascii());
            let d = decode(&e.text, map.base());
            prop_assert_eq!(d.window, window);
            prop_assert_eq!(d.done, Ok(map));
        }

        /// Whatever the budget: the text fits it, and what decodes is a prefix (so a subset) of
        /// the map, with the rest counted as dropped.
        #[test]
        fn within_budget_and_never_more_than_was_done(map in arb_map(), window in arb_window(), budget in 0usize..700) {
            match encode(&map, window, budget) {
                Err(EncodeError::BudgetTooSmall { needed, .. }) => prop_assert!(needed > budget),
                Ok(e) => {
                    prop_assert!(e.text.len() <= budget, "{} > {}", e.text.len(), budget);
                    let kept = decode(&e.text, map.base()).done.unwrap();
                    prop_assert!(kept.is_subset_of(&map));
                    prop_assert_eq!(kept.ranges(), &map.ranges()[..kept.ranges().len()]);
                    prop_assert_eq!(kept.offsets() + e.dropped_offsets, map.offsets());
                }
            }
        }

        /// Large sparse maps at the broker's limit: always within it, a prefix kept.
        #[test]
        fn at_the_broker_limit(base in 0i64..1 << 40, runs in proptest::collection::vec((1i64..40, 1i64..3), 1000..6000)) {
            let map = map_of(base, &runs);
            let e = encode(&map, Some(ReplayWindow { first: base, end: i64::MAX, to: Some(0) }), MAX_METADATA_BYTES).unwrap();
            prop_assert!(e.text.len() <= MAX_METADATA_BYTES);
            let kept = decode(&e.text, base).done.unwrap();
            prop_assert_eq!(kept.ranges(), &map.ranges()[..kept.ranges().len()]);
            prop_assert!(kept.ranges().len() >= 1000.min(map.ranges().len()), "kept {} ranges", kept.ranges().len());
        }

        /// No string panics the decoder, and one that decodes to a map is byte for byte what the
        /// encoder writes for that map (so nothing decodes unless the encoder produced it).
        #[test]
        fn only_encoder_output_decodes(s in prop_oneof![any::<String>(), "elevate-sink[ -~]{0,60}", arb_near_miss()], committed in -2i64..1000) {
            let d = decode(&s, committed);
            if let Ok(map) = d.done {
                prop_assert_eq!(encode(&map, d.window, UNLIMITED).unwrap().text, s);
            }
        }

        /// The same for forged payloads that get past the checksum.
        #[test]
        fn forged_payloads_decode_only_if_the_encoder_wrote_them(s in arb_forged()) {
            let base = s["elevate-sink/1 base=".len()..].split(' ').next().unwrap().parse().unwrap();
            let d = decode(&s, base);
            if let Ok(map) = d.done {
                prop_assert_eq!(encode(&map, d.window, UNLIMITED).unwrap().text, s);
            }
        }

        /// Any single-byte change, deletion or cut of valid metadata gives no map.
        #[test]
        fn damage_is_detected(map in arb_map(), window in arb_window(), at in any::<prop::sample::Index>(), byte in 0x20u8..0x7f, how in 0u8..3) {
            let text = encode(&map, window, UNLIMITED).unwrap().text;
            let mut bytes = text.clone().into_bytes();
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = byte,
                1 => { bytes.remove(i); }
                _ => bytes.truncate(i),
            }
            let damaged = String::from_utf8(bytes).unwrap();
            prop_assume!(damaged != text);
            prop_assert!(decode(&damaged, map.base()).done.is_err(), "{} decoded", damaged);
        }
    }
}
