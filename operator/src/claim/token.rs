//! PerClaim tokens: 32 random bytes from the operating system's CSPRNG, URL-safe base64.
//!
//! A token is issued once and kept in the claim's binding Secret; deleting that Secret
//! rotates it. Its SHA-256 is recorded in the claim's status (`tokenDigest`), which is what
//! makes it the operator's; a token whose digest does not match is replaced, and never
//! published. A token is never logged, never in an event, never in a status.
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::api::core::v1::Secret;
use rand::TryRngCore;
use rand::rngs::OsRng;

use super::build::TOKEN_KEY;
use crate::api::labels::CLAIM as CLAIM_LABEL;
use crate::api::labels::{MANAGED_BY, MANAGED_BY_VALUE};
use crate::digest::sha256_hex;
use crate::{Error, Result};

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

/// What a claim's status records of the token issued for it: `sha256:<hex>`.
pub fn digest(token: &str) -> String {
    format!("sha256:{}", sha256_hex(token.as_bytes()))
}

/// The token the live binding Secret holds, if it is the one the operator issued for this
/// claim: the Secret carries the claim's label, and the token's digest is the one the claim's
/// status recorded when it was issued. Nothing in the Secret itself can prove who wrote it
/// (anyone may apply with the operator's field-manager name); the status can only be written
/// by the operator (the status subresource).
pub fn kept(secret: Option<&Secret>, claim_id: &str, recorded: Option<&str>) -> Option<String> {
    let secret = secret?;
    let recorded = recorded?;
    let labels = secret.metadata.labels.as_ref()?;
    if labels.get(CLAIM_LABEL).map(String::as_str) != Some(claim_id)
        || labels.get(MANAGED_BY).map(String::as_str) != Some(MANAGED_BY_VALUE)
    {
        return None;
    }
    let value = secret.data.as_ref()?.get(TOKEN_KEY)?;
    let token = String::from_utf8(value.0.clone()).ok()?;
    (!token.is_empty() && digest(&token) == recorded).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(labels: &str, token: &str) -> Secret {
        serde_yaml_ng::from_str(&format!(
            "{{apiVersion: v1, kind: Secret, metadata: {{name: b, namespace: a-prod, labels: {labels}}}, \
             data: {{token: {token}}}}}"
        ))
        .expect("fixture")
    }

    const OURS: &str =
        "{app.kubernetes.io/managed-by: citycloud-operator, citycloud.io/claim: a-prod.lgsp}";

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
    fn the_digest_is_the_sha256_of_the_token() {
        assert_eq!(
            digest("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_token_whose_digest_the_status_recorded_is_kept() {
        // "czNjcjN0" is base64 of "s3cr3t".
        let s = secret(OURS, "czNjcjN0");
        let recorded = digest("s3cr3t");
        assert_eq!(
            kept(Some(&s), "a-prod.lgsp", Some(&recorded)).as_deref(),
            Some("s3cr3t")
        );
        assert_eq!(
            kept(None, "a-prod.lgsp", Some(&recorded)),
            None,
            "no Secret: a new token"
        );
    }

    #[test]
    fn a_token_the_status_does_not_vouch_for_or_another_claims_secret_is_not_kept() {
        let s = secret(OURS, "czNjcjN0");
        // Whoever wrote it, with whatever field manager: the digest is what counts.
        assert_eq!(
            kept(Some(&s), "a-prod.lgsp", Some(&digest("another"))),
            None
        );
        assert_eq!(kept(Some(&s), "a-prod.lgsp", None), None, "none recorded");
        let recorded = digest("s3cr3t");
        assert_eq!(kept(Some(&s), "a-prod.other", Some(&recorded)), None);
        assert_eq!(
            kept(
                Some(&secret("{}", "czNjcjN0")),
                "a-prod.lgsp",
                Some(&recorded)
            ),
            None
        );
        assert_eq!(
            kept(
                Some(&secret(OURS, "\"\"")),
                "a-prod.lgsp",
                Some(&digest(""))
            ),
            None
        );
    }
}
