//! Hostile bytes against the real broker: every framing and state error of docs/AMQP.md
//! ("Frames and the errors they get"), sent over a plain loopback socket, each answered with
//! the exact reply RabbitMQ 3.10 gives (AMQP-NOTES §3.1) or the one docs/AMQP.md documents
//! where Weir chose differently.
//!
//! Each test starts its own broker, sends one hostile sequence on a raw connection, checks
//! the reply (the protocol header echo, or `connection.close` / `channel.close` with its
//! reply code and the class and method it names), and then checks that the broker still
//! serves a *different* connection normally: another raw client declares a queue, publishes
//! and gets the message back. A broker that crashed, overflowed a stack or wedged its accept
//! loop fails there.
//!
//! Bounds: every read has a deadline (`raw::READ_TIMEOUT`); the slowest test is the
//! handshake time-out (10 s, a fixed protocol constant), which runs in parallel with the
//! others; the whole file takes well under 30 s with the default two test threads.
//!
//! A case whose reply differs from RabbitMQ/docs is kept as written and marked
//! `#[ignore = "weir bug: …"]` until the broker is fixed; the test is the specification. None
//! is ignored today.

mod common;
mod raw;

use std::time::{Duration, Instant};

use common::Broker;
use raw::*;

/// Deep enough that a recursive parser would overflow its stack; far past the 64 allowed.
const HOSTILE_TABLE_DEPTH: usize = 10_000;
/// The configured maximum message size (`ConnectionLimits::default().message_size_max`).
const MESSAGE_SIZE_MAX_BYTES: u64 = 128 << 20;
/// The broker's handshake time-out (`weir_amqp::HANDSHAKE_TIMEOUT`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// One broker per test, in its own directory.
struct Fixture {
    broker: Broker,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = Broker::start(&dir.path().join("data"), &[]);
        Fixture { broker, _dir: dir }
    }

    fn port(&self) -> u16 {
        self.broker.port
    }

    /// After the hostile connection, another connection is served normally: declare,
    /// publish, get the message back.
    fn assert_still_serves(&self, name: &str) {
        let mut client = RawClient::open_with_channel(self.port());
        let queue = format!("still-serves-{name}");
        client.declare_publish_get(1, &queue, format!("after {name}").as_bytes());
    }
}

#[test]
fn http_request_instead_of_protocol_header_gets_the_header_back() {
    let fixture = Fixture::start();
    for hello in [&b"HTTP/1.1 200 OK\r\n\r\n"[..], b"AMQP\x00\x00\x09\x02"] {
        let mut client = RawClient::connect(fixture.port());
        client.send(hello);
        let reply = client.read_raw(8, Instant::now() + READ_TIMEOUT).expect("the protocol header");
        assert_eq!(reply, PROTOCOL_HEADER, "for {hello:?}");
        client.expect_socket_closed(READ_TIMEOUT, "after the protocol header echo");
    }
    fixture.assert_still_serves("bad-protocol-header");
}

#[test]
fn frame_larger_than_frame_max_is_501_decided_from_the_header() {
    let fixture = Fixture::start();
    let mut client = RawClient::open(fixture.port(), FRAME_MIN_SIZE, 0);
    client.open_channel(1);
    // A body frame whose payload is exactly frame_max is still accepted (RabbitMQ's slack).
    let exact = vec![b'x'; FRAME_MIN_SIZE as usize];
    let mut sent = publish_method(1, "", "boundary");
    sent.extend(content_header_frame(1, exact.len() as u64, &NO_PROPERTIES));
    sent.extend(frame(FRAME_TYPE_BODY, 1, &exact));
    client.send(&queue_declare(1, "boundary"));
    client.next_method("queue.declare-ok");
    client.send(&sent);
    // Proof it was accepted: the connection still answers on the channel.
    client.send(&basic_qos(1));
    let reply = client.next_method("after a body frame of exactly frame_max");
    assert!(format!("{reply:?}").contains("QosOk"), "expected basic.qos-ok, got {reply:?}");
    // One byte more is refused from the 7-byte header alone: no payload is sent.
    let mut header = vec![FRAME_TYPE_BODY];
    header.extend(1u16.to_be_bytes());
    header.extend((FRAME_MIN_SIZE + 1).to_be_bytes());
    client.send(&header);
    client.expect_connection_close(501, 0, 0, &header);
    fixture.assert_still_serves("oversized-frame");
}

#[test]
fn bad_frame_end_byte_is_501() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let mut sent = basic_qos(1);
    *sent.last_mut().expect("a frame") = 0x00;
    client.send(&sent);
    client.expect_connection_close(501, 0, 0, &sent);
    fixture.assert_still_serves("bad-frame-end");
}

#[test]
fn unknown_frame_type_is_501() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let sent = frame(7, 0, &[]);
    client.send(&sent);
    client.expect_connection_close(501, 0, 0, &sent);
    fixture.assert_still_serves("unknown-frame-type");
}

#[test]
fn method_inside_content_is_505_naming_basic_publish() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let mut sent = publish_method(1, "", "q");
    sent.extend(content_header_frame(1, 10, &NO_PROPERTIES));
    sent.extend(basic_qos(1)); // instead of the 10-byte body
    client.send(&sent);
    // RabbitMQ (rabbit_command_assembler) blames the method whose content was interrupted.
    let text = client.expect_connection_close(505, CLASS_BASIC, METHOD_BASIC_PUBLISH, &sent);
    assert_eq!(text, "UNEXPECTED_FRAME - expected content body, got non content body frame instead");
    fixture.assert_still_serves("method-inside-content");
}

#[test]
fn content_header_on_channel_0_is_505() {
    let fixture = Fixture::start();
    let mut client = RawClient::open(fixture.port(), SERVER_FRAME_MAX, 0);
    let sent = content_header_frame(0, 0, &NO_PROPERTIES);
    client.send(&sent);
    client.expect_connection_close(505, 0, 0, &sent);
    fixture.assert_still_serves("header-on-channel-0");
}

#[test]
fn body_without_publish_is_505() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let sent = frame(FRAME_TYPE_BODY, 1, b"orphan body");
    client.send(&sent);
    let text = client.expect_connection_close(505, 0, 0, &sent);
    assert_eq!(text, "UNEXPECTED_FRAME - expected method frame, got non method frame instead");
    fixture.assert_still_serves("body-without-publish");
}

#[test]
fn heartbeat_on_channel_1_is_505() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let sent = frame(FRAME_TYPE_HEARTBEAT, 1, &[]);
    client.send(&sent);
    client.expect_connection_close(505, 0, 0, &sent);
    fixture.assert_still_serves("heartbeat-on-channel-1");
}

// ---------------------------------------------------------------------------------------
// Channel state: 504

#[test]
fn second_channel_open_is_504() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let sent = channel_open(1);
    client.send(&sent);
    let text = client.expect_connection_close(504, CLASS_CHANNEL, METHOD_CHANNEL_OPEN, &sent);
    assert!(text.contains("second 'channel.open' seen"), "{text}");
    fixture.assert_still_serves("second-channel-open");
}

#[test]
fn method_on_unopened_channel_is_504() {
    let fixture = Fixture::start();
    let mut client = RawClient::open(fixture.port(), SERVER_FRAME_MAX, 0);
    let sent = queue_declare(7, "never-opened");
    client.send(&sent);
    let text = client.expect_connection_close(504, CLASS_QUEUE, METHOD_QUEUE_DECLARE, &sent);
    assert!(text.contains("expected 'channel.open'"), "{text}");
    fixture.assert_still_serves("method-on-unopened-channel");
}

// ---------------------------------------------------------------------------------------
// Field syntax: 502, and no stack overflow

#[test]
fn table_nested_10000_deep_in_queue_declare_arguments_is_502() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let sent = queue_declare_with_raw_arguments(1, "deep", &nested_field_table(HOSTILE_TABLE_DEPTH));
    assert!(sent.len() < SERVER_FRAME_MAX as usize, "the hostile frame must pass the size check");
    client.send(&sent);
    client.expect_connection_close(502, CLASS_QUEUE, METHOD_QUEUE_DECLARE, &sent);
    fixture.assert_still_serves("deep-table-in-arguments");
}

#[test]
fn table_nested_10000_deep_in_publish_headers_is_502() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let mut properties = PROPERTY_FLAG_HEADERS.to_be_bytes().to_vec();
    properties.extend(nested_field_table(HOSTILE_TABLE_DEPTH));
    let mut sent = publish_method(1, "", "deep");
    sent.extend(content_header_frame(1, 0, &properties));
    assert!(sent.len() < SERVER_FRAME_MAX as usize, "the hostile frame must pass the size check");
    client.send(&sent);
    client.expect_connection_close(502, CLASS_BASIC, METHOD_BASIC_PUBLISH, &sent);
    fixture.assert_still_serves("deep-table-in-headers");
}

// ---------------------------------------------------------------------------------------
// Negotiation and unknown methods: 530, 540

#[test]
fn tune_ok_frame_max_outside_4096_to_server_max_is_530() {
    let fixture = Fixture::start();
    for frame_max in [FRAME_MIN_SIZE - 1, 0, SERVER_FRAME_MAX + 1] {
        let mut client = RawClient::connect(fixture.port());
        client.send(&PROTOCOL_HEADER);
        client.next_method("connection.start");
        client.send(&start_ok());
        client.next_method("connection.tune");
        let sent = tune_ok(SERVER_CHANNEL_MAX, frame_max, 0);
        client.send(&sent);
        let text = client.expect_connection_close(530, CLASS_CONNECTION, METHOD_CONNECTION_TUNE_OK, &sent);
        assert!(text.starts_with("NOT_ALLOWED"), "frame_max {frame_max}: {text}");
    }
    fixture.assert_still_serves("tune-ok-frame-max");
}

#[test]
fn unknown_class_or_method_is_540() {
    let fixture = Fixture::start();
    for (class_id, method_id) in [(99, 10), (CLASS_BASIC, 999)] {
        let mut client = RawClient::open_with_channel(fixture.port());
        let sent = raw_method_frame(1, class_id, method_id, &[]);
        client.send(&sent);
        client.expect_connection_close(540, class_id, method_id, &sent);
    }
    fixture.assert_still_serves("unknown-method");
}

// ---------------------------------------------------------------------------------------
// Message size: 406 on the channel, connection kept

#[test]
fn declared_body_size_over_128_mib_is_406_on_the_channel() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let body_size = MESSAGE_SIZE_MAX_BYTES + 1;
    let mut sent = publish_method(1, "", "big");
    sent.extend(content_header_frame(1, body_size, &NO_PROPERTIES));
    client.send(&sent); // and never the body: the size is refused at the header
    let text = client.expect_channel_close(1, 406, CLASS_BASIC, METHOD_BASIC_PUBLISH, &sent);
    assert!(text.starts_with(&format!("PRECONDITION_FAILED - message size {body_size} is larger than")), "{text}");
    // The connection itself is fine: another channel on it works.
    client.open_channel(2);
    client.declare_publish_get(2, "after-406", b"small");
    fixture.assert_still_serves("message-too-large");
}

/// A client streams publish, header and body frames without waiting; by the time the 406
/// arrives the first body frames are already on the wire. RabbitMQ drops everything on a
/// closing channel except close/close-ok (AMQP-NOTES §3.1); they must not become a 505.
#[test]
fn body_frames_in_flight_after_a_406_are_dropped() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    let mut sent = publish_method(1, "", "big");
    sent.extend(content_header_frame(1, MESSAGE_SIZE_MAX_BYTES + 1, &NO_PROPERTIES));
    let chunk = vec![0u8; 4000];
    for _ in 0..3 {
        sent.extend(frame(FRAME_TYPE_BODY, 1, &chunk));
    }
    client.send(&sent);
    client.expect_channel_close(1, 406, CLASS_BASIC, METHOD_BASIC_PUBLISH, &sent);
    client.open_channel(2);
    client.declare_publish_get(2, "after-406-in-flight", b"small");
    fixture.assert_still_serves("in-flight-after-406");
}

/// The same rule reached without the message-size path: a synchronous channel error (406
/// `confirm.select` on a transactional channel) followed, in the same write, by a publish
/// with its header and body. Everything after the failing method belongs to a channel the
/// broker is closing and must be dropped, not answered with a connection-level 505.
#[test]
fn content_frames_on_a_closing_channel_are_dropped() {
    let fixture = Fixture::start();
    let mut client = RawClient::open_with_channel(fixture.port());
    client.send(&tx_select(1));
    let (_, select_ok) = client.next_method("tx.select-ok");
    assert!(format!("{select_ok:?}").contains("SelectOk"), "got {select_ok:?}");
    let mut sent = confirm_select(1); // 406: cannot switch from tx to confirm mode
    sent.extend(publish_frames(1, "", "dropped", b"in flight"));
    client.send(&sent);
    let text = client.expect_channel_close(1, 406, CLASS_CONFIRM, METHOD_CONFIRM_SELECT, &sent);
    assert!(text.starts_with("PRECONDITION_FAILED"), "{text}");
    client.open_channel(2);
    client.declare_publish_get(2, "after-closing-channel", b"small");
    fixture.assert_still_serves("closing-channel-content");
}

// ---------------------------------------------------------------------------------------
// Time-outs

#[test]
fn silent_client_with_heartbeat_1_s_is_closed_after_two_intervals() {
    let fixture = Fixture::start();
    let mut client = RawClient::open(fixture.port(), SERVER_FRAME_MAX, 1);
    // From here on the client sends nothing at all (not even heartbeats). Weir may send
    // heartbeats; `expect_socket_closed` allows those and nothing else.
    let silent_for = client.expect_socket_closed(Duration::from_secs(4), "silent after heartbeat 1 s");
    assert!(
        silent_for >= Duration::from_millis(1900) && silent_for <= Duration::from_millis(3500),
        "closed after {silent_for:?}; expected two 1 s intervals plus up to one check tick"
    );
    fixture.assert_still_serves("heartbeat-timeout");
}

/// The slow one (10 s, the protocol's handshake time-out). Both silent shapes run at once
/// so the test costs one time-out, and with the default two test threads the other tests
/// run beside it.
#[test]
fn silent_client_is_closed_after_the_10_s_handshake_timeout() {
    let fixture = Fixture::start();
    let started = Instant::now();
    let mut nothing_sent = RawClient::connect(fixture.port());
    let mut header_only = RawClient::connect(fixture.port());
    header_only.send(&PROTOCOL_HEADER);
    header_only.next_method("connection.start");
    let bound = HANDSHAKE_TIMEOUT + Duration::from_secs(2);
    for (client, shape) in [(&mut nothing_sent, "nothing sent"), (&mut header_only, "header, then nothing")] {
        let left = bound.saturating_sub(started.elapsed());
        client.expect_socket_closed(left, shape);
        let closed_after = started.elapsed();
        assert!(
            closed_after >= HANDSHAKE_TIMEOUT - Duration::from_millis(500),
            "{shape}: closed after {closed_after:?}"
        );
    }
    fixture.assert_still_serves("handshake-timeout");
}
