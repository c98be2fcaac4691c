//! `weir serve`: recover the data directory, start the engine, listen for AMQP, and stop
//! cleanly on SIGTERM/SIGINT (connections are told 320 CONNECTION_FORCED, in-flight
//! deliveries are requeued by the engine, a final checkpoint makes the next start fast).
//!
//! The HTTP API (`weir-http`) runs beside AMQP on the same runtime and engine.
//!
//! The lines `amqp listening on ADDR:PORT` and `http listening on ADDR:PORT` (and `amqps`,
//! `https` with TLS) on stdout are a contract: scripts and tests read them to learn the ports
//! chosen for `:0`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use weir_amqp::AmqpConfig;
use weir_engine::{Engine, EngineConfig, FileStorage, LogConfig};

use weir_http::HttpConfig;

use crate::config::{ServeArgs, Settings, DEFAULT_AMQPS_LISTEN, DEFAULT_AMQP_LISTEN};

/// How long shutdown waits for HTTP requests in progress.
const HTTP_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

pub fn run(args: ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let settings = match args.resolve() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("weir: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weir: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> Result<(), String> {
    let started = Instant::now();
    let storage = FileStorage::open(&settings.data_dir).map_err(|e| e.to_string())?;
    let config = EngineConfig {
        log: LogConfig::with_segment_size(settings.segment_size_bytes),
        cache_budget_bytes: settings.cache_bytes,
        checkpoint_interval_bytes: settings.checkpoint_interval_bytes,
        ..EngineConfig::default()
    };
    let (engine, report) = Engine::start(storage, config).map_err(|e| format!("cannot start: {e}"))?;
    if report.is_clean() {
        tracing::info!("recovery: {report}");
    } else {
        tracing::error!("recovery: {report}");
    }
    tracing::info!(
        data_dir = %settings.data_dir.display(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "log recovered"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("weir-io")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(async {
        let acceptor = match &settings.tls {
            Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
            None => None,
        };
        let listeners: Vec<weir_amqp::Listener> =
            bind_both(["amqp", "amqps"], [&settings.amqp_listen, &settings.amqps_listen], &acceptor)
                .await?
                .into_iter()
                .map(|(tcp, tls)| weir_amqp::Listener { tcp, tls })
                .collect();
        let http_listeners: Vec<weir_http::Listener> =
            bind_both(["http", "https"], [&settings.http_listen, &settings.https_listen], &acceptor)
                .await?
                .into_iter()
                .map(|(tcp, tls)| weir_http::Listener { tcp, tls })
                .collect();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
        });
        tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "ready");
        let amqp = amqp_config(&settings);
        let http = tokio::spawn(weir_http::serve(http_listeners, engine.handle(), http_config(&amqp), stop_rx.clone()));
        weir_amqp::serve(listeners, engine.handle(), amqp, stop_rx).await;
        // Requests in progress get a moment to finish (a long-polling get may take longer).
        let abort = http.abort_handle();
        if tokio::time::timeout(HTTP_STOP_GRACE, http).await.is_err() {
            abort.abort();
            tracing::warn!("http requests still running at shutdown were cut off");
        }
        Ok::<(), String>(())
    });
    engine.shutdown();
    result
}

/// AMQP settings; the largest message must fit one log record with room for its
/// properties, names and queue list.
fn amqp_config(settings: &Settings) -> AmqpConfig {
    let mut config = AmqpConfig::default();
    let record_max = u64::from(LogConfig::with_segment_size(settings.segment_size_bytes).max_record_bytes);
    let headroom = (record_max / 4).min(1 << 20);
    config.limits.message_size_max = config.limits.message_size_max.min(record_max - headroom);
    config
}

/// HTTP settings: the same message size limit as AMQP (the accounts are the engine's).
fn http_config(amqp: &AmqpConfig) -> HttpConfig {
    let message_size_max = usize::try_from(amqp.limits.message_size_max).unwrap_or(usize::MAX);
    HttpConfig { message_size_max }
}

/// Bind a protocol's plain addresses and its TLS ones (which get the acceptor).
async fn bind_both(
    protocols: [&str; 2],
    addresses: [&[std::net::SocketAddr]; 2],
    acceptor: &Option<TlsAcceptor>,
) -> Result<Vec<(TcpListener, Option<TlsAcceptor>)>, String> {
    let mut listeners: Vec<_> = bind(protocols[0], addresses[0]).await?.into_iter().map(|tcp| (tcp, None)).collect();
    for tcp in bind(protocols[1], addresses[1]).await? {
        listeners.push((tcp, acceptor.clone()));
    }
    Ok(listeners)
}

/// Listen on `addresses`, printing `{protocol} listening on ADDR:PORT` for each (a contract:
/// scripts read it to learn ports picked for `:0`).
async fn bind(protocol: &str, addresses: &[std::net::SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let defaults: Vec<std::net::SocketAddr> =
        DEFAULT_AMQP_LISTEN.iter().chain(&DEFAULT_AMQPS_LISTEN).map(|a| a.parse().expect("valid")).collect();
    let mut listeners = Vec::new();
    for address in addresses {
        match TcpListener::bind(address).await {
            Ok(listener) => {
                let local = listener.local_addr().map_err(|e| e.to_string())?;
                println!("{protocol} listening on {local}");
                let _ = std::io::stdout().flush();
                listeners.push(listener);
            }
            // The default IPv6 loopback may be missing on hosts without IPv6: not fatal.
            Err(e) if address.is_ipv6() && defaults.contains(address) => {
                tracing::warn!(%address, "not listening on the IPv6 loopback: {e}");
            }
            Err(e) => return Err(format!("cannot listen on {address}: {e}")),
        }
    }
    Ok(listeners)
}

async fn wait_for_signal() {
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(signal) => signal,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
