//! The records: one API request of a [`World`] per record, and the deterministic
//! [`Dataset`]s the benchmarks load.

use std::sync::Arc;

use audit_layer::record::{
    Account, Action, ActionResult, ActionType, Actor, AuditRecord, Raw, Resource, Timestamp, Zone,
};
use serde_json::{Value, json};

use super::rng::Rng;
use super::world::{Endpoint, Split, Tenant, World};

/// A day in milliseconds.
pub(crate) const DAY_MS: i64 = 86_400_000;

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

    pub(crate) fn records(&self) -> Vec<AuditRecord> {
        self.iter().collect()
    }
}

/// One request's operation: list, get, create, put, patch or delete (the index into
/// [`Profile::operations`](super::world::Profile::operations)).
#[derive(Clone, Copy)]
struct Operation(usize);

impl Operation {
    const LIST: usize = 0;
    const CREATE: usize = 2;

    /// The method, and which of the endpoint's descriptions applies.
    fn method(self) -> (&'static str, usize) {
        match self.0 {
            0 => ("GET", 0),
            1 => ("GET", 1),
            2 => ("POST", 2),
            3 => ("PUT", 3),
            4 => ("PATCH", 3),
            _ => ("DELETE", 4),
        }
    }

    /// The answer's status: mostly success, with each operation's usual errors.
    fn status(self, rng: &mut Rng) -> u16 {
        match (self.0, rng.below(100)) {
            (_, 99) => 500,
            (0 | 1, 0..=2) => 404,
            (0 | 1, 3..=4) => 403,
            (2, 0..=7) => 400,
            (2, 8..=10) => 409,
            (3 | 4, 0..=5) => 400,
            (3..=5, 6..=9) => 404,
            (2, _) => 201,
            _ => 200,
        }
    }

    /// Whether the request names one resource (all but list and create).
    fn has_resource(self) -> bool {
        self.0 != Self::LIST && self.0 != Self::CREATE
    }
}

impl World {
    /// One record at `time_ms`.
    pub(crate) fn record(&self, rng: &mut Rng, time_ms: i64) -> AuditRecord {
        let profile = &self.profile;
        let tenant = &self.tenants[self.pick_tenant(rng)];
        let principal = if profile.zipf_actors {
            &tenant.principals[rng.weighted(&tenant.weights)]
        } else {
            rng.pick(&tenant.principals)
        };
        let endpoint = &self.endpoints[rng.weighted(&self.endpoint_weights)];
        let op = Operation(rng.weighted(&profile.operations));
        let (method, description) = op.method();
        let status = op.status(rng);
        let zone = endpoint.zoned.then(|| rng.pick(&tenant.zones).clone());
        let resource_id = op.has_resource().then(|| rng.hex(profile.object_hex));
        let uri = self.uri(
            rng,
            tenant,
            endpoint,
            op,
            zone.as_deref(),
            resource_id.as_deref(),
        );
        let (request, response) = self.bodies(rng, endpoint, op, status, resource_id.as_deref());
        let mut random = [0_u8; 10];
        random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        random[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..2]);
        let id = uuid::Builder::from_unix_timestamp_millis(time_ms as u64, &random).into_uuid();
        // Half the operations have a summary in the API description (for the lean profiles).
        let described =
            profile.every_description || (endpoint.weight as usize + description).is_multiple_of(2);
        AuditRecord {
            id,
            account: Some(Account {
                id: tenant.id.clone(),
                name: None,
            }),
            action: Action {
                description: described.then(|| Arc::clone(&endpoint.descriptions[description])),
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
                method: Some(method.to_owned()),
                cf_ray_id: rng.hex(16),
                status_code: Some(status),
                uri: Some(uri),
                user_agent: Some(principal.user_agent.to_owned()),
                client_request_id: None,
                client_gone: false,
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
            change: None,
            trace: None,
            service: None,
        }
    }

    /// The account of the next record (see [`Split`]).
    fn pick_tenant(&self, rng: &mut Rng) -> usize {
        let n = self.tenants.len();
        if n == 1 || rng.percent(10) {
            return 0;
        }
        match self.profile.split {
            Split::Flat => 1 + rng.below(n - 1),
            Split::Tiered => {
                let middle = (n - 1).min(9);
                let rest = n - 1 - middle;
                if rest == 0 || rng.percent(22) {
                    // 22% of the remaining 90%: about 20% of all records.
                    1 + rng.below(middle)
                } else {
                    1 + middle + rng.below(rest)
                }
            }
        }
    }

    /// The request's path: under the zone or the account, the resource, a page of a list.
    fn uri(
        &self,
        rng: &mut Rng,
        tenant: &Tenant,
        endpoint: &Endpoint,
        op: Operation,
        zone: Option<&str>,
        resource_id: Option<&str>,
    ) -> String {
        let prefix = self.profile.path_prefix;
        let mut uri = match zone {
            Some(z) => format!("{prefix}/zones/{z}/{}", endpoint.path),
            None => format!("{prefix}/accounts/{}/{}", tenant.id, endpoint.path),
        };
        if let Some(id) = resource_id {
            uri.push('/');
            uri.push_str(id);
        }
        if op.0 == Operation::LIST && rng.percent(50) {
            uri.push_str(&format!("?page={}&per_page=50", 1 + rng.below(5)));
        }
        uri
    }

    /// The request and response bodies, as far as the layer records them.
    fn bodies(
        &self,
        rng: &mut Rng,
        endpoint: &Endpoint,
        op: Operation,
        status: u16,
        resource_id: Option<&str>,
    ) -> (Option<Value>, Option<Value>) {
        let full = self.profile.full_bodies;
        let name = format!("{}-{}", endpoint.kind, rng.below(500));
        let request = match op.0 {
            0 | 1 => return (None, None),
            2 | 3 if full => json!({
                "name": name,
                "enabled": rng.percent(80),
                "description": "REDACTED",
                "settings": {"mode": *rng.pick(&["block", "challenge", "log"]), "ttl": 60 * (1 + rng.below(60))},
            }),
            2 | 3 => json!({
                "name": name,
                "enabled": rng.percent(80),
                "description": "REDACTED",
            }),
            4 => json!({"enabled": rng.percent(50)}),
            _ => Value::Null,
        };
        let response = self.response(rng, status, &name, resource_id);
        (Some(request).filter(|r| !r.is_null()), Some(response))
    }

    /// The response body: the resource's id (a new one when created), or the error.
    fn response(&self, rng: &mut Rng, status: u16, name: &str, id: Option<&str>) -> Value {
        let full = self.profile.full_bodies;
        if status < 400 {
            let id = id.map_or_else(|| rng.hex(self.profile.object_hex), str::to_owned);
            if full {
                json!({"success": true, "errors": [], "result": {"id": id, "name": name}})
            } else {
                json!({"success": true, "result": {"id": id}})
            }
        } else if full {
            json!({
                "success": false,
                "errors": [{"code": 1000 + u32::from(status), "message": "REDACTED"}],
                "result": null,
            })
        } else {
            json!({"success": false, "errors": [{"code": 1000 + u32::from(status)}]})
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
