//! `amqp://user:pass@host:port/vhost` URLs, parsed the way RabbitMQ's URI spec reads them.
//!
//! Only the `amqp` scheme is accepted (no TLS in the benchmark). Every part is optional except
//! the host: the user and password default to `guest`, the port to 5672, the vhost to `/`.
//! User, password and vhost are percent-decoded, so the default vhost is written `%2f`
//! (`amqp://h/` with an empty path also means `/`, as most clients read it). The benchmark
//! connects only to the host written here: there is no discovery and no fallback.

use std::fmt;

/// Port used when the URL names none.
pub const AMQP_PORT_DEFAULT: u16 = 5672;
/// User and password used when the URL names none (RabbitMQ's and Weir's loopback account).
pub const CREDENTIAL_DEFAULT: &str = "guest";
/// The vhost used when the URL has no path.
pub const VHOST_DEFAULT: &str = "/";
/// Longest vhost name AMQP can carry (a short string).
pub const VHOST_LENGTH_MAX: usize = 255;

const SCHEME: &str = "amqp://";

/// A URL that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The URL does not start with `amqp://`.
    #[error("URL must start with amqp:// (got {0:?}; amqps is not supported)")]
    Scheme(String),
    /// No host between `@` and the port or path.
    #[error("URL has no host")]
    MissingHost,
    /// The port is not a number from 1 to 65535.
    #[error("invalid port {0:?}")]
    Port(String),
    /// A `%` not followed by two hex digits, or a decoded part that is not UTF-8.
    #[error("invalid percent-encoding in {0:?}")]
    PercentEncoding(String),
    /// The vhost is longer than a short string.
    #[error("vhost is {0} bytes long; the limit is {VHOST_LENGTH_MAX}")]
    VhostTooLong(usize),
    /// Query strings are not understood; refusing is better than ignoring them.
    #[error("URL query parameters are not supported ({0:?})")]
    Query(String),
}

/// A parsed `amqp://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl {
    /// User name for PLAIN authentication.
    pub user: String,
    /// Password for PLAIN authentication.
    pub password: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Virtual host.
    pub vhost: String,
}

impl AmqpUrl {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<AmqpUrl, UrlError> {
        let rest = strip_prefix_ignore_case(text, SCHEME).ok_or_else(|| UrlError::Scheme(text.to_string()))?;
        if let Some((_, query)) = rest.split_once('?') {
            return Err(UrlError::Query(query.to_string()));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], Some(&rest[slash + 1..])),
            None => (rest, None),
        };
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (CREDENTIAL_DEFAULT.to_string(), CREDENTIAL_DEFAULT.to_string()),
            Some(info) => match info.split_once(':') {
                Some((user, password)) => (percent_decode(user)?, percent_decode(password)?),
                None => (percent_decode(info)?, String::new()),
            },
        };
        let (host, port) = split_host_port(hostport)?;
        let vhost = match path {
            None | Some("") => VHOST_DEFAULT.to_string(),
            Some(path) => percent_decode(path)?,
        };
        if vhost.len() > VHOST_LENGTH_MAX {
            return Err(UrlError::VhostTooLong(vhost.len()));
        }
        Ok(AmqpUrl { user, password, host, port, vhost })
    }

    /// `host:port` as `TcpStream::connect` takes it (IPv6 hosts in brackets).
    #[must_use]
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL with the password left out, for reports and logs.
    #[must_use]
    pub fn redacted(&self) -> String {
        let vhost = self.vhost.replace('%', "%25").replace('/', "%2f");
        format!("amqp://{}@{}/{}", self.user, self.address(), vhost)
    }
}

impl fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password, even in debug output.
        f.write_str(&self.redacted())
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

fn split_host_port(hostport: &str) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(UrlError::MissingHost)?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(UrlError::Port(after.to_string())),
        };
        (host, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::MissingHost);
    }
    let port = match port {
        None | Some("") => AMQP_PORT_DEFAULT,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(UrlError::Port(port.to_string())),
        },
    };
    Ok((percent_decode(host)?, port))
}

fn percent_decode(text: &str) -> Result<String, UrlError> {
    let error = || UrlError::PercentEncoding(text.to_string());
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3).ok_or_else(error)?;
            let hex = std::str::from_utf8(hex).map_err(|_| error())?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| error())?);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_url_with_encoded_default_vhost() {
        let url = AmqpUrl::parse("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(url.user, "guest");
        assert_eq!(url.password, "guest");
        assert_eq!(url.host, "127.0.0.1");
        assert_eq!(url.port, 5672);
        assert_eq!(url.vhost, "/");
        assert_eq!(url.address(), "127.0.0.1:5672");
    }

    #[test]
    fn uppercase_percent_2f_is_the_default_vhost_too() {
        assert_eq!(AmqpUrl::parse("amqp://h/%2F").unwrap().vhost, "/");
    }

    #[test]
    fn defaults_fill_missing_parts() {
        let url = AmqpUrl::parse("amqp://localhost").unwrap();
        assert_eq!((url.user.as_str(), url.password.as_str()), ("guest", "guest"));
        assert_eq!(url.port, AMQP_PORT_DEFAULT);
        assert_eq!(url.vhost, "/");
        assert_eq!(AmqpUrl::parse("amqp://localhost/").unwrap().vhost, "/");
        assert_eq!(AmqpUrl::parse("amqp://localhost:/").unwrap().port, AMQP_PORT_DEFAULT);
    }

    #[test]
    fn named_vhost_and_encoded_credentials() {
        let url = AmqpUrl::parse("amqp://us%40er:p%3Ass@broker:5673/prod%2Fa").unwrap();
        assert_eq!(url.user, "us@er");
        assert_eq!(url.password, "p:ss");
        assert_eq!(url.port, 5673);
        assert_eq!(url.vhost, "prod/a");
    }

    #[test]
    fn ipv6_hosts_keep_their_brackets_in_the_address() {
        let url = AmqpUrl::parse("amqp://[::1]:5672/%2f").unwrap();
        assert_eq!(url.host, "::1");
        assert_eq!(url.address(), "[::1]:5672");
        assert_eq!(AmqpUrl::parse("amqp://[::1]").unwrap().port, AMQP_PORT_DEFAULT);
    }

    #[test]
    fn bad_urls_are_refused() {
        assert!(matches!(AmqpUrl::parse("amqps://h"), Err(UrlError::Scheme(_))));
        assert!(matches!(AmqpUrl::parse("http://h"), Err(UrlError::Scheme(_))));
        assert_eq!(AmqpUrl::parse("amqp://"), Err(UrlError::MissingHost));
        assert_eq!(AmqpUrl::parse("amqp://u:p@:5672/"), Err(UrlError::MissingHost));
        assert!(matches!(AmqpUrl::parse("amqp://h:0"), Err(UrlError::Port(_))));
        assert!(matches!(AmqpUrl::parse("amqp://h:70000"), Err(UrlError::Port(_))));
        assert!(matches!(AmqpUrl::parse("amqp://h/%zz"), Err(UrlError::PercentEncoding(_))));
        assert!(matches!(AmqpUrl::parse("amqp://h/%2"), Err(UrlError::PercentEncoding(_))));
        assert!(matches!(AmqpUrl::parse("amqp://h/?heartbeat=5"), Err(UrlError::Query(_))));
    }

    #[test]
    fn vhost_length_limit_is_a_short_string() {
        let ok = format!("amqp://h/{}", "v".repeat(VHOST_LENGTH_MAX));
        assert!(AmqpUrl::parse(&ok).is_ok());
        let long = format!("amqp://h/{}", "v".repeat(VHOST_LENGTH_MAX + 1));
        assert_eq!(AmqpUrl::parse(&long), Err(UrlError::VhostTooLong(VHOST_LENGTH_MAX + 1)));
    }

    #[test]
    fn redacted_form_hides_the_password() {
        let url = AmqpUrl::parse("amqp://guest:secret@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(url.redacted(), "amqp://guest@127.0.0.1:5672/%2f");
        assert!(!format!("{url:?}").contains("secret"));
    }
}
