//! The start-up banner on stdout: where the app listens and keeps its data, the seeded
//! accounts with their API tokens, and commands to paste. The users' password is shown only
//! when it is the built-in default.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;

use audit_layer::record::Timestamp;

use crate::config::{Config, DEFAULT_PASSWORD};
use crate::db::{SeededAccount, seed_ids};

/// What the banner tells, once the app listens.
pub(crate) struct Banner<'a> {
    /// The settings.
    pub(crate) config: &'a Config,
    /// The address the app listens on.
    pub(crate) local: SocketAddr,
    /// Where the app's tables are, for people.
    pub(crate) app_db: &'a str,
    /// Where the audit log is, for people.
    pub(crate) audit_db: &'a str,
    /// The audit spool's directory.
    pub(crate) spool: &'a Path,
    /// The seeded accounts.
    pub(crate) seeded: &'a [SeededAccount],
}

impl Banner<'_> {
    /// Prints where the app listens, what was seeded, and commands to paste.
    pub(crate) fn print(&self) {
        let base = self.base_url();
        let mut lines = self.places(&base);
        lines.extend(self.accounts());
        lines.extend(self.commands(&base));
        println!("{}", lines.join("\n"));
    }

    /// The URL to reach the app at: loopback when it listens on every address.
    fn base_url(&self) -> String {
        let ip = if self.local.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            self.local.ip()
        };
        format!("http://{}", SocketAddr::new(ip, self.local.port()))
    }

    /// Where the app listens and keeps its data.
    fn places(&self, base: &str) -> Vec<String> {
        let data_dir = &self.config.data_dir;
        vec![
            String::new(),
            format!("demo-app {} listening on {base}", env!("CARGO_PKG_VERSION")),
            format!("  app database:   {}", self.app_db),
            format!(
                "  audit database: {}, spool {}",
                self.audit_db,
                self.spool.display()
            ),
            format!(
                "  audit chain:    public key {} (checkpoints in {})",
                data_dir.join("audit-public.key").display(),
                data_dir.join("checkpoints.jsonl").display()
            ),
            format!("  OpenAPI:        {base}/openapi.json"),
            String::new(),
        ]
    }

    /// The seeded accounts, their users' password and their API tokens.
    fn accounts(&self) -> Vec<String> {
        let password_note = if self.config.password_from_env {
            "from DEMO_PASSWORD".to_owned()
        } else {
            format!("{DEFAULT_PASSWORD} (set DEMO_PASSWORD to change it)")
        };
        let mut lines = vec![format!(
            "Seeded accounts (users' password: {password_note}):"
        )];
        for a in self.seeded {
            let origin = if a.token_generated {
                format!("new at each start; set {} to fix it", a.token_env)
            } else {
                format!("from {}", a.token_env)
            };
            lines.push(format!(
                "  {:<10} {:<18} {:<18} API token {} ({origin})",
                a.id,
                format!("{:?}", a.name),
                a.email,
                a.token
            ));
        }
        lines
    }

    /// Commands to try: an audited write, reading and verifying the log, a dashboard login.
    fn commands(&self, base: &str) -> Vec<String> {
        let login_password = if self.config.password_from_env {
            "$DEMO_PASSWORD"
        } else {
            DEFAULT_PASSWORD
        };
        let now = Timestamp::now();
        let date = |t: Timestamp| t.to_string().chars().take(10).collect::<String>();
        let since = date(now);
        let before = date(Timestamp::from_unix_millis(
            now.unix_millis() + 24 * 60 * 60 * 1000,
        ));
        let account = seed_ids::DEMO_ACCOUNT;
        let policy = seed_ids::POLICY;
        let zone = seed_ids::EXAMPLE_ZONE;
        let token = self.seeded.first().map_or("", |a| a.token.as_str());
        let policy_body = format!(
            r#"{{"name":"Advanced Security Events Alert","enabled":false,"alert_type":"clickhouse_alert_fw_ent_anomaly","filters":{{"services":["securitylevel","ratelimit","firewallrules"],"zones":["{zone}"]}},"mechanisms":{{"webhooks":[{{"url":"https://hooks.example.com/services/T000/B000/XXXX"}}]}}}}"#
        );
        vec![
            String::new(),
            "Try:".to_owned(),
            format!("  export TOKEN={token}"),
            String::new(),
            "  # update the seeded notification policy (an audited write; the webhook URL is never recorded)".to_owned(),
            format!(r#"  curl -X PUT "{base}/accounts/{account}/alerting/v3/policies/{policy}" \"#),
            r#"    -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" -A Postman \"#.to_owned(),
            format!("    --data-raw '{policy_body}'"),
            String::new(),
            "  # read the account's audit log".to_owned(),
            format!(r#"  curl -H "Authorization: Bearer $TOKEN" "{base}/accounts/{account}/logs/audit?since={since}&before={before}""#),
            "  # verify the account's tamper-evident chain".to_owned(),
            format!(r#"  curl -H "Authorization: Bearer $TOKEN" "{base}/accounts/{account}/logs/audit/verify""#),
            String::new(),
            r#"  # or log in as the dashboard does (a cookie session: actor.context "dash")"#.to_owned(),
            format!(
                r#"  curl -c cookies.txt -H "Content-Type: application/json" --data-raw '{{"email":"alice@example.com","password":"{login_password}"}}' {base}/login"#
            ),
            format!("  curl -b cookies.txt {base}/zones"),
            String::new(),
            "Stop with Ctrl-C: in-flight requests finish, then the audit pipeline is flushed.".to_owned(),
        ]
    }
}
