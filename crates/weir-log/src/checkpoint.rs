//! Checkpoints: a snapshot blob from the engine, tagged with the LSN it covers, written
//! atomically next to the segments. Recovery loads the newest valid one and replays only the
//! records after its LSN.
//!
//! Invariants:
//! - A checkpoint file under its final name is complete and durable: it is written under a
//!   temporary name, fdatasynced, renamed, and the directory is fsynced before any older
//!   checkpoint is removed.
//! - The newest two checkpoints are kept, so a damaged newest one falls back to the previous one
//!   (reported with `tracing::error!` and in `CheckpointLoad::rejected`).
//! - Every byte of a checkpoint file is covered by its crc32c.
//!
//! These are free functions so the engine can write checkpoints from a background thread while
//! the log keeps appending; the engine must not run two `write_checkpoint`s at once.

use crate::error::LogError;
use crate::format::{parse_numbered, TMP_SUFFIX};
use crate::storage::{Storage, StorageFile};
use crate::Lsn;

/// First bytes of every checkpoint file.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"WEIRCKP\0";
/// Checkpoint file format version.
pub const CHECKPOINT_FORMAT_VERSION: u16 = 1;
/// Size of the checkpoint file header; the payload follows it.
pub const CHECKPOINT_HEADER_BYTES: usize = 48;
/// Largest checkpoint payload accepted (it is read back into memory whole).
pub const MAX_CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024 * 1024;
/// How many checkpoints are kept.
pub const CHECKPOINTS_KEPT: usize = 2;

const CHECKPOINT_PREFIX: &str = "ckpt-";
const CHECKPOINT_SUFFIX: &str = ".wckp";
const CHECKPOINT_CRC_OFFSET: usize = 44;

/// `ckpt-00000000000000001234.wckp`
pub fn checkpoint_file_name(lsn: Lsn) -> String {
    format!("{CHECKPOINT_PREFIX}{lsn:020}{CHECKPOINT_SUFFIX}")
}

fn parse_checkpoint_file_name(name: &str) -> Option<Lsn> {
    parse_numbered(name, CHECKPOINT_PREFIX, CHECKPOINT_SUFFIX, 20)
}

fn encode_header(lsn: Lsn, payload: &[u8]) -> [u8; CHECKPOINT_HEADER_BYTES] {
    let mut header = [0u8; CHECKPOINT_HEADER_BYTES];
    header[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    header[8..10].copy_from_slice(&CHECKPOINT_FORMAT_VERSION.to_le_bytes());
    header[10..12].copy_from_slice(&(CHECKPOINT_HEADER_BYTES as u16).to_le_bytes());
    header[16..24].copy_from_slice(&lsn.to_le_bytes());
    header[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..CHECKPOINT_CRC_OFFSET]), payload);
    header[CHECKPOINT_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Why a checkpoint file was not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointDefect {
    #[error("file is {file_bytes} bytes, shorter than a checkpoint header")]
    Short { file_bytes: u64 },
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported checkpoint format version {found}")]
    UnsupportedVersion { found: u16 },
    #[error("header field {field} has invalid value {value}")]
    BadField { field: &'static str, value: u64 },
    #[error("header says LSN {header_lsn}, file name says LSN {name_lsn}")]
    LsnMismatch { header_lsn: Lsn, name_lsn: Lsn },
    #[error("header says {header_bytes} payload bytes, file holds {file_bytes}")]
    LengthMismatch { header_bytes: u64, file_bytes: u64 },
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("unreadable: {message}")]
    Unreadable { message: String },
}

/// A checkpoint file that was skipped, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRejection {
    pub file_name: String,
    pub lsn: Lsn,
    pub defect: CheckpointDefect,
}

/// A loaded checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub lsn: Lsn,
    pub file_name: String,
    pub payload: Vec<u8>,
}

/// The outcome of looking for checkpoints: the newest valid one and every newer one that was
/// damaged and skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointLoad {
    pub checkpoint: Option<Checkpoint>,
    pub rejected: Vec<CheckpointRejection>,
}

/// Writes a checkpoint covering every record up to and including `lsn`, atomically, then
/// removes all but the newest `CHECKPOINTS_KEPT` checkpoints. `lsn` must be durable in the log.
pub fn write_checkpoint<S: Storage>(storage: &S, lsn: Lsn, payload: &[u8]) -> Result<(), LogError> {
    if payload.len() as u64 > MAX_CHECKPOINT_BYTES {
        return Err(LogError::CheckpointTooLarge { len_bytes: payload.len() as u64, max_bytes: MAX_CHECKPOINT_BYTES });
    }
    let name = checkpoint_file_name(lsn);
    let tmp = format!("{name}{TMP_SUFFIX}");
    let written = (|| {
        let file = storage.create(&tmp).map_err(|e| LogError::from_io("creating checkpoint", &tmp, e))?;
        file.write_at(0, &encode_header(lsn, payload)).map_err(|e| LogError::from_io("writing checkpoint", &tmp, e))?;
        if !payload.is_empty() {
            file.write_at(CHECKPOINT_HEADER_BYTES as u64, payload)
                .map_err(|e| LogError::from_io("writing checkpoint", &tmp, e))?;
        }
        file.sync_data().map_err(|e| LogError::from_io("syncing checkpoint", &tmp, e))?;
        storage.rename(&tmp, &name).map_err(|e| LogError::from_io("naming checkpoint", &name, e))
    })();
    if let Err(error) = written {
        let _ = storage.remove(&tmp);
        return Err(error);
    }
    storage.sync_dir().map_err(|e| LogError::from_io("syncing directory", &name, e))?;
    remove_old_checkpoints(storage, lsn);
    Ok(())
}

/// Removes checkpoints beyond the newest `CHECKPOINTS_KEPT`, and temporary files of older
/// checkpoints. Failures are only logged: the new checkpoint is already durable.
fn remove_old_checkpoints<S: Storage>(storage: &S, written_lsn: Lsn) {
    let names = match storage.list() {
        Ok(names) => names,
        Err(error) => {
            tracing::warn!(%error, "could not list checkpoints to remove old ones");
            return;
        }
    };
    let mut checkpoints: Vec<(Lsn, String)> =
        names.iter().filter_map(|name| parse_checkpoint_file_name(name).map(|lsn| (lsn, name.clone()))).collect();
    checkpoints.sort_by_key(|(lsn, _)| std::cmp::Reverse(*lsn));
    let stale_tmp = names.iter().filter(|name| {
        name.strip_suffix(TMP_SUFFIX).and_then(parse_checkpoint_file_name).is_some_and(|lsn| lsn < written_lsn)
    });
    for name in checkpoints.iter().skip(CHECKPOINTS_KEPT).map(|(_, name)| name).chain(stale_tmp) {
        if let Err(error) = storage.remove(name) {
            tracing::warn!(%error, file = %name, "could not remove old checkpoint");
        }
    }
}

/// The newest valid checkpoint as `(lsn, payload)`. A damaged newer checkpoint is logged with
/// `tracing::error!` and skipped in favour of the previous one (see `load_checkpoint_detailed`
/// to get the rejections as data).
pub fn load_checkpoint<S: Storage>(storage: &S) -> Result<Option<(Lsn, Vec<u8>)>, LogError> {
    Ok(load_checkpoint_detailed(storage)?.checkpoint.map(|checkpoint| (checkpoint.lsn, checkpoint.payload)))
}

/// Like `load_checkpoint`, but also returns every damaged checkpoint that was skipped.
pub fn load_checkpoint_detailed<S: Storage>(storage: &S) -> Result<CheckpointLoad, LogError> {
    let names = storage.list().map_err(|e| LogError::from_io("listing checkpoints", "", e))?;
    let mut checkpoints: Vec<(Lsn, String)> =
        names.into_iter().filter_map(|name| parse_checkpoint_file_name(&name).map(|lsn| (lsn, name))).collect();
    checkpoints.sort_by_key(|(lsn, _)| std::cmp::Reverse(*lsn));
    let mut load = CheckpointLoad::default();
    for (lsn, file_name) in checkpoints {
        match read_checkpoint(storage, lsn, &file_name) {
            Ok(payload) => {
                load.checkpoint = Some(Checkpoint { lsn, file_name, payload });
                break;
            }
            Err(defect) => {
                tracing::error!(file = %file_name, lsn, %defect, "skipping damaged checkpoint, falling back to an older one");
                load.rejected.push(CheckpointRejection { file_name, lsn, defect });
            }
        }
    }
    Ok(load)
}

fn read_checkpoint<S: Storage>(storage: &S, name_lsn: Lsn, name: &str) -> Result<Vec<u8>, CheckpointDefect> {
    let unreadable = |error: std::io::Error| CheckpointDefect::Unreadable { message: error.to_string() };
    let file = storage.open(name).map_err(unreadable)?;
    let file_bytes = file.len().map_err(unreadable)?;
    if file_bytes < CHECKPOINT_HEADER_BYTES as u64 {
        return Err(CheckpointDefect::Short { file_bytes });
    }
    let mut header = [0u8; CHECKPOINT_HEADER_BYTES];
    file.read_at(0, &mut header).map_err(unreadable)?;
    if header[0..8] != CHECKPOINT_MAGIC {
        return Err(CheckpointDefect::BadMagic);
    }
    let version = u16::from_le_bytes([header[8], header[9]]);
    if version != CHECKPOINT_FORMAT_VERSION {
        return Err(CheckpointDefect::UnsupportedVersion { found: version });
    }
    let header_bytes = u16::from_le_bytes([header[10], header[11]]);
    if usize::from(header_bytes) != CHECKPOINT_HEADER_BYTES {
        return Err(CheckpointDefect::BadField { field: "header_bytes", value: header_bytes.into() });
    }
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let header_lsn = word(16);
    let payload_bytes = word(24);
    if header_lsn != name_lsn {
        return Err(CheckpointDefect::LsnMismatch { header_lsn, name_lsn });
    }
    if payload_bytes > MAX_CHECKPOINT_BYTES || payload_bytes != file_bytes - CHECKPOINT_HEADER_BYTES as u64 {
        return Err(CheckpointDefect::LengthMismatch { header_bytes: payload_bytes, file_bytes });
    }
    let mut payload = vec![0u8; payload_bytes as usize];
    file.read_at(CHECKPOINT_HEADER_BYTES as u64, &mut payload).map_err(unreadable)?;
    let stored = u32::from_le_bytes(header[CHECKPOINT_CRC_OFFSET..].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c_append(crc32c::crc32c(&header[..CHECKPOINT_CRC_OFFSET]), &payload);
    if stored != computed {
        return Err(CheckpointDefect::BadCrc { stored, computed });
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimStorage;

    #[test]
    fn write_then_load_keeps_newest_two() {
        let storage = SimStorage::new();
        assert_eq!(load_checkpoint(&storage).expect("load"), None);
        for lsn in [10, 20, 30] {
            write_checkpoint(&storage, lsn, format!("state at {lsn}").as_bytes()).expect("write");
        }
        assert_eq!(load_checkpoint(&storage).expect("load"), Some((30, b"state at 30".to_vec())));
        let names: Vec<String> = storage.file_names();
        assert_eq!(names, vec![checkpoint_file_name(20), checkpoint_file_name(30)]);
    }

    #[test]
    fn damaged_newest_checkpoint_falls_back_and_is_reported() {
        let storage = SimStorage::new();
        write_checkpoint(&storage, 10, b"ten").expect("write");
        write_checkpoint(&storage, 20, b"twenty").expect("write");
        storage.corrupt_byte(&checkpoint_file_name(20), CHECKPOINT_HEADER_BYTES as u64 + 1, 0x01).expect("corrupt");
        let load = load_checkpoint_detailed(&storage).expect("load");
        assert_eq!(load.checkpoint.map(|c| c.lsn), Some(10));
        assert_eq!(load.rejected.len(), 1);
        assert!(matches!(load.rejected[0].defect, CheckpointDefect::BadCrc { .. }));
    }

    #[test]
    fn empty_payload_and_size_limit() {
        let storage = SimStorage::new();
        write_checkpoint(&storage, 1, b"").expect("empty payload");
        assert_eq!(load_checkpoint(&storage).expect("load"), Some((1, Vec::new())));
    }

    #[test]
    fn checkpoint_every_header_byte_is_covered() {
        let storage = SimStorage::new();
        write_checkpoint(&storage, 7, b"payload").expect("write");
        let name = checkpoint_file_name(7);
        for byte in 0..CHECKPOINT_HEADER_BYTES + 7 {
            let copy = SimStorage::new();
            let mut contents = storage.file_contents(&name).expect("exists");
            contents[byte] ^= 0x08;
            copy.write_durable(&name, 0, &contents);
            assert_eq!(load_checkpoint(&copy).expect("load"), None, "byte {byte}");
        }
    }
}
