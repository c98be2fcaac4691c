//! The command line (clap derive) and its validation into plans the runners execute.
//!
//! Invariants a plan keeps, whatever the flags said:
//! - **Bounded**: every run has a time limit of at most [`DURATION_MAX`]; a run with neither
//!   `--duration` nor `--count` is refused, and `--count` alone still stops at the limit.
//! - Every count of things (connections, queues, window, prefetch, body size) is checked
//!   against a named limit here, so the runners can assume sane values.
//! - Every queue has at least one consumer when consumers run, or a `--count` run could
//!   never finish.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::body::BODY_TIMESTAMP_SIZE;
use crate::url::{AmqpUrl, UrlError};

/// URL used when `--url` is not given: the local broker's default account and vhost.
pub const URL_DEFAULT: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Hard cap on the length of any run.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Most publisher connections one run opens.
pub const PUBLISHERS_MAX: u32 = 512;
/// Most consumer connections one run opens (each holds a latency histogram of ~190 KB).
pub const CONSUMERS_MAX: u32 = 512;
/// Most queues one run declares.
pub const QUEUES_MAX: u32 = 512;
/// Largest body: Weir's and RabbitMQ's default message-size limit.
pub const BODY_SIZE_MAX: usize = 128 * 1024 * 1024;
/// Largest publisher-confirm window.
pub const CONFIRM_WINDOW_MAX: u32 = 1_000_000;
/// Largest prefetch: `basic.qos` carries a 16-bit count.
pub const PREFETCH_MAX: u32 = u16::MAX as u32;
/// Longest queue name: a short string.
pub const QUEUE_NAME_LENGTH_MAX: usize = 255;
/// Confirm window `fill` and `recovery` publish with.
pub const FILL_CONFIRM_WINDOW: u32 = 1000;
/// How long consumers of a `--consume-only` run wait for a message before they stop.
pub const CONSUME_IDLE_STOP: Duration = Duration::from_secs(2);

/// `weir-bench`: a load generator for AMQP 0-9-1 brokers.
#[derive(Debug, Parser)]
#[command(name = "weir-bench", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish and consume for a time or a message count; report rates and latency.
    Run(RunArgs),
    /// Publish N persistent messages with confirms to one durable queue as fast as possible.
    Fill(FillArgs),
    /// Start a Weir binary, fill it, restart it, and time the restart and measure memory.
    Recovery(RecoveryArgs),
}

/// Flags of `weir-bench run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Broker to connect to (the only address the benchmark connects to).
    #[arg(long, default_value = URL_DEFAULT)]
    pub url: String,
    /// Publisher connections; publisher i publishes to queue i % queues.
    #[arg(long, default_value_t = 1)]
    pub publishers: u32,
    /// Consumer connections; consumer i consumes from queue i % queues.
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Queues, named <queue-prefix>-<k>.
    #[arg(long, default_value_t = 1)]
    pub queues: u32,
    /// Prefix of the queue names.
    #[arg(long, default_value = "weir-bench")]
    pub queue_prefix: String,
    /// Body size in bytes (at least 8: the body starts with the publish timestamp).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Persistent messages (delivery-mode 2) and durable queues.
    #[arg(long)]
    pub persistent: bool,
    /// Publisher confirms with at most WINDOW unconfirmed messages per publisher; 0 = off.
    #[arg(long, value_name = "WINDOW", default_value_t = 0)]
    pub confirm: u32,
    /// Consumers use no_ack (automatic acknowledgement).
    #[arg(long)]
    pub auto_ack: bool,
    /// Prefetch (basic.qos) of each consumer when acking manually.
    #[arg(long, default_value_t = 1000)]
    pub prefetch: u32,
    /// Ack with multiple=true every N deliveries [default: prefetch / 2].
    #[arg(long)]
    pub ack_every: Option<u32>,
    /// Stop after this many seconds (at most 3600).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<u64>,
    /// Total messages to publish (and, with consumers, to consume); stop when done.
    #[arg(long)]
    pub count: Option<u64>,
    /// Messages per second per publisher; 0 = unlimited.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Publish only (no consumers).
    #[arg(long, conflicts_with = "consume_only")]
    pub publish_only: bool,
    /// Consume only: drain the queues until --count, --duration or 2 s without a message.
    #[arg(long)]
    pub consume_only: bool,
    /// Broker process to measure (CPU time and RSS from /proc).
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Purge the queues before starting.
    #[arg(long)]
    pub purge: bool,
}

/// Flags of `weir-bench fill`.
#[derive(Debug, Args)]
pub struct FillArgs {
    /// Broker to connect to.
    #[arg(long, default_value = URL_DEFAULT)]
    pub url: String,
    /// Durable queue to fill (declared if missing).
    #[arg(long)]
    pub queue: String,
    /// Messages to publish.
    #[arg(long)]
    pub count: u64,
    /// Body size in bytes (at least 8).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `weir-bench recovery`.
#[derive(Debug, Args)]
pub struct RecoveryArgs {
    /// The `weir` binary to start.
    #[arg(long, value_name = "PATH")]
    pub weir_bin: PathBuf,
    /// Data directory for the broker; must be missing or empty.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// Messages to fill before the restart.
    #[arg(long)]
    pub count: u64,
    /// Body size in bytes (at least 8).
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Stop the broker with SIGKILL instead of SIGTERM.
    #[arg(long)]
    pub kill9: bool,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// A flag combination or value the benchmark refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Neither `--duration` nor `--count`.
    #[error("refusing an unbounded run: give --duration SECONDS and/or --count N")]
    Unbounded,
    /// A number outside its limits.
    #[error("--{flag} {value} is outside {min}..={max}")]
    OutOfRange {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: u64,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
    },
    /// `--publish-only` with `--consume-only`.
    #[error("--publish-only and --consume-only exclude each other")]
    PublishAndConsumeOnly,
    /// A queue nobody consumes from.
    #[error("{consumers} consumers for {queues} queues: every queue needs a consumer")]
    QueueWithoutConsumer {
        /// Consumers asked for.
        consumers: u32,
        /// Queues asked for.
        queues: u32,
    },
    /// Acking less often than the prefetch allows would deadlock.
    #[error("--ack-every {ack_every} is larger than --prefetch {prefetch}: consumers would stall")]
    AckEveryAbovePrefetch {
        /// The ack interval.
        ack_every: u32,
        /// The prefetch.
        prefetch: u32,
    },
    /// A queue name longer than a short string, or empty.
    #[error("queue name {0:?} must be 1..=255 bytes")]
    QueueName(String),
    /// The URL.
    #[error("--url: {0}")]
    Url(#[from] UrlError),
}

/// How consumers acknowledge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckMode {
    /// `no_ack = true`.
    Auto,
    /// Manual acks with `multiple = true` every `every` deliveries.
    Manual {
        /// `basic.qos` prefetch count.
        prefetch: u16,
        /// Deliveries between acks; `1..=prefetch`.
        every: u32,
    },
}

/// A validated `run` (or `fill`): everything the runner needs, every value within its limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// Where to connect.
    pub url: AmqpUrl,
    /// Publisher connections (0 with `--consume-only`).
    pub publishers: u32,
    /// Consumer connections (0 with `--publish-only`).
    pub consumers: u32,
    /// Queue names; publisher and consumer i use `queue_names[i % len]`.
    pub queue_names: Vec<String>,
    /// Body size in bytes, at least [`BODY_TIMESTAMP_SIZE`].
    pub body_size: usize,
    /// Persistent messages and durable queues.
    pub persistent: bool,
    /// Unconfirmed messages allowed per publisher; 0 = no confirms.
    pub confirm_window: u32,
    /// How consumers ack.
    pub ack: AckMode,
    /// Total messages to publish (split over the publishers) and consume.
    pub count: Option<u64>,
    /// When the run stops at the latest: `--duration` or [`DURATION_MAX`].
    pub time_limit: Duration,
    /// True if `--duration` set `time_limit` (reaching it is then a normal end).
    pub duration_given: bool,
    /// Messages per second per publisher, if limited.
    pub rate_per_publisher: Option<u64>,
    /// Stop consumers after [`CONSUME_IDLE_STOP`] without a delivery.
    pub stop_when_idle: bool,
    /// Purge the queues first.
    pub purge: bool,
    /// Broker process to measure.
    pub broker_pid: Option<u32>,
}

impl RunPlan {
    /// The queue publisher or consumer `index` uses.
    #[must_use]
    pub fn queue_for(&self, index: u32) -> &str {
        &self.queue_names[index as usize % self.queue_names.len()]
    }

    /// Messages publisher `index` publishes when the run has a count: the count split
    /// evenly, the remainder going to the first publishers.
    #[must_use]
    pub fn publisher_count(&self, index: u32) -> Option<u64> {
        let count = self.count?;
        let publishers = u64::from(self.publishers.max(1));
        let share = count / publishers;
        Some(share + u64::from(u64::from(index) < count % publishers))
    }
}

impl RunArgs {
    /// Validates the flags into a plan.
    pub fn plan(&self) -> Result<RunPlan, ConfigError> {
        if self.publish_only && self.consume_only {
            return Err(ConfigError::PublishAndConsumeOnly);
        }
        let (time_limit, duration_given) = bounds(self.duration, self.count)?;
        let url = AmqpUrl::parse(&self.url)?;
        let queues = check_range("queues", self.queues.into(), 1, QUEUES_MAX.into())? as u32;
        let publishers = if self.consume_only {
            0
        } else {
            check_range("publishers", self.publishers.into(), 1, PUBLISHERS_MAX.into())? as u32
        };
        let consumers = if self.publish_only {
            0
        } else {
            check_range("consumers", self.consumers.into(), 1, CONSUMERS_MAX.into())? as u32
        };
        if consumers > 0 && consumers < queues {
            return Err(ConfigError::QueueWithoutConsumer { consumers, queues });
        }
        let body_size = check_body_size(self.size)?;
        check_range("confirm", self.confirm.into(), 0, CONFIRM_WINDOW_MAX.into())?;
        let ack = self.ack_mode()?;
        let queue_names = (0..queues).map(|k| format!("{}-{k}", self.queue_prefix)).collect::<Vec<_>>();
        for name in &queue_names {
            check_queue_name(name)?;
        }
        Ok(RunPlan {
            url,
            publishers,
            consumers,
            queue_names,
            body_size,
            persistent: self.persistent,
            confirm_window: self.confirm,
            ack,
            count: self.count,
            time_limit,
            duration_given,
            rate_per_publisher: (self.rate > 0).then_some(self.rate),
            stop_when_idle: self.consume_only,
            purge: self.purge,
            broker_pid: self.broker_pid,
        })
    }

    fn ack_mode(&self) -> Result<AckMode, ConfigError> {
        if self.auto_ack {
            return Ok(AckMode::Auto);
        }
        let prefetch = check_range("prefetch", self.prefetch.into(), 1, PREFETCH_MAX.into())? as u32;
        let every = self.ack_every.unwrap_or((prefetch / 2).max(1));
        check_range("ack-every", every.into(), 1, PREFETCH_MAX.into())?;
        if every > prefetch {
            return Err(ConfigError::AckEveryAbovePrefetch { ack_every: every, prefetch });
        }
        Ok(AckMode::Manual {
            // Checked against PREFETCH_MAX (u16::MAX) above.
            prefetch: prefetch as u16,
            every,
        })
    }
}

impl FillArgs {
    /// The fill as a run: one persistent publisher with confirms, no consumers.
    pub fn plan(&self) -> Result<RunPlan, ConfigError> {
        fill_plan(AmqpUrl::parse(&self.url)?, &self.queue, self.count, self.size)
    }
}

/// The plan of a fill: `count` persistent messages of `size` bytes to durable `queue`,
/// one publisher, confirm window [`FILL_CONFIRM_WINDOW`], no consumers.
pub fn fill_plan(url: AmqpUrl, queue: &str, count: u64, size: usize) -> Result<RunPlan, ConfigError> {
    let (time_limit, duration_given) = bounds(None, Some(count))?;
    check_queue_name(queue)?;
    Ok(RunPlan {
        url,
        publishers: 1,
        consumers: 0,
        queue_names: vec![queue.to_string()],
        body_size: check_body_size(size)?,
        persistent: true,
        confirm_window: FILL_CONFIRM_WINDOW,
        ack: AckMode::Auto,
        count: Some(count),
        time_limit,
        duration_given,
        rate_per_publisher: None,
        stop_when_idle: false,
        purge: false,
        broker_pid: None,
    })
}

/// The time limit and whether it came from `--duration`; refuses unbounded runs.
fn bounds(duration_s: Option<u64>, count: Option<u64>) -> Result<(Duration, bool), ConfigError> {
    if let Some(count) = count {
        check_range("count", count, 1, u64::MAX)?;
    }
    match (duration_s, count) {
        (None, None) => Err(ConfigError::Unbounded),
        (Some(seconds), _) => {
            check_range("duration", seconds, 1, DURATION_MAX.as_secs())?;
            Ok((Duration::from_secs(seconds), true))
        }
        (None, Some(_)) => Ok((DURATION_MAX, false)),
    }
}

fn check_body_size(size: usize) -> Result<usize, ConfigError> {
    check_range("size", size as u64, BODY_TIMESTAMP_SIZE as u64, BODY_SIZE_MAX as u64)?;
    Ok(size)
}

fn check_queue_name(name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > QUEUE_NAME_LENGTH_MAX {
        return Err(ConfigError::QueueName(name.to_string()));
    }
    Ok(())
}

fn check_range(flag: &'static str, value: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::OutOfRange { flag, value, min, max })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["weir-bench", "run"];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Run(args) => args,
            other => panic!("parsed {other:?}"),
        })
    }

    fn plan(extra: &[&str]) -> Result<RunPlan, ConfigError> {
        run_args(extra).expect("flags parse").plan()
    }

    #[test]
    fn run_without_duration_or_count_is_refused() {
        assert_eq!(plan(&[]), Err(ConfigError::Unbounded));
        assert_eq!(plan(&["--publishers", "4", "--persistent"]), Err(ConfigError::Unbounded));
    }

    #[test]
    fn duration_is_capped_at_one_hour() {
        assert!(plan(&["--duration", "3600"]).is_ok());
        assert!(matches!(plan(&["--duration", "3601"]), Err(ConfigError::OutOfRange { flag: "duration", .. })));
        assert!(matches!(plan(&["--duration", "0"]), Err(ConfigError::OutOfRange { flag: "duration", .. })));
    }

    #[test]
    fn count_alone_is_bounded_by_the_hard_cap() {
        let plan = plan(&["--count", "10"]).unwrap();
        assert_eq!(plan.time_limit, DURATION_MAX);
        assert!(!plan.duration_given);
        let url = AmqpUrl::parse(URL_DEFAULT).unwrap();
        assert!(matches!(fill_plan(url, "q", 0, 16), Err(ConfigError::OutOfRange { flag: "count", .. })));
    }

    #[test]
    fn defaults_match_the_documentation() {
        let plan = plan(&["--duration", "10"]).unwrap();
        assert_eq!((plan.publishers, plan.consumers), (1, 1));
        assert_eq!(plan.queue_names, vec!["weir-bench-0".to_string()]);
        assert_eq!(plan.body_size, 16);
        assert_eq!(plan.ack, AckMode::Manual { prefetch: 1000, every: 500 });
        assert_eq!(plan.confirm_window, 0);
        assert_eq!(plan.url.vhost, "/");
        assert_eq!(plan.time_limit, Duration::from_secs(10));
    }

    #[test]
    fn bodies_must_hold_the_timestamp() {
        assert!(plan(&["--duration", "1", "--size", "8"]).is_ok());
        assert!(matches!(plan(&["--duration", "1", "--size", "7"]), Err(ConfigError::OutOfRange { flag: "size", .. })));
        let too_big = (BODY_SIZE_MAX + 1).to_string();
        assert!(plan(&["--duration", "1", "--size", &too_big]).is_err());
    }

    #[test]
    fn every_queue_needs_a_consumer() {
        assert_eq!(
            plan(&["--duration", "1", "--queues", "4", "--consumers", "2"]),
            Err(ConfigError::QueueWithoutConsumer { consumers: 2, queues: 4 })
        );
        let publish_only = plan(&["--duration", "1", "--queues", "4", "--publish-only"]).unwrap();
        assert_eq!(publish_only.consumers, 0);
    }

    #[test]
    fn ack_interval_must_fit_the_prefetch() {
        assert_eq!(
            plan(&["--duration", "1", "--prefetch", "10", "--ack-every", "11"]),
            Err(ConfigError::AckEveryAbovePrefetch { ack_every: 11, prefetch: 10 })
        );
        assert!(plan(&["--duration", "1", "--prefetch", "65536"]).is_err());
        assert_eq!(
            plan(&["--duration", "1", "--prefetch", "1"]).unwrap().ack,
            AckMode::Manual { prefetch: 1, every: 1 }
        );
        assert_eq!(plan(&["--duration", "1", "--auto-ack"]).unwrap().ack, AckMode::Auto);
    }

    #[test]
    fn publish_only_and_consume_only_exclude_each_other() {
        assert!(run_args(&["--duration", "1", "--publish-only", "--consume-only"]).is_err());
        let consume_only = plan(&["--duration", "1", "--consume-only"]).unwrap();
        assert_eq!((consume_only.publishers, consume_only.consumers), (0, 1));
        assert!(consume_only.stop_when_idle);
    }

    #[test]
    fn count_is_split_over_publishers_with_the_remainder_first() {
        let plan = plan(&["--count", "10", "--publishers", "4", "--consumers", "4"]).unwrap();
        let shares: Vec<u64> = (0..4).map(|i| plan.publisher_count(i).unwrap()).collect();
        assert_eq!(shares, vec![3, 3, 2, 2]);
        assert_eq!(plan.queue_for(5), "weir-bench-0");
    }

    #[test]
    fn long_queue_prefix_is_refused() {
        let prefix = "q".repeat(QUEUE_NAME_LENGTH_MAX);
        assert!(matches!(plan(&["--duration", "1", "--queue-prefix", &prefix]), Err(ConfigError::QueueName(_))));
    }

    #[test]
    fn bad_url_is_a_config_error() {
        assert!(matches!(plan(&["--duration", "1", "--url", "amqps://h"]), Err(ConfigError::Url(_))));
    }

    #[test]
    fn fill_is_persistent_with_confirms_and_bounded() {
        let url = AmqpUrl::parse(URL_DEFAULT).unwrap();
        let plan = fill_plan(url, "backlog", 1000, 1024).unwrap();
        assert!(plan.persistent);
        assert_eq!(plan.confirm_window, FILL_CONFIRM_WINDOW);
        assert_eq!((plan.publishers, plan.consumers), (1, 0));
        assert_eq!(plan.time_limit, DURATION_MAX);
    }
}
