//! Builders for the objects integration tests create again and again: a QuotaProfile, a Tenant,
//! and the "profile + tenant + wait until Ready" preamble most tests start with.
//!
//! ```ignore
//! let p = env.apply_profile(Profile::new(&env.name("p")).namespace(json!({"pods": "10"}))).await;
//! let t = TenantBuilder::new(&env.name("t"), &p).owners("t-admins").environments(&["prod", "dev"]);
//! env.tenant_ready(&t).await;
//! ```
//!
//! Each builder holds the object as JSON and goes through the API types on the way out, so a
//! test sends exactly what a platform engineer's YAML would (server-side apply, field manager
//! `platform-engineer`, as `fixtures::apply`).
use citycloud::api::{QuotaProfile, Tenant};
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::TestEnv;
use crate::fixtures::wait_ready;

const API_VERSION: &str = "citycloud.io/v1alpha1";

/// The LimitRange defaults most test profiles use: 100m/64Mi requested, 200m/128Mi limit.
pub fn default_limits() -> Value {
    json!({"defaultRequest": {"cpu": "100m", "memory": "64Mi"}, "default": {"cpu": "200m", "memory": "128Mi"}})
}

/// A QuotaProfile: nothing in its spec but what the test sets.
#[derive(Clone, Debug)]
pub struct Profile {
    name: String,
    spec: serde_json::Map<String, Value>,
}

impl Profile {
    pub fn new(name: &str) -> Self {
        Profile {
            name: name.to_string(),
            spec: serde_json::Map::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets `spec.<field>`.
    pub fn set(mut self, field: &str, value: Value) -> Self {
        self.spec.insert(field.to_string(), value);
        self
    }

    pub fn description(self, text: &str) -> Self {
        self.set("description", json!(text))
    }

    /// Each namespace's caps (`spec.namespace`), e.g. `json!({"pods": "10"})`.
    pub fn namespace(self, caps: Value) -> Self {
        self.set("namespace", caps)
    }

    /// The tenant-wide budget (`spec.tenant`).
    pub fn tenant(self, budget: Value) -> Self {
        self.set("tenant", budget)
    }

    /// `spec.limits`; [`default_limits`] is the usual one.
    pub fn limits(self, limits: Value) -> Self {
        self.set("limits", limits)
    }

    pub fn max_environments(self, n: u32) -> Self {
        self.set("maxEnvironments", json!(n))
    }

    pub fn object(&self) -> QuotaProfile {
        serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "QuotaProfile",
            "metadata": {"name": self.name}, "spec": self.spec}))
        .expect("a valid QuotaProfile")
    }

    pub async fn apply(&self, client: &kube::Client) -> Result<QuotaProfile, kube::Error> {
        ssa(&Api::all(client.clone()), &self.name, &self.object()).await
    }
}

/// A Tenant: display name `Sở <name>`, owned by the group `<name>-admins`, on `profile`.
#[derive(Clone, Debug)]
pub struct TenantBuilder {
    name: String,
    labels: serde_json::Map<String, Value>,
    annotations: serde_json::Map<String, Value>,
    spec: serde_json::Map<String, Value>,
}

impl TenantBuilder {
    pub fn new(name: &str, profile: &str) -> Self {
        let spec = json!({"displayName": format!("Sở {name}"),
            "owners": [{"kind": "Group", "name": format!("{name}-admins")}],
            "quotaProfile": profile});
        TenantBuilder {
            name: name.to_string(),
            labels: serde_json::Map::new(),
            annotations: serde_json::Map::new(),
            spec: spec.as_object().cloned().unwrap_or_default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace of environment `env`: `<tenant>-<env>`.
    pub fn namespace(&self, env: &str) -> String {
        format!("{}-{env}", self.name)
    }

    /// Sets `spec.<field>` (replacing what was there), e.g. `.set("podSecurity", json!("baseline"))`.
    pub fn set(mut self, field: &str, value: Value) -> Self {
        self.spec.insert(field.to_string(), value);
        self
    }

    /// Leaves `spec.<field>` out (the schema default applies).
    pub fn unset(mut self, field: &str) -> Self {
        self.spec.remove(field);
        self
    }

    pub fn display_name(self, name: &str) -> Self {
        self.set("displayName", json!(name))
    }

    /// The owners: the group `group` only.
    pub fn owners(self, group: &str) -> Self {
        self.set("owners", json!([{"kind": "Group", "name": group}]))
    }

    /// The members: the group `group` only.
    pub fn members(self, group: &str) -> Self {
        self.set("members", json!([{"kind": "Group", "name": group}]))
    }

    /// The viewers: the user `user` only.
    pub fn viewer(self, user: &str) -> Self {
        self.set("viewers", json!([{"kind": "User", "name": user}]))
    }

    pub fn environments(self, names: &[&str]) -> Self {
        let envs: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
        self.set("environments", Value::Array(envs))
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), json!(value));
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_string(), json!(value));
        self
    }

    pub fn object(&self) -> Tenant {
        let mut metadata = json!({"name": self.name});
        if !self.labels.is_empty() {
            metadata["labels"] = Value::Object(self.labels.clone());
        }
        if !self.annotations.is_empty() {
            metadata["annotations"] = Value::Object(self.annotations.clone());
        }
        serde_json::from_value(json!({"apiVersion": API_VERSION, "kind": "Tenant",
            "metadata": metadata, "spec": self.spec}))
        .expect("a valid Tenant")
    }

    pub async fn apply(&self, client: &kube::Client) -> Result<Tenant, kube::Error> {
        ssa(&Api::all(client.clone()), &self.name, &self.object()).await
    }

    /// Applies it and waits until it is Ready for its current generation.
    pub async fn apply_ready(&self, client: &kube::Client) -> Tenant {
        self.apply(client).await.expect("apply the Tenant");
        wait_ready(client, &self.name).await
    }
}

async fn ssa<K>(api: &Api<K>, name: &str, obj: &K) -> Result<K, kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("platform-engineer").force(),
        &Patch::Apply(obj),
    )
    .await
}

impl TestEnv {
    /// Applies `profile` as the cluster admin; its name.
    pub async fn apply_profile(&self, profile: Profile) -> String {
        profile
            .apply(&self.admin)
            .await
            .expect("apply the QuotaProfile");
        profile.name
    }

    /// Applies `tenant` as the cluster admin and waits until it is Ready.
    pub async fn tenant_ready(&self, tenant: &TenantBuilder) -> Tenant {
        tenant.apply_ready(&self.admin).await
    }

    /// The common preamble in one call: `profile` applied, then a Tenant `env.name(base)` on it
    /// (the builder's defaults, changed by `shape`) applied and Ready.
    pub async fn ready_tenant_with(
        &self,
        base: &str,
        profile: Profile,
        shape: impl FnOnce(TenantBuilder) -> TenantBuilder,
    ) -> TenantBuilder {
        let p = self.apply_profile(profile).await;
        let t = shape(TenantBuilder::new(&self.name(base), &p));
        self.tenant_ready(&t).await;
        t
    }
}
