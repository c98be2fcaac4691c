//! The top-level error of a benchmark command: each layer keeps its own typed error and
//! this enum only says which layer failed (its `source` is kept for the message).

use crate::broker::BrokerProcessError;
use crate::client::ClientError;
use crate::config::ConfigError;
use crate::procfs::ProcError;

/// Why a command could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Flags or URL refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A connection failed during setup (during the run, failures go into the report).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `/proc` of the broker could not be read.
    #[error("broker process: {0}")]
    Proc(#[from] ProcError),
    /// The broker process of `recovery` misbehaved.
    #[error(transparent)]
    Broker(#[from] BrokerProcessError),
    /// The fill of `recovery` did not complete.
    #[error("fill failed: {0}")]
    Fill(String),
    /// After the restart the queue did not hold the filled messages.
    #[error("after restart queue {queue} holds {found} messages, expected {expected}")]
    MessagesMissing {
        /// The queue.
        queue: String,
        /// What `queue.declare(passive)` said.
        found: u64,
        /// What was filled.
        expected: u64,
    },
    /// The tokio runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
}
