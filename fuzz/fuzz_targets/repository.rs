//! Fuzz target `repository`: `cairn_core::fuzzing::repository` (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_core::fuzzing::repository(data));
