//! Fuzz target `pack`: `cairn_core::fuzzing::pack_trailer` (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_core::fuzzing::pack_trailer(data));
