//! A `weir serve` child process for `recovery`: start it on an ephemeral loopback port,
//! learn the port from its stdout, stop it with SIGTERM or SIGKILL.
//!
//! The line `amqp listening on ADDR:PORT` on the broker's stdout is its documented
//! contract (crates/weir/src/serve.rs). The broker's stderr is appended to a log file beside
//! the data directory so a failed measurement can be explained. Invariants: the child is
//! killed when a [`BrokerProcess`] is dropped (`kill_on_drop`), so an error path never
//! leaves a broker running; every wait on the child is bounded.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// Longest wait for the `amqp listening on` line (recovery of a large log takes a while).
pub const LISTEN_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for the broker to exit after SIGTERM or SIGKILL.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(300);
/// The stdout line that announces the AMQP port.
pub const LISTENING_PREFIX: &str = "amqp listening on ";

/// The broker process did not do what was expected.
#[derive(Debug, thiserror::Error)]
pub enum BrokerProcessError {
    /// The binary could not be started.
    #[error("cannot start {bin}: {source}")]
    Spawn {
        /// The binary.
        bin: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The broker exited or closed stdout before announcing its port.
    #[error("broker exited before listening (see {log})")]
    NotListening {
        /// The broker's log.
        log: PathBuf,
    },
    /// The broker printed a listening line without a port.
    #[error("cannot read the port from {0:?}")]
    BadListenLine(String),
    /// A wait ran out.
    #[error("timed out after {timeout:?} waiting for the broker to {waiting_for} (see {log})")]
    Timeout {
        /// What was awaited.
        waiting_for: &'static str,
        /// How long.
        timeout: Duration,
        /// The broker's log.
        log: PathBuf,
    },
    /// Starting, signalling or waiting for the process failed.
    #[error("broker process: {0}")]
    Io(#[from] std::io::Error),
    /// The data directory is not empty (the measurement needs a fresh one).
    #[error("data directory {0} exists and is not empty; give a new one")]
    DataDirNotEmpty(PathBuf),
}

/// A running `weir serve`.
#[derive(Debug)]
pub struct BrokerProcess {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl BrokerProcess {
    /// Starts `bin serve --data-dir DIR --amqp-listen 127.0.0.1:0 --http-listen 127.0.0.1:0` and waits for its AMQP port.
    /// Returns the process and the time from spawn to the listening line.
    pub async fn start(bin: &Path, data_dir: &Path) -> Result<(BrokerProcess, Duration), BrokerProcessError> {
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let started = Instant::now();
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--amqp-listen")
            .arg("127.0.0.1:0")
            .arg("--http-listen")
            .arg("127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| BrokerProcessError::Spawn { bin: bin.to_path_buf(), source })?;
        let pid = child.id().ok_or(BrokerProcessError::NotListening { log: log.clone() })?;
        let stdout = child.stdout.take().ok_or(BrokerProcessError::NotListening { log: log.clone() })?;
        let port = match tokio::time::timeout(LISTEN_TIMEOUT, read_port(stdout, &log)).await {
            Ok(port) => port?,
            Err(_) => return Err(BrokerProcessError::Timeout { waiting_for: "listen", timeout: LISTEN_TIMEOUT, log }),
        };
        let listening_after = started.elapsed();
        Ok((BrokerProcess { child, pid, port, log }, listening_after))
    }

    /// The broker's URL with the default account and vhost.
    #[must_use]
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Sends SIGTERM and waits for the exit; returns how long the clean stop took.
    pub async fn terminate(mut self) -> Result<(Duration, ExitStatus), BrokerProcessError> {
        let started = Instant::now();
        // SAFETY: kill(2) with a pid we spawned and have not reaped (we hold the Child).
        if unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let status = self.wait("exit after SIGTERM").await?;
        Ok((started.elapsed(), status))
    }

    /// Sends SIGKILL and reaps the process.
    pub async fn kill9(mut self) -> Result<(), BrokerProcessError> {
        self.child.start_kill()?;
        self.wait("exit after SIGKILL").await?;
        Ok(())
    }

    async fn wait(&mut self, waiting_for: &'static str) -> Result<ExitStatus, BrokerProcessError> {
        match tokio::time::timeout(EXIT_TIMEOUT, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => Err(BrokerProcessError::Timeout { waiting_for, timeout: EXIT_TIMEOUT, log: self.log.clone() }),
        }
    }
}

/// Reads stdout until the listening line; the rest of stdout is drained by a task so the
/// broker never blocks on a full pipe (the task ends when the broker closes stdout).
async fn read_port(stdout: ChildStdout, log: &Path) -> Result<u16, BrokerProcessError> {
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(port) = parse_listening_line(&line) {
            let port = port?;
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok(port);
        }
    }
    Err(BrokerProcessError::NotListening { log: log.to_path_buf() })
}

/// The port of an `amqp listening on ADDR:PORT` line; `None` for other lines.
#[must_use]
pub fn parse_listening_line(line: &str) -> Option<Result<u16, BrokerProcessError>> {
    let address = line.trim().strip_prefix(LISTENING_PREFIX)?;
    let port = address.rsplit(':').next().and_then(|port| port.parse::<u16>().ok());
    Some(port.filter(|&port| port != 0).ok_or_else(|| BrokerProcessError::BadListenLine(line.to_string())))
}

/// Creates `dir` if it is missing; refuses a directory that already has entries.
pub fn prepare_data_dir(dir: &Path) -> Result<(), BrokerProcessError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(BrokerProcessError::DataDirNotEmpty(dir.to_path_buf()));
            }
            Ok(())
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(std::fs::create_dir_all(dir)?),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_give_their_port() {
        assert_eq!(parse_listening_line("amqp listening on 127.0.0.1:40123").unwrap().unwrap(), 40123);
        assert_eq!(parse_listening_line("amqp listening on [::1]:5672\n").unwrap().unwrap(), 5672);
        assert!(parse_listening_line("http listening on 127.0.0.1:80").is_none());
        assert!(parse_listening_line("amqp listening on nowhere").unwrap().is_err());
    }

    #[test]
    fn data_dir_must_be_new_or_empty() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("fresh");
        prepare_data_dir(&fresh).unwrap();
        assert!(fresh.is_dir());
        prepare_data_dir(&fresh).unwrap(); // empty: fine
        std::fs::write(fresh.join("LOCK"), b"").unwrap();
        assert!(matches!(prepare_data_dir(&fresh), Err(BrokerProcessError::DataDirNotEmpty(_))));
    }
}
