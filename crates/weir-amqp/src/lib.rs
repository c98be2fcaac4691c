//! weir-amqp: AMQP 0-9-1 connections over the engine.
//!
//! `connection` is the protocol state machine (sans-IO: frames and engine events in,
//! bytes and engine commands out); `server` is the thin tokio adapter that moves bytes;
//! `convert` maps between AMQP and engine types and holds the one error-code table.
//! Frame decoding and encoding live in `weir-amqp-codec`.

mod connection;
mod convert;
mod server;

pub use connection::{Connection, ConnectionLimits, Flow};
pub use server::{serve, AmqpConfig, Listener, CLOSE_OK_TIMEOUT, HANDSHAKE_TIMEOUT};
pub use weir_amqp_codec::Credentials;
