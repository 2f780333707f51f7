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
    run_script("tests/cluster/build.sh")
}

/// Installs the node's Debian packages when missing (`tests/cluster/node/deps.sh`, a no-op when
/// they are there) and runs `tests/cluster/build-node.sh`; returns the folder holding kubelet,
/// kube-scheduler, kube-proxy, kube-router and the pause and probe image archives. Once per
/// process: the node tests start several clusters.
pub fn ensure_node_built() -> Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            run_script("tests/cluster/node/deps.sh")
                .and_then(|_| run_script("tests/cluster/build-node.sh"))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Error::Build)
}

/// Runs a build script of the repository; its standard output is the folder it built into.
fn run_script(path: &str) -> Result<PathBuf> {
    let script = repo_root().join(path);
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
