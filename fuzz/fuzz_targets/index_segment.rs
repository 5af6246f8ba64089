//! Fuzz target `index_segment`: `cairn_core::fuzzing::index_segment` (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_core::fuzzing::index_segment(data));
