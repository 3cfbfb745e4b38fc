//! What the demo seeds (see `demo-app/src/db.rs`, `seed_ids`), and the canary secrets the
//! tests give it: values that must never reach the audit log, easy to find in bytes.

/// The seeded users' password (`DEMO_PASSWORD`): a canary that must never reach the audit log.
pub const PASSWORD: &str = "CANARY-PASSWORD-7f3c9e21d4a8";
/// `acc_demo`'s seeded API token (`DEMO_ADMIN_TOKEN`): a canary.
pub const ADMIN_TOKEN: &str = "CANARYTOKEN-admin-5b8e2f1a9c3d";
/// `acc_other`'s seeded API token (`DEMO_OTHER_TOKEN`): a canary.
pub const OTHER_TOKEN: &str = "CANARYTOKEN-other-3d7a6c0e4b1f";

/// The seeded account that alice administers.
pub const DEMO: &str = "acc_demo";
/// The seeded account of bob.
pub const OTHER: &str = "acc_other";
/// `acc_demo`'s user, whose API token is [`ADMIN_TOKEN`].
pub const ALICE: &str = "alice@example.com";
/// Alice's user id.
pub const ALICE_ID: &str = "7c5dae5552338874e5053f2534d2767a";
/// `acc_other`'s user, whose API token is [`OTHER_TOKEN`].
pub const BOB: &str = "bob@example.org";
/// The id of `acc_demo`'s seeded alerting policy.
pub const SEEDED_POLICY: &str = "0da2b59e-f118-439d-8097-bdfb215203c9";
/// The id of `acc_demo`'s seeded zone, `example.com`.
pub const EXAMPLE_ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
/// The `User-Agent` of [`Api`](crate::Api)'s requests.
pub const USER_AGENT: &str = "demo-e2e/1.0 (audit-tests)";
