//! What the chain benchmark shares with nothing else yet: the record generator and the CPU
//! readings, **copied from `benches/ingest.rs`** (which is not changed, so the two benches
//! stay independent; keep them in step by hand if the generator changes there).
//!
//! Changes from the copy: the number of accounts is a parameter (`World::new(seed,
//! accounts)`), and with more than ten accounts the split is account 0 at 10 %, accounts 1–9
//! at 20 % together, the rest sharing 70 % evenly; ids, times, record shape (~650 B of JSON)
//! and the draw of everything else are the ingest benchmark's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, ActorContext, ActorType, AuditRecord, Raw,
    Resource, Timestamp, Token, Zone,
};

const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Records (copied from benches/ingest.rs)

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Percent chance.
    fn percent(&mut self, p: u64) -> bool {
        self.next_u64() % 100 < p
    }

    fn hex(&mut self, len: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        (0..len)
            .map(|_| char::from(DIGITS[(self.next_u64() & 15) as usize]))
            .collect()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index drawn with the given weights.
    fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = (self.next_u64() % u64::from(total.max(1))) as u32;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

struct Principal {
    context: ActorContext,
    kind: ActorType,
    email: Option<String>,
    id: String,
    ip: IpAddr,
    token: Token,
    user_agent: &'static str,
}

struct Tenant {
    id: String,
    zones: Vec<String>,
    principals: Vec<Principal>,
}

struct Endpoint {
    product: Arc<str>,
    scope: Arc<str>,
    kind: Arc<str>,
    path: &'static str,
    zoned: bool,
    weight: u32,
    /// List, get, create, update, delete.
    descriptions: [Arc<str>; 5],
}

/// The accounts, people, tokens and endpoints records are drawn from.
pub(crate) struct World {
    tenants: Vec<Tenant>,
    endpoints: Vec<Endpoint>,
}

const USER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Terraform/1.9.8 terraform-provider-cloudflare/4.48.0",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "axios/1.7.9",
];

const FIRST_NAMES: [&str; 10] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
];
const LAST_NAMES: [&str; 8] = [
    "smith", "garcia", "chen", "müller", "okafor", "tanaka", "novak", "silva",
];
const TOKEN_NAMES: [&str; 6] = [
    "terraform-ci",
    "deploy-bot",
    "Edit zone DNS",
    "monitoring (read only)",
    "github-actions",
    "backup exporter",
];

impl World {
    pub(crate) fn new(seed: u64, accounts: usize) -> Self {
        let mut rng = Rng(seed ^ 0x0005_eed0_fa11);
        let endpoints = [
            (
                "alerting",
                "accounts",
                "policies",
                "alerting/v3/policies",
                false,
                20,
                "Notification policy",
                "Notification policies",
            ),
            (
                "dns",
                "zones",
                "dns_records",
                "dns_records",
                true,
                25,
                "DNS record",
                "DNS records",
            ),
            (
                "workers",
                "accounts",
                "scripts",
                "workers/scripts",
                false,
                10,
                "Worker script",
                "Worker scripts",
            ),
            (
                "firewall",
                "zones",
                "rules",
                "firewall/rules",
                true,
                10,
                "firewall rule",
                "firewall rules",
            ),
            (
                "access",
                "accounts",
                "apps",
                "access/apps",
                false,
                6,
                "Access application",
                "Access applications",
            ),
            (
                "r2",
                "accounts",
                "buckets",
                "r2/buckets",
                false,
                4,
                "R2 bucket",
                "R2 buckets",
            ),
            (
                "ssl",
                "zones",
                "certificate_packs",
                "ssl/certificate_packs",
                true,
                3,
                "certificate pack",
                "certificate packs",
            ),
            (
                "members",
                "accounts",
                "members",
                "members",
                false,
                3,
                "account member",
                "account members",
            ),
            (
                "load_balancing",
                "zones",
                "load_balancers",
                "load_balancers",
                true,
                5,
                "load balancer",
                "load balancers",
            ),
            (
                "rulesets", "zones", "rulesets", "rulesets", true, 8, "ruleset", "rulesets",
            ),
            (
                "tunnels",
                "accounts",
                "cfd_tunnel",
                "cfd_tunnel",
                false,
                3,
                "Cloudflare Tunnel",
                "Cloudflare Tunnels",
            ),
            (
                "zone_settings",
                "zones",
                "settings",
                "settings",
                true,
                3,
                "zone setting",
                "zone settings",
            ),
        ]
        .into_iter()
        .map(
            |(product, scope, kind, path, zoned, weight, one, many)| Endpoint {
                product: product.into(),
                scope: scope.into(),
                kind: kind.into(),
                path,
                zoned,
                weight,
                descriptions: [
                    format!("List {many}").into(),
                    format!("Get a {one}").into(),
                    format!("Create a {one}").into(),
                    format!("Update a {one}").into(),
                    format!("Delete a {one}").into(),
                ],
            },
        )
        .collect();
        let tenants = (0..accounts.max(1))
            .map(|a| {
                let company = format!("ex{a:03}.io");
                let zones = (0..1 + rng.below(if a == 0 { 20 } else { 5 }))
                    .map(|_| rng.hex(20))
                    .collect();
                let people = if a == 0 { 40 } else { 2 + rng.below(11) };
                let principals = (0..people)
                    .map(|p| {
                        let email = format!(
                            "{}.{}{p}@{company}",
                            rng.pick(&FIRST_NAMES),
                            rng.pick(&LAST_NAMES)
                        );
                        let ip = if rng.percent(20) {
                            IpAddr::V6(Ipv6Addr::new(
                                0x2001,
                                0x0db8,
                                rng.next_u64() as u16,
                                rng.next_u64() as u16,
                                0,
                                0,
                                0,
                                rng.next_u64() as u16,
                            ))
                        } else {
                            IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32))
                        };
                        let token = |rng: &mut Rng| Token {
                            id: Some(rng.hex(16)),
                            name: Some((*rng.pick(&TOKEN_NAMES)).to_owned()),
                        };
                        let (context, kind, email, token, user_agent) = match rng.below(20) {
                            0..=3 => (
                                ActorContext::Dash,
                                ActorType::User,
                                Some(email),
                                Token::default(),
                                USER_AGENTS[rng.below(3)],
                            ),
                            4..=8 => {
                                let t = token(&mut rng);
                                (
                                    ActorContext::ApiToken,
                                    ActorType::User,
                                    Some(email),
                                    t,
                                    USER_AGENTS[3 + rng.below(5)],
                                )
                            }
                            9..=12 => {
                                let t = token(&mut rng);
                                (
                                    ActorContext::ApiToken,
                                    ActorType::Account,
                                    None,
                                    t,
                                    USER_AGENTS[3 + rng.below(5)],
                                )
                            }
                            _ => (
                                ActorContext::ApiKey,
                                ActorType::User,
                                Some(email),
                                Token::default(),
                                USER_AGENTS[3 + rng.below(5)],
                            ),
                        };
                        Principal {
                            context,
                            kind,
                            email,
                            id: rng.hex(16),
                            ip,
                            token,
                            user_agent,
                        }
                    })
                    .collect();
                Tenant {
                    id: rng.hex(20),
                    zones,
                    principals,
                }
            })
            .collect();
        Self { tenants, endpoints }
    }

    /// The account of the next record: account 0 holds 10% of the traffic, accounts 1–9
    /// 20% between them, and the rest share the remaining 70% evenly (the ingest
    /// benchmark's split, with a middle tier added for 1,000 accounts).
    fn pick_tenant(&self, rng: &mut Rng) -> usize {
        let n = self.tenants.len();
        if n == 1 || rng.percent(10) {
            return 0;
        }
        let middle = (n - 1).min(9);
        let rest = n - 1 - middle;
        if rest == 0 || rng.percent(22) {
            // 22% of the remaining 90%: about 20% of all records.
            1 + rng.below(middle)
        } else {
            1 + middle + rng.below(rest)
        }
    }

    /// One record at `time_ms`.
    fn record(&self, rng: &mut Rng, time_ms: i64) -> AuditRecord {
        let tenant = &self.tenants[self.pick_tenant(rng)];
        let principal = rng.pick(&tenant.principals);
        let weights: Vec<u32> = self.endpoints.iter().map(|e| e.weight).collect();
        let endpoint = &self.endpoints[rng.weighted(&weights)];
        // list, get, create, put, patch, delete
        let op = rng.weighted(&[35, 30, 10, 7, 10, 8]);
        let (method, description) = match op {
            0 => ("GET", 0),
            1 => ("GET", 1),
            2 => ("POST", 2),
            3 => ("PUT", 3),
            4 => ("PATCH", 3),
            _ => ("DELETE", 4),
        };
        let status: u16 = match (op, rng.below(100)) {
            (_, 99) => 500,
            (0 | 1, 0..=2) => 404,
            (0 | 1, 3..=4) => 403,
            (2, 0..=7) => 400,
            (2, 8..=10) => 409,
            (3 | 4, 0..=5) => 400,
            (3..=5, 6..=9) => 404,
            (2, _) => 201,
            _ => 200,
        };
        let zone = endpoint.zoned.then(|| rng.pick(&tenant.zones).clone());
        let resource_id = (op != 0 && op != 2).then(|| rng.hex(16));
        let mut uri = match &zone {
            Some(z) => format!("/zones/{z}/{}", endpoint.path),
            None => format!("/accounts/{}/{}", tenant.id, endpoint.path),
        };
        if let Some(id) = &resource_id {
            uri.push('/');
            uri.push_str(id);
        }
        if op == 0 && rng.percent(50) {
            uri.push_str(&format!("?page={}&per_page=50", 1 + rng.below(5)));
        }
        let name = format!("{}-{}", endpoint.kind, rng.below(500));
        let (request, response) = match op {
            0 | 1 => (None, None),
            2 | 3 => (
                Some(serde_json::json!({
                    "name": name,
                    "enabled": rng.percent(80),
                    "description": "REDACTED",
                })),
                Some(response_body(rng, status, resource_id.as_deref())),
            ),
            4 => (
                Some(serde_json::json!({"enabled": rng.percent(50)})),
                Some(response_body(rng, status, resource_id.as_deref())),
            ),
            _ => (
                None,
                Some(response_body(rng, status, resource_id.as_deref())),
            ),
        };
        let mut random = [0_u8; 10];
        random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        random[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..2]);
        let id = uuid::Builder::from_unix_timestamp_millis(time_ms as u64, &random).into_uuid();
        AuditRecord {
            id,
            account: Some(Account {
                id: tenant.id.clone(),
                name: None,
            }),
            action: Action {
                // Half the operations have a summary in the API description.
                description: (endpoint.weight as usize + description)
                    .is_multiple_of(2)
                    .then(|| Arc::clone(&endpoint.descriptions[description])),
                result: ActionResult::from_status(status),
                time: Timestamp::from_unix_millis(time_ms),
                kind: action_type(method),
            },
            actor: Actor {
                context: Some(principal.context),
                email: principal.email.clone(),
                id: Some(principal.id.clone()),
                ip_address: Some(principal.ip),
                token: principal.token.clone(),
                kind: Some(principal.kind),
            },
            raw: Raw {
                method: method.to_owned(),
                ray_id: rng.hex(16),
                status_code: status,
                uri,
                user_agent: Some(principal.user_agent.to_owned()),
            },
            resource: Resource {
                id: resource_id,
                product: Some(Arc::clone(&endpoint.product)),
                request: request.map(Into::into),
                response: response.map(Into::into),
                scope: Some(Arc::clone(&endpoint.scope)),
                kind: Some(Arc::clone(&endpoint.kind)),
            },
            zone: zone.map(|id| Zone { id, name: None }),
        }
    }
}

fn action_type(method: &str) -> ActionType {
    match method {
        "POST" => ActionType::Create,
        "PUT" | "PATCH" => ActionType::Update,
        "DELETE" => ActionType::Delete,
        _ => ActionType::View,
    }
}

fn response_body(rng: &mut Rng, status: u16, id: Option<&str>) -> serde_json::Value {
    if status < 400 {
        let id = id.map_or_else(|| rng.hex(16), str::to_owned);
        serde_json::json!({"success": true, "result": {"id": id}})
    } else {
        serde_json::json!({"success": false, "errors": [{"code": 1000 + u32::from(status)}]})
    }
}

/// A deterministic set of `n` records over the 30 days ending at `end_ms`, in time order.
#[derive(Clone)]
pub(crate) struct Dataset {
    pub(crate) world: Arc<World>,
    pub(crate) n: usize,
    pub(crate) seed: u64,
    pub(crate) end_ms: i64,
}

impl Dataset {
    pub(crate) fn iter(&self) -> impl Iterator<Item = AuditRecord> + '_ {
        let span = 30 * DAY_MS;
        let start = self.end_ms - span;
        let step = (span / self.n as i64).max(1);
        let mut rng = Rng(self.seed ^ (self.n as u64).rotate_left(32));
        (0..self.n).map(move |i| {
            let base = start + (i128::from(span) * i as i128 / self.n as i128) as i64;
            let jitter = (rng.next_u64() % step as u64) as i64;
            self.world.record(&mut rng, base + jitter)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// CPU time from /proc (copied from benches/ingest.rs; no unsafe: the workspace forbids it, so
// no getrusage)

/// This process's user + system CPU time, in clock ticks.
pub(crate) fn own_ticks() -> u64 {
    stat_ticks(Path::new("/proc/self/stat")).map_or(0, |[u, s, _, _]| u + s)
}

/// utime, stime, cutime, cstime of `/proc/<pid>/stat`, in clock ticks.
fn stat_ticks(path: &Path) -> Option<[u64; 4]> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 (state) on.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some([field(14)?, field(15)?, field(16)?, field(17)?])
}

/// CPU ticks of one PostgreSQL server: its postmaster (with the children it reaped: exited
/// backends, autovacuum workers) and its live children. Other servers on the machine are not
/// counted.
pub(crate) fn postgres_ticks(postmaster: u32) -> Option<u64> {
    let mut total: u64 = stat_ticks(Path::new(&format!("/proc/{postmaster}/stat")))?
        .iter()
        .sum();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if parent_pid(&entry.path()) == Some(postmaster)
            && let Some(t) = stat_ticks(&entry.path().join("stat"))
        {
            total += t.iter().sum::<u64>();
        }
    }
    Some(total)
}

/// Field 4 of `/proc/<pid>/stat`.
pub(crate) fn parent_pid(dir: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub(crate) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The load averages from `/proc/loadavg` and `uptime`'s line, to print with the figures.
pub(crate) fn load() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let uptime = Command::new("uptime")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    if uptime.is_empty() {
        format!("load average {loadavg}")
    } else {
        format!("load average {loadavg} (uptime: {uptime})")
    }
}

/// Parses `1000000`, `1_000_000`, `1,000,000`, `20k` or `1M`.
pub(crate) fn parse_count(s: &str) -> Result<usize, String> {
    let cleaned: String = s.chars().filter(|c| *c != '_' && *c != ',').collect();
    let (digits, scale) = match cleaned.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1_000),
        None => match cleaned.strip_suffix(['m', 'M']) {
            Some(d) => (d, 1_000_000),
            None => (cleaned.as_str(), 1),
        },
    };
    let n: usize = digits
        .parse()
        .map_err(|e| format!("{s:?} is not a count: {e}"))?;
    if n == 0 {
        return Err("a count must be at least 1".into());
    }
    Ok(n * scale)
}
