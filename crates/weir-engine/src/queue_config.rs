//! Queue arguments: parsed and validated once, at declare time (and again at replay, from
//! the logged arguments), into the policy the broker applies.
//!
//! Validation follows RabbitMQ (`rabbit_amqqueue:declare_args/0`): a wrong type or range is
//! 406 PRECONDITION_FAILED "invalid arg '<name>' for queue '<q>' in vhost '<v>': …". Unknown
//! `x-` arguments are kept (for equivalence checks) and otherwise ignored, as RabbitMQ does.

use weir_queue::ReadyOrder;

use crate::api::ArgValue;
use crate::error::{EngineError, ErrorKind};

/// Priority levels of a queue whose `x-queue-order` asks for `priority` without an
/// `x-max-priority`: 0-9, the JMS range.
pub const DEFAULT_MAX_PRIORITY: u8 = 9;

/// What happens when a queue is over `x-max-length` / `x-max-length-bytes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages to make room (RabbitMQ's default).
    #[default]
    DropHead,
    /// Refuse the new message: a publisher in confirm mode gets a nack.
    RejectPublish,
    /// Refuse the new message and dead-letter it.
    RejectPublishDlx,
    /// Drop (or dead-letter) the arriving message; the publisher gets an ack all the same.
    DropNew,
    /// Drop (or dead-letter) the message with the oldest `timestamp` property (longest-lived).
    DropOldest,
    /// Drop (or dead-letter) a message of the lowest priority present, the oldest of those.
    DropLowestPriority,
}

impl Overflow {
    /// Does a full queue turn the arriving message away (rather than make room for it)?
    pub fn turns_away_new(self) -> bool {
        matches!(self, Overflow::RejectPublish | Overflow::RejectPublishDlx | Overflow::DropNew)
    }
}

/// How the wait before a retry grows (`x-retry-backoff`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backoff {
    /// Every retry waits `x-retry-delay`.
    #[default]
    Fixed,
    /// The n-th retry waits `x-retry-delay` × 2^(n-1), up to `x-retry-delay-max`.
    Exponential,
}

/// What a queue does with a failed delivery (a nack or reject with requeue, a dropped
/// channel or connection, `basic.recover`): `x-delivery-limit`, `x-retry-*`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryPolicy {
    /// After this many deliveries the message is not retried but sent to its failure target.
    pub delivery_limit: Option<u16>,
    /// Wait this long before delivering a failed message again (0: at once).
    pub delay_ms: u64,
    pub backoff: Backoff,
    pub delay_max_ms: Option<u64>,
}

impl RetryPolicy {
    /// Does this queue count failures at all (so they are logged)?
    pub fn is_active(&self) -> bool {
        self.delivery_limit.is_some() || self.delay_ms > 0
    }

    /// The wait before the next delivery of a message delivered `deliveries` times.
    pub fn delay_after(&self, deliveries: u16) -> u64 {
        let delay = match self.backoff {
            Backoff::Fixed => self.delay_ms,
            Backoff::Exponential => {
                let doublings = u32::from(deliveries.saturating_sub(1)).min(63);
                self.delay_ms.saturating_mul(1u64 << doublings)
            }
        };
        self.delay_max_ms.map_or(delay, |max| delay.min(max))
    }
}

/// The policies a queue's arguments ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    pub message_ttl_ms: Option<u64>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    /// Delete the queue after this long without consumers, gets or re-declares.
    pub expires_ms: Option<u64>,
    /// `x-single-active-consumer`: only the first consumer receives; the next takes over when
    /// it goes.
    pub single_active_consumer: bool,
    /// `x-max-priority` / `x-queue-order`: how ready messages are ordered.
    pub order: ReadyOrder,
    pub retry: RetryPolicy,
    /// `x-deduplication-window`: a message-id taken within this many milliseconds is a
    /// duplicate.
    pub dedup_window_ms: Option<u64>,
    /// `x-capacity-high` / `x-capacity-low`: percent of the length limit at which the queue
    /// reports it is filling up, and at which it reports it has drained again.
    pub capacity: Option<Watermarks>,
    /// `x-weight` (1 to [`WEIGHT_MAX`], default 1): its share when queues compete for the same
    /// consumers' room.
    pub weight: u16,
}

/// The largest `x-weight`.
pub const WEIGHT_MAX: u16 = 1000;

impl Default for QueueConfig {
    /// No arguments: no limits, no policies, weight 1.
    fn default() -> Self {
        Self {
            message_ttl_ms: None,
            dead_letter_exchange: None,
            dead_letter_routing_key: None,
            max_length: None,
            max_length_bytes: None,
            overflow: Overflow::default(),
            expires_ms: None,
            single_active_consumer: false,
            order: ReadyOrder::default(),
            retry: RetryPolicy::default(),
            dedup_window_ms: None,
            capacity: None,
            weight: 1,
        }
    }
}

/// Capacity watermarks, in percent of the queue's length limits (Tuxedo's queue space
/// thresholds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermarks {
    pub high_percent: u8,
    pub low_percent: u8,
}

impl QueueConfig {
    /// Parse and check `arguments` of queue `queue` in `vhost`.
    pub fn parse(arguments: &[(String, ArgValue)], queue: &str, vhost: &str) -> Result<Self, EngineError> {
        let invalid = |name: &str, why: &str| {
            EngineError::new(
                ErrorKind::PreconditionFailed,
                format!("invalid arg '{name}' for queue '{queue}' in vhost '{vhost}': {why}"),
            )
        };
        let non_negative = |name: &str, value: &ArgValue| match value {
            ArgValue::Int(n) if *n >= 0 => Ok(*n as u64),
            ArgValue::Int(n) => Err(invalid(name, &format!("{n} is negative"))),
            other => Err(invalid(name, &format!("{other:?} is not an integer"))),
        };
        let string = |name: &str, value: &ArgValue| match value {
            ArgValue::Str(s) => Ok(s.clone()),
            other => Err(invalid(name, &format!("{other:?} is not a string"))),
        };
        let mut config = QueueConfig::default();
        let mut order_keys = None;
        let (mut capacity_high, mut capacity_low) = (None, None);
        for (name, value) in arguments {
            match name.as_str() {
                "x-message-ttl" => config.message_ttl_ms = Some(non_negative(name, value)?),
                "x-dead-letter-exchange" => config.dead_letter_exchange = Some(string(name, value)?),
                "x-dead-letter-routing-key" => config.dead_letter_routing_key = Some(string(name, value)?),
                "x-max-length" => config.max_length = Some(non_negative(name, value)?),
                "x-max-length-bytes" => config.max_length_bytes = Some(non_negative(name, value)?),
                "x-expires" => {
                    let ms = non_negative(name, value)?;
                    if ms == 0 {
                        return Err(invalid(name, "must be greater than zero"));
                    }
                    config.expires_ms = Some(ms);
                }
                "x-overflow" => {
                    config.overflow = match string(name, value)?.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        "drop-new" => Overflow::DropNew,
                        "drop-oldest" => Overflow::DropOldest,
                        "drop-lowest-priority" => Overflow::DropLowestPriority,
                        other => return Err(invalid(name, &format!("'{other}' is not a known overflow policy"))),
                    }
                }
                "x-max-priority" => {
                    let priority = non_negative(name, value)?;
                    config.order.max_priority = u8::try_from(priority)
                        .map_err(|_| invalid(name, &format!("{priority} is above the maximum 255")))?;
                }
                "x-queue-order" => order_keys = Some(string(name, value)?),
                "x-delivery-limit" => {
                    let limit = non_negative(name, value)?;
                    if limit == 0 {
                        return Err(invalid(name, "must be greater than zero"));
                    }
                    config.retry.delivery_limit = Some(
                        u16::try_from(limit)
                            .map_err(|_| invalid(name, &format!("{limit} is above the maximum 65535")))?,
                    );
                }
                "x-retry-delay" => config.retry.delay_ms = non_negative(name, value)?,
                "x-capacity-high" | "x-capacity-low" => {
                    let percent = non_negative(name, value)?;
                    if percent > 100 {
                        return Err(invalid(name, &format!("{percent} is not a percentage (0 to 100)")));
                    }
                    let slot = if name == "x-capacity-high" { &mut capacity_high } else { &mut capacity_low };
                    *slot = Some(percent as u8);
                }
                "x-weight" => {
                    let weight = non_negative(name, value)?;
                    config.weight = u16::try_from(weight)
                        .ok()
                        .filter(|w| (1..=WEIGHT_MAX).contains(w))
                        .ok_or_else(|| invalid(name, &format!("{weight} is not 1 to {WEIGHT_MAX}")))?;
                }
                "x-deduplication-window" => {
                    let ms = non_negative(name, value)?;
                    if ms == 0 {
                        return Err(invalid(name, "must be greater than zero"));
                    }
                    config.dedup_window_ms = Some(ms);
                }
                "x-retry-delay-max" => config.retry.delay_max_ms = Some(non_negative(name, value)?),
                "x-retry-backoff" => {
                    config.retry.backoff = match string(name, value)?.as_str() {
                        "fixed" => Backoff::Fixed,
                        "exponential" => Backoff::Exponential,
                        other => return Err(invalid(name, &format!("'{other}' is not 'fixed' or 'exponential'"))),
                    }
                }
                "x-single-active-consumer" => match value {
                    ArgValue::Bool(on) => config.single_active_consumer = *on,
                    _ => return Err(invalid(name, "must be a boolean")),
                },
                _ => {}
            }
        }
        if config.dead_letter_routing_key.is_some() && config.dead_letter_exchange.is_none() {
            return Err(invalid("x-dead-letter-routing-key", "needs x-dead-letter-exchange"));
        }
        match (capacity_high, capacity_low) {
            (None, None) => {}
            (None, Some(_)) => return Err(invalid("x-capacity-low", "needs x-capacity-high")),
            (Some(high), low) => {
                if config.max_length.is_none() && config.max_length_bytes.is_none() {
                    return Err(invalid("x-capacity-high", "needs x-max-length or x-max-length-bytes"));
                }
                // Without a low mark the queue reports draining as soon as it is below the high one.
                let low = low.unwrap_or(high);
                if low > high {
                    return Err(invalid("x-capacity-low", "must not be above x-capacity-high"));
                }
                config.capacity = Some(Watermarks { high_percent: high, low_percent: low });
            }
        }
        if let Some(keys) = order_keys {
            config.order = parse_order(&keys, config.order.max_priority)
                .map_err(|why| invalid("x-queue-order", &format!("'{keys}': {why}")))?;
        }
        Ok(config)
    }

    /// Is a queue holding `ready_messages` messages and `ready_bytes` bytes over its limits?
    pub fn over_limit(&self, ready_messages: u64, ready_bytes: u64) -> bool {
        self.max_length.is_some_and(|max| ready_messages > max)
            || self.max_length_bytes.is_some_and(|max| ready_bytes > max)
    }
}

/// `x-queue-order`: a comma list of keys, the first deciding and the next breaking ties.
/// `priority` must come first when present (`fifo` and `lifo` order by the unique arrival
/// sequence, so nothing after them could ever break a tie); `fifo` or `lifo` may follow it.
/// `time` and `expiration` are refused until they are built. `x-max-priority` alone means
/// `priority,fifo`.
fn parse_order(keys: &str, max_priority: u8) -> Result<ReadyOrder, String> {
    let keys: Vec<&str> = keys.split(',').map(str::trim).collect();
    let mut order = ReadyOrder { max_priority, lifo: false };
    let mut rest = keys.as_slice();
    if let Some((&"priority", after)) = rest.split_first() {
        if order.max_priority == 0 {
            order.max_priority = DEFAULT_MAX_PRIORITY;
        }
        rest = after;
    }
    match rest {
        [] => {}
        [last] => match *last {
            "fifo" => order.lifo = false,
            "lifo" => order.lifo = true,
            "priority" => return Err("'priority' must be the first key".into()),
            "time" | "expiration" => return Err(format!("ordering by '{last}' is not supported yet")),
            other => return Err(format!("unknown ordering key '{other}'")),
        },
        [first, ..] => {
            return Err(match *first {
                "fifo" | "lifo" | "priority" => format!("nothing can follow '{first}' here"),
                "time" | "expiration" => format!("ordering by '{first}' is not supported yet"),
                other => format!("unknown ordering key '{other}'"),
            })
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, ArgValue)]) -> Vec<(String, ArgValue)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn valid_arguments_become_policy() {
        let config = QueueConfig::parse(
            &args(&[
                ("x-message-ttl", ArgValue::Int(500)),
                ("x-dead-letter-exchange", ArgValue::Str("dlx".into())),
                ("x-max-length", ArgValue::Int(10)),
                ("x-overflow", ArgValue::Str("reject-publish".into())),
                ("x-custom", ArgValue::Bool(true)),
            ]),
            "q",
            "/",
        )
        .unwrap();
        assert_eq!(config.message_ttl_ms, Some(500));
        assert_eq!(config.dead_letter_exchange.as_deref(), Some("dlx"));
        assert_eq!(config.overflow, Overflow::RejectPublish);
        assert!(config.over_limit(11, 0));
        assert!(!config.over_limit(10, 0));
    }

    #[test]
    fn invalid_arguments_are_406_with_rabbitmq_text() {
        for bad in [
            ("x-message-ttl", ArgValue::Int(-1)),
            ("x-message-ttl", ArgValue::Str("5".into())),
            ("x-max-priority", ArgValue::Int(1000)),
            ("x-expires", ArgValue::Int(0)),
            ("x-overflow", ArgValue::Str("drop-tail".into())),
            ("x-single-active-consumer", ArgValue::Int(1)),
            ("x-delivery-limit", ArgValue::Int(0)),
            ("x-deduplication-window", ArgValue::Int(0)),
            ("x-weight", ArgValue::Int(0)),
            ("x-weight", ArgValue::Int(1001)),
            ("x-capacity-high", ArgValue::Int(80)),
            ("x-capacity-low", ArgValue::Int(20)),
            ("x-capacity-high", ArgValue::Int(101)),
            ("x-deduplication-window", ArgValue::Str("1m".into())),
            ("x-delivery-limit", ArgValue::Int(70_000)),
            ("x-retry-delay", ArgValue::Int(-5)),
            ("x-retry-backoff", ArgValue::Str("linear".into())),
            ("x-retry-delay-max", ArgValue::Str("1s".into())),
            ("x-queue-order", ArgValue::Str("lifo,priority".into())),
            ("x-queue-order", ArgValue::Str("fifo,lifo".into())),
            ("x-queue-order", ArgValue::Str("time".into())),
            ("x-queue-order", ArgValue::Str("priority,expiration".into())),
            ("x-queue-order", ArgValue::Str("random".into())),
            ("x-queue-order", ArgValue::Str("".into())),
            ("x-queue-order", ArgValue::Int(1)),
        ] {
            let error = QueueConfig::parse(&args(std::slice::from_ref(&bad)), "q", "/").unwrap_err();
            assert_eq!(error.kind, ErrorKind::PreconditionFailed, "{bad:?}");
            assert!(error.text.starts_with(&format!("invalid arg '{}' for queue 'q'", bad.0)), "{}", error.text);
        }
    }

    #[test]
    fn retry_delays_grow_as_asked_and_stop_at_the_maximum() {
        let parse = |pairs: &[(&str, ArgValue)]| QueueConfig::parse(&args(pairs), "q", "/").unwrap().retry;
        let fixed = parse(&[("x-retry-delay", ArgValue::Int(100)), ("x-delivery-limit", ArgValue::Int(3))]);
        assert_eq!(fixed.delivery_limit, Some(3));
        assert_eq!([1, 2, 5].map(|n| fixed.delay_after(n)), [100, 100, 100]);
        let exponential = parse(&[
            ("x-retry-delay", ArgValue::Int(100)),
            ("x-retry-backoff", ArgValue::Str("exponential".into())),
            ("x-retry-delay-max", ArgValue::Int(1000)),
        ]);
        assert_eq!([1, 2, 3, 4, 5, 400].map(|n| exponential.delay_after(n)), [100, 200, 400, 800, 1000, 1000]);
        let unbounded = RetryPolicy { delay_ms: u64::MAX / 2, backoff: Backoff::Exponential, ..Default::default() };
        assert_eq!(unbounded.delay_after(u16::MAX), u64::MAX, "saturates, never wraps");
        assert!(!parse(&[]).is_active());
    }

    #[test]
    fn ordering_arguments() {
        let order = |pairs: &[(&str, ArgValue)]| QueueConfig::parse(&args(pairs), "q", "/").unwrap().order;
        assert_eq!(order(&[]), ReadyOrder { max_priority: 0, lifo: false });
        assert_eq!(order(&[("x-max-priority", ArgValue::Int(5))]), ReadyOrder { max_priority: 5, lifo: false });
        assert_eq!(
            order(&[("x-queue-order", ArgValue::Str("lifo".into()))]),
            ReadyOrder { max_priority: 0, lifo: true }
        );
        assert_eq!(
            order(&[("x-queue-order", ArgValue::Str("priority, lifo".into()))]),
            ReadyOrder { max_priority: DEFAULT_MAX_PRIORITY, lifo: true }
        );
        assert_eq!(
            order(&[("x-max-priority", ArgValue::Int(3)), ("x-queue-order", ArgValue::Str("priority,fifo".into()))]),
            ReadyOrder { max_priority: 3, lifo: false }
        );
        // x-max-priority turns priorities on whatever x-queue-order says about ties.
        assert_eq!(
            order(&[("x-max-priority", ArgValue::Int(2)), ("x-queue-order", ArgValue::Str("lifo".into()))]),
            ReadyOrder { max_priority: 2, lifo: true }
        );
    }
}
