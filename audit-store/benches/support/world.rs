//! The accounts, people, tokens and API endpoints the benchmarks' records are drawn from, and
//! the [`Profile`]s that shape them.
//!
//! Every benchmark keeps the data its published figures were measured on: the ingest and chain
//! benchmarks' lean records ([`Profile::INGEST`], ~650 B of JSON) and the query benchmark's
//! fuller ones ([`Profile::QUERY`], ~830 B, with a few very active people per account). The
//! draws are made in a fixed order, so a profile and a seed always give the same world.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use audit_layer::record::{ActorContext, ActorType, Token};

use super::rng::Rng;

/// How the records of one benchmark look.
#[derive(Clone, Copy)]
pub(crate) struct Profile {
    /// How many accounts there are.
    pub(crate) accounts: usize,
    /// How the records are spread over the accounts.
    pub(crate) split: Split,
    /// The email domain of account `a`'s people.
    pub(crate) company: fn(usize) -> String,
    /// Hex digits of account and zone ids.
    pub(crate) account_hex: usize,
    /// Hex digits of people's, tokens' and resources' ids.
    pub(crate) object_hex: usize,
    /// How many people each account has.
    pub(crate) people: People,
    /// How people authenticate, out of 20: below the first bound the dashboard, then a user's
    /// API token, then an account's API token, from the last bound on a global API key.
    pub(crate) logins: [usize; 3],
    pub(crate) user_agents: &'static [&'static str; 8],
    /// A few people of each account make most of its requests (Zipf, s = 1), as bots and CI
    /// tokens do in real logs; else everyone alike.
    pub(crate) zipf_actors: bool,
    /// The weights of list, get, create, put, patch and delete.
    pub(crate) operations: [u32; 6],
    /// What every request path starts with.
    pub(crate) path_prefix: &'static str,
    /// Request bodies with nested settings and responses in the full API envelope; else small
    /// bodies.
    pub(crate) full_bodies: bool,
    /// Every action has a description; else only half of the operations have one.
    pub(crate) every_description: bool,
}

/// How records are spread over the accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// Account 0 holds 10 %, the others share the rest evenly.
    Flat,
    /// Account 0 holds 10 %, accounts 1–9 20 % between them, the rest share the remaining
    /// 70 % evenly (a middle tier, for a thousand accounts).
    Tiered,
}

/// People per account: `first` in account 0, `least + below(spread)` in each other one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct People {
    pub(crate) first: usize,
    pub(crate) least: usize,
    pub(crate) spread: usize,
}

impl Profile {
    /// The ingest benchmark's records: 100 accounts, ~650 B of JSON.
    pub(crate) const INGEST: Self = Self {
        accounts: 100,
        split: Split::Flat,
        company: short_company,
        account_hex: 20,
        object_hex: 16,
        people: People {
            first: 40,
            least: 2,
            spread: 11,
        },
        logins: [4, 9, 13],
        user_agents: &INGEST_USER_AGENTS,
        zipf_actors: false,
        operations: [35, 30, 10, 7, 10, 8],
        path_prefix: "",
        full_bodies: false,
        every_description: false,
    };

    /// The chain benchmark's: the ingest benchmark's records over `accounts` accounts, with a
    /// middle tier of busy accounts.
    pub(crate) fn chain(accounts: usize) -> Self {
        Self {
            accounts,
            split: Split::Tiered,
            company: numbered_company,
            ..Self::INGEST
        }
    }

    /// The query benchmark's records: 100 accounts of 30–70 people whose activity is
    /// Zipf-distributed, ~830 B of JSON.
    pub(crate) const QUERY: Self = Self {
        accounts: 100,
        split: Split::Flat,
        company: example_company,
        account_hex: 32,
        object_hex: 32,
        people: People {
            first: 50,
            least: 30,
            spread: 41,
        },
        logins: [12, 17, 19],
        user_agents: &QUERY_USER_AGENTS,
        zipf_actors: true,
        operations: [35, 27, 12, 8, 10, 8],
        path_prefix: "/client/v4",
        full_bodies: true,
        every_description: true,
    };
}

fn short_company(a: usize) -> String {
    format!("ex{a:02}.io")
}

fn numbered_company(a: usize) -> String {
    format!("ex{a:03}.io")
}

fn example_company(a: usize) -> String {
    format!("example-{a:02}.com")
}

pub(crate) struct Principal {
    pub(crate) context: ActorContext,
    pub(crate) kind: ActorType,
    pub(crate) email: Option<String>,
    pub(crate) id: String,
    pub(crate) ip: IpAddr,
    pub(crate) token: Token,
    pub(crate) user_agent: &'static str,
}

pub(crate) struct Tenant {
    pub(crate) id: String,
    pub(crate) zones: Vec<String>,
    pub(crate) principals: Vec<Principal>,
    /// Zipf (s = 1) over `principals`: the first is the most active.
    pub(crate) weights: Vec<u32>,
}

pub(crate) struct Endpoint {
    pub(crate) product: Arc<str>,
    pub(crate) scope: Arc<str>,
    pub(crate) kind: Arc<str>,
    pub(crate) path: &'static str,
    pub(crate) zoned: bool,
    pub(crate) weight: u32,
    /// List, get, create, update, delete.
    pub(crate) descriptions: [Arc<str>; 5],
}

/// The accounts, people, tokens and endpoints records are drawn from.
pub(crate) struct World {
    pub(crate) profile: Profile,
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) endpoint_weights: Vec<u32>,
}

const INGEST_USER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Terraform/1.9.8 terraform-provider-cloudflare/4.48.0",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "axios/1.7.9",
];

/// [`INGEST_USER_AGENTS`] with Edge on Windows for the iPhone.
const QUERY_USER_AGENTS: [&str; 8] = [
    INGEST_USER_AGENTS[0],
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
    INGEST_USER_AGENTS[2],
    INGEST_USER_AGENTS[3],
    INGEST_USER_AGENTS[4],
    INGEST_USER_AGENTS[5],
    INGEST_USER_AGENTS[6],
    INGEST_USER_AGENTS[7],
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

/// How people authenticate: context, actor type, whether the record has their email, and
/// whether they use an API token.
const LOGINS: [(ActorContext, ActorType, bool, bool); 4] = [
    (ActorContext::Dash, ActorType::User, true, false),
    (ActorContext::ApiToken, ActorType::User, true, true),
    (ActorContext::ApiToken, ActorType::Account, false, true),
    (ActorContext::ApiKey, ActorType::User, true, false),
];

/// One API endpoint: product, scope, resource type, path, whether under a zone, weight, and
/// the resource's name in one and many.
struct EndpointSpec(
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    u32,
    &'static str,
    &'static str,
);

const ENDPOINTS: [EndpointSpec; 12] = [
    EndpointSpec(
        "alerting",
        "accounts",
        "policies",
        "alerting/v3/policies",
        false,
        20,
        "Notification policy",
        "Notification policies",
    ),
    EndpointSpec(
        "dns",
        "zones",
        "dns_records",
        "dns_records",
        true,
        25,
        "DNS record",
        "DNS records",
    ),
    EndpointSpec(
        "workers",
        "accounts",
        "scripts",
        "workers/scripts",
        false,
        10,
        "Worker script",
        "Worker scripts",
    ),
    EndpointSpec(
        "firewall",
        "zones",
        "rules",
        "firewall/rules",
        true,
        10,
        "firewall rule",
        "firewall rules",
    ),
    EndpointSpec(
        "access",
        "accounts",
        "apps",
        "access/apps",
        false,
        6,
        "Access application",
        "Access applications",
    ),
    EndpointSpec(
        "r2",
        "accounts",
        "buckets",
        "r2/buckets",
        false,
        4,
        "R2 bucket",
        "R2 buckets",
    ),
    EndpointSpec(
        "ssl",
        "zones",
        "certificate_packs",
        "ssl/certificate_packs",
        true,
        3,
        "certificate pack",
        "certificate packs",
    ),
    EndpointSpec(
        "members",
        "accounts",
        "members",
        "members",
        false,
        3,
        "account member",
        "account members",
    ),
    EndpointSpec(
        "load_balancing",
        "zones",
        "load_balancers",
        "load_balancers",
        true,
        5,
        "load balancer",
        "load balancers",
    ),
    EndpointSpec(
        "rulesets", "zones", "rulesets", "rulesets", true, 8, "ruleset", "rulesets",
    ),
    EndpointSpec(
        "tunnels",
        "accounts",
        "cfd_tunnel",
        "cfd_tunnel",
        false,
        3,
        "Cloudflare Tunnel",
        "Cloudflare Tunnels",
    ),
    EndpointSpec(
        "zone_settings",
        "zones",
        "settings",
        "settings",
        true,
        3,
        "zone setting",
        "zone settings",
    ),
];

impl Endpoint {
    fn new(spec: &EndpointSpec) -> Self {
        let EndpointSpec(product, scope, kind, path, zoned, weight, one, many) = *spec;
        Self {
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
        }
    }
}

impl World {
    /// The world of `profile` for `seed`.
    pub(crate) fn new(seed: u64, profile: Profile) -> Self {
        let mut rng = Rng(seed ^ 0x0005_eed0_fa11);
        let endpoints: Vec<Endpoint> = ENDPOINTS.iter().map(Endpoint::new).collect();
        let endpoint_weights = endpoints.iter().map(|e| e.weight).collect();
        let tenants = (0..profile.accounts.max(1))
            .map(|a| Tenant::new(&mut rng, &profile, a))
            .collect();
        Self {
            profile,
            tenants,
            endpoints,
            endpoint_weights,
        }
    }

    /// The id of account 0, the largest.
    pub(crate) fn first_account(&self) -> &str {
        &self.tenants[0].id
    }

    /// Account 0's actor email at (or after) Zipf rank `rank`, and its share of the account's
    /// records.
    pub(crate) fn email_at_rank(&self, rank: usize) -> Option<(String, f64)> {
        let tenant = &self.tenants[0];
        let total: f64 = tenant.weights.iter().map(|w| f64::from(*w)).sum();
        tenant
            .principals
            .iter()
            .zip(&tenant.weights)
            .skip(rank)
            .find_map(|(p, w)| Some((p.email.clone()?, f64::from(*w) / total)))
    }
}

impl Tenant {
    /// Account `a`: its zones, its people, then its id.
    fn new(rng: &mut Rng, profile: &Profile, a: usize) -> Self {
        let company = (profile.company)(a);
        let zones = (0..1 + rng.below(if a == 0 { 20 } else { 5 }))
            .map(|_| rng.hex(profile.account_hex))
            .collect();
        let people = &profile.people;
        let people = if a == 0 {
            people.first
        } else {
            people.least + rng.below(people.spread)
        };
        let principals: Vec<Principal> = (0..people)
            .map(|p| Principal::new(rng, profile, &company, p))
            .collect();
        let weights = (0..principals.len())
            .map(|rank| (1_000_000 / (rank + 1)) as u32)
            .collect();
        Self {
            id: rng.hex(profile.account_hex),
            zones,
            principals,
            weights,
        }
    }
}

impl Principal {
    /// Person `p` of `company`: name, address, how they authenticate, then their id.
    fn new(rng: &mut Rng, profile: &Profile, company: &str, p: usize) -> Self {
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
        let login = rng.below(20);
        let row = profile
            .logins
            .iter()
            .position(|bound| login < *bound)
            .unwrap_or(LOGINS.len() - 1);
        let (context, kind, has_email, has_token) = LOGINS[row];
        let token = if has_token {
            token(rng, profile)
        } else {
            Token::default()
        };
        // People in the dashboard use browsers; everyone else, tools.
        let agents = profile.user_agents;
        let user_agent = if context == ActorContext::Dash {
            agents[rng.below(3)]
        } else {
            agents[3 + rng.below(5)]
        };
        Self {
            context,
            kind,
            email: has_email.then_some(email),
            id: rng.hex(profile.object_hex),
            ip,
            token,
            user_agent,
        }
    }
}

fn token(rng: &mut Rng, profile: &Profile) -> Token {
    Token {
        id: Some(rng.hex(profile.object_hex)),
        name: Some((*rng.pick(&TOKEN_NAMES)).to_owned()),
    }
}
