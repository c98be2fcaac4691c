//! `weir browse`: look at a queue's messages without taking them, page by page through the
//! HTTP API's browse (`GET /api/queues/{vhost}/{queue}/messages`), and the message filters
//! that `browse` and `recv` share.

use std::time::Duration;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::client::segment;
use super::output::{cell, table};
use super::{client, pretty, CliError, Connection};

/// Which messages (all given must hold); docs/SELECTORS.md.
#[derive(clap::Args, Debug, Default)]
pub struct FilterArgs {
    /// Only messages for which this JMS / SQL-92 condition holds, e.g. "priority > 5 AND region = 'eu'".
    #[arg(long, value_name = "EXPR")]
    pub selector: Option<String>,
    /// Only the message with this message-id.
    #[arg(long)]
    pub message_id: Option<String>,
    /// Only messages with this correlation-id.
    #[arg(long)]
    pub correlation_id: Option<String>,
}

impl FilterArgs {
    /// The filter as fields of an API request (the names the API uses).
    pub fn fields(&self) -> Map<String, Value> {
        [("selector", &self.selector), ("message_id", &self.message_id), ("correlation_id", &self.correlation_id)]
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_string(), json!(value.as_ref()?))))
            .collect()
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum StateArg {
    Ready,
    Delayed,
    Unacked,
    All,
}

#[derive(clap::Args, Debug)]
pub struct BrowseArgs {
    pub queue: String,
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// Which messages: ready (in delivery order), delayed, unacked, or all of them.
    #[arg(long, value_enum, default_value = "ready")]
    pub state: StateArg,
    /// Show at most this many messages.
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub connection: Connection,
}

/// The most a page asks for (the API's limit).
const PAGE_MAX: u64 = 1000;
/// Bodies longer than this are cut in the table (the JSON has them whole).
const BODY_CHARS_SHOWN: usize = 60;

pub async fn browse(args: &BrowseArgs) -> Result<String, CliError> {
    let c = client(&args.connection)?;
    let state = format!("{:?}", args.state).to_lowercase();
    let base = format!("/api/queues/{}/{}/messages", segment(&args.vhost), segment(&args.queue));
    let mut messages: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    while (messages.len() as u64) < args.count {
        let limit = (args.count - messages.len() as u64).min(PAGE_MAX);
        let mut query = vec![format!("state={state}"), format!("limit={limit}")];
        for (name, value) in args.filter.fields() {
            query.push(format!("{name}={}", segment(value.as_str().unwrap_or_default())));
        }
        if let Some(cursor) = &after {
            query.push(format!("after={}", segment(cursor)));
        }
        let page = c.call(Method::GET, &format!("{base}?{}", query.join("&")), None, Duration::ZERO).await?;
        messages.extend(page["messages"].as_array().into_iter().flatten().cloned());
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    if args.connection.json {
        return Ok(pretty(&Value::Array(messages)));
    }
    let rows: Vec<Vec<String>> = messages.iter().map(row).collect();
    Ok(table(&["seq", "state", "priority", "deliveries", "message_id", "correlation_id", "body"], &rows))
}

fn row(message: &Value) -> Vec<String> {
    let properties = &message["properties"];
    let body = if message["payload_encoding"] == "base64" {
        format!("({} bytes, binary)", message["payload_bytes"])
    } else {
        let text = message["payload"].as_str().unwrap_or_default().replace(['\n', '\r', '\t'], " ");
        if text.chars().count() > BODY_CHARS_SHOWN {
            format!("{}…", text.chars().take(BODY_CHARS_SHOWN).collect::<String>())
        } else {
            text
        }
    };
    vec![
        cell(&message["seq"]),
        cell(&message["state"]),
        cell(&message["priority"]),
        cell(&message["delivery_count"]),
        cell(&properties["message_id"]),
        cell(&properties["correlation_id"]),
        body,
    ]
}
