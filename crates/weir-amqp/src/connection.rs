//! One AMQP connection as a state machine over frames and engine events (sans-IO).
//!
//! [`Connection::on_frame`] takes a decoded frame and writes reply bytes into `out` and
//! engine commands into `commands`; [`Connection::on_events`] turns engine events into
//! bytes. The tokio adapter (`server.rs`) only moves bytes and commands, so everything a
//! client can make happen is here and testable without sockets.
//!
//! States: `AwaitStartOk` → `AwaitTuneOk` → `AwaitOpen` → `AwaitOpenOk` (engine checks the
//! vhost) → `Open` → `Closing` (we sent connection.close and wait for close-ok) → `Closed`.
//! Errors follow RabbitMQ's scope rule (AMQP-NOTES §3.1): soft codes close the channel,
//! hard codes close the connection; the close names the class and method that failed.

use std::collections::HashMap;
use std::net::SocketAddr;

use amq_protocol::protocol::{basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use weir_amqp_codec::{
    encode_confirm_ack, encode_confirm_nack, encode_deliver, encode_get_ok, encode_method, encode_return,
    parse_amqplain, parse_plain, Content, ContentAssembler, Credentials, Frame, FrameError, ReplyCode, FRAME_MIN_SIZE,
};
use weir_engine::{
    BindRequest, BindTarget, ChannelId, Command, ConnectionId, ConnectionInfo, ConsumeRequest, EngineError, Event,
    EventSink, ExchangeDeclare, Origin, Publish, PublishParts, QueueDeclare,
};

use crate::convert::{arguments, reply_code, short};

/// Limits and identity this server announces in `connection.tune`.
#[derive(Clone, Debug)]
pub struct ConnectionLimits {
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat_seconds: u16,
    pub message_size_max: u64,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self { channel_max: 2047, frame_max: 131_072, heartbeat_seconds: 60, message_size_max: 128 << 20 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    AwaitStartOk,
    /// start-ok is parsed; the server checks the password (slow: argon2) off this task's
    /// path and answers with [`Connection::login_result`].
    AwaitLogin,
    AwaitTuneOk,
    AwaitOpen,
    AwaitOpenOk,
    Open,
    /// We sent connection.close and wait for close-ok.
    Closing,
    /// The client sent connection.close: close-ok goes out once the engine has let go of the
    /// connection (its exclusive queues deleted, its unacked messages requeued).
    ClientClosing,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelPhase {
    Open,
    /// The client sent channel.close; close-ok goes out when the engine has let go.
    ClientClosing,
    /// We sent channel.close and wait for the client's close-ok. `engine_done`: the engine
    /// has already let go of the channel.
    ServerClosing {
        engine_done: bool,
    },
}

struct ChannelState {
    phase: ChannelPhase,
    content: ContentAssembler,
    confirm_mode: bool,
    tx_mode: bool,
    next_publish_sequence: u64,
    /// The last queue declared on this channel: what an empty queue name means (AMQP rule).
    last_queue: Option<String>,
}

/// What the adapter must do after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Flush `out`, then close the socket.
    Close,
    /// Check the credentials that [`Connection::take_login`] returns, then call
    /// [`Connection::login_result`] before feeding more frames.
    Authenticate,
    /// Flush `out` (it ends with connection.close-ok), then leave closing the socket to the
    /// client, waiting a bounded time (RabbitMQ does the same; closing first makes clients
    /// report a spurious EOF).
    Linger,
}

pub struct Connection {
    id: ConnectionId,
    state: State,
    limits: ConnectionLimits,
    peer: SocketAddr,
    /// Credentials from start-ok, until the server takes them to check.
    login: Option<Credentials>,
    /// The mechanism they came with (for the refusal text).
    mechanism: String,
    /// Who logged in and with what client, once known (for connection listings).
    info: ConnectionInfo,
    frame_max: u32,
    channel_max: u16,
    heartbeat_seconds: u16,
    client_capabilities: FieldTable,
    channels: HashMap<ChannelId, ChannelState>,
    /// Channel numbers the client may already reuse whose old incarnation the engine has not
    /// yet closed: how many `ChannelClosed` events are still due. The engine applies commands
    /// in order, so every event of an old incarnation comes before its `ChannelClosed`;
    /// events for a number listed here are stale and dropped.
    engine_closes_due: HashMap<ChannelId, u32>,
    sink: EventSink,
}

fn method_token(class_id: u16, method_id: u16) -> u32 {
    (u32::from(class_id) << 16) | u32::from(method_id)
}

fn hard(code: ReplyCode, text: impl Into<String>) -> FrameError {
    FrameError::new(code, text)
}

impl Connection {
    pub fn new(id: ConnectionId, limits: ConnectionLimits, peer: SocketAddr, sink: EventSink) -> Self {
        Self {
            id,
            state: State::AwaitStartOk,
            frame_max: FRAME_MIN_SIZE,
            channel_max: limits.channel_max,
            heartbeat_seconds: 0,
            limits,
            peer,
            login: None,
            mechanism: String::new(),
            info: ConnectionInfo { peer: peer.to_string(), ..ConnectionInfo::default() },
            client_capabilities: FieldTable::default(),
            channels: HashMap::new(),
            engine_closes_due: HashMap::new(),
            sink,
        }
    }

    pub fn id(&self) -> ConnectionId {
        self.id
    }

    /// The frame size limit for decoding inbound frames right now.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    pub fn heartbeat_seconds(&self) -> u16 {
        self.heartbeat_seconds
    }

    /// True once the engine knows this connection (so it must be told when it goes).
    pub fn registered(&self) -> bool {
        matches!(self.state, State::AwaitOpenOk | State::Open | State::Closing | State::ClientClosing)
    }

    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// A connection.close is under way (ours, waiting for close-ok; or the client's, waiting
    /// for the engine): bounded by the adapter's close timeout.
    pub fn is_closing(&self) -> bool {
        matches!(self.state, State::Closing | State::ClientClosing)
    }

    /// A close took longer than the adapter's close timeout. Our own close: give up on the
    /// client's close-ok and close. The client's close: answer it now (the engine is stuck or
    /// slow) and let the client close the socket.
    pub fn close_timed_out(&mut self, out: &mut BytesMut) -> Flow {
        let was = self.state;
        self.state = State::Closed;
        if was == State::ClientClosing {
            encode_method(out, 0, &AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})));
            Flow::Linger
        } else {
            Flow::Close
        }
    }

    /// The byte stream itself is broken (bad frame end, oversized frame…): send
    /// connection.close if the connection is open, then close the socket, since nothing
    /// after this point can be parsed reliably.
    pub fn on_decode_error(&mut self, error: FrameError, out: &mut BytesMut, commands: &mut Vec<Command>) -> Flow {
        if self.state == State::Open {
            let mut error = error;
            error.channel = 0;
            self.fail(error, out, commands);
        }
        self.state = State::Closed;
        Flow::Close
    }

    /// The greeting: `connection.start`, written right after the protocol header matched.
    pub fn start(&mut self, out: &mut BytesMut) {
        let mut capabilities = FieldTable::default();
        for name in [
            "publisher_confirms",
            "basic.nack",
            "consumer_cancel_notify",
            "authentication_failure_close",
            "per_consumer_qos",
        ] {
            capabilities.insert(name.into(), AMQPValue::Boolean(true));
        }
        let mut properties = FieldTable::default();
        properties.insert("product".into(), AMQPValue::LongString(LongString::from("Weir")));
        properties.insert("version".into(), AMQPValue::LongString(LongString::from(env!("CARGO_PKG_VERSION"))));
        properties.insert("platform".into(), AMQPValue::LongString(LongString::from("Rust")));
        properties.insert("capabilities".into(), AMQPValue::FieldTable(capabilities));
        let start = connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: properties,
            mechanisms: LongString::from("PLAIN AMQPLAIN"),
            locales: LongString::from("en_US"),
        };
        encode_method(out, 0, &AMQPClass::Connection(connection::AMQPMethod::Start(start)));
    }

    /// Handle one inbound frame.
    pub fn on_frame(&mut self, frame: Frame, out: &mut BytesMut, commands: &mut Vec<Command>) -> Flow {
        let result = match self.state {
            State::Closed => return Flow::Close,
            State::ClientClosing => return Flow::Continue,
            // After connection.close only close-ok (or a crossing close) matters.
            State::Closing => match frame {
                Frame::Method { method: AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)), .. }
                | Frame::Method { method: AMQPClass::Connection(connection::AMQPMethod::Close(_)), .. } => {
                    self.state = State::Closed;
                    return Flow::Close;
                }
                _ => return Flow::Continue,
            },
            _ => self.dispatch(frame, out, commands),
        };
        match result {
            Ok(flow) => flow,
            Err(error) => self.fail(error, out, commands),
        }
    }

    /// Close with `error` on the scope RabbitMQ uses for its code.
    fn fail(&mut self, error: FrameError, out: &mut BytesMut, commands: &mut Vec<Command>) -> Flow {
        if !error.is_hard() && error.channel != 0 && self.state == State::Open {
            self.close_channel(error.channel, &error, out, commands);
            return Flow::Continue;
        }
        if self.state == State::AwaitStartOk && error.code != ReplyCode::AccessRefused {
            // Before start-ok nothing is agreed on: just close the socket. From tune-ok on,
            // the client gets a connection.close (RabbitMQ sends 530 for bad tune values).
            self.state = State::Closed;
            return Flow::Close;
        }
        let close = connection::Close {
            reply_code: error.code.code(),
            reply_text: short(&error.reply_text()),
            class_id: error.class_id,
            method_id: error.method_id,
        };
        encode_method(out, 0, &AMQPClass::Connection(connection::AMQPMethod::Close(close)));
        self.state = State::Closing;
        Flow::Continue
    }

    fn close_channel(
        &mut self,
        channel: ChannelId,
        error: &FrameError,
        out: &mut BytesMut,
        commands: &mut Vec<Command>,
    ) {
        let Some(state) = self.channels.get_mut(&channel) else {
            return;
        };
        if matches!(state.phase, ChannelPhase::ServerClosing { .. }) {
            return;
        }
        // The engine lets go only when it answers a ChannelClose with ChannelClosed; if the
        // client's close already sent one, that answer is still to come: do not send another.
        let engine_told = state.phase == ChannelPhase::ClientClosing;
        state.phase = ChannelPhase::ServerClosing { engine_done: false };
        let close = channel::Close {
            reply_code: error.code.code(),
            reply_text: short(&error.reply_text()),
            class_id: error.class_id,
            method_id: error.method_id,
        };
        encode_method(out, channel, &AMQPClass::Channel(channel::AMQPMethod::Close(close)));
        if !engine_told {
            commands.push(Command::ChannelClose { origin: self.origin(channel, 20, 40) });
        }
    }

    fn origin(&self, channel: ChannelId, class_id: u16, method_id: u16) -> Origin {
        Origin { connection: self.id, channel, method: method_token(class_id, method_id) }
    }

    fn dispatch(&mut self, frame: Frame, out: &mut BytesMut, commands: &mut Vec<Command>) -> Result<Flow, FrameError> {
        match frame {
            Frame::Heartbeat { channel: 0 } => Ok(Flow::Continue),
            Frame::Heartbeat { channel } => {
                Err(hard(ReplyCode::UnexpectedFrame, format!("heartbeat frame on channel {channel}")))
            }
            Frame::Method { channel: 0, class_id, method_id, method } => {
                self.connection_method(method, out, commands).map_err(|e| e.for_method(class_id, method_id))
            }
            Frame::Method { channel, class_id, method_id, method } => {
                self.require_open()?;
                self.channel_method(channel, class_id, method_id, method, out, commands).map_err(|e| {
                    // Keep the method an error already names (the publish a content belongs to).
                    let e = e.on_channel(channel);
                    if e.class_id == 0 {
                        e.for_method(class_id, method_id)
                    } else {
                        e
                    }
                })?;
                Ok(Flow::Continue)
            }
            Frame::Header { channel: 0, .. } | Frame::Body { channel: 0, .. } => {
                Err(hard(ReplyCode::UnexpectedFrame, "content frame on channel 0"))
            }
            Frame::Header { channel, class_id, body_size, properties, raw_properties } => {
                self.require_open()?;
                let Some(state) = self.channels.get_mut(&channel) else {
                    return Err(hard(ReplyCode::ChannelError, format!("expected 'channel.open' on channel {channel}")));
                };
                if state.phase != ChannelPhase::Open {
                    return Ok(Flow::Continue); // content in flight when the channel closed
                }
                let content = state
                    .content
                    .on_header(class_id, body_size, properties, raw_properties)
                    .map_err(|e| e.on_channel(channel))?;
                self.content_done(channel, content, commands)
            }
            Frame::Body { channel, payload } => {
                self.require_open()?;
                let Some(state) = self.channels.get_mut(&channel) else {
                    return Err(hard(ReplyCode::ChannelError, format!("expected 'channel.open' on channel {channel}")));
                };
                if state.phase != ChannelPhase::Open {
                    return Ok(Flow::Continue); // content in flight when the channel closed
                }
                let content = state.content.on_body(payload).map_err(|e| e.on_channel(channel))?;
                self.content_done(channel, content, commands)
            }
        }
    }

    fn require_open(&self) -> Result<(), FrameError> {
        if self.state == State::Open {
            Ok(())
        } else {
            Err(hard(ReplyCode::ChannelError, "channel frame before the connection is open"))
        }
    }

    // -----------------------------------------------------------------------------------
    // Channel 0

    fn connection_method(
        &mut self,
        method: AMQPClass,
        out: &mut BytesMut,
        commands: &mut Vec<Command>,
    ) -> Result<Flow, FrameError> {
        let AMQPClass::Connection(method) = method else {
            return Err(hard(ReplyCode::ChannelError, "unexpected method in connection state"));
        };
        match (self.state, method) {
            (State::AwaitStartOk, connection::AMQPMethod::StartOk(start_ok)) => self.start_ok(start_ok),
            (State::AwaitTuneOk, connection::AMQPMethod::TuneOk(tune_ok)) => {
                if tune_ok.frame_max < FRAME_MIN_SIZE || tune_ok.frame_max > self.limits.frame_max {
                    return Err(hard(
                        ReplyCode::NotAllowed,
                        format!(
                            "negotiated frame_max = {} is outside {}..={}",
                            tune_ok.frame_max, FRAME_MIN_SIZE, self.limits.frame_max
                        ),
                    ));
                }
                if tune_ok.channel_max == 0 || tune_ok.channel_max > self.limits.channel_max {
                    return Err(hard(
                        ReplyCode::NotAllowed,
                        format!(
                            "negotiated channel_max = {} is outside 1..={}",
                            tune_ok.channel_max, self.limits.channel_max
                        ),
                    ));
                }
                self.frame_max = tune_ok.frame_max;
                self.channel_max = tune_ok.channel_max;
                self.heartbeat_seconds = tune_ok.heartbeat;
                self.state = State::AwaitOpen;
                Ok(Flow::Continue)
            }
            (State::AwaitOpen, connection::AMQPMethod::Open(open)) => {
                self.state = State::AwaitOpenOk;
                commands.push(Command::Connect {
                    connection: self.id,
                    vhost: open.virtual_host.as_str().to_string(),
                    info: self.info.clone(),
                    sink: self.sink.clone(),
                });
                Ok(Flow::Continue)
            }
            (State::Open, connection::AMQPMethod::Close(_))
            | (State::AwaitOpenOk, connection::AMQPMethod::Close(_)) => {
                self.state = State::ClientClosing;
                commands.push(Command::Disconnect { connection: self.id });
                Ok(Flow::Continue)
            }
            (State::Open, connection::AMQPMethod::UpdateSecret(_)) => {
                encode_method(
                    out,
                    0,
                    &AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
                Ok(Flow::Continue)
            }
            (State::Open, connection::AMQPMethod::Blocked(_) | connection::AMQPMethod::Unblocked(_)) => {
                Ok(Flow::Continue)
            }
            (_, other) => Err(hard(
                ReplyCode::CommandInvalid,
                format!("connection method {other:?} is not valid in state {:?}", self.state),
            )),
        }
    }

    fn start_ok(&mut self, start_ok: connection::StartOk) -> Result<Flow, FrameError> {
        let client_properties = start_ok.client_properties.inner();
        if let Some(AMQPValue::FieldTable(capabilities)) = client_properties.get("capabilities") {
            self.client_capabilities = capabilities.clone();
        }
        let text = |key: &str| match client_properties.get(key) {
            Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            Some(AMQPValue::ShortString(s)) => s.as_str().to_string(),
            _ => String::new(),
        };
        let client = format!("{} {}", text("product"), text("version"));
        self.info.client = weir_amqp_codec::truncate_to_char_boundary(client.trim(), 255).to_string();
        let mechanism = start_ok.mechanism.as_str();
        let credentials = match mechanism {
            "PLAIN" => parse_plain(start_ok.response.as_bytes())?,
            "AMQPLAIN" => parse_amqplain(start_ok.response.as_bytes())?,
            other => {
                return Err(hard(ReplyCode::CommandInvalid, format!("unknown authentication mechanism '{other}'")))
            }
        };
        self.mechanism = mechanism.to_string();
        self.login = Some(credentials);
        self.state = State::AwaitLogin;
        Ok(Flow::Authenticate)
    }

    /// The credentials to check after [`Flow::Authenticate`], and whether the client is on
    /// loopback (`guest` may log in from there only).
    pub fn take_login(&mut self) -> Option<(Credentials, bool)> {
        self.login.take().map(|credentials| (credentials, self.peer.ip().is_loopback()))
    }

    /// The outcome of the check: the user's name, or None when refused.
    pub fn login_result(&mut self, user: Option<String>, out: &mut BytesMut) -> Flow {
        if self.state != State::AwaitLogin {
            return Flow::Close;
        }
        let mechanism = std::mem::take(&mut self.mechanism);
        if let Some(user) = user {
            self.info.user = user;
        } else {
            tracing::warn!(peer = %self.peer, mechanism, "login refused");
            if self.client_capability("authentication_failure_close") {
                let close = connection::Close {
                    reply_code: ReplyCode::AccessRefused.code(),
                    reply_text: short(&format!(
                        "ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}. \
                         For details see the broker logfile."
                    )),
                    class_id: 0,
                    method_id: 0,
                };
                encode_method(out, 0, &AMQPClass::Connection(connection::AMQPMethod::Close(close)));
                self.state = State::Closing;
                return Flow::Continue;
            }
            self.state = State::Closed;
            return Flow::Close;
        }
        let tune = connection::Tune {
            channel_max: self.limits.channel_max,
            frame_max: self.limits.frame_max,
            heartbeat: self.limits.heartbeat_seconds,
        };
        encode_method(out, 0, &AMQPClass::Connection(connection::AMQPMethod::Tune(tune)));
        self.state = State::AwaitTuneOk;
        Flow::Continue
    }

    fn client_capability(&self, name: &str) -> bool {
        matches!(self.client_capabilities.inner().get(name), Some(AMQPValue::Boolean(true)))
    }

    // -----------------------------------------------------------------------------------
    // Channels

    fn channel_method(
        &mut self,
        channel: ChannelId,
        class_id: u16,
        method_id: u16,
        method: AMQPClass,
        out: &mut BytesMut,
        commands: &mut Vec<Command>,
    ) -> Result<(), FrameError> {
        let origin = self.origin(channel, class_id, method_id);
        if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = method {
            if self.channels.contains_key(&channel) {
                return Err(hard(ReplyCode::ChannelError, "second 'channel.open' seen"));
            }
            if channel > self.channel_max {
                return Err(hard(
                    ReplyCode::NotAllowed,
                    format!("channel {channel} is above channel_max {}", self.channel_max),
                ));
            }
            self.channels.insert(
                channel,
                ChannelState {
                    phase: ChannelPhase::Open,
                    content: ContentAssembler::new(self.limits.message_size_max),
                    confirm_mode: false,
                    tx_mode: false,
                    next_publish_sequence: 1,
                    last_queue: None,
                },
            );
            commands.push(Command::ChannelOpen { origin });
            encode_method(out, channel, &AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})));
            return Ok(());
        }
        let Some(state) = self.channels.get_mut(&channel) else {
            return Err(hard(ReplyCode::ChannelError, format!("expected 'channel.open' on channel {channel}")));
        };
        match state.phase {
            ChannelPhase::Open => {}
            ChannelPhase::ClientClosing => return Ok(()),
            ChannelPhase::ServerClosing { engine_done } => {
                // Only close-ok, or a close crossing ours, matters now; everything else is dropped.
                match method {
                    AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                        // Crossing closes: answer it, and still wait for the client's close-ok.
                        let close_ok = AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {}));
                        encode_method(out, channel, &close_ok);
                    }
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                        // The number is the client's again at once (pika reopens it right away).
                        self.channels.remove(&channel);
                        if !engine_done {
                            *self.engine_closes_due.entry(channel).or_default() += 1;
                        }
                    }
                    _ => {}
                }
                return Ok(());
            }
        }
        // A method in the middle of a content: the assembler's 505 names basic.publish, as
        // RabbitMQ's does.
        state.content.on_method(class_id, method_id)?;
        match method {
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                state.phase = ChannelPhase::ClientClosing;
                commands.push(Command::ChannelClose { origin });
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {}
            AMQPClass::Channel(channel::AMQPMethod::Flow(flow)) => {
                if !flow.active {
                    return Err(hard(ReplyCode::NotImplemented, "active=false is not supported"));
                }
                encode_method(
                    out,
                    channel,
                    &AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: true })),
                );
            }
            AMQPClass::Queue(method) => {
                if let queue::AMQPMethod::Declare(declare) = &method {
                    if !declare.queue.as_str().is_empty() {
                        state.last_queue = Some(declare.queue.as_str().to_string());
                    }
                }
                let last_queue = state.last_queue.clone();
                queue_method(origin, method, last_queue.as_deref(), commands)?
            }
            AMQPClass::Exchange(method) => exchange_method(origin, method, commands)?,
            AMQPClass::Basic(method) => self.basic_method(origin, method, out, commands)?,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                if state.tx_mode {
                    return Err(FrameError::new(
                        ReplyCode::PreconditionFailed,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                state.confirm_mode = true;
                if !select.nowait {
                    encode_method(
                        out,
                        channel,
                        &AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
            }
            AMQPClass::Tx(tx::AMQPMethod::Select(_)) => {
                if state.confirm_mode {
                    return Err(FrameError::new(
                        ReplyCode::PreconditionFailed,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                state.tx_mode = true;
                commands.push(Command::TxSelect { origin });
            }
            AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => commands.push(Command::TxCommit { origin }),
            AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => commands.push(Command::TxRollback { origin }),
            other => {
                return Err(hard(ReplyCode::NotImplemented, format!("{} is not implemented yet", method_name(&other))))
            }
        }
        Ok(())
    }

    fn basic_method(
        &mut self,
        origin: Origin,
        method: basic::AMQPMethod,
        out: &mut BytesMut,
        commands: &mut Vec<Command>,
    ) -> Result<(), FrameError> {
        let state = self.channels.get_mut(&origin.channel).expect("checked by caller");
        let command = match method {
            basic::AMQPMethod::Publish(publish) => {
                if publish.immediate {
                    return Err(hard(ReplyCode::NotImplemented, "immediate=true"));
                }
                state.content.start(publish)?;
                return Ok(());
            }
            basic::AMQPMethod::Qos(qos) => {
                Command::Qos { origin, prefetch_count: qos.prefetch_count, global: qos.global }
            }
            basic::AMQPMethod::Consume(consume) => Command::Consume {
                origin,
                consume: ConsumeRequest {
                    queue: queue_name(consume.queue.as_str(), state.last_queue.as_deref())?,
                    consumer_tag: consume.consumer_tag.as_str().to_string(),
                    no_ack: consume.no_ack,
                    exclusive: consume.exclusive,
                    no_wait: consume.nowait,
                    arguments: arguments(&consume.arguments),
                },
            },
            basic::AMQPMethod::Cancel(cancel) => Command::Cancel {
                origin,
                consumer_tag: cancel.consumer_tag.as_str().to_string(),
                no_wait: cancel.nowait,
            },
            basic::AMQPMethod::Get(get) => Command::Get {
                origin,
                queue: queue_name(get.queue.as_str(), state.last_queue.as_deref())?,
                no_ack: get.no_ack,
                filter: None,
            },
            basic::AMQPMethod::Ack(ack) => {
                Command::Ack { origin, delivery_tag: ack.delivery_tag, multiple: ack.multiple }
            }
            basic::AMQPMethod::Nack(nack) => Command::Reject {
                origin,
                delivery_tag: nack.delivery_tag,
                multiple: nack.multiple,
                requeue: nack.requeue,
            },
            basic::AMQPMethod::Reject(reject) => {
                Command::Reject { origin, delivery_tag: reject.delivery_tag, multiple: false, requeue: reject.requeue }
            }
            basic::AMQPMethod::Recover(recover) => {
                if !recover.requeue {
                    return Err(hard(ReplyCode::NotImplemented, "requeue=false"));
                }
                Command::Recover { origin }
            }
            basic::AMQPMethod::RecoverAsync(recover) => {
                if !recover.requeue {
                    return Err(hard(ReplyCode::NotImplemented, "requeue=false"));
                }
                Command::Recover { origin }
            }
            other => {
                let _ = out;
                return Err(hard(ReplyCode::CommandInvalid, format!("basic method {other:?} is not sent by clients")));
            }
        };
        commands.push(command);
        Ok(())
    }

    /// A publish's content is complete: hand it to the engine.
    fn content_done(
        &mut self,
        channel: ChannelId,
        content: Option<Content>,
        commands: &mut Vec<Command>,
    ) -> Result<Flow, FrameError> {
        let Some(content) = content else {
            return Ok(Flow::Continue);
        };
        let state = self.channels.get_mut(&channel).expect("content belongs to an open channel");
        if state.phase != ChannelPhase::Open {
            return Ok(Flow::Continue); // content that was in flight when the channel closed
        }
        let confirm = state.confirm_mode.then(|| {
            let sequence = state.next_publish_sequence;
            state.next_publish_sequence += 1;
            sequence
        });
        let publish = content.publish;
        let parts = PublishParts {
            origin: self.origin(channel, 60, 40),
            exchange: publish.exchange.as_str(),
            routing_key: publish.routing_key.as_str(),
            mandatory: publish.mandatory,
            confirm,
            properties: &content.properties,
            raw_properties: content.raw_properties,
            body: owned(content.body),
        };
        let publish = Publish::from_parts(parts).map_err(|e| engine_error(&e, 60, 40).on_channel(channel))?;
        commands.push(Command::Publish(Box::new(publish)));
        Ok(Flow::Continue)
    }

    // -----------------------------------------------------------------------------------
    // Engine events

    /// Turn engine events into frames. Returns how many deliveries were written (for the
    /// in-flight accounting) and whether to close.
    pub fn on_events(&mut self, events: Vec<Event>, out: &mut BytesMut, commands: &mut Vec<Command>) -> (usize, Flow) {
        let mut deliveries = 0;
        for event in events {
            if matches!(event, Event::Deliver { .. }) {
                deliveries += 1;
            }
            let flow = self.on_event(event, out, commands);
            if flow != Flow::Continue {
                return (deliveries, flow);
            }
        }
        (deliveries, Flow::Continue)
    }

    fn channel_is_open(&self, channel: ChannelId) -> bool {
        self.channels.get(&channel).is_some_and(|c| c.phase == ChannelPhase::Open)
    }

    fn on_event(&mut self, event: Event, out: &mut BytesMut, commands: &mut Vec<Command>) -> Flow {
        if self.state == State::Closed {
            return Flow::Close;
        }
        let frame_max = self.frame_max;
        match event {
            Event::Disconnected => {
                if self.state == State::ClientClosing {
                    let close_ok = AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {}));
                    encode_method(out, 0, &close_ok);
                    self.state = State::Closed;
                    return Flow::Linger;
                }
            }
            Event::ConnectionOpened => {
                if self.state == State::AwaitOpenOk {
                    self.state = State::Open;
                    encode_method(
                        out,
                        0,
                        &AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
                    );
                }
            }
            Event::ConnectionError { error } => {
                match self.state {
                    // Already closing (say an operator closed it twice): one close is enough.
                    State::Closing | State::ClientClosing | State::Closed => return Flow::Continue,
                    // An unknown vhost is refused before the connection counts as open.
                    State::AwaitOpenOk => self.state = State::Open,
                    _ => {}
                }
                return self.fail(engine_error(&error, 0, 0), out, commands);
            }
            Event::ChannelClosed { channel } if self.engine_closes_due.contains_key(&channel) => {
                let due = self.engine_closes_due.get_mut(&channel).expect("checked");
                *due -= 1;
                if *due == 0 {
                    self.engine_closes_due.remove(&channel);
                }
            }
            Event::ChannelClosed { channel } => match self.channels.get(&channel).map(|c| c.phase) {
                Some(ChannelPhase::ClientClosing) => {
                    self.channels.remove(&channel);
                    encode_method(out, channel, &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})));
                }
                Some(ChannelPhase::ServerClosing { .. }) => {
                    if let Some(state) = self.channels.get_mut(&channel) {
                        state.phase = ChannelPhase::ServerClosing { engine_done: true };
                    }
                }
                Some(ChannelPhase::Open) | None => {}
            },
            Event::ChannelError { channel, method, error } => {
                if !self.channels.contains_key(&channel) || self.engine_closes_due.contains_key(&channel) {
                    return Flow::Continue;
                }
                let error = engine_error(&error, (method >> 16) as u16, method as u16).on_channel(channel);
                return self.fail(error, out, commands);
            }
            event => {
                let channel = event_channel(&event);
                if !self.channel_is_open(channel) || self.engine_closes_due.contains_key(&channel) {
                    return Flow::Continue; // stale: the channel closed meanwhile
                }
                if let Event::QueueDeclareOk { queue, .. } = &event {
                    if let Some(state) = self.channels.get_mut(&channel) {
                        state.last_queue = Some(queue.clone());
                    }
                }
                self.encode_event(event, frame_max, out);
            }
        }
        Flow::Continue
    }

    fn encode_event(&mut self, event: Event, frame_max: u32, out: &mut BytesMut) {
        let method = |out: &mut BytesMut, channel: ChannelId, class: AMQPClass| encode_method(out, channel, &class);
        match event {
            Event::Deliver { channel, consumer_tag, delivery_tag, redelivered, message } => encode_deliver(
                out,
                channel,
                &consumer_tag,
                delivery_tag,
                redelivered,
                &message.exchange,
                &message.routing_key,
                &message.raw_properties,
                &message.body,
                frame_max,
            ),
            Event::GetOk { channel, delivery_tag, redelivered, message_count, message } => encode_get_ok(
                out,
                channel,
                delivery_tag,
                redelivered,
                &message.exchange,
                &message.routing_key,
                message_count,
                &message.raw_properties,
                &message.body,
                frame_max,
            ),
            Event::GetEmpty { channel } => {
                method(out, channel, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})))
            }
            Event::ConfirmAck { channel, sequence, multiple } => encode_confirm_ack(out, channel, sequence, multiple),
            Event::ConfirmNack { channel, sequence, multiple } => {
                encode_confirm_nack(out, channel, sequence, multiple, false)
            }
            Event::Returned { channel, message } => encode_return(
                out,
                channel,
                ReplyCode::NoRoute,
                "NO_ROUTE",
                &message.exchange,
                &message.routing_key,
                &message.raw_properties,
                &message.body,
                frame_max,
            ),
            Event::ExchangeDeclareOk { channel } => {
                method(out, channel, AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})))
            }
            Event::ExchangeDeleteOk { channel } => {
                method(out, channel, AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})))
            }
            Event::BindOk { channel, to_exchange: false } => {
                method(out, channel, AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})))
            }
            Event::BindOk { channel, to_exchange: true } => {
                method(out, channel, AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})))
            }
            Event::UnbindOk { channel, to_exchange: false } => {
                method(out, channel, AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})))
            }
            Event::UnbindOk { channel, to_exchange: true } => {
                method(out, channel, AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})))
            }
            Event::QueueDeclareOk { channel, queue, message_count, consumer_count } => method(
                out,
                channel,
                AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                    queue: short(&queue),
                    message_count,
                    consumer_count,
                })),
            ),
            Event::QueueDeleteOk { channel, message_count } => {
                method(out, channel, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk { message_count })))
            }
            Event::QueuePurgeOk { channel, message_count } => {
                method(out, channel, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk { message_count })))
            }
            Event::ConsumeOk { channel, consumer_tag } => method(
                out,
                channel,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk { consumer_tag: short(&consumer_tag) })),
            ),
            Event::CancelOk { channel, consumer_tag } => method(
                out,
                channel,
                AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk { consumer_tag: short(&consumer_tag) })),
            ),
            Event::ConsumerCancelled { channel, consumer_tag } => {
                if self.client_capability("consumer_cancel_notify") {
                    method(
                        out,
                        channel,
                        AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
                            consumer_tag: short(&consumer_tag),
                            nowait: true,
                        })),
                    )
                }
            }
            Event::QosOk { channel } => {
                method(out, channel, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})))
            }
            Event::TxSelectOk { channel } => {
                method(out, channel, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})))
            }
            Event::TxCommitOk { channel } => {
                method(out, channel, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})))
            }
            Event::TxRollbackOk { channel } => {
                method(out, channel, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})))
            }
            Event::RecoverOk { channel } => {
                method(out, channel, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})))
            }
            // Answers to the HTTP API's own commands (admin, browse pages): AMQP clients never
            // send those, so these never come; nothing to write.
            Event::AdminDone { .. } | Event::Browsed { .. } | Event::Moved { .. } | Event::Held { .. } => {}
            Event::ConnectionOpened
            | Event::Disconnected
            | Event::ConnectionError { .. }
            | Event::ChannelClosed { .. }
            | Event::ChannelError { .. } => unreachable!("handled in on_event"),
        }
    }

    /// The server is stopping: tell the client (320 CONNECTION_FORCED).
    pub fn force_close(&mut self, out: &mut BytesMut) {
        if matches!(self.state, State::Open | State::AwaitOpenOk) {
            let close = connection::Close {
                reply_code: ReplyCode::ConnectionForced.code(),
                reply_text: short("CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"),
                class_id: 0,
                method_id: 0,
            };
            encode_method(out, 0, &AMQPClass::Connection(connection::AMQPMethod::Close(close)));
            self.state = State::Closing;
        } else {
            self.state = State::Closed;
        }
    }

    /// Heartbeats stopped arriving.
    pub fn heartbeat_timeout(&mut self) {
        self.state = State::Closed;
    }
}

/// An empty queue name means the last queue declared on the channel (AMQP 0-9-1 rule);
/// with none declared it is 404, as RabbitMQ answers.
fn queue_name(name: &str, last_queue: Option<&str>) -> Result<String, FrameError> {
    if !name.is_empty() {
        return Ok(name.to_string());
    }
    last_queue.map(str::to_string).ok_or_else(|| FrameError::new(ReplyCode::NotFound, "no previously declared queue"))
}

fn queue_method(
    origin: Origin,
    method: queue::AMQPMethod,
    last_queue: Option<&str>,
    commands: &mut Vec<Command>,
) -> Result<(), FrameError> {
    let command = match method {
        queue::AMQPMethod::Declare(declare) => Command::QueueDeclare {
            origin,
            declare: QueueDeclare {
                name: declare.queue.as_str().to_string(),
                passive: declare.passive,
                durable: declare.durable,
                exclusive: declare.exclusive,
                auto_delete: declare.auto_delete,
                arguments: arguments(&declare.arguments),
            },
            no_wait: declare.nowait,
        },
        queue::AMQPMethod::Delete(delete) => Command::QueueDelete {
            origin,
            queue: queue_name(delete.queue.as_str(), last_queue)?,
            if_unused: delete.if_unused,
            if_empty: delete.if_empty,
            no_wait: delete.nowait,
        },
        queue::AMQPMethod::Purge(purge) => {
            Command::QueuePurge { origin, queue: queue_name(purge.queue.as_str(), last_queue)?, no_wait: purge.nowait }
        }
        queue::AMQPMethod::Bind(bind) => {
            let queue = queue_name(bind.queue.as_str(), last_queue)?;
            // With the queue name left empty, an empty routing key means that queue's name.
            let routing_key = if bind.queue.as_str().is_empty() && bind.routing_key.as_str().is_empty() {
                queue.clone()
            } else {
                bind.routing_key.as_str().to_string()
            };
            Command::Bind {
                origin,
                bind: BindRequest {
                    source: bind.exchange.as_str().to_string(),
                    destination: BindTarget::Queue(queue),
                    routing_key,
                    arguments: arguments(&bind.arguments),
                },
                no_wait: bind.nowait,
            }
        }
        queue::AMQPMethod::Unbind(unbind) => Command::Unbind {
            origin,
            bind: BindRequest {
                source: unbind.exchange.as_str().to_string(),
                destination: BindTarget::Queue(queue_name(unbind.queue.as_str(), last_queue)?),
                routing_key: unbind.routing_key.as_str().to_string(),
                arguments: arguments(&unbind.arguments),
            },
            no_wait: false,
        },
        other => return Err(hard(ReplyCode::CommandInvalid, format!("queue method {other:?} is not sent by clients"))),
    };
    commands.push(command);
    Ok(())
}

fn exchange_method(
    origin: Origin,
    method: exchange::AMQPMethod,
    commands: &mut Vec<Command>,
) -> Result<(), FrameError> {
    let command = match method {
        exchange::AMQPMethod::Declare(declare) => Command::ExchangeDeclare {
            origin,
            declare: ExchangeDeclare {
                name: declare.exchange.as_str().to_string(),
                kind: declare.kind.as_str().to_string(),
                passive: declare.passive,
                durable: declare.durable,
                auto_delete: declare.auto_delete,
                internal: declare.internal,
                arguments: arguments(&declare.arguments),
            },
            no_wait: declare.nowait,
        },
        exchange::AMQPMethod::Delete(delete) => Command::ExchangeDelete {
            origin,
            exchange: delete.exchange.as_str().to_string(),
            if_unused: delete.if_unused,
            no_wait: delete.nowait,
        },
        exchange::AMQPMethod::Bind(bind) => Command::Bind {
            origin,
            bind: BindRequest {
                source: bind.source.as_str().to_string(),
                destination: BindTarget::Exchange(bind.destination.as_str().to_string()),
                routing_key: bind.routing_key.as_str().to_string(),
                arguments: arguments(&bind.arguments),
            },
            no_wait: bind.nowait,
        },
        exchange::AMQPMethod::Unbind(unbind) => Command::Unbind {
            origin,
            bind: BindRequest {
                source: unbind.source.as_str().to_string(),
                destination: BindTarget::Exchange(unbind.destination.as_str().to_string()),
                routing_key: unbind.routing_key.as_str().to_string(),
                arguments: arguments(&unbind.arguments),
            },
            no_wait: unbind.nowait,
        },
        other => {
            return Err(hard(ReplyCode::CommandInvalid, format!("exchange method {other:?} is not sent by clients")))
        }
    };
    commands.push(command);
    Ok(())
}

/// Message bytes the broker keeps must own their memory: a zero-copy slice of the socket's
/// read buffer would keep the whole buffer alive for as long as the message lives (a 16-byte
/// message pinning 256 KiB). A body already assembled from several frames is its own
/// allocation and is kept as is. Only for the body, sliced while the read buffer still holds
/// its handle: the property bytes, decoded a frame earlier, may be the last handle on a buffer
/// the reader has since replaced (then `is_unique` holds and nothing would be copied), so they
/// are always copied (they are small).
fn owned(bytes: bytes::Bytes) -> bytes::Bytes {
    if bytes.is_unique() {
        bytes
    } else {
        bytes::Bytes::copy_from_slice(&bytes)
    }
}

fn engine_error(error: &EngineError, class_id: u16, method_id: u16) -> FrameError {
    // `reply_text` puts the code name in front, as RabbitMQ writes it ("NOT_FOUND - …").
    FrameError::new(reply_code(error.kind), error.text.clone()).for_method(class_id, method_id)
}

fn event_channel(event: &Event) -> ChannelId {
    match event {
        Event::QueueDeclareOk { channel, .. }
        | Event::ExchangeDeclareOk { channel }
        | Event::ExchangeDeleteOk { channel }
        | Event::BindOk { channel, .. }
        | Event::UnbindOk { channel, .. }
        | Event::QueueDeleteOk { channel, .. }
        | Event::QueuePurgeOk { channel, .. }
        | Event::ConsumeOk { channel, .. }
        | Event::CancelOk { channel, .. }
        | Event::ConsumerCancelled { channel, .. }
        | Event::QosOk { channel }
        | Event::RecoverOk { channel }
        | Event::TxSelectOk { channel }
        | Event::TxCommitOk { channel }
        | Event::TxRollbackOk { channel }
        | Event::AdminDone { channel }
        | Event::Browsed { channel, .. }
        | Event::Moved { channel, .. }
        | Event::Held { channel, .. }
        | Event::Deliver { channel, .. }
        | Event::GetOk { channel, .. }
        | Event::GetEmpty { channel }
        | Event::Returned { channel, .. }
        | Event::ConfirmAck { channel, .. }
        | Event::ConfirmNack { channel, .. }
        | Event::ChannelError { channel, .. }
        | Event::ChannelClosed { channel } => *channel,
        Event::ConnectionOpened | Event::Disconnected | Event::ConnectionError { .. } => 0,
    }
}

fn method_name(class: &AMQPClass) -> String {
    let debug = format!("{class:?}");
    debug.split('(').take(2).collect::<Vec<_>>().join(".").to_lowercase()
}

#[cfg(test)]
mod tests {
    use amq_protocol::types::ShortString;
    use weir_amqp_codec::decode_frame;
    use weir_engine::ErrorKind;

    use super::*;

    /// An open connection, past the handshake (its start, tune and open written away).
    fn open_connection() -> Connection {
        let (sender, _events) = flume::unbounded();
        let sink = EventSink { sender, shared: std::sync::Arc::default() };
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let mut connection = Connection::new(1, ConnectionLimits::default(), peer, sink);
        let (mut out, mut commands) = (BytesMut::new(), Vec::new());
        connection.start(&mut out);
        let handshake = [
            connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: ShortString::from("PLAIN"),
                response: LongString::from("\0guest\0guest"),
                locale: ShortString::from("en_US"),
            }),
            connection::AMQPMethod::TuneOk(connection::TuneOk { channel_max: 2047, frame_max: 131_072, heartbeat: 60 }),
            connection::AMQPMethod::Open(connection::Open { virtual_host: "/".into() }),
        ];
        for method in handshake {
            let mut wire = BytesMut::new();
            encode_method(&mut wire, 0, &AMQPClass::Connection(method));
            let frame = decode_frame(&mut wire, 131_072).unwrap().unwrap();
            if connection.on_frame(frame, &mut out, &mut commands) == Flow::Authenticate {
                let (credentials, loopback) = connection.take_login().unwrap();
                assert_eq!((credentials.username.as_str(), loopback), ("guest", true));
                assert_eq!(connection.login_result(Some("guest".into()), &mut out), Flow::Continue);
            }
        }
        connection.on_events(vec![Event::ConnectionOpened], &mut out, &mut commands);
        assert!(connection.is_open());
        connection
    }

    /// The `connection.close` frames in `out`.
    fn closes(out: &mut BytesMut) -> usize {
        let mut count = 0;
        while let Some(frame) = decode_frame(out, 131_072).unwrap() {
            if let Frame::Method { method: AMQPClass::Connection(connection::AMQPMethod::Close(close)), .. } = frame {
                assert_eq!(close.reply_code, ReplyCode::ConnectionForced.code());
                count += 1;
            }
        }
        count
    }

    #[test]
    fn a_second_forced_close_sends_no_second_close() {
        let mut connection = open_connection();
        let forced =
            || Event::ConnectionError { error: EngineError::new(ErrorKind::ConnectionForced, "closed by an operator") };
        let (mut out, mut commands) = (BytesMut::new(), Vec::new());
        connection.on_events(vec![forced()], &mut out, &mut commands);
        assert_eq!(closes(&mut out), 1);
        connection.on_events(vec![forced()], &mut out, &mut commands);
        assert_eq!(closes(&mut out), 0, "the connection is already closing");
    }
}
