//! PerClaim tokens: 32 random bytes from the operating system's CSPRNG, URL-safe base64.
//!
//! A token is issued once and kept in the claim's binding Secret; deleting that Secret
//! rotates it. A token is never logged, never in an event, never in a status.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::Secret;
use rand::TryRngCore;
use rand::rngs::OsRng;

use super::build::TOKEN_KEY;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE};
use crate::tenant::apply::CLAIM_LABEL;
use crate::{Error, FIELD_MANAGER, Result};

/// Bytes of randomness in a token.
const TOKEN_BYTES: usize = 32;

/// A new token. Fails only if the operating system cannot provide randomness.
pub fn issue() -> Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| Error::Invalid(format!("no randomness for a token: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The token the live binding Secret holds, if it is one the operator issued for this claim:
/// the Secret carries the claim's label, and the operator's server-side apply still owns its
/// `token` entry (someone who edits the value takes that ownership, and gets a new token).
pub fn kept(secret: Option<&Secret>, claim_id: &str) -> Option<String> {
    let secret = secret?;
    let labels = secret.metadata.labels.as_ref()?;
    if labels.get(CLAIM_LABEL).map(String::as_str) != Some(claim_id)
        || labels.get(MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_VALUE)
    {
        return None;
    }
    if !owns_token(secret) {
        return None;
    }
    let value = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let token = String::from_utf8(value.0.clone()).ok()?;
    (!token.is_empty()).then_some(token)
}

/// Whether the operator's apply owns `data.token` in the Secret's managed fields.
fn owns_token(secret: &Secret) -> bool {
    secret
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER) && m.operation.as_deref() == Some("Apply")
        })
        .filter_map(|m| m.fields_v1.as_ref())
        .any(|f| f.0.pointer(&format!("/f:data/f:{TOKEN_KEY}")).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(labels: &str, managed_fields: &str, token: &str) -> Secret {
        serde_yaml_ng::from_str(&format!(
            "{{apiVersion: v1, kind: Secret, metadata: {{name: b, namespace: a-prod, labels: {labels}, \
             managedFields: {managed_fields}}}, data: {{token: {token}}}}}"
        ))
        .expect("fixture")
    }

    const OURS: &str =
        "{app.kubernetes.io/managed-by: citycloud-operator, citycloud.io/claim: a-prod.lgsp}";
    const APPLIED: &str = r#"[{manager: citycloud-operator, operation: Apply, fieldsType: FieldsV1, fieldsV1: {"f:data": {"f:token": {}, "f:type": {}}}}]"#;

    #[test]
    fn tokens_are_32_random_bytes_url_safe() {
        let a = issue().expect("randomness");
        let b = issue().expect("randomness");
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("base64").len(), 32);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    #[test]
    fn the_token_the_operator_issued_is_kept() {
        // "czNjcjN0" is base64 of "s3cr3t".
        let s = secret(OURS, APPLIED, "czNjcjN0");
        assert_eq!(kept(Some(&s), "a-prod.lgsp").as_deref(), Some("s3cr3t"));
        assert_eq!(kept(None, "a-prod.lgsp"), None, "no Secret: a new token");
    }

    #[test]
    fn a_token_someone_else_wrote_or_another_claims_secret_is_not_kept() {
        let edited = r#"[{manager: citycloud-operator, operation: Apply, fieldsV1: {"f:data": {"f:type": {}}}},
                         {manager: kubectl-edit, operation: Update, fieldsV1: {"f:data": {"f:token": {}}}}]"#;
        assert_eq!(
            kept(Some(&secret(OURS, edited, "czNjcjN0")), "a-prod.lgsp"),
            None
        );
        assert_eq!(
            kept(Some(&secret(OURS, APPLIED, "czNjcjN0")), "a-prod.other"),
            None
        );
        assert_eq!(
            kept(Some(&secret("{}", APPLIED, "czNjcjN0")), "a-prod.lgsp"),
            None
        );
        assert_eq!(
            kept(Some(&secret(OURS, APPLIED, "\"\"")), "a-prod.lgsp"),
            None
        );
    }
}
