//! The route table: one row per endpoint, from which both the router and the OpenAPI
//! document are built (so the document lists exactly what the server serves).

use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use crate::error::ApiError;
use crate::{auth, console, messages, metrics, openapi, topology, users, AppState};

/// What a route answers on success: its status and the schema of its body (None: no body).
pub struct Success {
    pub status: u16,
    pub schema: Option<&'static str>,
}

pub struct Route {
    pub method: Method,
    /// axum's path syntax; `{name}` segments are path parameters.
    pub path: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    /// Needs a login (everything under `/api` but the document itself).
    pub login: bool,
    /// Query parameters: (name, JSON schema type or a whole JSON schema).
    pub query: &'static [(&'static str, &'static str)],
    /// The schema of the JSON request body, if it takes one.
    pub body: Option<&'static str>,
    pub success: Success,
    pub handler: MethodRouter<AppState>,
}

fn filter(method: &Method) -> MethodFilter {
    match *method {
        Method::GET => MethodFilter::GET,
        Method::PUT => MethodFilter::PUT,
        Method::POST => MethodFilter::POST,
        Method::DELETE => MethodFilter::DELETE,
        _ => unreachable!("the table uses GET, PUT, POST and DELETE only"),
    }
}

/// A table row. Every route under `/api` needs a login except the OpenAPI document.
#[allow(clippy::too_many_arguments)]
fn route<H, T>(
    method: Method,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
    query: &'static [(&'static str, &'static str)],
    body: Option<&'static str>,
    success: (u16, Option<&'static str>),
    handler: H,
) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let login = path.starts_with("/api/") && path != "/api/openapi.json";
    let handler = on(filter(&method), handler);
    Route {
        method,
        path,
        summary,
        tag,
        login,
        query,
        body,
        success: Success { status: success.0, schema: success.1 },
        handler,
    }
}

pub fn table() -> Vec<Route> {
    use Method as M;
    const NONE: &[(&str, &str)] = &[];
    vec![
        route(
            M::GET,
            "/api/overview",
            "broker",
            "Totals for the whole broker",
            NONE,
            None,
            (200, Some("Overview")),
            topology::overview,
        ),
        route(
            M::GET,
            "/api/vhosts",
            "vhosts",
            "List vhosts",
            NONE,
            None,
            (200, Some("VhostList")),
            topology::list_vhosts,
        ),
        route(
            M::GET,
            "/api/vhosts/{vhost}",
            "vhosts",
            "Show one vhost",
            NONE,
            None,
            (200, Some("Vhost")),
            topology::show_vhost,
        ),
        route(
            M::PUT,
            "/api/vhosts/{vhost}",
            "vhosts",
            "Create a vhost (administrators)",
            NONE,
            Some("VhostSettings"),
            (201, None),
            users::put_vhost,
        ),
        route(
            M::DELETE,
            "/api/vhosts/{vhost}",
            "vhosts",
            "Delete a vhost with its queues, exchanges and permissions; closes its connections (administrators)",
            NONE,
            None,
            (204, None),
            users::delete_vhost,
        ),
        route(M::GET, "/api/whoami", "users", "The logged-in user", NONE, None, (200, Some("Whoami")), users::whoami),
        route(
            M::GET,
            "/api/users",
            "users",
            "List users (administrators)",
            NONE,
            None,
            (200, Some("UserList")),
            users::list_users,
        ),
        route(
            M::GET,
            "/api/users/{user}",
            "users",
            "Show a user (administrators, or the user itself)",
            NONE,
            None,
            (200, Some("User")),
            users::show_user,
        ),
        route(
            M::PUT,
            "/api/users/{user}",
            "users",
            "Create or change a user (administrators)",
            NONE,
            Some("UserSettings"),
            (201, None),
            users::put_user,
        ),
        route(
            M::DELETE,
            "/api/users/{user}",
            "users",
            "Delete a user and its permissions; closes its connections (administrators)",
            NONE,
            None,
            (204, None),
            users::delete_user,
        ),
        route(
            M::GET,
            "/api/permissions",
            "users",
            "List permissions (administrators: all; others: their own)",
            NONE,
            None,
            (200, Some("PermissionList")),
            users::list_permissions,
        ),
        route(
            M::GET,
            "/api/permissions/{vhost}/{user}",
            "users",
            "Show a user's permission on a vhost",
            NONE,
            None,
            (200, Some("Permission")),
            users::show_permission,
        ),
        route(
            M::PUT,
            "/api/permissions/{vhost}/{user}",
            "users",
            "Set a user's configure, write and read patterns on a vhost (administrators)",
            NONE,
            Some("PermissionSettings"),
            (201, None),
            users::put_permission,
        ),
        route(
            M::DELETE,
            "/api/permissions/{vhost}/{user}",
            "users",
            "Clear a user's permission on a vhost (administrators)",
            NONE,
            None,
            (204, None),
            users::delete_permission,
        ),
        route(
            M::GET,
            "/api/queues",
            "queues",
            "List every queue",
            NONE,
            None,
            (200, Some("QueueList")),
            topology::list_queues,
        ),
        route(
            M::GET,
            "/api/queues/{vhost}",
            "queues",
            "List a vhost's queues",
            NONE,
            None,
            (200, Some("QueueList")),
            topology::list_vhost_queues,
        ),
        route(
            M::GET,
            "/api/queues/{vhost}/{name}",
            "queues",
            "Show a queue: settings, depth by state, counters",
            NONE,
            None,
            (200, Some("Queue")),
            topology::show_queue,
        ),
        route(
            M::PUT,
            "/api/queues/{vhost}/{name}",
            "queues",
            "Create a queue (idempotent when the settings are equal)",
            NONE,
            Some("QueueSettings"),
            (200, Some("Queue")),
            topology::put_queue,
        ),
        route(
            M::DELETE,
            "/api/queues/{vhost}/{name}",
            "queues",
            "Delete a queue and its messages",
            &[("if_empty", "boolean"), ("if_unused", "boolean")],
            None,
            (200, Some("Removed")),
            topology::delete_queue,
        ),
        route(
            M::PUT,
            "/api/queues/{vhost}/{name}/settings",
            "queues",
            "Change a queue's settings (TTL, limits, overflow, dead-lettering, retries, x-expires)",
            NONE,
            Some("QueueSettingsChange"),
            (200, Some("Queue")),
            topology::put_queue_settings,
        ),
        route(
            M::DELETE,
            "/api/queues/{vhost}/{name}/contents",
            "queues",
            "Purge a queue's ready and delayed messages",
            NONE,
            None,
            (200, Some("Removed")),
            topology::purge_queue,
        ),
        route(
            M::POST,
            "/api/queues/{vhost}/{name}/publish",
            "messages",
            "Publish a message straight to a queue",
            NONE,
            Some("QueuePublish"),
            (200, Some("PublishResult")),
            messages::publish_to_queue,
        ),
        route(
            M::POST,
            "/api/queues/{vhost}/{name}/get",
            "messages",
            "Take messages from a queue (remove, requeue or browse), by id, correlation id or selector, optionally waiting",
            NONE,
            Some("GetRequest"),
            (200, Some("MessageList")),
            messages::get,
        ),
        route(
            M::POST,
            "/api/leases/{vhost}/{token}",
            "messages",
            "Ack, requeue, reject or renew a message taken with ackmode lease",
            NONE,
            Some("LeaseSettle"),
            (200, Some("LeaseResult")),
            messages::settle_lease,
        ),
        route(
            M::DELETE,
            "/api/queues/{vhost}/{name}/messages",
            "messages",
            "Delete chosen ready or delayed messages (by id, correlation id or selector)",
            &[
                ("count", r#"{"type": "integer", "minimum": 1, "maximum": 1000}"#),
                ("message_id", "string"),
                ("correlation_id", "string"),
                ("selector", r#"{"type": "string", "minLength": 1, "maxLength": 8192}"#),
            ],
            None,
            (200, Some("Removed")),
            messages::remove_messages,
        ),
        route(
            M::POST,
            "/api/queues/{vhost}/{name}/move",
            "messages",
            "Move ready messages to another queue, or redrive dead letters to the queue they came from",
            NONE,
            Some("MoveRequest"),
            (200, Some("MoveResult")),
            messages::move_messages,
        ),
        route(
            M::GET,
            "/api/queues/{vhost}/{name}/messages",
            "messages",
            "Browse a queue's messages by state and filter, a page at a time, without taking them",
            &[
                ("state", r#"{"type": "string", "enum": ["ready", "delayed", "unacked", "all"]}"#),
                ("limit", r#"{"type": "integer", "minimum": 1, "maximum": 1000}"#),
                ("after", r#"{"type": "string", "pattern": "^(r[.][0-9]{1,2}[.][0-9]{1,19}|[du][.][0-9]{1,19})$"}"#),
                ("encoding", r#"{"type": "string", "enum": ["auto", "base64"]}"#),
                ("message_id", "string"),
                ("correlation_id", "string"),
                ("selector", r#"{"type": "string", "minLength": 1, "maxLength": 8192}"#),
            ],
            None,
            (200, Some("BrowsePage")),
            messages::browse,
        ),
        route(
            M::GET,
            "/api/exchanges",
            "exchanges",
            "List every exchange",
            NONE,
            None,
            (200, Some("ExchangeList")),
            topology::list_exchanges,
        ),
        route(
            M::GET,
            "/api/exchanges/{vhost}",
            "exchanges",
            "List a vhost's exchanges",
            NONE,
            None,
            (200, Some("ExchangeList")),
            topology::list_vhost_exchanges,
        ),
        route(
            M::GET,
            "/api/exchanges/{vhost}/{name}",
            "exchanges",
            "Show an exchange (amq.default is the default exchange)",
            NONE,
            None,
            (200, Some("Exchange")),
            topology::show_exchange,
        ),
        route(
            M::PUT,
            "/api/exchanges/{vhost}/{name}",
            "exchanges",
            "Create an exchange",
            NONE,
            Some("ExchangeSettings"),
            (200, Some("Exchange")),
            topology::put_exchange,
        ),
        route(
            M::DELETE,
            "/api/exchanges/{vhost}/{name}",
            "exchanges",
            "Delete an exchange",
            &[("if_unused", "boolean")],
            None,
            (204, None),
            topology::delete_exchange,
        ),
        route(
            M::POST,
            "/api/exchanges/{vhost}/{name}/publish",
            "messages",
            "Publish a message to an exchange",
            NONE,
            Some("Publish"),
            (200, Some("PublishResult")),
            messages::publish_to_exchange,
        ),
        route(
            M::GET,
            "/api/bindings",
            "bindings",
            "List every binding",
            NONE,
            None,
            (200, Some("BindingList")),
            topology::list_bindings,
        ),
        route(
            M::GET,
            "/api/bindings/{vhost}",
            "bindings",
            "List a vhost's bindings",
            NONE,
            None,
            (200, Some("BindingList")),
            topology::list_vhost_bindings,
        ),
        route(
            M::POST,
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            "bindings",
            "Bind a queue (kind q) or exchange (kind e) to an exchange",
            NONE,
            Some("BindingSettings"),
            (201, None),
            topology::create_binding,
        ),
        route(
            M::DELETE,
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            "bindings",
            "Remove the bindings with this routing key",
            &[("routing_key", "string")],
            None,
            (204, None),
            topology::delete_binding,
        ),
        route(
            M::GET,
            "/api/connections",
            "connections",
            "List client connections",
            NONE,
            None,
            (200, Some("ConnectionList")),
            topology::list_connections,
        ),
        route(
            M::DELETE,
            "/api/connections/{id}",
            "connections",
            "Close a client connection (AMQP 320 CONNECTION_FORCED)",
            NONE,
            None,
            (204, None),
            topology::close_connection,
        ),
        route(M::GET, "/api/openapi.json", "broker", "This document", NONE, None, (200, None), openapi::document),
        route(
            M::GET,
            "/metrics",
            "broker",
            "Prometheus metrics (text format 0.0.4)",
            NONE,
            None,
            (200, None),
            metrics::metrics,
        ),
    ]
}

pub fn router(state: AppState, body_limit_bytes: usize) -> Router {
    let mut with_login = Router::new();
    let mut public = Router::new();
    for row in table() {
        if row.login {
            with_login = with_login.route(row.path, row.handler);
        } else {
            public = public.route(row.path, row.handler);
        }
    }
    let with_login = with_login.route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_login));
    // The console's files are pages, not API operations: outside the table and the document.
    public
        .merge(console::routes())
        .merge(with_login)
        .fallback(|| async { ApiError::not_found("no_route", "no such endpoint (see /api/openapi.json)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here")
        })
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_and_method_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for row in table() {
            assert!(seen.insert((row.method.clone(), row.path)), "{} {} twice", row.method, row.path);
        }
    }
}
