//! Test harness: runs the real `weir` binary on an ephemeral loopback port.
//!
//! The broker's stderr goes to `weir.log` next to its data directory (appended across
//! restarts), so a failing test can print what the broker said.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub data_dir: PathBuf,
    pub log_path: PathBuf,
    extra_args: Vec<String>,
}

impl Broker {
    /// Start a broker on `data_dir` (created if missing) with extra `weir serve` flags.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Broker {
        let mut broker = Broker {
            child: None,
            port: 0,
            data_dir: data_dir.to_path_buf(),
            log_path: data_dir.with_extension("log"),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        broker.spawn();
        broker
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).expect("open log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("serve")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--amqp-listen")
            .arg("127.0.0.1:0")
            .arg("--http-listen")
            .arg("127.0.0.1:0")
            .args(&self.extra_args)
            .env("WEIR_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn weir");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(address) = line.strip_prefix("amqp listening on ") {
                    let port: u16 = address.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
                    let _ = tx.send(port);
                }
            }
        });
        let started = Instant::now();
        self.port = match rx.recv_timeout(START_TIMEOUT) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("weir did not start within {:?}; log:\n{}", started.elapsed(), self.log_text());
            }
        };
        self.child = Some(child);
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "weir exited with {status}; log:\n{}", self.log_text());
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("weir did not stop on SIGTERM; log:\n{}", self.log_text());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Small segments so tests cross segment boundaries, recycle and compact.
pub const SMALL_LOG: [&str; 4] = ["--segment-size-bytes", "262144", "--checkpoint-interval-bytes", "1048576"];

/// The lapin options of a durable queue.
/// The consumer's next delivery, or a panic after 20 s: no test waits for ever on a broker
/// that stopped delivering.
pub async fn next_delivery(consumer: &mut lapin::Consumer) -> lapin::message::Delivery {
    use futures_lite::StreamExt;
    tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("a delivery within 20 s")
        .expect("the consumer is open")
        .expect("a delivery, not an error")
}

pub fn durable() -> lapin::options::QueueDeclareOptions {
    lapin::options::QueueDeclareOptions { durable: true, ..Default::default() }
}

/// Properties of a persistent message (delivery-mode 2).
pub fn persistent() -> lapin::BasicProperties {
    lapin::BasicProperties::default().with_delivery_mode(2)
}

/// The runtime the lapin tests drive their clients on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A crash test's seed (`WEIR_SEED`, else random) and number of rounds (`WEIR_CRASH_ROUNDS`,
/// else `default_rounds`), printed so that a failure can be replayed.
pub fn crash_schedule(test: &str, default_rounds: u64) -> (u64, u64) {
    let seed: u64 = std::env::var("WEIR_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let rounds: u64 = std::env::var("WEIR_CRASH_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default_rounds);
    eprintln!("{test} seed {seed}, {rounds} rounds (WEIR_SEED={seed} reproduces the schedule)");
    (seed, rounds)
}
