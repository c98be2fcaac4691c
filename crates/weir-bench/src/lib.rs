//! weir-bench: a load generator for AMQP 0-9-1 brokers (Weir or RabbitMQ) that is not the
//! bottleneck.
//!
//! It speaks AMQP over plain tokio TCP with Weir's own sans-IO codec instead of a client
//! library: publishers copy a pre-encoded message and patch its timestamp, write 128 KiB at a
//! time, and keep a bounded confirm window; consumers read 1 MiB at a time, follow
//! deliveries without allocating, and ack with `multiple = true` every N messages. Per
//! message, the benchmark does a `memcpy` on one side and a few bounds checks on the other.
//!
//! Layers, pure at the bottom: `url`, `body`, `wire`, `confirms`, `delivery`, `procfs`
//! (parsing), `config` (flags → validated plans), `report`; then the async edges:
//! `client` (handshake), `publisher`, `consumer`, `monitor`, `run`, `broker` and `recovery`.
//!
//! Every run is bounded (`--duration` and/or `--count`, at most an hour), stops itself when
//! nothing moves for 30 s, and connects only to the URL it was given.

pub mod body;
pub mod broker;
pub mod client;
pub mod config;
pub mod confirms;
pub mod consumer;
pub mod delivery;
pub mod error;
pub mod monitor;
pub mod procfs;
pub mod publisher;
pub mod recovery;
pub mod report;
pub mod run;
pub mod stats;
pub mod url;
pub mod wire;
