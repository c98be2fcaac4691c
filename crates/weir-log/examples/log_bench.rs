//! Log throughput benchmark: the `Log` (append a batch + commit) against a raw baseline (pwrite
//! the same bytes into a preallocated file + fdatasync per batch), for several payload and
//! batch sizes. Prints a markdown table.
//!
//! Run: `cargo run --release -p weir-log --example log_bench -- --dir DIR [--seconds 1.0]
//! [--segment-mib 256] [--payload BYTES]...` (`--payload` picks payload sizes, repeatable). DIR should be on the disk under test; it needs about five segments of
//! free space. Each cell runs for `--seconds` or `MAX_BATCHES_PER_CELL` batches, whichever comes
//! first. Dependency-free on purpose (std argument parsing).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use weir_log::{encode_record_into, FileStorage, Log, LogConfig};

const PAYLOAD_SIZES: [usize; 3] = [16, 1024, 64 * 1024];
const BATCH_SIZES: [usize; 5] = [1, 8, 64, 256, 1024];
const MAX_BATCHES_PER_CELL: u64 = 100_000;
/// Each cell alternates this many raw and log slices.
const ROUNDS_PER_CELL: u32 = 4;
const KIND: u8 = 0x20;
/// Segments written before measuring, so the cells see recycled segments.
const WARM_UP_SEGMENTS: u64 = 3;

struct Args {
    dir: PathBuf,
    cell: Duration,
    segment_bytes: u32,
    /// Only these payload sizes (all of `PAYLOAD_SIZES` when empty).
    payloads: Vec<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut dir = None;
    let mut seconds = 1.0f64;
    let mut segment_mib = weir_log::DEFAULT_SEGMENT_SIZE_BYTES / (1024 * 1024);
    let mut payloads = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--segment-mib" => segment_mib = value()?.parse().map_err(|e| format!("--segment-mib: {e}"))?,
            "--payload" => payloads.push(value()?.parse().map_err(|e| format!("--payload: {e}"))?),
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let dir = dir.ok_or("--dir is required")?;
    Ok(Args { dir, cell: Duration::from_secs_f64(seconds), segment_bytes: segment_mib * 1024 * 1024, payloads })
}

#[derive(Clone, Copy, Default)]
struct Cell {
    records: u64,
    payload_bytes: u64,
    elapsed: Duration,
}

impl Cell {
    fn add(&mut self, other: Cell) {
        self.records += other.records;
        self.payload_bytes += other.payload_bytes;
        self.elapsed += other.elapsed;
    }
    fn records_per_second(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
    fn megabytes_per_second(&self) -> f64 {
        self.payload_bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }
}

/// Records as the log would write them, for the raw baseline.
fn encoded_batch(payload: &[u8], batch: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for lsn in 1..=batch as u64 {
        encode_record_into(&mut bytes, lsn, 1, KIND, 0, payload);
    }
    bytes
}

/// The baseline's preallocated file and where its next write goes (wraps at the end).
struct RawFile {
    file: std::fs::File,
    size_bytes: u64,
    offset: u64,
}

fn run_raw(
    raw: &mut RawFile,
    payload: &[u8],
    batch: usize,
    budget: Duration,
    max_batches: u64,
) -> std::io::Result<Cell> {
    let bytes = encoded_batch(payload, batch);
    let mut batches = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget && batches < max_batches {
        if raw.offset + bytes.len() as u64 > raw.size_bytes {
            raw.offset = 0;
        }
        raw.file.write_all_at(&bytes, raw.offset)?;
        raw.file.sync_data()?;
        raw.offset += bytes.len() as u64;
        batches += 1;
    }
    let records = batches * batch as u64;
    Ok(Cell { records, payload_bytes: records * payload.len() as u64, elapsed: start.elapsed() })
}

fn run_log(
    log: &mut Log<FileStorage>,
    payload: &[u8],
    batch: usize,
    budget: Duration,
    max_batches: u64,
) -> Result<Cell, weir_log::LogError> {
    let mut batches = 0u64;
    let start = Instant::now();
    while start.elapsed() < budget && batches < max_batches {
        for _ in 0..batch {
            log.append(KIND, 0, payload)?;
        }
        log.commit()?;
        // Play the engine: sealed segments hold nothing live, recycle them.
        for info in log.segments().into_iter().filter(|info| !info.active) {
            log.release_segment(info.id)?;
        }
        batches += 1;
    }
    let records = batches * batch as u64;
    Ok(Cell { records, payload_bytes: records * payload.len() as u64, elapsed: start.elapsed() })
}

fn preallocate(path: &std::path::Path, bytes: u64) -> std::io::Result<std::fs::File> {
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < bytes {
        let chunk = (bytes - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..chunk], offset)?;
        offset += chunk as u64;
    }
    file.sync_data()?;
    Ok(file)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\nusage: log_bench --dir DIR [--seconds 1.0] [--segment-mib 256] [--payload BYTES]...");
            std::process::exit(2);
        }
    };
    std::fs::create_dir_all(&args.dir)?;
    let raw_path = args.dir.join("raw-baseline.dat");
    let log_dir = args.dir.join("log");
    if log_dir.exists() {
        std::fs::remove_dir_all(&log_dir)?;
    }
    let mut raw_file = RawFile {
        file: preallocate(&raw_path, args.segment_bytes.into())?,
        size_bytes: args.segment_bytes.into(),
        offset: 0,
    };
    let mut config = LogConfig::with_segment_size(args.segment_bytes);
    config.spare_segments = 2;
    let (mut log, _) = Log::open(FileStorage::open(&log_dir)?, config, 0, &mut |_| Ok(()))?;
    // Warm up outside the measurement until segments are recycled (the steady state): write a
    // few segments' worth, releasing sealed segments as the engine would.
    let warm_up = vec![0u8; 64 * 1024];
    let warm_up_batches = WARM_UP_SEGMENTS * u64::from(args.segment_bytes) / (64 * 1024 * 64);
    run_log(&mut log, &warm_up, 64, Duration::MAX, warm_up_batches)?;

    println!(
        "weir-log benchmark: dir {}, segment {} MiB, {:?} per cell",
        args.dir.display(),
        args.segment_bytes >> 20,
        args.cell
    );
    println!("MB/s counts payload bytes (10^6). raw = pwrite of the same encoded records + fdatasync per batch.\n");
    println!("| payload | batch | raw rec/s | raw MB/s | log rec/s | log MB/s | log/raw |");
    println!("|--------:|------:|----------:|---------:|----------:|---------:|--------:|");
    for payload_len in PAYLOAD_SIZES.into_iter().filter(|len| args.payloads.is_empty() || args.payloads.contains(len)) {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7) as u8).collect();
        for batch in BATCH_SIZES {
            // Alternate raw and log slices so that drift in the device's fsync latency (other
            // load on the machine) hits both sides alike.
            let slice = args.cell / ROUNDS_PER_CELL;
            let slice_batches = MAX_BATCHES_PER_CELL / u64::from(ROUNDS_PER_CELL);
            let (mut raw, mut logged) = (Cell::default(), Cell::default());
            for _ in 0..ROUNDS_PER_CELL {
                raw.add(run_raw(&mut raw_file, &payload, batch, slice, slice_batches)?);
                logged.add(run_log(&mut log, &payload, batch, slice, slice_batches)?);
            }
            println!(
                "| {} | {} | {:.0} | {:.1} | {:.0} | {:.1} | {:.2} |",
                if payload_len >= 1024 { format!("{} KiB", payload_len / 1024) } else { format!("{payload_len} B") },
                batch,
                raw.records_per_second(),
                raw.megabytes_per_second(),
                logged.records_per_second(),
                logged.megabytes_per_second(),
                logged.records_per_second() / raw.records_per_second()
            );
        }
    }
    drop(log);
    std::fs::remove_file(&raw_path)?;
    std::fs::remove_dir_all(&log_dir)?;
    Ok(())
}
