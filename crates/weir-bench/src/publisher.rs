//! One publisher connection: writes pre-encoded messages in large batches and, with
//! confirms, keeps at most `window` of them unconfirmed.
//!
//! Two futures share the connection inside one task: the writer fills a batch of up to
//! [`BATCH_BYTES`] (stamped with one timestamp, the moment it goes to the socket) and writes
//! it with one `write_all`; the reader decodes confirms and broker closes. They meet through
//! [`ConfirmWindow`]: an atomic count of settled tags and a `Notify` the writer waits on when
//! the window is full (`notify_one` keeps a permit, so a confirm that lands between the
//! writer's check and its wait is not lost). The reader only ever returns an error; when the
//! writer is done the reader is dropped at an await point (socket reads are cancel-safe and
//! every frame already in the buffer was handled), and the connection is closed.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::Notify;
use weir_amqp_codec::amq_protocol::protocol::{basic, confirm, AMQPClass};
use weir_amqp_codec::{decode_frame, Frame};

use crate::body::unix_now_ns;
use crate::client::{check_not_closed, close_connection, unexpected, Client, ClientError, FrameReader};
use crate::confirms::ConfirmTracker;
use crate::stats::Shared;
use crate::url::AmqpUrl;
use crate::wire::{self, PublishTemplate};

/// Target size of one socket write.
pub const BATCH_BYTES: usize = 128 * 1024;
/// How long a publisher that stopped sending waits for its outstanding confirms.
pub const CONFIRM_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const NS_PER_S: u128 = 1_000_000_000;

/// What one publisher should do.
#[derive(Clone, Debug)]
pub struct PublisherPlan {
    /// The message, pre-encoded for this connection's frame-max.
    pub template: PublishTemplate,
    /// Unconfirmed messages allowed; 0 = no confirms.
    pub confirm_window: u32,
    /// Messages to publish, if limited.
    pub count: Option<u64>,
    /// Messages per second, if limited.
    pub rate: Option<u64>,
}

/// What one publisher did.
#[derive(Clone, Copy, Debug)]
pub struct PublisherOutcome {
    /// Messages written.
    pub published: u64,
    /// From the run's start to when this publisher finished its count (confirms included)
    /// or stopped sending.
    pub active: Duration,
}

/// Settled confirms, shared by the two halves of one publisher.
#[derive(Debug, Default)]
struct ConfirmWindow {
    settled: AtomicU64,
    changed: Notify,
}

/// Connects publisher `index` and, if `confirm_window > 0`, selects confirm mode.
pub async fn connect(url: &AmqpUrl, index: u32, confirm_window: u32) -> Result<Client, ClientError> {
    let mut client = Client::connect(url, &format!("weir-bench publisher {index}")).await?;
    if confirm_window > 0 {
        match client.call(wire::confirm_select(), "confirm.select-ok").await? {
            AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(_)) => {}
            other => return Err(unexpected("confirm.select-ok", &other)),
        }
    }
    Ok(client)
}

/// Publishes until the count is done or the stop signal, drains confirms (bounded by
/// [`CONFIRM_DRAIN_TIMEOUT`]), and closes the connection.
pub async fn run(client: Client, plan: PublisherPlan, shared: &Shared) -> Result<PublisherOutcome, ClientError> {
    let Client { mut reader, mut writer } = client;
    let window = ConfirmWindow::default();
    let outcome = tokio::select! {
        outcome = write_loop(&mut writer, &plan, shared, &window) => outcome?,
        Err(error) = confirm_loop(&mut reader, shared, &window) => return Err(error),
    };
    close_connection(&mut reader, &mut writer).await?;
    Ok(outcome)
}

async fn write_loop(
    writer: &mut OwnedWriteHalf,
    plan: &PublisherPlan,
    shared: &Shared,
    window: &ConfirmWindow,
) -> Result<PublisherOutcome, ClientError> {
    let mut stop = shared.stop_signal();
    let per_batch = (BATCH_BYTES / plan.template.size_bytes()).max(1) as u64;
    let mut batch = BytesMut::with_capacity(BATCH_BYTES + plan.template.size_bytes());
    let mut published = 0u64;
    loop {
        if *stop.borrow() {
            break;
        }
        let remaining = plan.count.map_or(u64::MAX, |count| count - published);
        if remaining == 0 {
            break;
        }
        let mut messages = remaining.min(per_batch);
        if plan.confirm_window > 0 {
            let unconfirmed = published - window.settled.load(Ordering::Acquire);
            let room = u64::from(plan.confirm_window).saturating_sub(unconfirmed);
            if room == 0 {
                tokio::select! {
                    () = window.changed.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            messages = messages.min(room);
        }
        if let Some(rate) = plan.rate {
            let allowed = rate_allowance(rate, shared.start.elapsed(), published);
            if allowed == 0 {
                let due = shared.start + next_due(rate, published);
                tokio::select! {
                    () = tokio::time::sleep_until(due.into()) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            messages = messages.min(allowed);
        }
        batch.clear();
        let stamp = unix_now_ns();
        for _ in 0..messages {
            plan.template.append(&mut batch, stamp);
        }
        writer.write_all(&batch).await?;
        published += messages;
        shared.published.fetch_add(messages, Ordering::AcqRel);
    }
    let sent = shared.start.elapsed();
    if plan.confirm_window > 0 {
        drain_confirms(window, published).await;
    }
    let finished_count = plan.count == Some(published);
    Ok(PublisherOutcome { published, active: if finished_count { shared.start.elapsed() } else { sent } })
}

/// Waits until every published message is settled, or [`CONFIRM_DRAIN_TIMEOUT`].
async fn drain_confirms(window: &ConfirmWindow, published: u64) {
    let deadline = Instant::now() + CONFIRM_DRAIN_TIMEOUT;
    while window.settled.load(Ordering::Acquire) < published {
        tokio::select! {
            () = window.changed.notified() => {}
            () = tokio::time::sleep_until(deadline.into()) => return,
        }
    }
}

/// Decodes confirms until the broker closes or errs; never returns `Ok`.
async fn confirm_loop(
    reader: &mut FrameReader,
    shared: &Shared,
    window: &ConfirmWindow,
) -> Result<Infallible, ClientError> {
    let mut tracker = ConfirmTracker::default();
    loop {
        let mut acked = 0;
        let mut nacked = 0;
        while let Some(frame) = decode_frame(&mut reader.buf, reader.frame_max)? {
            let settled = match frame {
                Frame::Method { method: AMQPClass::Basic(basic::AMQPMethod::Ack(ack)), .. } => {
                    tracker.confirm(ack.delivery_tag, ack.multiple, true)
                }
                Frame::Method { method: AMQPClass::Basic(basic::AMQPMethod::Nack(nack)), .. } => {
                    tracker.confirm(nack.delivery_tag, nack.multiple, false)
                }
                Frame::Method { method, .. } => {
                    check_not_closed(&method)?;
                    continue; // channel.flow, basic.return: nothing to do
                }
                // Heartbeats, and the content of a basic.return (we never set mandatory).
                _ => continue,
            };
            acked += settled.acked;
            nacked += settled.nacked;
        }
        if acked + nacked > 0 {
            shared.confirmed.fetch_add(acked, Ordering::AcqRel);
            shared.nacked.fetch_add(nacked, Ordering::AcqRel);
            window.settled.store(tracker.settled(), Ordering::Release);
            window.changed.notify_one();
        }
        reader.fill().await?;
    }
}

/// Messages a publisher limited to `rate` per second may still send `elapsed` into the run
/// after sending `published`: one is allowed at time 0, then one every `1/rate` s.
#[must_use]
pub fn rate_allowance(rate: u64, elapsed: Duration, published: u64) -> u64 {
    let earned = u128::from(rate) * elapsed.as_nanos() / NS_PER_S + 1;
    u64::try_from(earned).unwrap_or(u64::MAX).saturating_sub(published)
}

/// When the message after `published` is due, from the run's start.
#[must_use]
pub fn next_due(rate: u64, published: u64) -> Duration {
    let ns = u128::from(published) * NS_PER_S / u128::from(rate.max(1));
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_allows_one_message_per_period() {
        assert_eq!(rate_allowance(1000, Duration::ZERO, 0), 1);
        assert_eq!(rate_allowance(1000, Duration::ZERO, 1), 0);
        assert_eq!(rate_allowance(1000, Duration::from_millis(10), 1), 10);
        assert_eq!(rate_allowance(1000, Duration::from_secs(1), 1001), 0);
    }

    #[test]
    fn next_message_is_due_after_its_period() {
        assert_eq!(next_due(1000, 1), Duration::from_millis(1));
        assert_eq!(next_due(4, 10), Duration::from_millis(2500));
        // The allowance at the due time is exactly one more message.
        assert_eq!(rate_allowance(4, next_due(4, 10), 10), 1);
    }
}
