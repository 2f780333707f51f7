//! A real node for the local control plane: containerd + runc, kubelet, kube-scheduler,
//! kube-proxy (iptables) and kube-router (NetworkPolicy firewall only) on a CNI bridge, and the
//! cluster DNS (CoreDNS as the `kube-dns` Service, a pod on the node), all in
//! one network namespace plus one private mount namespace held by a `sleep` (see
//! `tests/cluster/node/netns.sh`). The control plane runs in the same network namespace, so the
//! API server advertises the node IP and pods reach it through the `kubernetes` Service; the
//! host reaches it through [`crate::relay`]. Nothing touches the host's network, sysctls or
//! mounts; the cgroups kubelet needs are created for the run and removed after it.
//!
//! Integration tests use [`NodeCluster::start`]; `make cluster-up NODE=1` uses [`start`] with a
//! detached lifetime and `make cluster-down` [`stop_detached`].
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;

use crate::binaries::{ensure_built, ensure_node_built, repo_root};
use crate::controlplane::{
    ControlPlane, KUBELET_CLIENT_USER, Lifetime, NodeNetwork, Options, set_lifetime,
};
use crate::phase::mark;
use crate::{Error, Result, io_err};

/// The node's name (Node object, kubelet's --hostname-override).
pub const NODE_NAME: &str = "citycloud-node";
/// The node's IP, on a veth inside its own network namespace (never on the host).
pub const NODE_IP: &str = "10.99.0.2";
/// Pod addresses (CNI host-local on the `cni0` bridge).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// Same as the API server's --service-cluster-ip-range.
const SERVICE_CIDR: &str = "10.0.0.0/24";
/// The cluster DNS: the `kube-dns` Service's ClusterIP (kubelet's clusterDNS), served by CoreDNS
/// (`tests/cluster/node/coredns.yaml`).
pub const DNS_IP: &str = "10.0.0.10";
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// The node components, in start order (stopped in reverse).
const COMPONENTS: &[&str] = &[
    "containerd",
    "kubelet",
    "kube-scheduler",
    "kube-proxy",
    "kube-router",
];

/// The node's namespaces, cgroups and processes, described by files in `dir`: `holder` (the pid
/// holding the namespaces), `cgroup` (kubelet's cgroupRoot), `pids` (detached components) and
/// `logs/`.
pub struct Node {
    pub dir: PathBuf,
    holder: i32,
    cgroup: String,
    bin: PathBuf,
    children: Mutex<Vec<Child>>,
    lifetime: Lifetime,
    torn_down: std::sync::atomic::AtomicBool,
}

impl Node {
    /// Creates the namespaces (holder process, interfaces, private /run /var/lib /var/log, kubelet's
    /// /proc/sys files) and kubelet's cgroupRoot.
    pub fn create(dir: &Path, bin: &Path, lifetime: Lifetime) -> Result<Node> {
        for sub in ["logs", "etc"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(dir))?;
        }
        let dir = fs::canonicalize(dir).map_err(io_err(dir))?;
        let mut holder = Command::new("unshare");
        holder
            .args(["--net", "--mount", "--propagation", "private", "--"])
            .args(["sleep", "infinity"])
            // Not the caller's stdout: `make cluster-up | tail` would wait for it forever.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        set_lifetime(&mut holder, lifetime, None);
        let child = holder.spawn().map_err(io_err(Path::new("unshare")))?;
        let pid = child.id() as i32;
        write(&dir.join("holder"), &pid.to_string())?;
        let cgroup = format!("citycloud-node-{pid}");
        write(&dir.join("cgroup"), &cgroup)?;
        let node = Node {
            dir: dir.clone(),
            holder: pid,
            cgroup,
            bin: bin.to_path_buf(),
            children: Mutex::new(vec![child]),
            lifetime,
            torn_down: Default::default(),
        };
        if lifetime == Lifetime::Detached
            && let Ok(mut children) = node.children.lock()
        {
            children.drain(..).for_each(std::mem::forget);
        }
        if let Err(e) = node.setup() {
            node.stop();
            return Err(e);
        }
        Ok(node)
    }

    fn setup(&self) -> Result<()> {
        // unshare execs `sleep` once the namespaces exist.
        let own = fs::read_link("/proc/self/ns/net").map_err(io_err(Path::new("/proc/self")))?;
        let start = Instant::now();
        while fs::read_link(self.netns()).ok().is_none_or(|ns| ns == own) {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(Error::Build(
                    "the node's namespaces were not created".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ip = format!("{NODE_IP}/24");
        let holder = self.holder.to_string();
        netns_sh(&["setup", &holder, &self.dir.display().to_string(), &ip])?;
        netns_sh(&["cgroups-up", &self.cgroup])
    }

    /// Attaches to a node started by an earlier process (`make cluster-up NODE=1`).
    pub fn attach(dir: &Path) -> Result<Node> {
        let read = |f: &str| {
            let path = dir.join(f);
            fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(io_err(&path))
        };
        let holder = read("holder")?
            .parse()
            .map_err(|_| Error::Build("node/holder is not a pid".into()))?;
        Ok(Node {
            dir: dir.to_path_buf(),
            holder,
            cgroup: read("cgroup")?,
            bin: PathBuf::new(),
            children: Mutex::new(Vec::new()),
            lifetime: Lifetime::Detached,
            torn_down: Default::default(),
        })
    }

    /// The node's network namespace.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.holder))
    }

    /// Starts containerd. It needs nothing of the control plane: [`start`] starts it first and
    /// imports the images ([`Node::import_images`]) while the control plane starts.
    pub fn start_runtime(&self) -> Result<()> {
        let cni_dir = self.dir.join("etc/cni");
        fs::create_dir_all(&cni_dir).map_err(io_err(&cni_dir))?;
        write(&cni_dir.join("10-citycloud.conflist"), &cni_conflist())?;
        let containerd_config = self.dir.join("etc/containerd.toml");
        write(&containerd_config, &containerd_config_text(&cni_dir))?;
        self.spawn(
            "containerd",
            Path::new("containerd"),
            &[format!("--config={}", containerd_config.display())],
        )
    }

    /// Waits until containerd answers, then imports the pause and CoreDNS images and `more`.
    pub fn import_images(&self, more: &[PathBuf]) -> Result<()> {
        self.wait("containerd", || {
            self.exec(&["ctr", "--timeout", "1s", "version"]).is_ok()
        })?;
        for archive in [self.bin.join("pause.tar"), self.bin.join("coredns.tar")]
            .iter()
            .chain(more)
        {
            self.import_image(archive)?;
        }
        mark(format!("{}: images imported", run_name(&self.dir)));
        Ok(())
    }

    /// Starts kubelet, kube-scheduler, kube-proxy and kube-router against `cp` (containerd runs
    /// and has the images: see [`Node::start_runtime`]), waits until the Node is Ready, then
    /// deploys the cluster DNS and waits until it answers.
    pub fn start_components(&self, cp: &ControlPlane) -> Result<()> {
        let etc = self.dir.join("etc");
        let pki = cp.dir.join("pki");
        let kubeconfig = |name: &str, user: &str, groups: &[&str]| -> Result<String> {
            let path = etc.join(format!("{name}.kubeconfig"));
            write(&path, &cp.identity(user, groups)?.kubeconfig(cp))?;
            Ok(path.display().to_string())
        };
        let kubelet_kc = kubeconfig(
            "kubelet",
            &format!("system:node:{NODE_NAME}"),
            &["system:nodes"],
        )?;
        let scheduler_kc = kubeconfig("kube-scheduler", "system:kube-scheduler", &[])?;
        let proxy_kc = kubeconfig("kube-proxy", "system:kube-proxy", &[])?;
        let admin_kc = cp.admin_kubeconfig().display().to_string();
        grant_kubelet_api(cp)?;

        // The API server verifies kubelets' serving certificates (--kubelet-certificate-authority).
        let serving = cp.serving_cert("kubelet-serving", NODE_NAME, &[NODE_IP, "127.0.0.1"])?;
        let kubelet_config = etc.join("kubelet.yaml");
        write(
            &kubelet_config,
            &kubelet_config_text(&self.cgroup, &pki.join("ca.crt"), &serving),
        )?;

        let started = Instant::now();
        mark(format!("{}: starting kubelet", run_name(&self.dir)));
        self.spawn(
            "kubelet",
            &self.bin.join("kubelet"),
            &[
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={kubelet_kc}"),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={NODE_IP}"),
            ],
        )?;
        self.spawn(
            "kube-scheduler",
            &self.bin.join("kube-scheduler"),
            &[
                format!("--kubeconfig={scheduler_kc}"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
            ],
        )?;
        self.wait("kubelet", || node_ready(cp))?;
        mark(format!(
            "{}: node Ready {:.1}s after kubelet started",
            run_name(&self.dir),
            started.elapsed().as_secs_f64()
        ));
        // The cluster DNS pod starts while kube-proxy and kube-router do; CoreDNS retries until
        // the `kubernetes` Service answers, and is Ready once it has synced.
        apply_manifest(cp, &dns_manifest()?)?;
        // kube-proxy and kube-router look their Node up at start: after it registered.
        self.spawn(
            "kube-proxy",
            &self.bin.join("kube-proxy"),
            &[
                format!("--kubeconfig={proxy_kc}"),
                "--proxy-mode=iptables".into(),
                format!("--hostname-override={NODE_NAME}"),
                format!("--cluster-cidr={POD_CIDR}"),
                // 0 = leave the (global) conntrack sysctls as they are.
                "--conntrack-max-per-core=0".into(),
                "--conntrack-tcp-timeout-established=0".into(),
                "--conntrack-tcp-timeout-close-wait=0".into(),
                // A failed sync (e.g. racing kube-router's table rewrites) is retried after this.
                "--iptables-sync-period=5s".into(),
            ],
        )?;
        // Ready means usable: kube-proxy has programmed the `kubernetes` Service and kube-router
        // its NetworkPolicy chains (both in the node's own iptables).
        self.wait("kube-proxy", || {
            self.exec(&["iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES"])
                .is_ok_and(|rules| rules.contains("default/kubernetes:https"))
        })?;
        // kube-router rewrites the whole filter table (iptables-save/restore): started while
        // kube-proxy creates its chains, it can drop them and fail kube-proxy's first sync.
        self.spawn(
            "kube-router",
            &self.bin.join("kube-router"),
            &[
                format!("--kubeconfig={admin_kc}"),
                "--run-firewall=true".into(),
                "--run-router=false".into(),
                "--run-service-proxy=false".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                format!("--hostname-override={NODE_NAME}"),
                "--metrics-port=0".into(),
            ],
        )?;
        self.wait("kube-router", || {
            self.exec(&["iptables", "-w", "-S", "KUBE-ROUTER-FORWARD"])
                .is_ok()
        })?;
        mark(format!(
            "{}: Services and NetworkPolicies enforced {:.1}s after kubelet started",
            run_name(&self.dir),
            started.elapsed().as_secs_f64()
        ));
        self.wait("coredns", || dns_ready(cp))?;
        mark(format!(
            "{}: cluster DNS ({DNS_IP}) Ready {:.1}s after kubelet started",
            run_name(&self.dir),
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Imports an OCI (or docker) image archive into the node's containerd (namespace k8s.io),
    /// where kubelet finds it: pods then use it with `imagePullPolicy: Never`/`IfNotPresent`.
    pub fn import_image(&self, archive: &Path) -> Result<()> {
        let path = fs::canonicalize(archive).map_err(io_err(archive))?;
        self.exec(&[
            "ctr",
            "-n",
            "k8s.io",
            "images",
            "import",
            &path.display().to_string(),
        ])
        .map(|_| ())
    }

    /// Runs a command inside the node's namespaces (as its components see the world).
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("nsenter")
            .args(["-t", &self.holder.to_string(), "-n", "-m", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(Path::new("nsenter")))?;
        if !out.status.success() {
            return Err(Error::Build(format!(
                "{args:?} in the node failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the components (kubelet first, containerd last) and kills the pods' containers,
    /// leaving the namespaces.
    pub fn stop_components(&self) {
        if let Ok(mut children) = self.children.lock() {
            // The holder is the first child: it goes with the namespaces in `teardown`.
            let holder = self.holder as u32;
            for child in children.iter_mut().rev().filter(|c| c.id() != holder) {
                crate::controlplane::stop_child(child);
            }
            children.retain(|c| c.id() == holder);
        }
        let pids_file = self.dir.join("pids");
        if let Ok(pids) = fs::read_to_string(&pids_file) {
            for pid in pids
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .rev()
            {
                crate::controlplane::stop_pid(pid);
            }
            let _ = fs::remove_file(&pids_file);
        }
        // Before the control plane stops (see netns.sh); `teardown` retries what is left.
        if let Err(e) = netns_sh(&["pods-down", &self.cgroup]) {
            eprintln!("node: stopping the pods: {e}");
        }
    }

    /// Kills whatever still runs in the node's namespaces or cgroups (pods' shims and
    /// containers), ends the namespaces (their mounts and interfaces go with them) and removes
    /// the cgroups.
    pub fn teardown(&self) -> Result<()> {
        if self
            .torn_down
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let result = netns_sh(&["down", &self.holder.to_string(), &self.cgroup]);
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            children.clear();
        }
        let _ = fs::remove_file(self.dir.join("holder"));
        result
    }

    /// Both, in order.
    pub fn stop(&self) {
        self.stop_components();
        if let Err(e) = self.teardown() {
            eprintln!("node teardown: {e}");
        }
    }

    /// The last `lines` lines of each component's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let logs = COMPONENTS
            .iter()
            .map(|c| self.dir.join("logs").join(format!("{c}.log")));
        crate::controlplane::tail_of(logs, lines)
    }

    fn spawn(&self, component: &str, bin: &Path, args: &[String]) -> Result<()> {
        let log_path = self.dir.join("logs").join(format!("{component}.log"));
        let log = fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let err_log = log.try_clone().map_err(io_err(&log_path))?;
        let mut cmd = Command::new("nsenter");
        // nsenter execs the component: the pid is the component's.
        cmd.args(["-t", &self.holder.to_string(), "-n", "-m", "--"])
            .arg(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log);
        set_lifetime(&mut cmd, self.lifetime, None);
        let child = cmd.spawn().map_err(io_err(bin))?;
        if self.lifetime == Lifetime::Detached {
            let pids = self.dir.join("pids");
            let mut text = fs::read_to_string(&pids).unwrap_or_default();
            text.push_str(&format!("{}\n", child.id()));
            write(&pids, &text)?;
            std::mem::forget(child);
        } else if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
        Ok(())
    }

    fn wait(&self, component: &str, probe: impl Fn() -> bool) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < READY_TIMEOUT {
            if probe() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(Error::NotReady {
            component: component.to_string(),
            seconds: start.elapsed().as_secs(),
            log: self
                .dir
                .join("logs")
                .join(format!("{component}.log"))
                .display()
                .to_string(),
        })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.lifetime == Lifetime::Owned {
            self.stop();
        }
    }
}

/// How [`start`] differs from a plain cluster with a node.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// See [`NodeNetwork::relay_exe`].
    pub relay_exe: Option<PathBuf>,
    /// See [`Options::crds`].
    pub crds: Option<PathBuf>,
    /// Image archives imported into the node besides pause and CoreDNS.
    pub images: Vec<PathBuf>,
    /// Start the control plane only when no other of this process is starting (after a 2 s
    /// grace): for a test with time to spare, so that the others' clusters come up sooner.
    pub defer: bool,
}

/// Images made while the cluster starts (e.g. packed by a test): called on the image import
/// thread after the images of [`StartOptions`], it waits for them and returns their archives.
pub type LaterImages = Box<dyn FnOnce() -> Result<Vec<PathBuf>, String> + Send>;

/// Work on the control plane as soon as it is ready, done while the node's components start
/// (e.g. installing a chart: its pods wait for the node anyway); its error fails the start.
pub type ControlPlaneWork = Box<dyn FnOnce(&ControlPlane) -> Result<(), String> + Send>;

/// What a caller of [`start_with_hooks`] has done while the cluster starts.
#[derive(Default)]
pub struct Hooks {
    pub later_images: Option<LaterImages>,
    pub on_control_plane: Option<ControlPlaneWork>,
}

/// Starts a control plane in `dir` with a node in `dir/node`. containerd starts first and the
/// images are imported while the control plane starts: neither needs the other.
pub fn start(dir: &Path, lifetime: Lifetime, start: &StartOptions) -> Result<(ControlPlane, Node)> {
    start_with_hooks(dir, lifetime, start, Hooks::default())
}

/// [`start`], with `hooks` run while it starts.
pub fn start_with_hooks(
    dir: &Path,
    lifetime: Lifetime,
    start: &StartOptions,
    hooks: Hooks,
) -> Result<(ControlPlane, Node)> {
    let Hooks {
        later_images: later,
        on_control_plane,
    } = hooks;
    let bin = ensure_built()?;
    let node_bin = ensure_node_built()?;
    mark(format!("{}: starting", run_name(dir)));
    let node = Node::create(&dir.join("node"), &node_bin, lifetime)?;
    mark(format!("{}: node namespaces created", run_name(dir)));
    let options = Options {
        node: Some(NodeNetwork {
            netns: node.netns(),
            ip: NODE_IP.into(),
            relay_exe: start.relay_exe.clone(),
        }),
        crds: start.crds.clone(),
        ..Options::default()
    };
    // Spawned from this thread: an Owned child dies with the thread that spawned it.
    if let Err(e) = node.start_runtime() {
        node.stop();
        return Err(e);
    }
    // Images come in two batches: the node's own (pause, CoreDNS, probe) before kubelet starts,
    // and `later` ones, which may still be in the making, while the node components start.
    let (cp, imported, later_imported) = std::thread::scope(|s| {
        let imports = s.spawn(|| node.import_images(&start.images));
        let later_imports = later.map(|later| {
            s.spawn(|| -> Result<()> {
                let archives = later().map_err(Error::Build)?;
                node.wait("containerd", || {
                    node.exec(&["ctr", "--timeout", "1s", "version"]).is_ok()
                })?;
                for archive in archives {
                    node.import_image(&archive)?;
                }
                mark(format!("{}: later images imported", run_name(dir)));
                Ok(())
            })
        });
        let joined = |t: std::thread::ScopedJoinHandle<'_, Result<()>>| {
            t.join()
                .unwrap_or_else(|_| Err(Error::Build("a start-up thread panicked".into())))
        };
        // On this thread: an Owned child dies with the thread that spawned it.
        let starting = Starting::begin(start.defer);
        mark(format!("{}: starting the control plane", run_name(dir)));
        let cp = ControlPlane::start_with(dir, &bin, lifetime, &options);
        drop(starting);
        let imported = joined(imports);
        let imported = match (&cp, imported) {
            (Ok(cp), Ok(())) => std::thread::scope(|inner| {
                let work = on_control_plane.map(|work| {
                    inner.spawn(move || {
                        let done = work(cp).map_err(Error::Build);
                        mark(format!("{}: work on the control plane done", run_name(dir)));
                        done
                    })
                });
                let started = node.start_components(cp);
                let worked = work.map_or(Ok(()), |w| {
                    w.join().unwrap_or_else(|_| {
                        Err(Error::Build(
                            "the work on the control plane panicked".into(),
                        ))
                    })
                });
                started.and(worked)
            }),
            (_, imported) => imported,
        };
        let later_imported = later_imports.map(joined).unwrap_or(Ok(()));
        (cp, imported, later_imported)
    });
    match (cp, imported.and(later_imported)) {
        (Ok(cp), Ok(())) => Ok((cp, node)),
        (cp, started) => {
            node.stop_components();
            if let Ok(cp) = &cp {
                cp.stop();
            }
            node.stop();
            Err(cp
                .err()
                .or(started.err())
                .unwrap_or_else(|| Error::Build("the cluster with a node did not start".into())))
        }
    }
}

/// Control planes of this process being started, and a signal when one is done.
static STARTING: (Mutex<usize>, std::sync::Condvar) = (Mutex::new(0), std::sync::Condvar::new());

/// A control plane being started (see [`StartOptions::defer`]); done when dropped.
struct Starting;

impl Starting {
    /// Starting a control plane (etcd, the API server's bootstrap, kube-controller-manager's
    /// first sync) is the most CPU-hungry phase of a node test: on 2 cores three at once each
    /// take about as long as two then one. A deferred start waits until no other is under way,
    /// after a short grace in which the others (tests start together) make themselves known.
    fn begin(defer: bool) -> Starting {
        let (count, done) = &STARTING;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        if defer {
            let grace = Instant::now() + Duration::from_secs(2);
            loop {
                let now = Instant::now();
                if now >= grace && *n == 0 {
                    break;
                }
                let wait = grace
                    .saturating_duration_since(now)
                    .max(Duration::from_millis(100));
                n = done
                    .wait_timeout(n, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        *n += 1;
        Starting
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        let (count, done) = &STARTING;
        let mut n = count.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        done.notify_all();
    }
}

/// Stops a cluster started detached (`make cluster-up NODE=1`): node components, control plane,
/// then the namespaces and cgroups.
pub fn stop_detached(dir: &Path) -> Result<()> {
    let node = Node::attach(&dir.join("node"))?;
    node.stop_components();
    ControlPlane::attach(dir)?.stop();
    node.teardown()
}

/// A control plane with a Ready node for integration tests. [`NodeCluster::shared`] gives every
/// test of a binary the same one, stopped when the test binary exits (an `atexit` hook: statics
/// are never dropped); [`NodeCluster::start`] gives a test its own, stopped when dropped. Logs
/// stay in `target/testbed/<label>-<pid>/` (the last three runs are kept); [`NodeCluster::report`]
/// prints their tails when the calling test fails.
pub struct NodeCluster {
    pub cluster: Arc<ControlPlane>,
    pub node: Arc<Node>,
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

static SHARED: std::sync::OnceLock<Result<Arc<NodeCluster>, String>> = std::sync::OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(Ok(cluster)) = SHARED.get() {
        cluster.shutdown();
    }
}

impl NodeCluster {
    /// The test binary's cluster with a node, started on first use.
    pub async fn shared() -> Arc<NodeCluster> {
        let shared = tokio::task::spawn_blocking(|| {
            SHARED.get_or_init(|| {
                // What the operator needs is installed while the node starts: the traffic
                // test (tests/node/traffic.rs) runs one on this cluster.
                let hooks = Hooks {
                    // Not fatal here: the other tests do not need it, and the traffic test
                    // installs it again (and says what fails) when it was not.
                    on_control_plane: Some(Box::new(|cp| {
                        if let Err(e) = crate::TestEnv::prepare_operator(cp) {
                            eprintln!("preparing the operator on the node cluster: {e}");
                        }
                        Ok(())
                    })),
                    ..Hooks::default()
                };
                let started = NodeCluster::start_blocking("node", hooks, false);
                if started.is_ok() {
                    #[allow(unsafe_code)] // libc: atexit, to stop the shared node at exit
                    // SAFETY: registers a plain function, run once at exit().
                    unsafe {
                        libc::atexit(stop_shared);
                    }
                }
                started.map(Arc::new)
            })
        })
        .await
        .expect("start-up thread");
        match shared {
            Ok(c) => c.clone(),
            Err(e) => panic!("the cluster with a node could not start: {e}"),
        }
    }

    /// A cluster with a node of this test's own.
    pub async fn start(label: &str) -> NodeCluster {
        NodeCluster::start_with(label, Hooks::default(), false).await
    }

    /// The same, with `hooks` run while it starts (see [`Hooks`]).
    pub async fn start_with_hooks(label: &str, hooks: Hooks) -> NodeCluster {
        NodeCluster::start_with(label, hooks, false).await
    }

    /// A cluster of this test's own for a test with time to spare: its control plane starts
    /// when no other is starting (see [`StartOptions::defer`]).
    pub async fn start_deferred(label: &str) -> NodeCluster {
        NodeCluster::start_with(label, Hooks::default(), true).await
    }

    async fn start_with(label: &str, hooks: Hooks, defer: bool) -> NodeCluster {
        let label = label.to_string();
        tokio::task::spawn_blocking(move || NodeCluster::start_blocking(&label, hooks, defer))
            .await
            .expect("start-up thread")
            .unwrap_or_else(|e| panic!("the cluster with a node could not start: {e}"))
    }

    /// Builds what is missing, starts the control plane with the repository's CRDs installed
    /// before kube-controller-manager (see [`Options::crds`]) and the node, imports the pause,
    /// CoreDNS and probe images, and waits until the node and the cluster DNS are Ready.
    fn start_blocking(label: &str, hooks: Hooks, defer: bool) -> Result<NodeCluster, String> {
        let root = repo_root().join("target/testbed");
        crate::controlplane::prune_old_runs(&root);
        let dir = root.join(format!("{label}-{}", std::process::id()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        // The components die with the thread that spawned them (PR_SET_PDEATHSIG): it lives
        // until the cluster is shut down.
        let name = label.to_string();
        let thread = std::thread::spawn(move || {
            let begun = Instant::now();
            let options = StartOptions {
                crds: Some(repo_root().join("crds")),
                // If the build fails, `start` says so.
                images: ensure_node_built()
                    .map(|bin| vec![bin.join("probe.tar")])
                    .unwrap_or_default(),
                defer,
                ..StartOptions::default()
            };
            let started = start_with_hooks(&dir, Lifetime::Owned, &options, hooks)
                .map(|(cp, node)| (Arc::new(cp), Arc::new(node)));
            if started.is_ok() {
                mark(format!(
                    "cluster {name} with a node started in {:.1}s",
                    begun.elapsed().as_secs_f64()
                ));
            }
            let keep = started
                .as_ref()
                .ok()
                .map(|(c, n)| (Arc::clone(c), Arc::clone(n)));
            let _ = tx.send(started.map_err(|e| e.to_string()));
            let _ = stopped.recv();
            if let Some((cp, node)) = keep {
                node.stop_components();
                cp.stop();
                node.stop();
            }
        });
        let (cluster, node) = rx.recv().map_err(|e| e.to_string())??;
        Ok(NodeCluster {
            cluster,
            node,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// An admin client (cluster-admin) for the calling test's runtime.
    pub async fn admin(&self) -> kube::Client {
        let kubeconfig =
            fs::read_to_string(self.cluster.admin_kubeconfig()).expect("admin kubeconfig");
        crate::identity::client_from_kubeconfig(&kubeconfig)
            .await
            .expect("admin client")
    }

    /// Prints the components' log tails if the calling thread is panicking (a failing test):
    /// `let _report = cluster.report();` at the top of a test.
    pub fn report(&self) -> FailureReport<'_> {
        FailureReport(self)
    }

    /// The probe image's name (`tests/cluster/node/probe.c`: `probe serve PORT`,
    /// `probe get IP PORT [MS]`, `probe connect IP PORT [MS]`), imported at start.
    pub fn probe_image() -> String {
        pin("PROBE_IMAGE").unwrap_or_else(|| "localhost/citycloud/probe:1".into())
    }

    /// Stops everything: node components, control plane, namespaces and cgroups.
    fn shutdown(&self) {
        if let Ok(mut stop) = self.stop.lock() {
            drop(stop.take());
        }
        if let Ok(mut thread) = self.thread.lock()
            && let Some(t) = thread.take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for NodeCluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// See [`NodeCluster::report`].
pub struct FailureReport<'a>(&'a NodeCluster);

impl Drop for FailureReport<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed; cluster with a node in {}\n{}\n{}",
                self.0.cluster.dir.display(),
                self.0.cluster.log_tail(30),
                self.0.node.log_tail(30)
            );
        }
    }
}

/// A value of `tests/cluster/node/pins.env`.
fn pin(name: &str) -> Option<String> {
    let text = fs::read_to_string(repo_root().join("tests/cluster/node/pins.env")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(|v| v.trim().to_string())
}

fn netns_sh(args: &[&str]) -> Result<()> {
    let script = repo_root().join("tests/cluster/node/netns.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(&script))?;
    if !out.status.success() {
        return Err(Error::Build(format!(
            "netns.sh {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Lets the API server's kubelet client (see [`KUBELET_CLIENT_USER`]) use kubelets' API (logs,
/// exec, port-forward), which kubelets authorise by SubjectAccessReview.
fn grant_kubelet_api(cp: &ControlPlane) -> Result<()> {
    use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
    let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "citycloud-apiserver-kubelet-api"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "system:kubelet-api-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                      "name": KUBELET_CLIENT_USER}],
    }))
    .map_err(|e| Error::Build(e.to_string()))?;
    crate::controlplane::block_on_admin(cp, |client| async move {
        let api: kube::Api<ClusterRoleBinding> = kube::Api::all(client);
        api.patch(
            "citycloud-apiserver-kubelet-api",
            &kube::api::PatchParams::apply("citycloud-testbed").force(),
            &kube::api::Patch::Apply(&binding),
        )
        .await
    })
    .map(|_| ())
}

fn node_ready(cp: &ControlPlane) -> bool {
    crate::controlplane::block_on_admin(cp, |client| async move {
        kube::Api::<NodeObject>::all(client)
            .get_opt(NODE_NAME)
            .await
    })
    .ok()
    .flatten()
    .and_then(|n| n.status?.conditions)
    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The CoreDNS image's name: its version is pinned in `tests/cluster/coredns/go.mod` (and
/// build-node.sh names the image it packs the same way).
pub fn coredns_image() -> Result<String> {
    let path = repo_root().join("tests/cluster/coredns/go.mod");
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("require github.com/coredns/coredns v")
        })
        .map(|v| format!("localhost/citycloud/coredns:{}", v.trim()))
        .ok_or_else(|| Error::Build(format!("no coredns version in {}", path.display())))
}

/// `tests/cluster/node/coredns.yaml` with its image and Service address filled in.
fn dns_manifest() -> Result<String> {
    let path = repo_root().join("tests/cluster/node/coredns.yaml");
    let text = fs::read_to_string(&path).map_err(io_err(&path))?;
    Ok(text
        .replace("${COREDNS_IMAGE}", &coredns_image()?)
        .replace("${DNS_IP}", DNS_IP))
}

/// Server-side applies every document of a YAML manifest as the admin.
fn apply_manifest(cp: &ControlPlane, manifest: &str) -> Result<()> {
    let manifest = manifest.to_string();
    crate::controlplane::block_on_admin(cp, |client| async move {
        crate::operator::apply_yaml_documents(&client, &manifest, "citycloud-testbed")
            .await
            .map_err(|e| kube::Error::Service(e.into()))
    })
    .map(|_| ())
}

/// The CoreDNS Deployment has a Ready pod.
fn dns_ready(cp: &ControlPlane) -> bool {
    use k8s_openapi::api::apps::v1::Deployment;
    crate::controlplane::block_on_admin(cp, |client| async move {
        kube::Api::<Deployment>::namespaced(client, "kube-system")
            .get_opt("coredns")
            .await
    })
    .ok()
    .flatten()
    .and_then(|d| d.status?.ready_replicas)
    .is_some_and(|n| n >= 1)
}

fn cni_conflist() -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "citycloud",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// containerd 1.6 (config version 2). Its socket, root and state are the defaults, which are
/// private to the node: /run and /var/lib are the node's own.
fn containerd_config_text(cni_dir: &Path) -> String {
    let pause = pin("PAUSE_IMAGE").unwrap_or_default();
    format!(
        r#"version = 2
[grpc]
  address = "/run/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  # No CAP_SYS_RESOURCE here: runc could not lower oom_score_adj (-998 for sandboxes).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
"#,
        cni = cni_dir.display()
    )
}

fn kubelet_config_text(cgroup: &str, client_ca: &Path, serving: &(PathBuf, PathBuf)) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 is deprecated in kubelet 1.37 and refused unless this says otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
# Without CAP_SYS_RESOURCE kubelet may neither lower its oom_score_adj nor raise nofile.
oomScoreAdj: 0
maxOpenFiles: 20000
failSwapOn: false
# No registry to pull from again: never collect images.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The disk is the host's, shared: never evict or taint for it.
evictionHard:
  memory.available: "0%"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
tlsCertFile: {cert}
tlsPrivateKeyFile: {key}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
clusterDomain: cluster.local
clusterDNS: [{dns}]
"#,
        dns = DNS_IP,
        ca = client_ca.display(),
        cert = serving.0.display(),
        key = serving.1.display(),
    )
}

/// The run's name for [`crate::phase::mark`]: its directory's (`chart-1234`), the node's
/// directory being `<run>/node`.
fn run_name(dir: &Path) -> String {
    let run = if dir.ends_with("node") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    run.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(io_err(path))
}
