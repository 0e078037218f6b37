//! W3C trace context: the `traceparent` / `tracestate` headers of a Kafka record, forwarded to the
//! Elevate request so a shop's traces continue into the call. Pure. Guarantee: only those two
//! headers, only when their value is UTF-8 of visible ASCII within a bounded length (a
//! `traceparent` also of the W3C shape); anything else is dropped, never forwarded half-way.

/// The trace headers to forward, from a record's headers (names case-insensitive, first wins).
pub fn context(headers: &[(String, Option<Vec<u8>>)]) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for name in ["traceparent", "tracestate"] {
        let value = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref()?).ok())
            .map(str::trim);
        let ok = |v: &&str| {
            !v.is_empty()
                && v.len() <= 512
                && v.bytes().all(|b| (0x20..0x7f).contains(&b))
                && (name != "traceparent" || is_traceparent(v))
        };
        if let Some(v) = value.filter(ok) {
            out.push((name, v.to_string()));
        }
    }
    // A tracestate without a traceparent means nothing (W3C): drop it.
    if !out.iter().any(|(n, _)| *n == "traceparent") {
        out.clear();
    }
    out
}

/// `version-traceid-parentid-flags`, lower-case hex of 2, 32, 16 and 2 digits.
fn is_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() >= 4
        && [2, 32, 16, 2].iter().zip(&parts).all(|(len, p)| {
            p.len() == *len
                && p.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn h(pairs: &[(&str, &[u8])]) -> Vec<(String, Option<Vec<u8>>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_vec())))
            .collect()
    }

    #[test]
    fn forwards_valid_trace_context_only() {
        let got = context(&h(&[
            ("other", b"x"),
            ("TraceParent", TP.as_bytes()),
            ("tracestate", b"congo=t61rcWkgMzE"),
        ]));
        assert_eq!(
            got,
            vec![
                ("traceparent", TP.to_string()),
                ("tracestate", "congo=t61rcWkgMzE".to_string())
            ]
        );
        assert!(context(&h(&[("traceparent", b"not-a-trace")])).is_empty());
        assert!(
            context(&h(&[("tracestate", b"a=b")])).is_empty(),
            "no tracestate alone"
        );
        assert!(context(&h(&[("traceparent", b"\xff\xfe")])).is_empty());
        let got = context(&h(&[("traceparent", TP.as_bytes()), ("tracestate", b"a=b\nx")]));
        assert_eq!(got, vec![("traceparent", TP.to_string())]);
        assert!(context(&[]).is_empty());
    }
}
