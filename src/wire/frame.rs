//! The Confluent wire format's framing: magic byte `0`, a 4-byte big-endian schema id, then the
//! payload; for Protobuf the payload starts with the message-index array (zigzag varints).
//! Pure and total: any byte string either splits or yields a [`FrameError`] naming what is
//! wrong; nothing is read past the input and nothing panics.

/// The only magic byte the Confluent wire format defines.
pub const MAGIC: u8 = 0;

/// Magic byte + schema id.
pub const HEADER_LEN: usize = 5;

/// Most message indexes accepted (nesting depth of the message in its `.proto` file). Real
/// schemas nest a handful of levels; the bound keeps a hostile count from allocating.
pub const MAX_MESSAGE_INDEXES: usize = 64;

/// Why a value is not in the Confluent wire format. Every case is the record's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer than the 5 header bytes (an empty value included).
    #[error("value is {len} bytes, shorter than the 5-byte wire-format header (magic byte, schema id)")]
    TooShort { len: usize },
    /// The first byte is not `0`: not the Confluent wire format (plain JSON starts with `{`).
    #[error("unknown magic byte 0x{byte:02x} (the Confluent wire format starts with 0x00)")]
    UnknownMagic { byte: u8 },
    /// The Protobuf message-index array is cut short, overflows or is out of range.
    #[error("protobuf message indexes: {0}")]
    MessageIndexes(&'static str),
}

/// A split value: the schema id and what follows the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Framed<'a> {
    /// The registry's schema id.
    pub schema_id: u32,
    /// The bytes after the header (for Protobuf, message indexes first).
    pub payload: &'a [u8],
}

/// Splits a wire-format value into schema id and payload.
pub fn split(value: &[u8]) -> Result<Framed<'_>, FrameError> {
    if value.len() < HEADER_LEN {
        return match value.first() {
            Some(&byte) if byte != MAGIC => Err(FrameError::UnknownMagic { byte }),
            _ => Err(FrameError::TooShort { len: value.len() }),
        };
    }
    if value[0] != MAGIC {
        return Err(FrameError::UnknownMagic { byte: value[0] });
    }
    let schema_id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok(Framed {
        schema_id,
        payload: &value[HEADER_LEN..],
    })
}

/// The header for `schema_id` followed by `payload` (what a producer's serializer writes).
pub fn frame(schema_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a Protobuf payload into its message indexes and the message bytes. A count of `0`
/// is the shortcut for `[0]` (the file's first message); indexes are never negative.
pub fn split_message_indexes(payload: &[u8]) -> Result<(Vec<u32>, &[u8]), FrameError> {
    let (count, mut rest) = read_zigzag(payload)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    let count = usize::try_from(count).map_err(|_| FrameError::MessageIndexes("negative count"))?;
    if count > MAX_MESSAGE_INDEXES {
        return Err(FrameError::MessageIndexes("more than 64 indexes"));
    }
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let (index, tail) = read_zigzag(rest)?;
        let index = u32::try_from(index).map_err(|_| FrameError::MessageIndexes("negative index"))?;
        indexes.push(index);
        rest = tail;
    }
    Ok((indexes, rest))
}

/// The message-index array for `indexes` (`[0]` as the one-byte shortcut), as producers write it.
pub fn message_indexes(indexes: &[u32]) -> Vec<u8> {
    let mut out = Vec::new();
    if indexes == [0] {
        out.push(0);
        return out;
    }
    write_zigzag(&mut out, indexes.len() as i64);
    for &i in indexes {
        write_zigzag(&mut out, i64::from(i));
    }
    out
}

/// One zigzag varint that must fit an `i32` (Confluent writes Java ints).
fn read_zigzag(buf: &[u8]) -> Result<(i64, &[u8]), FrameError> {
    let mut raw: u64 = 0;
    for (n, &b) in buf.iter().enumerate().take(5) {
        raw |= u64::from(b & 0x7f) << (7 * n);
        if b & 0x80 == 0 {
            if raw > u64::from(u32::MAX) {
                return Err(FrameError::MessageIndexes("varint overflows 32 bits"));
            }
            let v = ((raw >> 1) as i64) ^ -((raw & 1) as i64);
            return Ok((v, &buf[n + 1..]));
        }
    }
    if buf.len() >= 5 {
        Err(FrameError::MessageIndexes("varint longer than 5 bytes"))
    } else {
        Err(FrameError::MessageIndexes("payload ends inside a varint"))
    }
}

fn write_zigzag(out: &mut Vec<u8>, v: i64) {
    let mut raw = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (raw & 0x7f) as u8;
        raw >>= 7;
        if raw == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_is_magic_then_big_endian_id() {
        let v = [0, 0, 0, 1, 2, b'x'];
        assert_eq!(
            split(&v),
            Ok(Framed {
                schema_id: 258,
                payload: b"x"
            })
        );
        assert_eq!(frame(258, b"x"), v);
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(split(b""), Err(FrameError::TooShort { len: 0 }));
        assert_eq!(split(&[0, 0, 1]), Err(FrameError::TooShort { len: 3 }));
        assert_eq!(split(b"{\"a\":1}"), Err(FrameError::UnknownMagic { byte: b'{' }));
        assert_eq!(split(b"{"), Err(FrameError::UnknownMagic { byte: b'{' }));
        assert!(split(&[1, 0, 0, 0, 0])
            .unwrap_err()
            .to_string()
            .contains("unknown magic byte 0x01"));
    }

    #[test]
    fn message_index_shortcut_and_explicit_forms() {
        assert_eq!(message_indexes(&[0]), [0]);
        assert_eq!(split_message_indexes(&[0, 9]), Ok((vec![0], &[9][..])));
        // Explicit [0] (count 1, index 0) as some producers write it.
        assert_eq!(split_message_indexes(&[2, 0, 9]), Ok((vec![0], &[9][..])));
        // [1, 2]: count 2 → 4, then 1 → 2, 2 → 4 (zigzag).
        assert_eq!(message_indexes(&[1, 2]), [4, 2, 4]);
        assert_eq!(split_message_indexes(&[4, 2, 4]), Ok((vec![1, 2], &[][..])));
    }

    #[test]
    fn bad_message_indexes_are_named() {
        let e = |b: &[u8]| split_message_indexes(b).unwrap_err().to_string();
        assert!(e(&[]).contains("ends inside a varint"));
        assert!(e(&[0x80]).contains("ends inside a varint"));
        assert!(e(&[1]).contains("negative count"));
        assert!(e(&[2, 1]).contains("negative index"));
        assert!(e(&[4, 2]).contains("ends inside a varint"));
        assert!(e(&[200, 1]).contains("more than 64"));
        assert!(e(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]).contains("longer than 5 bytes"));
        assert!(e(&[0xff, 0xff, 0xff, 0xff, 0x7f]).contains("overflows 32 bits"));
    }

    proptest! {
        #[test]
        fn frame_then_split_round_trips(id in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let v = frame(id, &payload);
            prop_assert_eq!(split(&v), Ok(Framed { schema_id: id, payload: &payload }));
        }

        #[test]
        fn split_is_total(v in proptest::collection::vec(any::<u8>(), 0..16)) {
            match split(&v) {
                Ok(f) => {
                    prop_assert_eq!(v[0], MAGIC);
                    prop_assert_eq!(f.payload.len() + HEADER_LEN, v.len());
                }
                Err(FrameError::UnknownMagic { byte }) => prop_assert_eq!(Some(&byte), v.first()),
                Err(FrameError::TooShort { len }) => prop_assert!(len < HEADER_LEN && len == v.len()),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }

        #[test]
        fn message_indexes_round_trip(
            idx in proptest::collection::vec(0u32..=i32::MAX as u32, 1..=MAX_MESSAGE_INDEXES),
            msg in proptest::collection::vec(any::<u8>(), 0..32),
        ) {
            let mut p = message_indexes(&idx);
            p.extend_from_slice(&msg);
            prop_assert_eq!(split_message_indexes(&p), Ok((idx, &msg[..])));
        }

        #[test]
        fn split_message_indexes_is_total(p in proptest::collection::vec(any::<u8>(), 0..24)) {
            if let Ok((idx, rest)) = split_message_indexes(&p) {
                prop_assert!(!idx.is_empty() && idx.len() <= MAX_MESSAGE_INDEXES);
                prop_assert!(rest.len() < p.len());
                prop_assert_eq!(rest, &p[p.len() - rest.len()..]);
            }
        }
    }
}
