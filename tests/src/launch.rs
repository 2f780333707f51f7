//! The one way the test bed and its tools start `citycloud-operator run` as a process of its
//! own: the command line as a cluster runs it, and the wait until it is ready. Callers add what
//! is theirs (logs, options, how the child may outlive them).
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// `binary run --listen <listen>` acting with `kubeconfig`, plain-text logs without colour,
/// nothing on stdin. Stdout and stderr are the caller's to direct.
pub fn operator_command(binary: &Path, kubeconfig: &Path, listen: SocketAddr) -> Command {
    let mut cmd = Command::new(binary);
    cmd.args(["run", "--listen", &listen.to_string()])
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    cmd
}

/// Waits until the operator `child` answers `GET /readyz` at `addr` with 200. Fails when it
/// exits first (with the end of `log`, when it logs to a file) or after `timeout`.
pub async fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    log: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let every = Duration::from_millis(100);
    let outcome = crate::poll::until(timeout, every, || {
        // Checked before each GET: an operator that exited is not waited for.
        let exited = child.try_wait();
        async move {
            match exited {
                Ok(Some(status)) => Ok(Err(status)),
                Ok(None) | Err(_) => match crate::http::get(addr, "/readyz").await {
                    Ok((200, _)) => Ok(Ok(())),
                    _ => Err(()),
                },
            }
        }
    })
    .await;
    let seen = |log: Option<&Path>| {
        log.map(|l| format!("; the end of {}:\n{}", l.display(), tail(l, 20)))
            .unwrap_or_default()
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(status)) => {
            let status: ExitStatus = status;
            anyhow::bail!("the operator exited at start-up ({status}){}", seen(log))
        }
        Err(()) => anyhow::bail!(
            "the operator (pid {}) did not answer http://{addr}/readyz within {}s{}",
            child.id(),
            timeout.as_secs(),
            seen(log)
        ),
    }
}

/// The last `lines` lines of a file (empty when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_process_that_exits_at_start_up_is_not_waited_for_and_its_log_is_shown() {
        let dir = std::env::temp_dir().join(format!("citycloud-launch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let log = dir.join("operator.log");
        std::fs::write(&log, "line 1\nfatal: no kubeconfig\n").expect("log");
        let addr = crate::http::free_addr().expect("addr");
        let mut child = Command::new("false").spawn().expect("false");
        // Far longer than `false` lives: the exit, not the timeout, must end the wait.
        let error = wait_ready(&mut child, addr, Some(&log), Duration::from_secs(600))
            .await
            .expect_err("not ready");
        let text = error.to_string();
        assert!(text.contains("exited at start-up"), "{text}");
        assert!(text.ends_with("line 1\nfatal: no kubeconfig"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
