//! The notification contract (add-to-cart, click, favourites, end, payment) as a pure function:
//! no I/O, no clock, no state. Written from elevate-api.md apart from the product (own `Kind`,
//! `UserContext`, paths) on purpose: a shared type would let a product mistake agree with the
//! stand-in that is meant to catch it.

mod body;
#[cfg(test)]
mod kinds_tests;

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The add-to-cart path, the one the stand-in started with.
pub const ADD_TO_CART_PATH: &str = "/api/storefront/v3/notifications/add-to-cart";
/// The click path.
pub const CLICK_PATH: &str = "/api/storefront/v3/notifications/click";
/// The add-favorite path.
pub const ADD_FAVORITE_PATH: &str = "/api/storefront/v3/notifications/add-favorite";
/// The remove-favorite path.
pub const REMOVE_FAVORITE_PATH: &str = "/api/storefront/v3/notifications/remove-favorite";
/// The end (session) path.
pub const END_PATH: &str = "/api/storefront/v3/notifications/end";
/// The payment path (Admin API, needs the `Api-Key` header).
pub const PAYMENT_PATH: &str = "/api/admin/v4/notifications/payment";

/// The notification kinds the stand-in serves, one path each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `{"ticket"}`.
    #[default]
    AddToCart,
    /// `{"ticket"}`.
    Click,
    /// Exactly one of `{"productKey"}` / `{"variantKey"}`.
    AddFavorite,
    /// Exactly one of `{"productKey"}` / `{"variantKey"}`.
    RemoveFavorite,
    /// No body.
    End,
    /// `{"lines": [..]}` with the `Api-Key` header.
    Payment,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 6] = [
        Kind::AddToCart,
        Kind::Click,
        Kind::AddFavorite,
        Kind::RemoveFavorite,
        Kind::End,
        Kind::Payment,
    ];

    /// The exact path of this kind.
    pub fn path(self) -> &'static str {
        match self {
            Kind::AddToCart => ADD_TO_CART_PATH,
            Kind::Click => CLICK_PATH,
            Kind::AddFavorite => ADD_FAVORITE_PATH,
            Kind::RemoveFavorite => REMOVE_FAVORITE_PATH,
            Kind::End => END_PATH,
            Kind::Payment => PAYMENT_PATH,
        }
    }

    /// The kind served at exactly `path`.
    pub fn from_path(path: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.path() == path)
    }
}

/// The parts of a request the contract looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts<'a> {
    /// The method, e.g. `POST`.
    pub method: &'a str,
    /// The path, without query.
    pub path: &'a str,
    /// The raw `Content-Type` header value.
    pub content_type: Option<&'a str>,
    /// The raw query string without `?`.
    pub query: Option<&'a str>,
    /// The raw `Api-Key` header value.
    pub api_key: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// Consent level sent in the `userContext` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UserContext {
    /// Default when omitted: `customerKey` and `sessionKey` required.
    Personalized,
    /// `customerKey` must not be sent, `sessionKey` required.
    Unpersonalized,
    /// Neither key may be sent.
    Anonymous,
    /// Both keys optional.
    Synthetic,
}

impl UserContext {
    /// Parses the exact (case-sensitive) wire value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "PERSONALIZED" => Some(Self::Personalized),
            "UNPERSONALIZED" => Some(Self::Unpersonalized),
            "ANONYMOUS" => Some(Self::Anonymous),
            "SYNTHETIC" => Some(Self::Synthetic),
            _ => None,
        }
    }

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Personalized => "PERSONALIZED",
            Self::Unpersonalized => "UNPERSONALIZED",
            Self::Anonymous => "ANONYMOUS",
            Self::Synthetic => "SYNTHETIC",
        }
    }

    /// Rules for (`customerKey`, `sessionKey`) under this consent level.
    fn key_rules(self) -> (Rule, Rule) {
        match self {
            Self::Personalized => (Rule::Required, Rule::Required),
            Self::Unpersonalized => (Rule::Forbidden, Rule::Required),
            Self::Anonymous => (Rule::Forbidden, Rule::Forbidden),
            Self::Synthetic => (Rule::Optional, Rule::Optional),
        }
    }
}

/// Whether a key must, may or must not be sent.
#[derive(Clone, Copy)]
enum Rule {
    Required,
    Optional,
    Forbidden,
}

/// What a request that follows the contract carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Valid {
    /// Which endpoint.
    pub kind: Kind,
    /// The body's `ticket`, non-empty for add-to-cart and click; empty for the other kinds.
    pub ticket: String,
    /// The body as parsed (`null` for end).
    pub body: serde_json::Value,
    /// The `market` query parameter, non-empty.
    pub market: String,
    /// The `customerKey` query parameter, if sent.
    pub customer_key: Option<String>,
    /// The `sessionKey` query parameter, if sent.
    pub session_key: Option<String>,
    /// The `userContext` query parameter, if sent (absent means PERSONALIZED).
    pub user_context: Option<UserContext>,
}

/// Why a request does not follow the contract: the status to answer and a short message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 400, 401, 404 or 405.
    pub status: u16,
    /// Short, human-readable reason naming the parameter, header or field.
    pub message: String,
}

impl Rejection {
    fn bad(message: impl Into<String>) -> Self {
        Self {
            status: 400,
            message: message.into(),
        }
    }
}

/// Largest piece of client input echoed back in a message.
const ECHO_MAX: usize = 64;

/// Truncates client input for echoing in a message.
fn short(s: &str) -> Cow<'_, str> {
    if s.len() <= ECHO_MAX {
        return Cow::Borrowed(s);
    }
    let mut end = ECHO_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

/// Checks one request without an `Api-Key` against the contract (see [`check`]).
pub fn validate(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    query: Option<&str>,
    body: &[u8],
) -> Result<Valid, Rejection> {
    let parts = Parts {
        method,
        path,
        content_type,
        query,
        api_key: None,
        body,
    };
    check(&parts, None)
}

/// Checks one request against the contract of the kind its path names.
///
/// Checks run in this order: path (404), method (405), `Api-Key` for payment (401: missing, or not
/// `expected_api_key`; always 401 when none is expected), content type (not for end), query, body
/// (400). Messages never echo the key.
pub fn check(req: &Parts<'_>, expected_api_key: Option<&str>) -> Result<Valid, Rejection> {
    let Some(kind) = Kind::from_path(req.path) else {
        return Err(Rejection {
            status: 404,
            message: format!("no such endpoint `{}`", short(req.path)),
        });
    };
    if req.method != "POST" {
        return Err(Rejection {
            status: 405,
            message: format!("method `{}` not allowed; use POST", short(req.method)),
        });
    }
    if kind == Kind::Payment {
        check_api_key(req.api_key, expected_api_key)?;
    }
    if kind != Kind::End {
        check_content_type(req.content_type).map_err(Rejection::bad)?;
    }
    let q = check_query(req.query.unwrap_or("")).map_err(Rejection::bad)?;
    let (ticket, body) = body::check(kind, req.body).map_err(Rejection::bad)?;
    Ok(Valid {
        kind,
        ticket,
        body,
        market: q.market,
        customer_key: q.customer_key,
        session_key: q.session_key,
        user_context: q.user_context,
    })
}

/// 401 unless `given` equals `expected` (compared without an early exit).
fn check_api_key(given: Option<&str>, expected: Option<&str>) -> Result<(), Rejection> {
    let unauthorized = |m: &str| Rejection {
        status: 401,
        message: m.into(),
    };
    let Some(expected) = expected else {
        return Err(unauthorized(
            "no Api-Key is configured in the stand-in; payment refused",
        ));
    };
    let Some(given) = given else {
        return Err(unauthorized("missing Api-Key header"));
    };
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(unauthorized("wrong Api-Key"))
    }
}

fn check_content_type(content_type: Option<&str>) -> Result<(), String> {
    let Some(ct) = content_type else {
        return Err("missing Content-Type header; expected application/json".into());
    };
    let mut parts = ct.split(';');
    let mime = parts.next().unwrap_or("").trim();
    let mut charset = None;
    for param in parts {
        let param = param.trim();
        if param.is_empty() {
            continue;
        }
        let Some((name, value)) = param.split_once('=') else {
            return Err(format!("malformed Content-Type `{}`", short(ct)));
        };
        if name.trim().eq_ignore_ascii_case("charset") {
            charset = Some(value.trim().trim_matches('"'));
        }
    }
    let utf8 = |c: &str| c.eq_ignore_ascii_case("utf-8");
    if mime.eq_ignore_ascii_case("application/json") {
        match charset {
            None => Ok(()),
            Some(c) if utf8(c) => Ok(()),
            Some(c) => Err(format!(
                "unsupported Content-Type charset `{}`; expected utf-8",
                short(c)
            )),
        }
    } else if mime.eq_ignore_ascii_case("text/plain") {
        match charset {
            Some(c) if utf8(c) => Ok(()),
            _ => Err("Content-Type text/plain needs charset=utf-8".into()),
        }
    } else {
        Err(format!(
            "unsupported Content-Type `{}`; expected application/json or text/plain;charset=utf-8",
            short(ct)
        ))
    }
}

/// The query parameters of a valid request.
struct Query {
    market: String,
    customer_key: Option<String>,
    session_key: Option<String>,
    user_context: Option<UserContext>,
}

const KNOWN_PARAMS: [&str; 4] = ["market", "customerKey", "sessionKey", "userContext"];

fn check_query(query: &str) -> Result<Query, String> {
    let mut market = None;
    let mut customer_key = None;
    let mut session_key = None;
    let mut user_context_raw = None;
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match name.as_ref() {
            "market" => &mut market,
            "customerKey" => &mut customer_key,
            "sessionKey" => &mut session_key,
            "userContext" => &mut user_context_raw,
            other => {
                let hint = KNOWN_PARAMS
                    .iter()
                    .find(|k| k.eq_ignore_ascii_case(other))
                    .map(|k| format!(" (names are case-sensitive: did you mean `{k}`?)"))
                    .unwrap_or_default();
                return Err(format!("unknown query parameter `{}`{hint}", short(other)));
            }
        };
        if slot.is_some() {
            return Err(format!("query parameter `{name}` given more than once"));
        }
        *slot = Some(value.into_owned());
    }

    let market = match market {
        None => return Err("missing required query parameter `market`".into()),
        Some(m) if m.is_empty() => return Err("query parameter `market` must not be empty".into()),
        Some(m) => m,
    };
    let user_context = match user_context_raw.as_deref() {
        None => None,
        Some(raw) => Some(UserContext::parse(raw).ok_or_else(|| {
            format!(
                "invalid `userContext` `{}`; expected PERSONALIZED, UNPERSONALIZED, ANONYMOUS or SYNTHETIC",
                short(raw)
            )
        })?),
    };
    let effective = user_context.unwrap_or(UserContext::Personalized);
    let (customer_rule, session_rule) = effective.key_rules();
    check_key("customerKey", &customer_key, customer_rule, effective)?;
    check_key("sessionKey", &session_key, session_rule, effective)?;
    Ok(Query {
        market,
        customer_key,
        session_key,
        user_context,
    })
}

fn check_key(name: &str, value: &Option<String>, rule: Rule, context: UserContext) -> Result<(), String> {
    let ctx = context.as_str();
    match (rule, value) {
        (Rule::Forbidden, Some(_)) => Err(format!(
            "query parameter `{name}` must not be sent when userContext is {ctx}"
        )),
        (Rule::Required, None) => Err(format!(
            "missing query parameter `{name}`, required when userContext is {ctx}"
        )),
        (Rule::Required | Rule::Optional, Some(v)) if v.is_empty() => {
            Err(format!("query parameter `{name}` must not be empty"))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> = Some("application/json");
    const BODY: &[u8] = br#"{"ticket":"T1"}"#;

    fn v(query: &str) -> Result<Valid, Rejection> {
        validate("POST", ADD_TO_CART_PATH, JSON, Some(query), BODY)
    }

    fn rejected(r: Result<Valid, Rejection>, status: u16, needle: &str) {
        let e = r.expect_err("expected a rejection");
        assert_eq!(e.status, status, "{e:?}");
        assert!(
            e.message.contains(needle),
            "message {:?} lacks {needle:?}",
            e.message
        );
    }

    #[test]
    fn accepts_each_user_context() {
        let ok = v("market=SE&customerKey=c1&sessionKey=s1").unwrap();
        assert_eq!(
            ok,
            Valid {
                kind: Kind::AddToCart,
                ticket: "T1".into(),
                body: serde_json::json!({"ticket": "T1"}),
                market: "SE".into(),
                customer_key: Some("c1".into()),
                session_key: Some("s1".into()),
                user_context: None,
            }
        );
        let ok = v("market=SE&customerKey=c1&sessionKey=s1&userContext=PERSONALIZED").unwrap();
        assert_eq!(ok.user_context, Some(UserContext::Personalized));
        let ok = v("market=SE&sessionKey=s1&userContext=UNPERSONALIZED").unwrap();
        assert_eq!(ok.customer_key, None);
        assert_eq!(ok.user_context, Some(UserContext::Unpersonalized));
        let ok = v("market=SE&userContext=ANONYMOUS").unwrap();
        assert_eq!((ok.customer_key, ok.session_key), (None, None));
        v("market=SE&userContext=SYNTHETIC").unwrap();
        v("market=SE&userContext=SYNTHETIC&customerKey=c").unwrap();
        v("market=SE&userContext=SYNTHETIC&sessionKey=s&customerKey=c").unwrap();
    }

    #[test]
    fn decodes_percent_encoding() {
        let ok = v("market=SE&customerKey=a%20b%26c&sessionKey=s%2F1").unwrap();
        assert_eq!(ok.customer_key.as_deref(), Some("a b&c"));
        assert_eq!(ok.session_key.as_deref(), Some("s/1"));
    }

    #[test]
    fn key_rules_per_user_context() {
        rejected(v("market=SE&sessionKey=s"), 400, "`customerKey`");
        rejected(v("market=SE&customerKey=c"), 400, "`sessionKey`");
        rejected(
            v("market=SE&customerKey=c&sessionKey=s&userContext=UNPERSONALIZED"),
            400,
            "`customerKey` must not be sent",
        );
        rejected(
            v("market=SE&userContext=UNPERSONALIZED"),
            400,
            "missing query parameter `sessionKey`",
        );
        rejected(
            v("market=SE&customerKey=c&userContext=ANONYMOUS"),
            400,
            "`customerKey` must not be sent when userContext is ANONYMOUS",
        );
        rejected(
            v("market=SE&sessionKey=s&userContext=ANONYMOUS"),
            400,
            "`sessionKey` must not be sent",
        );
        // "must not be sent" means absent, even empty.
        rejected(
            v("market=SE&customerKey=&userContext=ANONYMOUS"),
            400,
            "`customerKey` must not be sent",
        );
        rejected(
            v("market=SE&customerKey=&sessionKey=s"),
            400,
            "`customerKey` must not be empty",
        );
    }

    #[test]
    fn market_and_unknown_params() {
        rejected(v("customerKey=c&sessionKey=s"), 400, "`market`");
        rejected(
            v("market=&customerKey=c&sessionKey=s"),
            400,
            "`market` must not be empty",
        );
        rejected(v(""), 400, "`market`");
        rejected(
            v("market=SE&customerkey=c&sessionKey=s"),
            400,
            "unknown query parameter `customerkey` (names are case-sensitive: did you mean `customerKey`?)",
        );
        rejected(v("market=SE&customerKey=c&sessionKey=s&foo=1"), 400, "`foo`");
        rejected(v("Market=SE&customerKey=c&sessionKey=s"), 400, "`Market`");
        rejected(
            v("market=SE&market=NO&customerKey=c&sessionKey=s"),
            400,
            "`market` given more than once",
        );
        rejected(
            v("market=SE&userContext=personalized&customerKey=c&sessionKey=s"),
            400,
            "invalid `userContext`",
        );
        let e = validate("POST", ADD_TO_CART_PATH, JSON, None, BODY).unwrap_err();
        assert!(e.message.contains("`market`"));
    }

    #[test]
    fn path_and_method() {
        let q = Some("market=SE&userContext=ANONYMOUS");
        rejected(
            validate(
                "POST",
                "/api/storefront/v3/notifications/remove-recently-viewed",
                JSON,
                q,
                BODY,
            ),
            404,
            "no such endpoint",
        );
        rejected(
            validate("POST", &format!("{ADD_TO_CART_PATH}/"), JSON, q, BODY),
            404,
            "no such endpoint",
        );
        rejected(validate("GET", ADD_TO_CART_PATH, JSON, q, BODY), 405, "GET");
        rejected(validate("PUT", ADD_TO_CART_PATH, JSON, q, BODY), 405, "PUT");
    }

    #[test]
    fn content_types() {
        let q = Some("market=SE&userContext=ANONYMOUS");
        let ct = |c: Option<&str>| validate("POST", ADD_TO_CART_PATH, c, q, BODY);
        ct(Some("application/json")).unwrap();
        ct(Some("application/json;charset=utf-8")).unwrap();
        ct(Some("application/json; charset=UTF-8")).unwrap();
        ct(Some("Application/JSON; charset=\"utf-8\"")).unwrap();
        ct(Some("text/plain;charset=utf-8")).unwrap();
        ct(Some("text/plain; charset=UTF-8")).unwrap();
        rejected(ct(None), 400, "Content-Type");
        rejected(ct(Some("text/plain")), 400, "text/plain needs charset=utf-8");
        rejected(ct(Some("application/x-www-form-urlencoded")), 400, "Content-Type");
        rejected(ct(Some("application/json;charset=latin1")), 400, "charset");
    }

    #[test]
    fn bodies() {
        let q = Some("market=SE&userContext=ANONYMOUS");
        let b = |body: &str| validate("POST", ADD_TO_CART_PATH, JSON, q, body.as_bytes());
        assert_eq!(b(r#"{"ticket":"x","other":[1,2]}"#).unwrap().ticket, "x");
        assert_eq!(b(r#" {"ticket":"é\u00e9"} "#).unwrap().ticket, "éé");
        rejected(b(""), 400, "empty body");
        rejected(b("  "), 400, "empty body");
        rejected(b(r#"{"ticket":""}"#), 400, "`ticket` must not be empty");
        rejected(
            b(r#"{"ticket":5}"#),
            400,
            "`ticket` must be a string, got a number",
        );
        rejected(b(r#"{"ticket":["a"]}"#), 400, "`ticket` must be a string");
        rejected(b(r#"{"ticket":null}"#), 400, "missing `ticket`");
        rejected(b(r#"{"productKey":"p"}"#), 400, "missing `ticket`");
        rejected(b(r#"{"ticket":"x""#), 400, "malformed JSON");
        rejected(b("ticket=x"), 400, "malformed JSON");
        rejected(b(r#"["x"]"#), 400, "body must be a JSON object, got an array");
        rejected(b(r#""x""#), 400, "body must be a JSON object");
        rejected(b(r#"{"ticket":"a","ticket":"b"}"#), 400, "ticket");
        let e = validate("POST", ADD_TO_CART_PATH, JSON, q, &[0xff, 0xfe]).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn long_input_is_truncated_in_messages() {
        let long = "x".repeat(10_000);
        let e = v(&format!("market=SE&{long}=1")).unwrap_err();
        assert!(e.message.len() < 200, "{}", e.message.len());
    }
}
