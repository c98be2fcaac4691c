//! `GET /metrics`: Prometheus text format (version 0.0.4).
//!
//! Per queue: messages and bytes by state (gauges), consumers, and the cumulative counters
//! (published, delivered, redelivered, acked, expired, dead-lettered, dropped) from which
//! Prometheus derives rates. Broker-wide: connections, channels, log size, read-only state,
//! and the log commit latency histogram (write + one fdatasync per batch).
//!
//! Like RabbitMQ's Prometheus endpoint, it needs no login: scrapers are configured without
//! credentials, and it shows counts and names, never message content.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use weir_engine::{Inspect, InspectReply, QueueView, COMMIT_BUCKETS_MICROS};

use crate::error::ApiError;
use crate::session::inspect;
use crate::topology::COUNTERS;
use crate::AppState;

pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let InspectReply::Queues(queues) = inspect(&state.engine, Inspect::Queues { vhost: None }).await? else {
        return Err(ApiError::internal("wrong inspect reply".into()));
    };
    let InspectReply::Overview(overview) = inspect(&state.engine, Inspect::Overview).await? else {
        return Err(ApiError::internal("wrong inspect reply".into()));
    };
    let mut out = String::with_capacity(1024 + queues.len() * 1024);
    queue_metrics(&mut out, &queues);
    family(&mut out, "weir_connections", "gauge", "Open client connections.");
    let _ = writeln!(out, "weir_connections {}", overview.connections);
    family(&mut out, "weir_channels", "gauge", "Open channels on client connections.");
    let _ = writeln!(out, "weir_channels {}", overview.channels);
    family(&mut out, "weir_log_bytes", "gauge", "Size of the log's segment files.");
    let _ = writeln!(out, "weir_log_bytes {}", overview.log_bytes);
    family(&mut out, "weir_log_segments", "gauge", "Log segment files.");
    let _ = writeln!(out, "weir_log_segments {}", overview.log_segments);
    family(
        &mut out,
        "weir_read_only",
        "gauge",
        "1 while new persistent messages are refused (failed fsync, corruption).",
    );
    let _ = writeln!(out, "weir_read_only {}", u8::from(overview.read_only.is_some()));
    let histogram = state.engine.stats().commit_histogram();
    family(&mut out, "weir_log_commit_seconds", "histogram", "Time of each log commit: write and one fdatasync.");
    for (bound, count) in COMMIT_BUCKETS_MICROS.iter().zip(&histogram.cumulative) {
        let _ = writeln!(out, "weir_log_commit_seconds_bucket{{le=\"{}\"}} {count}", *bound as f64 / 1e6);
    }
    let _ = writeln!(out, "weir_log_commit_seconds_bucket{{le=\"+Inf\"}} {}", histogram.count);
    let _ = writeln!(out, "weir_log_commit_seconds_sum {}", histogram.sum_micros as f64 / 1e6);
    let _ = writeln!(out, "weir_log_commit_seconds_count {}", histogram.count);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn queue_metrics(out: &mut String, queues: &[QueueView]) {
    let labels: Vec<String> =
        queues.iter().map(|q| format!("vhost=\"{}\",queue=\"{}\"", escape(&q.vhost), escape(&q.name))).collect();
    family(out, "weir_queue_messages", "gauge", "Messages in a queue, by state.");
    for (q, l) in queues.iter().zip(&labels) {
        for (state, n) in [("ready", q.ready), ("unacked", q.unacked), ("delayed", q.delayed)] {
            let _ = writeln!(out, "weir_queue_messages{{{l},state=\"{state}\"}} {n}");
        }
    }
    family(out, "weir_queue_bytes", "gauge", "Bytes of message bodies in a queue, by state.");
    for (q, l) in queues.iter().zip(&labels) {
        for (state, n) in [("ready", q.ready_bytes), ("unacked", q.unacked_bytes), ("delayed", q.delayed_bytes)] {
            let _ = writeln!(out, "weir_queue_bytes{{{l},state=\"{state}\"}} {n}");
        }
    }
    family(out, "weir_queue_consumers", "gauge", "Consumers of a queue.");
    for (q, l) in queues.iter().zip(&labels) {
        let _ = writeln!(out, "weir_queue_consumers{{{l}}} {}", q.consumers);
    }
    for (name, help, field) in COUNTERS {
        let metric = format!("weir_queue_{name}_total");
        family(out, &metric, "counter", help);
        for (q, l) in queues.iter().zip(&labels) {
            let _ = writeln!(out, "{metric}{{{l}}} {}", field(&q.counters));
        }
    }
}

/// A label value with `\`, `"` and newlines escaped, as the text format requires.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("x\ny"), "x\\ny");
    }
}
