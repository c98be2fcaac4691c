//! The web console at `/`: three files written for Weir (no build step, no libraries),
//! embedded in the binary. They are public, like any login page; everything they show comes
//! from the API with the user's own login, so they hold no secrets. A strict
//! Content-Security-Policy allows only these files and calls to this server.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::AppState;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                      form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// `/`, `/console.js`, `/console.css`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { file("text/html; charset=utf-8", INDEX) }))
        .route("/console.js", get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/console.css", get(|| async { file("text/css; charset=utf-8", STYLE) }))
}
