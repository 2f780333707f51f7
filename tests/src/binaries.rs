//! Finds (building when missing) the control plane's binaries, cached outside the repository.
use std::path::PathBuf;
use std::process::Command;

use crate::{Error, Result};

/// The repository's root, from this crate's manifest directory.
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Runs `tests/cluster/build.sh` (a no-op when the cache is warm) and returns the folder
/// holding `kube` and `helm`.
pub fn ensure_built() -> Result<PathBuf> {
    let script = repo_root().join("tests/cluster/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(crate::io_err(&script))?;
    if !out.status.success() {
        return Err(Error::Build(format!(
            "{} exited with {}",
            script.display(),
            out.status
        )));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}
