//! Message bodies: an 8-byte publish timestamp, then filler.
//!
//! The timestamp is nanoseconds since the Unix epoch, big-endian, written by the publisher
//! just before the batch holding the message goes to the socket; the consumer subtracts it
//! from its own clock when the delivery arrives. Both ends run on the same host in every
//! measurement we publish, so the wall clock is shared and latency needs no clock sync.
//! Bodies shorter than [`BODY_TIMESTAMP_SIZE`] cannot carry a timestamp, so the CLI refuses
//! them; messages from elsewhere (shorter bodies) are simply left out of the histogram.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes at the start of every body that hold the publish timestamp.
pub const BODY_TIMESTAMP_SIZE: usize = 8;
/// Byte the rest of the body is filled with (printable, so a body is readable in a dump).
pub const BODY_FILLER: u8 = b'w';

/// Nanoseconds since the Unix epoch; 0 if the clock is before 1970 (a broken host).
#[must_use]
pub fn unix_now_ns() -> u64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        // u64 nanoseconds last until the year 2554.
        Ok(since) => u64::try_from(since.as_nanos()).unwrap_or(u64::MAX),
        Err(_) => 0,
    }
}

/// A body of `size_bytes` bytes with timestamp 0 and filler. `size_bytes` must be at least
/// [`BODY_TIMESTAMP_SIZE`] (the CLI enforces it).
#[must_use]
pub fn filler_body(size_bytes: usize) -> Vec<u8> {
    assert!(size_bytes >= BODY_TIMESTAMP_SIZE, "body of {size_bytes} bytes cannot hold a timestamp");
    let mut body = vec![BODY_FILLER; size_bytes];
    body[..BODY_TIMESTAMP_SIZE].fill(0);
    body
}

/// Writes `timestamp_ns` into the first [`BODY_TIMESTAMP_SIZE`] bytes of `body`.
pub fn write_timestamp(body: &mut [u8], timestamp_ns: u64) {
    body[..BODY_TIMESTAMP_SIZE].copy_from_slice(&timestamp_ns.to_be_bytes());
}

/// Reads the timestamp from the start of a body, or `None` if fewer than
/// [`BODY_TIMESTAMP_SIZE`] bytes are given.
#[must_use]
pub fn read_timestamp(body_prefix: &[u8]) -> Option<u64> {
    let bytes: [u8; BODY_TIMESTAMP_SIZE] = body_prefix.get(..BODY_TIMESTAMP_SIZE)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_round_trips_through_a_body() {
        let mut body = filler_body(16);
        let now = unix_now_ns();
        write_timestamp(&mut body, now);
        assert_eq!(read_timestamp(&body), Some(now));
        assert!(body[BODY_TIMESTAMP_SIZE..].iter().all(|&byte| byte == BODY_FILLER));
    }

    #[test]
    fn timestamp_is_big_endian() {
        let mut body = filler_body(BODY_TIMESTAMP_SIZE);
        write_timestamp(&mut body, 0x0102_0304_0506_0708);
        assert_eq!(body, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn short_bodies_have_no_timestamp() {
        assert_eq!(read_timestamp(&[1, 2, 3]), None);
        assert_eq!(read_timestamp(&[]), None);
    }

    #[test]
    fn clock_is_after_2020() {
        const JAN_2020_NS: u64 = 1_577_836_800_000_000_000;
        assert!(unix_now_ns() > JAN_2020_NS);
    }

    #[test]
    #[should_panic(expected = "cannot hold a timestamp")]
    fn body_smaller_than_the_timestamp_is_a_bug() {
        let _ = filler_body(BODY_TIMESTAMP_SIZE - 1);
    }
}
