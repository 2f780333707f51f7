//! SHA-256, for names and digests that must stay the same across releases: claim ids, token
//! digests, the applied-hash annotation. ring is already here as rustls's provider.

/// The SHA-256 of `bytes`, as 64 lowercase hex digits.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
