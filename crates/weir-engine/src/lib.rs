//! weir-engine: owns the log and the queue state; one loop of inbox, batch, append, fsync,
//! apply, reply.
//!
//! Protocol layers (`weir-amqp`, later the HTTP API) hold an [`EngineHandle`], send
//! [`Command`]s and receive [`Event`]s. The engine thread is the only owner of the state, so
//! nothing is locked; the log is the only thing that makes state durable, and no event that
//! reports durability leaves before the fsync that made it so (see `outbox.rs`).
//!
//! Layout: `api` (the vocabulary), `broker` (state and command handlers), `records` (the
//! log record formats), `recovery` (checkpoint + replay), `engine` (the thread and loop),
//! `outbox` (event ordering and the durability gate), `content` (message bodies in memory),
//! `topology` (vhosts, exchanges, bindings and routing), `security` (users, permissions and
//! logins), `filter` (which messages a consumer, get or browse may see).

mod api;
mod broker;
mod content;
mod engine;
mod error;
mod expiry;
pub mod filter;
mod outbox;
pub mod properties;
mod queue_config;
pub mod records;
mod recovery;
pub mod security;
mod stats;
mod topology;

pub use api::{
    AdminOp, ArgValue, BindRequest, BindTarget, BindingView, BrowseCursor, BrowseRequest, BrowseState, BrowsedMessage,
    ChannelId, Command, ConnectionId, ConnectionInfo, ConnectionShared, ConnectionView, ConsumeRequest, Event,
    EventSink, ExchangeDeclare, ExchangeView, Inspect, InspectReply, LeaseAction, Message, MoveRequest, Origin,
    OverviewView, Publish, QueueCounters, QueueDeclare, QueueView, CONNECTION_DELIVERIES_IN_FLIGHT_MAX, MOVE_BATCH_MAX,
    QUEUE_SETTINGS,
};
pub use broker::{DEFAULT_VHOST, ERROR_QUEUE};
pub use engine::{Engine, EngineConfig, EngineHandle, EngineStopped, BATCH_COMMANDS_MAX};
pub use error::{EngineError, ErrorKind, StartError};
pub use properties::PublishParts;
pub use queue_config::{Overflow, QueueConfig};
pub use stats::{CommitHistogram, EngineStats, COMMIT_BUCKETS_MICROS};
pub use topology::{check_vhost_limits, VHOST_LIMITS};
pub use weir_log::{FileStorage, LogConfig, RecoveryReport};
pub use weir_queue::selector;
