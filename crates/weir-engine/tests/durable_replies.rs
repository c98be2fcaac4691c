//! Replies that report durable changes leave only after the fsync that made them durable: with
//! that fsync failing, the client gets an error instead of the reply (the engine on a simulated
//! disk whose next fsync fails).

mod common;

use common::Client;
use weir_engine::{Command, Engine, EngineConfig, Event};
use weir_log::SimStorage;

/// `queue.purge` of persistent messages logs their settlement; purge-ok must wait for its fsync,
/// even when the purge is the only thing the turn logged.
#[test]
fn purge_ok_waits_for_the_fsync_of_the_purge() {
    let storage = SimStorage::new();
    let (engine, _) = Engine::start(storage.clone(), EngineConfig::default()).expect("start");
    let mut client = Client::connect(engine.handle());
    client.declare("q");
    client.publish("q", b"persistent".to_vec());
    storage.fail_sync_after(0);
    let origin = client.origin(1);
    engine.handle().send_blocking(Command::QueuePurge { origin, queue: "q".into(), no_wait: false }).unwrap();
    match client.next_event() {
        Event::ChannelError { .. } => {}
        other => panic!("purge-ok must not be sent when the purge's fsync failed: got {other:?}"),
    }
}
