//! One HTTP request's conversation with the engine.
//!
//! The engine speaks in connections and channels; an HTTP request that changes something
//! (declare, delete, publish, get) opens an internal connection on its vhost with one channel,
//! sends the same commands an AMQP client would, waits for each answer, and disconnects. So
//! the HTTP API goes through exactly the checks, logging and durability rules of AMQP, and a
//! request that is cut off (the client went away) still disconnects: its unacked messages go
//! back to their queues.
//!
//! Internal connections are marked as such and not listed under `/api/connections`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use weir_engine::{
    ChannelId, Command, ConnectionId, ConnectionInfo, ConnectionShared, EngineHandle, Event, EventSink, Inspect,
    InspectReply, Origin,
};

use crate::error::ApiError;

/// The channel every session uses.
const CHANNEL: ChannelId = 1;

/// How long a request waits for an engine answer before it gives up (the engine answers in
/// one turn; only a stopped or wedged engine takes this long).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Session {
    engine: EngineHandle,
    id: ConnectionId,
    events: flume::Receiver<Vec<Event>>,
    pending: VecDeque<Event>,
    shared: Arc<ConnectionShared>,
    open: bool,
}

impl Session {
    /// Open an internal connection on `vhost` for `user`, with channel 1 open.
    pub async fn open(engine: &EngineHandle, vhost: &str, user: &str) -> Result<Session, ApiError> {
        let (sender, events) = flume::unbounded();
        let shared = Arc::new(ConnectionShared::default());
        let id = engine.connection_id();
        let info =
            ConnectionInfo { user: user.to_string(), peer: String::new(), client: "weir-http".into(), internal: true };
        let sink = EventSink { sender, shared: Arc::clone(&shared) };
        engine.send(Command::Connect { connection: id, vhost: vhost.to_string(), info, sink }).await?;
        // From here the engine may hold the connection: dropping the session disconnects it,
        // even if this request is cut off before the engine answers.
        let mut session = Session { engine: engine.clone(), id, events, pending: VecDeque::new(), shared, open: true };
        match session.next_event(ANSWER_TIMEOUT).await? {
            Some(Event::ConnectionOpened) => {}
            Some(Event::ConnectionError { .. }) => {
                session.open = false; // refused: the engine did not register it
                if vhost.is_empty() {
                    return Err(ApiError::forbidden(format!("user '{user}' is not an administrator")));
                }
                let exists = matches!(
                    inspect(engine, Inspect::Vhosts).await?,
                    InspectReply::Vhosts(vhosts) if vhosts.iter().any(|v| v.name == vhost)
                );
                if !exists {
                    return Err(ApiError::not_found("vhost_not_found", format!("no vhost '{vhost}'")));
                }
                return Err(ApiError::forbidden(format!("access to vhost '{vhost}' refused for user '{user}'")));
            }
            other => return Err(ApiError::internal(format!("unexpected engine answer to connect: {other:?}"))),
        }
        session.engine.send(Command::ChannelOpen { origin: session.origin(0) }).await?;
        Ok(session)
    }

    /// The whole life of a one-command request: open a session on `vhost` for `user`, send
    /// the command `command` makes from the session's origin for AMQP method `method`, close
    /// the session (whatever the answer), and return the answer.
    pub async fn call_once(
        engine: &EngineHandle,
        vhost: &str,
        user: &str,
        method: u32,
        command: impl FnOnce(Origin) -> Command,
    ) -> Result<Event, ApiError> {
        let mut session = Self::open(engine, vhost, user).await?;
        let answer = session.call(command(session.origin(method))).await;
        session.close().await;
        answer
    }

    pub fn origin(&self, method: u32) -> Origin {
        Origin { connection: self.id, channel: CHANNEL, method }
    }

    /// Send a command without waiting for anything.
    pub async fn send(&mut self, command: Command) -> Result<(), ApiError> {
        self.engine.send(command).await.map_err(ApiError::from)
    }

    /// Send a command and return the first event that answers it; a channel error becomes
    /// the API error for its kind. After an error the session is only fit to be closed.
    pub async fn call(&mut self, command: Command) -> Result<Event, ApiError> {
        self.send(command).await?;
        self.answer().await
    }

    /// The next event, a channel error turned into an API error.
    pub async fn answer(&mut self) -> Result<Event, ApiError> {
        match self.next_event(ANSWER_TIMEOUT).await? {
            Some(Event::ChannelError { error, .. }) => Err(ApiError::from(error)),
            Some(event) => Ok(event),
            None => Err(ApiError::internal("the engine did not answer in time".into())),
        }
    }

    /// The next event within `timeout`, or None. Deliveries are counted as written at once
    /// (the session holds them in memory), so the engine's flow control never stalls it.
    pub async fn next_event(&mut self, timeout: Duration) -> Result<Option<Event>, ApiError> {
        if self.pending.is_empty() {
            let batch = match tokio::time::timeout(timeout, self.events.recv_async()).await {
                Err(_) => return Ok(None),
                Ok(Err(_)) => return Err(ApiError::unavailable()),
                Ok(Ok(batch)) => batch,
            };
            // Only consumer deliveries count against the engine's in-flight limit.
            let deliveries = batch.iter().filter(|e| matches!(e, Event::Deliver { .. })).count();
            if deliveries > 0 && self.shared.deliveries_written(deliveries) {
                self.engine.send(Command::Resume { connection: self.id }).await?;
            }
            self.pending.extend(batch);
        }
        Ok(self.pending.pop_front())
    }

    /// Disconnect and wait until the engine has requeued whatever this session left unacked.
    pub async fn close(mut self) {
        if self.engine.send(Command::Disconnect { connection: self.id }).await.is_err() {
            return;
        }
        self.open = false;
        while let Ok(Some(event)) = self.next_event(ANSWER_TIMEOUT).await {
            if matches!(event, Event::Disconnected) {
                return;
            }
        }
    }
}

impl Drop for Session {
    /// A request cut off midway (its client went away) still disconnects.
    fn drop(&mut self) {
        if self.open {
            let engine = self.engine.clone();
            let connection = self.id;
            tokio::spawn(async move {
                let _ = engine.send(Command::Disconnect { connection }).await;
            });
        }
    }
}

/// Ask the engine a read-only question.
pub async fn inspect(engine: &EngineHandle, query: Inspect) -> Result<InspectReply, ApiError> {
    let (reply, answer) = flume::bounded(1);
    engine.send(Command::Inspect { query, reply }).await?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer.recv_async()).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(_)) => Err(ApiError::unavailable()),
        Err(_) => Err(ApiError::internal("the engine did not answer in time".into())),
    }
}
