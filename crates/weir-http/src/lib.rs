//! weir-http: the HTTP API under `/api`, its OpenAPI document, and `/metrics`.
//!
//! Every route is one row of the table in `routes.rs`; the router and the OpenAPI document
//! (`/api/openapi.json`) are both built from that table, so they cannot drift apart. Handlers
//! never touch broker state: reads go through [`weir_engine::Command::Inspect`], changes
//! through an internal engine connection (`session.rs`) that sends the same commands an AMQP
//! client would, so both protocols share every rule, check and durability guarantee.
//!
//! Layout: `console` (the web console's files at `/`), `routes` (the table and router), `topology` (vhosts, queues, exchanges, bindings,
//! connections, overview), `messages` (publish and get), `metrics` (Prometheus text),
//! `users` (vhost management, users, permissions), `openapi` (the document), `auth` (basic
//! authentication), `session` (engine conversation),
//! `json` (AMQP values as JSON), `extract` (request parsing with JSON errors), `error`.

mod auth;
mod console;
mod error;
mod extract;
mod json;
mod messages;
mod metrics;
mod openapi;
mod routes;
mod session;
mod tls;
mod topology;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use weir_engine::security::Authenticator;
use weir_engine::EngineHandle;

pub use error::ApiError;
pub use topology::{Counter, COUNTERS};

/// HTTP settings.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// The largest message body a publish may carry (the same limit as AMQP's). Request
    /// bodies may be a third larger (base64) plus 1 MiB of JSON around it.
    pub message_size_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self { message_size_max: 128 << 20 }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub engine: EngineHandle,
    /// Logs users in against the engine's directory (the same accounts as AMQP's).
    pub authenticator: Arc<Authenticator>,
    pub started: Instant,
    pub message_size_max: usize,
}

/// The whole HTTP application (also used by tests with a listener of their own).
pub fn app(engine: EngineHandle, config: &HttpConfig) -> axum::Router {
    let state = AppState {
        authenticator: Arc::clone(engine.authenticator()),
        engine,
        started: Instant::now(),
        message_size_max: config.message_size_max,
    };
    let body_limit = config.message_size_max.saturating_mul(4) / 3 + (1 << 20);
    routes::router(state, body_limit)
}

/// A socket to serve the API on: plain HTTP, or HTTPS with this acceptor.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Serve the API on `listeners` until `stop` turns true; requests in progress then finish.
pub async fn serve(
    listeners: Vec<Listener>,
    engine: EngineHandle,
    config: HttpConfig,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    use axum::serve::ListenerExt;

    let app = app(engine, &config);
    let mut servers = Vec::new();
    for Listener { tcp, tls } in listeners {
        let service = app.clone().into_make_service_with_connect_info::<SocketAddr>();
        let mut stop = stop.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        servers.push(tokio::spawn(async move {
            let served = match tls {
                None => axum::serve(tcp, service).with_graceful_shutdown(shutdown).await,
                Some(acceptor) => match tls::TlsListener::new(tcp, acceptor) {
                    // `tap_io` gives the listener axum's `ConnectInfo<SocketAddr>`.
                    Ok(listener) => {
                        axum::serve(listener.tap_io(|_| ()), service).with_graceful_shutdown(shutdown).await
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = served {
                tracing::error!("http server failed: {e}");
            }
        }));
    }
    for server in servers {
        let _ = server.await;
    }
}
