//! Request building: a [`Notification`] into the exact HTTP request Elevate's contract asks for.
//! Pure, no I/O. Guarantees: the path of the notification's kind ([`Kind::path`]) under the
//! endpoint given, query parameters with Elevate's case-sensitive names (`customerKey`, `market`,
//! `sessionKey`, `userContext`) percent-encoded, the kind's body (none for `end`), W3C trace
//! headers when the record had them, the `Api-Key` only flagged (added by the sender); keys absent from the notification
//! (consent) are absent from the URL; the visitor's IP is forwarded only for the consent levels
//! [`Forwarding`] allows (by default not for ANONYMOUS), the User-Agent for every level.

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use url::{Position, Url};

use crate::client::{WireBody, WireRequest};
use crate::config::{ElevateConfig, DEFAULT_FORWARD_IP_FOR};
use crate::decode::UserContext;
use crate::route::Kind;
use crate::select::{Body, Notification};

/// A request ready to send (or to print in a dry run).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HttpRequest {
    /// Always `POST`.
    pub method: &'static str,
    /// Full URL with query.
    pub url: String,
    /// Headers that matter (content type, forwarded visitor headers).
    pub headers: Vec<(&'static str, String)>,
    /// JSON body (empty for `end`).
    pub body: String,
    /// Whether the `Api-Key` header is added when sending (payment); the key itself is never in
    /// this value, so printing a request never shows it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub api_key: bool,
}

/// The add-to-cart endpoint under `base` (a trailing path prefix on `base` is kept).
pub fn endpoint(base: &Url) -> Url {
    endpoint_for(base, Kind::AddToCart)
}

/// The endpoint of `kind` under `base` (a trailing path prefix on `base` is kept).
pub fn endpoint_for(base: &Url, kind: Kind) -> Url {
    let mut url = base.clone();
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    url.join(kind.path())
        .expect("a constant relative path joins onto any http(s) base")
}

/// An endpoint ready for [`wire_request`]: its URL and, parsed once, the URI scheme and authority
/// every request to it shares, so that each request parses only its own path and query.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The endpoint ([`endpoint_for`]).
    url: Url,
    /// The scheme and authority `http` parses from the URL's text; `None` when it does not, or
    /// not as exactly the text before the path (each request's URI is then parsed whole, and
    /// fails as it always did).
    origin: Option<(Scheme, Authority)>,
}

impl Endpoint {
    /// Prepares `url`, never failing: a URL `http` does not take fails each request instead.
    pub fn new(url: Url) -> Self {
        let origin = origin(&url);
        Endpoint { url, origin }
    }

    /// The endpoint's URL.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// The scheme and authority of `url` as `http` parses its whole text, kept only when they are
/// exactly the text before the path (`scheme://authority`): that text followed by any path and
/// query then parses to this scheme and authority.
fn origin(url: &Url) -> Option<(Scheme, Authority)> {
    let parts = http::Uri::try_from(url.as_str()).ok()?.into_parts();
    let (scheme, authority) = (parts.scheme?, parts.authority?);
    (format!("{scheme}://{authority}") == url[..Position::BeforePath]).then_some((scheme, authority))
}

/// Which visitor headers a request carries: the User-Agent for every consent level, the IP
/// (`X-Forwarded-For`) only for the levels listed in `elevate.forward_ip_for`, and neither
/// without `elevate.forward_visitor_headers`. An event without `userContext` is PERSONALIZED.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// Forward the visitor's User-Agent.
    user_agent: bool,
    /// Forward the visitor's IP, per level (indexed by [`level`]).
    ip: [bool; 4],
}

fn level(ctx: UserContext) -> usize {
    match ctx {
        UserContext::Personalized => 0,
        UserContext::Unpersonalized => 1,
        UserContext::Anonymous => 2,
        UserContext::Synthetic => 3,
    }
}

impl Forwarding {
    /// Forwards nothing.
    pub const NOTHING: Forwarding = Forwarding {
        user_agent: false,
        ip: [false; 4],
    };

    /// Visitor headers on (`false`: none at all), the IP for the levels in `ip_for`.
    pub fn new(visitor_headers: bool, ip_for: &[UserContext]) -> Self {
        if !visitor_headers {
            return Forwarding::NOTHING;
        }
        let mut ip = [false; 4];
        for ctx in ip_for {
            ip[level(*ctx)] = true;
        }
        Forwarding { user_agent: true, ip }
    }

    /// What `[elevate]` says (`forward_visitor_headers`, `forward_ip_for`).
    pub fn from_config(elevate: &ElevateConfig) -> Self {
        Forwarding::new(elevate.forward_visitor_headers, &elevate.forward_ip_for)
    }

    /// Whether the User-Agent is forwarded.
    pub fn user_agent(&self) -> bool {
        self.user_agent
    }

    /// Whether the IP of a visitor at consent level `ctx` (None: PERSONALIZED) is forwarded.
    pub fn ip(&self, ctx: Option<UserContext>) -> bool {
        self.ip[level(ctx.unwrap_or_default())]
    }
}

impl From<bool> for Forwarding {
    /// `true`: the default table (User-Agent always, IP except for ANONYMOUS); `false`: nothing.
    fn from(visitor_headers: bool) -> Self {
        Forwarding::new(visitor_headers, &DEFAULT_FORWARD_IP_FOR)
    }
}

/// Builds the request for `n`, with the visitor headers `forward` allows (a `bool` means the
/// default table or nothing).
pub fn build(endpoint: &Url, n: &Notification, forward: impl Into<Forwarding>) -> HttpRequest {
    let body = body_json(&n.body);
    let headers = headers(n, forward.into(), !body.is_empty())
        .map(|(name, value)| {
            (
                name.as_str(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    HttpRequest {
        method: "POST",
        url: url(endpoint, n),
        headers,
        body,
        api_key: n.route.kind == Kind::Payment,
    }
}

/// The request [`build`] describes, as the client sends it (`client`): the URL handed
/// over as a URI (`uri`), each header value copied once into the header map, the `Api-Key`
/// added for payment when `api_key` is given. Built for each attempt. An error only if the URL
/// is not a valid URI, which `url` does not produce for the percent-encoded queries built here.
pub fn wire_request(
    endpoint: &Endpoint,
    n: &Notification,
    forward: Forwarding,
    api_key: Option<&HeaderValue>,
) -> Result<WireRequest, http::Error> {
    let uri = uri(endpoint, n)?;
    let body = body_json(&n.body);
    let has_body = !body.is_empty();
    let mut req = http::Request::new(WireBody::new(bytes::Bytes::from(body)));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = uri;
    let map = req.headers_mut();
    map.reserve(4);
    for (name, value) in headers(n, forward, has_body) {
        map.append(name.header_name(), value);
    }
    if n.route.kind == Kind::Payment {
        if let Some(key) = api_key {
            map.insert("api-key", key.clone());
        }
    }
    Ok(req)
}

/// The longest URI `http` takes whole (its `MAX_LEN`, not public); a path and query alone may be
/// as long, so a longer URL is parsed whole for the very error `http` gives for it.
const MAX_URI_LEN: usize = u16::MAX as usize - 1;

/// The URI of `n`'s request, the very `Uri` the text of [`url`] parses to: the endpoint's scheme
/// and authority parsed once ([`Endpoint`]), only the path and query parsed here (their text
/// handed over without a copy); the whole text parsed when the endpoint has no parsed origin or
/// the URL is longer than `http` takes.
fn uri(endpoint: &Endpoint, n: &Notification) -> Result<http::Uri, http::Error> {
    let origin = &endpoint.url[..Position::BeforePath];
    let path_and_query = with_query(&endpoint.url[Position::BeforePath..], n);
    match &endpoint.origin {
        Some((scheme, authority)) if origin.len() + path_and_query.len() <= MAX_URI_LEN => {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority.clone());
            parts.path_and_query = Some(PathAndQuery::from_maybe_shared(bytes::Bytes::from(
                path_and_query,
            ))?);
            Ok(http::Uri::from_parts(parts)?)
        }
        _ => {
            let whole = [origin, &path_and_query].concat();
            Ok(http::Uri::from_maybe_shared(bytes::Bytes::from(whole))?)
        }
    }
}

/// The URL of `n`'s request, query included: form-encoded onto the endpoint's text as `url`'s
/// `query_pairs_mut` would, without a copy of the endpoint's `Url`.
fn url(endpoint: &Url, n: &Notification) -> String {
    with_query(endpoint.as_str(), n)
}

/// `text` followed by `n`'s query pairs, the very text `form_urlencoded::Serializer::for_suffix`
/// makes of it with `append_pair`: a `?` added when `text` has none, a `&` before each pair when
/// the query is not empty, each value [`form_encode`]d (the names are alphanumeric, so written as
/// they are).
fn with_query(text: &str, n: &Notification) -> String {
    let mut out = String::with_capacity(text.len() + 160);
    out.push_str(text);
    let start = match out.find('?') {
        Some(i) => i + 1,
        None => {
            out.push('?');
            out.len()
        }
    };
    let mut pair = |name: &str, value: &str| {
        if out.len() > start {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        form_encode(&mut out, value);
    };
    if let Some(ck) = &n.customer_key {
        pair("customerKey", ck);
    }
    pair("market", &n.market);
    if let Some(sk) = &n.session_key {
        pair("sessionKey", sk);
    }
    if let Some(ctx) = n.user_context {
        pair("userContext", ctx.as_str());
    }
    out
}

/// The bytes form encoding keeps as they are: ASCII alphanumerics and `*-._`.
const FORM_KEPT: [bool; 256] = {
    let mut kept = [false; 256];
    let mut b = 0;
    while b < 256 {
        kept[b] = matches!(b as u8, b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' | b'*' | b'-' | b'.' | b'_');
        b += 1;
    }
    kept
};

/// Appends `s` to `out` in application/x-www-form-urlencoded byte serialization, byte for byte
/// what `form_urlencoded::byte_serialize` (so `Serializer::append_pair`) writes: ASCII
/// alphanumerics and `*-._` as they are (each run of them with one `push_str`), a space as `+`,
/// every other byte (each byte of a non-ASCII character too) as `%XX` in upper-case hex.
fn form_encode(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Where the run of kept bytes not yet written starts.
    let mut run = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        if FORM_KEPT[usize::from(b)] {
            continue;
        }
        // A run of kept (ASCII) bytes lies on character boundaries; an empty one may not (after
        // the first byte of a character), and `get` then gives `None`: nothing to write.
        if let Some(kept) = s.get(run..i) {
            out.push_str(kept);
        }
        if b == b' ' {
            out.push('+');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        run = i + 1;
    }
    if let Some(kept) = s.get(run..) {
        out.push_str(kept);
    }
}

/// The names of the headers every request may carry, made once (`HeaderName::from_static` at
/// run time looks the name up in `http`'s table of standard headers for each request).
static CONTENT_TYPE: HeaderName = http::header::CONTENT_TYPE;
static USER_AGENT: HeaderName = http::header::USER_AGENT;
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A header name of [`headers`]: one of the statics, or a trace header's (lower-case, static).
enum Name {
    Made(&'static HeaderName),
    Trace(&'static str),
}

impl Name {
    fn as_str(&self) -> &'static str {
        match self {
            Name::Made(name) => name.as_str(),
            Name::Trace(name) => name,
        }
    }

    fn header_name(&self) -> HeaderName {
        match self {
            Name::Made(name) => (*name).clone(),
            Name::Trace(name) => HeaderName::from_static(name),
        }
    }
}

/// The headers of `n`'s request, in order (lower-case names): the content type when there is a
/// body, the visitor headers `forward` allows, the trace context; only header-safe values
/// ([`header_value`]), each checked and copied once.
fn headers(
    n: &Notification,
    forward: Forwarding,
    has_body: bool,
) -> impl Iterator<Item = (Name, HeaderValue)> + '_ {
    let content_type = has_body.then(|| {
        (
            Name::Made(&CONTENT_TYPE),
            HeaderValue::from_static("application/json;charset=utf-8"),
        )
    });
    let user_agent = n
        .user_agent
        .as_deref()
        .filter(|_| forward.user_agent())
        .and_then(header_value)
        .map(|v| (Name::Made(&USER_AGENT), v));
    let ip = n
        .visitor_ip
        .as_deref()
        .filter(|_| forward.ip(n.user_context))
        .and_then(header_value)
        .map(|v| (Name::Made(&X_FORWARDED_FOR), v));
    let trace = n
        .trace
        .iter()
        .filter_map(|(name, v)| Some((Name::Trace(name), header_value(v)?)));
    content_type.into_iter().chain(user_agent).chain(ip).chain(trace)
}

/// The JSON body of each kind (empty for `end`).
fn body_json(body: &Body) -> String {
    use serde_json::json;
    match body {
        Body::Ticket(t) => one_field("ticket", t),
        Body::ProductKey(p) => one_field("productKey", p),
        Body::VariantKey(v) => one_field("variantKey", v),
        Body::Empty => String::new(),
        Body::Payment(lines) => {
            let lines: Vec<_> = lines
                .iter()
                .map(|l| {
                    json!({
                        "variantKey": l.variant_key,
                        "quantity": l.quantity,
                        "sellingPrice": l.selling_price,
                        "cost": l.cost,
                    })
                })
                .collect();
            json!({ "lines": lines }).to_string()
        }
    }
}

/// `{"key":"value"}` with serde_json's string escaping, written straight into the body (the
/// same text as `json!({key: value}).to_string()`, without building a `Value`).
fn one_field(key: &'static str, value: &str) -> String {
    let mut out = Vec::with_capacity(key.len() + value.len() + 8);
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    // Writing a `str` into a `Vec` cannot fail, and the escaped text is UTF-8.
    let _ = serde_json::to_writer(&mut out, value);
    out.push(b'}');
    String::from_utf8(out).unwrap_or_default()
}

/// `v` as a header value when we can send it as is: visible ASCII and spaces (tabs too), at most
/// 1 KiB, not empty; None otherwise. One pass of our own (`is_ascii`, a word at a time) and
/// `http`'s own check: `http` also takes bytes from 0x80 up, which we do not forward.
fn header_value(v: &str) -> Option<HeaderValue> {
    if v.is_empty() || v.len() > 1024 || !v.is_ascii() {
        return None;
    }
    HeaderValue::from_str(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::UserContext;
    use proptest::prelude::*;

    fn n() -> Notification {
        Notification {
            route: Default::default(),
            body: Body::Ticket("Oy9m+/=".into()),
            market: "SE".into(),
            customer_key: Some("c 1&x".into()),
            session_key: Some("s1".into()),
            user_context: None,
            user_agent: Some("Mozilla/5.0".into()),
            visitor_ip: Some("203.0.113.7".into()),
            line: 0,
            event_time_ms: None,
            trace: Vec::new(),
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

    /// Issue 11 item 14: the visitor's IP is personal data; an ANONYMOUS visitor's is not
    /// forwarded by default. The User-Agent (no identifier on its own, the main bot signal) is.
    #[test]
    fn visitor_ip_follows_the_consent_level() {
        use UserContext::*;
        let ep = endpoint(&Url::parse("https://w1.elevate-api.cloud").unwrap());
        for (ctx, forwarded) in [
            (None, true),
            (Some(Personalized), true),
            (Some(Unpersonalized), true),
            (Some(Anonymous), false),
            (Some(Synthetic), true),
        ] {
            let mut x = n();
            x.user_context = ctx;
            let r = build(&ep, &x, true);
            let header = |name: &str| r.headers.iter().find(|(h, _)| *h == name).map(|(_, v)| v.clone());
            assert_eq!(
                header("x-forwarded-for"),
                forwarded.then(|| "203.0.113.7".to_string()),
                "{ctx:?}"
            );
            assert_eq!(header("user-agent").as_deref(), Some("Mozilla/5.0"), "{ctx:?}");
        }
    }

    #[test]
    fn forward_ip_for_chooses_the_levels() {
        use UserContext::*;
        let ep = endpoint(&Url::parse("https://w1.elevate-api.cloud").unwrap());
        let xff = |f: Forwarding, ctx| {
            let mut x = n();
            x.user_context = ctx;
            build(&ep, &x, f)
                .headers
                .iter()
                .any(|(h, _)| *h == "x-forwarded-for")
        };
        let only_anonymous = Forwarding::new(true, &[Anonymous]);
        assert!(xff(only_anonymous, Some(Anonymous)));
        assert!(!xff(only_anonymous, None), "omitted is PERSONALIZED");
        assert!(!xff(only_anonymous, Some(Synthetic)));
        let none = Forwarding::new(true, &[]);
        assert!(!xff(none, Some(Personalized)));
        assert!(build(&ep, &n(), none)
            .headers
            .iter()
            .any(|(h, _)| *h == "user-agent"));
        assert_eq!(Forwarding::new(false, &[Anonymous]), Forwarding::NOTHING);
        assert_eq!(
            Forwarding::from(true),
            Forwarding::from_config(&ElevateConfig::default())
        );
        let cfg = |v: &str| {
            let toml = format!("[elevate]\nbase_url = \"http://h\"\nforward_ip_for = {v}\n");
            crate::config::Config::from_toml_with_env(&toml, "", Vec::new())
        };
        let ok = cfg(r#"["ANONYMOUS", "SYNTHETIC"]"#).unwrap();
        assert_eq!(ok.elevate.forward_ip_for, vec![Anonymous, Synthetic]);
        let err = cfg(r#"["anonymous"]"#).unwrap_err().to_string();
        assert!(
            err.contains("forward_ip_for") && err.contains("ANONYMOUS"),
            "{err}"
        );
    }

    /// The URL text `url` made with `form_urlencoded` before [`with_query`] wrote it: the
    /// reference the encoder is held to.
    fn form_urlencoded_url(text: &str, n: &Notification) -> String {
        let mut url = text.to_string();
        let start = match url.find('?') {
            Some(i) => i + 1,
            None => {
                url.push('?');
                url.len()
            }
        };
        let mut q = form_urlencoded::Serializer::for_suffix(url, start);
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
        q.finish()
    }

    /// Any text: printable, with spaces and form syntax (`+%&=`), non-ASCII, control
    /// characters, or arbitrary bytes made UTF-8.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,60}",
            "[ +%&=?#/a-zA-Z0-9*._~!'()äé€😀-]{0,40}",
            "(?s).{0,30}",
            proptest::collection::vec(any::<u8>(), 0..60)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    }

    #[test]
    fn form_encode_examples() {
        let enc = |s: &str| {
            let mut out = String::new();
            form_encode(&mut out, s);
            out
        };
        assert_eq!(enc(""), "");
        assert_eq!(enc("aZ09*-._"), "aZ09*-._");
        assert_eq!(enc("c 1&x"), "c+1%26x");
        assert_eq!(enc("a+b=c%d~"), "a%2Bb%3Dc%25d%7E");
        assert_eq!(enc("ä€x"), "%C3%A4%E2%82%ACx");
        assert_eq!(enc("\n\u{7f}"), "%0A%7F");
    }

    /// The URI `wire_request` used to parse from the whole URL text: the reference for [`uri`].
    fn uri_parsed_whole(ep: &Endpoint, n: &Notification) -> Result<http::Uri, String> {
        http::Uri::from_maybe_shared(bytes::Bytes::from(url(ep.url(), n))).map_err(|e| e.to_string())
    }

    /// `uri`'s answer in the same terms.
    fn uri_from_parts(ep: &Endpoint, n: &Notification) -> Result<http::Uri, String> {
        uri(ep, n).map_err(|e| e.to_string())
    }

    /// Around `http`'s length limit, the URI (or error) is the whole text's: a path and query just
    /// within the limit on their own, but not with the origin, still fail.
    #[test]
    fn uri_at_the_length_limit_is_the_whole_texts() {
        let ep = Endpoint::new(endpoint(&Url::parse("https://w1.elevate-api.cloud").unwrap()));
        assert!(ep.origin.is_some());
        let mut x = n();
        let short = url(ep.url(), &x).len();
        for len in [MAX_URI_LEN - 1, MAX_URI_LEN, MAX_URI_LEN + 1, MAX_URI_LEN + 20] {
            x.market = "M".repeat(len - short + 2);
            assert_eq!(url(ep.url(), &x).len(), len);
            let whole = uri_parsed_whole(&ep, &x);
            assert_eq!(whole.is_ok(), len <= MAX_URI_LEN, "{len}");
            assert_eq!(uri_from_parts(&ep, &x), whole, "{len}");
        }
    }

    /// Base URLs `url` takes but `http` does not (characters in the host it refuses): no origin
    /// is kept, and each request fails with the whole text's error, as before.
    #[test]
    fn an_endpoint_http_does_not_take_fails_each_request_as_before() {
        for base in ["http://a{b", "http://a\"b", "http://a`b", "http://a}b:8080/p"] {
            let ep = Endpoint::new(endpoint(&Url::parse(base).unwrap()));
            assert!(ep.origin.is_none(), "{base}");
            let whole = uri_parsed_whole(&ep, &n());
            assert!(whole.is_err(), "{base}");
            assert_eq!(uri_from_parts(&ep, &n()), whole, "{base}");
        }
    }

    /// What [`header_value`] takes, spelled out byte by byte (what it did before it left the
    /// check to `http`).
    fn header_safe(v: &str) -> bool {
        !v.is_empty()
            && v.len() <= 1024
            && v.bytes()
                .all(|b| b == b' ' || b == b'\t' || (0x21..0x7f).contains(&b))
    }

    #[test]
    fn header_values_examples() {
        assert!(header_value("Mozilla/5.0 (X11; Linux)").is_some());
        assert!(header_value("a\tb").is_some());
        for refused in ["", "caf\u{e9}", "a\nb", "a\u{7f}", &"x".repeat(1025)] {
            assert!(header_value(refused).is_none(), "{refused:?}");
        }
        assert!(header_value(&"x".repeat(1024)).is_some());
    }

    proptest! {
        /// [`header_value`] takes exactly the header-safe texts, and keeps them as they are.
        #[test]
        fn header_value_is_header_safe(v in "[\\x00-\\x{ff}]{0,40}|\\PC{0,20}") {
            let got = header_value(&v);
            prop_assert_eq!(got.is_some(), header_safe(&v));
            if let Some(h) = got {
                prop_assert_eq!(h.as_bytes(), v.as_bytes());
            }
        }

        /// The request's URI is the one the whole URL's text parses to (scheme, authority, path
        /// and query, and its text), with and without userinfo, port, IPv6 host, path prefix or
        /// query on the endpoint.
        #[test]
        fn uri_is_the_url_parsed_whole(market in any_text(), ck in proptest::option::of(any_text()), sk in proptest::option::of(any_text()), base in prop::sample::select(vec!["http://h", "https://h:8443/prefix", "http://u:p%40ss@[::1]:8080/x", "HTTPS://Shop.Example:443/"]), tenant in prop::bool::ANY) {
            let mut x = n();
            x.market = market; x.customer_key = ck; x.session_key = sk;
            let mut at = endpoint(&Url::parse(base).unwrap());
            if tenant {
                at.set_query(Some("tenant=a%20b"));
            }
            let ep = Endpoint::new(at);
            prop_assert!(ep.origin.is_some());
            let whole = uri_parsed_whole(&ep, &x);
            prop_assert_eq!(uri_from_parts(&ep, &x), whole.clone());
            let whole = whole.unwrap();
            let got = uri(&ep, &x).unwrap();
            prop_assert_eq!(got.to_string(), whole.to_string());
            prop_assert_eq!(got.to_string(), url(ep.url(), &x));
        }

        /// The encoder writes what `form_urlencoded`'s byte serialization writes, for any text.
        #[test]
        fn form_encode_is_form_urlencoded(prefix in any_text(), s in any_text()) {
            let mut out = prefix.clone();
            form_encode(&mut out, &s);
            let want: String = form_urlencoded::byte_serialize(s.as_bytes()).collect();
            prop_assert_eq!(out, prefix + &want);
        }

        /// The whole URL is `form_urlencoded::Serializer::for_suffix`'s text, on the endpoints of
        /// the bases of `url_and_body_text_match_url_and_json` and on those texts themselves
        /// (with a query already there, empty or not), with any keys present or absent.
        #[test]
        fn url_text_matches_form_urlencoded(market in any_text(), ck in proptest::option::of(any_text()), sk in proptest::option::of(any_text()), ctx in proptest::option::of(prop::sample::select(vec![UserContext::Personalized, UserContext::Anonymous])), base in prop::sample::select(vec!["http://h", "https://h:8443/prefix", "http://h/p?tenant=a%20b", "http://h/p?"])) {
            let mut x = n();
            x.market = market; x.customer_key = ck; x.session_key = sk; x.user_context = ctx;
            let ep = endpoint(&Url::parse(base).unwrap());
            prop_assert_eq!(url(&ep, &x), form_urlencoded_url(ep.as_str(), &x));
            prop_assert_eq!(with_query(base, &x), form_urlencoded_url(base, &x));
        }

        /// The URL and body are the very text `url`'s `query_pairs_mut` and `json!` made before
        /// they were written directly (on a base with and without a path prefix and a query).
        #[test]
        fn url_and_body_text_match_url_and_json(ticket in "\\PC{0,40}", market in "\\PC{1,10}", ck in proptest::option::of("\\PC{1,20}"), base in prop::sample::select(vec!["http://h", "https://h:8443/prefix", "http://h/p?tenant=a%20b"])) {
            let mut x = n();
            x.body = Body::Ticket(ticket.clone()); x.market = market.clone(); x.customer_key = ck.clone();
            let ep = endpoint(&Url::parse(base).unwrap());
            let mut then = ep.clone();
            {
                let mut q = then.query_pairs_mut();
                if let Some(ck) = &ck { q.append_pair("customerKey", ck); }
                q.append_pair("market", &market);
                q.append_pair("sessionKey", x.session_key.as_deref().unwrap());
            }
            let r = build(&ep, &x, true);
            prop_assert_eq!(r.url, String::from(then));
            prop_assert_eq!(r.body, serde_json::json!({ "ticket": ticket }).to_string());
        }

        #[test]
        fn query_round_trips(ticket in "\\PC{1,50}", market in "\\PC{1,10}", ck in proptest::option::of("\\PC{1,20}"), sk in proptest::option::of("\\PC{1,20}")) {
            let mut x = n();
            x.body = Body::Ticket(ticket.clone()); x.market = market.clone(); x.customer_key = ck.clone(); x.session_key = sk.clone();
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
