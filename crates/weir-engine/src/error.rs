//! The engine's errors, by kind. Each kind has exactly one meaning; the protocol layers map
//! kinds to wire codes in one table each (AMQP reply codes in `weir-amqp`).

/// What went wrong, in the terms a client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A queue, exchange or consumer that does not exist (AMQP 404).
    NotFound,
    /// A reserved name or a forbidden operation (AMQP 403).
    AccessRefused,
    /// Another connection's exclusive queue (AMQP 405).
    ResourceLocked,
    /// Inequivalent re-declare, unknown delivery tag, if-unused/if-empty violated (AMQP 406).
    PreconditionFailed,
    /// Unknown vhost, reused consumer tag (AMQP 530, connection-level).
    NotAllowed,
    /// Something the engine cannot do right now: the log is poisoned or read-only (AMQP 541).
    InternalError,
    /// A limit was reached (AMQP 506).
    ResourceError,
    /// A request the protocol does not allow, such as an unknown exchange type (AMQP 503,
    /// connection-level, as RabbitMQ 3.x).
    CommandInvalid,
    /// An operator closed the connection (AMQP 320, connection-level).
    ConnectionForced,
}

/// An error with the human text RabbitMQ-style clients show.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {text}")]
pub struct EngineError {
    pub kind: ErrorKind,
    pub text: String,
}

impl EngineError {
    pub fn new(kind: ErrorKind, text: impl Into<String>) -> Self {
        Self { kind, text: text.into() }
    }
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("log: {0}")]
    Log(#[from] weir_log::LogError),
    #[error("checkpoint is unreadable: {0}")]
    Checkpoint(String),
    #[error("replay: {0}")]
    Replay(String),
    #[error("cannot start the engine thread: {0}")]
    Thread(#[from] std::io::Error),
}
