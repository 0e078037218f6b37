//! Payloads of the kinds that carry no ticket: favourites (exactly one of productKey/variantKey),
//! end (no body) and payment (every order line, checked). Pure, no I/O. Guarantees: one
//! notification per event, built under the same consent rules as add-to-cart; a field that breaks
//! the contract makes the record [`Invalid`] with a detail naming the field (never its value when
//! it may be personal).

use super::Kind;
use crate::config::MappingConfig;
use crate::decode::{
    decode_request_fields, opt_string, require_line_object, CartEvent, Doc, Fields, Found, Invalid,
    InvalidReason, LineField,
};
use crate::select::{template, Body, Mapped, Notification, PaymentLine};

/// The one notification of a favourite, end or payment event (`kind` is one of those).
pub(crate) fn map(kind: Kind, mapping: &MappingConfig, root: &impl Doc) -> Result<Mapped, Invalid> {
    let mut event = CartEvent::default();
    decode_request_fields(mapping, root, &mut event)?;
    let body = match kind {
        Kind::AddFavorite | Kind::RemoveFavorite => product(mapping, root)?,
        Kind::Payment => Body::Payment(order_lines(mapping, root)?),
        _ => Body::Empty,
    };
    let event_time_ms = event.event_time_ms;
    let n = Notification {
        body,
        ..template(event)?
    };
    Ok(Mapped {
        notifications: vec![n],
        event_time_ms,
        ..Mapped::default()
    })
}

/// Exactly one of `product_key` / `variant_key`.
fn product(mapping: &MappingConfig, root: &impl Fields) -> Result<Body, Invalid> {
    let p = opt_string(root, &mapping.product_key, "product_key")?;
    let v = opt_string(root, &mapping.variant_key, "variant_key")?;
    match (p, v) {
        (Some(p), None) => Ok(Body::ProductKey(p)),
        (None, Some(v)) => Ok(Body::VariantKey(v)),
        (Some(_), Some(_)) => Err(Invalid::new(
            InvalidReason::BadValue,
            format!(
                "product_key at {} and variant_key at {} are both set; Elevate takes exactly one",
                mapping.product_key, mapping.variant_key
            ),
        )),
        (None, None) => Err(Invalid::new(
            InvalidReason::MissingField,
            format!(
                "product_key at {} and variant_key at {} are both missing; Elevate takes exactly one",
                mapping.product_key, mapping.variant_key
            ),
        )),
    }
}

/// Every order line, each with a variant key, a positive integer quantity and finite,
/// non-negative prices; an order without lines is invalid (a payment of nothing).
fn order_lines(mapping: &MappingConfig, root: &impl Doc) -> Result<Vec<PaymentLine>, Invalid> {
    let items = crate::decode::line_items(mapping, root)?;
    if items.is_empty() {
        return Err(Invalid::new(
            InvalidReason::MissingField,
            format!(
                "lines at {} is missing or empty; a payment needs its order lines",
                mapping.lines
            ),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, line)| order_line(mapping, i, &line))
        .collect()
}

fn order_line(mapping: &MappingConfig, i: usize, line: &impl Fields) -> Result<PaymentLine, Invalid> {
    require_line_object(i, line)?;
    let name = |f| LineField(i, f);
    let variant_key = opt_string(line, &mapping.line_variant_key, name("variant_key"))?.ok_or_else(|| {
        Invalid::new(
            InvalidReason::MissingField,
            format!(
                "{} at {} is missing",
                name("variant_key"),
                mapping.line_variant_key
            ),
        )
    })?;
    let quantity = match number(line, &mapping.line_quantity, name("quantity"))?.as_u64() {
        Some(q) if q > 0 => q,
        _ => {
            return Err(Invalid::new(
                InvalidReason::BadValue,
                format!(
                    "{} at {} must be a positive integer",
                    name("quantity"),
                    mapping.line_quantity
                ),
            ))
        }
    };
    // A price is the float it denotes: `199` and `199.0` (a JSON integer, an Avro or Protobuf
    // double) send the same `199.0`, so an order's request is the same whatever its wire format.
    let price = |pointer: &str, field: &'static str| -> Result<serde_json::Number, Invalid> {
        let n = number(line, pointer, name(field))?;
        let canonical = n.as_f64().filter(|f| f.is_finite() && *f >= 0.0);
        match canonical.and_then(serde_json::Number::from_f64) {
            Some(price) => Ok(price),
            None => Err(Invalid::new(
                InvalidReason::BadValue,
                format!(
                    "{} at {pointer} must be a finite, non-negative number",
                    name(field)
                ),
            )),
        }
    };
    Ok(PaymentLine {
        variant_key,
        quantity,
        selling_price: price(&mapping.line_selling_price, "selling_price")?,
        cost: price(&mapping.line_cost, "cost")?,
    })
}

/// A required JSON number.
fn number(line: &impl Fields, pointer: &str, field: LineField<'_>) -> Result<serde_json::Number, Invalid> {
    match line.at(pointer) {
        Some(Found::Number(n)) => Ok(n.clone()),
        None | Some(Found::Null) => Err(Invalid::new(
            InvalidReason::MissingField,
            format!("{field} at {pointer} is missing"),
        )),
        Some(other) => Err(Invalid::new(
            InvalidReason::WrongType,
            format!("{field} at {pointer} is a {}, expected a number", other.kind()),
        )),
    }
}
