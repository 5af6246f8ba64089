//! Fuzz target `snapshot`: `cairn_core::fuzzing::snapshot` (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_core::fuzzing::snapshot(data));
