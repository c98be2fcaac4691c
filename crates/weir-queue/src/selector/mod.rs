//! Message selectors: the JMS / SQL-92 condition language (`priority > 5 AND region IN
//! ('eu','us')`), parsed once and evaluated against each candidate message.
//!
//! What a selector can name:
//! - the message's properties, by these names (or their JMS names): `priority`
//!   (`JMSPriority`), `message_id` (`JMSMessageID`), `correlation_id` (`JMSCorrelationID`),
//!   `timestamp` (AMQP seconds; `JMSTimestamp` is the same in milliseconds), `type`
//!   (`JMSType`), `delivery_mode` (1 or 2; `JMSDeliveryMode` is `'PERSISTENT'` or
//!   `'NON_PERSISTENT'`), `app_id`, `user_id`, `reply_to`, `content_type`,
//!   `content_encoding`, `expiration` (a number when it is one), `routing_key`;
//! - any other name is a message header; a header whose name is not an identifier, or that
//!   shares a property's name, is written in double quotes (`"x-region" = 'eu'`).
//!
//! Evaluation follows SQL's three-valued logic, as JMS requires: a missing header is NULL, a
//! comparison with NULL is UNKNOWN, and a message is selected only when the whole condition
//! is TRUE. A comparison between unlike types (a string and a number) is FALSE (JMS 1.1
//! §3.8.1.2); strings and booleans compare with `=` and `<>` only (ordering them is FALSE);
//! numbers compare across integer and decimal. Evaluation never fails and never panics:
//! overflow and division by zero give UNKNOWN.
//!
//! Limits: a selector is at most [`SOURCE_BYTES_MAX`] bytes and nests at most [`DEPTH_MAX`]
//! levels; both are checked when it is parsed, so a bad selector is refused when the consumer
//! asks for it, never when a message arrives.

mod lex;
mod parse;

use std::fmt;

use parse::{ArithOp, CompareOp, Expr, Field, LikePart, Literal};

/// The longest selector accepted, in bytes (IBM MQ allows 10240).
pub const SOURCE_BYTES_MAX: usize = 8192;
/// The deepest nesting accepted (parentheses, `NOT`s, operators inside operators).
pub const DEPTH_MAX: usize = 128;

/// Why a selector was refused, with the character offset where the trouble starts.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("selector error at character {}: {message}", offset + 1)]
pub struct SelectorError {
    /// 0-based character offset.
    pub offset: usize,
    pub message: String,
}

impl SelectorError {
    fn at(offset: usize, message: impl Into<String>) -> Self {
        Self { offset, message: message.into() }
    }
}

/// The message properties a selector can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Property {
    Priority,
    MessageId,
    CorrelationId,
    /// AMQP seconds.
    Timestamp,
    /// JMS: the timestamp in milliseconds (asked of [`Fields`] as `Timestamp`).
    JmsTimestamp,
    Type,
    /// 1 (transient) or 2 (persistent).
    DeliveryMode,
    /// JMS: `'PERSISTENT'` or `'NON_PERSISTENT'` (asked of [`Fields`] as `DeliveryMode`).
    JmsDeliveryMode,
    AppId,
    UserId,
    ReplyTo,
    ContentType,
    ContentEncoding,
    Expiration,
    RoutingKey,
}

const PROPERTY_NAMES: [(&str, Property); 19] = [
    ("priority", Property::Priority),
    ("JMSPriority", Property::Priority),
    ("message_id", Property::MessageId),
    ("JMSMessageID", Property::MessageId),
    ("correlation_id", Property::CorrelationId),
    ("JMSCorrelationID", Property::CorrelationId),
    ("timestamp", Property::Timestamp),
    ("JMSTimestamp", Property::JmsTimestamp),
    ("type", Property::Type),
    ("JMSType", Property::Type),
    ("delivery_mode", Property::DeliveryMode),
    ("JMSDeliveryMode", Property::JmsDeliveryMode),
    ("app_id", Property::AppId),
    ("user_id", Property::UserId),
    ("reply_to", Property::ReplyTo),
    ("content_type", Property::ContentType),
    ("content_encoding", Property::ContentEncoding),
    ("expiration", Property::Expiration),
    ("routing_key", Property::RoutingKey),
];

impl Property {
    fn from_name(name: &str) -> Option<Self> {
        PROPERTY_NAMES.iter().find(|(known, _)| *known == name).map(|(_, property)| *property)
    }
}

/// A value a message holds (or a selector computes).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
}

/// What a selector reads from a message. Absent things are [`Value::Null`].
pub trait Fields {
    /// Never asked for `JmsTimestamp` or `JmsDeliveryMode` (the selector derives those).
    fn property(&self, property: Property) -> Value<'_>;
    fn header(&self, name: &str) -> Value<'_>;
}

/// A parsed selector.
#[derive(Clone, Debug)]
pub struct Selector {
    source: String,
    root: Expr,
}

impl Selector {
    pub fn parse(source: &str) -> Result<Self, SelectorError> {
        if source.len() > SOURCE_BYTES_MAX {
            return Err(SelectorError::at(0, format!("longer than {SOURCE_BYTES_MAX} bytes")));
        }
        Ok(Self { source: source.to_string(), root: parse::parse(source)? })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Is the condition TRUE for this message?
    pub fn matches(&self, fields: &dyn Fields) -> bool {
        eval(&self.root, fields) == Value::Bool(true)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// SQL truth values are `Bool(true)`, `Bool(false)` and `Null` (UNKNOWN).
fn truth(value: Value<'_>) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}

fn from_truth(truth: Option<bool>) -> Value<'static> {
    truth.map_or(Value::Null, Value::Bool)
}

fn literal(literal: &Literal) -> Value<'_> {
    match literal {
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Int(n) => Value::Int(*n),
        Literal::Float(n) => Value::Float(*n),
        Literal::Str(text) => Value::Str(text),
    }
}

fn field<'a>(field: &Field, fields: &'a dyn Fields) -> Value<'a> {
    match field {
        Field::Header(name) => fields.header(name),
        Field::Property(Property::JmsTimestamp) => match fields.property(Property::Timestamp) {
            Value::Int(seconds) => seconds.checked_mul(1000).map_or(Value::Null, Value::Int),
            _ => Value::Null,
        },
        Field::Property(Property::JmsDeliveryMode) => match fields.property(Property::DeliveryMode) {
            Value::Int(2) => Value::Str("PERSISTENT"),
            _ => Value::Str("NON_PERSISTENT"),
        },
        Field::Property(property) => fields.property(*property),
    }
}

fn eval<'a>(expr: &'a Expr, fields: &'a dyn Fields) -> Value<'a> {
    match expr {
        Expr::Literal(value) => literal(value),
        Expr::Null => Value::Null,
        Expr::Field(name) => field(name, fields),
        Expr::Not(inner) => from_truth(truth(eval(inner, fields)).map(|b| !b)),
        // SQL: FALSE wins an AND and TRUE wins an OR, whatever else is UNKNOWN.
        Expr::And(operands) => junction(operands, fields, false),
        Expr::Or(operands) => junction(operands, fields, true),
        Expr::Compare(op, left, right) => from_truth(compare(*op, eval(left, fields), eval(right, fields))),
        Expr::Arith(op, left, right) => arithmetic(*op, eval(left, fields), eval(right, fields)),
        Expr::Negate(inner) => match eval(inner, fields) {
            Value::Int(n) => n.checked_neg().map_or(Value::Null, Value::Int),
            Value::Float(n) => Value::Float(-n),
            _ => Value::Null,
        },
        Expr::Between { value, low, high, negated } => {
            let value = eval(value, fields);
            let within = and3(
                compare(CompareOp::Ge, value, eval(low, fields)),
                compare(CompareOp::Le, value, eval(high, fields)),
            );
            from_truth(within.map(|b| b != *negated))
        }
        Expr::In { value, list, negated } => {
            let value = eval(value, fields);
            if value == Value::Null {
                return Value::Null;
            }
            let found = list.iter().any(|item| compare(CompareOp::Eq, value, literal(item)) == Some(true));
            Value::Bool(found != *negated)
        }
        Expr::Like { value, pattern, negated } => match eval(value, fields) {
            Value::Str(text) => Value::Bool(like(text, pattern) != *negated),
            _ => Value::Null,
        },
        Expr::IsNull { value, negated } => Value::Bool((eval(value, fields) == Value::Null) != *negated),
    }
}

/// AND (`decisive` false) or OR (`decisive` true) over several operands.
fn junction<'a>(operands: &'a [Expr], fields: &'a dyn Fields, decisive: bool) -> Value<'a> {
    let mut unknown = false;
    for operand in operands {
        match truth(eval(operand, fields)) {
            Some(b) if b == decisive => return Value::Bool(decisive),
            Some(_) => {}
            None => unknown = true,
        }
    }
    if unknown {
        Value::Null
    } else {
        Value::Bool(!decisive)
    }
}

fn and3(a: Option<bool>, b: Option<bool>) -> Option<bool> {
    match (a, b) {
        (Some(false), _) | (_, Some(false)) => Some(false),
        (Some(true), Some(true)) => Some(true),
        _ => None,
    }
}

fn compare(op: CompareOp, left: Value<'_>, right: Value<'_>) -> Option<bool> {
    use std::cmp::Ordering;
    let ordering = match (left, right) {
        (Value::Int(a), Value::Int(b)) => a.cmp(&b),
        (Value::Int(a), Value::Float(b)) => (a as f64).partial_cmp(&b)?,
        (Value::Float(a), Value::Int(b)) => a.partial_cmp(&(b as f64))?,
        (Value::Float(a), Value::Float(b)) => a.partial_cmp(&b)?,
        (Value::Null, _) | (_, Value::Null) => return None,
        // Strings and booleans: equality only (JMS).
        (Value::Str(a), Value::Str(b)) => return Some(equality(op, a == b)),
        (Value::Bool(a), Value::Bool(b)) => return Some(equality(op, a == b)),
        // Unlike types: FALSE, not UNKNOWN (JMS 1.1 section 3.8.1.2).
        _ => return Some(false),
    };
    Some(match op {
        CompareOp::Eq => ordering == Ordering::Equal,
        CompareOp::Ne => ordering != Ordering::Equal,
        CompareOp::Lt => ordering == Ordering::Less,
        CompareOp::Le => ordering != Ordering::Greater,
        CompareOp::Gt => ordering == Ordering::Greater,
        CompareOp::Ge => ordering != Ordering::Less,
    })
}

fn equality(op: CompareOp, equal: bool) -> bool {
    match op {
        CompareOp::Eq => equal,
        CompareOp::Ne => !equal,
        _ => false,
    }
}

fn arithmetic(op: ArithOp, left: Value<'_>, right: Value<'_>) -> Value<'static> {
    match (left, right) {
        (Value::Int(a), Value::Int(b)) => {
            let exact = match op {
                ArithOp::Add => a.checked_add(b),
                ArithOp::Sub => a.checked_sub(b),
                ArithOp::Mul => a.checked_mul(b),
                ArithOp::Div => a.checked_div(b),
            };
            exact.map_or(Value::Null, Value::Int)
        }
        (Value::Int(a), Value::Float(b)) => float_arithmetic(op, a as f64, b),
        (Value::Float(a), Value::Int(b)) => float_arithmetic(op, a, b as f64),
        (Value::Float(a), Value::Float(b)) => float_arithmetic(op, a, b),
        _ => Value::Null,
    }
}

fn float_arithmetic(op: ArithOp, a: f64, b: f64) -> Value<'static> {
    let result = match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div => a / b,
    };
    if result.is_finite() {
        Value::Float(result)
    } else {
        Value::Null
    }
}

/// `%` matches any run of characters, `_` exactly one. Greedy with one backtrack point (the
/// last `%`): O(text × pattern) at worst, never exponential.
fn like(text: &str, pattern: &[LikePart]) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut t, mut p) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(LikePart::Any) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(LikePart::One) => {
                t += 1;
                p += 1;
            }
            Some(LikePart::Char(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            _ => match backtrack {
                Some((star, matched)) => {
                    p = star + 1;
                    t = matched + 1;
                    backtrack = Some((star, matched + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|part| *part == LikePart::Any)
}

#[cfg(test)]
mod tests;
