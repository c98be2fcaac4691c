//! `weir serve` settings: defaults, overridden by a TOML file (`--config`), overridden by
//! `WEIR_*` environment variables, overridden by flags (clap reads flag-or-env, so the
//! order flag > env holds; the file fills in whatever neither gave).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(clap::Args, Debug, Default)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, env = "WEIR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the log and checkpoints live [default: ./weir-data].
    #[arg(long, env = "WEIR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// AMQP listen address; repeat for several (port 0 picks a free port)
    /// [default: 127.0.0.1:5672 and [::1]:5672].
    #[arg(long, env = "WEIR_AMQP_LISTEN", value_delimiter = ',')]
    pub amqp_listen: Vec<SocketAddr>,
    /// HTTP API, console and metrics listen address; repeat for several (port 0 picks a free
    /// port) [default: 127.0.0.1:15672].
    #[arg(long, env = "WEIR_HTTP_LISTEN", value_delimiter = ',')]
    pub http_listen: Vec<SocketAddr>,
    /// TLS certificate chain (PEM). With --tls-key it turns on AMQPS and HTTPS.
    #[arg(long, env = "WEIR_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WEIR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// AMQP over TLS listen address; repeat for several (needs --tls-cert)
    /// [default with TLS: 127.0.0.1:5671 and [::1]:5671].
    #[arg(long, env = "WEIR_AMQPS_LISTEN", value_delimiter = ',')]
    pub amqps_listen: Vec<SocketAddr>,
    /// HTTPS listen address for the API, console and metrics (needs --tls-cert)
    /// [default with TLS: 127.0.0.1:15671].
    #[arg(long, env = "WEIR_HTTPS_LISTEN", value_delimiter = ',')]
    pub https_listen: Vec<SocketAddr>,
    /// Size of each log segment file in bytes [default: 64 MiB].
    #[arg(long, env = "WEIR_SEGMENT_SIZE_BYTES")]
    pub segment_size_bytes: Option<u32>,
    /// Log bytes between checkpoints; bounds recovery time [default: 256 MiB].
    #[arg(long, env = "WEIR_CHECKPOINT_INTERVAL_BYTES")]
    pub checkpoint_interval_bytes: Option<u64>,
    /// Bytes of persistent message bodies kept in memory [default: 256 MiB].
    #[arg(long, env = "WEIR_CACHE_BYTES")]
    pub cache_bytes: Option<u64>,
}

/// The file's shape. Unknown keys are an error, so a typo is not silently ignored.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub amqp_listen: Option<Vec<SocketAddr>>,
    pub http_listen: Option<Vec<SocketAddr>>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub amqps_listen: Option<Vec<SocketAddr>>,
    pub https_listen: Option<Vec<SocketAddr>>,
    pub segment_size_bytes: Option<u32>,
    pub checkpoint_interval_bytes: Option<u64>,
    pub cache_bytes: Option<u64>,
}

/// The settings in force.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub amqp_listen: Vec<SocketAddr>,
    pub http_listen: Vec<SocketAddr>,
    /// (certificate chain, private key) files, when TLS is on.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Empty unless TLS is on.
    pub amqps_listen: Vec<SocketAddr>,
    pub https_listen: Vec<SocketAddr>,
    pub segment_size_bytes: u32,
    pub checkpoint_interval_bytes: u64,
    pub cache_bytes: u64,
}

pub const DEFAULT_AMQP_LISTEN: [&str; 2] = ["127.0.0.1:5672", "[::1]:5672"];
pub const DEFAULT_HTTP_LISTEN: &str = "127.0.0.1:15672";
pub const DEFAULT_AMQPS_LISTEN: [&str; 2] = ["127.0.0.1:5671", "[::1]:5671"];
pub const DEFAULT_HTTPS_LISTEN: &str = "127.0.0.1:15671";

/// Flag, else file, else default.
fn addresses(flag: Vec<SocketAddr>, file: Option<Vec<SocketAddr>>, default: &[&str]) -> Vec<SocketAddr> {
    if !flag.is_empty() {
        return flag;
    }
    file.unwrap_or_else(|| default.iter().map(|a| a.parse().expect("valid default")).collect())
}

impl ServeArgs {
    pub fn resolve(self) -> Result<Settings, String> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                toml::from_str::<FileConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let engine = weir_engine::EngineConfig::default();
        let amqp_listen = addresses(self.amqp_listen, file.amqp_listen, &DEFAULT_AMQP_LISTEN);
        let http_listen = addresses(self.http_listen, file.http_listen, &[DEFAULT_HTTP_LISTEN]);
        let tls = match (self.tls_cert.or(file.tls_cert), self.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("TLS needs both a certificate (tls_cert) and a key (tls_key)".into()),
        };
        let (amqps_listen, https_listen) = if tls.is_some() {
            (
                addresses(self.amqps_listen, file.amqps_listen, &DEFAULT_AMQPS_LISTEN),
                addresses(self.https_listen, file.https_listen, &[DEFAULT_HTTPS_LISTEN]),
            )
        } else if !self.amqps_listen.is_empty() || !self.https_listen.is_empty() {
            return Err("--amqps-listen and --https-listen need --tls-cert and --tls-key".into());
        } else {
            (Vec::new(), Vec::new())
        };
        Ok(Settings {
            tls,
            amqps_listen,
            https_listen,
            http_listen,
            data_dir: self.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("weir-data")),
            amqp_listen,
            segment_size_bytes: self
                .segment_size_bytes
                .or(file.segment_size_bytes)
                .unwrap_or(engine.log.segment_size_bytes),
            checkpoint_interval_bytes: self
                .checkpoint_interval_bytes
                .or(file.checkpoint_interval_bytes)
                .unwrap_or(engine.checkpoint_interval_bytes),
            cache_bytes: self.cache_bytes.or(file.cache_bytes).unwrap_or(engine.cache_budget_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "data_dir = \"/from/file\"\nsegment_size_bytes = 1048576\n").unwrap();
        let args = ServeArgs { config: Some(path), data_dir: Some("/from/flag".into()), ..Default::default() };
        let settings = args.resolve().unwrap();
        assert_eq!(settings.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.segment_size_bytes, 1 << 20);
        assert_eq!(settings.amqp_listen.len(), 2);
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, "data_dri = \"x\"\n").unwrap();
        let error = ServeArgs { config: Some(path), ..Default::default() }.resolve().unwrap_err();
        assert!(error.contains("data_dri"), "{error}");
    }
}
