//! The demo seed: two accounts, each with a user, a membership, a zone, a DNS record and an
//! API token, and (for `acc_demo`) an alerting policy — the ids fixed ([`seed_ids`]) so that
//! printed commands and tests can name them.

use crate::db::{Db, new_id, now_ms, on_db};
use crate::secrets::{hash_password, new_secret, sha256_hex};

/// What the seed is told: the fixed token values and the users' password.
#[derive(Clone)]
pub(crate) struct SeedConfig {
    /// `DEMO_ADMIN_TOKEN`: the value of `acc_demo`'s seeded token; random when unset.
    pub(crate) admin_token: Option<String>,
    /// `DEMO_OTHER_TOKEN`: the value of `acc_other`'s seeded token; random when unset.
    pub(crate) other_token: Option<String>,
    /// `DEMO_PASSWORD`: the seeded users' password.
    pub(crate) password: String,
}

impl std::fmt::Debug for SeedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedConfig").finish_non_exhaustive()
    }
}

/// One seeded account, as printed at start-up.
#[derive(Clone)]
pub(crate) struct SeededAccount {
    /// The account id.
    pub(crate) id: &'static str,
    /// The account's name.
    pub(crate) name: &'static str,
    /// The seeded user's email.
    pub(crate) email: &'static str,
    /// The value of the seeded API token.
    pub(crate) token: String,
    /// Whether `token` was generated at this start (not fixed by the environment).
    pub(crate) token_generated: bool,
    /// The environment variable that fixes the token.
    pub(crate) token_env: &'static str,
}

impl std::fmt::Debug for SeededAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededAccount")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The fixed ids of the seed, so that printed commands and tests can name them.
pub(crate) mod seed_ids {
    /// The demo account.
    pub(crate) const DEMO_ACCOUNT: &str = "acc_demo";
    /// The other account, to show that accounts are isolated.
    pub(crate) const OTHER_ACCOUNT: &str = "acc_other";
    /// alice@example.com.
    pub(crate) const ALICE: &str = "7c5dae5552338874e5053f2534d2767a";
    /// bob@example.org.
    pub(crate) const BOB: &str = "9a7806061c88ada191ed06f989cc3dac";
    /// The zone example.com, in the demo account.
    pub(crate) const EXAMPLE_ZONE: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    /// The zone example.org, in the other account.
    pub(crate) const OTHER_ZONE: &str = "a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9";
    /// The demo account's alerting policy.
    pub(crate) const POLICY: &str = "0da2b59e-f118-439d-8097-bdfb215203c9";
    /// The demo account's seeded API token.
    pub(crate) const ADMIN_TOKEN: &str = "ed17574386854bf78a67040be0a770b0";
    /// The other account's seeded API token.
    pub(crate) const OTHER_TOKEN: &str = "b2c95d1e3f6a4b7c8d9e0f1a2b3c4d5e";
}

struct SeedAccount {
    id: &'static str,
    name: &'static str,
    user: &'static str,
    email: &'static str,
    zone: &'static str,
    zone_name: &'static str,
    token_id: &'static str,
    token_name: &'static str,
    token_env: &'static str,
}

const SEED: [SeedAccount; 2] = [
    SeedAccount {
        id: seed_ids::DEMO_ACCOUNT,
        name: "Example account",
        user: seed_ids::ALICE,
        email: "alice@example.com",
        zone: seed_ids::EXAMPLE_ZONE,
        zone_name: "example.com",
        token_id: seed_ids::ADMIN_TOKEN,
        token_name: "demo admin token",
        token_env: "DEMO_ADMIN_TOKEN",
    },
    SeedAccount {
        id: seed_ids::OTHER_ACCOUNT,
        name: "Other account",
        user: seed_ids::BOB,
        email: "bob@example.org",
        zone: seed_ids::OTHER_ZONE,
        zone_name: "example.org",
        token_id: seed_ids::OTHER_TOKEN,
        token_name: "other admin token",
        token_env: "DEMO_OTHER_TOKEN",
    },
];

/// Seeds the demo accounts, idempotently.
///
/// The accounts with their user, membership, zone, DNS record and (for `acc_demo`) alerting
/// policy are inserted once, when the account does not exist yet; later starts leave what the
/// demo's users changed alone. The users' password and the seeded tokens are set on every
/// start, since only their hashes are stored: a token not fixed by the environment is a new
/// random one each time, printed at start-up.
pub(crate) async fn seed(db: &Db, config: &SeedConfig) -> Result<Vec<SeededAccount>, sqlx::Error> {
    let now = now_ms();
    let mut seeded = Vec::new();
    for (account, fixed) in SEED.iter().zip([&config.admin_token, &config.other_token]) {
        let (token, token_generated) = match fixed {
            Some(value) => (value.clone(), false),
            None => (new_secret(), true),
        };
        let token_hash = sha256_hex(&token);
        // One hash per user: a shared salt would show that the users share a password.
        let password_hash = hash_password(&config.password);
        on_db!(db, p => {
            let mut tx = p.begin().await?;
            let exists: Option<String> = sqlx::query_scalar("SELECT id FROM accounts WHERE id = $1")
                .bind(account.id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                sqlx::query("INSERT INTO accounts (id, name, enforce_twofactor, created_ms) VALUES ($1, $2, $3, $4)")
                    .bind(account.id).bind(account.name).bind(false).bind(now)
                    .execute(&mut *tx).await?;
                sqlx::query("INSERT INTO users (id, email, password_hash, created_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
                    .bind(account.user).bind(account.email).bind(&password_hash).bind(now)
                    .execute(&mut *tx).await?;
                sqlx::query("INSERT INTO members (account_id, user_id, role, created_ms) VALUES ($1, $2, 'administrator', $3)")
                    .bind(account.id).bind(account.user).bind(now)
                    .execute(&mut *tx).await?;
                sqlx::query("INSERT INTO zones (id, account_id, name, status, paused, created_ms, modified_ms) VALUES ($1, $2, $3, 'active', $4, $5, $5)")
                    .bind(account.zone).bind(account.id).bind(account.zone_name).bind(false).bind(now)
                    .execute(&mut *tx).await?;
                sqlx::query("INSERT INTO dns_records (id, zone_id, type, name, content, ttl, proxied, comment, created_ms, modified_ms) VALUES ($1, $2, 'A', $3, '192.0.2.10', 1, $4, NULL, $5, $5)")
                    .bind(new_id()).bind(account.zone).bind(format!("www.{}", account.zone_name)).bind(true).bind(now)
                    .execute(&mut *tx).await?;
                if account.id == seed_ids::DEMO_ACCOUNT {
                    sqlx::query("INSERT INTO alerting_policies (id, account_id, name, description, enabled, alert_type, filters, mechanisms, created_ms, modified_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)")
                        .bind(seed_ids::POLICY)
                        .bind(account.id)
                        .bind("Advanced Security Events Alert")
                        .bind("Seeded by demo-app")
                        .bind(true)
                        .bind("clickhouse_alert_fw_ent_anomaly")
                        .bind(format!(r#"{{"services":["securitylevel"],"zones":["{}"]}}"#, account.zone))
                        .bind(r#"{"email":[{"id":"alice@example.com"}],"webhooks":[]}"#)
                        .bind(now)
                        .execute(&mut *tx).await?;
                }
            }
            sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                .bind(&password_hash).bind(account.user)
                .execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO api_tokens (id, account_id, user_id, name, token_hash, created_ms, revoked_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, NULL) \
                 ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash, revoked_ms = NULL",
            )
            .bind(account.token_id).bind(account.id).bind(account.user).bind(account.token_name).bind(&token_hash).bind(now)
            .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        seeded.push(SeededAccount {
            id: account.id,
            name: account.name,
            email: account.email,
            token,
            token_generated,
            token_env: account.token_env,
        });
    }
    Ok(seeded)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use super::*;

    /// A migrated, seeded database in a temporary directory, with fixed tokens.
    pub(crate) async fn seeded_db(dir: &Path) -> (Db, Vec<SeededAccount>) {
        let db = Db::open_sqlite(&dir.join("app.db")).await.unwrap();
        db.migrate().await.unwrap();
        let seeded = seed(&db, &test_seed_config()).await.unwrap();
        (db, seeded)
    }

    pub(crate) fn test_seed_config() -> SeedConfig {
        SeedConfig {
            admin_token: Some("demo_admin_token_for_tests_0123456789".into()),
            other_token: Some("demo_other_token_for_tests_0123456789".into()),
            password: "correct horse battery staple".into(),
        }
    }

    #[tokio::test]
    async fn seeding_twice_keeps_one_of_everything_and_rotates_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let (db, first) = seeded_db(dir.path()).await;
        let mut config = test_seed_config();
        config.admin_token = None;
        let second = seed(&db, &config).await.unwrap();
        assert!(second[0].token_generated);
        assert_ne!(first[0].token, second[0].token);
        db.migrate().await.unwrap();
        let Db::Sqlite(pool) = &db else {
            unreachable!()
        };
        for (table, n) in [
            ("accounts", 2),
            ("users", 2),
            ("members", 2),
            ("zones", 2),
            ("dns_records", 2),
            ("alerting_policies", 1),
            ("api_tokens", 2),
        ] {
            let count: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                    .fetch_one(pool)
                    .await
                    .unwrap();
            assert_eq!(count, n, "{table}");
        }
        let hash: String = sqlx::query_scalar("SELECT token_hash FROM api_tokens WHERE id = $1")
            .bind(seed_ids::ADMIN_TOKEN)
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(hash, sha256_hex(&second[0].token));
    }
}
