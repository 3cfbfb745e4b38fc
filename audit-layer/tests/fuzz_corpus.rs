//! The fuzz targets' checks, run in CI on stable Rust without libFuzzer.
//!
//! 1. Every file of the committed seed corpora, `fuzz/corpus/redact` and `fuzz/corpus/spec`,
//!    is replayed through the same check functions as `fuzz/fuzz_targets/{redact,spec}.rs`
//!    (shared in `tests/fuzz_checks/mod.rs`).
//! 2. A bounded, deterministic mutation loop (a fixed-seed PRNG, byte-level mutations and
//!    splices of the seeds with JSON-ish tokens) feeds the same checks. A failure prints the
//!    iteration and the mutated input; `FUZZ_ITERATIONS` and `FUZZ_SEED` override the
//!    defaults for longer local runs.

mod fuzz_checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Default iterations of the mutation loops: small enough for a debug build in CI.
const REDACT_ITERATIONS: u64 = 20_000;
const SPEC_ITERATIONS: u64 = 3_000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The seed files of one target's corpus, sorted by name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut seeds: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                bytes,
            )
        })
        .collect();
    seeds.sort();
    assert!(
        seeds.len() >= 5,
        "{}: expected a seed corpus",
        dir.display()
    );
    seeds
}

/// Runs `check` on `input`, and on a panic says which input it was.
fn run(check: fn(&[u8]), input: &[u8], label: &dyn Fn() -> String) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(input))) {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        panic!(
            "{}: {message}\n  input ({} bytes, escaped): {}",
            label(),
            input.len(),
            input.escape_ascii()
        );
    }
}

#[test]
fn redact_corpus_replays_clean() {
    for (name, bytes) in seeds("redact") {
        run(fuzz_checks::check_redact, &bytes, &|| {
            format!("fuzz/corpus/redact/{name}")
        });
    }
}

#[test]
fn spec_corpus_replays_clean() {
    for (name, bytes) in seeds("spec") {
        run(fuzz_checks::check_spec, &bytes, &|| {
            format!("fuzz/corpus/spec/{name}")
        });
    }
    // The fixture the redaction target compiles is a spec seed too.
    run(
        fuzz_checks::check_spec,
        fuzz_checks::FIXTURE.as_bytes(),
        &|| "the fixture".to_owned(),
    );
}

#[test]
fn redact_survives_mutations() {
    let seeds: Vec<Vec<u8>> = seeds("redact").into_iter().map(|(_, b)| b).collect();
    mutate_and_check(
        &seeds,
        REDACT_ITERATIONS,
        0x5EED_0001,
        4096,
        fuzz_checks::check_redact,
    );
}

#[test]
fn spec_survives_mutations() {
    let mut seeds: Vec<Vec<u8>> = seeds("spec").into_iter().map(|(_, b)| b).collect();
    seeds.push(fuzz_checks::FIXTURE.as_bytes().to_vec());
    mutate_and_check(
        &seeds,
        SPEC_ITERATIONS,
        0x5EED_0002,
        16 * 1024,
        fuzz_checks::check_spec,
    );
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|e| panic!("{name}={value}: {e}")))
}

fn mutate_and_check(
    seeds: &[Vec<u8>],
    iterations: u64,
    seed: u64,
    max_len: usize,
    check: fn(&[u8]),
) {
    let iterations = env_u64("FUZZ_ITERATIONS").unwrap_or(iterations);
    let seed = env_u64("FUZZ_SEED").unwrap_or(seed);
    let mut rng = SplitMix64(seed);
    for i in 0..iterations {
        let mut input = seeds[rng.below(seeds.len())].clone();
        for _ in 0..=rng.below(4) {
            mutate(&mut input, seeds, &mut rng);
        }
        input.truncate(max_len);
        run(check, &input, &|| format!("mutation {i} of seed {seed:#x}"));
    }
}

/// JSON-ish tokens spliced into inputs: structure, escapes, numbers at the edges.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"\\",
    b"{}",
    b"[]",
    b"null",
    b"true",
    b"false",
    b"\"name\":",
    b"\"filters\":",
    b"\"mechanisms\":",
    b"\"webhooks\":",
    b"\"labels\":",
    b"\"condition\":",
    b"\"children\":",
    b"\"id\":",
    b"\"url\":",
    b"\"_unparsed\":",
    b"\"n\\u0061me\":",
    b"\\u0000",
    b"\\ud83d\\ude00",
    b"\\ud800",
    b"\\udc00",
    b"\\u00e9",
    b"\\/",
    b"-0",
    b"0.5e-3",
    b"1E+2",
    b"01",
    b"1.",
    b"-",
    b"1e999",
    b"123456789012345678901234567890",
    b"\xc3\xa9",
    b"\xf0\x9f\x98\x80",
    b"\xff",
    b"\xed\xa0\x80",
    b"\x00",
    b"\t",
    b" ",
    b"[[[[[[[[[[[[[[[[",
    b"]]]]]]]]]]]]]]]]",
    b"{\"a\":{\"a\":{\"a\":{\"a\":",
    b"}}}}",
];

fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut SplitMix64) {
    let len = input.len();
    match rng.below(9) {
        // Flip a bit.
        0 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        // Replace a byte with a structural or boundary byte.
        1 if len > 0 => {
            const BYTES: &[u8] = b"{}[]\":,\\ 0123456789-+.eEtfnu\x00\x1f\x7f\x80\xff";
            let at = rng.below(len);
            input[at] = BYTES[rng.below(BYTES.len())];
        }
        // Delete a range.
        2 if len > 0 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(16)).min(len);
            input.drain(at..end);
        }
        // Duplicate a range in place.
        3 if len > 0 => {
            let at = rng.below(len);
            let end = (at + 1 + rng.below(64)).min(len);
            let copy = input[at..end].to_vec();
            let to = rng.below(len + 1);
            input.splice(to..to, copy);
        }
        // Splice in part of another seed.
        4 => {
            let other = &seeds[rng.below(seeds.len())];
            if !other.is_empty() {
                let at = rng.below(other.len());
                let end = (at + 1 + rng.below(128)).min(other.len());
                let to = rng.below(len + 1);
                input.splice(to..to, other[at..end].iter().copied());
            }
        }
        // Truncate.
        5 if len > 0 => input.truncate(rng.below(len)),
        // Repeat the whole input's opening (deep nesting).
        6 if len > 0 => {
            let head = input[..rng.below(len.min(8)) + 1].to_vec();
            for _ in 0..rng.below(40) {
                input.splice(0..0, head.iter().copied());
            }
        }
        // Insert or overwrite with a token.
        _ => {
            let token = TOKENS[rng.below(TOKENS.len())];
            let to = rng.below(len + 1);
            if rng.below(2) == 0 || to == len {
                input.splice(to..to, token.iter().copied());
            } else {
                let end = (to + token.len()).min(len);
                input.splice(to..end, token.iter().copied());
            }
        }
    }
}

/// A tiny deterministic PRNG (SplitMix64), enough to pick mutations.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
