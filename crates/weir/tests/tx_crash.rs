//! Transactions under `kill -9`: each transaction publishes to two durable queues; after
//! every restart each transaction is either wholly there or not at all, and every
//! transaction whose `tx.commit-ok` arrived is there.
//!
//! Bounded: `WEIR_CRASH_ROUNDS` rounds (default 20). `WEIR_SEED=<n>` reproduces the schedule;
//! failures print the seed.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{crash_schedule, durable, persistent, runtime, Broker, SMALL_LOG};
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const QUEUES: [&str; 2] = ["tx-a", "tx-b"];
const MESSAGES_PER_QUEUE: u64 = 3;

/// Take everything from both queues (auto-ack), grouped by transaction id.
async fn drain(url: &str) -> BTreeMap<u64, Vec<(usize, u64)>> {
    let connection = Connection::connect(url, ConnectionProperties::default()).await.expect("connect");
    let channel = connection.create_channel().await.unwrap();
    let mut by_tx: BTreeMap<u64, Vec<(usize, u64)>> = BTreeMap::new();
    for (index, queue) in QUEUES.iter().enumerate() {
        channel.queue_declare((*queue).into(), durable(), FieldTable::default()).await.unwrap();
        while let Some(message) = channel.basic_get((*queue).into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            let data = &message.delivery.data;
            let tx = u64::from_le_bytes(data[..8].try_into().unwrap());
            let n = u64::from_le_bytes(data[8..16].try_into().unwrap());
            by_tx.entry(tx).or_default().push((index, n));
        }
    }
    // A durable-queue transaction after the auto-acks makes them durable too (same connection).
    channel.tx_select().await.unwrap();
    channel.queue_declare("tx-barrier".into(), durable(), FieldTable::default()).await.unwrap();
    channel
        .basic_publish("".into(), "tx-barrier".into(), BasicPublishOptions::default(), b"x", persistent())
        .await
        .unwrap();
    channel.tx_commit().await.unwrap();
    let _ = connection.close(200, "".into()).await;
    by_tx
}

async fn transact_until_killed(
    url: String,
    round: u64,
    started: Arc<Mutex<HashSet<u64>>>,
    committed: Arc<Mutex<HashSet<u64>>>,
) {
    let Ok(connection) = Connection::connect(&url, ConnectionProperties::default()).await else { return };
    let Ok(channel) = connection.create_channel().await else { return };
    if channel.tx_select().await.is_err() {
        return;
    }
    for t in 0.. {
        let tx = (round << 32) | t;
        started.lock().unwrap().insert(tx);
        for queue in QUEUES {
            for n in 0..MESSAGES_PER_QUEUE {
                let mut body = tx.to_le_bytes().to_vec();
                body.extend(n.to_le_bytes());
                body.resize(200, b'.');
                if channel
                    .basic_publish("".into(), queue.into(), BasicPublishOptions::default(), &body, persistent())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
        if channel.tx_commit().await.is_err() {
            return;
        }
        committed.lock().unwrap().insert(tx);
    }
}

#[test]
fn transactions_are_all_or_nothing_across_kill9() {
    let (seed, rounds) = crash_schedule("tx crash test", 20);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(&dir.path().join("data"), &SMALL_LOG);
    let runtime = runtime();
    let mut started_all: HashSet<u64> = HashSet::new();
    let mut committed_outstanding: HashSet<u64> = HashSet::new();
    let mut total_committed = 0;
    for round in 1..=rounds {
        let found = runtime.block_on(drain(&broker.url()));
        for (tx, messages) in &found {
            assert!(started_all.contains(tx), "seed {seed} round {round}: transaction {tx:#x} was never started");
            let mut expected: Vec<(usize, u64)> =
                (0..QUEUES.len()).flat_map(|q| (0..MESSAGES_PER_QUEUE).map(move |n| (q, n))).collect();
            let mut got = messages.clone();
            got.sort();
            expected.sort();
            assert_eq!(
                got,
                expected,
                "seed {seed} round {round}: transaction {tx:#x} is partial\n{}",
                broker.log_text()
            );
        }
        for tx in &committed_outstanding {
            assert!(
                found.contains_key(tx),
                "seed {seed} round {round}: committed transaction {tx:#x} lost\n{}",
                broker.log_text()
            );
        }
        let started = Arc::new(Mutex::new(HashSet::new()));
        let committed = Arc::new(Mutex::new(HashSet::new()));
        let kill_after = Duration::from_millis(rng.gen_range(20..300));
        runtime.block_on(async {
            let tasks: Vec<_> = (0..2)
                .map(|p| {
                    tokio::spawn(transact_until_killed(
                        broker.url(),
                        (round << 1) | p,
                        Arc::clone(&started),
                        Arc::clone(&committed),
                    ))
                })
                .collect();
            tokio::time::sleep(kill_after).await;
            broker.kill9();
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
            }
        });
        started_all.extend(started.lock().unwrap().iter());
        committed_outstanding = committed.lock().unwrap().clone();
        total_committed += committed_outstanding.len();
        broker.restart_after_kill9();
    }
    let found = runtime.block_on(drain(&broker.url()));
    assert!(committed_outstanding.iter().all(|tx| found.contains_key(tx)), "seed {seed}: committed transactions lost");
    assert!(total_committed > 0, "seed {seed}: nothing was committed, so nothing was proved");
    eprintln!("tx crash test: {rounds} rounds, {total_committed} committed transactions, all whole");
}
