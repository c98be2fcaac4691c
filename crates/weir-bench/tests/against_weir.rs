//! End to end: the real `weir` binary on an ephemeral loopback port, driven by the real
//! `weir-bench` binary.
//!
//! The broker is found at `$WEIR_BIN`, else `$CARGO_TARGET_DIR/debug/weir`, else
//! `<workspace>/target/debug/weir`; `./scripts/test` builds the whole workspace before it
//! runs the tests. A missing broker is a test failure with instructions, not a skip: a
//! benchmark test that silently skips proves nothing.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use weir_bench::broker::BrokerProcess;

/// Longest a benchmark command may take in these tests.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

fn weir_bin() -> PathBuf {
    let path = if let Some(path) = std::env::var_os("WEIR_BIN") {
        PathBuf::from(path)
    } else {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
        target.join("debug").join("weir")
    };
    assert!(
        path.is_file(),
        "the weir broker binary is missing at {}: build it first with `cargo build -p weir` \
         (./scripts/test does), or set WEIR_BIN",
        path.display()
    );
    path
}

/// Runs `weir-bench` with `args`, killing it after [`COMMAND_TIMEOUT`].
fn bench(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weir-bench"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir-bench");
    let started = Instant::now();
    while child.try_wait().expect("poll weir-bench").is_none() {
        if started.elapsed() > COMMAND_TIMEOUT {
            let _ = child.kill();
            let output = child.wait_with_output().expect("collect weir-bench output");
            panic!(
                "weir-bench {args:?} ran over {COMMAND_TIMEOUT:?}; stderr:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect weir-bench output")
}

fn json_report(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "weir-bench failed ({}); stdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|error| panic!("not one JSON object ({error}):\n{stdout}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

#[test]
fn persistent_run_with_confirms_publishes_confirms_and_consumes_every_message() {
    let data = tempfile::tempdir().expect("tempdir");
    let runtime = runtime();
    let (broker, _) =
        runtime.block_on(BrokerProcess::start(&weir_bin(), &data.path().join("data"))).expect("start weir");
    let url = broker.url();
    let output =
        bench(&["run", "--url", &url, "--count", "2000", "--size", "64", "--persistent", "--confirm", "100", "--json"]);
    let report = json_report(&output);
    assert_eq!(report["published"], 2000, "{report}");
    assert_eq!(report["confirmed"], 2000, "{report}");
    assert_eq!(report["consumed"], 2000, "{report}");
    assert_eq!(report["nacked"], 0, "{report}");
    assert_eq!(report["stop_reason"], "count", "{report}");
    assert_eq!(report["latency_ms"]["samples"], 2000, "{report}");
    assert!(report["errors"].as_array().is_some_and(Vec::is_empty), "{report}");

    // The consumer acked everything it counted: nothing is left to redeliver.
    let drain = bench(&["run", "--url", &url, "--consume-only", "--persistent", "--duration", "5", "--json"]);
    let drained = json_report(&drain);
    assert_eq!(drained["consumed"], 0, "{drained}");
    assert_eq!(drained["stop_reason"], "idle", "{drained}");
    runtime.block_on(broker.terminate()).expect("stop weir");
}

#[test]
fn recovery_subcommand_times_a_restart_with_the_queue_intact() {
    let data = tempfile::tempdir().expect("tempdir");
    let data_dir = data.path().join("recovery-data");
    let weir = weir_bin();
    let output = bench(&[
        "recovery",
        "--weir-bin",
        weir.to_str().expect("utf-8 path"),
        "--data-dir",
        data_dir.to_str().expect("utf-8 path"),
        "--count",
        "3000",
        "--size",
        "128",
        "--kill9",
        "--json",
    ]);
    let report = json_report(&output);
    assert_eq!(report["count"], 3000, "{report}");
    assert_eq!(report["stop_signal"], "sigkill", "{report}");
    assert!(report["restart_to_ready_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{report}");
    assert!(report["rss_empty_bytes"].as_u64().is_some_and(|rss| rss > 0), "{report}");
}

#[test]
fn unbounded_run_is_refused_before_connecting() {
    // Port 9 (discard) on loopback: never contacted, because validation comes first.
    let output = bench(&["run", "--url", "amqp://127.0.0.1:9/%2f"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unbounded"));
}
