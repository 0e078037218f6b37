//! Classify: an HTTP answer (or a transport failure) into what the pipeline does next. Pure.
//! Guarantees: only 204 counts as delivered; only 400 is a data error (dead-letter);
//! 408/429/5xx and transport failures are transient (retry within the budget); everything else
//! (401/403/404, redirects, other 2xx, other 4xx) is a configuration error that is retried
//! without limit and never dead-letters the stream.

use std::time::Duration;

/// What an attempt's result means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// 204: Elevate has it.
    Delivered,
    /// 400: the data is wrong; retrying cannot help. Dead-letter.
    Rejected,
    /// Worth retrying: 408, 429, 5xx, timeout, connection or DNS error.
    Transient {
        /// A `Retry-After` the server asked for, if any.
        retry_after: Option<Duration>,
    },
    /// Almost always our configuration (wrong cluster, path, credentials): retry forever, loudly.
    Misconfigured,
}

/// How an attempt ended before an HTTP status was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The per-attempt timeout fired.
    Timeout,
    /// Connect, DNS, TLS, reset or a dropped connection.
    Connection,
    /// Anything else reqwest reports (body, decode); treated as transient.
    Other,
}

impl TransportError {
    /// Stable label for metrics and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportError::Timeout => "timeout",
            TransportError::Connection => "connection",
            TransportError::Other => "transport",
        }
    }
}

/// Classifies an HTTP status with its `Retry-After` header value, if any.
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Class {
    match status {
        204 => Class::Delivered,
        400 => Class::Rejected,
        408 | 429 | 500..=599 => Class::Transient {
            retry_after: retry_after.and_then(parse_retry_after),
        },
        _ => Class::Misconfigured,
    }
}

/// Transport failures are always transient.
pub fn classify_transport(_e: TransportError) -> Class {
    Class::Transient { retry_after: None }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate_parse(v)?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn httpdate_parse(v: &str) -> Option<std::time::SystemTime> {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = v.split_whitespace().collect();
    if parts.len() != 6 || parts[5] != "GMT" {
        return None;
    }
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == parts[2])?
        + 1;
    let s = format!(
        "{}-{:02}-{:02}T{}Z",
        parts[3],
        month,
        parts[1].parse::<u32>().ok()?,
        parts[4]
    );
    humantime::parse_rfc3339(&s).ok()
}

/// A sanitised excerpt of a response body for dead-letter headers: at most 256 characters, no
/// control characters; a JSON `message` field is preferred when present.
pub fn body_excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let chosen = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.into_owned());
    chosen
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(256)
        .collect::<String>()
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_documented_table() {
        assert_eq!(classify_status(204, None), Class::Delivered);
        assert_eq!(classify_status(400, None), Class::Rejected);
        assert_eq!(classify_status(500, None), Class::Transient { retry_after: None });
        assert_eq!(
            classify_status(429, Some("7")),
            Class::Transient {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        for s in [401, 403, 404, 200, 301, 302, 405, 422] {
            assert_eq!(classify_status(s, None), Class::Misconfigured, "{s}");
        }
        for s in [408, 502, 503, 504] {
            assert!(matches!(classify_status(s, None), Class::Transient { .. }), "{s}");
        }
    }

    #[test]
    fn retry_after_http_date() {
        let d = parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(d, Duration::ZERO);
        assert!(parse_retry_after("soon").is_none());
    }

    #[test]
    fn excerpt_prefers_message_and_strips_controls() {
        assert_eq!(body_excerpt(br#"{"message":"bad\nmarket"}"#), "bad market");
        assert_eq!(body_excerpt(&[b'x'; 1000]).len(), 256);
        assert_eq!(body_excerpt(b"\xff oops"), "\u{fffd} oops");
    }

    proptest! {
        #[test]
        fn only_204_is_delivered(s in 100u16..600) {
            prop_assert_eq!(classify_status(s, None) == Class::Delivered, s == 204);
            prop_assert_eq!(classify_status(s, None) == Class::Rejected, s == 400);
        }
    }
}
