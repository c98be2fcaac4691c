//! Final reports: the numbers of a run, as one JSON object (`--json`) or a small table.
//!
//! Rates divide by the time each side was active: publishers from the start to when they
//! finished their count (confirms included) or were stopped; consumers from the start to the
//! stop (or, when draining with `--consume-only`, to the last delivery, so the 2 s idle wait
//! is not counted). Latencies are milliseconds from the body's timestamp to the delivery.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{AckMode, RunPlan};
use crate::stats::StopReason;

const US_PER_MS: f64 = 1000.0;
const BYTES_PER_MIB: f64 = 1024.0 * 1024.0;

/// Latency percentiles, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Deliveries timed.
    pub samples: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

impl LatencySummary {
    /// Percentiles of a histogram in microseconds, or `None` if it is empty.
    #[must_use]
    pub fn from_histogram_us(histogram: &Histogram<u64>) -> Option<LatencySummary> {
        if histogram.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / US_PER_MS;
        Some(LatencySummary {
            samples: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        })
    }
}

/// What the broker process used during the run (`--broker-pid`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BrokerUsage {
    /// The process measured.
    pub pid: u32,
    /// User + system CPU seconds used during the run.
    pub cpu_seconds: f64,
    /// CPU seconds per second of run (1.0 = one core busy).
    pub cores_busy: f64,
    /// Messages published per broker CPU-second.
    pub published_per_cpu_second: Option<f64>,
    /// Messages consumed per broker CPU-second.
    pub consumed_per_cpu_second: Option<f64>,
    /// RSS when the run started, bytes.
    pub rss_start_bytes: u64,
    /// Largest RSS seen (sampled every second), bytes.
    pub rss_peak_bytes: u64,
    /// RSS when the run ended, bytes.
    pub rss_final_bytes: u64,
}

/// Everything a `run` or `fill` measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// Broker URL, without the password.
    pub url: String,
    /// Publisher connections.
    pub publishers: u32,
    /// Consumer connections.
    pub consumers: u32,
    /// Queue names.
    pub queues: Vec<String>,
    /// Body size.
    pub body_size_bytes: usize,
    /// Persistent messages, durable queues.
    pub persistent: bool,
    /// Confirm window per publisher (0 = no confirms).
    pub confirm_window: u32,
    /// `auto` or `manual`.
    pub ack: &'static str,
    /// Prefetch with manual acks.
    pub prefetch: Option<u16>,
    /// Ack interval with manual acks.
    pub ack_every: Option<u32>,
    /// Rate limit per publisher.
    pub rate_per_publisher: Option<u64>,
    /// Why the run stopped.
    pub stop_reason: StopReason,
    /// Seconds from start until every connection was closed.
    pub elapsed_s: f64,
    /// Messages written to the broker.
    pub published: u64,
    /// Messages the broker confirmed.
    pub confirmed: u64,
    /// Messages the broker nacked.
    pub nacked: u64,
    /// Deliveries received and counted.
    pub consumed: u64,
    /// Published messages per second of publishing.
    pub publish_rate_per_s: f64,
    /// Consumed messages per second of consuming.
    pub consume_rate_per_s: f64,
    /// Publish-to-delivery latency.
    pub latency_ms: Option<LatencySummary>,
    /// Broker CPU and memory, with `--broker-pid`.
    pub broker: Option<BrokerUsage>,
    /// CPU seconds this benchmark process used over the whole command (setup included), to
    /// show it was not the bottleneck.
    pub client_cpu_seconds: Option<f64>,
    /// Connection failures and other problems; empty on success.
    pub errors: Vec<String>,
}

impl RunReport {
    /// A report with the settings of `plan` and zero counts.
    #[must_use]
    pub fn for_plan(plan: &RunPlan, stop_reason: StopReason) -> RunReport {
        let (ack, prefetch, ack_every) = match plan.ack {
            AckMode::Auto => ("auto", None, None),
            AckMode::Manual { prefetch, every } => ("manual", Some(prefetch), Some(every)),
        };
        RunReport {
            url: plan.url.redacted(),
            publishers: plan.publishers,
            consumers: plan.consumers,
            queues: plan.queue_names.clone(),
            body_size_bytes: plan.body_size,
            persistent: plan.persistent,
            confirm_window: plan.confirm_window,
            ack: if plan.consumers == 0 { "none" } else { ack },
            prefetch: prefetch.filter(|_| plan.consumers > 0),
            ack_every: ack_every.filter(|_| plan.consumers > 0),
            rate_per_publisher: plan.rate_per_publisher,
            stop_reason,
            elapsed_s: 0.0,
            published: 0,
            confirmed: 0,
            nacked: 0,
            consumed: 0,
            publish_rate_per_s: 0.0,
            consume_rate_per_s: 0.0,
            latency_ms: None,
            broker: None,
            client_cpu_seconds: None,
            errors: Vec::new(),
        }
    }

    /// True if the run did what was asked and nothing failed.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.errors.is_empty() && self.stop_reason.is_success()
    }

    /// The human-readable table.
    #[must_use]
    pub fn render_table(&self) -> String {
        let mut text = String::new();
        let durability = if self.persistent { "persistent" } else { "transient" };
        let confirms = match self.confirm_window {
            0 => "no confirms".to_string(),
            window => format!("confirm window {window}"),
        };
        let acks = match (self.ack, self.prefetch, self.ack_every) {
            ("manual", Some(prefetch), Some(every)) => format!(", manual ack every {every}, prefetch {prefetch}"),
            ("none", _, _) => String::new(),
            (ack, _, _) => format!(", {ack} ack"),
        };
        let _ = writeln!(
            text,
            "weir-bench {}: {} publishers, {} consumers, {} queues, {} B {durability}, {confirms}{acks}",
            self.url,
            self.publishers,
            self.consumers,
            self.queues.len(),
            self.body_size_bytes
        );
        let _ = writeln!(text, "stopped by    {} after {:.2} s", self.stop_reason.name(), self.elapsed_s);
        if self.publishers > 0 {
            let _ = writeln!(text, "published     {:>12}  {:>12.0} msg/s", self.published, self.publish_rate_per_s);
        }
        if self.publishers > 0 && self.confirm_window > 0 {
            let _ = writeln!(text, "confirmed     {:>12}  (nacked {})", self.confirmed, self.nacked);
        }
        if self.consumers > 0 {
            let _ = writeln!(text, "consumed      {:>12}  {:>12.0} msg/s", self.consumed, self.consume_rate_per_s);
        }
        if let Some(latency) = &self.latency_ms {
            let _ = writeln!(
                text,
                "latency ms    p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  ({} samples)",
                latency.p50, latency.p90, latency.p99, latency.p99_9, latency.max, latency.samples
            );
        }
        if let Some(broker) = &self.broker {
            render_broker(&mut text, broker);
        }
        if let Some(cpu_seconds) = self.client_cpu_seconds {
            let _ = writeln!(text, "weir-bench    cpu {cpu_seconds:.2} s (this process)");
        }
        for error in &self.errors {
            let _ = writeln!(text, "error         {error}");
        }
        text
    }
}

fn render_broker(text: &mut String, broker: &BrokerUsage) {
    let per_cpu = |rate: Option<f64>| rate.map_or_else(|| "-".to_string(), |rate| format!("{rate:.0}"));
    let _ = writeln!(
        text,
        "broker pid {}  cpu {:.2} s ({:.2} cores)  msg per cpu-s: in {} out {}",
        broker.pid,
        broker.cpu_seconds,
        broker.cores_busy,
        per_cpu(broker.published_per_cpu_second),
        per_cpu(broker.consumed_per_cpu_second)
    );
    let _ = writeln!(
        text,
        "broker rss    start {:.1} MiB  peak {:.1} MiB  final {:.1} MiB",
        broker.rss_start_bytes as f64 / BYTES_PER_MIB,
        broker.rss_peak_bytes as f64 / BYTES_PER_MIB,
        broker.rss_final_bytes as f64 / BYTES_PER_MIB
    );
}

/// `count / seconds`, 0 when no time passed.
#[must_use]
pub fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{fill_plan, URL_DEFAULT};
    use crate::stats::latency_histogram;
    use crate::url::AmqpUrl;

    #[test]
    fn percentiles_are_reported_in_milliseconds() {
        let mut histogram = latency_histogram();
        for us in 1..=1000 {
            histogram.record(us).unwrap();
        }
        let summary = LatencySummary::from_histogram_us(&histogram).unwrap();
        assert_eq!(summary.samples, 1000);
        assert!((summary.p50 - 0.5).abs() < 0.01, "{summary:?}");
        assert!((summary.max - 1.0).abs() < 0.01, "{summary:?}");
        assert_eq!(LatencySummary::from_histogram_us(&latency_histogram()), None);
    }

    #[test]
    fn report_serialises_to_json_and_renders() {
        let plan = fill_plan(AmqpUrl::parse(URL_DEFAULT).unwrap(), "q", 10, 16).unwrap();
        let mut report = RunReport::for_plan(&plan, StopReason::Count);
        report.published = 10;
        report.confirmed = 10;
        let json: serde_json::Value = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(json["published"], 10);
        assert_eq!(json["stop_reason"], "count");
        assert!(!json["url"].as_str().unwrap().contains(":guest@"));
        assert!(report.render_table().contains("confirmed"));
        assert!(report.is_success());
        report.errors.push("boom".into());
        assert!(!report.is_success());
    }

    #[test]
    fn rate_of_no_time_is_zero() {
        assert_eq!(rate(10, 0.0), 0.0);
        assert_eq!(rate(10, 2.0), 5.0);
    }
}
