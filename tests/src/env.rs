//! What each integration test gets: the shared control plane, an admin client, unique names
//! and clients for any user. On a failing test, the components' logs are printed.
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use crate::binaries::{ensure_built, repo_root};
use crate::controlplane::{ControlPlane, Lifetime, Options};
use crate::identity::client_from_kubeconfig;

static SHARED: OnceLock<Result<Arc<ControlPlane>, String>> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);
static SETUP: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
static OPERATOR: OnceLock<crate::operator::RunningOperator> = OnceLock::new();
/// The kubeconfig of the operator's ServiceAccount (see [`TestEnv::with_operator`]).
static OPERATOR_KUBECONFIG: OnceLock<String> = OnceLock::new();
/// What [`prepare_operator`] installed: the API server's URL and the operator's kubeconfig.
static PREPARED: OnceLock<(String, String)> = OnceLock::new();

/// The control plane of this test run: the one `CITYCLOUD_CLUSTER` names, else one started
/// on first use and stopped when the test process exits.
pub fn shared_control_plane() -> Arc<ControlPlane> {
    let shared = SHARED.get_or_init(|| {
        if let Ok(dir) = std::env::var("CITYCLOUD_CLUSTER") {
            return ControlPlane::attach(&PathBuf::from(dir))
                .map(Arc::new)
                .map_err(|e| e.to_string());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        // The components are spawned from a thread that lives as long as the process:
        // PR_SET_PDEATHSIG fires when the spawning thread ends, so they die with the test
        // binary however it ends (success, panic, Ctrl-C) and never before.
        std::thread::spawn(move || {
            let started = start_for_tests();
            let keep = started.as_ref().ok().cloned();
            let _ = tx.send(started);
            let _keep = keep;
            loop {
                std::thread::park();
            }
        });
        rx.recv().map_err(|e| e.to_string()).and_then(|r| r)
    });
    match shared {
        Ok(cp) => cp.clone(),
        Err(e) => panic!("the local control plane could not start: {e}"),
    }
}

fn start_for_tests() -> Result<Arc<ControlPlane>, String> {
    let bin = ensure_built().map_err(|e| e.to_string())?;
    let root = repo_root().join("target/testbed");
    crate::controlplane::prune_old_runs(&root);
    let dir = root.join(format!("run-{}", std::process::id()));
    // The CRDs before kube-controller-manager: see `Options::crds`.
    let options = Options {
        crds: Some(repo_root().join("crds")),
        ..Options::default()
    };
    ControlPlane::start_with(&dir, &bin, Lifetime::Owned, &options)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// One test's view of the test bed.
pub struct TestEnv {
    pub cluster: Arc<ControlPlane>,
    pub admin: kube::Client,
    id: String,
    /// The operator's kubeconfig on a private control plane (see
    /// [`PrivateControlPlane::for_operators`]); `None`: the shared operator's.
    operator_kubeconfig: Option<String>,
}

impl TestEnv {
    pub async fn new() -> Self {
        let cluster = tokio::task::spawn_blocking(shared_control_plane)
            .await
            .expect("control plane start-up thread");
        TestEnv::on(cluster).await
    }

    /// A view of an existing `cluster` (e.g. a `NodeCluster`'s control plane) rather than the
    /// shared control plane.
    pub async fn on(cluster: Arc<ControlPlane>) -> Self {
        let kubeconfig =
            std::fs::read_to_string(cluster.admin_kubeconfig()).expect("admin kubeconfig");
        let admin = client_from_kubeconfig(&kubeconfig)
            .await
            .expect("admin client");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}{n}", std::process::id() % 4096);
        TestEnv {
            cluster,
            admin,
            id,
            operator_kubeconfig: None,
        }
    }

    /// The same, with the CRDs and admission policies installed and the operator running:
    /// one operator for the whole test run, acting as the chart's ServiceAccount with exactly
    /// the chart's RBAC, so every test also proves the chart grants enough (and the operator-only
    /// admission policies let it through).
    pub async fn with_operator() -> Self {
        TestEnv::with_operator_on(TestEnv::new().await).await
    }

    /// [`TestEnv::with_operator`] on the cluster of `env` (see [`TestEnv::on`]). The operator
    /// is one per test process: every test of a binary must use the same cluster.
    pub async fn with_operator_on(env: TestEnv) -> Self {
        SETUP
            .get_or_init(|| async {
                let kubeconfig = match PREPARED.get() {
                    Some((server, kubeconfig)) if *server == env.cluster.server => {
                        kubeconfig.clone()
                    }
                    _ => install_operator_prerequisites(&env.admin, &env.cluster)
                        .await
                        .unwrap_or_else(|e| panic!("{e}")),
                };
                crate::phase::mark("operator setup: CRDs, admission policies, identity applied");
                let _ = OPERATOR_KUBECONFIG.set(kubeconfig.clone());
                let _ = OPERATOR.set(crate::operator::RunningOperator::as_chart(kubeconfig, None));
            })
            .await;
        env
    }

    /// Installs on `cp`, ahead of the test that will ask for it, what [`TestEnv::with_operator_on`]
    /// needs before it starts the operator — the CRDs, the admission policies, the operator's
    /// identity — e.g. while a node starts (see `crate::node::Hooks`). Blocking: its own runtime.
    pub fn prepare_operator(cp: &ControlPlane) -> Result<(), String> {
        let kubeconfig = crate::controlplane::block_on_admin(cp, |admin| async move {
            install_operator_prerequisites(&admin, cp).await
        })
        .map_err(|e| e.to_string())?;
        let _ = PREPARED.set((cp.server.clone(), kubeconfig));
        Ok(())
    }

    // No second operator on the shared control plane: it would reconcile every other test's
    // objects too (re-issue their claims' tokens, rewrite their tenants) while they run. Tests
    // of restarts and of several operators run them on their own control plane
    // ([`PrivateControlPlane::for_operators`]).

    /// A client acting as the operator's ServiceAccount with exactly the chart's RBAC: what
    /// someone holding a stolen operator token could do.
    pub async fn operator_client(&self) -> kube::Client {
        let kubeconfig = match &self.operator_kubeconfig {
            Some(own) => own.clone(),
            None => operator_kubeconfig(),
        };
        client_from_kubeconfig(&kubeconfig)
            .await
            .expect("operator client")
    }

    /// Makes `namespace` a platform namespace the operator may keep Secrets in, as the
    /// chart's `providerNamespaces` value does.
    pub async fn provider_namespace(&self, namespace: &str) {
        crate::operator::grant_provider_namespace(&self.admin, &helm(), namespace)
            .await
            .unwrap_or_else(|e| panic!("granting the operator Secrets in {namespace}: {e:#}"));
    }

    /// The kubeconfig text of the cluster admin.
    pub fn admin_kubeconfig(&self) -> String {
        std::fs::read_to_string(self.cluster.admin_kubeconfig()).expect("admin kubeconfig")
    }

    /// A name unique to this test in this run: `<base>-<id>` (a DNS label).
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.id)
    }

    /// A client acting as `user` in `groups`, through a client certificate.
    pub async fn user(&self, user: &str, groups: &[&str]) -> kube::Client {
        let identity = self
            .cluster
            .identity(user, groups)
            .expect("minting a client certificate");
        identity.client(&self.cluster).await.expect("user client")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed; control plane in {}\n{}",
                self.cluster.dir.display(),
                self.cluster.log_tail(30)
            );
        }
    }
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics after `timeout` naming `what`
/// (see [`crate::poll::until`]). Integration tests wait for convergence this way; no test
/// asserts on elapsed time.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let every = std::time::Duration::from_millis(200);
    let found = crate::poll::until(timeout, every, || {
        let answer = probe();
        async move { answer.await.ok_or(()) }
    })
    .await;
    found.unwrap_or_else(|()| panic!("timed out after {timeout:?} waiting for {what}"))
}

/// The CRDs, the admission policies and the operator's identity (its kubeconfig returned):
/// independent of each other, so at once (helm renders off the runtime's thread).
async fn install_operator_prerequisites(
    admin: &kube::Client,
    cp: &ControlPlane,
) -> Result<String, String> {
    let helm = helm();
    let (crds, policies, identity) = tokio::join!(
        crate::operator::install_crds(admin),
        crate::operator::install_admission_policies(admin, &helm),
        crate::operator::install_operator_identity(admin, cp, &helm),
    );
    crds.map_err(|e| format!("installing the CRDs: {e}"))?;
    policies.map_err(|e| format!("installing the admission policies: {e}"))?;
    crate::operator::admission_policies_in_force(admin)
        .await
        .map_err(|e| format!("waiting for the admission policies: {e}"))?;
    identity.map_err(|e| format!("installing the operator's ServiceAccount and RBAC: {e}"))
}

fn operator_kubeconfig() -> String {
    OPERATOR_KUBECONFIG
        .get()
        .expect("TestEnv::with_operator first")
        .clone()
}

fn helm() -> PathBuf {
    ensure_built().expect("binaries").join("helm")
}

/// A control plane of one test's own, for what must not touch the shared one (installing the
/// chart's cluster-wide objects, then uninstalling it). Stopped when dropped.
pub struct PrivateControlPlane {
    pub cluster: Arc<ControlPlane>,
    pub admin: kube::Client,
    /// Set by [`PrivateControlPlane::prepare_operator`].
    operator_kubeconfig: OnceLock<String>,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PrivateControlPlane {
    pub async fn start(label: &str) -> Self {
        PrivateControlPlane::start_with(label, Options::default()).await
    }

    /// Installs what an operator needs here — the CRDs, the admission policies, the chart's
    /// ServiceAccount and RBAC — and returns that ServiceAccount's kubeconfig, to start
    /// operators with ([`crate::operator::RunningOperator::start_as`]).
    pub async fn prepare_operator(&self) -> String {
        let kubeconfig = install_operator_prerequisites(&self.admin, &self.cluster)
            .await
            .unwrap_or_else(|e| panic!("preparing the operator: {e}"));
        let _ = self.operator_kubeconfig.set(kubeconfig.clone());
        kubeconfig
    }

    /// A control plane of the test's own for tests that run operators of their own (restarts,
    /// several at once, leader election): their operators reconcile every object they see, so
    /// on the shared control plane they would act on other tests' objects mid-test. Set up as
    /// the shared one is (the CRDs served before kube-controller-manager starts, the admission
    /// policies, the chart's ServiceAccount and RBAC) but with no operator running: start them
    /// with [`PrivateControlPlane::operator`] and [`PrivateControlPlane::replica`]. With a
    /// [`TestEnv`] on it, whose [`TestEnv::operator_client`] acts here too.
    pub async fn for_operators(label: &str) -> (Self, TestEnv) {
        let options = Options {
            crds: Some(repo_root().join("crds")),
            ..Options::default()
        };
        let pcp = PrivateControlPlane::start_with(label, options).await;
        let kubeconfig = pcp.prepare_operator().await;
        let mut env = TestEnv::on(pcp.cluster.clone()).await;
        env.operator_kubeconfig = Some(kubeconfig);
        (pcp, env)
    }

    /// The kubeconfig of the chart's ServiceAccount here ([`PrivateControlPlane::prepare_operator`]
    /// first).
    pub fn operator_kubeconfig(&self) -> String {
        self.operator_kubeconfig
            .get()
            .expect("PrivateControlPlane::prepare_operator first")
            .clone()
    }

    /// An operator here, as the suite's runs (the chart's ServiceAccount and identity, no
    /// leader election). Stopped when dropped.
    pub fn operator(&self) -> crate::operator::RunningOperator {
        crate::operator::RunningOperator::as_chart(self.operator_kubeconfig(), None)
    }

    /// The same, taking part in leader election for `election`.
    pub fn replica(
        &self,
        election: citycloud::leader::LeaderElection,
    ) -> crate::operator::RunningOperator {
        crate::operator::RunningOperator::as_chart(self.operator_kubeconfig(), Some(election))
    }

    /// The same, with `options` (e.g. admission plugins left off).
    pub async fn start_with(label: &str, options: Options) -> Self {
        let dir = repo_root()
            .join("target/testbed")
            .join(format!("{label}-{}", std::process::id()));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        // As for the shared one: the spawning thread lives as long as the components.
        let thread = std::thread::spawn(move || {
            let started = ensure_built()
                .map_err(|e| e.to_string())
                .and_then(|bin| {
                    ControlPlane::start_with(&dir, &bin, Lifetime::Owned, &options)
                        .map_err(|e| e.to_string())
                })
                .map(Arc::new);
            let keep = started.as_ref().ok().cloned();
            let _ = tx.send(started);
            let _ = stopped.recv();
            drop(keep);
        });
        let cluster = tokio::task::spawn_blocking(move || rx.recv())
            .await
            .expect("start-up thread")
            .expect("start-up result")
            .unwrap_or_else(|e| panic!("a private control plane could not start: {e}"));
        let kubeconfig =
            std::fs::read_to_string(cluster.admin_kubeconfig()).expect("admin kubeconfig");
        let admin = client_from_kubeconfig(&kubeconfig)
            .await
            .expect("admin client");
        PrivateControlPlane {
            cluster,
            admin,
            operator_kubeconfig: OnceLock::new(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for PrivateControlPlane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed; private control plane in {}\n{}",
                self.cluster.dir.display(),
                self.cluster.log_tail(30)
            );
        }
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
