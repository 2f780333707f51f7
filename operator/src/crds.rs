//! Every CRD of the API, as the YAML that `crds/` holds.
//!
//! `crds/` in the repository is generated from these types, one file per kind, named after
//! the CRD (`tenants.citycloud.io.yaml`); a test fails when it is stale. To regenerate it:
//! `CITYCLOUD_UPDATE_CRDS=1 cargo test -p citycloud-operator crds`.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{
    QuotaProfile, SharedService, SharedServiceClaim, Tenant, TenantRequest, TenantRequestPolicy,
};

/// Why the CRD files could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot serialize a CRD to YAML: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// Every CRD of the API, ordered by name (as their files sort in `crds/`).
pub fn all() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        Tenant::crd(),
        QuotaProfile::crd(),
        SharedService::crd(),
        SharedServiceClaim::crd(),
        TenantRequest::crd(),
        TenantRequestPolicy::crd(),
    ];
    crds.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    crds
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(crd)
}

/// Every CRD as YAML documents separated by `---`: what `citycloud-operator crds` prints, and
/// the files of `crds/` one after the other.
pub fn all_yaml() -> Result<String, serde_yaml_ng::Error> {
    let docs = all().iter().map(to_yaml).collect::<Result<Vec<_>, _>>()?;
    Ok(docs.join("---\n"))
}

/// The file name of a CRD in `crds/`: its name, then `.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Every CRD as the file of `crds/` that holds it: (file name, YAML).
pub fn files() -> Result<Vec<(String, String)>, serde_yaml_ng::Error> {
    all()
        .iter()
        .map(|crd| Ok((file_name(crd), to_yaml(crd)?)))
        .collect()
}

/// (Re)writes one file per CRD into `dir`, creating it if need be, and removes the files of
/// CRDs of this API group that no longer exist.
pub fn write_dir(dir: &Path) -> Result<(), Error> {
    let io = |action, path: &Path| {
        let path = path.display().to_string();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let files = files()?;
    for stale in stale_files(dir, &files)? {
        let path = dir.join(stale);
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
    }
    for (name, yaml) in files {
        let path = dir.join(name);
        std::fs::write(&path, yaml).map_err(io("write", &path))?;
    }
    Ok(())
}

/// The names of the files in `dir` that `write_dir` would change, add or remove; empty when
/// `dir` is up to date.
pub fn diff_dir(dir: &Path) -> Result<Vec<String>, Error> {
    let files = files()?;
    let mut differ = stale_files(dir, &files)?;
    for (name, yaml) in &files {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(current) if current == *yaml => {}
            Ok(_) => differ.push(name.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => differ.push(name.clone()),
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    }
    differ.sort();
    Ok(differ)
}

/// Files in `dir` that look like CRDs of this API group but are not among `files`.
fn stale_files(dir: &Path, files: &[(String, String)]) -> Result<Vec<String>, Error> {
    let suffix = format!(".{}.yaml", crate::api::GROUP);
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(source) => {
            return Err(Error::Io {
                action: "list",
                path: dir.display().to_string(),
                source,
            });
        }
    };
    let mut stale = vec![];
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            action: "list",
            path: dir.display().to_string(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(&suffix) && !files.iter().any(|(f, _)| *f == name) {
            stale.push(name);
        }
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::Value;

    use super::*;

    /// Set to regenerate `crds/` instead of failing when it is stale.
    const UPDATE_ENV: &str = "CITYCLOUD_UPDATE_CRDS";

    fn crds_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("crds")
    }

    #[test]
    fn checked_in_crds_are_the_generated_ones() {
        let dir = crds_dir();
        if std::env::var_os(UPDATE_ENV).is_some_and(|v| !v.is_empty() && v != "0") {
            write_dir(&dir).expect("crds/ can be written");
        }
        let stale = diff_dir(&dir).expect("crds/ can be read");
        assert!(
            stale.is_empty(),
            "crds/ is not what the API types generate ({}). Regenerate it with \
             `{UPDATE_ENV}=1 cargo test -p citycloud-operator crds` \
             (`cargo run -p citycloud-operator -- crds` prints the same YAML), \
             review the diff and commit it.",
            stale.join(", ")
        );
    }

    #[test]
    fn all_yaml_is_the_files_one_after_the_other() {
        let files = files().expect("CRDs serialize");
        let joined: Vec<String> = files.into_iter().map(|(_, yaml)| yaml).collect();
        assert_eq!(all_yaml().expect("CRDs serialize"), joined.join("---\n"));
    }

    #[test]
    fn every_kind_is_in_the_group_with_its_names_and_status() {
        let expected = [
            (
                "quotaprofiles.citycloud.io",
                "QuotaProfile",
                "qp",
                "Cluster",
            ),
            (
                "sharedserviceclaims.citycloud.io",
                "SharedServiceClaim",
                "ssc",
                "Namespaced",
            ),
            (
                "sharedservices.citycloud.io",
                "SharedService",
                "ssvc",
                "Cluster",
            ),
            (
                "tenantrequestpolicies.citycloud.io",
                "TenantRequestPolicy",
                "trp",
                "Cluster",
            ),
            (
                "tenantrequests.citycloud.io",
                "TenantRequest",
                "treq",
                "Namespaced",
            ),
            ("tenants.citycloud.io", "Tenant", "tnt", "Cluster"),
        ];
        let crds = all();
        assert_eq!(crds.len(), expected.len());
        for (crd, (name, kind, short, scope)) in crds.iter().zip(expected) {
            assert_eq!(crd.metadata.name.as_deref(), Some(name));
            assert_eq!(crd.spec.group, "citycloud.io");
            assert_eq!(crd.spec.names.kind, kind);
            assert_eq!(
                crd.spec.names.short_names.as_deref(),
                Some(&[short.to_owned()][..])
            );
            assert_eq!(
                crd.spec.names.categories.as_deref(),
                Some(&["citycloud".to_owned()][..])
            );
            assert_eq!(crd.spec.scope, scope);
            assert_eq!(crd.spec.versions.len(), 1);
            let version = &crd.spec.versions[0];
            assert_eq!(version.name, "v1alpha1");
            assert!(version.served && version.storage);
            let status = version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref());
            // A policy is configuration the operator only reads: it has nothing to report.
            if kind != "TenantRequestPolicy" {
                assert!(status.is_some(), "{name} has a status subresource");
            }
            let columns = version.additional_printer_columns.as_deref().unwrap_or(&[]);
            assert_eq!(
                columns
                    .last()
                    .map(|c| (c.name.as_str(), c.json_path.as_str())),
                Some(("Age", ".metadata.creationTimestamp")),
                "{name} ends its printer columns with Age"
            );
        }
    }

    #[test]
    fn the_tenant_columns_are_those_of_the_design() {
        let tenant = Tenant::crd();
        let columns: Vec<(String, String)> = tenant.spec.versions[0]
            .additional_printer_columns
            .iter()
            .flatten()
            .filter(|c| c.priority.unwrap_or(0) == 0)
            .map(|c| (c.name.clone(), c.json_path.clone()))
            .collect();
        let columns: Vec<(&str, &str)> = columns
            .iter()
            .map(|(n, p)| (n.as_str(), p.as_str()))
            .collect();
        assert_eq!(
            columns,
            [
                ("Display Name", ".spec.displayName"),
                ("Profile", ".spec.quotaProfile"),
                ("Namespaces", ".status.namespaces"),
                ("Ready", ".status.conditions[?(@.type==\"Ready\")].status"),
                ("Age", ".metadata.creationTimestamp"),
            ]
        );
    }

    fn schema_of(crd: &CustomResourceDefinition) -> Value {
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("every CRD has a schema");
        serde_json::to_value(schema).expect("schema serializes")
    }

    /// Every way a node of a schema can be reached from its parent: (path segment, child).
    fn children(node: &Value) -> Vec<(String, &Value)> {
        let mut out = vec![];
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            out.extend(props.iter().map(|(k, v)| (format!(".{k}"), v)));
        }
        if let Some(items) = node.get("items") {
            out.push(("[]".to_owned(), items));
        }
        if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
            out.push(("{}".to_owned(), extra));
        }
        out
    }

    /// The structural schema rules of Kubernetes that a generated schema can break, checked
    /// at `node` and below; problems are pushed to `errors` with their path.
    fn check_structural(path: &str, node: &Value, errors: &mut Vec<String>) {
        let mut fail = |what: &str| errors.push(format!("{path}: {what}"));
        for forbidden in [
            "$ref",
            "$schema",
            "definitions",
            "$defs",
            "allOf",
            "oneOf",
            "anyOf",
            "not",
        ] {
            if node.get(forbidden).is_some() {
                fail(&format!("has `{forbidden}`"));
            }
        }
        let flag = |key| node.get(key) == Some(&Value::Bool(true));
        let int_or_string = flag("x-kubernetes-int-or-string");
        let preserve = flag("x-kubernetes-preserve-unknown-fields");
        let type_ = node.get("type").and_then(Value::as_str);
        match type_ {
            None if !int_or_string && !preserve => fail("has no `type`"),
            Some(_) if int_or_string => fail("has a `type` and x-kubernetes-int-or-string"),
            Some("object") => {
                let props = node.get("properties").is_some();
                let extra = node.get("additionalProperties").is_some();
                if props && extra {
                    fail("has both properties and additionalProperties");
                }
                if !props && !extra && !preserve {
                    fail("is an object with no properties: everything in it would be pruned");
                }
                if node.get("additionalProperties") == Some(&Value::Bool(true)) {
                    fail(
                        "has additionalProperties: true, use x-kubernetes-preserve-unknown-fields",
                    );
                }
            }
            Some("array") if node.get("items").is_none() => fail("is an array without items"),
            Some("array" | "string" | "integer" | "number" | "boolean") | None => {}
            Some(other) => fail(&format!("has type {other:?}")),
        }
        if let Some(values) = node.get("enum").and_then(Value::as_array)
            && (type_ != Some("string") || values.iter().any(|v| !v.is_string()))
        {
            fail("has an enum that is not of strings");
        }
        if let Some(default) = node.get("default") {
            let fits = match type_ {
                Some("object") => default.is_object(),
                Some("array") => default.is_array(),
                Some("string") => default.is_string(),
                Some("integer") => default.is_i64() || default.is_u64(),
                Some("boolean") => default.is_boolean(),
                _ => true,
            };
            if !fits {
                fail(&format!("has a default {default} that is not a {type_:?}"));
            }
        }
        for (segment, child) in children(node) {
            check_structural(&format!("{path}{segment}"), child, errors);
        }
    }

    #[test]
    fn every_schema_is_structural() {
        for crd in all() {
            let schema = schema_of(&crd);
            let mut errors = vec![];
            check_structural("", &schema, &mut errors);
            let name = crd.metadata.name.unwrap_or_default();
            assert!(
                errors.is_empty(),
                "{name} is not structural:\n{}",
                errors.join("\n")
            );
            assert!(
                schema.get("additionalProperties").is_none(),
                "{name}: additionalProperties at the root"
            );
            assert_eq!(
                schema["properties"].get("metadata"),
                None,
                "{name}: metadata in schema"
            );
        }
    }

    /// What the CEL cost estimator needs to stay within bounds: below every rule, except the
    /// root's (which only read metadata.name and a few bounded fields), each list has a
    /// maxItems, each map a maxProperties and each string a maxLength or an enum.
    fn check_bounded(path: &str, node: &Value, errors: &mut Vec<String>) {
        let bounded = |key| node.get(key).is_some();
        match node.get("type").and_then(Value::as_str) {
            Some("array") if !bounded("maxItems") => errors.push(format!("{path}: no maxItems")),
            Some("object")
                if node.get("additionalProperties").is_some() && !bounded("maxProperties") =>
            {
                errors.push(format!("{path}: no maxProperties"))
            }
            Some("string") if !bounded("maxLength") && !bounded("enum") => {
                errors.push(format!("{path}: no maxLength"))
            }
            _ => {}
        }
        for (segment, child) in children(node) {
            check_bounded(&format!("{path}{segment}"), child, errors);
        }
    }

    fn rule_sites<'a>(path: &str, node: &'a Value, out: &mut Vec<(String, &'a Value)>) {
        if node.get("x-kubernetes-validations").is_some() {
            out.push((path.to_owned(), node));
        }
        for (segment, child) in children(node) {
            rule_sites(&format!("{path}{segment}"), child, out);
        }
    }

    #[test]
    fn cel_rules_only_read_bounded_data() {
        for crd in all() {
            let schema = schema_of(&crd);
            let mut sites = vec![];
            for (segment, child) in children(&schema) {
                rule_sites(&segment, child, &mut sites);
            }
            let mut errors = vec![];
            for (path, node) in sites {
                check_bounded(&path, node, &mut errors);
            }
            let name = crd.metadata.name.unwrap_or_default();
            assert!(
                errors.is_empty(),
                "{name}: unbounded data under CEL rules:\n{}",
                errors.join("\n")
            );
        }
    }

    #[test]
    fn every_cel_rule_has_a_message_naming_what_to_fix() {
        fn collect(node: &Value, out: &mut Vec<Value>) {
            if let Some(rules) = node
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
            {
                out.extend(rules.iter().cloned());
            }
            for (_, child) in children(node) {
                collect(child, out);
            }
        }
        for crd in all() {
            let mut rules = vec![];
            collect(&schema_of(&crd), &mut rules);
            for rule in rules {
                let message = rule
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                assert!(message.len() > 20, "rule {rule} has no helpful message");
                assert!(
                    !message.contains('\n'),
                    "rule {rule}: messages are one line"
                );
            }
        }
    }

    #[test]
    fn write_dir_then_diff_dir_finds_nothing_and_removes_stale_files() {
        let dir = std::env::temp_dir().join(format!("citycloud-crds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let stale = dir.join("widgets.citycloud.io.yaml");
        std::fs::write(&stale, "old").expect("stale file");
        let unrelated = dir.join("README.md");
        std::fs::write(&unrelated, "keep").expect("unrelated file");
        assert!(
            diff_dir(&dir)
                .expect("readable")
                .contains(&"widgets.citycloud.io.yaml".to_owned())
        );
        write_dir(&dir).expect("writable");
        assert_eq!(diff_dir(&dir).expect("readable"), Vec::<String>::new());
        assert!(!stale.exists() && unrelated.exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
