//! The v3 add-to-cart contract as a pure function: no I/O, no clock, no state.
//! Written from elevate-api.md apart from the product (own `UserContext`, own path) on purpose: a
//! shared type would let a product mistake agree with the stand-in that is meant to catch it.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The only path the stand-in serves as Elevate.
pub const ADD_TO_CART_PATH: &str = "/api/storefront/v3/notifications/add-to-cart";

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
    /// The body's `ticket`, non-empty.
    pub ticket: String,
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
    /// 400, 404 or 405.
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

/// Checks one request against the add-to-cart contract.
///
/// `query` is the raw query string without `?`; `content_type` the raw header value.
/// Checks run in this order: path (404), method (405), content type, query, body (400).
pub fn validate(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    query: Option<&str>,
    body: &[u8],
) -> Result<Valid, Rejection> {
    if path != ADD_TO_CART_PATH {
        return Err(Rejection {
            status: 404,
            message: format!("no such endpoint `{}`", short(path)),
        });
    }
    if method != "POST" {
        return Err(Rejection {
            status: 405,
            message: format!("method `{}` not allowed; use POST", short(method)),
        });
    }
    check_content_type(content_type).map_err(Rejection::bad)?;
    let q = check_query(query.unwrap_or("")).map_err(Rejection::bad)?;
    let ticket = check_body(body).map_err(Rejection::bad)?;
    Ok(Valid {
        ticket,
        market: q.market,
        customer_key: q.customer_key,
        session_key: q.session_key,
        user_context: q.user_context,
    })
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

/// Only the field the contract cares about; other fields are ignored.
#[derive(Deserialize)]
struct Body {
    /// Missing and `null` both land as `Value::Null`.
    #[serde(default)]
    ticket: serde_json::Value,
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn check_body(body: &[u8]) -> Result<String, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err("empty body; expected a JSON object with a `ticket`".into());
    }
    // A derived struct would also take a JSON array; only an object is a valid body.
    let is_object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let parsed: Body = match serde_json::from_slice(body) {
        Ok(parsed) if is_object => parsed,
        result => {
            return Err(match serde_json::from_slice::<serde_json::Value>(body) {
                Err(syntax) => format!("malformed JSON body: {syntax}"),
                Ok(v) if !v.is_object() => {
                    format!("body must be a JSON object, got {}", json_kind(&v))
                }
                Ok(_) => match result {
                    Err(e) => format!("invalid body: {e}"),
                    Ok(_) => "invalid body".into(),
                },
            });
        }
    };
    match parsed.ticket {
        serde_json::Value::Null => Err("missing `ticket` in body".into()),
        serde_json::Value::String(t) if t.is_empty() => Err("`ticket` must not be empty".into()),
        serde_json::Value::String(t) => Ok(t),
        other => Err(format!("`ticket` must be a string, got {}", json_kind(&other))),
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
                ticket: "T1".into(),
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
            validate("POST", "/api/storefront/v3/notifications/click", JSON, q, BODY),
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
