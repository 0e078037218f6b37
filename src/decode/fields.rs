//! Where decode reads a record's fields: a JSON value (each pointer walked, `pointer.rs`), or the
//! slots a pruned parse filled (`slots.rs`). Pure. Guarantees: for every pointer of the mapping the
//! parse was planned for, both give the same value and the same JSON types for the record, the
//! lines and each line, so decode maps a record the same way from either (property-tested in
//! `slots.rs`). Limits: a slot document answers only the pointers it was planned for.

use serde_json::{Map, Number, Value};

use super::pointer;

/// The JSON type of a place, as errors name it (`"a JSON array, expected an object"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonKind {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    /// The type of `v`.
    pub(crate) fn of(v: &Value) -> JsonKind {
        Found::of(v).kind()
    }

    /// Its name in error details.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Boolean => "boolean",
            JsonKind::Number => "number",
            JsonKind::String => "string",
            JsonKind::Array => "array",
            JsonKind::Object => "object",
        }
    }
}

impl std::fmt::Display for JsonKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value decode reads, by reference: a JSON value, or a string the slots borrow from the
/// record's text (`slots.rs`: a kept string without escapes is never copied by the parse).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Found<'a> {
    Null,
    Bool(bool),
    Number(&'a Number),
    Str(&'a str),
    Array(&'a [Value]),
    Object(&'a Map<String, Value>),
}

impl<'a> Found<'a> {
    /// `v` as found.
    pub(crate) fn of(v: &'a Value) -> Found<'a> {
        match v {
            Value::Null => Found::Null,
            Value::Bool(b) => Found::Bool(*b),
            Value::Number(n) => Found::Number(n),
            Value::String(s) => Found::Str(s),
            Value::Array(a) => Found::Array(a),
            Value::Object(o) => Found::Object(o),
        }
    }

    /// Its JSON type.
    pub(crate) fn kind(self) -> JsonKind {
        match self {
            Found::Null => JsonKind::Null,
            Found::Bool(_) => JsonKind::Boolean,
            Found::Number(_) => JsonKind::Number,
            Found::Str(_) => JsonKind::String,
            Found::Array(_) => JsonKind::Array,
            Found::Object(_) => JsonKind::Object,
        }
    }
}

/// A place in a record that decode reads fields of: the event, or one of its lines.
pub(crate) trait Fields {
    /// The value `pointer` names below this place (`""`: the place itself, when it is a value).
    fn at(&self, pointer: &str) -> Option<Found<'_>>;
    /// The JSON type of this place.
    fn kind(&self) -> JsonKind;
}

/// A whole record: its fields, and its lines as places of their own.
pub(crate) trait Doc: Fields {
    /// One line of the record.
    type Line<'a>: Fields
    where
        Self: 'a;
    /// The record itself as its one line (no lines pointer configured).
    fn as_line(&self) -> Self::Line<'_>;
    /// The elements of the lines array at `pointer` (not empty): none when it is absent or null,
    /// `Err(kind)` when it is not an array.
    fn lines(&self, pointer: &str) -> Result<Vec<Self::Line<'_>>, JsonKind>;
}

impl Fields for Value {
    fn at(&self, pointer: &str) -> Option<Found<'_>> {
        pointer::at(self, pointer).map(Found::of)
    }

    fn kind(&self) -> JsonKind {
        JsonKind::of(self)
    }
}

impl<T: Fields + ?Sized> Fields for &T {
    fn at(&self, pointer: &str) -> Option<Found<'_>> {
        (**self).at(pointer)
    }

    fn kind(&self) -> JsonKind {
        (**self).kind()
    }
}

impl Doc for Value {
    type Line<'a> = &'a Value;

    fn as_line(&self) -> &Value {
        self
    }

    fn lines(&self, pointer: &str) -> Result<Vec<&Value>, JsonKind> {
        match pointer::at(self, pointer) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a.iter().collect()),
            Some(other) => Err(JsonKind::of(other)),
        }
    }
}
