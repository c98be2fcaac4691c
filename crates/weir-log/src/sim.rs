//! `SimStorage`: an in-memory twin of `FileStorage` that models what survives a crash, plus
//! fault injection. Used by this crate's crash tests and by the engine's tests.
//!
//! Model (the same contract `storage.rs` documents for real disks, made explicit):
//! - Every file has a *written* image (what reads see) and a *durable* image. `write_at`
//!   changes the written image and queues the write; `sync_data` applies the queued writes to
//!   the durable image. A *failed* `sync_data` drops the queued writes (they stay visible to
//!   reads but never become durable — what Linux does after an fsync error).
//! - The directory likewise has a current and a durable state; `create`/`remove`/`rename` are
//!   queued and `sync_dir` makes the current state durable.
//! - `crash(seed)` returns a new storage: the durable directory plus a random *prefix* of the
//!   queued directory operations (journaling file systems keep metadata operations in order),
//!   and for every file its durable image plus, for each queued write independently, randomly
//!   none of it, all of it, or a prefix cut at a 512-byte sector boundary (a torn write).
//! - Faults: fail the Nth `sync_data` or `write_at`, a "power cut" after N more mutating
//!   operations (every later mutating operation fails with EIO), and a space limit that makes
//!   writes growing the files beyond it fail with ENOSPC.
//!
//! Everything is deterministic: the only randomness is `crash`'s seed.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::storage::{Storage, StorageFile};

/// Torn writes are cut at multiples of this many bytes (absolute file offsets).
pub const SIM_SECTOR_BYTES: u64 = 512;

type InodeId = u64;

/// Counters of the operations a `SimStorage` has seen (since creation or the last crash).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub writes: u64,
    pub bytes_written: u64,
    pub syncs: u64,
    pub dir_syncs: u64,
    pub renames: u64,
    pub removes: u64,
    pub creates: u64,
}

#[derive(Default)]
struct Inode {
    written: Vec<u8>,
    durable: Vec<u8>,
    /// Writes since the last successful sync, in order.
    queued: Vec<(u64, Vec<u8>)>,
}

#[derive(Clone, Debug)]
enum DirOp {
    Link { name: String, inode: InodeId },
    Unlink { name: String },
    Rename { from: String, to: String },
}

#[derive(Default)]
struct Faults {
    /// Fail the sync_data when this counter reaches zero (counted down per sync).
    syncs_until_failure: Option<u64>,
    writes_until_failure: Option<u64>,
    /// Mutating operations left before the power cut; `Some(0)` = power is out.
    ops_until_power_cut: Option<u64>,
    space_limit_bytes: Option<u64>,
}

#[derive(Default)]
struct Disk {
    dir: BTreeMap<String, InodeId>,
    durable_dir: BTreeMap<String, InodeId>,
    queued_dir_ops: Vec<DirOp>,
    inodes: HashMap<InodeId, Inode>,
    next_inode: InodeId,
    faults: Faults,
    stats: SimStats,
}

/// The simulated storage. Cloning shares the same simulated disk.
#[derive(Clone, Default)]
pub struct SimStorage {
    disk: Arc<Mutex<Disk>>,
}

impl std::fmt::Debug for SimStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimStorage").field("files", &self.file_names()).finish()
    }
}

/// An open file of a `SimStorage`; follows its inode across renames, like a real handle.
pub struct SimFile {
    disk: Arc<Mutex<Disk>>,
    inode: InodeId,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated I/O error: {what}"))
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("no such simulated file: {name}"))
}

/// splitmix64: small, deterministic, good enough to pick crash outcomes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next() % bound
        }
    }
}

fn apply_write(image: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = offset as usize;
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

impl Disk {
    /// Counts one mutating operation against the power-cut budget.
    fn power_check(&mut self, what: &str) -> io::Result<()> {
        match &mut self.faults.ops_until_power_cut {
            Some(0) => Err(eio(&format!("power is out ({what})"))),
            Some(left) => {
                *left -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn used_bytes(&self) -> u64 {
        self.dir.values().filter_map(|id| self.inodes.get(id)).map(|inode| inode.written.len() as u64).sum()
    }

    fn new_inode(&mut self) -> InodeId {
        self.next_inode += 1;
        self.inodes.insert(self.next_inode, Inode::default());
        self.next_inode
    }

    fn lock(disk: &Mutex<Disk>) -> MutexGuard<'_, Disk> {
        // A panic while holding the lock is a test bug; the disk state is still usable.
        disk.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn count_down(counter: &mut Option<u64>) -> bool {
    match counter {
        Some(0) => {
            *counter = None;
            true
        }
        Some(left) => {
            *left -= 1;
            false
        }
        None => false,
    }
}

impl SimStorage {
    pub fn new() -> SimStorage {
        SimStorage::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        Disk::lock(&self.disk)
    }

    /// The storage as it would be found after a crash right now (see the module docs).
    pub fn crash(&self, seed: u64) -> SimStorage {
        let disk = self.disk();
        let mut rng = SplitMix(seed ^ 0x5EED_CAFE_F00D_D00D);
        let mut dir = disk.durable_dir.clone();
        let applied = rng.below(disk.queued_dir_ops.len() as u64 + 1) as usize;
        for op in &disk.queued_dir_ops[..applied] {
            match op {
                DirOp::Link { name, inode } => {
                    dir.insert(name.clone(), *inode);
                }
                DirOp::Unlink { name } => {
                    dir.remove(name);
                }
                DirOp::Rename { from, to } => {
                    if let Some(inode) = dir.remove(from) {
                        dir.insert(to.clone(), inode);
                    }
                }
            }
        }
        let mut crashed = Disk::default();
        let mut images: HashMap<InodeId, InodeId> = HashMap::new();
        for (name, old_id) in dir {
            let new_id = match images.get(&old_id) {
                Some(&id) => id,
                None => {
                    let image = disk.inodes.get(&old_id).map(|inode| crash_image(inode, &mut rng)).unwrap_or_default();
                    let id = crashed.new_inode();
                    let inode = crashed.inodes.get_mut(&id).expect("just inserted");
                    inode.written = image.clone();
                    inode.durable = image;
                    images.insert(old_id, id);
                    id
                }
            };
            crashed.dir.insert(name, new_id);
        }
        crashed.durable_dir = crashed.dir.clone();
        SimStorage { disk: Arc::new(Mutex::new(crashed)) }
    }

    /// The `n`th `sync_data` from now (0 = the next one) fails with EIO and loses its writes.
    pub fn fail_sync_after(&self, n: u64) {
        self.disk().faults.syncs_until_failure = Some(n);
    }

    /// The `n`th `write_at` from now (0 = the next one) fails with EIO and writes nothing.
    pub fn fail_write_after(&self, n: u64) {
        self.disk().faults.writes_until_failure = Some(n);
    }

    /// After `n` more mutating operations (writes, syncs, directory changes) every mutating
    /// operation fails with EIO, as if the machine lost power; follow with `crash`.
    pub fn power_cut_after(&self, n: u64) {
        self.disk().faults.ops_until_power_cut = Some(n);
    }

    /// Writes that would grow the total size of all files beyond `limit` fail with ENOSPC.
    pub fn set_space_limit(&self, limit_bytes: Option<u64>) {
        self.disk().faults.space_limit_bytes = limit_bytes;
    }

    /// Clears every injected fault.
    pub fn clear_faults(&self) {
        self.disk().faults = Faults::default();
    }

    pub fn stats(&self) -> SimStats {
        self.disk().stats
    }

    /// Total size of all files in the directory.
    pub fn used_bytes(&self) -> u64 {
        self.disk().used_bytes()
    }

    /// Sorted names of the files in the (current) directory.
    pub fn file_names(&self) -> Vec<String> {
        self.disk().dir.keys().cloned().collect()
    }

    /// The written image of a file.
    pub fn file_contents(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.disk();
        disk.dir.get(name).and_then(|id| disk.inodes.get(id)).map(|inode| inode.written.clone())
    }

    /// Bit rot: XORs `mask` into one byte of both the written and the durable image.
    pub fn corrupt_byte(&self, name: &str, offset: u64, mask: u8) -> io::Result<()> {
        let mut disk = self.disk();
        let id = *disk.dir.get(name).ok_or_else(|| not_found(name))?;
        let inode = disk.inodes.get_mut(&id).ok_or_else(|| not_found(name))?;
        let at = offset as usize;
        if at >= inode.written.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "offset beyond end of file"));
        }
        inode.written[at] ^= mask;
        if at < inode.durable.len() {
            inode.durable[at] ^= mask;
        }
        Ok(())
    }

    /// Writes bytes straight into both images of a file, creating it durably if needed.
    /// For tests that build damaged images by hand.
    pub fn write_durable(&self, name: &str, offset: u64, data: &[u8]) {
        let mut disk = self.disk();
        let id = match disk.dir.get(name) {
            Some(&id) => id,
            None => {
                let id = disk.new_inode();
                disk.dir.insert(name.to_string(), id);
                disk.durable_dir.insert(name.to_string(), id);
                id
            }
        };
        let inode = disk.inodes.get_mut(&id).expect("directory names a live inode");
        apply_write(&mut inode.written, offset, data);
        apply_write(&mut inode.durable, offset, data);
    }

    /// Removes a file from both the current and the durable directory (a lost file).
    pub fn remove_durable(&self, name: &str) {
        let mut disk = self.disk();
        disk.dir.remove(name);
        disk.durable_dir.remove(name);
    }
}

/// The durable image plus, per queued write, none / all / a sector-aligned prefix of it.
fn crash_image(inode: &Inode, rng: &mut SplitMix) -> Vec<u8> {
    let mut image = inode.durable.clone();
    for (offset, data) in &inode.queued {
        let end = offset + data.len() as u64;
        match rng.below(3) {
            0 => {}
            1 => apply_write(&mut image, *offset, data),
            _ => {
                let first_cut = (offset / SIM_SECTOR_BYTES + 1) * SIM_SECTOR_BYTES;
                if first_cut < end {
                    let cuts = (end - 1 - first_cut) / SIM_SECTOR_BYTES + 1;
                    let cut = first_cut + rng.below(cuts) * SIM_SECTOR_BYTES;
                    apply_write(&mut image, *offset, &data[..(cut - offset) as usize]);
                }
            }
        }
    }
    image
}

impl Storage for SimStorage {
    type File = SimFile;

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn create(&self, name: &str) -> io::Result<SimFile> {
        let mut disk = self.disk();
        disk.power_check("create")?;
        let inode = disk.new_inode();
        disk.dir.insert(name.to_string(), inode);
        disk.queued_dir_ops.push(DirOp::Link { name: name.to_string(), inode });
        disk.stats.creates += 1;
        Ok(SimFile { disk: Arc::clone(&self.disk), inode })
    }

    fn open(&self, name: &str) -> io::Result<SimFile> {
        let disk = self.disk();
        let inode = *disk.dir.get(name).ok_or_else(|| not_found(name))?;
        Ok(SimFile { disk: Arc::clone(&self.disk), inode })
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.disk();
        disk.power_check("remove")?;
        disk.dir.remove(name).ok_or_else(|| not_found(name))?;
        disk.queued_dir_ops.push(DirOp::Unlink { name: name.to_string() });
        disk.stats.removes += 1;
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.disk();
        disk.power_check("rename")?;
        let inode = disk.dir.remove(from).ok_or_else(|| not_found(from))?;
        disk.dir.insert(to.to_string(), inode);
        disk.queued_dir_ops.push(DirOp::Rename { from: from.to_string(), to: to.to_string() });
        disk.stats.renames += 1;
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.disk();
        disk.power_check("sync_dir")?;
        disk.durable_dir = disk.dir.clone();
        disk.queued_dir_ops.clear();
        disk.stats.dir_syncs += 1;
        Ok(())
    }
}

impl StorageFile for SimFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let disk = Disk::lock(&self.disk);
        let inode = disk.inodes.get(&self.inode).ok_or_else(|| eio("stale handle"))?;
        let start = usize::try_from(offset).map_err(|_| eio("offset"))?;
        let end = start.checked_add(buf.len()).ok_or_else(|| eio("offset"))?;
        let data = inode
            .written
            .get(start..end)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of simulated file"))?;
        buf.copy_from_slice(data);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut disk = Disk::lock(&self.disk);
        disk.power_check("write")?;
        if count_down(&mut disk.faults.writes_until_failure) {
            return Err(eio("injected write failure"));
        }
        let current = disk.inodes.get(&self.inode).map_or(0, |inode| inode.written.len() as u64);
        let growth = (offset + data.len() as u64).saturating_sub(current);
        if let Some(limit) = disk.faults.space_limit_bytes {
            if growth > 0 && disk.used_bytes() + growth > limit {
                return Err(enospc());
            }
        }
        disk.stats.writes += 1;
        disk.stats.bytes_written += data.len() as u64;
        let inode = disk.inodes.get_mut(&self.inode).ok_or_else(|| eio("stale handle"))?;
        apply_write(&mut inode.written, offset, data);
        inode.queued.push((offset, data.to_vec()));
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = Disk::lock(&self.disk);
        disk.power_check("sync")?;
        let fail = count_down(&mut disk.faults.syncs_until_failure);
        disk.stats.syncs += 1;
        let inode = disk.inodes.get_mut(&self.inode).ok_or_else(|| eio("stale handle"))?;
        let queued = std::mem::take(&mut inode.queued);
        if fail {
            // The kernel drops the dirty pages' error state: these writes are gone for good.
            return Err(eio("injected fsync failure"));
        }
        for (offset, data) in queued {
            apply_write(&mut inode.durable, offset, &data);
        }
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        let disk = Disk::lock(&self.disk);
        Ok(disk.inodes.get(&self.inode).map_or(0, |inode| inode.written.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_may_vanish_synced_writes_survive() {
        let storage = SimStorage::new();
        let file = storage.create("f").expect("create");
        storage.sync_dir().expect("sync dir");
        file.write_at(0, &[1u8; 1024]).expect("write");
        file.sync_data().expect("sync");
        file.write_at(1024, &[2u8; 2048]).expect("write");
        let mut outcomes = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let crashed = storage.crash(seed);
            let image = crashed.file_contents("f").expect("file survives");
            assert_eq!(&image[..1024], &[1u8; 1024][..], "seed {seed}");
            assert!(image.len() == 1024 || image.len().is_multiple_of(512), "seed {seed}: sector-granular tear");
            assert!(image[1024..].iter().all(|&byte| byte == 2), "seed {seed}");
            outcomes.insert(image.len());
        }
        assert!(outcomes.len() >= 3, "none, torn and full outcomes all occur: {outcomes:?}");
    }

    #[test]
    fn unsynced_directory_operations_may_vanish() {
        let storage = SimStorage::new();
        storage.create("a").expect("create");
        let outcomes: std::collections::BTreeSet<Vec<String>> =
            (0..32).map(|seed| storage.crash(seed).file_names()).collect();
        assert_eq!(outcomes.len(), 2);
        storage.sync_dir().expect("sync dir");
        assert!((0..8).all(|seed| storage.crash(seed).file_names() == vec!["a".to_string()]));
    }

    #[test]
    fn failed_sync_loses_its_writes_for_good() {
        let storage = SimStorage::new();
        let file = storage.create("f").expect("create");
        storage.sync_dir().expect("sync dir");
        file.write_at(0, b"lost").expect("write");
        storage.fail_sync_after(0);
        assert!(file.sync_data().is_err());
        file.sync_data().expect("a later sync succeeds, but the data is not in it");
        for seed in 0..16 {
            assert_eq!(storage.crash(seed).file_contents("f"), Some(Vec::new()), "seed {seed}");
        }
    }

    #[test]
    fn space_limit_and_power_cut() {
        let storage = SimStorage::new();
        storage.set_space_limit(Some(100));
        let file = storage.create("f").expect("create");
        file.write_at(0, &[0u8; 100]).expect("fits");
        let error = file.write_at(100, &[0u8; 1]).expect_err("full");
        assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
        file.write_at(50, &[1u8; 50]).expect("overwrite does not grow");
        storage.power_cut_after(1);
        file.sync_data().expect("one more op");
        assert!(file.write_at(0, b"x").is_err());
        assert!(storage.sync_dir().is_err());
    }
}
