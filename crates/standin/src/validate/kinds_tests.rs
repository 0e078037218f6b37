//! Each kind beyond add-to-cart: what it accepts and what it refuses, with the message naming why.

use serde_json::json;

use super::*;

const JSON: Option<&str> = Some("application/json;charset=utf-8");
const KEY: &str = "admin-key-1";
const Q: &str = "customerKey=c1&market=SE&sessionKey=s1";

fn req<'a>(path: &'a str, query: &'a str, body: &'a str, api_key: Option<&'a str>) -> Parts<'a> {
    Parts {
        method: "POST",
        path,
        content_type: JSON,
        query: Some(query),
        api_key,
        body: body.as_bytes(),
    }
}

fn ok(kind: Kind, body: &str) -> Valid {
    check(&req(kind.path(), Q, body, Some(KEY)), Some(KEY))
        .unwrap_or_else(|e| panic!("{kind:?} {body}: {e:?}"))
}

fn refused(kind: Kind, body: &str, status: u16, needle: &str) {
    let e = check(&req(kind.path(), Q, body, Some(KEY)), Some(KEY)).expect_err(body);
    assert_eq!(e.status, status, "{kind:?} {body}: {e:?}");
    assert!(
        e.message.contains(needle),
        "{kind:?} {body}: {:?} lacks {needle:?}",
        e.message
    );
}

#[test]
fn paths_round_trip() {
    for k in Kind::ALL {
        assert_eq!(Kind::from_path(k.path()), Some(k));
    }
    assert_eq!(Kind::from_path("/api/storefront/v3/notifications/payment"), None);
    assert_eq!(Kind::from_path("/api/admin/v4/notifications/click"), None);
    assert_eq!(
        serde_json::to_value(Kind::RemoveFavorite).unwrap(),
        json!("remove-favorite")
    );
}

#[test]
fn click_takes_a_ticket() {
    let v = ok(Kind::Click, r#"{"ticket":"Oy9m"}"#);
    assert_eq!((v.kind, v.ticket.as_str()), (Kind::Click, "Oy9m"));
    assert_eq!(v.market, "SE");
    refused(Kind::Click, r#"{"ticket":""}"#, 400, "`ticket` must not be empty");
    refused(Kind::Click, r#"{"productKey":"p"}"#, 400, "missing `ticket`");
    refused(Kind::Click, "", 400, "empty body");
}

#[test]
fn favourites_take_exactly_one_key() {
    for kind in [Kind::AddFavorite, Kind::RemoveFavorite] {
        let v = ok(kind, r#"{"productKey":"p1"}"#);
        assert_eq!((v.kind, v.ticket.as_str()), (kind, ""));
        assert_eq!(v.body, json!({"productKey": "p1"}));
        ok(kind, r#"{"variantKey":"v1"}"#);
        refused(
            kind,
            r#"{"productKey":"p","variantKey":"v"}"#,
            400,
            "both `productKey` and `variantKey`",
        );
        refused(kind, r#"{}"#, 400, "missing `productKey` or `variantKey`");
        refused(
            kind,
            r#"{"ticket":"t"}"#,
            400,
            "missing `productKey` or `variantKey`",
        );
        refused(
            kind,
            r#"{"productKey":""}"#,
            400,
            "`productKey` must not be empty",
        );
        refused(
            kind,
            r#"{"variantKey":7}"#,
            400,
            "`variantKey` must be a string, got a number",
        );
        refused(kind, r#"["p"]"#, 400, "body must be a JSON object");
        refused(
            kind,
            r#"{"productKey":"a","productKey":"b"}"#,
            400,
            "duplicate key `productKey`",
        );
        refused(kind, "", 400, "empty body");
    }
}

#[test]
fn end_takes_no_body_and_no_content_type() {
    let mut r = req(END_PATH, Q, "", None);
    r.content_type = None;
    let v = check(&r, None).unwrap();
    assert_eq!((v.kind, v.body.clone()), (Kind::End, serde_json::Value::Null));
    let e = check(&req(END_PATH, Q, "{}", None), None).unwrap_err();
    assert_eq!((e.status, e.message.as_str()), (400, "end takes no body"));
    let e = check(&req(END_PATH, Q, " ", None), None).unwrap_err();
    assert_eq!(e.status, 400);
}

#[test]
fn payment_needs_the_expected_api_key() {
    let body = r#"{"lines":[{"variantKey":"v1","quantity":2,"sellingPrice":39.0,"cost":15.2}]}"#;
    let v = check(&req(PAYMENT_PATH, Q, body, Some(KEY)), Some(KEY)).unwrap();
    assert_eq!(v.kind, Kind::Payment);
    assert_eq!(v.body, serde_json::from_str::<serde_json::Value>(body).unwrap());
    for (given, expected, needle) in [
        (None, Some(KEY), "missing Api-Key"),
        (Some("admin-key-2"), Some(KEY), "wrong Api-Key"),
        (Some("admin-key-"), Some(KEY), "wrong Api-Key"),
        (Some(KEY), None, "no Api-Key is configured"),
    ] {
        let e = check(&req(PAYMENT_PATH, Q, body, given), expected).unwrap_err();
        assert_eq!(e.status, 401, "{given:?}");
        assert!(e.message.contains(needle), "{:?}", e.message);
        assert!(
            !e.message.contains(KEY) && !e.message.contains("admin-key"),
            "key echoed: {}",
            e.message
        );
    }
    // The key matters only for payment.
    check(&req(CLICK_PATH, Q, r#"{"ticket":"t"}"#, None), None).unwrap();
}

#[test]
fn payment_lines_are_checked_naming_the_field() {
    let line = |l: &str| {
        format!(r#"{{"lines":[{{"variantKey":"v1","quantity":1,"sellingPrice":1,"cost":0}},{l}]}}"#)
    };
    ok(
        Kind::Payment,
        &line(r#"{"variantKey":"v2","quantity":3,"sellingPrice":0,"cost":0.5,"extra":1}"#),
    );
    let p = Kind::Payment;
    refused(p, r#"{"lines":[]}"#, 400, "`lines` must not be empty");
    refused(p, r#"{}"#, 400, "missing `lines`");
    refused(
        p,
        r#"{"lines":{}}"#,
        400,
        "`lines` must be an array, got an object",
    );
    refused(p, &line("5"), 400, "lines[1] must be an object, got a number");
    let cases = [
        (
            r#"{"quantity":1,"sellingPrice":1,"cost":1}"#,
            "lines[1] missing `variantKey`",
        ),
        (
            r#"{"variantKey":"","quantity":1,"sellingPrice":1,"cost":1}"#,
            "lines[1] `variantKey` must not be empty",
        ),
        (
            r#"{"variantKey":5,"quantity":1,"sellingPrice":1,"cost":1}"#,
            "lines[1] `variantKey` must be a string",
        ),
        (
            r#"{"variantKey":"v","quantity":0,"sellingPrice":1,"cost":1}"#,
            "lines[1] `quantity` must be a positive integer, got 0",
        ),
        (
            r#"{"variantKey":"v","quantity":-1,"sellingPrice":1,"cost":1}"#,
            "`quantity` must be a positive integer, got -1",
        ),
        (
            r#"{"variantKey":"v","quantity":1.5,"sellingPrice":1,"cost":1}"#,
            "`quantity` must be a positive integer",
        ),
        (
            r#"{"variantKey":"v","quantity":"2","sellingPrice":1,"cost":1}"#,
            "`quantity` must be a number, got a string",
        ),
        (
            r#"{"variantKey":"v","sellingPrice":1,"cost":1}"#,
            "lines[1] missing `quantity`",
        ),
        (
            r#"{"variantKey":"v","quantity":1,"sellingPrice":-0.01,"cost":1}"#,
            "`sellingPrice` must be a finite, non-negative number",
        ),
        (
            r#"{"variantKey":"v","quantity":1,"sellingPrice":1,"cost":-3}"#,
            "lines[1] `cost` must be a finite, non-negative number",
        ),
        (
            r#"{"variantKey":"v","quantity":1,"cost":1}"#,
            "lines[1] missing `sellingPrice`",
        ),
        (
            r#"{"variantKey":"v","quantity":1,"sellingPrice":1}"#,
            "lines[1] missing `cost`",
        ),
        (
            r#"{"variantKey":"v","quantity":1,"sellingPrice":null,"cost":1}"#,
            "missing `sellingPrice`",
        ),
        (
            r#"{"variantKey":"v","quantity":1,"sellingPrice":"1","cost":1}"#,
            "`sellingPrice` must be a number, got a string",
        ),
    ];
    for (l, needle) in cases {
        refused(p, &line(l), 400, needle);
    }
    refused(
        p,
        r#"{"lines":[{"variantKey":"v","quantity":1,"sellingPrice":1e999,"cost":1}]}"#,
        400,
        "malformed JSON",
    );
}

#[test]
fn consent_rules_hold_for_every_kind() {
    let bodies = [
        (Kind::AddToCart, r#"{"ticket":"t"}"#),
        (Kind::Click, r#"{"ticket":"t"}"#),
        (Kind::AddFavorite, r#"{"variantKey":"v"}"#),
        (Kind::RemoveFavorite, r#"{"productKey":"p"}"#),
        (Kind::End, ""),
        (
            Kind::Payment,
            r#"{"lines":[{"variantKey":"v","quantity":1,"sellingPrice":1,"cost":1}]}"#,
        ),
    ];
    for (kind, body) in bodies {
        let c = |q: &str| check(&req(kind.path(), q, body, Some(KEY)), Some(KEY));
        c("market=SE&customerKey=c&sessionKey=s").unwrap();
        c("market=SE&sessionKey=s&userContext=UNPERSONALIZED").unwrap();
        let v = c("market=SE&userContext=ANONYMOUS").unwrap();
        assert_eq!((v.customer_key, v.session_key), (None, None), "{kind:?}");
        c("market=SE&userContext=SYNTHETIC").unwrap();
        for (q, needle) in [
            ("market=SE&sessionKey=s", "missing query parameter `customerKey`"),
            ("market=SE&customerKey=c", "missing query parameter `sessionKey`"),
            (
                "market=SE&customerKey=c&sessionKey=s&userContext=UNPERSONALIZED",
                "`customerKey` must not be sent",
            ),
            (
                "market=SE&sessionKey=s&userContext=ANONYMOUS",
                "`sessionKey` must not be sent",
            ),
            ("customerKey=c&sessionKey=s", "`market`"),
            (
                "market=SE&customerKey=c&sessionKey=s&userContext=nope",
                "invalid `userContext`",
            ),
        ] {
            let e = c(q).expect_err(q);
            assert_eq!(e.status, 400, "{kind:?} {q}");
            assert!(e.message.contains(needle), "{kind:?} {q}: {}", e.message);
        }
        let mut get = req(kind.path(), Q, body, Some(KEY));
        get.method = "GET";
        assert_eq!(check(&get, Some(KEY)).unwrap_err().status, 405, "{kind:?}");
    }
}
