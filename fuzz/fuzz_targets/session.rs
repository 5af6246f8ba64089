//! Fuzz target `session`: `cairn_core::fuzzing::session` (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_core::fuzzing::session(data));
