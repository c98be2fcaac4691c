//! Handlers for the broker's shape: overview, vhosts, queues, exchanges, bindings and
//! connections. JSON field names follow RabbitMQ's management API where Weir has the same
//! thing, so scripts carry over (docs/HTTP.md lists every field).

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use weir_engine::{
    BindRequest, BindTarget, BindingView, Command, ConnectionView, Event, ExchangeDeclare, ExchangeView, Inspect,
    InspectReply, QueueConfig, QueueCounters, QueueDeclare, QueueView, QUEUE_SETTINGS,
};

use weir_engine::records::VhostRecord;
use weir_engine::security::Directory;

use crate::auth::User;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::json::{args_from_json, args_to_json, check_short};
use crate::session::{inspect, Session, ANSWER_TIMEOUT};
use crate::AppState;

/// Method tokens for errors (AMQP class and method ids; only copied back in errors).
const QUEUE_DECLARE: u32 = (50 << 16) | 10;
const QUEUE_DELETE: u32 = (50 << 16) | 40;
const QUEUE_PURGE: u32 = (50 << 16) | 30;
const EXCHANGE_DECLARE: u32 = (40 << 16) | 10;
const EXCHANGE_DELETE: u32 = (40 << 16) | 20;
const QUEUE_BIND: u32 = (50 << 16) | 20;
const QUEUE_UNBIND: u32 = (50 << 16) | 50;

/// The URL name of the default exchange (whose real name is empty), as in RabbitMQ.
pub const DEFAULT_EXCHANGE_URL_NAME: &str = "amq.default";

pub fn exchange_from_url(name: &str) -> &str {
    if name == DEFAULT_EXCHANGE_URL_NAME {
        ""
    } else {
        name
    }
}

/// A queue counter: its name (JSON field, `weir_queue_{name}_total` metric), help, value.
pub type Counter = (&'static str, &'static str, fn(&QueueCounters) -> u64);

/// Every queue counter, in the order listings show them: the one list behind the JSON, its
/// schema, the metrics and the CLI.
pub const COUNTERS: [Counter; 7] = [
    ("published", "Messages that entered the queue.", |c| c.published),
    ("delivered", "Deliveries and gets, redeliveries included.", |c| c.delivered),
    ("redelivered", "Deliveries of messages delivered before.", |c| c.redelivered),
    ("acked", "Messages acknowledged.", |c| c.acked),
    ("expired", "Messages whose time to live ran out.", |c| c.expired),
    ("dead_lettered", "Messages sent on to the dead-letter exchange.", |c| c.dead_lettered),
    ("dropped", "Messages dropped (no dead-letter exchange): expired, rejected or overflowed.", |c| c.dropped),
];

fn counters_json(c: &QueueCounters) -> Value {
    Value::Object(COUNTERS.iter().map(|(name, _, value)| (name.to_string(), json!(value(c)))).collect())
}

pub fn queue_json(q: &QueueView) -> Value {
    json!({
        "vhost": q.vhost,
        "name": q.name,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive,
        "arguments": args_to_json(&q.arguments),
        "settings": args_to_json(&q.settings),
        "messages": q.ready + q.unacked + q.delayed,
        "messages_ready": q.ready,
        "messages_unacknowledged": q.unacked,
        "messages_delayed": q.delayed,
        "message_bytes": q.ready_bytes + q.unacked_bytes + q.delayed_bytes,
        "message_bytes_ready": q.ready_bytes,
        "message_bytes_unacknowledged": q.unacked_bytes,
        "message_bytes_delayed": q.delayed_bytes,
        "consumers": q.consumers,
        "counters": counters_json(&q.counters),
    })
}

fn exchange_json(e: &ExchangeView) -> Value {
    json!({
        "vhost": e.vhost,
        "name": e.name,
        "type": e.kind,
        "durable": e.durable,
        "auto_delete": e.auto_delete,
        "internal": e.internal,
        "arguments": args_to_json(&e.arguments),
    })
}

fn binding_json(b: &BindingView) -> Value {
    json!({
        "vhost": b.vhost,
        "source": b.source,
        "destination": b.destination,
        "destination_type": if b.destination_is_queue { "queue" } else { "exchange" },
        "routing_key": b.routing_key,
        "arguments": args_to_json(&b.arguments),
    })
}

fn connection_json(c: &ConnectionView) -> Value {
    json!({
        "id": c.id,
        "vhost": c.vhost,
        "user": c.info.user,
        "peer": c.info.peer,
        "client": c.info.client,
        "channels": c.channels,
        "consumers": c.consumers,
        "messages_unacknowledged": c.unacked,
    })
}

// ---------------------------------------------------------------------------------------
// Reads

pub async fn overview(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let InspectReply::Overview(o) = inspect(&state.engine, Inspect::Overview).await? else {
        return Err(ApiError::internal("wrong inspect reply".into()));
    };
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": state.started.elapsed().as_millis() as u64,
        "vhosts": o.vhosts,
        "queues": o.queues,
        "exchanges": o.exchanges,
        "connections": o.connections,
        "channels": o.channels,
        "consumers": o.consumers,
        "messages": o.ready + o.unacked + o.delayed,
        "messages_ready": o.ready,
        "messages_unacknowledged": o.unacked,
        "messages_delayed": o.delayed,
        "counters": counters_json(&o.counters),
        "log": {
            "segments": o.log_segments,
            "bytes": o.log_bytes,
            "durable_lsn": o.durable_lsn,
            "read_only": o.read_only,
        },
    })))
}

pub async fn vhosts(state: &AppState) -> Result<Vec<VhostRecord>, ApiError> {
    match inspect(&state.engine, Inspect::Vhosts).await? {
        InspectReply::Vhosts(vhosts) => Ok(vhosts),
        _ => Err(ApiError::internal("wrong inspect reply".into())),
    }
}

fn vhost_json(vhost: &VhostRecord) -> Value {
    json!({ "name": vhost.name, "limits": args_to_json(&vhost.limits) })
}

/// May `user` see `vhost`? Administrators see every vhost, other users those they hold a
/// permission on.
fn may_see(directory: &Directory, user: &User, vhost: &str) -> bool {
    user.administrator || directory.permission(&user.name, vhost).is_some()
}

/// The vhost: 404 unless it exists, 403 unless `user` may see it.
pub async fn require_vhost(state: &AppState, user: &User, vhost: &str) -> Result<VhostRecord, ApiError> {
    let found = vhosts(state).await?.into_iter().find(|v| v.name == vhost);
    let found = found.ok_or_else(|| ApiError::not_found("vhost_not_found", format!("no vhost '{vhost}'")))?;
    if !may_see(&state.engine.directory().load(), user, vhost) {
        return Err(ApiError::forbidden(format!("access to vhost '{vhost}' refused for user '{}'", user.name)));
    }
    Ok(found)
}

pub async fn list_vhosts(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    let directory = state.engine.directory().load();
    let visible = vhosts(&state).await?.into_iter().filter(|v| may_see(&directory, &user, &v.name));
    Ok(Json(Value::Array(visible.map(|v| vhost_json(&v)).collect())))
}

pub async fn show_vhost(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(vhost): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(vhost_json(&require_vhost(&state, &user, &vhost).await?)))
}

pub async fn queue_views(state: &AppState, vhost: Option<String>) -> Result<Vec<QueueView>, ApiError> {
    match inspect(&state.engine, Inspect::Queues { vhost }).await? {
        InspectReply::Queues(queues) => Ok(queues),
        _ => Err(ApiError::internal("wrong inspect reply".into())),
    }
}

/// A listing of every vhost's or one vhost's items (404 for an unknown vhost), of the
/// vhosts `user` may see.
async fn listing(
    state: &AppState,
    user: &User,
    vhost: Option<String>,
    query: fn(Option<String>) -> Inspect,
) -> Result<Json<Value>, ApiError> {
    if let Some(vhost) = &vhost {
        require_vhost(state, user, vhost).await?;
    }
    let directory = state.engine.directory().load();
    let visible = |vhost: &str| may_see(&directory, user, vhost);
    let items = match inspect(&state.engine, query(vhost)).await? {
        InspectReply::Queues(list) => list.iter().filter(|q| visible(&q.vhost)).map(queue_json).collect(),
        InspectReply::Exchanges(list) => list.iter().filter(|e| visible(&e.vhost)).map(exchange_json).collect(),
        InspectReply::Bindings(list) => list.iter().filter(|b| visible(&b.vhost)).map(binding_json).collect(),
        _ => return Err(ApiError::internal("wrong inspect reply".into())),
    };
    Ok(Json(Value::Array(items)))
}

pub async fn list_queues(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    listing(&state, &user, None, |vhost| Inspect::Queues { vhost }).await
}

pub async fn list_vhost_queues(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(vhost): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    listing(&state, &user, Some(vhost), |vhost| Inspect::Queues { vhost }).await
}

pub async fn list_exchanges(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    listing(&state, &user, None, |vhost| Inspect::Exchanges { vhost }).await
}

pub async fn list_vhost_exchanges(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(vhost): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    listing(&state, &user, Some(vhost), |vhost| Inspect::Exchanges { vhost }).await
}

pub async fn list_bindings(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    listing(&state, &user, None, |vhost| Inspect::Bindings { vhost }).await
}

pub async fn list_vhost_bindings(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(vhost): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    listing(&state, &user, Some(vhost), |vhost| Inspect::Bindings { vhost }).await
}

pub async fn find_queue(state: &AppState, user: &User, vhost: &str, name: &str) -> Result<QueueView, ApiError> {
    require_vhost(state, user, vhost).await?;
    queue_views(state, Some(vhost.to_string()))
        .await?
        .into_iter()
        .find(|q| q.name == name)
        .ok_or_else(|| ApiError::not_found("not_found", format!("no queue '{name}' in vhost '{vhost}'")))
}

pub async fn show_queue(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(queue_json(&find_queue(&state, &user, &vhost, &name).await?)))
}

async fn exchange_views(state: &AppState, vhost: Option<String>) -> Result<Vec<ExchangeView>, ApiError> {
    match inspect(&state.engine, Inspect::Exchanges { vhost }).await? {
        InspectReply::Exchanges(list) => Ok(list),
        _ => Err(ApiError::internal("wrong inspect reply".into())),
    }
}

pub async fn show_exchange(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_vhost(&state, &user, &vhost).await?;
    let wanted = exchange_from_url(&name);
    exchange_views(&state, Some(vhost.clone()))
        .await?
        .iter()
        .find(|e| e.name == wanted)
        .map(|e| Json(exchange_json(e)))
        .ok_or_else(|| ApiError::not_found("not_found", format!("no exchange '{name}' in vhost '{vhost}'")))
}

async fn binding_views(state: &AppState, vhost: Option<String>) -> Result<Vec<BindingView>, ApiError> {
    match inspect(&state.engine, Inspect::Bindings { vhost }).await? {
        InspectReply::Bindings(list) => Ok(list),
        _ => Err(ApiError::internal("wrong inspect reply".into())),
    }
}

async fn connection_views(state: &AppState) -> Result<Vec<ConnectionView>, ApiError> {
    match inspect(&state.engine, Inspect::Connections).await? {
        InspectReply::Connections(list) => Ok(list),
        _ => Err(ApiError::internal("wrong inspect reply".into())),
    }
}

/// Administrators see every client connection, other users their own.
pub async fn list_connections(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    let list = connection_views(&state).await?;
    let mine = list.iter().filter(|c| user.administrator || c.info.user == user.name);
    Ok(Json(Value::Array(mine.map(connection_json).collect())))
}

pub async fn close_connection(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(id): PathParams<u64>,
) -> Result<Response, ApiError> {
    if !user.administrator && !connection_views(&state).await?.iter().any(|c| c.id == id && c.info.user == user.name) {
        return Err(ApiError::not_found("not_found", format!("no connection {id}")));
    }
    let (reply, answer) = flume::bounded(1);
    let reason = format!("closed via the HTTP API by user '{}'", user.name);
    state.engine.send(Command::CloseConnection { connection: id, reason, reply }).await?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer.recv_async()).await {
        Ok(Ok(true)) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(Ok(false)) => Err(ApiError::not_found("not_found", format!("no connection {id}"))),
        Ok(Err(_)) => Err(ApiError::unavailable()),
        Err(_) => Err(ApiError::internal("the engine did not answer in time".into())),
    }
}

// ---------------------------------------------------------------------------------------
// Changes

fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request(format!("{what} name must not be empty")));
    }
    check_short(name, &format!("{what} name"))
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    #[serde(default = "default_true")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    arguments: Map<String, Value>,
}

/// Declare a queue; an existing queue with the same settings is fine (as `queue.declare`),
/// different settings are 409 `precondition_failed`.
pub async fn put_queue(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
    JsonBody(settings): JsonBody<QueueSettings>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name, "queue")?;
    let arguments = args_from_json(&settings.arguments)?;
    // Invalid arguments are the request's fault (400); the engine's own refusal of a declare
    // means a conflict with the existing queue (409).
    QueueConfig::parse(&arguments, &name, &vhost).map_err(|e| ApiError::invalid_argument(e.text))?;
    let declare = QueueDeclare {
        name: name.clone(),
        passive: false,
        durable: settings.durable,
        exclusive: false,
        auto_delete: settings.auto_delete,
        arguments,
    };
    let command = |origin| Command::QueueDeclare { origin, declare, no_wait: false };
    Session::call_once(&state.engine, &vhost, &user.name, QUEUE_DECLARE, command).await?;
    Ok(Json(queue_json(&find_queue(&state, &user, &vhost, &name).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettingsBody {
    settings: Map<String, Value>,
}

/// `PUT /api/queues/{vhost}/{name}/settings`: replace the operator's settings (arguments that
/// override the declared ones; `weir_engine::QUEUE_SETTINGS` lists which). Answers the queue.
pub async fn put_queue_settings(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<QueueSettingsBody>,
) -> Result<Json<Value>, ApiError> {
    let settings = args_from_json(&body.settings)?;
    if let Some((key, _)) = settings.iter().find(|(key, _)| !QUEUE_SETTINGS.contains(&key.as_str())) {
        return Err(ApiError::invalid_argument(format!(
            "'{key}' cannot be changed after declaration (settable: {})",
            QUEUE_SETTINGS.join(", ")
        )));
    }
    // Settings that do not validate are the request's fault (400), whatever the queue.
    QueueConfig::parse(&settings, &name, &vhost).map_err(|e| ApiError::invalid_argument(e.text))?;
    let command = |origin| Command::QueueSettings { origin, queue: name.clone(), settings };
    Session::call_once(&state.engine, &vhost, &user.name, QUEUE_DECLARE, command).await?;
    Ok(Json(queue_json(&find_queue(&state, &user, &vhost, &name).await?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQueueQuery {
    #[serde(default)]
    if_empty: bool,
    #[serde(default)]
    if_unused: bool,
}

#[derive(Serialize)]
struct Removed {
    messages: u32,
}

pub async fn delete_queue(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<DeleteQueueQuery>,
) -> Result<Json<Value>, ApiError> {
    find_queue(&state, &user, &vhost, &name).await?;
    let command = |origin| Command::QueueDelete {
        origin,
        queue: name,
        if_unused: query.if_unused,
        if_empty: query.if_empty,
        no_wait: false,
    };
    match Session::call_once(&state.engine, &vhost, &user.name, QUEUE_DELETE, command).await? {
        Event::QueueDeleteOk { message_count, .. } => Ok(Json(json!(Removed { messages: message_count }))),
        other => Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
    }
}

pub async fn purge_queue(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    find_queue(&state, &user, &vhost, &name).await?;
    let command = |origin| Command::QueuePurge { origin, queue: name, no_wait: false };
    match Session::call_once(&state.engine, &vhost, &user.name, QUEUE_PURGE, command).await? {
        Event::QueuePurgeOk { message_count, .. } => Ok(Json(json!(Removed { messages: message_count }))),
        other => Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSettings {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default = "default_true")]
    durable: bool,
    #[serde(default)]
    auto_delete: bool,
    #[serde(default)]
    internal: bool,
    #[serde(default)]
    arguments: Map<String, Value>,
}

pub async fn put_exchange(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
    JsonBody(settings): JsonBody<ExchangeSettings>,
) -> Result<Json<Value>, ApiError> {
    check_name(&name, "exchange")?;
    if !matches!(settings.kind.as_str(), "direct" | "fanout" | "topic" | "headers") {
        return Err(ApiError::bad_request(format!(
            "unknown exchange type '{}' (direct, fanout, topic or headers)",
            settings.kind
        )));
    }
    let declare = ExchangeDeclare {
        name: name.clone(),
        kind: settings.kind,
        passive: false,
        durable: settings.durable,
        auto_delete: settings.auto_delete,
        internal: settings.internal,
        arguments: args_from_json(&settings.arguments)?,
    };
    let command = |origin| Command::ExchangeDeclare { origin, declare, no_wait: false };
    Session::call_once(&state.engine, &vhost, &user.name, EXCHANGE_DECLARE, command).await?;
    show_exchange(State(state), Extension(user), PathParams((vhost, name))).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteExchangeQuery {
    #[serde(default)]
    if_unused: bool,
}

pub async fn delete_exchange(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
    QueryParams(query): QueryParams<DeleteExchangeQuery>,
) -> Result<Response, ApiError> {
    let exchange = exchange_from_url(&name).to_string();
    if exchange.is_empty() {
        return Err(ApiError::forbidden("the default exchange cannot be deleted"));
    }
    let command = |origin| Command::ExchangeDelete { origin, exchange, if_unused: query.if_unused, no_wait: false };
    Session::call_once(&state.engine, &vhost, &user.name, EXCHANGE_DELETE, command).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingSettings {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    arguments: Map<String, Value>,
}

/// `q` or `e`: the kind of a binding's destination in its URL.
fn bind_target(kind: &str, name: String) -> Result<BindTarget, ApiError> {
    match kind {
        "q" => Ok(BindTarget::Queue(name)),
        "e" => Ok(BindTarget::Exchange(exchange_from_url(&name).to_string())),
        other => {
            Err(ApiError::bad_request(format!("destination type '{other}' is neither 'q' (queue) nor 'e' (exchange)")))
        }
    }
}

pub async fn create_binding(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, source, kind, destination)): PathParams<(String, String, String, String)>,
    JsonBody(settings): JsonBody<BindingSettings>,
) -> Result<Response, ApiError> {
    let bind = BindRequest {
        source: exchange_from_url(&source).to_string(),
        destination: bind_target(&kind, destination)?,
        routing_key: settings.routing_key,
        arguments: args_from_json(&settings.arguments)?,
    };
    check_short(&bind.routing_key, "routing key")?;
    let command = |origin| Command::Bind { origin, bind, no_wait: false };
    Session::call_once(&state.engine, &vhost, &user.name, QUEUE_BIND, command).await?;
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBindingQuery {
    #[serde(default)]
    routing_key: String,
}

/// Remove the binding with this routing key (and whatever arguments it has; if several
/// bindings differ only in arguments, each is removed).
pub async fn delete_binding(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, source, kind, destination)): PathParams<(String, String, String, String)>,
    QueryParams(query): QueryParams<DeleteBindingQuery>,
) -> Result<Response, ApiError> {
    require_vhost(&state, &user, &vhost).await?;
    let source = exchange_from_url(&source).to_string();
    let target = bind_target(&kind, destination)?;
    let (wanted_name, wanted_queue) = match &target {
        BindTarget::Queue(name) => (name.clone(), true),
        BindTarget::Exchange(name) => (name.clone(), false),
    };
    let matching: Vec<BindingView> = binding_views(&state, Some(vhost.clone()))
        .await?
        .into_iter()
        .filter(|b| {
            b.source == source
                && b.destination == wanted_name
                && b.destination_is_queue == wanted_queue
                && b.routing_key == query.routing_key
        })
        .collect();
    if matching.is_empty() {
        return Err(ApiError::not_found("not_found", "no such binding"));
    }
    let mut session = Session::open(&state.engine, &vhost, &user.name).await?;
    let mut result = Ok(());
    for binding in matching {
        let bind = BindRequest {
            source: source.clone(),
            destination: target.clone(),
            routing_key: binding.routing_key,
            arguments: binding.arguments,
        };
        let origin = session.origin(QUEUE_UNBIND);
        if let Err(e) = session.call(Command::Unbind { origin, bind, no_wait: false }).await {
            result = Err(e);
            break;
        }
    }
    session.close().await;
    result.map(|()| StatusCode::NO_CONTENT.into_response())
}
