//! The crash model: random workloads over `SimStorage`, crashed at random points (including
//! between a write and its fsync, mid-rollover, mid-checkpoint and mid-recovery), reopened and
//! checked against a model of what was confirmed.
//!
//! Checked after every reopen:
//! - every record whose `commit` returned `Ok` is replayed exactly once (if after the loaded
//!   checkpoint), in LSN order, with identical kind, version and bytes;
//! - records beyond the last confirmed one may appear only as a prefix of the batch that was in
//!   flight, with identical bytes (they were written but not confirmed);
//! - nothing is reported as corruption (the workload never damages confirmed data);
//! - LSNs continue at `last_lsn + 1`; a poisoned log refuses writes.
//!
//! One seed reproduces a run: `WEIR_SEED=<seed> cargo test -p weir-log --test crash_model`.
//! `WEIR_SEEDS=<n>` changes how many seeds run (default 1000). Every failure prints its seed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use weir_log::{load_checkpoint, write_checkpoint, Log, LogConfig, LogError, Lsn, RecordPos, SimStorage};

const DEFAULT_SEEDS: u64 = 1000;
const SEGMENT_BYTES: u32 = 16 * 1024;
const MAX_SESSIONS: u32 = 6;
const MAX_STEPS_PER_SESSION: u32 = 30;

/// How often each interesting path was taken over the whole run (printed, and checked so a
/// change that makes the workload stop reaching a path is noticed).
#[derive(Default)]
struct Coverage {
    commits: AtomicU64,
    records_confirmed: AtomicU64,
    reopens: AtomicU64,
    torn_tails: AtomicU64,
    in_flight_recovered: AtomicU64,
    poisoned: AtomicU64,
    no_space: AtomicU64,
    releases: AtomicU64,
    checkpoints: AtomicU64,
    reclaimed: AtomicU64,
    failed_opens: AtomicU64,
    write_behinds: AtomicU64,
}

static COVERAGE: Coverage = Coverage {
    commits: AtomicU64::new(0),
    records_confirmed: AtomicU64::new(0),
    reopens: AtomicU64::new(0),
    torn_tails: AtomicU64::new(0),
    in_flight_recovered: AtomicU64::new(0),
    poisoned: AtomicU64::new(0),
    no_space: AtomicU64::new(0),
    releases: AtomicU64::new(0),
    checkpoints: AtomicU64::new(0),
    reclaimed: AtomicU64::new(0),
    failed_opens: AtomicU64::new(0),
    write_behinds: AtomicU64::new(0),
};

fn count(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelRecord {
    kind: u8,
    version: u8,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Model {
    /// Confirmed records; index = lsn - 1.
    durable: Vec<ModelRecord>,
    /// Appended since the last confirmed commit (lsn = durable.len() + 1 + index).
    in_flight: Vec<ModelRecord>,
    positions: HashMap<Lsn, RecordPos>,
    /// LSN of the newest checkpoint whose write returned Ok.
    checkpoint: Option<Lsn>,
}

fn checkpoint_payload(lsn: Lsn) -> Vec<u8> {
    format!("checkpoint at {lsn}").into_bytes()
}

fn random_record(rng: &mut StdRng, max_payload: usize) -> ModelRecord {
    let len = match rng.gen_range(0..100) {
        0..=59 => rng.gen_range(0..64),
        60..=94 => rng.gen_range(64..2048),
        95..=98 => rng.gen_range(2048..8192),
        _ => rng.gen_range(8192..=max_payload),
    };
    let mut payload = vec![0u8; len];
    rng.fill_bytes(&mut payload);
    ModelRecord { kind: rng.gen_range(weir_log::FIRST_USER_KIND..=u8::MAX), version: rng.gen(), payload }
}

fn seeds() -> Vec<u64> {
    if let Ok(seed) = std::env::var("WEIR_SEED") {
        return vec![seed.trim().parse().expect("WEIR_SEED must be a u64")];
    }
    let count = std::env::var("WEIR_SEEDS").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_SEEDS);
    let base: u64 = rand::random();
    (0..count).map(|i| base.wrapping_add(i)).collect()
}

#[test]
fn crash_model_random_workloads() {
    let seeds = seeds();
    eprintln!("crash model: {} seeds starting at {}", seeds.len(), seeds[0]);
    let many = seeds.len() >= 100;
    for seed in seeds {
        run_seed(seed);
    }
    let c = &COVERAGE;
    let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    eprintln!(
        "coverage: {} commits, {} records confirmed, {} reopens ({} failed), {} torn tails, {} in-flight records recovered, \
         {} poisoned, {} no-space, {} releases, {} checkpoints, {} reclaimed segments, {} write-behinds",
        get(&c.commits), get(&c.records_confirmed), get(&c.reopens), get(&c.failed_opens), get(&c.torn_tails),
        get(&c.in_flight_recovered), get(&c.poisoned), get(&c.no_space), get(&c.releases), get(&c.checkpoints),
        get(&c.reclaimed), get(&c.write_behinds)
    );
    if many {
        for (name, counter) in [
            ("torn tails", &c.torn_tails),
            ("poisoned logs", &c.poisoned),
            ("no-space errors", &c.no_space),
            ("releases", &c.releases),
            ("in-flight recoveries", &c.in_flight_recovered),
            ("failed opens", &c.failed_opens),
            ("write-behinds", &c.write_behinds),
        ] {
            assert!(get(counter) > 0, "the workload never reached: {name}");
        }
    }
}

fn run_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut config = LogConfig::with_segment_size(SEGMENT_BYTES);
    config.spare_segments = rng.gen_range(0..=2);
    // Small thresholds so batches are often written behind (to the page cache before their
    // commit); a crash may then keep any prefix of them, never a confirmed record less.
    config.write_behind_bytes = if rng.gen_ratio(1, 4) { usize::MAX } else { rng.gen_range(256..=8192) };
    let max_payload = config.max_record_bytes as usize;
    let mut storage = SimStorage::new();
    let mut model = Model::default();
    for session in 0..rng.gen_range(2..=MAX_SESSIONS) {
        let ctx = format!("seed {seed} session {session}");
        if rng.gen_ratio(1, 6) {
            storage.power_cut_after(rng.gen_range(0..8));
        }
        if let Some(log) = reopen_and_check(&storage, &config, &mut model, &ctx) {
            run_session(log, &storage, &mut model, &mut rng, max_payload, &ctx);
        }
        storage = storage.crash(rng.gen());
    }
    // A final reopen after the last crash checks the last session's work.
    reopen_and_check(&storage, &config, &mut model, &format!("seed {seed} final"));
}

/// Opens the log after a crash and checks the replay against the model. `None` when the open
/// itself hit the injected power cut.
fn reopen_and_check(storage: &SimStorage, config: &LogConfig, model: &mut Model, ctx: &str) -> Option<Log<SimStorage>> {
    let checkpoint = load_checkpoint(storage).unwrap_or_else(|e| panic!("{ctx}: load_checkpoint: {e}"));
    let replay_after = checkpoint.as_ref().map_or(0, |(lsn, _)| *lsn);
    if let Some((lsn, payload)) = &checkpoint {
        assert_eq!(payload, &checkpoint_payload(*lsn), "{ctx}: checkpoint payload");
        assert!(*lsn <= model.durable.len() as u64, "{ctx}: checkpoint beyond confirmed records");
    }
    assert!(replay_after >= model.checkpoint.unwrap_or(0), "{ctx}: a finished checkpoint was lost");
    let mut replayed = Vec::new();
    let opened = Log::open(storage.clone(), config.clone(), replay_after, &mut |view| {
        let record = ModelRecord { kind: view.kind, version: view.version, payload: view.payload.to_vec() };
        replayed.push((view.lsn, view.pos, record));
        Ok(())
    });
    let (log, report) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            assert!(matches!(error, LogError::Io { .. } | LogError::NoSpace { .. }), "{ctx}: open failed: {error}");
            count(&COVERAGE.failed_opens, 1);
            return None; // the injected power cut hit recovery; the next session retries
        }
    };
    assert!(report.corruptions.is_empty(), "{ctx}: unexpected corruption:\n{report}");
    count(&COVERAGE.reopens, 1);
    count(&COVERAGE.torn_tails, u64::from(report.torn_tail.is_some()));
    count(&COVERAGE.reclaimed, report.segments_reclaimed.into());
    let confirmed = model.durable.len() as u64;
    for (index, (lsn, pos, record)) in replayed.iter().enumerate() {
        assert_eq!(*lsn, replay_after + 1 + index as u64, "{ctx}: replay out of order or with holes");
        let expected = if *lsn <= confirmed {
            &model.durable[(*lsn - 1) as usize]
        } else {
            model
                .in_flight
                .get((*lsn - confirmed - 1) as usize)
                .unwrap_or_else(|| panic!("{ctx}: LSN {lsn} never appended"))
        };
        assert_eq!(record, expected, "{ctx}: LSN {lsn} bytes differ");
        model.positions.insert(*lsn, *pos);
    }
    let end = replay_after + replayed.len() as u64;
    assert!(end >= confirmed, "{ctx}: confirmed records lost: log ends at {end}, {confirmed} confirmed\n{report}");
    assert_eq!(log.last_lsn(), end, "{ctx}: last_lsn after reopen");
    assert_eq!(log.durable_lsn(), end, "{ctx}: durable_lsn after reopen");
    // Recovered in-flight records are durable now; the rest of the batch is gone.
    let recovered = (end - confirmed) as usize;
    count(&COVERAGE.in_flight_recovered, recovered as u64);
    let in_flight = std::mem::take(&mut model.in_flight);
    model.durable.extend(in_flight.into_iter().take(recovered));
    model.positions.retain(|lsn, _| *lsn <= end);
    Some(log)
}

fn run_session(
    mut log: Log<SimStorage>,
    storage: &SimStorage,
    model: &mut Model,
    rng: &mut StdRng,
    max_payload: usize,
    ctx: &str,
) {
    for step in 0..rng.gen_range(1..=MAX_STEPS_PER_SESSION) {
        let ctx = format!("{ctx} step {step}");
        let keep_going = match rng.gen_range(0..100) {
            0..=54 => append_and_commit(&mut log, model, rng, max_payload, &ctx),
            55..=64 => {
                check_reads(&log, model, rng, &ctx);
                true
            }
            65..=72 => checkpoint(&log, storage, model, &ctx),
            73..=80 => release_covered(&mut log, model, rng, &ctx),
            81..=85 => {
                scrub(&log, &ctx);
                true
            }
            86..=89 => {
                storage.power_cut_after(rng.gen_range(0..12));
                true
            }
            90..=93 => {
                storage.fail_sync_after(rng.gen_range(0..3));
                true
            }
            94..=96 => {
                storage.fail_write_after(rng.gen_range(0..3));
                true
            }
            _ => {
                storage.set_space_limit(Some(storage.used_bytes() + rng.gen_range(0..20_000)));
                true
            }
        };
        if !keep_going {
            return;
        }
    }
}

/// Appends a random batch and commits it. Returns false when the session must end (a fault
/// made the log unusable).
fn append_and_commit(
    log: &mut Log<SimStorage>,
    model: &mut Model,
    rng: &mut StdRng,
    max_payload: usize,
    ctx: &str,
) -> bool {
    let batch = match rng.gen_range(0..10) {
        0 => 0,
        1..=6 => rng.gen_range(1..8),
        _ => rng.gen_range(8..40),
    };
    let write_behinds_before = log.write_behind_count();
    for _ in 0..batch {
        let record = random_record(rng, max_payload);
        match log.append(record.kind, record.version, &record.payload) {
            Ok((lsn, pos)) => {
                let expected = model.durable.len() as u64 + model.in_flight.len() as u64 + 1;
                assert_eq!(lsn, expected, "{ctx}: LSNs must be dense");
                assert_eq!(
                    log.read(pos).map(|r| r.payload).ok().as_ref(),
                    Some(&record.payload),
                    "{ctx}: read-back of uncommitted record"
                );
                model.positions.insert(lsn, pos);
                model.in_flight.push(record);
            }
            Err(error) if error.is_no_space() => {
                count(&COVERAGE.no_space, 1);
                assert!(log.is_poisoned().is_none(), "{ctx}: NoSpace must not poison");
                log.storage().set_space_limit(None);
            }
            Err(error) => {
                assert!(matches!(error, LogError::Io { .. }), "{ctx}: unexpected append error {error}");
                assert!(log.is_poisoned().is_none(), "{ctx}: failing to prepare a segment must not poison");
                return false;
            }
        }
    }
    count(&COVERAGE.write_behinds, log.write_behind_count() - write_behinds_before);
    match log.commit() {
        Ok(()) => {
            count(&COVERAGE.commits, 1);
            count(&COVERAGE.records_confirmed, model.in_flight.len() as u64);
            model.durable.append(&mut model.in_flight);
            assert_eq!(log.durable_lsn(), model.durable.len() as u64, "{ctx}: durable_lsn after commit");
            true
        }
        Err(error) => {
            let cause = log.is_poisoned().unwrap_or_else(|| panic!("{ctx}: failed commit ({error}) must poison"));
            count(&COVERAGE.poisoned, 1);
            match log.append(0x10, 0, b"after poison") {
                Err(LogError::Poisoned { cause: reported }) => assert_eq!(reported, cause, "{ctx}"),
                other => panic!("{ctx}: poisoned log accepted an append: {other:?}"),
            }
            assert!(log.commit().is_err_and(|e| e.is_poisoned()), "{ctx}: poisoned log committed");
            false
        }
    }
}

fn check_reads(log: &Log<SimStorage>, model: &Model, rng: &mut StdRng, ctx: &str) {
    let live: Vec<u32> = log.segments().iter().map(|info| info.id).collect();
    let total = model.durable.len() + model.in_flight.len();
    for _ in 0..8.min(total) {
        let lsn = rng.gen_range(1..=total as u64);
        let Some(pos) = model.positions.get(&lsn) else {
            continue;
        };
        if !live.contains(&pos.segment) {
            continue;
        }
        let expected = if lsn as usize <= model.durable.len() {
            &model.durable[lsn as usize - 1]
        } else {
            &model.in_flight[lsn as usize - model.durable.len() - 1]
        };
        let record = log.read(*pos).unwrap_or_else(|e| panic!("{ctx}: read of LSN {lsn} at {pos:?}: {e}"));
        assert_eq!((record.lsn, &record.payload, record.kind), (lsn, &expected.payload, expected.kind), "{ctx}");
    }
}

fn checkpoint(log: &Log<SimStorage>, storage: &SimStorage, model: &mut Model, ctx: &str) -> bool {
    let lsn = log.durable_lsn();
    if lsn == 0 {
        return true;
    }
    match write_checkpoint(storage, lsn, &checkpoint_payload(lsn)) {
        Ok(()) => {
            count(&COVERAGE.checkpoints, 1);
            model.checkpoint = Some(model.checkpoint.map_or(lsn, |old| old.max(lsn)));
            true
        }
        Err(LogError::NoSpace { .. }) => {
            storage.set_space_limit(None);
            true
        }
        Err(error) => {
            assert!(matches!(error, LogError::Io { .. }), "{ctx}: checkpoint error {error}");
            false
        }
    }
}

/// Releases sealed segments wholly covered by a finished checkpoint.
fn release_covered(log: &mut Log<SimStorage>, model: &Model, rng: &mut StdRng, ctx: &str) -> bool {
    let Some(covered) = model.checkpoint else {
        return true;
    };
    let candidates: Vec<u32> =
        log.segments().iter().filter(|info| !info.active && info.last_lsn <= covered).map(|info| info.id).collect();
    for id in candidates {
        if rng.gen_bool(0.3) {
            continue;
        }
        match log.release_segment(id) {
            Ok(()) => count(&COVERAGE.releases, 1),
            Err(LogError::SegmentBusy { .. }) => {}
            Err(error) if log.is_poisoned().is_some() => {
                panic!("{ctx}: release on a poisoned log: {error}")
            }
            Err(error) => {
                assert!(matches!(error, LogError::Io { .. }), "{ctx}: release error {error}");
                return false;
            }
        }
    }
    true
}

fn scrub(log: &Log<SimStorage>, ctx: &str) {
    for info in log.segments().iter().filter(|info| !info.active) {
        match log.verify_segment(info.id) {
            Ok(found) => assert!(found.is_empty(), "{ctx}: scrub of segment {} found {found:?}", info.id),
            Err(LogError::SegmentBusy { .. }) => {}
            Err(error) => panic!("{ctx}: scrub of segment {} failed: {error}", info.id),
        }
    }
}
