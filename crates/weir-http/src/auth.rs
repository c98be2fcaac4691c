//! HTTP basic authentication for `/api`: the same accounts as AMQP (the engine's directory,
//! see `weir_engine::security`), and the same rule that `guest` may log in from loopback only.
//! Successful logins are remembered, so a request costs argon2 only the first time.
//!
//! A 401 carries `WWW-Authenticate: Basic` so that curl and browsers know what to do, except
//! for requests marked `X-Requested-With` (the console's own calls), where the browser's
//! password dialog would get in the way of the console's login form.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::error::ApiError;
use crate::AppState;

/// The authenticated user, put into the request's extensions for the handlers.
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub administrator: bool,
}

impl User {
    /// Only administrators may manage vhosts, users and permissions or see everything.
    pub fn require_administrator(&self) -> Result<(), ApiError> {
        if self.administrator {
            return Ok(());
        }
        Err(ApiError::forbidden(format!("user '{}' is not an administrator", self.name)))
    }
}

pub async fn require_login(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let from_loopback =
        request.extensions().get::<ConnectInfo<SocketAddr>>().is_some_and(|ConnectInfo(peer)| peer.ip().is_loopback());
    let credentials =
        request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(parse_basic);
    let login = match credentials {
        Some((name, password)) => {
            let authenticator = std::sync::Arc::clone(&state.authenticator);
            // argon2 is slow on purpose: keep it off the request tasks' threads.
            tokio::task::spawn_blocking(move || authenticator.authenticate(&name, &password, from_loopback))
                .await
                .ok()
                .flatten()
        }
        None => None,
    };
    match login {
        Some(login) => {
            request.extensions_mut().insert(User { name: login.user, administrator: login.administrator });
            next.run(request).await
        }
        None => {
            let quiet = request.headers().contains_key("x-requested-with");
            let mut response = ApiError::unauthorized().into_response();
            if !quiet {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"weir\""));
            }
            response
        }
    }
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_parsed() {
        assert_eq!(parse_basic("Basic Z3Vlc3Q6Z3Vlc3Q="), Some(("guest".into(), "guest".into())));
        assert_eq!(parse_basic("basic Z3Vlc3Q6YTpi"), Some(("guest".into(), "a:b".into())));
        assert_eq!(parse_basic("Bearer abc"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
        assert_eq!(parse_basic("Basic Z3Vlc3Q="), None, "no colon");
    }
}
