//! `weir move`: move ready messages to another queue, or redrive dead letters to the queues
//! they came from, through the HTTP API's move, in batches, with a progress bar on a
//! terminal.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use hyper::Method;
use serde_json::{json, Value};

use super::browse::FilterArgs;
use super::client::segment;
use super::{client, pretty, CliError, Connection};

#[derive(clap::Args, Debug)]
pub struct MoveArgs {
    /// The queue to take messages from.
    pub source: String,
    /// The queue to move them to. Without it, each message goes back to the queue it was
    /// dead-lettered from (its x-first-death-queue header): a redrive.
    pub target: Option<String>,
    #[arg(long, default_value = "/")]
    pub vhost: String,
    /// Move at most this many messages (default: every ready one).
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub connection: Connection,
}

/// Messages per request: small enough for a lively progress bar.
const BATCH: u64 = 1000;

pub async fn move_messages(args: &MoveArgs) -> Result<String, CliError> {
    let c = client(&args.connection)?;
    let source = format!("/api/queues/{}/{}", segment(&args.vhost), segment(&args.source));
    let ready = c.call(Method::GET, &source, None, Duration::ZERO).await?["messages_ready"].as_u64().unwrap_or(0);
    let wanted = args.count.unwrap_or(u64::MAX);
    let total = wanted.min(ready);
    let progress = std::io::stderr().is_terminal() && !args.connection.json && total > BATCH;
    let (mut moved, mut skipped) = (0u64, 0u64);
    let mut outcome = json!({});
    while moved < wanted {
        let mut request = args.filter.fields();
        request.insert("count".into(), json!((wanted - moved).min(BATCH)));
        if let Some(target) = &args.target {
            request.insert("target".into(), json!(target));
        }
        outcome =
            c.call(Method::POST, &format!("{source}/move"), Some(&Value::Object(request)), Duration::ZERO).await?;
        let batch = outcome["moved"].as_u64().unwrap_or(0);
        moved += batch;
        skipped += outcome["skipped"].as_u64().unwrap_or(0);
        if progress {
            draw(moved, total);
        }
        // Done: nothing left to look at, the target is full, or a batch moved nothing (what
        // is left is skipped or filtered out).
        if outcome["done"] == true || outcome["target_full"] == true || batch == 0 {
            break;
        }
    }
    if progress {
        eprintln!();
    }
    let target_full = outcome["target_full"] == true;
    if args.connection.json {
        return Ok(pretty(&json!({ "moved": moved, "skipped": skipped, "target_full": target_full })));
    }
    let to = match &args.target {
        Some(target) => format!("to '{target}'"),
        None => "back to their source queues".to_string(),
    };
    let mut text = format!("moved {moved} messages from '{}' {to}", args.source);
    if skipped > 0 {
        text.push_str(&format!("; {skipped} left in place (no source queue to go back to)"));
    }
    if target_full {
        text.push_str("; stopped: the target queue is full");
    }
    text.push('\n');
    Ok(text)
}

/// `[#####     ] 5000/10000` on one line, redrawn in place.
fn draw(done: u64, total: u64) {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH).checked_div(total).unwrap_or(WIDTH);
    let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { ' ' }).collect();
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "\r[{bar}] {done}/{total}");
    let _ = stderr.flush();
}
