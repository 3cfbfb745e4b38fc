//! `common::skip`, the one way a test that cannot run here says so: skipped with a line on
//! stderr outside CI, failed under CI. Both branches are seen from outside, by running this
//! test binary again as a child process with the environment set, as `cargo test` would.

mod common;

use std::process::{Command, Output};

use common::TestResult;

/// The variable that makes [`a_test_that_cannot_run`] call `skip` (it does nothing without it).
const PROBE: &str = "AUDIT_TEST_SKIP_PROBE";

/// Not a test of its own: what the two tests below run in a child process.
#[test]
#[ignore = "run as a child process by the skip tests"]
fn a_test_that_cannot_run() {
    if std::env::var_os(PROBE).is_some() {
        common::skip("the probe", "the probe's reason");
    }
}

/// Runs [`a_test_that_cannot_run`] in a child process, with `CI` set to `ci` (or unset).
fn run_probe(ci: Option<&str>) -> TestResult<Output> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .args(["--exact", "a_test_that_cannot_run", "--ignored"])
        .env(PROBE, "1");
    match ci {
        Some(ci) => command.env("CI", ci),
        None => command.env_remove("CI"),
    };
    Ok(command.output()?)
}

#[test]
fn outside_ci_a_test_that_cannot_run_is_skipped_with_a_line_on_stderr() -> TestResult {
    for ci in [None, Some("false")] {
        let output = run_probe(ci)?;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert!(output.status.success(), "CI={ci:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("SKIPPED a_test_that_cannot_run: the probe's reason\n"),
            "CI={ci:?}: {stderr}"
        );
        assert!(stdout.contains("1 passed"), "CI={ci:?}: {stdout}");
    }
    Ok(())
}

#[test]
fn under_ci_a_test_that_cannot_run_fails_and_says_how_to_fix_it() -> TestResult {
    let output = run_probe(Some("true"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    for needed in [
        "a_test_that_cannot_run: the probe cannot run under CI: the probe's reason",
        "Set the variable it needs",
        ".ci/run",
        common::POSTGRES_URL_VAR,
        common::SDK_PYTHON_VAR,
    ] {
        assert!(text.contains(needed), "{needed:?} missing: {text}");
    }
    assert!(!text.contains("SKIPPED"), "{text}");
    Ok(())
}
