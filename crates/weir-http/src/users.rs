//! Handlers for who may do what: vhost creation and deletion, users, permissions, and
//! `whoami`. Field names follow RabbitMQ's management API (`tags`, `configure`, `write`,
//! `read`, `password`, `password_hash`), so scripts carry over.
//!
//! Reads come from the engine's shared directory; changes go to the engine as
//! [`Command::Admin`] over a management session and are answered once durable. The engine
//! refuses them to non-administrators too; the checks here only give the clearer answer
//! first. Passwords are hashed here (argon2, on a blocking thread), never in the engine.

use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use weir_engine::records::VhostRecord;
use weir_engine::security::{check_password_hash, hash_password, Permission, PermissionRecord, UserRecord};
use weir_engine::{check_vhost_limits, AdminOp, ArgValue, Command};

use crate::auth::User;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathParams};
use crate::session::Session;
use crate::AppState;

/// The largest vhost limit (exact as a JSON number, whether sent as 9e18 or as an integer).
pub const LIMIT_MAX: u64 = 9_000_000_000_000_000_000;

/// Method token for errors: none of AMQP's; only copied back in errors.
const ADMIN: u32 = 0;

/// Send one change to the engine as `user` and wait until it is durable.
async fn apply(state: &AppState, user: &User, op: AdminOp) -> Result<(), ApiError> {
    user.require_administrator()?;
    // On no vhost: a management session, which can only send `Command::Admin`.
    Session::call_once(&state.engine, "", &user.name, ADMIN, |origin| Command::Admin { origin, op }).await.map(|_| ())
}

/// 201 when the thing is new, 204 when it was changed.
fn created_or_changed(existed: bool) -> Response {
    if existed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::CREATED.into_response()
    }
}

fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    weir_engine::security::check_name(what, name).map_err(ApiError::bad_request)
}

/// A user as the API shows it; the password hash only to administrators (for export).
fn user_json(user: &UserRecord, administrator: bool) -> Value {
    let hash = if administrator { user.password_hash.as_str() } else { "" };
    json!({
        "name": user.name,
        "tags": user.tags,
        "administrator": user.is_administrator(),
        "password_hash": hash,
    })
}

fn permission_json(p: &PermissionRecord) -> Value {
    json!({ "user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read })
}

// ---------------------------------------------------------------------------------------
// Vhosts

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostSettings {
    /// Free text, as RabbitMQ's; accepted and not kept.
    #[serde(default)]
    #[allow(dead_code)]
    description: String,
    /// `max-queues`, `max-connections`, `max-messages`, `max-bytes`; left out, an existing
    /// vhost keeps its limits.
    #[serde(default, deserialize_with = "not_null")]
    limits: Option<serde_json::Map<String, Value>>,
}

pub async fn put_vhost(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(vhost): PathParams<String>,
    JsonBody(settings): JsonBody<VhostSettings>,
) -> Result<Response, ApiError> {
    check_name(&vhost, "vhost")?;
    user.require_administrator()?;
    let existing = crate::topology::vhosts(&state).await?.into_iter().find(|v| v.name == vhost);
    let limits = match &settings.limits {
        Some(limits) => {
            // JSON has one number type: 5.0 is the whole number 5.
            let limits: Vec<(String, ArgValue)> = crate::json::args_from_json(limits)?
                .into_iter()
                .map(|(key, value)| match value {
                    ArgValue::Float(f) if f.fract() == 0.0 && (0.0..=LIMIT_MAX as f64).contains(&f) => {
                        (key, ArgValue::Int(f as i64))
                    }
                    other => (key, other),
                })
                .collect();
            check_vhost_limits(&limits).map_err(ApiError::invalid_argument)?;
            if limits.iter().any(|(_, value)| matches!(value, ArgValue::Int(n) if *n as u64 > LIMIT_MAX)) {
                return Err(ApiError::invalid_argument(format!("vhost limits are at most {LIMIT_MAX}")));
            }
            limits
        }
        None => existing.as_ref().map(|v| v.limits.clone()).unwrap_or_default(),
    };
    apply(&state, &user, AdminOp::PutVhost(VhostRecord { name: vhost, limits })).await?;
    Ok(created_or_changed(existing.is_some()))
}

pub async fn delete_vhost(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(vhost): PathParams<String>,
) -> Result<Response, ApiError> {
    apply(&state, &user, AdminOp::DeleteVhost { name: vhost }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------
// Users

pub async fn whoami(State(state): State<AppState>, Extension(user): Extension<User>) -> Json<Value> {
    let directory = state.engine.directory().load();
    let tags = directory.user(&user.name).map(|u| u.tags.clone()).unwrap_or_default();
    Json(json!({ "name": user.name, "tags": tags, "administrator": user.administrator }))
}

pub async fn list_users(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    user.require_administrator()?;
    Ok(Json(Value::Array(state.engine.directory().load().users().map(|u| user_json(u, true)).collect())))
}

/// Administrators may read any user, other users themselves.
fn require_self_or_administrator(user: &User, name: &str) -> Result<(), ApiError> {
    if user.name == name {
        return Ok(());
    }
    user.require_administrator()
}

pub async fn show_user(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    require_self_or_administrator(&user, &name)?;
    let directory = state.engine.directory().load();
    let found = directory.user(&name).ok_or_else(|| ApiError::not_found("not_found", format!("no user '{name}'")))?;
    Ok(Json(user_json(found, user.administrator)))
}

/// Tags as RabbitMQ takes them: a comma-separated string or a list.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum Tags {
    Text(String),
    List(Vec<String>),
}

impl Tags {
    fn into_list(self) -> Vec<String> {
        let list = match self {
            Tags::Text(text) => text.split(',').map(str::to_string).collect(),
            Tags::List(list) => list,
        };
        let mut tags: Vec<String> = Vec::new();
        for tag in list.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
            if !tags.iter().any(|seen| seen == tag) {
                tags.push(tag.to_string());
            }
        }
        tags
    }
}

/// An optional field that may be left out but not given as `null`.
fn not_null<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(value: D) -> Result<Option<T>, D::Error> {
    T::deserialize(value).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    #[serde(default, deserialize_with = "not_null")]
    password: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    password_hash: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    tags: Option<Tags>,
}

/// Create or change a user, with `password` or `password_hash` (an argon2 PHC string; `""`
/// makes a user that cannot log in with a password, as does giving neither for a new user);
/// an existing user keeps its password and tags unless given.
pub async fn put_user(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(name): PathParams<String>,
    JsonBody(settings): JsonBody<UserSettings>,
) -> Result<Response, ApiError> {
    check_name(&name, "user")?;
    user.require_administrator()?;
    let existing = state.engine.directory().load().user(&name).cloned();
    let password_hash = match (settings.password, settings.password_hash) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give password or password_hash, not both")),
        (Some(password), None) => {
            if password.is_empty() {
                return Err(ApiError::bad_request("password must not be empty (password_hash \"\" disables it)"));
            }
            tokio::task::spawn_blocking(move || hash_password(&password))
                .await
                .map_err(|e| ApiError::internal(format!("password hashing failed: {e}")))?
        }
        (None, Some(hash)) => {
            if !hash.is_empty() {
                check_password_hash(&hash).map_err(ApiError::invalid_argument)?;
            }
            hash
        }
        // A new user without either cannot log in until it is given a password.
        (None, None) => existing.as_ref().map(|u| u.password_hash.clone()).unwrap_or_default(),
    };
    let tags = match settings.tags {
        Some(tags) => tags.into_list(),
        None => existing.as_ref().map(|u| u.tags.clone()).unwrap_or_default(),
    };
    apply(&state, &user, AdminOp::PutUser(UserRecord { name, password_hash, tags })).await?;
    Ok(created_or_changed(existing.is_some()))
}

pub async fn delete_user(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams(name): PathParams<String>,
) -> Result<Response, ApiError> {
    apply(&state, &user, AdminOp::DeleteUser { name }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------
// Permissions

pub async fn list_permissions(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
) -> Result<Json<Value>, ApiError> {
    let directory = state.engine.directory().load();
    let visible = directory.permissions().filter(|p| user.administrator || p.user == user.name);
    Ok(Json(Value::Array(visible.map(permission_json).collect())))
}

pub async fn show_permission(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    require_self_or_administrator(&user, &name)?;
    let directory = state.engine.directory().load();
    let permission = directory.permission(&name, &vhost).ok_or_else(|| {
        ApiError::not_found("not_found", format!("user '{name}' has no permission on vhost '{vhost}'"))
    })?;
    Ok(Json(permission_json(&permission.record)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionSettings {
    configure: String,
    write: String,
    read: String,
}

pub async fn put_permission(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
    JsonBody(settings): JsonBody<PermissionSettings>,
) -> Result<Response, ApiError> {
    user.require_administrator()?;
    let record = PermissionRecord {
        user: name.clone(),
        vhost: vhost.clone(),
        configure: settings.configure,
        write: settings.write,
        read: settings.read,
    };
    // A pattern that does not compile is the request's fault.
    Permission::compile(record.clone()).map_err(ApiError::invalid_argument)?;
    let existed = state.engine.directory().load().permission(&name, &vhost).is_some();
    apply(&state, &user, AdminOp::PutPermission(record)).await?;
    Ok(created_or_changed(existed))
}

pub async fn delete_permission(
    State(state): State<AppState>,
    Extension(user): Extension<User>,
    PathParams((vhost, name)): PathParams<(String, String)>,
) -> Result<Response, ApiError> {
    apply(&state, &user, AdminOp::DeletePermission { user: name, vhost }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
