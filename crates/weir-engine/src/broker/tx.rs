//! AMQP transactions (`tx.select`, `tx.commit`, `tx.rollback`).
//!
//! In a transactional channel, publishes and acks are checked when they arrive (a missing
//! exchange or an unknown delivery tag is an error at once) and then wait in a [`TxBuffer`].
//! `tx.commit` checks the whole buffer again, then applies it with the log in *capture*
//! mode: every record the publishes and acks produce is collected and appended as ONE
//! transaction record (`KIND_TX`). After a crash the transaction is either wholly there or
//! not at all; entries of messages it enqueued point at the container, and readers find the
//! body by sequence number inside it. `tx.commit-ok` waits for the fsync like any durable
//! reply.
//!
//! `tx.rollback` forgets the buffer. Messages whose acks were forgotten stay unacked: they
//! are delivered again when the channel closes or on `basic.recover`, as in RabbitMQ.

use std::collections::BTreeSet;

use weir_log::Storage;
use weir_queue::{MessageEntry, ENTRY_FLAG_PERSISTENT};

use crate::api::{Event, Origin, Publish};
use crate::error::{EngineError, ErrorKind};
use crate::records::{self, location_of, Writer};

use super::{error, unknown_tag, Broker, QueueId, Settlement};

/// What a transactional channel did since its last commit or rollback.
#[derive(Debug, Default)]
pub(crate) struct TxBuffer {
    pub publishes: Vec<Publish>,
    /// (delivery tag, multiple, how)
    pub settlements: Vec<(u64, bool, Settlement)>,
}

/// Records produced while a commit applies its buffer.
#[derive(Debug, Default)]
pub(crate) struct TxCapture {
    pub records: Vec<(u8, Vec<u8>)>,
    /// Messages enqueued by the commit (sequence number, durable queues, body size), waiting
    /// for a location. Their content is pinned in memory until then.
    pub enqueues: Vec<(u64, Vec<QueueId>, u32)>,
    /// Of those, the ones pinned only for the capture (every queue they reached is logged).
    pub unpin_after: Vec<u64>,
}

/// Bytes a record of one published message can take besides its body and properties.
const TX_RECORD_OVERHEAD_BYTES: usize = 1024;

fn not_transactional() -> EngineError {
    error(ErrorKind::PreconditionFailed, "channel is not transactional".into())
}

impl<S: Storage> Broker<S> {
    pub(super) fn tx_select(&mut self, origin: Origin) -> Result<(), EngineError> {
        self.channel_mut(origin)?.tx.get_or_insert_with(TxBuffer::default);
        self.reply(origin.connection, Event::TxSelectOk { channel: origin.channel });
        Ok(())
    }

    pub(super) fn tx_rollback(&mut self, origin: Origin) -> Result<(), EngineError> {
        let buffer = self.channel_mut(origin)?.tx.as_mut().ok_or_else(not_transactional)?;
        *buffer = TxBuffer::default();
        self.reply(origin.connection, Event::TxRollbackOk { channel: origin.channel });
        Ok(())
    }

    pub(super) fn tx_commit(&mut self, origin: Origin) -> Result<(), EngineError> {
        let buffer = std::mem::take(self.channel_mut(origin)?.tx.as_mut().ok_or_else(not_transactional)?);
        self.check_commit(origin, &buffer)?;
        let vhost = self.vhost_of(origin.connection)?.to_string();
        let applied = self.atomically(|broker| {
            let mut applied = Ok(());
            for publish in buffer.publishes {
                applied = applied.and(broker.publish_in(&vhost, publish).map(|_| ()));
            }
            for (tag, multiple, how) in buffer.settlements {
                applied = applied.and(broker.settle_now(origin, tag, multiple, how));
            }
            applied
        })?;
        // Checked beforehand; what can still fail is the log turning read-only during the
        // commit (a body found unreadable while dead-lettering). What was applied is in the
        // container record; the client is told the commit failed.
        if let Err(e) = applied {
            tracing::error!("transaction applied only in part: {e}");
            return Err(e);
        }
        self.reply(origin.connection, Event::TxCommitOk { channel: origin.channel });
        Ok(())
    }

    /// Run `apply` with the log in capture mode and append everything it logged (enqueues and
    /// settlements) as ONE transaction record; then give the enqueued entries their location.
    /// Inside an outer capture (a dead-letter during a commit) it simply joins the outer one.
    pub(super) fn atomically<T>(&mut self, apply: impl FnOnce(&mut Self) -> T) -> Result<T, EngineError> {
        if self.tx_capture.is_some() {
            return Ok(apply(self));
        }
        self.tx_capture = Some(TxCapture::default());
        let settles_before = self.pending_settles.len();
        let result = apply(self);
        let mut capture = self.tx_capture.take().expect("set above");
        let settles = self.pending_settles.split_off(settles_before);
        if !settles.is_empty() {
            let mut w = Writer::default();
            records::encode_settle(&mut w, &settles);
            capture.records.push((records::KIND_SETTLE, w.buf));
        }
        if capture.records.is_empty() {
            return Ok(result);
        }
        let mut w = Writer::default();
        records::encode_tx(&mut w, &capture.records);
        let pos = self.log_append(records::KIND_TX, &w.buf)?;
        let location = location_of(pos);
        for (seq, queue_ids, size_bytes) in capture.enqueues {
            for id in queue_ids {
                let Some(queue) = self.queues.get_mut(&id) else { continue };
                if queue.messages.relocate(seq, location).is_some() {
                    let entry = MessageEntry {
                        seq,
                        location,
                        size_bytes,
                        delivery_count: 0,
                        flags: ENTRY_FLAG_PERSISTENT,
                        priority: 0, // only its location counts here
                    };
                    self.track_live(&entry, 1);
                }
            }
        }
        for seq in capture.unpin_after {
            self.content.unpin(seq);
        }
        Ok(result)
    }

    /// Everything that can make a commit fail is checked before anything is applied, so a
    /// commit is all or nothing in memory as on disk.
    fn check_commit(&self, origin: Origin, buffer: &TxBuffer) -> Result<(), EngineError> {
        let vhost = self.vhost_of(origin.connection)?;
        let mut record_bytes = 0usize;
        let mut durable = false;
        for publish in &buffer.publishes {
            let targets = self.route(vhost, publish)?;
            if publish.persistent && targets.iter().any(|id| self.queues[id].is_logged()) {
                durable = true;
                record_bytes +=
                    publish.message.body.len() + publish.message.raw_properties.len() + TX_RECORD_OVERHEAD_BYTES;
            }
        }
        record_bytes += buffer.settlements.len() * TX_RECORD_OVERHEAD_BYTES;
        if durable {
            self.refuse_if_read_only()?;
        }
        let record_max = self.log.config().max_record_bytes as usize;
        if record_bytes > record_max {
            return Err(error(
                ErrorKind::PreconditionFailed,
                format!("transaction of about {record_bytes} bytes is larger than the maximum {record_max}"),
            ));
        }
        let channel = self
            .connections
            .get(&origin.connection)
            .and_then(|c| c.channels.get(&origin.channel))
            .ok_or_else(not_transactional)?;
        let mut open: BTreeSet<u64> = channel.unacked.keys().copied().collect();
        for (tag, multiple, _) in &buffer.settlements {
            if *multiple {
                if *tag != 0 && !open.contains(tag) {
                    return Err(unknown_tag(*tag));
                }
                let upto = if *tag == 0 { u64::MAX } else { *tag };
                open = open.split_off(&upto.saturating_add(1));
            } else if !open.remove(tag) {
                return Err(unknown_tag(*tag));
            }
        }
        Ok(())
    }
}
