//! Starts and stops etcd, kube-apiserver and kube-controller-manager on loopback, with TLS,
//! RBAC, service-account token signing and the standard admission plugins.
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::identity::Identity;
use crate::phase::mark;
use crate::{Error, Result, io_err};

/// The user the admin kubeconfig authenticates as (group `system:masters`).
pub const ADMIN_USER: &str = "citycloud-admin";
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// kube-apiserver's admission plugins (it orders them itself). PodNodeSelector and
/// PodTolerationRestriction enforce a Tenant's nodePlacement (the namespace annotations
/// `scheduler.alpha.kubernetes.io/node-selector` and `.../tolerationsWhitelist`); they are
/// off by default in Kubernetes, so a real cluster must enable them too.
pub const ADMISSION_PLUGINS: &[&str] = &[
    "NamespaceLifecycle",
    "LimitRanger",
    "ServiceAccount",
    "ResourceQuota",
    "PodSecurity",
    "DefaultTolerationSeconds",
    "PodNodeSelector",
    "PodTolerationRestriction",
    "ValidatingAdmissionPolicy",
    "NodeRestriction",
];

/// How a control plane differs from the standard one.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Admission plugins of [`ADMISSION_PLUGINS`] left off (e.g. to show what the operator
    /// reports on a cluster that does not enforce nodePlacement).
    pub without_admission_plugins: Vec<String>,
    /// Run inside a test bed node's network namespace (see [`crate::node`]), with the flags a
    /// node needs; `None`: loopback only, no node.
    pub node: Option<NodeNetwork>,
    /// A folder of CustomResourceDefinition manifests applied, and served by discovery, before
    /// kube-controller-manager starts. Its resource quota controller discovers resources once at
    /// start and then only every 30 s (fixed in kube-controller-manager), and until it counts a
    /// custom resource a quota limits (`count/sharedserviceclaims.citycloud.io`), quota
    /// admission refuses that resource and the operator does not hand the namespace over.
    pub crds: Option<PathBuf>,
}

/// Where the control plane of a cluster with a node runs, and how the host reaches it.
#[derive(Clone, Debug)]
pub struct NodeNetwork {
    /// The node's network namespace (`/proc/<holder>/ns/net`).
    pub netns: PathBuf,
    /// The node's IP: the API server binds every address there and advertises this one, so the
    /// default endpoint reconciler gives `default/kubernetes` a real endpoint for pods.
    pub ip: String,
    /// A `testbed` executable to run the host relay as its own process (`testbed relay`), for
    /// a cluster that outlives this process; `None`: a thread of this process.
    pub relay_exe: Option<PathBuf>,
}

/// The client certificate the API server presents to kubelets (`logs`, `exec`, ...), in `pki/`.
/// Its user is bound to `system:kubelet-api-admin` once the API server is up (see
/// [`crate::node`]); kubelets check it by webhook (TokenReview + SubjectAccessReview).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// Whether the components die with this process (tests) or outlive it (`make cluster-up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// Children get SIGKILL when this process dies, however it dies (PR_SET_PDEATHSIG).
    Owned,
    /// Children run in their own session; `stop` finds them through `pids`.
    Detached,
}

/// A running local control plane and the folder that describes it: `pki/`, `logs/`,
/// `admin.kubeconfig`, `server` (the API server's URL) and `pids`.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub server: String,
    kube_bin: PathBuf,
    children: Mutex<Vec<Child>>,
    lifetime: Lifetime,
    /// The node's network namespace the components run in, if any.
    netns: Option<PathBuf>,
    relay: Mutex<Option<crate::relay::Relay>>,
}

impl ControlPlane {
    /// Starts a control plane in `dir` with the binaries of `bin_dir`, and waits until the API
    /// server is ready and the controller manager has created the `default` ServiceAccount.
    pub fn start(dir: &Path, bin_dir: &Path, lifetime: Lifetime) -> Result<Self> {
        ControlPlane::start_with(dir, bin_dir, lifetime, &Options::default())
    }

    /// The same, with `options`.
    pub fn start_with(
        dir: &Path,
        bin_dir: &Path,
        lifetime: Lifetime,
        options: &Options,
    ) -> Result<Self> {
        let kube_bin = bin_dir.join("kube");
        for sub in ["logs", "etcd"] {
            fs::create_dir_all(dir.join(sub)).map_err(io_err(dir))?;
        }
        let etcd_dir = dir.join("etcd");
        fs::set_permissions(&etcd_dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err(&etcd_dir))?;
        let pki = dir.join("pki");
        run_checked(Command::new(&kube_bin).arg("pki").arg("init").arg(&pki))?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let api_port = free_port()?;
        let server = format!("https://127.0.0.1:{api_port}");
        let cp = ControlPlane {
            dir: dir.to_path_buf(),
            server,
            kube_bin,
            children: Mutex::new(Vec::new()),
            lifetime,
            netns: options.node.as_ref().map(|n| n.netns.clone()),
            relay: Mutex::new(None),
        };
        if let Some(node) = &options.node
            && let Err(e) = cp.start_relay(node, api_port)
        {
            cp.stop();
            return Err(e);
        }
        if let Err(e) = cp.start_components(&pki, etcd_port, peer_port, api_port, options) {
            cp.stop();
            return Err(e);
        }
        if lifetime == Lifetime::Detached {
            // They outlive us from here on; `stop` finds them through `pids`.
            if let Ok(mut children) = cp.children.lock() {
                children.drain(..).for_each(std::mem::forget);
            }
        }
        Ok(cp)
    }

    /// The host's 127.0.0.1:`port` → the same inside the node's namespace (see [`crate::relay`]).
    fn start_relay(&self, node: &NodeNetwork, port: u16) -> Result<()> {
        match &node.relay_exe {
            None => {
                let relay = crate::relay::Relay::start(&node.netns, port)?;
                if let Ok(mut slot) = self.relay.lock() {
                    *slot = Some(relay);
                }
                Ok(())
            }
            Some(exe) => {
                let mut cmd = Command::new(exe);
                cmd.arg("relay")
                    .arg("--netns")
                    .arg(&node.netns)
                    .arg("--port")
                    .arg(port.to_string());
                // The relay itself stays on the host's side.
                self.spawn_cmd("relay", cmd, self.lifetime, false)?;
                // It binds the host port at start: wait until it answers.
                let start = Instant::now();
                while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err(Error::NotReady {
                            component: "relay".into(),
                            seconds: 10,
                            log: self.dir.join("logs/relay.log").display().to_string(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(())
            }
        }
    }

    fn start_components(
        &self,
        pki: &Path,
        etcd_port: u16,
        peer_port: u16,
        api_port: u16,
        options: &Options,
    ) -> Result<()> {
        let (cp, dir, lifetime) = (self, self.dir.as_path(), self.lifetime);

        let admin = cp.identity(ADMIN_USER, &["system:masters"])?;
        write(&dir.join("admin.kubeconfig"), &admin.kubeconfig(cp))?;
        let kcm = cp.identity("system:kube-controller-manager", &[])?;
        write(
            &dir.join("kube-controller-manager.kubeconfig"),
            &kcm.kubeconfig(cp),
        )?;
        write(&dir.join("server"), &cp.server)?;

        let p = |f: &str| pki.join(f).display().to_string();
        let mut node_flags: Vec<String> = vec![
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            // No kubelet or Service network here: the default endpoint reconciler refuses a
            // loopback advertise address.
            "--endpoint-reconciler-type=none".into(),
        ];
        if let Some(node) = &options.node {
            let kubelet_client = cp.identity(KUBELET_CLIENT_USER, &[])?;
            write(&pki.join("kubelet-client.crt"), &kubelet_client.cert_pem)?;
            write(&pki.join("kubelet-client.key"), &kubelet_client.key_pem)?;
            node_flags = vec![
                // Every address of the node's own namespace: loopback (kubelet, the relay) and
                // the node IP (pods, through the `kubernetes` Service).
                "--bind-address=0.0.0.0".into(),
                format!("--advertise-address={}", node.ip),
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-client-certificate={}", p("kubelet-client.crt")),
                format!("--kubelet-client-key={}", p("kubelet-client.key")),
                // Kubelets serve with certificates of the cluster CA (see crate::node).
                format!("--kubelet-certificate-authority={}", p("ca.crt")),
            ];
        }
        let plugins: Vec<&str> = ADMISSION_PLUGINS
            .iter()
            .copied()
            .filter(|p| !options.without_admission_plugins.iter().any(|w| w == p))
            .collect();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cp.spawn(
            "etcd",
            lifetime,
            &[
                "--name=citycloud".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=citycloud={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                // `make bench --scale` keeps some 20,000 namespaces' objects with their
                // history until the API server compacts: more than the 2 GiB default.
                "--quota-backend-bytes=8589934592".into(),
                "--log-level=warn".into(),
            ],
        )?;
        cp.spawn(
            "kube-apiserver",
            lifetime,
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                "--authorization-mode=Node,RBAC".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                format!("--service-account-issuer={}/", cp.server),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                format!("--enable-admission-plugins={}", plugins.join(",")),
                "--allow-privileged=true".into(),
                // CITYCLOUD_APISERVER_PROFILING=1 serves /debug/pprof (admins only) to find
                // where the API server's CPU goes under a bench.
                format!(
                    "--profiling={}",
                    std::env::var_os("CITYCLOUD_APISERVER_PROFILING").is_some_and(|v| v == "1")
                ),
                format!("--cert-dir={}", dir.join("apiserver-certs").display()),
            ]
            .into_iter()
            .chain(node_flags)
            .chain(audit_flags(dir)?)
            .collect::<Vec<_>>(),
        )?;
        cp.wait_ready("kube-apiserver", || cp.api_ready())?;
        mark(format!("{}: kube-apiserver ready", cp.run_name()));
        if let Some(crds) = &options.crds {
            cp.install_crds(crds)?;
            mark(format!("{}: CRDs served", cp.run_name()));
        }
        cp.spawn(
            "kube-controller-manager",
            lifetime,
            &[
                format!(
                    "--kubeconfig={}",
                    dir.join("kube-controller-manager.kubeconfig").display()
                ),
                format!("--service-account-private-key-file={}", p("sa.key")),
                format!("--root-ca-file={}", p("ca.crt")),
                "--use-service-account-credentials=true".into(),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--controllers=*".into(),
                // Quota status and pod counts must follow quickly in tests and the demo.
                "--resource-quota-sync-period=10s".into(),
                // Quota status is what lets a new namespace be handed over (the operator waits
                // for it): the defaults (20 requests/s for each controller's client, 5 quotas
                // synced at once) make kube-controller-manager the bottleneck when hundreds of
                // namespaces come at once, as in `make bench`; large clusters raise them too.
                "--kube-api-qps=200".into(),
                "--kube-api-burst=400".into(),
                "--concurrent-resource-quota-syncs=20".into(),
            ],
        )?;
        cp.wait_ready("kube-controller-manager", || {
            cp.default_service_account_exists()
        })?;
        mark(format!("{}: kube-controller-manager ready", cp.run_name()));
        Ok(())
    }

    /// This run's name for [`crate::phase::mark`] (its directory's).
    fn run_name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// Attaches to a control plane started elsewhere (e.g. by `make cluster-up`).
    pub fn attach(dir: &Path) -> Result<Self> {
        let server_file = dir.join("server");
        let server = fs::read_to_string(&server_file).map_err(io_err(&server_file))?;
        let kube_bin = crate::binaries::ensure_built()?.join("kube");
        Ok(ControlPlane {
            dir: dir.to_path_buf(),
            server: server.trim().to_string(),
            kube_bin,
            children: Mutex::new(Vec::new()),
            lifetime: Lifetime::Detached,
            netns: None,
            relay: Mutex::new(None),
        })
    }

    /// The process ids of the components: those this process started, and those listed in
    /// `pids` (a detached or attached control plane).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .children
            .lock()
            .map(|c| {
                c.iter()
                    .filter_map(|c| i32::try_from(c.id()).ok())
                    .collect()
            })
            .unwrap_or_default();
        pids.extend(
            fs::read_to_string(self.dir.join("pids"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok()),
        );
        pids
    }

    /// Stops the components this process started, and those listed in `pids`.
    pub fn stop(&self) {
        if let Ok(mut relay) = self.relay.lock() {
            drop(relay.take());
        }
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut().rev() {
                stop_child(child);
            }
            children.clear();
        }
        if let Ok(pids) = fs::read_to_string(self.dir.join("pids")) {
            for pid in pids
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .rev()
            {
                stop_pid(pid);
            }
            let _ = fs::remove_file(self.dir.join("pids"));
        }
    }

    /// Mints a client certificate for `user` in `groups`, signed by the cluster CA.
    pub fn identity(&self, user: &str, groups: &[&str]) -> Result<Identity> {
        let out = run_checked(
            Command::new(&self.kube_bin)
                .arg("pki")
                .arg("user")
                .arg(self.dir.join("pki"))
                .arg(user)
                .args(groups),
        )?;
        let pems: serde_json::Value = serde_json::from_slice(&out)
            .map_err(|e| Error::Pki(format!("kube pki user printed no JSON: {e}")))?;
        let field = |k: &str| {
            pems[k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::Pki(format!("no {k}")))
        };
        Ok(Identity {
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            cert_pem: field("cert")?,
            key_pem: field("key")?,
        })
    }

    /// Issues `pki/<name>.crt` and `.key`: a serving certificate for `host` and `ips`, signed by
    /// the cluster CA. Returns the two paths.
    pub fn serving_cert(&self, name: &str, host: &str, ips: &[&str]) -> Result<(PathBuf, PathBuf)> {
        let pki = self.dir.join("pki");
        run_checked(
            Command::new(&self.kube_bin)
                .arg("pki")
                .arg("serving")
                .arg(&pki)
                .arg(name)
                .arg(host)
                .args(ips),
        )?;
        Ok((
            pki.join(format!("{name}.crt")),
            pki.join(format!("{name}.key")),
        ))
    }

    /// The cluster CA certificate (PEM), which also signs the API server's serving certificate.
    pub fn ca_pem(&self) -> Result<String> {
        let path = self.dir.join("pki/ca.crt");
        fs::read_to_string(&path).map_err(io_err(&path))
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// The last `lines` lines of each component's log, for a failing test's report.
    pub fn log_tail(&self, lines: usize) -> String {
        let components = ["etcd", "kube-apiserver", "kube-controller-manager"];
        let logs = components
            .iter()
            .map(|c| self.dir.join("logs").join(format!("{c}.log")));
        tail_of(logs.chain([crate::operator::log_path()]), lines)
    }

    fn spawn(&self, component: &str, lifetime: Lifetime, args: &[String]) -> Result<()> {
        let mut cmd = Command::new(&self.kube_bin);
        cmd.arg(component).args(args);
        self.spawn_cmd(component, cmd, lifetime, true)
    }

    /// Starts `cmd` logging to `logs/<component>.log`, inside the node's network namespace if
    /// there is one and `in_netns`.
    fn spawn_cmd(
        &self,
        component: &str,
        mut cmd: Command,
        lifetime: Lifetime,
        in_netns: bool,
    ) -> Result<()> {
        let log_path = self.dir.join("logs").join(format!("{component}.log"));
        let log = fs::File::create(&log_path).map_err(io_err(&log_path))?;
        let err_log = log.try_clone().map_err(io_err(&log_path))?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(err_log);
        let netns = match (&self.netns, in_netns) {
            (Some(path), true) => Some(fs::File::open(path).map_err(io_err(path))?),
            _ => None,
        };
        let netns_fd = netns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        set_lifetime(&mut cmd, lifetime, netns_fd);
        let child = cmd.spawn().map_err(io_err(&self.kube_bin))?;
        drop(netns);
        let pid = child.id();
        if lifetime == Lifetime::Detached {
            let pids = self.dir.join("pids");
            let mut text = fs::read_to_string(&pids).unwrap_or_default();
            text.push_str(&format!("{pid}\n"));
            write(&pids, &text)?;
        }
        if let Ok(mut children) = self.children.lock() {
            children.push(child);
        }
        Ok(())
    }

    fn wait_ready(&self, component: &str, probe: impl Fn() -> bool) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < READY_TIMEOUT {
            if probe() {
                return Ok(());
            }
            if self.exited(component) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
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

    fn exited(&self, _component: &str) -> bool {
        match self.children.lock() {
            Ok(mut children) => children
                .iter_mut()
                .any(|c| matches!(c.try_wait(), Ok(Some(_)))),
            Err(_) => false,
        }
    }

    fn api_ready(&self) -> bool {
        block_on_admin(self, |client| async move {
            let req = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(kube::Error::HttpError)?;
            client.request_text(req).await
        })
        .map(|body| body.trim() == "ok")
        .unwrap_or(false)
    }

    /// Applies the CRDs of `dir` (see [`Options::crds`]) and waits until aggregated discovery,
    /// which kube-controller-manager reads, lists every one of them.
    fn install_crds(&self, dir: &Path) -> Result<()> {
        let dir = dir.to_path_buf();
        let wanted = block_on_admin(self, |client| async move {
            crate::operator::apply_crds(&client, &dir)
                .await
                .map_err(|e| kube::Error::Service(e.into()))
        })?;
        let discovered = || {
            block_on_admin(self, |client| async move {
                let req = http::Request::get("/apis")
                    .header(
                        http::header::ACCEPT,
                        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                    )
                    .body(Vec::new())
                    .map_err(kube::Error::HttpError)?;
                client.request_text(req).await
            })
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .is_some_and(|list| wanted.iter().all(|crd| served(&list, crd)))
        };
        self.wait_ready("kube-apiserver", discovered)
    }

    fn default_service_account_exists(&self) -> bool {
        block_on_admin(self, |client| async move {
            let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
                kube::Api::namespaced(client, "default");
            sas.get_opt("default").await
        })
        .map(|sa| sa.is_some())
        .unwrap_or(false)
    }
}

/// Whether the aggregated discovery document `list` (APIGroupDiscoveryList) lists every served
/// version of `crd`.
fn served(
    list: &serde_json::Value,
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> bool {
    let Some(group) = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["metadata"]["name"] == crd.spec.group.as_str())
    else {
        return false;
    };
    crd.spec.versions.iter().filter(|v| v.served).all(|v| {
        group["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|gv| gv["version"] == v.name.as_str())
            .flat_map(|gv| gv["resources"].as_array().into_iter().flatten())
            .any(|r| r["resource"] == crd.spec.names.plural.as_str())
    })
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Ok(mut children) = self.children.lock() {
            for child in children.iter_mut().rev() {
                stop_child(child);
            }
        }
    }
}

/// Makes the child of `cmd` die with this process (Owned) or outlive it in its own session
/// (Detached), and enter the network namespace `netns_fd` if given.
#[allow(unsafe_code)] // libc: process group, death signal, session, netns between fork and exec
pub(crate) fn set_lifetime(cmd: &mut Command, lifetime: Lifetime, netns_fd: Option<i32>) {
    // SAFETY: only async-signal-safe libc calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            match lifetime {
                Lifetime::Owned => {
                    libc::setpgid(0, 0);
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                }
                Lifetime::Detached => {
                    libc::setsid();
                }
            }
            if let Some(fd) = netns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `f` with an admin client on a throwaway runtime (start-up code is synchronous).
pub fn block_on_admin<T, E, F, Fut>(cp: &ControlPlane, f: F) -> Result<T>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<Error>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io {
            path: "tokio runtime".into(),
            source: e,
        })?;
    rt.block_on(async {
        let kubeconfig = std::fs::read_to_string(cp.admin_kubeconfig())
            .map_err(io_err(&cp.admin_kubeconfig()))?;
        let client = crate::identity::client_from_kubeconfig(&kubeconfig).await?;
        f(client).await.map_err(Into::into)
    })
}

#[allow(unsafe_code)] // libc: kill(2) of the process groups the test bed started
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process (group) this test bed started.
    unsafe {
        libc::kill(-pid, sig);
        libc::kill(pid, sig);
    }
}

/// SIGTERM, up to 10 s to exit, then SIGKILL: a child of this process, reaped here.
pub(crate) fn stop_child(child: &mut Child) {
    signal(child.id() as i32, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(child.id() as i32, libc::SIGKILL);
    let _ = child.wait();
}

/// The same for a detached component started by an earlier process.
pub(crate) fn stop_pid(pid: i32) {
    signal(pid, libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && alive(pid) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        signal(pid, libc::SIGKILL);
    }
}

/// Whether `pid` still runs: an exited process not reaped yet (a zombie, which its new parent
/// reaps in its own time) counts as gone.
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold spaces.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(io_err(Path::new("127.0.0.1:0")))?;
    let port = l
        .local_addr()
        .map_err(io_err(Path::new("127.0.0.1:0")))?
        .port();
    Ok(port)
}

fn run_checked(cmd: &mut Command) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .map_err(|e| Error::Pki(format!("running {cmd:?}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Pki(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(out.stdout)
}

/// Whether CITYCLOUD_APISERVER_AUDIT=1 asks for the API server's audit log (see `audit_flags`).
pub fn audit_log_enabled() -> bool {
    std::env::var_os("CITYCLOUD_APISERVER_AUDIT").is_some_and(|v| v == "1")
}

/// CITYCLOUD_APISERVER_AUDIT=1 writes every request's metadata (who, what, when, to the
/// microsecond) to `audit.log` in the run's directory: a per-object timeline of a bench, at the
/// cost of some API server CPU, so off unless asked for.
fn audit_flags(dir: &Path) -> Result<Vec<String>> {
    if !audit_log_enabled() {
        return Ok(Vec::new());
    }
    let policy = dir.join("audit-policy.yaml");
    write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
    )?;
    Ok(vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", dir.join("audit.log").display()),
        // Each request's line written before it is answered: the log is complete when read.
        "--audit-log-mode=blocking".into(),
        "--audit-log-maxsize=0".into(),
    ])
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(io_err(path))
}

/// Keeps the logs of the last few control-plane runs under `root` (target/testbed,
/// target/bench), drops their etcd data.
pub fn prune_old_runs(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    // This process's own control planes (`<label>-<pid>`) may be starting right now, in
    // parallel tests: their etcd data is not ours to remove.
    let own = format!("-{}", std::process::id());
    let mut runs: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&own))
        })
        .collect();
    runs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let n = runs.len();
    for (i, run) in runs.into_iter().enumerate() {
        let _ = std::fs::remove_dir_all(run.join("etcd"));
        if i + 3 < n {
            let _ = std::fs::remove_dir_all(&run);
        }
    }
}

/// The last `lines` lines of each file, each under a heading naming it (missing files: empty).
pub(crate) fn tail_of(paths: impl IntoIterator<Item = std::path::PathBuf>, lines: usize) -> String {
    let mut out = String::new();
    for path in paths {
        let text = fs::read_to_string(&path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        out.push_str(&format!(
            "---- {} (last {lines} lines) ----\n",
            path.display()
        ));
        for l in &all[all.len().saturating_sub(lines)..] {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}
