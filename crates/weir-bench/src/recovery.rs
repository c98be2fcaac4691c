//! `recovery`: how long a Weir broker takes to come back with N messages queued, and how
//! much memory those messages cost.
//!
//! Steps: start the broker on a fresh data directory, declare the durable queue and read
//! the RSS of the empty broker; fill N persistent messages with confirms; stop it (SIGTERM
//! and wait, or SIGKILL); start it again, timing from spawn until the `amqp listening on`
//! line *and* a `queue.declare(passive)` that reports all N messages; read the RSS again.
//! Bytes per message is `(RSS with N - RSS empty) / N`. The broker is stopped at the end and
//! killed on any error path (see `broker.rs`).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::broker::{prepare_data_dir, BrokerProcess};
use crate::client::Client;
use crate::config::{fill_plan, RecoveryArgs};
use crate::error::BenchError;
use crate::procfs;
use crate::run::{declare_queues, execute, message_count};
use crate::url::AmqpUrl;

/// The queue `recovery` fills.
pub const RECOVERY_QUEUE: &str = "weir-bench-recovery";
/// Longest wait after the listening line for the queue to report every message.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between two passive declares while waiting for the queue.
const READY_POLL_INTERVAL: Duration = Duration::from_millis(5);
const MS_PER_S: f64 = 1000.0;
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

/// What `recovery` measured.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryReport {
    /// Messages filled.
    pub count: u64,
    /// Body size.
    pub body_size_bytes: usize,
    /// `sigterm` or `sigkill`.
    pub stop_signal: &'static str,
    /// Fill rate, messages per second.
    pub fill_rate_per_s: f64,
    /// Time from SIGTERM to exit (clean stops only).
    pub stop_ms: Option<f64>,
    /// Time from spawn to the `amqp listening on` line at the restart.
    pub listening_ms: f64,
    /// Time from spawn until the queue reported all N messages.
    pub restart_to_ready_ms: f64,
    /// RSS of the freshly started, empty broker.
    pub rss_empty_bytes: u64,
    /// RSS right after the fill, before the stop.
    pub rss_after_fill_bytes: u64,
    /// RSS after the restart with N messages queued.
    pub rss_with_messages_bytes: u64,
    /// `(rss_with_messages - rss_empty) / count`.
    pub bytes_per_message: f64,
}

impl RecoveryReport {
    /// The human-readable table.
    #[must_use]
    pub fn render_table(&self) -> String {
        let mib = |bytes: u64| bytes as f64 / BYTES_PER_MIB;
        let mut text = String::new();
        let _ = writeln!(
            text,
            "weir-bench recovery: {} messages of {} B, stopped with {}",
            self.count, self.body_size_bytes, self.stop_signal
        );
        let _ = writeln!(text, "fill                 {:>10.0} msg/s", self.fill_rate_per_s);
        if let Some(stop_ms) = self.stop_ms {
            let _ = writeln!(text, "clean stop           {stop_ms:>10.1} ms");
        }
        let _ = writeln!(text, "restart to listening {:>10.1} ms", self.listening_ms);
        let _ = writeln!(text, "restart to ready     {:>10.1} ms", self.restart_to_ready_ms);
        let _ = writeln!(text, "rss empty            {:>10.1} MiB", mib(self.rss_empty_bytes));
        let _ = writeln!(text, "rss after fill       {:>10.1} MiB", mib(self.rss_after_fill_bytes));
        let _ = writeln!(text, "rss with N queued    {:>10.1} MiB", mib(self.rss_with_messages_bytes));
        let _ = writeln!(text, "bytes per message    {:>10.1}", self.bytes_per_message);
        text
    }
}

/// Runs the whole measurement.
pub async fn measure(args: &RecoveryArgs) -> Result<RecoveryReport, BenchError> {
    prepare_data_dir(&args.data_dir)?;
    let (broker, _) = BrokerProcess::start(&args.weir_bin, &args.data_dir).await?;
    let url = AmqpUrl::parse(&broker.url()).map_err(crate::config::ConfigError::from)?;
    let mut setup = declare_queues(&url, &[RECOVERY_QUEUE.to_string()], true, false).await?;
    setup.close().await?;
    let rss_empty_bytes = procfs::rss_bytes(broker.pid)?;

    let fill = execute(&fill_plan(url, RECOVERY_QUEUE, args.count, args.size)?).await?;
    if !fill.is_success() || fill.confirmed != args.count {
        return Err(BenchError::Fill(format!(
            "{} of {} confirmed; {}",
            fill.confirmed,
            args.count,
            fill.errors.join("; ")
        )));
    }
    let rss_after_fill_bytes = procfs::rss_bytes(broker.pid)?;
    let stop_ms = if args.kill9 {
        broker.kill9().await?;
        None
    } else {
        let (took, _status) = broker.terminate().await?;
        Some(took.as_secs_f64() * MS_PER_S)
    };

    let spawned = Instant::now();
    let (broker, listening_after) = BrokerProcess::start(&args.weir_bin, &args.data_dir).await?;
    let url = AmqpUrl::parse(&broker.url()).map_err(crate::config::ConfigError::from)?;
    wait_for_messages(&url, args.count).await?;
    let ready_after = spawned.elapsed();
    let rss_with_messages_bytes = procfs::rss_bytes(broker.pid)?;
    broker.terminate().await?;

    Ok(RecoveryReport {
        count: args.count,
        body_size_bytes: args.size,
        stop_signal: if args.kill9 { "sigkill" } else { "sigterm" },
        fill_rate_per_s: fill.publish_rate_per_s,
        stop_ms,
        listening_ms: listening_after.as_secs_f64() * MS_PER_S,
        restart_to_ready_ms: ready_after.as_secs_f64() * MS_PER_S,
        rss_empty_bytes,
        rss_after_fill_bytes,
        rss_with_messages_bytes,
        bytes_per_message: (rss_with_messages_bytes as f64 - rss_empty_bytes as f64) / args.count as f64,
    })
}

/// Connects and polls `queue.declare(passive)` until the queue holds `expected` messages.
async fn wait_for_messages(url: &AmqpUrl, expected: u64) -> Result<(), BenchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut client = Client::connect(url, "weir-bench recovery").await?;
    loop {
        let found = message_count(&mut client, RECOVERY_QUEUE).await?;
        if found == expected {
            client.close().await?;
            return Ok(());
        }
        if Instant::now() + READY_POLL_INTERVAL > deadline {
            return Err(BenchError::MessagesMissing { queue: RECOVERY_QUEUE.to_string(), found, expected });
        }
        tokio::time::sleep(READY_POLL_INTERVAL).await;
    }
}
