//! Errors of the log layer.
//!
//! Rules kept here: every error from the disk keeps its `io::Error` as `source`; running out of
//! space is its own variant (`NoSpace`) because the engine treats it differently (wait for
//! space) from a failed write or fsync (`Io`, after which the log is `Poisoned` for ever).

use std::io;

use crate::format::FIRST_USER_KIND;
use crate::report::Corruption;
use crate::{Lsn, RecordPos};

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A storage operation failed. During `commit` this also poisons the log.
    #[error("I/O error while {op} ({file}): {source}")]
    Io {
        op: &'static str,
        file: String,
        #[source]
        source: io::Error,
    },
    /// The device is full. Returned when preparing a segment or writing a checkpoint; nothing
    /// was half-written, the log is not poisoned, and the same call may succeed once space
    /// exists.
    #[error("no space left on device while {op} ({file}): {source}")]
    NoSpace {
        op: &'static str,
        file: String,
        #[source]
        source: io::Error,
    },
    /// An earlier write or fsync failed; the log refuses all further writes.
    #[error("the log is poisoned and refuses writes; original failure: {cause}")]
    Poisoned { cause: String },
    #[error("record payload is {len_bytes} bytes, the limit is {max_bytes} bytes")]
    RecordTooLarge { len_bytes: usize, max_bytes: u32 },
    #[error("record kind {kind:#04x} is reserved for the log itself (user kinds start at {FIRST_USER_KIND:#04x})")]
    ReservedKind { kind: u8 },
    /// Bytes read back from the log are damaged.
    #[error("corrupt log data: {0}")]
    Corrupt(Box<Corruption>),
    #[error("segment {segment} is not part of the log")]
    NotFound { segment: u32 },
    #[error("invalid record position segment {} offset {}: {reason}", pos.segment, pos.offset)]
    InvalidPosition { pos: RecordPos, reason: &'static str },
    #[error("segment {segment} is the active segment")]
    ActiveSegment { segment: u32 },
    #[error("segment {segment} holds records that are not committed yet")]
    SegmentBusy { segment: u32 },
    #[error("invalid log configuration: {reason} (value {value})")]
    InvalidConfig { reason: &'static str, value: u64 },
    #[error("replay callback failed at LSN {lsn}: {source}")]
    Replay {
        lsn: Lsn,
        #[source]
        source: ReplayError,
    },
    #[error("checkpoint payload is {len_bytes} bytes, the limit is {max_bytes} bytes")]
    CheckpointTooLarge { len_bytes: u64, max_bytes: u64 },
    #[error("log directory {dir} is locked by another process")]
    Locked { dir: String },
    #[error("{what} exhausted")]
    Exhausted { what: &'static str },
}

impl LogError {
    /// True for `NoSpace`: retry after freeing space (e.g. releasing segments).
    pub fn is_no_space(&self) -> bool {
        matches!(self, LogError::NoSpace { .. })
    }

    /// True for `Poisoned`.
    pub fn is_poisoned(&self) -> bool {
        matches!(self, LogError::Poisoned { .. })
    }

    /// True for `Corrupt`.
    pub fn is_corrupt(&self) -> bool {
        matches!(self, LogError::Corrupt(_))
    }

    /// Maps a storage error, turning "device full" into `NoSpace`.
    pub(crate) fn from_io(op: &'static str, file: &str, source: io::Error) -> LogError {
        if is_no_space_error(&source) {
            LogError::NoSpace { op, file: file.to_string(), source }
        } else {
            LogError::Io { op, file: file.to_string(), source }
        }
    }
}

pub(crate) fn is_no_space_error(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC) || error.kind() == io::ErrorKind::StorageFull
}

/// The error the engine's replay callback returns to stop `Log::open`.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A human-readable reason.
    #[error("{0}")]
    Message(String),
    /// The engine's own error.
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl ReplayError {
    pub fn new(message: impl Into<String>) -> ReplayError {
        ReplayError::Message(message.into())
    }
}
