//! Classify: an HTTP answer (or a transport failure) into what the pipeline does next. Pure.
//! Guarantees: only 204 counts as delivered; an answer about the record itself (400, 409, 413,
//! 414, 422, 431) is data: dead-letter at once; 408/425/429, most 5xx and transport failures are
//! transient (retry within the budget); every other answer describes the deployment (401/403/404,
//! redirects, other 2xx, unknown 4xx, 501/505/511) and is retried without limit, never parked.
//!
//! | status | class | why |
//! |---|---|---|
//! | 204 | [`Class::Delivered`] | Elevate's only success answer |
//! | 400, 409, 413, 414, 422, 431 | [`Class::Rejected`] | about this record (its values, size, shape or state): the same every time, so retrying would pin its partition forever |
//! | 408, 425, 429, 5xx except 501/505/511 | [`Class::Transient`] | about this moment: retry with backoff, honouring `Retry-After` |
//! | 1xx, other 2xx, 3xx, 401–404, 405–407, 410–412, 415–418, 421, 423, 424, 426, 428, 451, any other 4xx, 501, 505, 511, ≥ 600 | [`Class::Misconfigured`] | about the deployment (credentials, cluster id, path, proxy, protocol): every record would get it, so parking would empty the stream into the dead-letter topic; stall visibly instead |
//!
//! An answer we cannot attribute to the record stalls rather than parks: a stall is loud and loses
//! nothing, a wrong park would silently drain a healthy stream.

use std::time::Duration;

/// What an attempt's result means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    /// 204: Elevate has it.
    Delivered,
    /// The record itself is wrong (400, 409, 413, 414, 422, 431); retrying cannot help. Dead-letter.
    Rejected,
    /// Worth retrying: 408, 425, 429, most 5xx, timeout, connection or DNS error.
    Transient {
        /// A `Retry-After` the server asked for, if any.
        retry_after: Option<Duration>,
    },
    /// Almost always our deployment (wrong cluster, path, credentials): retry forever, loudly.
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

/// Classifies an HTTP status with its `Retry-After` header value, if any (the table above).
pub fn classify_status(status: u16, retry_after: Option<&str>) -> Class {
    match status {
        204 => Class::Delivered,
        400 | 409 | 413 | 414 | 422 | 431 => Class::Rejected,
        501 | 505 | 511 => Class::Misconfigured,
        408 | 425 | 429 | 500..=599 => Class::Transient {
            retry_after: retry_after.and_then(parse_retry_after),
        },
        _ => Class::Misconfigured,
    }
}

/// Transport failures are always transient.
pub fn classify_transport(_e: TransportError) -> Class {
    Class::Transient { retry_after: None }
}

/// `Retry-After` as delay-seconds or an HTTP-date in any of RFC 9110's three forms (IMF-fixdate,
/// RFC 850, asctime; §5.6.7), via `httpdate`. A date in the past means "now".
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The text of an answer worth quoting: a JSON `message` field when present, else the body.
/// Not yet sanitised: scrub personal keys from it, then cut it with [`excerpt`].
pub fn answer_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or_else(|| text.into_owned())
}

/// `text` made fit for dead-letter headers and logs: at most 256 characters, no control characters.
pub fn excerpt(text: &str) -> String {
    text.chars()
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
        for s in [401, 403, 404, 200, 301, 302, 405] {
            assert_eq!(classify_status(s, None), Class::Misconfigured, "{s}");
        }
        for s in [408, 425, 502, 503, 504] {
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
        let body_excerpt = |body: &[u8]| excerpt(&answer_text(body));
        assert_eq!(body_excerpt(br#"{"message":"bad\nmarket"}"#), "bad market");
        assert_eq!(body_excerpt(&[b'x'; 1000]).len(), 256);
        assert_eq!(body_excerpt(b"\xff oops"), "\u{fffd} oops");
    }

    #[test]
    fn answers_about_the_datas_size_or_shape_are_data() {
        for s in [400, 413, 414, 422, 431] {
            assert_eq!(classify_status(s, None), Class::Rejected, "{s}");
        }
    }

    #[test]
    fn every_status_has_its_documented_class() {
        let data = [400, 409, 413, 414, 422, 431];
        let deployment_5xx = [501, 505, 511];
        for s in 100u16..=999 {
            let want = match s {
                204 => Class::Delivered,
                _ if data.contains(&s) => Class::Rejected,
                _ if deployment_5xx.contains(&s) => Class::Misconfigured,
                408 | 425 | 429 | 500..=599 => Class::Transient { retry_after: None },
                _ => Class::Misconfigured,
            };
            assert_eq!(classify_status(s, None), want, "{s}");
        }
        for s in [
            100, 200, 201, 202, 301, 302, 304, 307, 308, 401, 402, 403, 404, 405, 406, 407, 410, 411, 412,
            415, 421, 451, 499,
        ] {
            assert_eq!(classify_status(s, None), Class::Misconfigured, "{s}");
        }
    }

    /// `t` as RFC 9110's three HTTP-date forms: IMF-fixdate, RFC 850 and asctime.
    fn http_date_forms(t: std::time::SystemTime) -> [String; 3] {
        const DAYS: [&str; 7] = [
            "Sunday",
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
        ];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let day = DAYS[((secs / 86_400 + 4) % 7) as usize]; // 1970-01-01 was a Thursday
        let iso = humantime::format_rfc3339_seconds(t).to_string(); // 2026-11-30T10:00:00Z
        let (y, mo, d, hms) = (&iso[0..4], &iso[5..7], &iso[8..10], &iso[11..19]);
        let mon = MONTHS[mo.parse::<usize>().unwrap() - 1];
        let dn: u32 = d.parse().unwrap();
        [
            format!("{}, {d} {mon} {y} {hms} GMT", &day[..3]),
            format!("{day}, {d}-{mon}-{} {hms} GMT", &y[2..]),
            format!("{} {mon} {dn:>2} {hms} {y}", &day[..3]),
        ]
    }

    #[test]
    fn retry_after_in_every_http_date_form() {
        let now = std::time::SystemTime::now();
        let in_90s = now + Duration::from_secs(90);
        for form in http_date_forms(in_90s) {
            let d = parse_retry_after(&form).unwrap_or_else(|| panic!("{form:?} not understood"));
            assert!(
                (Duration::from_secs(85)..=Duration::from_secs(91)).contains(&d),
                "{form:?} gave {d:?}"
            );
        }
        // RFC 9110's own examples: long past, so no wait, but understood.
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(parse_retry_after(form), Some(Duration::ZERO), "{form:?}");
        }
    }

    proptest! {
        #[test]
        fn only_204_is_delivered(s in 100u16..600) {
            prop_assert_eq!(classify_status(s, None) == Class::Delivered, s == 204);
            prop_assert_eq!(
                classify_status(s, None) == Class::Rejected,
                [400, 409, 413, 414, 422, 431].contains(&s)
            );
        }
    }
}
