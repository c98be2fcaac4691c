//! Which messages a consumer or a get may take: by message-id, by correlation-id, by selector
//! (SPEC.md section 3, "Dequeue by id / correlation / condition"), and browsing.
//!
//! A consumer asks with its arguments (`x-message-id`, `x-correlation-id`, `x-selector`,
//! `x-browse`); the HTTP API builds the same [`MessageFilter`] for a get. Every condition given
//! must hold. Arguments are checked when the consumer is created: a wrong type or a selector
//! that does not parse is refused then (AMQP 406, as RabbitMQ refuses a bad consumer
//! argument), never when a message arrives.
//!
//! A filter reads the message's properties, so a filtered consumer decodes the property bytes
//! of each message it looks at (and reads the message back from the log when it is not in the
//! cache). The broker remembers, per consumer, the newest message it has found not to match, so
//! each message is looked at once per consumer rather than once per dispatch (see
//! `broker/filtered.rs`).

use amq_protocol::protocol::BasicProperties;
use amq_protocol::types::{AMQPValue, ShortString};
use weir_queue::selector::{Fields, Property, Selector, Value};

use crate::api::{ArgValue, Message};
use crate::error::{EngineError, ErrorKind};

/// Consumer argument: take only the message with this message-id.
pub const ARG_MESSAGE_ID: &str = "x-message-id";
/// Consumer argument: take only messages with this correlation-id.
pub const ARG_CORRELATION_ID: &str = "x-correlation-id";
/// Consumer argument: take only messages for which this JMS / SQL-92 selector is true.
pub const ARG_SELECTOR: &str = "x-selector";
/// Consumer argument: look at messages without taking them.
pub const ARG_BROWSE: &str = "x-browse";

/// Conditions a message must meet (all of those given).
#[derive(Clone, Debug, Default)]
pub struct MessageFilter {
    message_id: Option<String>,
    correlation_id: Option<String>,
    selector: Option<Selector>,
}

impl MessageFilter {
    /// A filter from its parts; `None` when nothing is asked. A bad selector is a
    /// [`ErrorKind::PreconditionFailed`] that says where it went wrong.
    pub fn new(
        message_id: Option<String>,
        correlation_id: Option<String>,
        selector: Option<&str>,
    ) -> Result<Option<Self>, EngineError> {
        let selector = selector
            .map(Selector::parse)
            .transpose()
            .map_err(|e| EngineError::new(ErrorKind::PreconditionFailed, format!("invalid {ARG_SELECTOR}: {e}")))?;
        if message_id.is_none() && correlation_id.is_none() && selector.is_none() {
            return Ok(None);
        }
        Ok(Some(Self { message_id, correlation_id, selector }))
    }

    /// The filter a consumer's arguments ask for, if any.
    pub fn from_arguments(arguments: &[(String, ArgValue)]) -> Result<Option<Self>, EngineError> {
        Self::new(
            string_argument(arguments, ARG_MESSAGE_ID)?,
            string_argument(arguments, ARG_CORRELATION_ID)?,
            string_argument(arguments, ARG_SELECTOR)?.as_deref(),
        )
    }

    pub fn matches(&self, message: &Message) -> bool {
        // Properties were validated at publish; bytes that no longer decode match nothing.
        let Ok(properties) = weir_amqp_codec::decode_properties(&message.raw_properties) else {
            return false;
        };
        let wanted = |want: &Option<String>, have: Option<&ShortString>| {
            want.as_ref().is_none_or(|want| have.is_some_and(|have| have.as_str() == want))
        };
        wanted(&self.message_id, properties.message_id().as_ref())
            && wanted(&self.correlation_id, properties.correlation_id().as_ref())
            && self
                .selector
                .as_ref()
                .is_none_or(|selector| selector.matches(&MessageFields { properties: &properties, message }))
    }
}

/// `x-browse: true`? Anything but a boolean is refused.
pub fn browse_argument(arguments: &[(String, ArgValue)]) -> Result<bool, EngineError> {
    match arguments.iter().find(|(key, _)| key == ARG_BROWSE) {
        None => Ok(false),
        Some((_, ArgValue::Bool(b))) => Ok(*b),
        Some((_, other)) => Err(EngineError::new(
            ErrorKind::PreconditionFailed,
            format!("invalid arg '{ARG_BROWSE}' for consumer: expected a boolean, got {other:?}"),
        )),
    }
}

fn string_argument(arguments: &[(String, ArgValue)], name: &str) -> Result<Option<String>, EngineError> {
    match arguments.iter().find(|(key, _)| key == name) {
        None => Ok(None),
        Some((_, ArgValue::Str(text))) => Ok(Some(text.clone())),
        Some((_, other)) => Err(EngineError::new(
            ErrorKind::PreconditionFailed,
            format!("invalid arg '{name}' for consumer: expected a string, got {other:?}"),
        )),
    }
}

fn text(s: Option<&ShortString>) -> Value<'_> {
    s.map_or(Value::Null, |s| Value::Str(s.as_str()))
}

/// A message as a selector sees it.
struct MessageFields<'a> {
    properties: &'a BasicProperties,
    message: &'a Message,
}

impl Fields for MessageFields<'_> {
    fn property(&self, property: Property) -> Value<'_> {
        let p = self.properties;

        match property {
            Property::Priority => p.priority().map_or(Value::Null, |n| Value::Int(i64::from(n))),
            Property::MessageId => text(p.message_id().as_ref()),
            Property::CorrelationId => text(p.correlation_id().as_ref()),
            Property::Timestamp | Property::JmsTimestamp => {
                p.timestamp().and_then(|t| i64::try_from(t).ok()).map_or(Value::Null, Value::Int)
            }
            Property::Type => text(p.kind().as_ref()),
            Property::DeliveryMode | Property::JmsDeliveryMode => {
                p.delivery_mode().map_or(Value::Null, |n| Value::Int(i64::from(n)))
            }
            Property::AppId => text(p.app_id().as_ref()),
            Property::UserId => text(p.user_id().as_ref()),
            Property::ReplyTo => text(p.reply_to().as_ref()),
            Property::ContentType => text(p.content_type().as_ref()),
            Property::ContentEncoding => text(p.content_encoding().as_ref()),
            Property::Expiration => match p.expiration().as_ref() {
                Some(s) => s.as_str().parse().map_or(Value::Str(s.as_str()), Value::Int),
                None => Value::Null,
            },
            Property::RoutingKey => Value::Str(&self.message.routing_key),
        }
    }

    fn header(&self, name: &str) -> Value<'_> {
        let Some(value) = self.properties.headers().as_ref().and_then(|h| h.inner().get(name)) else {
            return Value::Null;
        };
        if let Some(n) = crate::properties::integer_value(value) {
            return Value::Int(n);
        }
        match value {
            AMQPValue::Boolean(b) => Value::Bool(*b),
            AMQPValue::Float(v) => Value::Float(f64::from(*v)),
            AMQPValue::Double(v) => Value::Float(*v),
            AMQPValue::ShortString(s) => Value::Str(s.as_str()),
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).map_or(Value::Null, Value::Str),
            // Tables, arrays, byte arrays, decimals and void are not comparable: NULL.
            _ => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::{FieldTable, LongString};
    use bytes::Bytes;

    use super::*;

    fn message(properties: BasicProperties) -> Message {
        Message {
            exchange: String::new(),
            routing_key: "orders.eu".into(),
            raw_properties: weir_amqp_codec::encode_properties(&properties),
            body: Bytes::from_static(b"x"),
        }
    }

    fn filter(arguments: &[(&str, ArgValue)]) -> Result<Option<MessageFilter>, EngineError> {
        let arguments: Vec<(String, ArgValue)> = arguments.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        MessageFilter::from_arguments(&arguments)
    }

    #[test]
    fn every_given_condition_must_hold() {
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from("region"), AMQPValue::LongString(LongString::from("eu")));
        headers.insert(ShortString::from("amount"), AMQPValue::LongLongInt(250));
        let m = message(
            BasicProperties::default()
                .with_message_id("m-1".into())
                .with_correlation_id("c-9".into())
                .with_priority(6)
                .with_headers(headers),
        );
        let by_id = filter(&[(ARG_MESSAGE_ID, ArgValue::Str("m-1".into()))]).unwrap().unwrap();
        assert!(by_id.matches(&m));
        let both =
            filter(&[(ARG_MESSAGE_ID, ArgValue::Str("m-1".into())), (ARG_CORRELATION_ID, ArgValue::Str("c-8".into()))])
                .unwrap()
                .unwrap();
        assert!(!both.matches(&m));
        let selector = |s: &str| filter(&[(ARG_SELECTOR, ArgValue::Str(s.into()))]).unwrap().unwrap();
        assert!(selector("priority > 5 AND region IN ('eu','us') AND amount >= 250").matches(&m));
        assert!(selector("routing_key LIKE 'orders.%' AND correlation_id = 'c-9'").matches(&m));
        assert!(!selector("region = 'us'").matches(&m));
        assert!(!selector("priority > 5").matches(&message(BasicProperties::default())), "no priority is NULL");
    }

    #[test]
    fn bad_arguments_are_refused_with_precondition_failed() {
        assert!(filter(&[]).unwrap().is_none());
        let bad = filter(&[(ARG_SELECTOR, ArgValue::Str("priority >".into()))]).unwrap_err();
        assert_eq!(bad.kind, ErrorKind::PreconditionFailed);
        assert!(bad.text.contains("invalid x-selector: selector error at character 11"), "{}", bad.text);
        let wrong_type = filter(&[(ARG_MESSAGE_ID, ArgValue::Int(5))]).unwrap_err();
        assert_eq!(wrong_type.kind, ErrorKind::PreconditionFailed);
        assert!(browse_argument(&[(ARG_BROWSE.into(), ArgValue::Str("yes".into()))]).is_err());
        assert!(browse_argument(&[(ARG_BROWSE.into(), ArgValue::Bool(true))]).unwrap());
    }
}
