//! The tokio adapter: accepts sockets and moves bytes between them, the [`Connection`]
//! state machine and the engine. No protocol decisions are made here.
//!
//! One task per connection, one `select!` loop: socket bytes in, engine events in, a
//! one-second tick for heartbeats and time-outs, and the server's shutdown signal. After each
//! wake-up the commands produced go to the engine (waiting if its inbox is full, which is
//! how a publisher that outruns the disk is slowed: we stop reading its socket) and the bytes
//! produced are written in one `write_all`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use weir_amqp_codec::{check_protocol_header, decode_frame, encode_heartbeat, ProtocolHeaderCheck, PROTOCOL_HEADER};
use weir_engine::security::Authenticator;
use weir_engine::{Command, ConnectionShared, EngineHandle, EventSink};

use crate::connection::{Connection, ConnectionLimits, Flow};

/// A client must finish the handshake (up to connection.open-ok) within this time.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// After sending connection.close, wait this long for close-ok before dropping the socket.
pub const CLOSE_OK_TIMEOUT: Duration = Duration::from_secs(5);
/// After connection.close-ok, how long we wait for the client to close the socket before we
/// do (RabbitMQ leaves it to the client too; closing first makes clients report EOF errors).
pub const LINGER_AFTER_CLOSE_OK: Duration = Duration::from_secs(30);
/// Socket read buffer: large, so a busy publisher is read in few system calls.
const READ_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Clone, Debug, Default)]
pub struct AmqpConfig {
    pub limits: ConnectionLimits,
}

/// A socket to accept AMQP connections on: plain, or TLS (AMQPS) with this acceptor.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Accept connections until `shutdown` turns true; then tell every connection to close and
/// wait (bounded) for them.
pub async fn serve(
    listeners: Vec<Listener>,
    engine: EngineHandle,
    config: AmqpConfig,
    shutdown: watch::Receiver<bool>,
) {
    let config = Arc::new(config);
    let authenticator = Arc::clone(engine.authenticator());
    let mut tasks = JoinSet::new();
    type Accepted = (TcpStream, SocketAddr, Option<TlsAcceptor>);
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::channel::<Accepted>(64);
    for Listener { tcp: listener, tls } in listeners {
        let accepted_tx = accepted_tx.clone();
        let mut shutdown = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            if accepted_tx.send((stream, peer, tls.clone())).await.is_err() { return; }
                        }
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            }
        });
    }
    drop(accepted_tx);
    let mut shutdown_rx = shutdown.clone();
    loop {
        tokio::select! {
            accepted = accepted_rx.recv() => {
                let Some((stream, peer, tls)) = accepted else { break };
                let engine = engine.clone();
                let config = Arc::clone(&config);
                let authenticator = Arc::clone(&authenticator);
                let shutdown = shutdown.clone();
                tasks.spawn(async move {
                    let context = Context { peer, engine, config, authenticator, shutdown };
                    if let Err(e) = accept(stream, tls, context).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            _ = shutdown_rx.changed() => break,
        }
    }
    let _ = tokio::time::timeout(CLOSE_OK_TIMEOUT + Duration::from_secs(1), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
}

/// Check the credentials the connection took from start-ok, on a blocking thread (argon2 is
/// slow on purpose), and give the connection the outcome.
async fn log_in(connection: &mut Connection, authenticator: &Arc<Authenticator>, out: &mut BytesMut) -> Flow {
    let Some((credentials, from_loopback)) = connection.take_login() else { return Flow::Close };
    let authenticator = Arc::clone(authenticator);
    let login = tokio::task::spawn_blocking(move || {
        authenticator.authenticate(&credentials.username, &credentials.password, from_loopback)
    })
    .await
    .ok()
    .flatten();
    connection.login_result(login.map(|login| login.user), out)
}

/// What a connection task needs besides its socket.
struct Context {
    peer: SocketAddr,
    engine: EngineHandle,
    config: Arc<AmqpConfig>,
    authenticator: Arc<Authenticator>,
    shutdown: watch::Receiver<bool>,
}

/// Finish accepting a socket (the TLS handshake, within the handshake time) and serve it.
async fn accept(stream: TcpStream, tls: Option<TlsAcceptor>, context: Context) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let Some(acceptor) = tls else {
        let (reader, writer) = stream.into_split();
        return run_connection(reader, writer, context).await;
    };
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::info!(peer = %context.peer, "TLS handshake failed: {e}");
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    let (reader, writer) = tokio::io::split(stream);
    run_connection(reader, writer, context).await
}

async fn run_connection<R, W>(mut reader: R, mut writer: W, context: Context) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Context { peer, engine, config, authenticator, mut shutdown } = context;
    let mut input = BytesMut::with_capacity(READ_BUFFER_BYTES);

    // Protocol header, within the handshake time.
    let started = Instant::now();
    loop {
        match check_protocol_header(&input) {
            ProtocolHeaderCheck::Ok => break,
            ProtocolHeaderCheck::Mismatch => {
                writer.write_all(&PROTOCOL_HEADER).await?;
                return Ok(());
            }
            ProtocolHeaderCheck::Incomplete => {
                let left = HANDSHAKE_TIMEOUT.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, reader.read_buf(&mut input)).await {
                    Ok(Ok(0)) | Err(_) => return Ok(()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                }
            }
        }
    }
    let _ = input.split_to(PROTOCOL_HEADER.len());

    let (events_tx, events_rx) = flume::unbounded();
    let shared = Arc::new(ConnectionShared::default());
    let id = engine.connection_id();
    let sink = EventSink { sender: events_tx, shared: Arc::clone(&shared) };
    let mut connection = Connection::new(id, config.limits.clone(), peer, sink);
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut commands = Vec::new();
    connection.start(&mut out);
    writer.write_all(&out).await?;
    out.clear();

    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_received = Instant::now();
    let mut last_sent = Instant::now();
    let mut closing_since: Option<Instant> = None;
    let mut linger = false;
    let result = loop {
        let mut flow = Flow::Continue;
        let mut deliveries_written = 0;
        tokio::select! {
            read = reader.read_buf(&mut input) => {
                match read {
                    Ok(0) => break Ok(()),
                    Ok(_) => last_received = Instant::now(),
                    Err(e) => break Err(e),
                }
                loop {
                    match decode_frame(&mut input, connection.frame_max()) {
                        Ok(Some(frame)) => {
                            flow = connection.on_frame(frame, &mut out, &mut commands);
                            if flow == Flow::Authenticate {
                                flow = log_in(&mut connection, &authenticator, &mut out).await;
                            }
                            if flow == Flow::Close { break; }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::debug!(%peer, "frame error: {error}");
                            flow = connection.on_decode_error(error, &mut out, &mut commands);
                            break;
                        }
                    }
                }
                if input.capacity() - input.len() < READ_BUFFER_BYTES / 4 {
                    input.reserve(READ_BUFFER_BYTES);
                }
            }
            batch = events_rx.recv_async() => {
                let Ok(batch) = batch else { break Ok(()) };
                let (delivered, event_flow) = connection.on_events(batch, &mut out, &mut commands);
                deliveries_written = delivered;
                flow = event_flow;
            }
            _ = tick.tick() => {
                let heartbeat = Duration::from_secs(u64::from(connection.heartbeat_seconds()));
                if !connection.is_open() && !connection.is_closing() && started.elapsed() > HANDSHAKE_TIMEOUT {
                    break Ok(());
                }
                if closing_since.is_some_and(|since| since.elapsed() > CLOSE_OK_TIMEOUT) {
                    flow = connection.close_timed_out(&mut out);
                }
                if !heartbeat.is_zero() {
                    if last_received.elapsed() > heartbeat * 2 {
                        tracing::info!(%peer, "missed heartbeats from client, closing");
                        connection.heartbeat_timeout();
                        break Ok(());
                    }
                    if last_sent.elapsed() >= heartbeat / 2 {
                        encode_heartbeat(&mut out);
                    }
                }
            }
            _ = shutdown.changed() => connection.force_close(&mut out),
        }
        for command in commands.drain(..) {
            if engine.send(command).await.is_err() {
                connection.force_close(&mut out);
                break;
            }
        }
        if !out.is_empty() {
            if let Err(e) = writer.write_all(&out).await {
                break Err(e);
            }
            out.clear();
            last_sent = Instant::now();
        }
        if deliveries_written > 0 && shared.deliveries_written(deliveries_written) {
            let _ = engine.send(Command::Resume { connection: id }).await;
        }
        if connection.is_closing() && closing_since.is_none() {
            closing_since = Some(Instant::now());
        }
        if flow == Flow::Linger {
            linger = true;
        }
        if flow != Flow::Continue || connection.is_closed() {
            break Ok(());
        }
    };
    if connection.registered() || connection.is_closed() {
        // Harmless when the engine already has it (a client close): unknown ids are ignored.
        let _ = engine.send(Command::Disconnect { connection: id }).await;
    }
    if linger && result.is_ok() {
        // close-ok is written: wait (bounded) for the client to close, discarding anything.
        let heartbeat = Duration::from_secs(u64::from(connection.heartbeat_seconds()));
        let limit = if heartbeat.is_zero() { LINGER_AFTER_CLOSE_OK } else { heartbeat.min(LINGER_AFTER_CLOSE_OK) };
        let _ = tokio::time::timeout(limit, async {
            let mut discard = vec![0u8; 4096];
            loop {
                tokio::select! {
                    read = reader.read(&mut discard) => if !matches!(read, Ok(n) if n > 0) { return },
                    _ = shutdown.changed() => return,
                }
            }
        })
        .await;
    }
    let _ = writer.shutdown().await;
    result
}
