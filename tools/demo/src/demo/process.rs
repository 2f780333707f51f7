//! The operator as a process of its own: `citycloud-operator run`, detached (a session of its
//! own, so it outlives `make demo`), found again through its pid file.
use std::fs;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use testbed::http::free_addr;
use testbed::launch::{operator_command, wait_ready};

use super::Layout;

/// Starts `binary run --listen 127.0.0.1:<free port>` with the demo's admin kubeconfig,
/// logging to `operator.log`, and waits until it answers `/readyz`.
#[allow(unsafe_code)] // libc: the child leaves our session (setsid in pre_exec)
pub async fn start(layout: &Layout, binary: &Path) -> anyhow::Result<SocketAddr> {
    let addr = free_addr()?;
    let log_path = layout.operator_log();
    let log = fs::File::create(&log_path)?;
    let mut cmd = operator_command(binary, &layout.kubeconfig(), addr);
    cmd.stdout(log.try_clone()?).stderr(log);
    // SAFETY: setsid(2) is async-signal-safe; it is the only call between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {}: {e}", binary.display()))?;
    fs::write(layout.operator_pid(), format!("{}\n", child.id()))?;
    fs::write(layout.operator_addr(), format!("{addr}\n"))?;
    let ready = wait_ready(&mut child, addr, Some(&log_path), Duration::from_secs(30)).await;
    if ready.is_err() && child.try_wait().is_ok_and(|s| s.is_some()) {
        let _ = fs::remove_file(layout.operator_pid());
    }
    // Not waited for: it runs on after this process exits.
    drop(child);
    ready.map(|()| addr)
}

/// The pid in `operator.pid`, when that process still runs and is an operator.
pub fn running(layout: &Layout) -> Option<i32> {
    let pid: i32 = fs::read_to_string(layout.operator_pid())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A pid file can outlive its process, and the pid be reused: check what runs there.
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("citycloud-operator")
        .then_some(pid)
}

/// Stops the operator of `operator.pid` (SIGTERM: it finishes in-flight reconciles; SIGKILL
/// after 15 s). Returns whether one was running.
#[allow(unsafe_code)] // libc: signals the operator process the demo started
pub fn stop(layout: &Layout) -> bool {
    let pid = running(layout);
    let _ = fs::remove_file(layout.operator_pid());
    let Some(pid) = pid else { return false };
    // SAFETY: kill(2) on the process this demo started (checked through /proc above).
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline && Path::new(&format!("/proc/{pid}")).exists() {
        if is_zombie(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    true
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
