//! Server-side parsing of the SASL responses clients send in `connection.start-ok`
//! (trap #10: `amq-protocol` only builds them).
//!
//! - PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`; the authorization identity may be
//!   empty and is ignored (RabbitMQ ignores it too). kombu/Celery and most clients use it.
//! - AMQPLAIN: the entries of a field table, **without** the 4-octet table length, holding
//!   `LOGIN` and `PASSWORD` as long strings (`S`). py-amqp picks it when offered.
//!
//! Invariants:
//! - Malformed responses are 502 SYNTAX_ERROR on `connection.start-ok`, as RabbitMQ raises
//!   `syntax_error` for a mechanism's `protocol_error`. Wrong credentials are not this
//!   module's business (403 ACCESS_REFUSED is decided by authentication).
//! - Error texts never include the response bytes: they contain the password.
//! - AMQPLAIN tables pass the same non-recursive depth scan as every other table.

use crate::error::{FrameError, ReplyCode};
use crate::scan::{scan_table_entries, Cursor, ScanError};

/// Class id of `connection`.
const CLASS_CONNECTION: u16 = 10;
/// Method id of `connection.start-ok`, which carries the response.
const METHOD_CONNECTION_START_OK: u16 = 11;
/// The PLAIN field separator.
const PLAIN_SEPARATOR: u8 = 0;

/// A user name and password taken from a SASL response.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The authentication identity.
    pub username: String,
    /// The password, in clear.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, even in debug logs.
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

fn sasl_error(text: &str) -> FrameError {
    FrameError::new(ReplyCode::SyntaxError, text).for_method(CLASS_CONNECTION, METHOD_CONNECTION_START_OK)
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, FrameError> {
    String::from_utf8(bytes.to_vec())
        .map_err(|_| sasl_error(&format!("{what} in the SASL response is not valid UTF-8")))
}

/// Parses a PLAIN response: `[authzid] NUL username NUL password`, exactly two NULs.
pub fn parse_plain(response: &[u8]) -> Result<Credentials, FrameError> {
    let mut parts = response.split(|byte| *byte == PLAIN_SEPARATOR);
    let (Some(_authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(sasl_error("PLAIN response must be 'authzid NUL username NUL password'"));
    };
    Ok(Credentials { username: utf8(username, "user name")?, password: utf8(password, "password")? })
}

/// Parses an AMQPLAIN response: field-table entries without the table length, with
/// `LOGIN` and `PASSWORD` long strings. The first occurrence of a key wins, as in RabbitMQ
/// (`lists:keysearch`).
pub fn parse_amqplain(response: &[u8]) -> Result<Credentials, FrameError> {
    scan_table_entries(response)
        .map_err(|error| sasl_error(&format!("AMQPLAIN response is not a field table: {}", error.describe())))?;
    let mut login = None;
    let mut password = None;
    let mut cursor = Cursor::new(response);
    while !cursor.is_empty() {
        let (key, tag, value) = next_entry(&mut cursor)
            .map_err(|error| sasl_error(&format!("AMQPLAIN response is not a field table: {}", error.describe())))?;
        let slot = match key {
            "LOGIN" => &mut login,
            "PASSWORD" => &mut password,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some((tag, value));
        }
    }
    match (login, password) {
        (Some((b'S', login)), Some((b'S', password))) => {
            Ok(Credentials { username: utf8(login, "LOGIN")?, password: utf8(password, "PASSWORD")? })
        }
        _ => Err(sasl_error("AMQPLAIN response is missing LOGIN or PASSWORD long-string field")),
    }
}

/// Reads one top-level entry of an already-scanned table: key, tag and the value's bytes
/// (for `S`, `x`, `F`, `A`: the bytes after the length).
fn next_entry<'a>(cursor: &mut Cursor<'a>) -> Result<(&'a str, u8, &'a [u8]), ScanError> {
    let key = cursor.short_string()?;
    let tag = cursor.u8()?;
    let value = match tag {
        b'S' | b'x' | b'F' | b'A' => cursor.long_bytes()?,
        b'V' => &[],
        b't' | b'b' | b'B' => cursor.take(1)?,
        b's' | b'U' | b'u' => cursor.take(2)?,
        b'I' | b'i' | b'f' => cursor.take(4)?,
        b'D' => cursor.take(5)?,
        b'l' | b'L' | b'd' | b'T' => cursor.take(8)?,
        other => return Err(ScanError::UnknownTag(other)),
    };
    Ok((key, tag, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_with_and_without_authzid() {
        let expected = Credentials { username: "guest".into(), password: "secret".into() };
        assert_eq!(parse_plain(b"\0guest\0secret"), Ok(expected.clone()));
        assert_eq!(parse_plain(b"admin\0guest\0secret"), Ok(expected));
        assert_eq!(parse_plain(b"\0\0"), Ok(Credentials { username: String::new(), password: String::new() }));
    }

    #[test]
    fn malformed_plain_is_a_syntax_error_without_the_password() {
        for response in [&b""[..], b"guest", b"\0guest", b"\0a\0b\0c", b"\0\xff\0p"] {
            let error = parse_plain(response).unwrap_err();
            assert_eq!(error.code, ReplyCode::SyntaxError, "{response:?}");
            assert_eq!((error.class_id, error.method_id), (10, 11));
        }
        let error = parse_plain(b"\0guest").unwrap_err();
        assert!(!error.text.contains("guest"));
    }

    fn long_string_entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut entry = vec![key.len() as u8];
        entry.extend_from_slice(key.as_bytes());
        entry.push(b'S');
        entry.extend_from_slice(&(value.len() as u32).to_be_bytes());
        entry.extend_from_slice(value);
        entry
    }

    #[test]
    fn amqplain_reads_login_and_password() {
        let mut response = long_string_entry("LOGIN", b"guest");
        response.extend(long_string_entry("PASSWORD", b"guest-pw"));
        response.extend([3, b'x', b'y', b'z', b'V']);
        assert_eq!(
            parse_amqplain(&response),
            Ok(Credentials { username: "guest".into(), password: "guest-pw".into() })
        );
    }

    #[test]
    fn amqplain_missing_or_mistyped_fields_are_syntax_errors() {
        let login_only = long_string_entry("LOGIN", b"guest");
        assert_eq!(parse_amqplain(&login_only).unwrap_err().code, ReplyCode::SyntaxError);
        let mut mistyped = login_only.clone();
        mistyped.extend([8, b'P', b'A', b'S', b'S', b'W', b'O', b'R', b'D', b'I', 0, 0, 0, 1]);
        assert_eq!(parse_amqplain(&mistyped).unwrap_err().code, ReplyCode::SyntaxError);
        assert_eq!(parse_amqplain(&[5, b'L']).unwrap_err().code, ReplyCode::SyntaxError);
    }

    #[test]
    fn credentials_debug_hides_the_password() {
        let credentials = Credentials { username: "u".into(), password: "hunter2".into() };
        assert!(!format!("{credentials:?}").contains("hunter2"));
    }
}
