//! Tests that cannot run here: skipped on a developer's machine, a failure in CI.

use std::io::Write;

/// Says that the test `what` cannot run here because of `why`, and how to make it run (`fix`).
///
/// When the environment variable `CI` is `true` (or `1`), this panics: a CI machine must run
/// every test, so a missing tool or service fails the run instead of turning it green with
/// nothing tested. Otherwise it writes one line, `SKIPPED <what>: <why> (to run it: <fix>)`,
/// straight to the process's stderr — libtest captures only the `print!` family of macros, so
/// the line shows in `cargo test`'s output — and the caller returns.
///
/// ```no_run
/// # fn server_tools() -> Option<std::path::PathBuf> { None }
/// let Some(tools) = server_tools() else {
///     audit_tests::skip("slow-db", "no initdb", "install PostgreSQL's server package");
///     return;
/// };
/// ```
pub fn skip(what: &str, why: &str, fix: &str) {
    if in_ci() {
        panic!(
            "{what} could not run, and CI=true does not allow skipping it: {why}. \
             To run it: {fix}."
        );
    }
    // One write of the whole line, so that parallel tests' lines do not interleave.
    let line = format!("SKIPPED {what}: {why} (to run it: {fix})\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// What `started` holds, or, where it failed because a tool or service is not available
/// here (`why`), [`skip`] the test `what` (a failure under `CI=true`) and `None`.
pub(crate) fn or_skip<T>(started: Result<T, String>, what: &str, fix: &str) -> Option<T> {
    match started {
        Ok(value) => Some(value),
        Err(why) => {
            skip(what, &why, fix);
            None
        }
    }
}

/// Whether this runs in CI: the variable `CI` is `true` or `1`, as CI services set it.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Output};

    /// Set in the child process only: there, [`child_skips`] calls [`skip`](super::skip).
    const CHILD: &str = "AUDIT_TESTS_SKIP_CHILD";

    /// Does nothing in a normal run; in the child started by the tests below, skips.
    #[test]
    fn child_skips() {
        if std::env::var_os(CHILD).is_some() {
            super::skip("child_skips", "no such tool here", "install the tool");
        }
    }

    /// Runs [`child_skips`] in a child process of this test binary with `CI` set to `ci` (or
    /// unset).
    fn run_child(ci: Option<&str>) -> Output {
        let mut command = Command::new(std::env::current_exe().expect("the test binary's path"));
        command
            .args(["--exact", "skip::tests::child_skips", "--test-threads=1"])
            .env(CHILD, "1")
            .env_remove("CI");
        if let Some(ci) = ci {
            command.env("CI", ci);
        }
        command.output().expect("the test binary runs")
    }

    #[test]
    fn outside_ci_a_skip_passes_and_says_so_on_stderr() {
        for ci in [None, Some("false"), Some("")] {
            let output = run_child(ci);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "CI={ci:?}: {output:?}");
            assert!(
                stderr
                    .lines()
                    .any(|l| l
                        == "SKIPPED child_skips: no such tool here (to run it: install the tool)"),
                "CI={ci:?}: no SKIPPED line on stderr: {stderr}"
            );
        }
    }

    #[test]
    fn in_ci_a_skip_fails_naming_the_test_the_cause_and_the_fix() {
        for ci in ["true", "TRUE", "1"] {
            let output = run_child(Some(ci));
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(!output.status.success(), "CI={ci}: the skip passed: {all}");
            for part in [
                "child_skips could not run",
                "no such tool here",
                "install the tool",
            ] {
                assert!(
                    all.contains(part),
                    "CI={ci}: the failure does not say {part:?}: {all}"
                );
            }
            assert!(!all.contains("SKIPPED"), "CI={ci}: {all}");
        }
    }
}
