//! The admin and client CLI (Weir's qmadmin): every command talks to the broker's HTTP API,
//! never to its files, so it works the same against a local or a remote broker.
//!
//! Exit codes a script can trust: 0 done; 1 the broker refused or failed (the API error is
//! printed); 2 bad usage; 3 not found (no such queue, vhost, …); 4 cannot reach the broker or
//! the login was refused. `--json` prints the API's JSON instead of tables.

mod access;
mod browse;
mod client;
mod moving;
mod output;

pub use access::{user, vhost, UserCommand, VhostCommand};
pub use browse::{browse, BrowseArgs};
pub use moving::{move_messages, MoveArgs};

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use base64::Engine as _;
use hyper::Method;
use serde_json::{json, Map, Value};

use client::{segment, Client};
use output::{cell, fields, table};

/// Where the broker is and who we are; on every client command.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// The broker's HTTP API.
    #[arg(long, global = true, env = "WEIR_SERVER", default_value = "http://127.0.0.1:15672")]
    pub server: String,
    #[arg(long, global = true, env = "WEIR_USER", default_value = "guest")]
    pub user: String,
    #[arg(long, global = true, env = "WEIR_PASSWORD", default_value = "guest", hide_env_values = true)]
    pub password: String,
    /// Print the API's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct QueueCommand {
    #[command(subcommand)]
    pub action: QueueAction,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(clap::Subcommand, Debug)]
pub enum QueueAction {
    /// Create a queue (nothing changes if it exists with the same settings).
    ///
    /// Examples:
    ///   weir queue create orders
    ///   weir queue create jobs --arg x-max-priority=9 --arg x-dead-letter-exchange=dlx
    ///   weir queue create scratch --transient --auto-delete
    #[command(verbatim_doc_comment)]
    Create {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// A queue argument (any in SPEC.md / docs/AMQP.md); numbers and true/false are typed.
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// Not kept across restarts.
        #[arg(long)]
        transient: bool,
        /// Deleted when its last consumer goes.
        #[arg(long)]
        auto_delete: bool,
    },
    /// List queues with their depth by state.
    ///
    /// Examples:
    ///   weir queue list
    ///   weir queue list --vhost / --json
    #[command(verbatim_doc_comment)]
    List {
        #[arg(long)]
        vhost: Option<String>,
    },
    /// Show one queue: settings, depth by state, counters.
    ///
    /// Example:
    ///   weir queue show orders
    #[command(verbatim_doc_comment)]
    Show {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Change a queue's settings: they override its declared arguments (a client's
    /// re-declare with the original arguments still works). Settable: x-message-ttl,
    /// x-max-length, x-max-length-bytes, x-overflow, x-dead-letter-exchange,
    /// x-dead-letter-routing-key, x-delivery-limit, x-retry-delay, x-retry-backoff,
    /// x-retry-delay-max, x-expires.
    ///
    /// Examples:
    ///   weir queue set orders --arg x-max-length=10000 --arg x-overflow=reject-publish
    ///   weir queue set orders --arg x-delivery-limit=5 --arg x-dead-letter-exchange=dlx
    ///   weir queue set orders --unset x-max-length
    ///   weir queue set orders --clear                # back to the declared arguments
    #[command(verbatim_doc_comment)]
    Set {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// A setting to add or change; numbers and true/false are typed.
        #[arg(long = "arg", value_name = "KEY=VALUE")]
        args: Vec<String>,
        /// A setting to remove (the declared argument, if any, applies again).
        #[arg(long, value_name = "KEY")]
        unset: Vec<String>,
        /// Remove every setting first.
        #[arg(long)]
        clear: bool,
    },
    /// Remove every ready and delayed message.
    ///
    /// Example:
    ///   weir queue purge orders
    #[command(verbatim_doc_comment)]
    Purge {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Delete a queue and its messages.
    ///
    /// Examples:
    ///   weir queue delete orders
    ///   weir queue delete orders --if-empty
    #[command(verbatim_doc_comment)]
    Delete {
        name: String,
        #[arg(long, default_value = "/")]
        vhost: String,
        /// Only if it holds no messages.
        #[arg(long)]
        if_empty: bool,
        /// Only if it has no consumers.
        #[arg(long)]
        if_unused: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct SendArgs {
    /// The queue to send to (through the default exchange).
    pub queue: String,
    /// The message body; read from standard input when omitted.
    pub body: Option<String>,
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// A header (repeatable); numbers and true/false are typed.
    #[arg(long = "header", value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    #[arg(long)]
    pub priority: Option<u8>,
    /// Deliver after this many milliseconds (the `x-delay` header).
    #[arg(long, value_name = "MS")]
    pub delay: Option<u64>,
    #[arg(long)]
    pub correlation_id: Option<String>,
    #[arg(long)]
    pub reply_to: Option<String>,
    #[arg(long)]
    pub message_id: Option<String>,
    #[arg(long)]
    pub content_type: Option<String>,
    /// Milliseconds the message may wait in the queue.
    #[arg(long, value_name = "MS")]
    pub expiration: Option<u64>,
    /// Not persistent (lost on restart); messages are persistent by default.
    #[arg(long)]
    pub transient: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(clap::Args, Debug)]
pub struct RecvArgs {
    pub queue: String,
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// Wait up to this many seconds for a message when none is ready (at most 60).
    #[arg(long, value_name = "SECONDS", default_value_t = 0.0)]
    pub wait: f64,
    /// Take up to this many messages.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    /// Put the messages back after showing them (they are marked redelivered).
    #[arg(long)]
    pub requeue: bool,
    #[command(flatten)]
    pub filter: browse::FilterArgs,
    #[command(flatten)]
    pub connection: Connection,
}

/// Why a command failed, and the exit code that says so.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: 2, message: message.into() }
    }

    pub fn connect(message: impl Into<String>) -> Self {
        Self { code: 4, message: message.into() }
    }

    pub fn api(status: u16, code: String, message: String) -> Self {
        let exit = match status {
            404 => 3,
            401 => 4,
            _ => 1,
        };
        Self { code: exit, message: format!("{message} ({code})") }
    }
}

/// Run a client command on a small runtime; print its error and map it to the exit code.
pub fn run(command: impl std::future::Future<Output = Result<String, CliError>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("weir: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command) {
        Ok(text) => {
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("weir: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

pub(crate) fn client(connection: &Connection) -> Result<Client, CliError> {
    Client::new(&connection.server, &connection.user, &connection.password)
}

pub(crate) fn pretty(value: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default())
}

/// `KEY=VALUE` with VALUE typed: integer, float, true/false, else string.
fn key_value(text: &str) -> Result<(String, Value), CliError> {
    let (key, value) = text.split_once('=').ok_or_else(|| CliError::usage(format!("'{text}' is not KEY=VALUE")))?;
    let typed = if let Ok(i) = value.parse::<i64>() {
        json!(i)
    } else if let Ok(f) = value.parse::<f64>() {
        json!(f)
    } else if value == "true" || value == "false" {
        json!(value == "true")
    } else {
        json!(value)
    };
    Ok((key.to_string(), typed))
}

fn key_values(list: &[String]) -> Result<Map<String, Value>, CliError> {
    list.iter().map(|text| key_value(text)).collect()
}

const QUEUE_COLUMNS: [&str; 7] = ["vhost", "name", "messages", "ready", "unacked", "delayed", "consumers"];

fn queue_row(q: &Value) -> Vec<String> {
    ["vhost", "name", "messages", "messages_ready", "messages_unacknowledged", "messages_delayed", "consumers"]
        .iter()
        .map(|key| cell(&q[*key]))
        .collect()
}

pub async fn queue(command: &QueueCommand) -> Result<String, CliError> {
    let c = client(&command.connection)?;
    let json_out = command.connection.json;
    let none = Duration::ZERO;
    match &command.action {
        QueueAction::Create { name, vhost, args, transient, auto_delete } => {
            let body = json!({ "durable": !transient, "auto_delete": auto_delete, "arguments": key_values(args)? });
            let path = format!("/api/queues/{}/{}", segment(vhost), segment(name));
            let queue = c.call(Method::PUT, &path, Some(&body), none).await?;
            Ok(if json_out { pretty(&queue) } else { format!("queue '{name}' ready in vhost '{vhost}'\n") })
        }
        QueueAction::List { vhost } => {
            let path = match vhost {
                Some(v) => format!("/api/queues/{}", segment(v)),
                None => "/api/queues".to_string(),
            };
            let queues = c.call(Method::GET, &path, None, none).await?;
            if json_out {
                return Ok(pretty(&queues));
            }
            let rows: Vec<Vec<String>> = queues.as_array().into_iter().flatten().map(queue_row).collect();
            Ok(table(&QUEUE_COLUMNS, &rows))
        }
        QueueAction::Show { name, vhost } => {
            let path = format!("/api/queues/{}/{}", segment(vhost), segment(name));
            let q = c.call(Method::GET, &path, None, none).await?;
            if json_out {
                return Ok(pretty(&q));
            }
            let mut text = fields(
                &q,
                &[
                    "vhost",
                    "name",
                    "durable",
                    "auto_delete",
                    "exclusive",
                    "arguments",
                    "settings",
                    "messages",
                    "messages_ready",
                    "messages_unacknowledged",
                    "messages_delayed",
                    "message_bytes",
                    "consumers",
                ],
            );
            let counters: Vec<&str> = weir_http::COUNTERS.iter().map(|(name, _, _)| *name).collect();
            text.push_str(&fields(&q["counters"], &counters));
            Ok(text)
        }
        QueueAction::Set { name, vhost, args, unset, clear } => {
            let path = format!("/api/queues/{}/{}", segment(vhost), segment(name));
            let mut settings = if *clear {
                Map::new()
            } else {
                c.call(Method::GET, &path, None, none).await?["settings"].as_object().cloned().unwrap_or_default()
            };
            for key in unset {
                settings.remove(key);
            }
            settings.extend(key_values(args)?);
            let body = json!({ "settings": settings });
            let queue = c.call(Method::PUT, &format!("{path}/settings"), Some(&body), none).await?;
            if json_out {
                return Ok(pretty(&queue));
            }
            let shown: Vec<String> = settings.iter().map(|(key, value)| format!("{key}={}", cell(value))).collect();
            Ok(match shown.is_empty() {
                true => format!("queue '{name}' has no settings: its declared arguments apply\n"),
                false => format!("queue '{name}' settings: {}\n", shown.join(" ")),
            })
        }
        QueueAction::Purge { name, vhost } => {
            let path = format!("/api/queues/{}/{}/contents", segment(vhost), segment(name));
            let answer = c.call(Method::DELETE, &path, None, none).await?;
            Ok(if json_out {
                pretty(&answer)
            } else {
                format!("purged {} messages from '{name}'\n", answer["messages"])
            })
        }
        QueueAction::Delete { name, vhost, if_empty, if_unused } => {
            let path =
                format!("/api/queues/{}/{}?if_empty={if_empty}&if_unused={if_unused}", segment(vhost), segment(name));
            let answer = c.call(Method::DELETE, &path, None, none).await?;
            Ok(if json_out {
                pretty(&answer)
            } else {
                format!("deleted queue '{name}' with {} messages\n", answer["messages"])
            })
        }
    }
}

pub async fn send(args: &SendArgs) -> Result<String, CliError> {
    let c = client(&args.connection)?;
    let body = match &args.body {
        Some(text) => text.clone().into_bytes(),
        None => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes).map_err(|e| CliError::usage(format!("cannot read stdin: {e}")))?;
            bytes
        }
    };
    let mut headers = key_values(&args.headers)?;
    if let Some(delay) = args.delay {
        headers.insert("x-delay".into(), json!(delay));
    }
    let mut properties = Map::new();
    properties.insert("delivery_mode".into(), json!(if args.transient { 1 } else { 2 }));
    if !headers.is_empty() {
        properties.insert("headers".into(), Value::Object(headers));
    }
    let optional = [
        ("correlation_id", &args.correlation_id),
        ("reply_to", &args.reply_to),
        ("message_id", &args.message_id),
        ("content_type", &args.content_type),
    ];
    for (key, value) in optional {
        if let Some(value) = value {
            properties.insert(key.into(), json!(value));
        }
    }
    if let Some(priority) = args.priority {
        properties.insert("priority".into(), json!(priority));
    }
    if let Some(expiration) = args.expiration {
        properties.insert("expiration".into(), json!(expiration.to_string()));
    }
    let (payload, encoding) = match String::from_utf8(body) {
        Ok(text) => (text, "string"),
        Err(e) => (base64::engine::general_purpose::STANDARD.encode(e.into_bytes()), "base64"),
    };
    let request = json!({ "payload": payload, "payload_encoding": encoding, "properties": properties });
    let path = format!("/api/queues/{}/{}/publish", segment(&args.vhost), segment(&args.queue));
    let answer = c.call(Method::POST, &path, Some(&request), Duration::ZERO).await?;
    Ok(if args.connection.json { pretty(&answer) } else { String::new() })
}

pub async fn recv(args: &RecvArgs) -> Result<String, CliError> {
    if !(0.0..=60.0).contains(&args.wait) {
        return Err(CliError::usage("--wait must be 0 to 60 seconds"));
    }
    let c = client(&args.connection)?;
    let wait = Duration::from_secs_f64(args.wait);
    let mut request = args.filter.fields();
    request.insert("count".into(), json!(args.count));
    request.insert("wait_ms".into(), json!(wait.as_millis() as u64));
    request.insert("ackmode".into(), json!(if args.requeue { "requeue" } else { "remove" }));
    let request = Value::Object(request);
    let path = format!("/api/queues/{}/{}/get", segment(&args.vhost), segment(&args.queue));
    let messages = c.call(Method::POST, &path, Some(&request), wait).await?;
    if args.connection.json {
        return Ok(pretty(&messages));
    }
    let mut out = Vec::new();
    for message in messages.as_array().into_iter().flatten() {
        let payload = message["payload"].as_str().unwrap_or_default();
        if message["payload_encoding"] == "base64" {
            out.extend(base64::engine::general_purpose::STANDARD.decode(payload).unwrap_or_default());
        } else {
            out.extend_from_slice(payload.as_bytes());
        }
        if out.last() != Some(&b'\n') {
            out.push(b'\n');
        }
    }
    // Bodies may be binary: write them as they are.
    let mut stdout = std::io::stdout();
    stdout.write_all(&out).map_err(|e| CliError::usage(format!("cannot write: {e}")))?;
    Ok(String::new())
}

pub async fn status(connection: &Connection) -> Result<String, CliError> {
    let c = client(connection)?;
    let overview = c.call(Method::GET, "/api/overview", None, Duration::ZERO).await?;
    if connection.json {
        return Ok(pretty(&overview));
    }
    let mut text = fields(
        &overview,
        &[
            "version",
            "uptime_ms",
            "vhosts",
            "queues",
            "exchanges",
            "connections",
            "channels",
            "consumers",
            "messages",
            "messages_ready",
            "messages_unacknowledged",
            "messages_delayed",
        ],
    );
    let log = &overview["log"];
    text.push_str(&format!(
        "log  {} segments, {} bytes{}\n",
        log["segments"],
        log["bytes"],
        match log["read_only"].as_str() {
            Some(reason) => format!(", READ-ONLY: {reason}"),
            None => String::new(),
        }
    ));
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_typed() {
        assert_eq!(key_value("x-max-priority=9").unwrap(), ("x-max-priority".into(), json!(9)));
        assert_eq!(key_value("ratio=0.5").unwrap().1, json!(0.5));
        assert_eq!(key_value("flag=true").unwrap().1, json!(true));
        assert_eq!(key_value("x-dead-letter-exchange=dlx").unwrap().1, json!("dlx"));
        assert_eq!(key_value("k=a=b").unwrap().1, json!("a=b"));
        assert!(key_value("novalue").is_err());
    }
}
