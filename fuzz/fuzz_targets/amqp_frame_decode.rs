//! Fuzz target for the AMQP 0-9-1 decoder: arbitrary bytes through `decode_frame` (looped,
//! frame_max 131072), a per-channel `ContentAssembler`, re-encoding of what was accepted,
//! `decode_properties`, and the SASL parsers.
//!
//! The body lives in `weir_amqp_codec::fuzz_one_input` so that the proptest in
//! `crates/weir-amqp-codec/tests/fuzz_path.rs` runs exactly the same path in CI.
//! Invariant: no input may panic, abort or overflow the stack. Every crash found here
//! becomes a named regression test in that crate.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir_amqp_codec::fuzz_one_input(data);
});
