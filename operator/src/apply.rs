//! The one way the operator writes objects: server-side apply under one field manager,
//! skipped when the live object already holds what we would apply.
//!
//! "Already holds" means: the live object carries the hash of the desired object in
//! [`APPLIED_HASH`] (so a desired field we dropped is noticed and removed by apply), and every
//! desired field is present with the same value (so someone else's edit is repaired).
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, FIELD_MANAGER, Result};

/// The annotation holding a hash of the last applied desired object (API crate; named here too
/// for the callers of this module).
pub use crate::api::annotations::APPLIED_HASH;

/// What applying one object did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Unchanged,
    Created,
    /// It existed but differed: drift repaired, or the spec changed.
    Updated,
}

/// Stamps the hash annotation on `desired` and applies it unless `live` already matches.
pub async fn apply<K>(api: &Api<K>, desired: &K, live: Option<&K>) -> Result<Outcome>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let prepared = prepare(desired)?;
    if let Some(live) = live
        && holds(live, &prepared)?
    {
        return Ok(Outcome::Unchanged);
    }
    send(api, desired, &prepared).await?;
    Ok(if live.is_some() {
        Outcome::Updated
    } else {
        Outcome::Created
    })
}

/// A desired object as it is applied: its JSON with the hash annotation, and the hash.
pub struct Prepared {
    pub json: Value,
    pub hash: String,
}

pub fn prepare<K: Serialize>(desired: &K) -> Result<Prepared> {
    let mut json = serde_json::to_value(desired).map_err(|source| Error::Serialize {
        kind: "object",
        source,
    })?;
    let hash = hash_of(&json);
    json["metadata"]["annotations"][APPLIED_HASH] = Value::String(hash.clone());
    Ok(Prepared { json, hash })
}

/// Whether `live` already holds what `prepared` would apply.
pub fn holds<K: Serialize>(live: &K, prepared: &Prepared) -> Result<bool> {
    let live_json = serde_json::to_value(live).map_err(|source| Error::Serialize {
        kind: "object",
        source,
    })?;
    Ok(contains(&live_json, &prepared.json))
}

/// One server-side apply of `prepared`; the API server's answer.
pub async fn send<K>(api: &Api<K>, desired: &K, prepared: &Prepared) -> Result<K>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    Ok(api
        .patch(&name, &params(), &Patch::Apply(&prepared.json))
        .await?)
}

/// How the operator applies: its one field manager, taking over fields someone else set, and
/// no field validation. Every object it writes is built from typed structs (Kubernetes' own,
/// and this release's CRDs), so there is nothing unknown to find, and the warnings the default
/// asks for would be dropped unread; skipping the check saves the API server about a tenth of
/// each apply's CPU (measured on the local control plane).
pub fn params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER)
        .force()
        .validation_ignore()
}

/// Reads the live object, then [`apply`]s.
pub async fn get_and_apply<K>(api: &Api<K>, desired: &K) -> Result<Outcome>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let name = desired.meta().name.clone().unwrap_or_default();
    let live = api.get_opt(&name).await?;
    apply(api, desired, live.as_ref()).await
}

/// A stable hash of a JSON value (serde_json keeps object keys sorted): the first 64 bits of
/// its SHA-256, in hex. Stable across Rust releases (unlike `DefaultHasher`), so a toolchain
/// bump never rewrites every managed object.
pub fn hash_of(value: &Value) -> String {
    crate::digest::sha256_hex(value.to_string().as_bytes())[..16].to_string()
}

/// Whether `live` holds every field of `desired` with the same value. Objects are compared
/// key by key (the server adds fields of its own); arrays and scalars must be equal.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => d.iter().all(|(k, dv)| match l.get(k) {
            Some(lv) => contains(lv, dv),
            None => {
                dv.is_null()
                    || matches!(dv, Value::Object(o) if o.is_empty())
                    || matches!(dv, Value::Array(a) if a.is_empty())
            }
        }),
        (Value::Array(l), Value::Array(d)) => {
            l.len() == d.len() && l.iter().zip(d).all(|(lv, dv)| contains(lv, dv))
        }
        (l, d) => l == d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_with_server_fields_contains_desired() {
        let live = json!({"metadata": {"name": "a", "uid": "1", "labels": {"x": "1", "y": "2"}}, "spec": {"hard": {"pods": "5"}}});
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"hard": {"pods": "5"}}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn an_edited_value_or_an_extra_list_item_is_drift() {
        let desired = json!({"subjects": [{"kind": "Group", "name": "a"}], "hard": {"pods": "5"}});
        assert!(!contains(
            &json!({"subjects": [{"kind": "Group", "name": "a"}], "hard": {"pods": "50"}}),
            &desired
        ));
        assert!(!contains(
            &json!({"subjects": [{"kind": "Group", "name": "a"}, {"kind": "User", "name": "eve"}], "hard": {"pods": "5"}}),
            &desired
        ));
    }

    #[test]
    fn the_hash_is_stable_across_releases() {
        // A fixed value: changing it rewrites every object the operator manages once.
        assert_eq!(hash_of(&json!({"a": 1})), "015abd7f5cc57a2d");
    }

    #[test]
    fn the_hash_follows_the_content() {
        assert_eq!(
            hash_of(&json!({"a": 1, "b": 2})),
            hash_of(&json!({"b": 2, "a": 1}))
        );
        assert_ne!(hash_of(&json!({"a": 1})), hash_of(&json!({"a": 2})));
    }
}
