//! Fuzz target `epoch`: `cairn_core::fuzzing::epoch_record` (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_core::fuzzing::epoch_record(data));
