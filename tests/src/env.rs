//! Settings of the fault tests from the environment: the soak (`scripts/soak.sh`) scales the
//! tests through these.

use std::time::Duration;

/// A duration from the environment variable `name` (whole or fractional seconds), else
/// `default`.
pub fn env_secs(name: &str, default: Duration) -> Duration {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map_or(default, Duration::from_secs_f64)
}

/// A positive number from the environment variable `name`, else `default`.
pub fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(default)
}
