//! Changing a queue's settings after it was declared (the HTTP API's `PUT …/settings`, `weir
//! queue set`): TTL, length limits and overflow, dead-lettering, retries, `x-expires`.
//!
//! Settings are kept apart from the declared arguments and override them, like RabbitMQ's
//! policies: an application that declares its queue again with its original arguments still
//! gets `declare-ok`, not 406 "inequivalent arg". Each change is one log record
//! (`KIND_QUEUE_SETTINGS`, the whole new set) for a durable queue, fsynced before the answer,
//! and the set is in checkpoints.
//!
//! What a change does at once: new limits drop or dead-letter the oldest messages over them
//! (`drop-head`) as a publish would; a new dead-letter target, retry policy or overflow policy
//! applies to the next message it concerns. A new `x-message-ttl` applies to messages
//! published from then on; the ones already there keep the expiry they were given.

use weir_log::Storage;

use crate::api::{ArgValue, Event, Origin, QUEUE_SETTINGS};
use crate::error::{EngineError, ErrorKind};
use crate::records::{self, QueueSettings};
use crate::security::Access;

use super::{error, Broker};

impl<S: Storage> Broker<S> {
    pub(super) fn queue_settings(
        &mut self,
        origin: Origin,
        name: &str,
        settings: Vec<(String, ArgValue)>,
    ) -> Result<(), EngineError> {
        self.authorize(origin.connection, Access::Configure, "queue", name)?;
        let id = self.lookup_queue(origin.connection, name)?;
        if let Some((key, _)) = settings.iter().find(|(key, _)| !QUEUE_SETTINGS.contains(&key.as_str())) {
            return Err(error(
                ErrorKind::PreconditionFailed,
                format!("'{key}' cannot be changed after declaration (settable: {})", QUEUE_SETTINGS.join(", ")),
            ));
        }
        // As at declaration: a dead-letter exchange needs write on it and read on the queue.
        if let Some((_, ArgValue::Str(dlx))) = settings.iter().find(|(key, _)| key == "x-dead-letter-exchange") {
            self.authorize(origin.connection, Access::Write, "exchange", dlx)?;
            self.authorize(origin.connection, Access::Read, "queue", name)?;
        }
        // Nothing changes unless everything is accepted and logged.
        let (settings, config) = self.queues[&id].with_settings(settings)?;
        if self.queues[&id].is_logged() {
            self.refuse_if_read_only()?;
            let record = QueueSettings { queue_id: id, settings: settings.clone() };
            self.append_with(records::KIND_QUEUE_SETTINGS, |w| records::encode_queue_settings(w, &record))?;
        }
        let queue = self.queues.get_mut(&id).expect("looked up");
        queue.settings = settings;
        queue.config = config;
        if queue.config.expires_ms.is_some() {
            self.has_expiring_queues = true;
        }
        if !self.queues[&id].config.overflow.turns_away_new() {
            self.enforce_max_length(id);
        }
        self.mark_dirty(id);
        self.reply(origin.connection, Event::AdminDone { channel: origin.channel });
        Ok(())
    }
}
