//! `run` and `fill`: set up queues and connections, start the clock, let the publishers and
//! consumers go, and turn what they did into a [`RunReport`].
//!
//! Setup happens before the clock starts: one connection declares (and optionally purges)
//! the queues, then every consumer connects and registers, then every publisher connects.
//! A failure during setup is an error; a failure during the run stops the run and is
//! listed in the report, which is still printed (the exit code says it failed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use weir_amqp_codec::amq_protocol::protocol::{queue, AMQPClass};

use crate::client::{unexpected, Client, ClientError};
use crate::config::RunPlan;
use crate::error::BenchError;
use crate::monitor::{self, BrokerWatch, TaskOutcome};
use crate::publisher::{self, PublisherPlan};
use crate::report::{rate, LatencySummary, RunReport};
use crate::stats::{latency_histogram, Shared, StopReason};
use crate::url::AmqpUrl;
use crate::wire::{self, PublishTemplate};
use crate::{consumer, procfs};

/// Runs `plan` and reports. `Err` only if setup failed.
pub async fn execute(plan: &RunPlan) -> Result<RunReport, BenchError> {
    let mut setup = declare_queues(&plan.url, &plan.queue_names, plan.persistent, plan.purge).await?;
    setup.close().await?;
    let mut consumers = Vec::new();
    for index in 0..plan.consumers {
        consumers.push(consumer::connect(&plan.url, index, plan.queue_for(index), plan.ack).await?);
    }
    let mut publishers = Vec::new();
    for index in 0..plan.publishers {
        publishers.push(publisher::connect(&plan.url, index, plan.confirm_window).await?);
    }
    let mut broker = plan.broker_pid.map(BrokerWatch::start).transpose()?;

    let consume_target = if plan.consumers > 0 { plan.count } else { None };
    let shared = Arc::new(Shared::new(consume_target));
    let mut tasks = JoinSet::new();
    for (index, client) in (0..).zip(consumers) {
        let shared = Arc::clone(&shared);
        let ack = plan.ack;
        tasks.spawn(async move { TaskOutcome::Consumer(index, consumer::run(client, ack, &shared).await) });
    }
    for (index, client) in (0..).zip(publishers) {
        let shared = Arc::clone(&shared);
        let publisher_plan = PublisherPlan {
            template: PublishTemplate::new(plan.queue_for(index), plan.body_size, plan.persistent, client.frame_max()),
            confirm_window: plan.confirm_window,
            count: plan.publisher_count(index),
            rate: plan.rate_per_publisher,
        };
        tasks
            .spawn(async move { TaskOutcome::Publisher(index, publisher::run(client, publisher_plan, &shared).await) });
    }
    let (outcomes, errors) = monitor::supervise(&shared, &mut tasks, plan, broker.as_mut()).await;
    let elapsed = shared.start.elapsed();
    let mut report = summarise(plan, &shared, outcomes, errors, elapsed);
    report.client_cpu_seconds =
        procfs::sample(std::process::id()).ok().map(|own| procfs::ticks_to_duration(own.cpu_ticks).as_secs_f64());
    if let Some(broker) = broker {
        match broker.finish(report.published, report.consumed, elapsed) {
            Ok(usage) => report.broker = Some(usage),
            Err(error) => report.errors.push(format!("broker process: {error}")),
        }
    }
    Ok(report)
}

/// Opens a connection and declares `names` (durable or transient), purging them if asked.
/// Returns the connection, still open.
pub async fn declare_queues(
    url: &AmqpUrl,
    names: &[String],
    durable: bool,
    purge: bool,
) -> Result<Client, ClientError> {
    let mut client = Client::connect(url, "weir-bench setup").await?;
    for name in names {
        match client.call(wire::queue_declare(name, durable, false), "queue.declare-ok").await? {
            AMQPClass::Queue(queue::AMQPMethod::DeclareOk(_)) => {}
            other => return Err(unexpected("queue.declare-ok", &other)),
        }
        if purge {
            match client.call(wire::queue_purge(name), "queue.purge-ok").await? {
                AMQPClass::Queue(queue::AMQPMethod::PurgeOk(_)) => {}
                other => return Err(unexpected("queue.purge-ok", &other)),
            }
        }
    }
    Ok(client)
}

/// Messages in `name` according to `queue.declare(passive)`.
pub async fn message_count(client: &mut Client, name: &str) -> Result<u64, ClientError> {
    match client.call(wire::queue_declare(name, false, true), "queue.declare-ok").await? {
        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)) => Ok(u64::from(ok.message_count)),
        other => Err(unexpected("queue.declare-ok", &other)),
    }
}

fn summarise(
    plan: &RunPlan,
    shared: &Shared,
    outcomes: Vec<TaskOutcome>,
    mut errors: Vec<String>,
    elapsed: Duration,
) -> RunReport {
    let stop_reason = shared.stop_reason().unwrap_or(StopReason::Count);
    let stopped_at = shared.stopped_at().unwrap_or(elapsed);
    let mut latencies = latency_histogram();
    let mut publish_active = Duration::ZERO;
    for outcome in outcomes {
        match outcome {
            TaskOutcome::Publisher(_, Ok(publisher)) => publish_active = publish_active.max(publisher.active),
            TaskOutcome::Consumer(index, consumer) => {
                // Same bounds on both sides: adding cannot fail.
                if let Err(error) = latencies.add(&consumer.latencies_us) {
                    errors.push(format!("merging latencies: {error}"));
                }
                if let Some(error) = consumer.error {
                    errors.push(format!("consumer {index}: {error}"));
                }
            }
            TaskOutcome::Publisher(index, Err(error)) => errors.push(format!("publisher {index}: {error}")),
        }
    }
    if publish_active.is_zero() {
        publish_active = stopped_at;
    }
    let consume_active = if stop_reason == StopReason::Idle {
        Duration::from_micros(shared.last_delivery_us.load(Ordering::Acquire))
    } else {
        stopped_at
    };
    let mut report = RunReport::for_plan(plan, stop_reason);
    report.elapsed_s = elapsed.as_secs_f64();
    report.published = shared.published.load(Ordering::Acquire);
    report.confirmed = shared.confirmed.load(Ordering::Acquire);
    report.nacked = shared.nacked.load(Ordering::Acquire);
    report.consumed = shared.consumed.load(Ordering::Acquire);
    report.publish_rate_per_s = rate(report.published, publish_active.as_secs_f64());
    report.consume_rate_per_s = rate(report.consumed, consume_active.as_secs_f64());
    report.latency_ms = LatencySummary::from_histogram_us(&latencies);
    if stop_reason == StopReason::Stalled {
        errors.push(format!("no progress for {:?}", monitor::STALL_TIMEOUT));
    }
    if report.nacked > 0 {
        errors.push(format!("the broker nacked {} messages", report.nacked));
    }
    if plan.confirm_window > 0 && report.confirmed + report.nacked < report.published {
        errors.push(format!(
            "{} published messages were never confirmed",
            report.published - report.confirmed - report.nacked
        ));
    }
    report.errors = errors;
    report
}
