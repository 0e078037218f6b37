//! JSON Pointer (RFC 6901) lookup without an allocation per token. Guarantees: the same answer
//! as `serde_json::Value::pointer` for every value and pointer (property-tested below); a token
//! is copied only when it holds an escape (`~0`, `~1`). Limits: lookup only, no mutation.
//!
//! Every mapped field is found through a pointer, several per record: serde_json's own lookup
//! allocates two strings per token (its `replace` calls), 3.6 % of the sink's CPU in the profile
//! of docs/performance.md.

use std::borrow::Cow;

use serde_json::Value;

/// The value `pointer` names in `root`: `""` is `root` itself; otherwise the pointer starts with
/// `/` and each token is an object key, or an array index without sign or leading zeros.
pub(crate) fn at<'v>(root: &'v Value, pointer: &str) -> Option<&'v Value> {
    split(pointer)?.try_fold(root, |target, token| step(target, &token))
}

/// The value the unescaped `tokens` name in `root`, as [`at`] finds it for their pointer.
pub(crate) fn walk<'v>(root: &'v Value, tokens: &[String]) -> Option<&'v Value> {
    tokens.iter().try_fold(root, |target, token| step(target, token))
}

/// One token down: an object's key, or an array's index.
fn step<'v>(target: &'v Value, token: &str) -> Option<&'v Value> {
    match target {
        Value::Object(map) => map.get(token),
        Value::Array(list) => index(token).and_then(|i| list.get(i)),
        _ => None,
    }
}

/// The unescaped tokens of `pointer` (`""`: none, the root), None when it is not a pointer (it
/// then finds nothing in any value).
pub(crate) fn tokens(pointer: &str) -> Option<Vec<String>> {
    Some(split(pointer)?.map(Cow::into_owned).collect())
}

/// The tokens of `pointer` in order, unescaped (`~1` is `/`, `~0` is `~`); a token is copied
/// only when it holds an escape. None when `pointer` is neither `""` nor starts with `/`.
fn split(pointer: &str) -> Option<impl Iterator<Item = Cow<'_, str>>> {
    let rest = match pointer {
        "" => None,
        p => Some(p.strip_prefix('/')?),
    };
    Some(rest.into_iter().flat_map(|r| r.split('/')).map(|raw| {
        if raw.contains('~') {
            Cow::Owned(raw.replace("~1", "/").replace("~0", "~"))
        } else {
            Cow::Borrowed(raw)
        }
    }))
}

/// An array index token: digits only, no leading zero unless it is `0` (as serde_json reads it).
pub(crate) fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn finds_keys_indexes_and_escapes() {
        let v = json!({"a": {"b/c": [10, {"~d": 2}]}, "": 3, "e": [1]});
        assert_eq!(at(&v, ""), Some(&v));
        assert_eq!(at(&v, "/a/b~1c/0"), Some(&json!(10)));
        assert_eq!(at(&v, "/a/b~1c/1/~0d"), Some(&json!(2)));
        assert_eq!(at(&v, "/"), Some(&json!(3)));
        assert_eq!(at(&v, "/e/01"), None);
        assert_eq!(at(&v, "/e/+0"), None);
        assert_eq!(at(&v, "a"), None);
    }

    fn values() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("a".to_string()),
            Just("b/c".to_string()),
            Just("~x".to_string()),
            Just(String::new()),
            Just("0".to_string())
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            "[a-z~/]{0,3}".prop_map(Value::from)
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// The same answer as serde_json's lookup, for pointers built from the tokens the values
        /// use (keys with `/` and `~`, indexes with leading zeros and signs) and from noise.
        #[test]
        fn agrees_with_serde_json(
            v in values(),
            tokens in prop::collection::vec(
                prop_oneof![Just("a"), Just("b~1c"), Just("~0x"), Just(""), Just("0"), Just("1"),
                            Just("01"), Just("+1"), Just("~"), Just("~2"), Just("b/c")],
                0..4,
            ),
            noise in "[a-z0-9~/]{0,6}",
        ) {
            let built: String = tokens.iter().map(|t| format!("/{t}")).collect();
            for p in [built.as_str(), noise.as_str()] {
                prop_assert_eq!(at(&v, p), v.pointer(p), "pointer {:?}", p);
            }
        }
    }
}
