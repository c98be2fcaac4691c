//! Delayed delivery: a message published with header `x-delay` (milliseconds from now) or
//! `x-deliver-at` (epoch milliseconds) waits in each queue it reached, counted as delayed and
//! never delivered, until its time; then it joins the ready order at its place (by arrival),
//! as if it had been ready all along.
//!
//! The delivery time is part of the message's enqueue record (`ENQUEUE_FLAG_DELAYED`) and of
//! the checkpoint (each queue's delayed messages), so a delayed message is as durable as any
//! other and, after a restart, is released at its time — at once if that time passed while the
//! broker was down. Timers are data: one broker-wide index of (deliver at, queue, message), the
//! same lazy-deletion heap that drives expiry; the engine wakes for its earliest entry. There
//! is no horizon cap.
//!
//! A delayed message's TTL (`expiration`, `x-message-ttl`) counts from its publication, so it
//! can expire while it waits; it is then dead-lettered like any expired message. Only clients'
//! publishes are delayed: a message the broker republishes (dead-lettering) is not delayed
//! again by the header it carries.

use weir_log::Storage;

use crate::api::ArgValue;
use crate::error::{EngineError, ErrorKind};

use super::{Broker, QueueId};

/// Header with a delay in milliseconds from publication.
pub(crate) const DELAY_HEADER: &str = "x-delay";
/// Header with an absolute delivery time in epoch milliseconds.
pub(crate) const DELIVER_AT_HEADER: &str = "x-deliver-at";

/// When a message with `headers`, published at `now`, may be delivered: `None` when at once
/// (no header, a delay <= 0, a time not in the future). A header that is not an integer (or a
/// string holding one) is a 406, like an invalid `expiration`.
pub(crate) fn delivery_time(headers: &[(String, ArgValue)], now: u64) -> Result<Option<u64>, EngineError> {
    let integer = |name: &str| -> Result<Option<i64>, EngineError> {
        let Some((_, value)) = headers.iter().find(|(key, _)| key == name) else {
            return Ok(None);
        };
        match value {
            ArgValue::Int(n) => Ok(Some(*n)),
            ArgValue::Str(text) => text.trim().parse().map(Some).map_err(|_| invalid(name, value)),
            other => Err(invalid(name, other)),
        }
    };
    let at = match (integer(DELAY_HEADER)?, integer(DELIVER_AT_HEADER)?) {
        (Some(_), Some(_)) => {
            return Err(EngineError::new(
                ErrorKind::PreconditionFailed,
                format!("a message may carry {DELAY_HEADER} or {DELIVER_AT_HEADER}, not both"),
            ))
        }
        (Some(delay), None) => u64::try_from(delay).ok().map(|delay| now.saturating_add(delay)),
        (None, Some(at)) => u64::try_from(at).ok(),
        (None, None) => None,
    };
    Ok(at.filter(|&at| at > now))
}

fn invalid(name: &str, value: &ArgValue) -> EngineError {
    EngineError::new(
        ErrorKind::PreconditionFailed,
        format!("invalid {name} header {value:?}: expected an integer number of milliseconds"),
    )
}

impl<S: Storage> Broker<S> {
    pub(super) fn schedule_delay(&mut self, queue: QueueId, seq: u64, at: u64) {
        let queues = &self.queues;
        self.delays.insert((at, queue, seq), |q, s| queues.get(&q).is_some_and(|q| q.messages.is_delayed(s)));
    }

    /// Release every delayed message due at `self.now_ms` into its queue's ready order.
    pub(crate) fn release_due(&mut self) {
        while let Some((queue_id, seq)) = self.delays.pop_due(self.now_ms) {
            let Some(queue) = self.queues.get_mut(&queue_id) else { continue };
            if queue.messages.release_delayed(seq) {
                self.mark_dirty(queue_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, ArgValue)]) -> Vec<(String, ArgValue)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn delivery_time_from_headers() {
        let now = 1_000_000;
        let at = |pairs: &[(&str, ArgValue)]| delivery_time(&headers(pairs), now);
        assert_eq!(at(&[]).unwrap(), None);
        assert_eq!(at(&[("x-delay", ArgValue::Int(1500))]).unwrap(), Some(now + 1500));
        assert_eq!(at(&[("x-delay", ArgValue::Str("20".into()))]).unwrap(), Some(now + 20));
        assert_eq!(at(&[("x-delay", ArgValue::Int(0))]).unwrap(), None);
        assert_eq!(at(&[("x-delay", ArgValue::Int(-5))]).unwrap(), None);
        assert_eq!(at(&[("x-delay", ArgValue::Int(i64::MAX))]).unwrap(), Some(now + i64::MAX as u64));
        assert_eq!(at(&[("x-deliver-at", ArgValue::Int(now as i64 + 7))]).unwrap(), Some(now + 7));
        assert_eq!(at(&[("x-deliver-at", ArgValue::Int(now as i64))]).unwrap(), None, "not in the future");
        for bad in [
            vec![("x-delay", ArgValue::Float(1.5))],
            vec![("x-delay", ArgValue::Str("soon".into()))],
            vec![("x-deliver-at", ArgValue::Bool(true))],
            vec![("x-delay", ArgValue::Int(5)), ("x-deliver-at", ArgValue::Int(5))],
        ] {
            let error = at(&bad).unwrap_err();
            assert_eq!(error.kind, ErrorKind::PreconditionFailed, "{bad:?}");
        }
    }
}
