//! One AMQP client connection over raw tokio TCP: handshake, synchronous calls on channel 1,
//! and a clean close. The hot paths (publishing, consuming) use the halves directly.
//!
//! Invariants:
//! - Every await that waits on the broker during setup and close is bounded
//!   ([`CONNECT_TIMEOUT`], [`CALL_TIMEOUT`], [`CLOSE_TIMEOUT`]); the run itself is bounded by
//!   the monitor's stall timeout.
//! - A `connection.close` or `channel.close` from the broker becomes
//!   [`ClientError::Closed`] with the broker's reply code and text, never a hang.
//! - The client connects only to the URL's address.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use weir_amqp_codec::amq_protocol::protocol::{channel, connection, AMQPClass};
use weir_amqp_codec::{decode_frame, method_name, Frame, FrameError, FRAME_MIN_SIZE, PROTOCOL_HEADER};

use crate::url::AmqpUrl;
use crate::wire::{self, CHANNEL};

/// Longest time from TCP connect to an open channel.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the answer to a synchronous method (declare, purge, consume, …).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for `connection.close-ok`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the socket at a time: large, so a busy consumer makes few syscalls.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// A connection that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TCP connect failed.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// Where.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// The broker did not answer in time.
    #[error("timed out after {timeout:?} waiting for {waiting_for}")]
    Timeout {
        /// What was awaited.
        waiting_for: &'static str,
        /// How long.
        timeout: Duration,
    },
    /// A socket read or write failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The broker closed the TCP connection without `connection.close`.
    #[error("broker closed the TCP connection")]
    Eof,
    /// The broker sent bytes that are not valid AMQP.
    #[error("malformed frame from the broker: {0}")]
    Frame(#[from] FrameError),
    /// A delivery the consumer could not follow.
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
    /// The broker closed the connection or the channel.
    #[error("broker closed the {scope} with {code} {text} (method {method})")]
    Closed {
        /// `connection` or `channel`.
        scope: &'static str,
        /// Reply code.
        code: u16,
        /// Reply text.
        text: String,
        /// The method the broker blamed.
        method: String,
    },
    /// A method the benchmark did not expect at that point.
    #[error("unexpected {got} while waiting for {waiting_for}")]
    Unexpected {
        /// What was awaited.
        waiting_for: &'static str,
        /// What came.
        got: String,
    },
    /// The broker offers no mechanism the benchmark speaks.
    #[error("broker does not offer PLAIN authentication (offers {0:?})")]
    NoPlain(String),
    /// The broker cancelled a consumer (queue deleted).
    #[error("broker cancelled consumer {0}")]
    ConsumerCancelled(String),
}

/// The reading half: socket, buffer and negotiated frame-max.
#[derive(Debug)]
pub struct FrameReader {
    socket: OwnedReadHalf,
    /// Bytes read and not yet decoded.
    pub buf: BytesMut,
    /// Negotiated frame-max.
    pub frame_max: u32,
}

impl FrameReader {
    /// Reads more bytes into `buf`. Cancel-safe. `Err(Eof)` when the broker closed.
    pub async fn fill(&mut self) -> Result<usize, ClientError> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES / 2 {
            self.buf.reserve(READ_CHUNK_BYTES);
        }
        match self.socket.read_buf(&mut self.buf).await? {
            0 => Err(ClientError::Eof),
            read => Ok(read),
        }
    }

    /// The next frame, reading as needed (no timeout: callers bound it).
    pub async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.buf, self.frame_max)? {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// The next method on channel 0 or [`CHANNEL`], skipping heartbeats; broker closes become
    /// errors (after answering them with `close-ok` is not possible here: the caller closes).
    pub async fn next_method(&mut self, waiting_for: &'static str) -> Result<AMQPClass, ClientError> {
        loop {
            match self.next_frame().await? {
                Frame::Heartbeat { .. } => continue,
                Frame::Method { method, .. } => {
                    check_not_closed(&method)?;
                    return Ok(method);
                }
                other => {
                    return Err(ClientError::Unexpected {
                        waiting_for,
                        got: format!("content frame on channel {}", other.channel()),
                    })
                }
            }
        }
    }
}

/// An open connection with channel 1 open.
#[derive(Debug)]
pub struct Client {
    /// Reading half.
    pub reader: FrameReader,
    /// Writing half.
    pub writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to `url`, logs in, opens the vhost and channel 1, all within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(url: &AmqpUrl, connection_name: &str) -> Result<Client, ClientError> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::handshake(url, connection_name)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout { waiting_for: "the AMQP handshake", timeout: CONNECT_TIMEOUT }),
        }
    }

    async fn handshake(url: &AmqpUrl, connection_name: &str) -> Result<Client, ClientError> {
        let address = url.address();
        let stream = TcpStream::connect(&address).await.map_err(|source| ClientError::Connect { address, source })?;
        stream.set_nodelay(true)?;
        let (socket, writer) = stream.into_split();
        let mut client = Client {
            reader: FrameReader { socket, buf: BytesMut::with_capacity(READ_CHUNK_BYTES), frame_max: FRAME_MIN_SIZE },
            writer,
        };
        client.writer.write_all(&PROTOCOL_HEADER).await?;
        let start = match client.reader.next_method("connection.start").await? {
            AMQPClass::Connection(connection::AMQPMethod::Start(start)) => start,
            other => return Err(unexpected("connection.start", &other)),
        };
        if !wire::offers_plain(start.mechanisms.as_bytes()) {
            return Err(ClientError::NoPlain(String::from_utf8_lossy(start.mechanisms.as_bytes()).into_owned()));
        }
        client.send(0, wire::start_ok(&url.user, &url.password, connection_name)).await?;
        let tune = match client.reader.next_method("connection.tune").await? {
            AMQPClass::Connection(connection::AMQPMethod::Tune(tune)) => tune,
            other => return Err(unexpected("connection.tune", &other)),
        };
        let tune_ok = wire::tune_ok(&tune);
        client.reader.frame_max = tune_ok.frame_max;
        let mut out = BytesMut::new();
        wire::put_method(&mut out, 0, AMQPClass::Connection(connection::AMQPMethod::TuneOk(tune_ok)));
        wire::put_method(&mut out, 0, wire::connection_open(&url.vhost));
        client.writer.write_all(&out).await?;
        match client.reader.next_method("connection.open-ok").await? {
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(_)) => {}
            other => return Err(unexpected("connection.open-ok", &other)),
        }
        client.call(wire::channel_open(), "channel.open-ok").await?;
        Ok(client)
    }

    /// Negotiated frame-max.
    #[must_use]
    pub fn frame_max(&self) -> u32 {
        self.reader.frame_max
    }

    /// Writes one method.
    pub async fn send(&mut self, channel: u16, method: AMQPClass) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        wire::put_method(&mut out, channel, method);
        self.writer.write_all(&out).await?;
        Ok(())
    }

    /// Sends `method` on channel 1 and returns the next method the broker sends, within
    /// [`CALL_TIMEOUT`].
    pub async fn call(&mut self, method: AMQPClass, waiting_for: &'static str) -> Result<AMQPClass, ClientError> {
        self.send(CHANNEL, method).await?;
        match tokio::time::timeout(CALL_TIMEOUT, self.reader.next_method(waiting_for)).await {
            Ok(reply) => reply,
            Err(_) => Err(ClientError::Timeout { waiting_for, timeout: CALL_TIMEOUT }),
        }
    }

    /// Closes the connection: `connection.close`, then frames are read and dropped until
    /// `close-ok` or EOF, within [`CLOSE_TIMEOUT`].
    pub async fn close(&mut self) -> Result<(), ClientError> {
        close_connection(&mut self.reader, &mut self.writer).await
    }
}

/// Closes a connection given its halves (see [`Client::close`]).
pub async fn close_connection(reader: &mut FrameReader, writer: &mut OwnedWriteHalf) -> Result<(), ClientError> {
    let mut out = BytesMut::new();
    wire::put_method(&mut out, 0, wire::connection_close());
    writer.write_all(&out).await?;
    let wait = async {
        loop {
            match reader.next_frame().await {
                Ok(Frame::Method { method: AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)), .. })
                | Err(ClientError::Eof) => return Ok(()),
                // Both sides closing at once: the broker's close counts as our close-ok.
                Ok(Frame::Method { method: AMQPClass::Connection(connection::AMQPMethod::Close(_)), .. }) => {
                    let mut out = BytesMut::new();
                    wire::put_method(&mut out, 0, wire::connection_close_ok());
                    writer.write_all(&out).await?;
                    return Ok(());
                }
                Ok(_) => continue,
                Err(error) => return Err(error),
            }
        }
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, wait).await {
        Ok(result) => result,
        Err(_) => Err(ClientError::Timeout { waiting_for: "connection.close-ok", timeout: CLOSE_TIMEOUT }),
    }
}

/// `Err(Closed)` if `method` is the broker closing the connection or the channel.
pub fn check_not_closed(method: &AMQPClass) -> Result<(), ClientError> {
    let (scope, code, text, class_id, method_id) = match method {
        AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
            ("connection", close.reply_code, close.reply_text.as_str(), close.class_id, close.method_id)
        }
        AMQPClass::Channel(channel::AMQPMethod::Close(close)) => {
            ("channel", close.reply_code, close.reply_text.as_str(), close.class_id, close.method_id)
        }
        _ => return Ok(()),
    };
    Err(ClientError::Closed {
        scope,
        code,
        text: text.to_string(),
        method: method_name(class_id, method_id).unwrap_or("none").to_string(),
    })
}

/// An [`ClientError::Unexpected`] naming `method`.
#[must_use]
pub fn unexpected(waiting_for: &'static str, method: &AMQPClass) -> ClientError {
    ClientError::Unexpected { waiting_for, got: describe(method) }
}

/// `class.method` of a method, for error messages.
#[must_use]
pub fn describe(method: &AMQPClass) -> String {
    method_name(method.get_amqp_class_id(), method.get_amqp_method_id()).unwrap_or("an unknown method").to_string()
}

#[cfg(test)]
mod tests {
    use weir_amqp_codec::amq_protocol::types::ShortString;

    use super::*;

    #[test]
    fn broker_closes_become_errors_with_reply_code_and_method() {
        let close = AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
            reply_code: 406,
            reply_text: ShortString::from("PRECONDITION_FAILED - inequivalent arg 'durable'"),
            class_id: 50,
            method_id: 10,
        }));
        let error = check_not_closed(&close).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("406"), "{text}");
        assert!(text.contains("queue.declare"), "{text}");
        assert!(check_not_closed(&wire::channel_open()).is_ok());
    }

    #[test]
    fn methods_are_described_by_name() {
        assert_eq!(describe(&wire::confirm_select()), "confirm.select");
    }
}
