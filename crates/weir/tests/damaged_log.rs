//! The real broker on a damaged data directory: a flipped byte inside a sealed segment, and a
//! torn record at the end of the log. Neither may crash the broker; both must be reported
//! with their location; only the torn (never confirmed) tail may be dropped.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{runtime, Broker, SMALL_LOG};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

const BODY_BYTES: usize = 600;

fn body(i: usize) -> Vec<u8> {
    let mut body = format!("MSG-{i:05}-").into_bytes();
    body.resize(BODY_BYTES, b'x');
    body
}

async fn channel(broker: &Broker) -> (Connection, Channel) {
    let connection = Connection::connect(&broker.url(), ConnectionProperties::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    channel
        .queue_declare("q".into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    (connection, channel)
}

async fn publish_confirmed(channel: &Channel, count: usize) {
    let mut confirms = Vec::new();
    for i in 0..count {
        let properties = BasicProperties::default().with_delivery_mode(2);
        confirms.push(
            channel
                .basic_publish("".into(), "q".into(), BasicPublishOptions::default(), &body(i), properties)
                .await
                .unwrap(),
        );
    }
    for confirm in confirms {
        assert!(confirm.await.unwrap().is_ack());
    }
}

/// Bodies left in the queue, by index, taken with auto-ack.
async fn drain(channel: &Channel) -> Vec<usize> {
    let mut seen = Vec::new();
    while let Some(message) = channel.basic_get("q".into(), BasicGetOptions { no_ack: true }).await.unwrap() {
        let data = &message.delivery.data;
        let index: usize = std::str::from_utf8(&data[4..9]).unwrap().parse().unwrap();
        assert_eq!(data, &body(index), "an intact message arrives intact");
        seen.push(index);
    }
    seen
}

fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
        .collect();
    files.sort();
    files
}

fn wait_for_log(broker: &Broker, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = broker.log_text();
        if log.contains(needle) {
            return log;
        }
        assert!(Instant::now() < deadline, "the broker never logged {needle:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn corrupted_byte_in_a_sealed_segment_is_reported_and_the_rest_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut broker = Broker::start(&data_dir, &SMALL_LOG);
    let runtime = runtime();
    runtime.block_on(async {
        let (connection, channel) = channel(&broker).await;
        publish_confirmed(&channel, 3000).await;
        connection.close(200, "".into()).await.unwrap();
    });
    broker.stop();

    // Flip one byte inside a message body in a sealed (not the newest) segment.
    let files = segments(&data_dir);
    assert!(files.len() >= 3, "the messages span several segments: {files:?}");
    let sealed = &files[1];
    let mut bytes = std::fs::read(sealed).unwrap();
    let positions: Vec<usize> = bytes.windows(4).enumerate().filter(|(_, w)| w == b"MSG-").map(|(i, _)| i).collect();
    let at = positions[positions.len() / 2];
    let damaged: usize = std::str::from_utf8(&bytes[at + 4..at + 9]).unwrap().parse().unwrap();
    bytes[at + 100] ^= 0x5a;
    std::fs::write(sealed, &bytes).unwrap();
    let file_name = sealed.file_name().unwrap().to_str().unwrap().to_string();

    broker.restart_after_kill9();
    runtime.block_on(async {
        let (_connection, channel) = channel(&broker).await;
        let seen = drain(&channel).await;
        let expected: Vec<usize> = (0..3000).filter(|i| *i != damaged).collect();
        let first_difference = seen.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(
            seen == expected,
            "every message but the damaged one ({damaged}), in order: got {} messages, first difference at {first_difference:?}",
            seen.len()
        );

        // The damage is reported with its place, by the scrub or by the read that found it.
        let log = wait_for_log(&broker, &file_name);
        assert!(log.contains("at byte"), "{log}");

        // New persistent data is refused now; the operator must look (SPEC section 6).
        let properties = BasicProperties::default().with_delivery_mode(2);
        let confirmation = channel
            .basic_publish("".into(), "q".into(), BasicPublishOptions::default(), b"after", properties)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirmation.is_nack(), "a persistent publish is refused while the log is damaged");
        // Transient work goes on.
        channel.queue_declare("t".into(), QueueDeclareOptions::default(), FieldTable::default()).await.unwrap();
        channel
            .basic_publish("".into(), "t".into(), BasicPublishOptions::default(), b"hi", BasicProperties::default())
            .await
            .unwrap();
        let got =
            channel.basic_get("t".into(), BasicGetOptions { no_ack: true }).await.unwrap().expect("transient message");
        assert_eq!(got.delivery.data, b"hi");
    });
}

#[test]
fn torn_tail_is_truncated_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut broker = Broker::start(&data_dir, &SMALL_LOG);
    let runtime = runtime();
    runtime.block_on(async {
        let (_connection, channel) = channel(&broker).await;
        publish_confirmed(&channel, 100).await;
    });
    broker.kill9();

    // What a crash in the middle of a write leaves: the next record (LSN 102: one queue
    // declare and 100 enqueues came before it) with only part of its bytes on disk.
    let newest = segments(&data_dir).pop().unwrap();
    let segment_id: u32 = newest.file_name().unwrap().to_str().unwrap()[4..14].parse().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    let end = (bytes.iter().rposition(|b| *b != 0).unwrap() + 1).next_multiple_of(8);
    let mut record = Vec::new();
    weir_log::encode_record_into(&mut record, 102, segment_id, 0x12, 1, &body(100));
    let torn = &record[..record.len() / 2];
    bytes[end..end + torn.len()].copy_from_slice(torn);
    std::fs::write(&newest, &bytes).unwrap();

    broker.restart_after_kill9();
    let log = wait_for_log(&broker, "torn tail: segment");
    assert!(log.contains("dropped"), "{log}");
    runtime.block_on(async {
        let (_connection, channel) = channel(&broker).await;
        let seen = drain(&channel).await;
        assert!(seen == (0..100).collect::<Vec<_>>(), "every confirmed message survives a torn tail: got {seen:?}");
        // The log accepts writes again after truncating the tail.
        publish_confirmed(&channel, 1).await;
    });
}
