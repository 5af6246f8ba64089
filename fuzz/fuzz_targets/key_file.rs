//! Fuzz target `key_file`: `cairn_core::fuzzing::key_file` (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_core::fuzzing::key_file(data));
