//! Non-recursive validation of method payloads, content properties and field tables.
//!
//! `amq-protocol` parses field tables by recursion with no depth limit: a `queue.declare`
//! whose arguments nest ~1 200 tables deep overflows a 2 MiB stack and aborts the whole
//! process (trap #1). Before any payload reaches `amq-protocol`, this module walks it with a
//! cursor and an explicit, fixed-size stack of open containers, and rejects:
//! - nesting deeper than [`FIELD_TABLE_DEPTH_MAX`] (the outermost table is depth 1, every
//!   nested table or array adds one);
//! - a field-value tag outside the table `amq-protocol` and RabbitMQ accept;
//! - a short string (method field, property, or table key) that is not UTF-8 (trap #4);
//! - any length that runs past its container, and trailing bytes after the last field.
//!
//! Invariants:
//! - No recursion and no heap allocation: stack use is constant whatever the input.
//! - Everything this module accepts, `amq-protocol` parses (checked by property tests), so a
//!   later `amq-protocol` failure is a Weir bug, not a client error.

use crate::schema::{Field, FieldKind};

/// Deepest nesting of field tables and arrays accepted anywhere (the outermost table counts
/// as 1). Deeper input is answered with 502 SYNTAX_ERROR.
pub const FIELD_TABLE_DEPTH_MAX: usize = 64;

/// Why a payload failed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// A length or fixed-size value runs past the end of its container.
    Truncated,
    /// Bytes remain after the last field.
    TrailingBytes,
    /// A short string is not UTF-8.
    InvalidUtf8,
    /// A field value carries a tag outside the accepted table.
    UnknownTag(u8),
    /// Tables/arrays nest deeper than [`FIELD_TABLE_DEPTH_MAX`].
    TooDeep,
}

impl ScanError {
    /// Human-readable description for reply texts.
    pub(crate) fn describe(self) -> String {
        match self {
            ScanError::Truncated => "value runs past the end of the frame".to_owned(),
            ScanError::TrailingBytes => "unexpected bytes after the last field".to_owned(),
            ScanError::InvalidUtf8 => "short string is not valid UTF-8".to_owned(),
            ScanError::UnknownTag(tag) => {
                if tag.is_ascii_graphic() {
                    format!("unknown field value type '{}'", char::from(tag))
                } else {
                    format!("unknown field value type 0x{tag:02x}")
                }
            }
            ScanError::TooDeep => {
                format!("field tables and arrays nested deeper than {FIELD_TABLE_DEPTH_MAX} levels")
            }
        }
    }
}

/// A forward-only reader over a byte slice that never panics: every read checks bounds.
#[derive(Clone, Debug)]
pub(crate) struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, position: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.position == self.bytes.len()
    }

    pub(crate) fn take(&mut self, length: usize) -> Result<&'a [u8], ScanError> {
        let end =
            self.position.checked_add(length).filter(|end| *end <= self.bytes.len()).ok_or(ScanError::Truncated)?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, ScanError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, ScanError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, ScanError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, ScanError> {
        let mut array = [0u8; 8];
        array.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(array))
    }

    /// A short string, checked to be UTF-8.
    pub(crate) fn short_string(&mut self) -> Result<&'a str, ScanError> {
        let length = usize::from(self.u8()?);
        std::str::from_utf8(self.take(length)?).map_err(|_| ScanError::InvalidUtf8)
    }

    /// A long string or byte array: 4-octet length then raw bytes.
    pub(crate) fn long_bytes(&mut self) -> Result<&'a [u8], ScanError> {
        let length = usize::try_from(self.u32()?).map_err(|_| ScanError::Truncated)?;
        self.take(length)
    }

    /// A length-prefixed field table, validated without recursion; returns its entries.
    pub(crate) fn table(&mut self) -> Result<&'a [u8], ScanError> {
        let entries = self.long_bytes()?;
        scan_table_entries(entries)?;
        Ok(entries)
    }
}

/// The kind of an open container on the scan stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Container {
    /// Entries are `short-string key, tag, value`.
    Table,
    /// Entries are `tag, value`.
    Array,
}

/// Validates the entries of one field table (the bytes after its 4-octet length) and every
/// table or array nested inside, iteratively.
pub(crate) fn scan_table_entries(entries: &[u8]) -> Result<(), ScanError> {
    // Nested containers are contiguous sub-ranges of `entries`, so one cursor walks them all;
    // the stack only remembers where each open container ends. Fixed size: no allocation.
    let mut ends = [(Container::Table, 0usize); FIELD_TABLE_DEPTH_MAX];
    ends[0] = (Container::Table, entries.len());
    let mut depth = 1usize;
    let mut cursor = Cursor::new(entries);
    loop {
        let (container, end) = ends[depth - 1];
        if cursor.position == end {
            depth -= 1;
            if depth == 0 {
                return Ok(());
            }
            continue;
        }
        // A nested container's end never exceeds its parent's, so reads are bounded by
        // `end` through a cursor limited to it.
        let mut bounded = Cursor { bytes: &entries[..end], position: cursor.position };
        if container == Container::Table {
            bounded.short_string()?;
        }
        let tag = bounded.u8()?;
        if let Some(length) = fixed_value_length(tag) {
            bounded.take(length)?;
        } else {
            match tag {
                b'S' | b'x' => {
                    bounded.long_bytes()?;
                }
                b'F' | b'A' => {
                    let length = usize::try_from(bounded.u32()?).map_err(|_| ScanError::Truncated)?;
                    let child_end = bounded
                        .position
                        .checked_add(length)
                        .filter(|child_end| *child_end <= end)
                        .ok_or(ScanError::Truncated)?;
                    if depth == FIELD_TABLE_DEPTH_MAX {
                        return Err(ScanError::TooDeep);
                    }
                    let kind = if tag == b'F' { Container::Table } else { Container::Array };
                    ends[depth] = (kind, child_end);
                    depth += 1;
                }
                _ => return Err(ScanError::UnknownTag(tag)),
            }
        }
        cursor.position = bounded.position;
    }
}

/// Size of the value after a fixed-size tag, following the table RabbitMQ's
/// `rabbit_binary_parser` and `amq-protocol-types` share (`s` = i16, `l`/`L` = i64, …).
/// `U` (i16, the spec's letter) is accepted because `amq-protocol` accepts it; RabbitMQ
/// would not. Variable-size tags (`S`, `x`, `F`, `A`) return `None`, as do unknown ones.
fn fixed_value_length(tag: u8) -> Option<usize> {
    match tag {
        b'V' => Some(0),
        b't' | b'b' | b'B' => Some(1),
        b's' | b'U' | b'u' => Some(2),
        b'I' | b'i' | b'f' => Some(4),
        b'D' => Some(5),
        b'l' | b'L' | b'd' | b'T' => Some(8),
        _ => None,
    }
}

/// Where in a list of fields validation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldError {
    /// Field name, or `""` for trailing bytes.
    pub(crate) field: &'static str,
    pub(crate) error: ScanError,
}

/// Validates one field of `kind` at the cursor.
pub(crate) fn scan_field(cursor: &mut Cursor<'_>, kind: FieldKind) -> Result<(), ScanError> {
    match kind {
        FieldKind::Octet => cursor.take(1).map(drop),
        FieldKind::Short => cursor.take(2).map(drop),
        FieldKind::Long => cursor.take(4).map(drop),
        FieldKind::LongLong | FieldKind::Timestamp => cursor.take(8).map(drop),
        FieldKind::ShortString => cursor.short_string().map(drop),
        FieldKind::LongString => cursor.long_bytes().map(drop),
        FieldKind::Bits(count) => cursor.take(usize::from(count).div_ceil(8)).map(drop),
        FieldKind::Table => cursor.table().map(drop),
    }
}

/// Validates a method payload (after class and method ids) against its field list.
pub(crate) fn scan_fields(payload: &[u8], fields: &[Field]) -> Result<(), FieldError> {
    let mut cursor = Cursor::new(payload);
    for (field, kind) in fields {
        scan_field(&mut cursor, *kind).map_err(|error| FieldError { field, error })?;
    }
    if cursor.is_empty() {
        Ok(())
    } else {
        Err(FieldError { field: "", error: ScanError::TrailingBytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of `depth` levels: `{"k": {"k": … {}}}`; the outermost counts as 1.
    fn nested_table_entries(depth: usize) -> Vec<u8> {
        // Built inside-out, iteratively.
        let mut entries: Vec<u8> = Vec::new();
        for _ in 1..depth {
            let mut outer = vec![1, b'k', b'F'];
            outer.extend_from_slice(&u32::try_from(entries.len()).unwrap().to_be_bytes());
            outer.extend_from_slice(&entries);
            entries = outer;
        }
        entries
    }

    #[test]
    fn empty_table_is_valid() {
        assert_eq!(scan_table_entries(&[]), Ok(()));
    }

    #[test]
    fn every_fixed_tag_is_accepted_with_its_size() {
        for (tag, size) in [
            (b't', 1),
            (b'b', 1),
            (b'B', 1),
            (b's', 2),
            (b'U', 2),
            (b'u', 2),
            (b'I', 4),
            (b'i', 4),
            (b'f', 4),
            (b'D', 5),
            (b'l', 8),
            (b'L', 8),
            (b'd', 8),
            (b'T', 8),
            (b'V', 0),
        ] {
            let mut entries = vec![1, b'k', tag];
            entries.extend(std::iter::repeat_n(0u8, size));
            assert_eq!(scan_table_entries(&entries), Ok(()), "tag {}", char::from(tag));
            if size > 0 {
                entries.pop();
                assert_eq!(scan_table_entries(&entries), Err(ScanError::Truncated));
            }
        }
    }

    #[test]
    fn unknown_tag_is_rejected() {
        assert_eq!(scan_table_entries(&[1, b'k', b'Z']), Err(ScanError::UnknownTag(b'Z')));
    }

    #[test]
    fn non_utf8_key_is_rejected() {
        assert_eq!(scan_table_entries(&[1, 0xff, b'V']), Err(ScanError::InvalidUtf8));
    }

    #[test]
    fn depth_limit_is_exact() {
        assert_eq!(scan_table_entries(&nested_table_entries(FIELD_TABLE_DEPTH_MAX)), Ok(()));
        assert_eq!(scan_table_entries(&nested_table_entries(FIELD_TABLE_DEPTH_MAX + 1)), Err(ScanError::TooDeep));
    }

    #[test]
    fn arrays_count_towards_depth_and_hold_tagged_values() {
        // {"a": [1i, [], {"x": V}]}
        let inner_table = [1, b'x', b'V'];
        let mut array = vec![b'I', 0, 0, 0, 1, b'A', 0, 0, 0, 0, b'F'];
        array.extend_from_slice(&(inner_table.len() as u32).to_be_bytes());
        array.extend_from_slice(&inner_table);
        let mut entries = vec![1, b'a', b'A'];
        entries.extend_from_slice(&(array.len() as u32).to_be_bytes());
        entries.extend_from_slice(&array);
        assert_eq!(scan_table_entries(&entries), Ok(()));
    }

    #[test]
    fn child_longer_than_parent_is_truncated() {
        // Outer table claims a nested table of 100 bytes but holds 0.
        assert_eq!(scan_table_entries(&[1, b'k', b'F', 0, 0, 0, 100]), Err(ScanError::Truncated));
    }

    #[test]
    fn trailing_bytes_after_fields_are_rejected() {
        let fields = [("a", FieldKind::Octet)];
        assert_eq!(scan_fields(&[1], &fields), Ok(()));
        assert_eq!(scan_fields(&[1, 2], &fields), Err(FieldError { field: "", error: ScanError::TrailingBytes }));
    }

    #[test]
    fn huge_declared_lengths_do_not_overflow() {
        let mut cursor = Cursor::new(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(cursor.long_bytes(), Err(ScanError::Truncated));
        assert_eq!(scan_table_entries(&[1, b'k', b'A', 0xff, 0xff, 0xff, 0xff]), Err(ScanError::Truncated));
    }
}
