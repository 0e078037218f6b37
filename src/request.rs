//! Request building: a [`Notification`] into the exact HTTP request Elevate's contract asks for.
//! Pure, no I/O. Guarantees: path `{base}/api/storefront/v3/notifications/add-to-cart`, query
//! parameters with Elevate's case-sensitive names (`customerKey`, `market`, `sessionKey`,
//! `userContext`) percent-encoded, body `{"ticket": ".."}`; keys absent from the notification
//! (consent) are absent from the URL.

use url::Url;

use crate::select::Notification;

/// Path of the add-to-cart notification, relative to the base URL.
pub const ADD_TO_CART_PATH: &str = "api/storefront/v3/notifications/add-to-cart";

/// A request ready to send (or to print in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpRequest {
    /// Always `POST`.
    pub method: &'static str,
    /// Full URL with query.
    pub url: String,
    /// Headers that matter (content type, forwarded visitor headers).
    pub headers: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: String,
}

/// The add-to-cart endpoint under `base` (a trailing path prefix on `base` is kept).
pub fn endpoint(base: &Url) -> Url {
    let mut url = base.clone();
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url.join(ADD_TO_CART_PATH)
        .expect("a constant relative path joins onto any http(s) base")
}

/// Builds the request for `n`. `forward_visitor` forwards User-Agent / X-Forwarded-For.
pub fn build(endpoint: &Url, n: &Notification, forward_visitor: bool) -> HttpRequest {
    let mut url = endpoint.clone();
    {
        let mut q = url.query_pairs_mut();
        if let Some(ck) = &n.customer_key {
            q.append_pair("customerKey", ck);
        }
        q.append_pair("market", &n.market);
        if let Some(sk) = &n.session_key {
            q.append_pair("sessionKey", sk);
        }
        if let Some(ctx) = n.user_context {
            q.append_pair("userContext", ctx.as_str());
        }
    }
    let mut headers = vec![("content-type", "application/json;charset=utf-8".to_string())];
    if forward_visitor {
        if let Some(ua) = n.user_agent.as_deref().filter(|v| header_safe(v)) {
            headers.push(("user-agent", ua.to_string()));
        }
        if let Some(ip) = n.visitor_ip.as_deref().filter(|v| header_safe(v)) {
            headers.push(("x-forwarded-for", ip.to_string()));
        }
    }
    HttpRequest {
        method: "POST",
        url: url.into(),
        headers,
        body: serde_json::json!({ "ticket": n.ticket }).to_string(),
    }
}

/// A header value we can send as is: visible ASCII and spaces, bounded length.
fn header_safe(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 1024
        && v.bytes()
            .all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::UserContext;
    use proptest::prelude::*;

    fn n() -> Notification {
        Notification {
            ticket: "Oy9m+/=".into(),
            market: "SE".into(),
            customer_key: Some("c 1&x".into()),
            session_key: Some("s1".into()),
            user_context: None,
            user_agent: Some("Mozilla/5.0".into()),
            visitor_ip: Some("203.0.113.7".into()),
            line: 0,
            event_time_ms: None,
        }
    }

    #[test]
    fn exact_url_and_body() {
        let base = Url::parse("https://w1.elevate-api.cloud").unwrap();
        let r = build(&endpoint(&base), &n(), true);
        assert_eq!(
            r.url,
            "https://w1.elevate-api.cloud/api/storefront/v3/notifications/add-to-cart?customerKey=c+1%26x&market=SE&sessionKey=s1"
        );
        assert_eq!(r.body, r#"{"ticket":"Oy9m+/="}"#);
        assert_eq!(r.headers[1], ("user-agent", "Mozilla/5.0".into()));
        assert_eq!(r.headers[2], ("x-forwarded-for", "203.0.113.7".into()));
        assert_eq!(build(&endpoint(&base), &n(), false).headers.len(), 1);
    }

    #[test]
    fn base_with_prefix_and_consent() {
        let base = Url::parse("http://127.0.0.1:8080/proxy").unwrap();
        let mut x = n();
        x.customer_key = None;
        x.session_key = None;
        x.user_context = Some(UserContext::Anonymous);
        let r = build(&endpoint(&base), &x, true);
        assert_eq!(
            r.url,
            "http://127.0.0.1:8080/proxy/api/storefront/v3/notifications/add-to-cart?market=SE&userContext=ANONYMOUS"
        );
    }

    proptest! {
        #[test]
        fn query_round_trips(ticket in "\\PC{1,50}", market in "\\PC{1,10}", ck in proptest::option::of("\\PC{1,20}"), sk in proptest::option::of("\\PC{1,20}")) {
            let mut x = n();
            x.ticket = ticket.clone(); x.market = market.clone(); x.customer_key = ck.clone(); x.session_key = sk.clone();
            let r = build(&endpoint(&Url::parse("http://h").unwrap()), &x, true);
            let url = Url::parse(&r.url).unwrap();
            let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            prop_assert_eq!(pairs.iter().find(|(k, _)| k == "market").map(|(_, v)| v.clone()), Some(market));
            prop_assert_eq!(pairs.iter().find(|(k, _)| k == "customerKey").map(|(_, v)| v.clone()), ck);
            prop_assert_eq!(pairs.iter().find(|(k, _)| k == "sessionKey").map(|(_, v)| v.clone()), sk);
            let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            prop_assert_eq!(body["ticket"].as_str(), Some(ticket.as_str()));
        }
    }
}
