//! JSON forms of AMQP values: queue and binding arguments, message properties and headers,
//! and message bodies.
//!
//! Mapping (both ways where it can be): string ↔ long string, integer ↔ signed 64-bit,
//! number with a fraction ↔ double, bool ↔ boolean, null ↔ void; in headers also array ↔
//! field array and object ↔ field table (nested no deeper than AMQP tables may be).
//! Arguments are flat (queue and binding arguments are never nested). A body is a string when
//! it is UTF-8 and `"payload_encoding": "string"`, else base64 with `"payload_encoding": "base64"`.

use std::collections::BTreeMap;

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use weir_amqp_codec::{FIELD_TABLE_DEPTH_MAX, SHORT_STRING_LENGTH_MAX};
use weir_engine::ArgValue;

use crate::error::ApiError;

pub fn arg_to_json(value: &ArgValue) -> Value {
    match value {
        ArgValue::Bool(b) => Value::Bool(*b),
        ArgValue::Int(i) => Value::from(*i),
        ArgValue::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        ArgValue::Str(s) => Value::String(s.clone()),
        ArgValue::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        ArgValue::Void => Value::Null,
    }
}

pub fn args_to_json(args: &[(String, ArgValue)]) -> Value {
    Value::Object(args.iter().map(|(k, v)| (k.clone(), arg_to_json(v))).collect())
}

/// Arguments from a JSON object, sorted by key as the engine wants them.
pub fn args_from_json(args: &Map<String, Value>) -> Result<Vec<(String, ArgValue)>, ApiError> {
    let mut out = Vec::with_capacity(args.len());
    for (key, value) in args {
        check_short(key, "argument name")?;
        let value = match value {
            Value::Bool(b) => ArgValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => ArgValue::Int(i),
                None => ArgValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => ArgValue::Str(s.clone()),
            Value::Null => ArgValue::Void,
            Value::Array(_) | Value::Object(_) => {
                return Err(ApiError::bad_request(format!("argument '{key}': arrays and objects are not allowed here")))
            }
        };
        out.push((key.clone(), value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// An AMQP short string: at most 255 bytes.
pub fn check_short(text: &str, what: &str) -> Result<(), ApiError> {
    if text.len() > SHORT_STRING_LENGTH_MAX {
        return Err(ApiError::bad_request(format!("{what} is longer than {SHORT_STRING_LENGTH_MAX} bytes")));
    }
    Ok(())
}

fn short(text: &str, what: &str) -> Result<ShortString, ApiError> {
    check_short(text, what)?;
    Ok(ShortString::from(text.to_string()))
}

fn value_to_amqp(value: &Value, depth: usize) -> Result<AMQPValue, ApiError> {
    if depth > FIELD_TABLE_DEPTH_MAX {
        return Err(ApiError::bad_request(format!("headers are nested deeper than {FIELD_TABLE_DEPTH_MAX} levels")));
    }
    Ok(match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items.iter().map(|v| value_to_amqp(v, depth + 1)).collect::<Result<Vec<_>, _>>()?,
        )),
        Value::Object(map) => AMQPValue::FieldTable(table_from_json(map, depth + 1)?),
    })
}

fn table_from_json(map: &Map<String, Value>, depth: usize) -> Result<FieldTable, ApiError> {
    let mut table = BTreeMap::new();
    for (key, value) in map {
        table.insert(short(key, "header name")?, value_to_amqp(value, depth)?);
    }
    Ok(table.into())
}

fn amqp_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(v) => Value::from(*v),
        AMQPValue::ShortShortUInt(v) => Value::from(*v),
        AMQPValue::ShortInt(v) => Value::from(*v),
        AMQPValue::ShortUInt(v) => Value::from(*v),
        AMQPValue::LongInt(v) => Value::from(*v),
        AMQPValue::LongUInt(v) => Value::from(*v),
        AMQPValue::LongLongInt(v) => Value::from(*v),
        AMQPValue::Timestamp(v) => Value::from(*v),
        AMQPValue::Float(v) => serde_json::Number::from_f64(f64::from(*v)).map_or(Value::Null, Value::Number),
        AMQPValue::Double(v) => serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
        AMQPValue::DecimalValue(d) => Value::from(d.value as f64 / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ByteArray(b) => Value::String(String::from_utf8_lossy(b.as_slice()).into_owned()),
        AMQPValue::FieldArray(items) => Value::Array(items.as_slice().iter().map(amqp_to_json).collect()),
        AMQPValue::FieldTable(table) => table_to_json(table),
        AMQPValue::Void => Value::Null,
    }
}

fn table_to_json(table: &FieldTable) -> Value {
    Value::Object(table.inner().iter().map(|(k, v)| (k.as_str().to_string(), amqp_to_json(v))).collect())
}

/// Message properties as JSON requests give them (every field optional).
#[derive(Deserialize, Serialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<Map<String, Value>>,
    /// 1 transient, 2 persistent.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_option")]
    pub delivery_mode: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_option")]
    pub priority: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Milliseconds, as a string (AMQP's form).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
    /// Seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_option")]
    pub timestamp: Option<u64>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
}

impl Properties {
    pub fn to_amqp(&self) -> Result<BasicProperties, ApiError> {
        let mut p = BasicProperties::default();
        if let Some(v) = &self.content_type {
            p = p.with_content_type(short(v, "content_type")?);
        }
        if let Some(v) = &self.content_encoding {
            p = p.with_content_encoding(short(v, "content_encoding")?);
        }
        if let Some(v) = &self.headers {
            p = p.with_headers(table_from_json(v, 1)?);
        }
        if let Some(v) = self.delivery_mode {
            if !(1..=2).contains(&v) {
                return Err(ApiError::bad_request("delivery_mode must be 1 (transient) or 2 (persistent)"));
            }
            p = p.with_delivery_mode(v);
        }
        if let Some(v) = self.priority {
            p = p.with_priority(v);
        }
        if let Some(v) = &self.correlation_id {
            p = p.with_correlation_id(short(v, "correlation_id")?);
        }
        if let Some(v) = &self.reply_to {
            p = p.with_reply_to(short(v, "reply_to")?);
        }
        if let Some(v) = &self.expiration {
            p = p.with_expiration(short(v, "expiration")?);
        }
        if let Some(v) = &self.message_id {
            p = p.with_message_id(short(v, "message_id")?);
        }
        if let Some(v) = self.timestamp {
            p = p.with_timestamp(v);
        }
        if let Some(v) = &self.kind {
            p = p.with_type(short(v, "type")?);
        }
        if let Some(v) = &self.user_id {
            p = p.with_user_id(short(v, "user_id")?);
        }
        if let Some(v) = &self.app_id {
            p = p.with_app_id(short(v, "app_id")?);
        }
        Ok(p)
    }

    pub fn from_amqp(p: &BasicProperties) -> Self {
        let text = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_string());
        Self {
            content_type: text(p.content_type()),
            content_encoding: text(p.content_encoding()),
            headers: p.headers().as_ref().map(|h| match table_to_json(h) {
                Value::Object(map) => map,
                _ => Map::new(),
            }),
            delivery_mode: *p.delivery_mode(),
            priority: *p.priority(),
            correlation_id: text(p.correlation_id()),
            reply_to: text(p.reply_to()),
            expiration: text(p.expiration()),
            message_id: text(p.message_id()),
            timestamp: *p.timestamp(),
            kind: text(p.kind()),
            user_id: text(p.user_id()),
            app_id: text(p.app_id()),
        }
    }
}

/// How a request's `payload` is written.
#[derive(Deserialize, Serialize, Default, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PayloadEncoding {
    #[default]
    String,
    Base64,
}

/// A whole number that JSON may spell `5` or `5.0` (as some languages' encoders do), in
/// range for `T`.
pub fn whole<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let number = serde_json::Number::deserialize(deserializer)?;
    let value = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => n,
        (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 => f as u64,
        _ => return Err(D::Error::custom(format!("{number} is not a whole number >= 0"))),
    };
    T::try_from(value).map_err(|_| D::Error::custom(format!("{number} is out of range")))
}

pub fn whole_option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    whole(deserializer).map(Some)
}

/// Standard base64, padded, that also accepts non-zero bits after the last symbol.
const LENIENT_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

pub fn decode_payload(payload: &str, encoding: PayloadEncoding) -> Result<Vec<u8>, ApiError> {
    match encoding {
        PayloadEncoding::String => Ok(payload.as_bytes().to_vec()),
        PayloadEncoding::Base64 => LENIENT_BASE64
            .decode(payload)
            .map_err(|e| ApiError::bad_request(format!("payload is not valid base64: {e}"))),
    }
}

/// A body for a response: text when it is UTF-8 (unless base64 is asked for).
pub fn encode_payload(body: &[u8], force_base64: bool) -> (String, PayloadEncoding) {
    match std::str::from_utf8(body) {
        Ok(text) if !force_base64 => (text.to_string(), PayloadEncoding::String),
        _ => (base64::engine::general_purpose::STANDARD.encode(body), PayloadEncoding::Base64),
    }
}
