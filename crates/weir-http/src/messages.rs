//! Publishing and getting messages over HTTP.
//!
//! A publish is confirmed: the answer comes after the engine has logged and fsynced the
//! message (for a persistent message to a durable queue), exactly as a publisher confirm.
//! HTTP publishes are persistent unless `properties.delivery_mode` is 1: someone who sends a
//! message from a script or the CLI expects it to be there after a restart.
//!
//! A get takes up to `count` ready messages. With `wait_ms`, it long-polls as SQS does: when
//! nothing is ready it waits until at least one message arrives (then also takes whatever
//! else came with it, up to `count`) or the time is up, and answers an empty list then.
//! `ackmode` says what happens to the messages taken: `remove` acks them (gone for good),
//! `requeue` puts them back (marked redelivered), as RabbitMQ's `ack_requeue_true`; `browse`
//! only looks (nothing is taken, nothing is marked). `message_id`, `correlation_id` and
//! `selector` choose which messages (all given must hold), as the consumer arguments of the
//! same names do.
//!
//! A browse (`GET …/messages`) pages through a queue without taking anything: by state
//! (`ready` in delivery order, `delayed`, `unacked`, or `all`), with the same filters, and an
//! opaque `next` cursor to continue from.

use std::time::{Duration, Instant};

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

use weir_engine::filter::{MessageFilter, ARG_CORRELATION_ID, ARG_MESSAGE_ID, ARG_SELECTOR};
use weir_engine::{
    ArgValue, BrowseCursor, BrowseRequest, BrowseState, BrowsedMessage, Command, ConsumeRequest, Event, Inspect,
    InspectReply, LeaseAction, Message, MoveRequest, Publish, PublishParts, MOVE_BATCH_MAX,
};

use crate::auth::User;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams, QueryParams};
use crate::json::{check_short, decode_payload, encode_payload, whole, whole_option, PayloadEncoding, Properties};
use crate::session::{inspect, Session, ANSWER_TIMEOUT};
use crate::topology::exchange_from_url;
use crate::AppState;

const BASIC_PUBLISH: u32 = (60 << 16) | 40;
const BASIC_GET: u32 = (60 << 16) | 70;
const BASIC_CONSUME: u32 = (60 << 16) | 20;
const BASIC_QOS: u32 = (60 << 16) | 10;
const BASIC_ACK: u32 = (60 << 16) | 80;
/// Browsing has no AMQP method; errors name `basic.get`'s.
const BROWSE: u32 = BASIC_GET;

/// At most this many messages per get.
pub const GET_COUNT_MAX: u32 = 1000;
/// The longest a get may wait.
pub const GET_WAIT_MS_MAX: u64 = 60_000;
/// At most this many messages per move request (moved by the engine in batches of
/// [`MOVE_BATCH_MAX`]).
pub const MOVE_COUNT_MAX: u32 = 1_000_000;

/// At most this many messages per browse page (the default is [`BROWSE_LIMIT_DEFAULT`]).
pub const BROWSE_LIMIT_MAX: u32 = 1000;
pub const BROWSE_LIMIT_DEFAULT: u32 = 50;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    #[serde(default)]
    routing_key: String,
    #[serde(default)]
    payload: String,
    #[serde(default)]
    payload_encoding: PayloadEncoding,
    #[serde(default)]
    properties: Properties,
}

/// `POST /api/exchanges/{vhost}/{exchange}/publish` → `{"routed": bool}`.
pub async fn publish_to_exchange(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, exchange)): PathParams<(String, String)>,
    JsonBody(request): JsonBody<PublishRequest>,
) -> Result<Json<Value>, ApiError> {
    let exchange = exchange_from_url(&exchange).to_string();
    let routing_key = request.routing_key.clone();
    let routed = publish(&state, &user.name, &vhost, &exchange, &routing_key, request).await?;
    Ok(Json(json!({ "routed": routed })))
}

/// `POST /api/queues/{vhost}/{queue}/publish`: through the default exchange straight to the
/// queue; 404 if there is no such queue.
pub async fn publish_to_queue(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, queue)): PathParams<(String, String)>,
    JsonBody(request): JsonBody<PublishRequest>,
) -> Result<Json<Value>, ApiError> {
    if !request.routing_key.is_empty() {
        return Err(ApiError::bad_request("a publish to a queue takes no routing_key (the queue's name is the key)"));
    }
    if !publish(&state, &user.name, &vhost, "", &queue, request).await? {
        return Err(ApiError::not_found("not_found", format!("no queue '{queue}' in vhost '{vhost}'")));
    }
    Ok(Json(json!({ "routed": true })))
}

async fn publish(
    state: &AppState,
    user: &str,
    vhost: &str,
    exchange: &str,
    routing_key: &str,
    request: PublishRequest,
) -> Result<bool, ApiError> {
    check_short(exchange, "exchange name")?;
    check_short(routing_key, "routing key")?;
    let body = decode_payload(&request.payload, request.payload_encoding)?;
    if body.len() > state.message_size_max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("message body of {} bytes is over the limit of {}", body.len(), state.message_size_max),
        ));
    }
    let mut properties = request.properties.to_amqp()?;
    if properties.delivery_mode().is_none() {
        properties = properties.with_delivery_mode(2);
    }
    let raw_properties = weir_amqp_codec::encode_properties(&properties);
    let mut session = Session::open(&state.engine, vhost, user).await?;
    let parts = PublishParts {
        origin: session.origin(BASIC_PUBLISH),
        exchange,
        routing_key,
        mandatory: true,
        confirm: Some(1),
        properties: &properties,
        raw_properties,
        body: Bytes::from(body),
    };
    let result = async {
        let publish = Publish::from_parts(parts).map_err(|e| ApiError::invalid_argument(e.text))?;
        session.send(Command::Publish(Box::new(publish))).await?;
        let mut routed = true;
        loop {
            match session.answer().await? {
                Event::Returned { .. } => routed = false,
                Event::ConfirmAck { .. } => return Ok(routed),
                Event::ConfirmNack { .. } => return Err(refused(state).await),
                other => return Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
            }
        }
    }
    .await;
    session.close().await;
    result
}

/// Why a publish was nacked: the log refuses new messages (503), or a full queue with
/// `x-overflow: reject-publish` refused it (409, the request meets the queue's state).
async fn refused(state: &AppState) -> ApiError {
    let read_only = match inspect(&state.engine, Inspect::Overview).await {
        Ok(InspectReply::Overview(overview)) => overview.read_only,
        Ok(_) => None,
        Err(e) => return e,
    };
    match read_only {
        Some(reason) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            format!("the broker cannot store messages now: {reason}"),
        ),
        None => ApiError::new(
            StatusCode::CONFLICT,
            "rejected",
            "a full queue (x-overflow: reject-publish) or the vhost's message quota refused the message",
        ),
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    Remove,
    Requeue,
    Browse,
    /// Lease-then-ack: the broker holds each message under a lease token until it is
    /// settled with `POST /api/leases/{vhost}/{token}` or the lease runs out.
    Lease,
}

/// The lease of a lease-then-ack get when none is asked for.
pub const LEASE_MS_DEFAULT: u64 = 30_000;
/// The longest lease (a week, as the engine's `x-lease-ms`).
pub const LEASE_MS_MAX: u64 = 604_800_000;

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ResponseEncoding {
    #[default]
    Auto,
    Base64,
}

fn default_count() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    #[serde(default = "default_count", deserialize_with = "whole")]
    count: u32,
    ackmode: Option<AckMode>,
    #[serde(default, deserialize_with = "whole")]
    wait_ms: u64,
    #[serde(default)]
    encoding: ResponseEncoding,
    message_id: Option<String>,
    correlation_id: Option<String>,
    selector: Option<String>,
    /// With `ackmode: lease`: how long each message is held (default [`LEASE_MS_DEFAULT`]).
    #[serde(default, deserialize_with = "whole_option")]
    lease_ms: Option<u64>,
}

impl GetRequest {
    fn filter_fields(&self) -> FilterFields {
        FilterFields {
            message_id: self.message_id.clone(),
            correlation_id: self.correlation_id.clone(),
            selector: self.selector.clone(),
        }
    }
}

/// Which messages a get or a browse wants (all given must hold).
struct FilterFields {
    message_id: Option<String>,
    correlation_id: Option<String>,
    selector: Option<String>,
}

impl FilterFields {
    fn filter(&self) -> Result<Option<Arc<MessageFilter>>, ApiError> {
        let filter = MessageFilter::new(self.message_id.clone(), self.correlation_id.clone(), self.selector.as_deref())
            .map_err(|e| ApiError::invalid_argument(e.text))?;
        Ok(filter.map(Arc::new))
    }

    /// The same, as consumer arguments (for a get that waits).
    fn arguments(&self) -> Vec<(String, ArgValue)> {
        [(ARG_CORRELATION_ID, &self.correlation_id), (ARG_MESSAGE_ID, &self.message_id), (ARG_SELECTOR, &self.selector)]
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_string(), ArgValue::Str(value.clone()?))))
            .collect()
    }
}

struct Taken {
    delivery_tag: u64,
    redelivered: bool,
    message_count: Option<u32>,
    message: std::sync::Arc<Message>,
}

/// `POST /api/queues/{vhost}/{queue}/get` → a list of messages (maybe empty).
pub async fn get(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, queue)): PathParams<(String, String)>,
    JsonBody(request): JsonBody<GetRequest>,
) -> Result<Json<Value>, ApiError> {
    if request.count == 0 || request.count > GET_COUNT_MAX {
        return Err(ApiError::bad_request(format!("count must be 1 to {GET_COUNT_MAX}")));
    }
    if request.wait_ms > GET_WAIT_MS_MAX {
        return Err(ApiError::bad_request(format!("wait_ms must be at most {GET_WAIT_MS_MAX}")));
    }
    let ackmode = request.ackmode.unwrap_or(AckMode::Remove);
    // Checked before anything is taken: a refused lease would give the messages back as
    // failed deliveries.
    if request.lease_ms.is_some_and(|ms| !(1..=LEASE_MS_MAX).contains(&ms)) {
        return Err(ApiError::bad_request(format!("lease_ms must be 1 to {LEASE_MS_MAX}")));
    }
    let filter = request.filter_fields().filter()?;
    let force_base64 = request.encoding == ResponseEncoding::Base64;
    if ackmode == AckMode::Browse {
        if request.wait_ms != 0 {
            return Err(ApiError::bad_request("wait_ms does not apply to ackmode browse"));
        }
        let browse = BrowseRequest { state: BrowseState::Ready, after: None, limit: request.count, filter };
        let (messages, _) = browse_page(&state, &user.name, &vhost, &queue, browse).await?;
        let listed = messages.iter().map(|m| browsed_json(m, force_base64)).collect();
        return Ok(Json(Value::Array(listed)));
    }
    let mut session = Session::open(&state.engine, &vhost, &user.name).await?;
    let result = take(&mut session, &queue, &request, filter).await;
    let settled = match &result {
        Ok(taken) if ackmode == AckMode::Lease => hold(&mut session, taken, request.lease_ms).await,
        Ok(taken) if !taken.is_empty() => {
            let delivery_tag = taken.iter().map(|t| t.delivery_tag).max().expect("not empty");
            let origin = session.origin(BASIC_ACK);
            let command = match ackmode {
                AckMode::Remove | AckMode::Browse | AckMode::Lease => {
                    Command::Ack { origin, delivery_tag, multiple: true }
                }
                AckMode::Requeue => Command::Reject { origin, delivery_tag, multiple: true, requeue: true },
            };
            session.send(command).await.map(|()| Vec::new())
        }
        _ => Ok(Vec::new()),
    };
    session.close().await;
    let taken = result?;
    let leases = settled?;
    let listed = taken
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut value = message_json(&t.message, t.redelivered, t.message_count, force_base64);
            if let Some((token, until_ms)) = leases.get(i) {
                value["lease"] = json!({ "token": token.to_string(), "until_ms": until_ms });
            }
            value
        })
        .collect();
    Ok(Json(Value::Array(listed)))
}

/// Hand each taken message to the broker under a lease token: (token, lease runs out at).
async fn hold(session: &mut Session, taken: &[Taken], lease_ms: Option<u64>) -> Result<Vec<(u64, u64)>, ApiError> {
    let lease_ms = lease_ms.unwrap_or(LEASE_MS_DEFAULT);
    let mut leases = Vec::with_capacity(taken.len());
    for t in taken {
        let origin = session.origin(BASIC_ACK);
        match session.call(Command::Hold { origin, delivery_tag: t.delivery_tag, lease_ms }).await? {
            Event::Held { token, until_ms, .. } => leases.push((token, until_ms)),
            other => return Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
        }
    }
    Ok(leases)
}

/// Take up to `count` messages: what is ready now, else (with `wait_ms`) the first to arrive.
async fn take(
    session: &mut Session,
    queue: &str,
    request: &GetRequest,
    filter: Option<Arc<MessageFilter>>,
) -> Result<Vec<Taken>, ApiError> {
    let mut taken = Vec::new();
    while taken.len() < request.count as usize {
        let origin = session.origin(BASIC_GET);
        let get = Command::Get { origin, queue: queue.to_string(), no_ack: false, filter: filter.clone() };
        match session.call(get).await? {
            Event::GetOk { delivery_tag, redelivered, message_count, message, .. } => {
                taken.push(Taken { delivery_tag, redelivered, message_count: Some(message_count), message });
            }
            Event::GetEmpty { .. } => break,
            other => return Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
        }
    }
    if !taken.is_empty() || request.wait_ms == 0 {
        return Ok(taken);
    }
    let deadline = Instant::now() + Duration::from_millis(request.wait_ms);
    let origin = session.origin(BASIC_QOS);
    let prefetch_count = u16::try_from(request.count).unwrap_or(u16::MAX);
    session.call(Command::Qos { origin, prefetch_count, global: false }).await?;
    let consume = ConsumeRequest {
        queue: queue.to_string(),
        consumer_tag: String::new(),
        no_ack: false,
        exclusive: false,
        no_wait: false,
        arguments: request.filter_fields().arguments(),
    };
    let origin = session.origin(BASIC_CONSUME);
    let consumer_tag = match session.call(Command::Consume { origin, consume }).await? {
        Event::ConsumeOk { consumer_tag, .. } => consumer_tag,
        other => return Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
    };
    // Wait for the first delivery (or the deadline), then cancel and keep every delivery
    // that came before the cancel's answer.
    let mut cancelled = false;
    loop {
        let timeout = if cancelled { ANSWER_TIMEOUT } else { deadline.saturating_duration_since(Instant::now()) };
        let event = session.next_event(timeout).await?;
        match event {
            Some(Event::Deliver { delivery_tag, redelivered, message, .. }) => {
                taken.push(Taken { delivery_tag, redelivered, message_count: None, message });
            }
            Some(Event::CancelOk { .. }) | Some(Event::ConsumerCancelled { .. }) if cancelled => return Ok(taken),
            Some(Event::ConsumerCancelled { .. }) => return Ok(taken), // the queue was deleted
            Some(Event::ChannelError { error, .. }) => return Err(error.into()),
            Some(_) => {}
            None if cancelled => return Err(ApiError::internal("the engine did not answer in time".into())),
            None => {}
        }
        if !cancelled && (!taken.is_empty() || Instant::now() >= deadline) {
            let origin = session.origin(BASIC_CONSUME);
            session.send(Command::Cancel { origin, consumer_tag: consumer_tag.clone(), no_wait: false }).await?;
            cancelled = true;
        }
    }
}

fn message_json(message: &Message, redelivered: bool, message_count: Option<u32>, force_base64: bool) -> Value {
    let (payload, encoding) = encode_payload(&message.body, force_base64);
    let properties = weir_amqp_codec::decode_properties(&message.raw_properties).unwrap_or_default();
    json!({
        "payload": payload,
        "payload_encoding": encoding,
        "payload_bytes": message.body.len(),
        "redelivered": redelivered,
        "exchange": message.exchange,
        "routing_key": message.routing_key,
        "message_count": message_count,
        "properties": Properties::from_amqp(&properties),
    })
}

/// A browsed message: as a got one, plus where it is and how often it was delivered.
fn browsed_json(browsed: &BrowsedMessage, force_base64: bool) -> Value {
    let mut value = message_json(&browsed.message, browsed.redelivered, None, force_base64);
    value["state"] = json!(state_name(browsed.state));
    value["seq"] = json!(browsed.seq);
    value["priority"] = json!(browsed.priority);
    value["delivery_count"] = json!(browsed.delivery_count);
    value
}

fn state_name(state: BrowseState) -> &'static str {
    match state {
        BrowseState::Ready => "ready",
        BrowseState::Delayed => "delayed",
        BrowseState::Unacked => "unacked",
        BrowseState::All => "all",
    }
}

#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
pub enum StateParam {
    #[default]
    Ready,
    Delayed,
    Unacked,
    All,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrowseParams {
    #[serde(default)]
    state: StateParam,
    limit: Option<u32>,
    after: Option<String>,
    #[serde(default)]
    encoding: ResponseEncoding,
    message_id: Option<String>,
    correlation_id: Option<String>,
    selector: Option<String>,
}

/// `GET /api/queues/{vhost}/{queue}/messages` → `{"messages": […], "next": cursor or null}`.
pub async fn browse(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, queue)): PathParams<(String, String)>,
    QueryParams(params): QueryParams<BrowseParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(BROWSE_LIMIT_DEFAULT);
    if limit == 0 || limit > BROWSE_LIMIT_MAX {
        return Err(ApiError::bad_request(format!("limit must be 1 to {BROWSE_LIMIT_MAX}")));
    }
    let after = params.after.as_deref().map(parse_cursor).transpose()?;
    let filter = FilterFields {
        message_id: params.message_id,
        correlation_id: params.correlation_id,
        selector: params.selector,
    }
    .filter()?;
    let browse_state = match params.state {
        StateParam::Ready => BrowseState::Ready,
        StateParam::Delayed => BrowseState::Delayed,
        StateParam::Unacked => BrowseState::Unacked,
        StateParam::All => BrowseState::All,
    };
    let fits = match (browse_state, after) {
        (_, None) | (BrowseState::All, _) => true,
        (BrowseState::Ready, Some(cursor)) => matches!(cursor, BrowseCursor::Ready { .. }),
        (BrowseState::Delayed, Some(cursor)) => matches!(cursor, BrowseCursor::Delayed { .. }),
        (BrowseState::Unacked, Some(cursor)) => matches!(cursor, BrowseCursor::Unacked { .. }),
    };
    if !fits {
        let state = state_name(browse_state);
        return Err(ApiError::bad_request(format!("that cursor belongs to another state than '{state}'")));
    }
    let request = BrowseRequest { state: browse_state, after, limit, filter };
    let (messages, next) = browse_page(&state, &user.name, &vhost, &queue, request).await?;
    let force_base64 = params.encoding == ResponseEncoding::Base64;
    Ok(Json(json!({
        "messages": messages.iter().map(|m| browsed_json(m, force_base64)).collect::<Vec<_>>(),
        "next": next.map(cursor_text),
    })))
}

async fn browse_page(
    state: &AppState,
    user: &str,
    vhost: &str,
    queue: &str,
    request: BrowseRequest,
) -> Result<(Vec<BrowsedMessage>, Option<BrowseCursor>), ApiError> {
    let browse = |origin| Command::Browse { origin, queue: queue.to_string(), request };
    match Session::call_once(&state.engine, vhost, user, BROWSE, browse).await? {
        Event::Browsed { messages, next, .. } => Ok((messages, next)),
        other => Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
    }
}

/// Cursors as text: `r.<priority>.<seq>`, `d.<seq>`, `u.<seq>`.
fn cursor_text(cursor: BrowseCursor) -> String {
    match cursor {
        BrowseCursor::Ready { priority, seq } => format!("r.{priority}.{seq}"),
        BrowseCursor::Delayed { seq } => format!("d.{seq}"),
        BrowseCursor::Unacked { seq } => format!("u.{seq}"),
    }
}

fn parse_cursor(text: &str) -> Result<BrowseCursor, ApiError> {
    let bad = || ApiError::bad_request(format!("'{text}' is not a cursor this API gave out"));
    let parts: Vec<&str> = text.split('.').collect();
    let number = |part: &str| part.parse::<u64>().map_err(|_| bad());
    match parts.as_slice() {
        ["r", priority, seq] => {
            Ok(BrowseCursor::Ready { priority: priority.parse().map_err(|_| bad())?, seq: number(seq)? })
        }
        ["d", seq] => Ok(BrowseCursor::Delayed { seq: number(seq)? }),
        ["u", seq] => Ok(BrowseCursor::Unacked { seq: number(seq)? }),
        _ => Err(bad()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveBody {
    /// The queue to move to; absent: back to where each message was dead-lettered from.
    target: Option<String>,
    #[serde(default = "default_count", deserialize_with = "whole")]
    count: u32,
    message_id: Option<String>,
    correlation_id: Option<String>,
    selector: Option<String>,
}

/// `POST /api/queues/{vhost}/{queue}/move` → `{"moved", "skipped", "done", "target_full"}`:
/// move up to `count` ready messages to `target`, or redrive them (no `target`) to the queue
/// each was dead-lettered from. `done`: every ready message was looked at.
pub async fn move_messages(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, queue)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<MoveBody>,
) -> Result<Json<Value>, ApiError> {
    if body.count == 0 || body.count > MOVE_COUNT_MAX {
        return Err(ApiError::bad_request(format!("count must be 1 to {MOVE_COUNT_MAX}")));
    }
    if let Some(target) = &body.target {
        check_short(target, "target queue name")?;
    }
    let filter = FilterFields {
        message_id: body.message_id.clone(),
        correlation_id: body.correlation_id.clone(),
        selector: body.selector.clone(),
    }
    .filter()?;
    let mut session = Session::open(&state.engine, &vhost, &user.name).await?;
    let result = async {
        let (mut moved, mut skipped, mut after) = (0u32, 0u32, None);
        loop {
            let request = MoveRequest {
                target: body.target.clone(),
                count: (body.count - moved).min(MOVE_BATCH_MAX),
                filter: filter.clone(),
                after,
            };
            let origin = session.origin(BROWSE);
            match session.call(Command::Move { origin, queue: queue.clone(), request }).await? {
                Event::Moved { moved: batch, skipped: passed, next, target_full, .. } => {
                    moved += batch;
                    skipped += passed;
                    if next.is_none() || moved >= body.count || target_full {
                        let done = next.is_none();
                        return Ok(
                            json!({ "moved": moved, "skipped": skipped, "done": done, "target_full": target_full }),
                        );
                    }
                    after = next;
                }
                other => return Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
            }
        }
    }
    .await;
    session.close().await;
    result.map(Json)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    #[serde(default = "default_count")]
    count: u32,
    message_id: Option<String>,
    correlation_id: Option<String>,
    selector: Option<String>,
}

/// `DELETE /api/queues/{vhost}/{queue}/messages?message_id=…` → `{"messages": n}`: remove up
/// to `count` ready or delayed messages that meet the filter (a filter is required: a purge
/// is `DELETE …/contents`).
pub async fn remove_messages(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, queue)): PathParams<(String, String)>,
    QueryParams(params): QueryParams<RemoveParams>,
) -> Result<Json<Value>, ApiError> {
    if params.count == 0 || params.count > MOVE_BATCH_MAX {
        return Err(ApiError::bad_request(format!("count must be 1 to {MOVE_BATCH_MAX}")));
    }
    let fields = FilterFields {
        message_id: params.message_id,
        correlation_id: params.correlation_id,
        selector: params.selector,
    };
    let Some(filter) = fields.filter()? else {
        return Err(ApiError::bad_request(
            "say which messages (message_id, correlation_id or selector); DELETE …/contents purges them all",
        ));
    };
    let remove = |origin| Command::Remove { origin, queue, filter, count: params.count };
    match Session::call_once(&state.engine, &vhost, &user.name, BROWSE, remove).await? {
        Event::QueuePurgeOk { message_count, .. } => Ok(Json(json!({ "messages": message_count }))),
        other => Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LeaseActionName {
    Ack,
    Requeue,
    Reject,
    Renew,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseBody {
    action: LeaseActionName,
    /// With `renew`: how long from now (default [`LEASE_MS_DEFAULT`]).
    #[serde(default, deserialize_with = "whole_option")]
    lease_ms: Option<u64>,
}

/// `POST /api/leases/{vhost}/{token}` → `{"token", "until_ms"}`: settle (`ack`, `requeue`,
/// `reject`) or `renew` a message taken with `ackmode: lease`. 404 once the lease is gone.
pub async fn settle_lease(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, token)): PathParams<(String, String)>,
    JsonBody(body): JsonBody<LeaseBody>,
) -> Result<Json<Value>, ApiError> {
    let token: u64 = token.parse().map_err(|_| ApiError::not_found("not_found", format!("no lease '{token}'")))?;
    let action = match body.action {
        LeaseActionName::Ack => LeaseAction::Ack,
        LeaseActionName::Requeue => LeaseAction::Requeue,
        LeaseActionName::Reject => LeaseAction::Reject,
        LeaseActionName::Renew => LeaseAction::Renew(body.lease_ms.unwrap_or(LEASE_MS_DEFAULT)),
    };
    let settle = |origin| Command::SettleLease { origin, token, action };
    match Session::call_once(&state.engine, &vhost, &user.name, BASIC_ACK, settle).await? {
        Event::Held { until_ms, .. } => Ok(Json(json!({ "token": token.to_string(), "until_ms": until_ms }))),
        other => Err(ApiError::internal(format!("unexpected engine answer: {other:?}"))),
    }
}
