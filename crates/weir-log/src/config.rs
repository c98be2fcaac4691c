//! Log configuration and the limits it is checked against.
//!
//! Invariant: a `LogConfig` that passed `validate` guarantees that a record of
//! `max_record_bytes` payload always fits in an empty segment, so `append` never needs to split
//! a record across segments.

use crate::error::LogError;
use crate::format::{record_span_bytes, SEGMENT_HEADER_BYTES};

/// Default segment file size. The brief asked for 64 MiB, but the default record limit
/// (128 MiB + 64 KiB, sized for the broker's 128 MiB message limit) must fit in a segment, so
/// the default segment is 256 MiB. Small deployments can lower both.
pub const DEFAULT_SEGMENT_SIZE_BYTES: u32 = 256 * 1024 * 1024;
/// Default number of prepared segment files kept ready ahead of the active one.
pub const DEFAULT_SPARE_SEGMENTS: usize = 1;
/// Default largest record payload: 128 MiB message body plus 64 KiB for its properties.
pub const DEFAULT_MAX_RECORD_BYTES: u32 = 128 * 1024 * 1024 + 64 * 1024;
/// Smallest segment size accepted (one page).
pub const MIN_SEGMENT_SIZE_BYTES: u32 = 4096;
/// Largest segment size accepted: offsets inside a segment are `u32`, and 1 GiB keeps a single
/// zero-fill or scan bounded.
pub const MAX_SEGMENT_SIZE_BYTES: u32 = 1 << 30;
/// Segment sizes are multiples of this (the page size), so segment ends are sector-aligned.
pub const SEGMENT_SIZE_GRANULE_BYTES: u32 = 4096;
/// Upper bound on `spare_segments`: each spare is a full segment of disk space.
pub const MAX_SPARE_SEGMENTS: usize = 64;
/// Default write-behind threshold: a batch streams to the page cache in pieces of this size
/// (well inside the L2 cache, large enough that the extra system calls do not matter).
pub const DEFAULT_WRITE_BEHIND_BYTES: usize = 512 * 1024;

/// How a `Log` lays out and sizes its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Size of every new segment file (preallocated, zero-filled). Multiple of 4096, between
    /// `MIN_SEGMENT_SIZE_BYTES` and `MAX_SEGMENT_SIZE_BYTES`.
    pub segment_size_bytes: u32,
    /// How many prepared segment files to keep ready beyond the active one (at most
    /// `MAX_SPARE_SEGMENTS`). Released segments are kept as spares too.
    pub spare_segments: usize,
    /// Largest record *payload* `append` accepts. The whole record (header and padding
    /// included) must fit in an empty segment.
    pub max_record_bytes: u32,
    /// Once the batch being built holds this many bytes, `append` writes it to the segment
    /// file (no fsync) and asks the kernel to start writing it out, so a large batch streams
    /// through a small buffer and its I/O overlaps the encoding of the rest. `usize::MAX`
    /// turns write-behind off. Durability is unchanged: nothing is durable before `commit`.
    pub write_behind_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes: DEFAULT_SEGMENT_SIZE_BYTES,
            spare_segments: DEFAULT_SPARE_SEGMENTS,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            write_behind_bytes: DEFAULT_WRITE_BEHIND_BYTES,
        }
    }
}

impl LogConfig {
    /// A configuration with the given segment size and the largest record limit that fits it
    /// (capped at the default limit). Handy for tests with small segments.
    pub fn with_segment_size(segment_size_bytes: u32) -> LogConfig {
        LogConfig {
            segment_size_bytes,
            spare_segments: DEFAULT_SPARE_SEGMENTS,
            max_record_bytes: Self::max_payload_for_segment(segment_size_bytes).min(DEFAULT_MAX_RECORD_BYTES),
            write_behind_bytes: DEFAULT_WRITE_BEHIND_BYTES,
        }
    }

    /// The largest payload whose record fits in an empty segment of `segment_size_bytes`.
    pub fn max_payload_for_segment(segment_size_bytes: u32) -> u32 {
        let room = (segment_size_bytes as usize).saturating_sub(SEGMENT_HEADER_BYTES);
        // Largest payload p with record_span_bytes(p) <= room.
        let aligned_room = room & !(crate::format::RECORD_ALIGNMENT_BYTES - 1);
        aligned_room.saturating_sub(crate::format::RECORD_HEADER_BYTES) as u32
    }

    /// Checks every limit; `Log::open` calls this first.
    pub fn validate(&self) -> Result<(), LogError> {
        let size = self.segment_size_bytes;
        if !(MIN_SEGMENT_SIZE_BYTES..=MAX_SEGMENT_SIZE_BYTES).contains(&size) {
            return Err(LogError::InvalidConfig { reason: "segment_size_bytes out of range", value: size.into() });
        }
        if !size.is_multiple_of(SEGMENT_SIZE_GRANULE_BYTES) {
            return Err(LogError::InvalidConfig {
                reason: "segment_size_bytes is not a multiple of 4096",
                value: size.into(),
            });
        }
        if self.spare_segments > MAX_SPARE_SEGMENTS {
            return Err(LogError::InvalidConfig {
                reason: "spare_segments above MAX_SPARE_SEGMENTS",
                value: self.spare_segments as u64,
            });
        }
        let record_span = record_span_bytes(self.max_record_bytes as usize);
        if record_span > size as usize - SEGMENT_HEADER_BYTES {
            return Err(LogError::InvalidConfig {
                reason: "max_record_bytes does not fit in a segment",
                value: self.max_record_bytes.into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        LogConfig::default().validate().expect("default config must be valid");
    }

    #[test]
    fn segment_size_limits_are_enforced_at_the_boundary() {
        for (size, ok) in [
            (MIN_SEGMENT_SIZE_BYTES, true),
            (MIN_SEGMENT_SIZE_BYTES - SEGMENT_SIZE_GRANULE_BYTES, false),
            (MAX_SEGMENT_SIZE_BYTES, true),
            (MAX_SEGMENT_SIZE_BYTES + SEGMENT_SIZE_GRANULE_BYTES, false),
            (65536 + 512, false),
        ] {
            assert_eq!(LogConfig::with_segment_size(size).validate().is_ok(), ok, "size {size}");
        }
    }

    #[test]
    fn max_record_must_fit_a_segment_exactly() {
        let size = 65536;
        let max = LogConfig::max_payload_for_segment(size);
        assert_eq!(record_span_bytes(max as usize), size as usize - SEGMENT_HEADER_BYTES);
        let mut config = LogConfig::with_segment_size(size);
        assert_eq!(config.max_record_bytes, max);
        config.validate().expect("largest fitting record is accepted");
        config.max_record_bytes = max + 1;
        assert!(config.validate().is_err());
    }

    #[test]
    fn spare_segments_limit_is_enforced() {
        let mut config = LogConfig::with_segment_size(65536);
        config.spare_segments = MAX_SPARE_SEGMENTS;
        assert!(config.validate().is_ok());
        config.spare_segments = MAX_SPARE_SEGMENTS + 1;
        assert!(config.validate().is_err());
    }
}
