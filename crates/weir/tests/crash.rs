//! Crash loop: publish with confirms from several connections, `kill -9` the broker at a
//! random moment, restart it, and check the queue.
//!
//! Invariants checked after every restart:
//! - every confirmed message that was not consumed is there, exactly once;
//! - nothing is there that was never published, and no body is corrupted;
//! - messages consumed and acked before a later confirmed publish on the same connection
//!   never come back (the ack reached the log in the same or an earlier fsync).
//!
//! Bounded: `WEIR_CRASH_ROUNDS` rounds (default 50), each publishing for at most ~400 ms.
//! One seed reproduces the schedule: `WEIR_SEED=<n>`; every failure prints it.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{crash_schedule, durable, runtime, Broker, SMALL_LOG};
use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const QUEUE: &str = "crash";
const PUBLISHERS: u64 = 3;

/// Body: 8-byte id, then a pattern derived from the id, of a length derived from the id.
fn body(id: u64) -> Vec<u8> {
    let len = 8 + (id.wrapping_mul(2_654_435_761) % 600) as usize;
    let mut body = id.to_le_bytes().to_vec();
    body.extend((8..len).map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8));
    body
}

fn parse(bytes: &[u8]) -> Option<u64> {
    let id = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    (body(id) == bytes).then_some(id)
}

/// Consume everything in the queue, ack it, and make the acks durable with a confirmed
/// publish on the same connection. Returns the ids seen (with repeats, if any).
async fn drain(url: &str, seed: u64) -> Vec<u64> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.unwrap();
    let queue = channel.queue_declare(QUEUE.into(), durable(), FieldTable::default()).await.unwrap();
    let expected = queue.message_count() as usize;
    channel.basic_qos(500, BasicQosOptions::default()).await.unwrap();
    let mut consumer = channel
        .basic_consume(QUEUE.into(), "drain".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut seen = Vec::with_capacity(expected);
    while seen.len() < expected {
        let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: drain stalled at {}/{expected}", seen.len()))
            .expect("stream open")
            .expect("delivery");
        let id = parse(&delivery.data).unwrap_or_else(|| panic!("seed {seed}: corrupted body {:?}", &delivery.data));
        seen.push(id);
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    // Barrier: a confirmed publish after the acks on the same connection.
    let barrier = connection.create_channel().await.unwrap();
    barrier.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    // Durable, so the barrier's confirm waits for an fsync that also covers the acks.
    barrier.queue_declare("barrier".into(), durable(), FieldTable::default()).await.unwrap();
    let confirmation = barrier
        .basic_publish(
            "".into(),
            "barrier".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(confirmation.is_ack(), "seed {seed}: barrier confirmed");
    let _ = connection.close(200, "drained".into()).await;
    seen
}

/// Publish from one connection until the broker dies; record what was confirmed.
async fn publish_until_killed(
    url: String,
    publisher: u64,
    round: u64,
    published: Arc<Mutex<HashSet<u64>>>,
    confirmed: Arc<Mutex<HashSet<u64>>>,
) {
    let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else {
        return;
    };
    if channel.confirm_select(ConfirmSelectOptions::default()).await.is_err() {
        return;
    }
    if channel.queue_declare(QUEUE.into(), durable(), FieldTable::default()).await.is_err() {
        return;
    }
    let mut pending = Vec::new();
    for n in 0.. {
        let id = (round << 40) | (publisher << 32) | n;
        published.lock().unwrap().insert(id);
        let properties = BasicProperties::default().with_delivery_mode(2);
        let Ok(confirm) =
            channel.basic_publish("".into(), QUEUE.into(), BasicPublishOptions::default(), &body(id), properties).await
        else {
            return;
        };
        pending.push((id, confirm));
        // A window of 64 outstanding confirms.
        if pending.len() >= 64 {
            for (id, confirm) in pending.drain(..) {
                match confirm.await {
                    Ok(c) if c.is_ack() => {
                        confirmed.lock().unwrap().insert(id);
                    }
                    _ => return,
                }
            }
        }
    }
}

#[test]
fn kill9_loses_no_confirmed_message_and_duplicates_none() {
    let (seed, rounds) = crash_schedule("crash test", 50);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), &SMALL_LOG);
    let runtime = runtime();

    let mut published_all: HashSet<u64> = HashSet::new();
    let mut confirmed_outstanding: HashSet<u64> = HashSet::new();
    let mut acked: HashSet<u64> = HashSet::new();
    let mut total_confirmed = 0usize;

    for round in 1..=rounds {
        // Verify what survived, then consume it.
        let seen = runtime.block_on(drain(&broker.url(), seed));
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for id in &seen {
            *counts.entry(*id).or_default() += 1;
        }
        let log = || broker.log_text();
        for (id, count) in &counts {
            assert_eq!(*count, 1, "seed {seed} round {round}: message {id:#x} delivered {count} times\n{}", log());
            assert!(published_all.contains(id), "seed {seed} round {round}: {id:#x} was never published");
            assert!(!acked.contains(id), "seed {seed} round {round}: acked message {id:#x} came back\n{}", log());
        }
        let missing: Vec<_> = confirmed_outstanding.iter().filter(|id| !counts.contains_key(id)).collect();
        assert!(
            missing.is_empty(),
            "seed {seed} round {round}: {} confirmed messages lost, e.g. {:#x?}\n{}",
            missing.len(),
            &missing[..missing.len().min(5)],
            log()
        );
        acked.extend(counts.keys());
        confirmed_outstanding.clear();

        // Publish from several connections and kill the broker at a random moment.
        let published = Arc::new(Mutex::new(HashSet::new()));
        let confirmed = Arc::new(Mutex::new(HashSet::new()));
        let kill_after = Duration::from_millis(rng.gen_range(20..400));
        runtime.block_on(async {
            let tasks: Vec<_> = (0..PUBLISHERS)
                .map(|p| {
                    tokio::spawn(publish_until_killed(
                        broker.url(),
                        p,
                        round,
                        Arc::clone(&published),
                        Arc::clone(&confirmed),
                    ))
                })
                .collect();
            tokio::time::sleep(kill_after).await;
            broker.kill9();
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
            }
        });
        let confirmed = confirmed.lock().unwrap().clone();
        total_confirmed += confirmed.len();
        published_all.extend(published.lock().unwrap().iter());
        confirmed_outstanding = confirmed;
        broker.restart_after_kill9();
    }
    // The last round's confirmed messages are checked by a final drain.
    let seen = runtime.block_on(drain(&broker.url(), seed));
    let seen: HashSet<u64> = seen.into_iter().collect();
    assert!(confirmed_outstanding.is_subset(&seen), "seed {seed}: confirmed messages lost in the last round");
    assert!(total_confirmed > 0, "seed {seed}: the test confirmed nothing, so it proved nothing");
    eprintln!("crash test: {rounds} rounds, {total_confirmed} confirmed messages, none lost or duplicated");
}
