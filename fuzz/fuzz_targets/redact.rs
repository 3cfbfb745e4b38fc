//! Input bytes as a request or response body of the operations of a policy compiled from
//! `schemas/fixtures/alerting-3.0.yaml`; see `fuzz_checks` for the invariants.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../audit-layer/tests/fuzz_checks/mod.rs"]
mod fuzz_checks;

fuzz_target!(|data: &[u8]| fuzz_checks::check_redact(data));
