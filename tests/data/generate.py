#!/usr/bin/env python3
"""Writes the hostile-record corpus (tests/data/corpus/*) and its expected outcomes
(tests/data/expected.json). Run from anywhere: `python3 tests/data/generate.py`.

Each record is declared next to the outcome it must have under the default [mapping]:
  outcome "invalid": map_record returns Invalid with `reason` (and `detail_contains`, if given);
                     the service dead-letters it with header elevate-sink-reason = reason.
  outcome "mapped":  map_record yields exactly `tickets` (in line order) and `skipped`;
                     the service delivers every ticket to Elevate.
  outcome "skipped": map_record yields no notification, only `skipped`;
                     the service counts it under elevate_sink_skipped_total and sends nothing.
Tickets of mapped records start with "hostile-" so a run can tell them from its own; a ticket
written as {"prefix": P, "repeat": R, "times": N} stands for P followed by R repeated N times.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")
MIB = 1 << 20


def ev(ticket="hostile-x", **over):
    """A valid PERSONALIZED add_to_cart event with one Elevate line, fields overridable."""
    e = {
        "type": "add_to_cart",
        "market": "SE",
        "customerKey": "cust-corpus-7f3a",
        "sessionKey": "sess-corpus-7f3a",
        "lines": [{"source": "elevate", "ticket": ticket, "productKey": "p1"}],
    }
    e.update(over)
    return e


def j(v):
    return json.dumps(v, ensure_ascii=False).encode()


def raw(s):
    return s.encode() if isinstance(s, str) else s


HEAD = b'{"type":"add_to_cart","market":"SE","customerKey":"cust-corpus-7f3a","sessionKey":"sess-corpus-7f3a",'
GOOD_LINE = b'"lines":[{"source":"elevate","ticket":"hostile-%s"}]'

entries = []


def invalid(name, what, value, reason, detail=None):
    e = {"name": name, "what": what, "outcome": "invalid", "reason": reason}
    if detail:
        e["detail_contains"] = detail
    entries.append((e, value))


def mapped(name, what, value, tickets, skipped=()):
    entries.append(({"name": name, "what": what, "outcome": "mapped", "tickets": list(tickets),
                     "skipped": list(skipped)}, value))


def skipped(name, what, value, reasons):
    entries.append(({"name": name, "what": what, "outcome": "skipped", "skipped": list(reasons)}, value))


# --- a baseline -----------------------------------------------------------------------------
mapped("good-basic.json", "a well-formed event (baseline)", j(ev("hostile-good-basic")), ["hostile-good-basic"])

# --- nesting --------------------------------------------------------------------------------
invalid("deep-nesting-arrays-10000.json", "10,000 nested arrays as the lines value (serde_json stops at 128)",
        HEAD + b'"lines":' + b"[" * 10000 + b"]" * 10000 + b"}", "malformed_json", "recursion limit")
invalid("deep-nesting-top-level-10000.json", "10,000 nested arrays as the whole value",
        b"[" * 10000 + b"]" * 10000, "malformed_json", "recursion limit")
invalid("deep-nesting-objects-10000.json", "10,000 nested objects in an ignored field",
        HEAD + GOOD_LINE % b"deep-obj" + b',"x":' + b'{"a":' * 10000 + b"1" + b"}" * 10000 + b"}",
        "malformed_json", "recursion limit")
invalid("deep-nesting-unclosed-100000.json", "100,000 opening brackets, never closed",
        b"[" * 100000, "malformed_json")
mapped("nesting-100-ignored-field.json", "100 nested arrays in an ignored field: within the limit",
       HEAD + GOOD_LINE % b"nest-100" + b',"x":' + b"[" * 100 + b"]" * 100 + b"}", ["hostile-nest-100"])

# --- huge strings and values ----------------------------------------------------------------
mapped("huge-ticket-256k.json", "a 256 KiB ticket (no documented maximum)",
       j(ev("hostile-huge-" + "A" * (256 * 1024))), [{"prefix": "hostile-huge-", "repeat": "A", "times": 256 * 1024}])
mapped("huge-ignored-string-256k.json", "a 256 KiB string in a field nobody reads",
       j(ev("hostile-huge-ignored", productName="n" * (256 * 1024))), ["hostile-huge-ignored"])
mapped("one-mib-value.json", "a 1 MiB string in an ignored field (record > 1 MiB)",
       j(ev("hostile-one-mib", notes="m" * MIB)), ["hostile-one-mib"])
invalid("one-mib-malformed.json", "1 MiB of an unterminated string",
        b'{"type":"add_to_cart","notes":"' + b"z" * MIB, "malformed_json", "EOF")
invalid("huge-market-number.json", "a 64 KiB digit string as the market number (beyond a double)",
        HEAD.replace(b'"market":"SE",', b"") + b'"market":' + b"9" * 65536 + b"," + GOOD_LINE % b"x" + b"}",
        "malformed_json", "out of range")
invalid("long-market-number.json", "a 300-digit number as the market",
        HEAD.replace(b'"market":"SE",', b"") + b'"market":' + b"9" * 300 + b"," + GOOD_LINE % b"x" + b"}",
        "wrong_type", "market")
mapped("many-lines-1000.json", "1,000 cart lines in one record",
       j(ev(lines=[{"source": "elevate", "ticket": f"hostile-many-{i}"} for i in range(1000)])),
       [f"hostile-many-{i}" for i in range(1000)])

# --- numbers (and other types) where strings belong ------------------------------------------
invalid("number-as-ticket.json", "ticket is a number", j(ev(lines=[{"source": "elevate", "ticket": 12345}])),
        "wrong_type", "lines[0] ticket")
invalid("number-as-market.json", "market is a number", j(ev("hostile-x", market=46)), "wrong_type", "market")
invalid("number-as-type.json", "event type is a number", j(ev("hostile-x", type=1)), "wrong_type", "event_type")
invalid("bool-as-customer-key.json", "customerKey is a boolean", j(ev("hostile-x", customerKey=True)),
        "wrong_type", "customer_key")
invalid("object-as-session-key.json", "sessionKey is an object", j(ev("hostile-x", sessionKey={"id": 1})),
        "wrong_type", "session_key")
invalid("array-as-user-agent.json", "visitor.userAgent is an array",
        j(ev("hostile-x", visitor={"userAgent": ["a"]})), "wrong_type", "user_agent")
invalid("string-as-line.json", "a cart line is a string", j(ev(lines=["hostile-x"])), "wrong_type", "lines[0]")
invalid("null-as-line.json", "a cart line is null", j(ev(lines=[None])), "wrong_type", "lines[0]")
invalid("object-as-lines.json", "lines is an object", j(ev(lines={"0": {"source": "elevate", "ticket": "t"}})),
        "wrong_type", "lines")
invalid("number-as-source.json", "line source is a number", j(ev(lines=[{"source": 1, "ticket": "t"}])),
        "wrong_type", "line_source")
invalid("number-as-user-context.json", "userContext is a number", j(ev("hostile-x", userContext=1)),
        "wrong_type", "user_context")
mapped("huge-integer-ignored.json", "a 30-digit integer in an ignored field (becomes a float)",
       HEAD + GOOD_LINE % b"huge-int" + b',"qty":123456789012345678901234567890}', ["hostile-huge-int"])
invalid("number-overflow.json", "1e400 does not fit a double", HEAD + GOOD_LINE % b"x" + b',"price":1e400}',
        "malformed_json", "out of range")
invalid("event-time-float.json", "occurredAt is a fractional number",
        j(ev("hostile-x", occurredAt=1.7e12 + 0.5)), "bad_value", "event_time")
invalid("event-time-garbage.json", "occurredAt is not RFC 3339", j(ev("hostile-x", occurredAt="yesterday")),
        "bad_value", "event_time")
invalid("event-time-bool.json", "occurredAt is a boolean", j(ev("hostile-x", occurredAt=False)),
        "wrong_type", "event_time")
mapped("event-time-negative.json", "occurredAt before 1970 (epoch ms)", j(ev("hostile-neg-time", occurredAt=-5)),
       ["hostile-neg-time"])
mapped("event-time-year-9999.json", "occurredAt in year 9999",
       j(ev("hostile-year-9999", occurredAt="9999-12-31T23:59:59Z")), ["hostile-year-9999"])

# --- NaN-like tokens --------------------------------------------------------------------------
for tok, name in [(b"NaN", "nan"), (b"Infinity", "infinity"), (b"-Infinity", "minus-infinity"),
                  (b"undefined", "undefined"), (b"None", "python-none"), (b"0x1F", "hex-number"),
                  (b"+1", "plus-number"), (b".5", "leading-dot"), (b"01", "leading-zero")]:
    invalid(f"token-{name}.json", f"{tok.decode()} is not JSON", HEAD + GOOD_LINE % b"x" + b',"price":' + tok + b"}",
            "malformed_json")

# --- duplicate keys (serde_json: the last one wins) ------------------------------------------
mapped("duplicate-ticket.json", "two ticket keys in one line: the last wins",
       HEAD + b'"lines":[{"source":"elevate","ticket":"hostile-dup-first","ticket":"hostile-dup-last"}]}',
       ["hostile-dup-last"])
mapped("duplicate-type.json", "type given twice, page_view then add_to_cart: the last wins",
       b'{"type":"page_view",' + HEAD[1:] + GOOD_LINE % b"dup-type" + b"}", ["hostile-dup-type"])
skipped("duplicate-type-reversed.json", "type given twice, add_to_cart then page_view: the last wins",
        HEAD + GOOD_LINE % b"x" + b',"type":"page_view"}', ["not_add_to_cart"])
mapped("duplicate-lines.json", "lines given twice: the last array wins",
       HEAD + b'"lines":[{"source":"elevate","ticket":"hostile-dup-lines-1"}],' + GOOD_LINE % b"dup-lines-2" + b"}",
       ["hostile-dup-lines-2"])

# --- byte order marks and encodings -----------------------------------------------------------
mapped("bom-utf8.json", "a UTF-8 BOM before the JSON (tolerated)", b"\xef\xbb\xbf" + j(ev("hostile-bom")),
       ["hostile-bom"])
invalid("bom-twice.json", "two UTF-8 BOMs", b"\xef\xbb\xbf\xef\xbb\xbf" + j(ev("hostile-x")), "malformed_json")
invalid("bom-utf16le.json", "UTF-16LE with its BOM", b"\xff\xfe" + json.dumps(ev("hostile-x")).encode("utf-16-le"),
        "invalid_utf8")
invalid("utf16be-no-bom.json", "UTF-16BE without BOM", json.dumps(ev("hostile-x")).encode("utf-16-be"),
        "malformed_json")
invalid("utf32le.json", "UTF-32LE with its BOM", json.dumps(ev("hostile-x")).encode("utf-32"), "invalid_utf8")
invalid("invalid-utf8-in-ticket.json", "a 0xFF byte inside the ticket",
        HEAD + b'"lines":[{"source":"elevate","ticket":"hostile-\xff"}]}', "invalid_utf8", "UTF-8")
invalid("invalid-utf8-overlong.json", "an overlong encoding of '/' (C0 AF)",
        HEAD + b'"lines":[{"source":"elevate","ticket":"hostile-\xc0\xaf"}]}', "invalid_utf8")
invalid("invalid-utf8-encoded-surrogate.json", "a surrogate encoded as UTF-8 bytes (CESU-8, ED A0 80)",
        HEAD + b'"lines":[{"source":"elevate","ticket":"hostile-\xed\xa0\x80"}]}', "invalid_utf8")
invalid("invalid-utf8-truncated.json", "a multi-byte sequence cut short at the end", j(ev("hostile-x")) + b"\xe2\x82",
        "invalid_utf8")
invalid("latin1.json", "Latin-1 text (M\\xe4rket)", HEAD + b'"lines":[{"source":"elevate","ticket":"M\xe4rket"}]}',
        "invalid_utf8")

# --- lone surrogates in \u escapes ------------------------------------------------------------
invalid("lone-high-surrogate.json", r"\ud800 alone in the ticket",
        HEAD + rb'"lines":[{"source":"elevate","ticket":"hostile-\ud800"}]}', "malformed_json", "escape")
invalid("lone-low-surrogate.json", r"\udc00 alone in the ticket",
        HEAD + rb'"lines":[{"source":"elevate","ticket":"hostile-\udc00"}]}', "malformed_json")
invalid("reversed-surrogate-pair.json", r"\ude00\ud83d (low before high)",
        HEAD + rb'"lines":[{"source":"elevate","ticket":"hostile-\ude00\ud83d"}]}', "malformed_json")
invalid("lone-surrogate-ignored-field.json", r"\ud800 in a field nobody reads: the whole record is not JSON",
        HEAD + GOOD_LINE % b"x" + rb',"productName":"\ud800"}', "malformed_json")
mapped("surrogate-pair.json", r"a valid pair \ud83d\ude00 (an emoji) in the ticket",
       HEAD + rb'"lines":[{"source":"elevate","ticket":"hostile-\ud83d\ude00"}]}', ["hostile-\U0001F600"])
mapped("nul-escape-in-ticket.json", r"\u0000 inside the ticket", HEAD + rb'"lines":[{"source":"elevate","ticket":"hostile-nul-\u0000"}]}',
       ["hostile-nul-\u0000"])
mapped("escapes-in-ticket.json", "every JSON escape inside the ticket",
       HEAD + rb'"lines":[{"source":"elevate","ticket":"hostile-esc-\"\\\/\b\f\n\r\t"}]}',
       ["hostile-esc-\"\\/\b\f\n\r\t"])
invalid("raw-control-char.json", "a raw 0x01 byte inside a string",
        HEAD + b'"lines":[{"source":"elevate","ticket":"hostile-\x01"}]}', "malformed_json", "control character")
invalid("bad-escape.json", r"an invalid escape \x41", HEAD + rb'"lines":[{"source":"elevate","ticket":"\x41"}]}',
        "malformed_json", "escape")

# --- empty, null and missing ------------------------------------------------------------------
entries.append(({"name": "tombstone", "what": "a record with no value at all (produced as a tombstone)",
                 "outcome": "invalid", "reason": "malformed_json", "detail_contains": "tombstone",
                 "tombstone": True}, None))
invalid("empty-value.bin", "zero bytes", b"", "malformed_json", "EOF")
invalid("whitespace-only.json", "spaces, tabs and newlines only", b" \t\r\n ", "malformed_json")
invalid("null-literal.json", "the JSON value null", b"null", "not_an_object", "null")
invalid("string-literal.json", "a JSON string", b'"add_to_cart"', "not_an_object", "string")
invalid("array-literal.json", "a JSON array of events", b"[" + j(ev("hostile-x")) + b"]", "not_an_object", "array")
invalid("number-literal.json", "a bare number", b"42", "not_an_object", "number")
invalid("empty-object.json", "{}", b"{}", "missing_field", "event_type")
invalid("empty-type.json", 'type is ""', j(ev("hostile-x", type="")), "missing_field", "event_type")
invalid("null-type.json", "type is null", j(ev("hostile-x", type=None)), "missing_field", "event_type")
skipped("empty-ticket.json", 'ticket is ""', j(ev("")), ["no_ticket"])
skipped("null-ticket.json", "ticket is null", j(ev(None)), ["no_ticket"])
skipped("missing-ticket.json", "no ticket key", j(ev(lines=[{"source": "elevate"}])), ["no_ticket"])
skipped("empty-lines.json", "lines is []", j(ev(lines=[])), ["no_lines"])
skipped("null-lines.json", "lines is null", j(ev(lines=None)), ["no_lines"])
skipped("missing-lines.json", "no lines key", j({k: v for k, v in ev().items() if k != "lines"}), ["no_lines"])
skipped("not-add-to-cart.json", "a page_view event (even with garbage keys)",
        j(ev("hostile-x", type="page_view", market=None, customerKey=None)), ["not_add_to_cart"])
skipped("not-from-elevate.json", "a shop line with a ticket", j(ev(lines=[{"source": "shop", "ticket": "t"}])),
        ["not_from_elevate"])
skipped("source-false.json", "line source false", j(ev(lines=[{"source": False, "ticket": "t"}])),
        ["not_from_elevate"])
mapped("source-true.json", "line source true means Elevate", j(ev(lines=[{"source": True, "ticket": "hostile-src-true"}])),
       ["hostile-src-true"])
mapped("mixed-lines.json", "Elevate, shop, Elevate without ticket, Elevate",
       j(ev(lines=[{"source": "elevate", "ticket": "hostile-mix-0"}, {"source": "shop", "ticket": "t"},
                   {"source": "elevate", "ticket": ""}, {"source": "elevate", "ticket": "hostile-mix-3"}])),
       ["hostile-mix-0", "hostile-mix-3"], ["not_from_elevate", "no_ticket"])
mapped("whitespace-ticket.json", "a ticket of spaces around text (opaque: sent as is)", j(ev(" hostile-ws ")),
       [" hostile-ws "])

# --- consent and required fields ---------------------------------------------------------------
invalid("personalized-no-customer-key.json", "PERSONALIZED without customerKey",
        j({k: v for k, v in ev("hostile-x", userContext="PERSONALIZED").items() if k != "customerKey"}),
        "missing_field", "customerKey")
invalid("default-context-empty-customer-key.json", 'no userContext (PERSONALIZED) and customerKey ""',
        j(ev("hostile-x", customerKey="")), "missing_field", "customerKey")
invalid("unpersonalized-no-session-key.json", "UNPERSONALIZED without sessionKey",
        j(ev("hostile-x", userContext="UNPERSONALIZED", sessionKey=None)), "missing_field", "sessionKey")
invalid("missing-market.json", "an Elevate line but no market", j(ev("hostile-x", market=None)),
        "missing_field", "market")
invalid("empty-market.json", 'market is ""', j(ev("hostile-x", market="")), "missing_field", "market")
invalid("user-context-lowercase.json", "userContext in lower case", j(ev("hostile-x", userContext="anonymous")),
        "bad_value", "user_context")
invalid("user-context-huge.json", "a 100 KiB userContext (the detail is cut to 40 chars)",
        j(ev("hostile-x", userContext="Q" * 102400)), "bad_value", "user_context")
mapped("anonymous-with-keys.json", "ANONYMOUS with both keys (they are dropped)",
       j(ev("hostile-anon", userContext="ANONYMOUS")), ["hostile-anon"])
mapped("synthetic-no-keys.json", "SYNTHETIC without keys",
       j({k: v for k, v in ev("hostile-synth", userContext="SYNTHETIC").items() if k not in ("customerKey", "sessionKey")}),
       ["hostile-synth"])
mapped("market-unicode.json", "a market with a line separator and an emoji (percent-encoded)",
       j(ev("hostile-market-uni", market="SE\u2028\U0001F600&x=1")), ["hostile-market-uni"])
mapped("user-agent-with-newline.json", "a User-Agent with CR LF (not forwarded)",
       j(ev("hostile-ua-crlf", visitor={"userAgent": "evil\r\nX-Injected: 1", "ip": "1.2.3.4"})), ["hostile-ua-crlf"])

# --- records that would send nothing are not validated (README: "Only records that would ------
# --- produce a request are checked against the request contract"; issue 11 item 12) ------------
skipped("page-view-odd-user-context.json", "a page_view with a userContext outside Elevate's set",
        j({"type": "page_view", "market": "SE", "userContext": "personal"}), ["not_add_to_cart"])
skipped("page-view-garbage-fields.json", "a page_view whose every other field has the wrong type",
        j({"type": "page_view", "market": 7, "customerKey": True, "sessionKey": {}, "userContext": 1,
           "visitor": {"ip": 5, "userAgent": []}, "occurredAt": "yesterday", "lines": {}}), ["not_add_to_cart"])
skipped("shop-lines-only-bad-fields.json", "add_to_cart with only a shop line (ticket a number), bad market and userContext",
        j(ev(market=7, userContext=1, lines=[{"source": "shop", "ticket": 12345}])), ["not_from_elevate"])
skipped("no-ticket-bad-event-time.json", "add_to_cart whose Elevate line has no ticket, occurredAt a boolean",
        j(ev(None, occurredAt=False, userContext="personal")), ["no_ticket"])
skipped("empty-lines-bad-market.json", "add_to_cart with no lines and an array as market",
        j(ev(market=["SE"], lines=[])), ["no_lines"])
mapped("anonymous-bad-keys.json", "ANONYMOUS with a boolean customerKey and an object sessionKey (dropped, not read)",
       j(ev("hostile-anon-bad-keys", userContext="ANONYMOUS", customerKey=True, sessionKey={"id": 1})),
       ["hostile-anon-bad-keys"])
mapped("unpersonalized-number-customer-key.json", "UNPERSONALIZED with a number as customerKey (dropped, not read)",
       j(ev("hostile-unp-num-ck", userContext="UNPERSONALIZED", customerKey=7)), ["hostile-unp-num-ck"])
mapped("shop-line-number-ticket.json", "an Elevate line and a shop line whose ticket is a number (never sent, not read)",
       j(ev(lines=[{"source": "elevate", "ticket": "hostile-shop-num"}, {"source": "shop", "ticket": 12345}])),
       ["hostile-shop-num"], ["not_from_elevate"])

# --- syntax -----------------------------------------------------------------------------------
invalid("trailing-garbage.json", "valid JSON followed by garbage", j(ev("hostile-x")) + b" xyz", "malformed_json",
        "trailing")
invalid("two-objects.json", "two JSON objects back to back", j(ev("hostile-x")) * 2, "malformed_json", "trailing")
invalid("truncated.json", "an event cut in the middle", j(ev("hostile-x"))[:40], "malformed_json", "EOF")
invalid("trailing-comma.json", "a trailing comma", HEAD + GOOD_LINE % b"x" + b",}", "malformed_json")
invalid("single-quotes.json", "single-quoted strings", b"{'type':'add_to_cart'}", "malformed_json")
invalid("comment.json", "a // comment", b"// cart\n" + j(ev("hostile-x")), "malformed_json")
invalid("nul-bytes.json", "1,000 NUL bytes", b"\x00" * 1000, "malformed_json")
invalid("random-binary.bin", "deterministic pseudo-random bytes (still valid UTF-8: ASCII)",
        bytes((i * 7919 + 13) % 97 + 30 for i in range(4096)), "malformed_json")


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))
    names = set()
    out = []
    for meta, value in entries:
        assert meta["name"] not in names, meta["name"]
        names.add(meta["name"])
        if value is not None:
            with open(os.path.join(OUT, meta["name"]), "wb") as fh:
                fh.write(value)
            meta["bytes"] = len(value)
        out.append(meta)
    with open(os.path.join(HERE, "expected.json"), "w", encoding="utf-8") as fh:
        json.dump({"about": "Hostile-record corpus: the outcome of each file of corpus/ under the default"
                   " [mapping]. Generated by generate.py, which documents the fields.", "records": out}, fh, ensure_ascii=True, indent=1)
        fh.write("\n")
    print(f"{len(out)} records, {sum(m.get('bytes', 0) for m in out)} bytes")


if __name__ == "__main__":
    main()
