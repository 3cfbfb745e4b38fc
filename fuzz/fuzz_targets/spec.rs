//! Input bytes as an OpenAPI document, JSON or YAML: reading and compiling it must never
//! panic, and a compiled policy's redactions must hold the invariants of `fuzz_checks`.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../audit-layer/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::check_spec(data));
