//! The consumer's hot path, sans-IO: bytes of `basic.deliver` + content in, counts,
//! latencies and ack tags out.
//!
//! `weir-amqp-codec`'s `decode_frame` validates everything, which is right for a broker but
//! costs a broker's price per message (it parses `basic.deliver` and the content properties
//! with `amq-protocol`). The benchmark must not be the bottleneck, so the three frames of a
//! delivery are read here with bounds-checked slicing and no allocation: the delivery tag
//! from the method, the body size from the header, the timestamp from the first body frame.
//! Every other frame (closes, `consume-ok`, cancels) goes through `decode_frame`, so anything
//! unusual is still fully validated. The frame-size limit and the frame-end octet are
//! checked for every frame.

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use weir_amqp_codec::amq_protocol::protocol::AMQPClass;
use weir_amqp_codec::{
    decode_frame, inbound_payload_size_max, Frame, FrameError, FRAME_END, FRAME_HEADER_SIZE, FRAME_OVERHEAD,
    FRAME_TYPE_BODY, FRAME_TYPE_HEADER, FRAME_TYPE_HEARTBEAT, FRAME_TYPE_METHOD,
};

use crate::body::read_timestamp;

/// Class and method ids at the start of a `basic.deliver` payload.
const BASIC_DELIVER_IDS: [u8; 4] = [0, 60, 0, 60];
/// Class id, weight and body size at the start of a content header.
const CONTENT_HEADER_PREFIX_SIZE: usize = 12;
/// Nanoseconds per microsecond (latencies are recorded in microseconds).
const NS_PER_US: u64 = 1000;

/// A delivery stream the benchmark cannot follow.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The codec rejected a frame.
    #[error("malformed frame from the broker: {0}")]
    Frame(#[from] FrameError),
    /// A delivery frame too short for its fields, or content out of order.
    #[error("malformed delivery from the broker: {0}")]
    Malformed(&'static str),
}

/// What the frames in the buffer did.
#[derive(Debug, Default)]
pub struct Processed {
    /// Deliveries completed (body fully received).
    pub delivered: u64,
    /// A method other than `basic.deliver`: processing stopped after it; call again.
    pub method: Option<AMQPClass>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Method,
    Header,
    Body { remaining: u64, first: bool },
}

/// Follows the deliveries of one consumer channel.
#[derive(Debug)]
pub struct DeliveryTracker {
    frame_max: u32,
    expect: Expect,
    last_tag: u64,
    unacked: u64,
}

impl DeliveryTracker {
    /// A tracker for a connection that negotiated `frame_max`.
    #[must_use]
    pub fn new(frame_max: u32) -> DeliveryTracker {
        DeliveryTracker { frame_max, expect: Expect::Method, last_tag: 0, unacked: 0 }
    }

    /// Consumes the complete frames at the front of `buf`, recording the latency of each
    /// delivery (`now_ns` minus its body timestamp) in `latencies_us`. Stops early at a
    /// method that is not `basic.deliver`, which it returns.
    pub fn process(
        &mut self,
        buf: &mut BytesMut,
        now_ns: u64,
        latencies_us: &mut Histogram<u64>,
    ) -> Result<Processed, DeliveryError> {
        let mut processed = Processed::default();
        let payload_size_max = inbound_payload_size_max(self.frame_max) as usize;
        while buf.len() >= FRAME_HEADER_SIZE {
            let frame_type = buf[0];
            let payload_size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]) as usize;
            if payload_size > payload_size_max || !self.is_fast(frame_type, buf) {
                // The codec reports oversize frames with the right error, and decodes the rest.
                if self.slow_frame(buf, &mut processed)? {
                    continue;
                }
                break;
            }
            let frame_size = FRAME_OVERHEAD + payload_size;
            if buf.len() < frame_size {
                buf.reserve(frame_size - buf.len());
                break;
            }
            if buf[frame_size - 1] != FRAME_END {
                return Err(DeliveryError::Malformed("frame does not end with 0xCE"));
            }
            let payload = &buf[FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + payload_size];
            match frame_type {
                FRAME_TYPE_METHOD => self.on_deliver(payload)?,
                FRAME_TYPE_HEADER => processed.delivered += self.on_header(payload)?,
                FRAME_TYPE_BODY => processed.delivered += self.on_body(payload, now_ns, latencies_us)?,
                _ => {} // heartbeat
            }
            buf.advance(frame_size);
        }
        self.unacked += processed.delivered;
        Ok(processed)
    }

    /// The tag to ack (with `multiple`) if at least `every` deliveries are unacked.
    pub fn ack_due(&mut self, every: u64) -> Option<u64> {
        (self.unacked >= every).then(|| self.take_ack())
    }

    /// The tag to ack (with `multiple`) for every unacked delivery, if any.
    pub fn ack_all(&mut self) -> Option<u64> {
        (self.unacked > 0).then(|| self.take_ack())
    }

    fn take_ack(&mut self) -> u64 {
        self.unacked = 0;
        // A delivery whose body is still arriving has a tag but is not counted yet; acking
        // it early is harmless (it is delivered) and keeps the tag arithmetic simple.
        self.last_tag
    }

    /// True if the frame at the front of `buf` takes the fast path: the next frame of a
    /// delivery, or a heartbeat. A method is fast only once its ids show `basic.deliver`.
    fn is_fast(&self, frame_type: u8, buf: &[u8]) -> bool {
        match (frame_type, self.expect) {
            (FRAME_TYPE_METHOD, Expect::Method) => {
                buf.get(FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + BASIC_DELIVER_IDS.len()) == Some(&BASIC_DELIVER_IDS[..])
            }
            (FRAME_TYPE_HEADER, Expect::Header)
            | (FRAME_TYPE_BODY, Expect::Body { .. })
            | (FRAME_TYPE_HEARTBEAT, _) => true,
            _ => false,
        }
    }

    /// Decodes one frame with the codec. Returns false if more bytes are needed.
    fn slow_frame(&mut self, buf: &mut BytesMut, processed: &mut Processed) -> Result<bool, DeliveryError> {
        match decode_frame(buf, self.frame_max)? {
            None => Ok(false),
            Some(Frame::Heartbeat { .. }) => Ok(true),
            Some(Frame::Method { method, .. }) if self.expect == Expect::Method => {
                processed.method = Some(method);
                Ok(false)
            }
            Some(_) => Err(DeliveryError::Malformed("frame out of order within a delivery")),
        }
    }

    fn on_deliver(&mut self, payload: &[u8]) -> Result<(), DeliveryError> {
        let tag_at = BASIC_DELIVER_IDS.len() + 1 + usize::from(*payload.get(4).ok_or(SHORT_DELIVER)?);
        let tag = payload.get(tag_at..tag_at + 8).ok_or(SHORT_DELIVER)?;
        self.last_tag = u64::from_be_bytes(tag.try_into().map_err(|_| SHORT_DELIVER)?);
        self.expect = Expect::Header;
        Ok(())
    }

    fn on_header(&mut self, payload: &[u8]) -> Result<u64, DeliveryError> {
        let size =
            payload.get(4..CONTENT_HEADER_PREFIX_SIZE).ok_or(DeliveryError::Malformed("content header too short"))?;
        let body_size = u64::from_be_bytes(size.try_into().map_err(|_| SHORT_DELIVER)?);
        if body_size == 0 {
            self.expect = Expect::Method;
            return Ok(1);
        }
        self.expect = Expect::Body { remaining: body_size, first: true };
        Ok(0)
    }

    fn on_body(
        &mut self,
        payload: &[u8],
        now_ns: u64,
        latencies_us: &mut Histogram<u64>,
    ) -> Result<u64, DeliveryError> {
        let Expect::Body { remaining, first } = self.expect else {
            return Err(DeliveryError::Malformed("body frame outside a delivery"));
        };
        let remaining = remaining
            .checked_sub(payload.len() as u64)
            .ok_or(DeliveryError::Malformed("body longer than its header said"))?;
        if first {
            if let Some(published_ns) = read_timestamp(payload) {
                latencies_us.saturating_record(now_ns.saturating_sub(published_ns) / NS_PER_US);
            }
        }
        if remaining == 0 {
            self.expect = Expect::Method;
            Ok(1)
        } else {
            self.expect = Expect::Body { remaining, first: false };
            Ok(0)
        }
    }
}

const SHORT_DELIVER: DeliveryError = DeliveryError::Malformed("basic.deliver too short");

#[cfg(test)]
mod tests {
    use weir_amqp_codec::{encode_deliver, encode_heartbeat, encode_method, FRAME_MIN_SIZE};

    use super::*;
    use crate::body::{filler_body, write_timestamp};
    use crate::stats::latency_histogram;
    use crate::wire::{basic_qos, CHANNEL};

    fn deliver(out: &mut BytesMut, tag: u64, published_ns: u64, size: usize, frame_max: u32) {
        let mut body = filler_body(size);
        write_timestamp(&mut body, published_ns);
        encode_deliver(out, CHANNEL, "ctag-1", tag, false, "", "q", &[0, 0], &body, frame_max);
    }

    #[test]
    fn deliveries_are_counted_and_timed() {
        let mut buf = BytesMut::new();
        deliver(&mut buf, 1, 1_000_000, 16, FRAME_MIN_SIZE);
        encode_heartbeat(&mut buf);
        deliver(&mut buf, 2, 2_000_000, 16, FRAME_MIN_SIZE);
        let mut tracker = DeliveryTracker::new(FRAME_MIN_SIZE);
        let mut latencies = latency_histogram();
        let processed = tracker.process(&mut buf, 5_000_000, &mut latencies).unwrap();
        assert_eq!(processed.delivered, 2);
        assert!(processed.method.is_none());
        assert!(buf.is_empty());
        assert_eq!(latencies.len(), 2);
        assert!(latencies.equivalent(latencies.max(), 4000), "max {} is not 4 ms in µs", latencies.max());
        assert_eq!(tracker.ack_all(), Some(2));
        assert_eq!(tracker.ack_all(), None);
    }

    #[test]
    fn delivery_split_across_reads_and_body_frames() {
        let mut all = BytesMut::new();
        deliver(&mut all, 7, 0, 3 * 4096, FRAME_MIN_SIZE);
        let mut tracker = DeliveryTracker::new(FRAME_MIN_SIZE);
        let mut latencies = latency_histogram();
        let mut buf = BytesMut::new();
        let mut delivered = 0;
        // Feed the bytes a few at a time: every split point must work.
        for chunk in all.chunks(1000) {
            buf.extend_from_slice(chunk);
            delivered += tracker.process(&mut buf, 0, &mut latencies).unwrap().delivered;
        }
        assert_eq!(delivered, 1);
        assert_eq!(latencies.len(), 1);
        assert_eq!(tracker.ack_due(1), Some(7));
    }

    #[test]
    fn acks_fall_due_every_n_deliveries() {
        let mut buf = BytesMut::new();
        for tag in 1..=5 {
            deliver(&mut buf, tag, 0, 8, FRAME_MIN_SIZE);
        }
        let mut tracker = DeliveryTracker::new(FRAME_MIN_SIZE);
        tracker.process(&mut buf, 0, &mut latency_histogram()).unwrap();
        assert_eq!(tracker.ack_due(6), None);
        assert_eq!(tracker.ack_due(5), Some(5));
        assert_eq!(tracker.ack_due(1), None);
    }

    #[test]
    fn other_methods_stop_processing_and_are_returned() {
        let mut buf = BytesMut::new();
        deliver(&mut buf, 1, 0, 8, FRAME_MIN_SIZE);
        encode_method(&mut buf, CHANNEL, &basic_qos(1));
        deliver(&mut buf, 2, 0, 8, FRAME_MIN_SIZE);
        let mut tracker = DeliveryTracker::new(FRAME_MIN_SIZE);
        let mut latencies = latency_histogram();
        let first = tracker.process(&mut buf, 0, &mut latencies).unwrap();
        assert_eq!(first.delivered, 1);
        assert!(first.method.is_some());
        let second = tracker.process(&mut buf, 0, &mut latencies).unwrap();
        assert_eq!(second.delivered, 1);
        assert!(second.method.is_none());
    }

    #[test]
    fn corrupt_frame_end_is_an_error() {
        let mut buf = BytesMut::new();
        deliver(&mut buf, 1, 0, 8, FRAME_MIN_SIZE);
        let last = buf.len() - 1;
        buf[last] = 0;
        let mut tracker = DeliveryTracker::new(FRAME_MIN_SIZE);
        assert!(tracker.process(&mut buf, 0, &mut latency_histogram()).is_err());
    }

    #[test]
    fn oversize_frame_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[FRAME_TYPE_BODY, 0, 1, 0x7f, 0xff, 0xff, 0xff][..]);
        let mut tracker = DeliveryTracker::new(FRAME_MIN_SIZE);
        assert!(matches!(tracker.process(&mut buf, 0, &mut latency_histogram()), Err(DeliveryError::Frame(_))));
    }

    #[test]
    fn truncated_deliver_method_is_an_error() {
        // A basic.deliver whose consumer tag claims 200 bytes in a 6-byte payload.
        let mut buf = BytesMut::from(&[FRAME_TYPE_METHOD, 0, 1, 0, 0, 0, 6, 0, 60, 0, 60, 200, 0, FRAME_END][..]);
        let mut tracker = DeliveryTracker::new(FRAME_MIN_SIZE);
        assert!(matches!(tracker.process(&mut buf, 0, &mut latency_histogram()), Err(DeliveryError::Malformed(_))));
    }
}
