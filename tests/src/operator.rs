//! The operator, run in-process against the test bed: CRDs and admission policies installed
//! first, then `citycloud::run::run` on a runtime of its own, as `citycloud-operator run` would.
use std::sync::Arc;
use std::thread::JoinHandle;

use citycloud::context::Shared;
use k8s_apiextensions::CustomResourceDefinition;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as k8s_apiextensions;
use kube::api::{Api, Patch, PatchParams};

use crate::binaries::repo_root;

/// A running operator; dropping it shuts it down gracefully and waits.
pub struct RunningOperator {
    pub shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl RunningOperator {
    /// Starts an operator acting with `kubeconfig` (text).
    pub fn start(kubeconfig: String) -> RunningOperator {
        RunningOperator::start_as(kubeconfig, None)
    }

    /// Starts an operator that knows it runs as `identity` (as the chart's Deployment does).
    pub fn start_as(
        kubeconfig: String,
        identity: Option<citycloud::context::OperatorIdentity>,
    ) -> RunningOperator {
        RunningOperator::start_with(kubeconfig, options(identity, None))
    }

    /// Starts an operator as the chart's Deployment runs it ([`chart_identity`]), taking part
    /// in leader election for `election` when one is given.
    pub fn as_chart(
        kubeconfig: String,
        election: Option<citycloud::leader::LeaderElection>,
    ) -> RunningOperator {
        RunningOperator::start_with(kubeconfig, options(Some(chart_identity()), election))
    }

    /// Starts an operator with these options.
    pub fn start_with(kubeconfig: String, options: citycloud::run::Options) -> RunningOperator {
        init_logs();
        let shared = Arc::new(Shared::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let for_thread = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = crate::identity::client_from_kubeconfig(&kubeconfig)
                    .await
                    .expect("operator client");
                let shutdown = async move {
                    let _ = stopped.await;
                };
                if let Err(e) = citycloud::run::run(client, options, for_thread, shutdown).await {
                    eprintln!("operator stopped with an error: {e:#}");
                }
            });
        });
        RunningOperator {
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Whether it reconciles now (holds the leader lease, or runs without leader election).
    pub fn leading(&self) -> bool {
        self.shared.metrics.leader.get() == 1
    }

    /// Successful reconciles so far by `controller`.
    pub fn reconciles(&self, controller: &'static str) -> u64 {
        self.shared
            .metrics
            .reconciles
            .get_or_create(&citycloud::metrics::ReconcileLabels {
                controller,
                result: "success",
                error: "",
            })
            .get()
    }

    /// Objects written so far by `controller`.
    pub fn writes(&self, controller: &'static str) -> u64 {
        self.shared
            .metrics
            .writes
            .get_or_create(&citycloud::metrics::ControllerLabel { controller })
            .get()
    }
}

impl Drop for RunningOperator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the test bed's operators run with: no HTTP endpoints, 8 reconciles at once.
fn options(
    identity: Option<citycloud::context::OperatorIdentity>,
    leader_election: Option<citycloud::leader::LeaderElection>,
) -> citycloud::run::Options {
    citycloud::run::Options {
        listen: None,
        concurrency: 8,
        identity,
        leader_election,
        ..Default::default()
    }
}

/// Where the in-process operators of this test process log.
pub fn log_path() -> std::path::PathBuf {
    repo_root().join(format!(
        "target/testbed/operator-{}.log",
        std::process::id()
    ))
}

fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = std::fs::create_dir_all(repo_root().join("target/testbed"));
        if let Ok(file) = std::fs::File::create(log_path()) {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init();
        }
    });
}

/// Applies the repository's CRDs and waits until the API server serves them.
pub async fn install_crds(admin: &kube::Client) -> anyhow::Result<()> {
    let api = Api::<CustomResourceDefinition>::all(admin.clone());
    let names: Vec<String> = apply_crds(admin, &repo_root().join("crds"))
        .await?
        .into_iter()
        .filter_map(|crd| crd.metadata.name)
        .collect();
    for name in names {
        crate::eventually(
            &format!("CRD {name} established"),
            std::time::Duration::from_secs(60),
            || async {
                let crd = api.get(&name).await.ok()?;
                crd.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            },
        )
        .await;
    }
    Ok(())
}

/// Server-side applies every CustomResourceDefinition of `dir` (`*.yaml`, one each) and returns
/// them as read.
pub async fn apply_crds(
    admin: &kube::Client,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let api = Api::<CustomResourceDefinition>::all(admin.clone());
    let mut crds = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let crd: CustomResourceDefinition =
                serde_yaml_ng::from_str(&std::fs::read_to_string(&path)?)?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::apply("citycloud-tests").force(),
                &Patch::Apply(&crd),
            )
            .await?;
            crds.push(crd);
        }
    }
    Ok(crds)
}

/// The release every test installs the chart's parts as.
pub const RELEASE: &str = "citycloud-operator";
/// The namespace of that release (where the operator's ServiceAccount lives).
pub const RELEASE_NAMESPACE: &str = "citycloud-system";

/// Applies the chart's ValidatingAdmissionPolicies (rendered by helm) as they ship.
pub async fn install_admission_policies(
    admin: &kube::Client,
    helm: &std::path::Path,
) -> anyhow::Result<()> {
    // helm runs off the runtime's thread: the caller may do other things meanwhile.
    let helm = helm.to_path_buf();
    let text = tokio::task::spawn_blocking(move || render_admission_policies(&helm)).await??;
    apply_yaml_documents(admin, &text, "citycloud-tests").await?;
    Ok(())
}

/// Waits until the API server enforces the chart's admission policies (it loads them a moment
/// after they are created): until a new Tenant, created as a dry run, comes back with the
/// cleanup finalizer the chart's mutating policy adds. The CRDs must be installed.
pub async fn admission_policies_in_force(admin: &kube::Client) -> anyhow::Result<()> {
    let probe = crate::builders::TenantBuilder::new("citycloud-policy-probe", "none").object();
    let api = Api::<citycloud::api::Tenant>::all(admin.clone());
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let created = api.create(&dry_run, &probe).await?;
        if created
            .metadata
            .finalizers
            .unwrap_or_default()
            .iter()
            .any(|f| f == citycloud::api::finalizers::TENANT)
        {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the chart's admission policies were not in force after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The chart's cluster-wide rules for agencies — `templates/admission-policies*.yaml` and
/// `templates/agency-roles.yaml` (claims aggregated into admin/edit/view) — rendered by `helm
/// template` with the chart's default values, as the release [`RELEASE`] in [`RELEASE_NAMESPACE`].
pub fn render_admission_policies(helm: &std::path::Path) -> anyhow::Result<String> {
    // Every guard-rail template: admission-policies*.yaml (one file per topic).
    let mut templates: Vec<String> =
        std::fs::read_dir(repo_root().join("charts/citycloud-operator/templates"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("admission-policies") && n.ends_with(".yaml"))
            .map(|n| format!("templates/{n}"))
            .collect();
    templates.sort();
    templates.push("templates/agency-roles.yaml".into());
    let templates: Vec<&str> = templates.iter().map(String::as_str).collect();
    render_chart(helm, &templates, &[])
}

/// Some templates of the chart, rendered by `helm template` as the release [`RELEASE`] in
/// [`RELEASE_NAMESPACE`], with `--set-json` values (`key=<JSON>`).
pub fn render_chart(
    helm: &std::path::Path,
    templates: &[&str],
    sets: &[String],
) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new(helm);
    cmd.args(["template", RELEASE])
        .arg(repo_root().join("charts/citycloud-operator"))
        .args(["--namespace", RELEASE_NAMESPACE, "--kube-version", "1.37.2"]);
    for t in templates {
        cmd.args(["--show-only", t]);
    }
    for s in sets {
        cmd.args(["--set-json", s]);
    }
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("running {}: {e}", helm.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The identity the chart's Deployment gives the operator.
pub fn chart_identity() -> citycloud::context::OperatorIdentity {
    citycloud::context::OperatorIdentity {
        namespace: RELEASE_NAMESPACE.into(),
        service_account: RELEASE.into(),
        secrets_cluster_role: format!("{RELEASE}-secrets"),
    }
}

/// Installs what the chart grants the operator — its ServiceAccount, its ClusterRole and
/// binding, the Secrets ClusterRole — and returns a kubeconfig acting as that ServiceAccount
/// (a TokenRequest token), so the operator under test holds exactly the chart's permissions.
pub async fn install_operator_identity(
    admin: &kube::Client,
    cluster: &crate::controlplane::ControlPlane,
    helm: &std::path::Path,
) -> anyhow::Result<String> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;

    let namespace =
        format!("{{apiVersion: v1, kind: Namespace, metadata: {{name: {RELEASE_NAMESPACE}}}}}");
    apply_yaml_documents(admin, &namespace, "citycloud-tests").await?;
    let helm = helm.to_path_buf();
    let rbac = tokio::task::spawn_blocking(move || {
        render_chart(
            &helm,
            &[
                "templates/serviceaccount.yaml",
                "templates/clusterrole.yaml",
                "templates/clusterrole-secrets.yaml",
                "templates/role-leases.yaml",
            ],
            // Each test grants its own platform namespaces (see `grant_provider_namespace`).
            &["providerNamespaces=[]".to_string()],
        )
    })
    .await??;
    apply_yaml_documents(admin, &rbac, "citycloud-tests").await?;
    let request: TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"expirationSeconds": 86400}}))?;
    let token = Api::<ServiceAccount>::namespaced(admin.clone(), RELEASE_NAMESPACE)
        .create_token_request(RELEASE, &kube::api::PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or_else(|| anyhow::anyhow!("TokenRequest returned no token"))?;
    Ok(crate::identity::token_kubeconfig(cluster, RELEASE, &token))
}

/// Grants the operator Secrets access in a platform namespace, as the chart's
/// `providerNamespaces` value does.
pub async fn grant_provider_namespace(
    admin: &kube::Client,
    helm: &std::path::Path,
    namespace: &str,
) -> anyhow::Result<()> {
    let text = render_chart(
        helm,
        &["templates/clusterrole-secrets.yaml"],
        &[format!("providerNamespaces=[\"{namespace}\"]")],
    )?;
    apply_yaml_documents(admin, &text, "citycloud-tests").await?;
    Ok(())
}

/// Server-side applies every object of a multi-document YAML text, in order, under
/// `field_manager` (forcing conflicts), as `kubectl apply --server-side --force-conflicts`
/// would: kinds are resolved through discovery, so any built-in or installed custom kind
/// works; a namespaced object without a namespace goes to `default`. Returns the objects
/// applied, as `kind/name` or `kind namespace/name`.
pub async fn apply_yaml_documents(
    client: &kube::Client,
    text: &str,
    field_manager: &str,
) -> anyhow::Result<Vec<String>> {
    use kube::api::DynamicObject;
    use kube::discovery::Scope;

    let discovery = kube::Discovery::new(client.clone()).run().await?;
    let params = PatchParams::apply(field_manager).force();
    let mut applied = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let obj: Option<DynamicObject> = serde::Deserialize::deserialize(doc)?;
        let Some(obj) = obj else { continue };
        let gvk = obj
            .types
            .as_ref()
            .map(kube::core::GroupVersionKind::try_from)
            .transpose()?
            .ok_or_else(|| anyhow::anyhow!("object without apiVersion/kind"))?;
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| anyhow::anyhow!("the API server does not serve {gvk:?}"))?;
        let name = obj
            .metadata
            .name
            .clone()
            .ok_or_else(|| anyhow::anyhow!("a {} without metadata.name", gvk.kind))?;
        let (api, what) = match caps.scope {
            Scope::Cluster => (
                Api::<DynamicObject>::all_with(client.clone(), &resource),
                format!("{}/{name}", gvk.kind),
            ),
            Scope::Namespaced => {
                let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
                (
                    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
                    format!("{} {ns}/{name}", gvk.kind),
                )
            }
        };
        api.patch(&name, &params, &Patch::Apply(&obj))
            .await
            .map_err(|e| anyhow::anyhow!("applying {what}: {e}"))?;
        applied.push(what);
    }
    Ok(applied)
}
