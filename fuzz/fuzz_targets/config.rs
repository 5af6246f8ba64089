//! Fuzz target `config`: `cairn_core::fuzzing::config` (see that module).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cairn_core::fuzzing::config(data));
