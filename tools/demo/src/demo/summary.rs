//! What `make demo` prints at the end: each agency with its namespaces, readiness, quota use
//! against its budget and bound services; the service catalogue; then how to explore.
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use citycloud::api::conditions::find;
use citycloud::api::{SharedService, SharedServiceClaim, SubjectKind, Tenant};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

/// The resources the summary shows first, when a tenant's status.usage has them.
const SHOWN_RESOURCES: [&str; 4] = [
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "pods",
];

/// The CityCloud objects, read once.
pub struct Snapshot {
    pub tenants: Vec<Tenant>,
    pub claims: Vec<SharedServiceClaim>,
    pub services: Vec<SharedService>,
}

impl Snapshot {
    pub async fn read(client: &kube::Client) -> anyhow::Result<Snapshot> {
        let lp = ListParams::default();
        Ok(Snapshot {
            tenants: Api::<Tenant>::all(client.clone()).list(&lp).await?.items,
            claims: Api::<SharedServiceClaim>::all(client.clone())
                .list(&lp)
                .await?
                .items,
            services: Api::<SharedService>::all(client.clone())
                .list(&lp)
                .await?
                .items,
        })
    }

    /// The tenants that are not Ready (for the current generation), with why.
    pub fn not_ready(&self) -> Vec<(String, String)> {
        self.tenants
            .iter()
            .filter_map(|t| {
                let (ok, why) = readiness(t);
                (!ok).then(|| (t.name_any(), why))
            })
            .collect()
    }

    /// Where the statuses that summarise claims still disagree with the claims: a tenant's
    /// `status.boundServices`, a SharedService's `status.claims`. Empty once settled.
    pub fn unsettled(&self) -> Vec<String> {
        let bound: Vec<&SharedServiceClaim> =
            self.claims.iter().filter(|c| claim_bound(c)).collect();
        let mut out = Vec::new();
        for t in &self.tenants {
            let namespaces = t.namespaces();
            let want: BTreeSet<&str> = bound
                .iter()
                .filter(|c| c.namespace().is_some_and(|ns| namespaces.contains(&ns)))
                .map(|c| c.spec.service.as_str())
                .collect();
            let status = t.status.clone().unwrap_or_default();
            let have: BTreeSet<&str> = status.bound_services.iter().map(String::as_str).collect();
            if want != have {
                out.push(format!(
                    "Tenant {} lists boundServices {have:?}, its bound claims are of {want:?}",
                    t.name_any()
                ));
            }
        }
        for s in &self.services {
            let want = bound
                .iter()
                .filter(|c| c.spec.service == s.name_any())
                .count();
            let have = s.status.as_ref().map(|st| st.claims).unwrap_or_default();
            if usize::try_from(have).ok() != Some(want) {
                out.push(format!(
                    "SharedService {} counts {have} bound claim(s), {want} are bound",
                    s.name_any()
                ));
            }
        }
        out
    }

    /// Tenants in hierarchy order (parents before children, siblings by name), with depth.
    fn tree(&self) -> Vec<(&Tenant, usize)> {
        let names: BTreeSet<String> = self.tenants.iter().map(|t| t.name_any()).collect();
        let mut children: BTreeMap<Option<String>, Vec<&Tenant>> = BTreeMap::new();
        for t in &self.tenants {
            // A tenant whose parent is missing is shown as a root.
            let parent = t.spec.parent.clone().filter(|p| names.contains(p));
            children.entry(parent).or_default().push(t);
        }
        for list in children.values_mut() {
            list.sort_by_key(|t| t.name_any());
        }
        let mut roots = children.get(&None).cloned().unwrap_or_default();
        // Roots with a hierarchy below them first: the city before stand-alone agencies.
        roots.sort_by_key(|t| (!children.contains_key(&Some(t.name_any())), t.name_any()));
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(&Tenant, usize)> = roots.into_iter().rev().map(|t| (t, 0)).collect();
        while let Some((t, depth)) = stack.pop() {
            if !seen.insert(t.name_any()) {
                continue;
            }
            out.push((t, depth));
            if let Some(kids) = children.get(&Some(t.name_any())) {
                stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
            }
        }
        // Tenants in a parent cycle are reachable from no root: list them at the end.
        for t in &self.tenants {
            if !seen.contains(&t.name_any()) {
                out.push((t, 0));
            }
        }
        out
    }
}

/// Whether a tenant is Ready for its current spec, and the condition in words.
fn readiness(t: &Tenant) -> (bool, String) {
    let Some(status) = &t.status else {
        return (
            false,
            "no status yet: the operator has not reconciled it".into(),
        );
    };
    let current = status.observed_generation >= t.metadata.generation;
    match find(&status.conditions, "Ready") {
        Some(c) if c.status == "True" && current => (true, format!("Ready ({})", c.reason)),
        Some(c) if c.status == "True" => (
            false,
            format!(
                "Ready ({}) for an older generation: the latest change is not reconciled yet",
                c.reason
            ),
        ),
        Some(c) => (false, format!("not Ready, {}: {}", c.reason, c.message)),
        None => (false, "no Ready condition yet".into()),
    }
}

/// Where things are, for the closing "explore" section.
pub struct Explore {
    /// The API server's URL.
    pub server: String,
    /// The admin kubeconfig, as a path to print.
    pub kubeconfig: String,
    /// The control plane's folder, as `CLUSTER_DIR` for `make kubeconfig`.
    pub cluster_dir: String,
    /// The demo's folder.
    pub demo_dir: String,
    pub operator_log: String,
    pub cluster_logs: String,
    /// The operator's pid and /metrics address, when it runs.
    pub operator: Option<(i32, String)>,
    /// With a node (`make demo NODE=1`): the operator's pod, installed by the chart.
    pub operator_pod: Option<super::node::OperatorPod>,
    /// The file holding a token that may read /metrics.
    pub metrics_token: String,
}

pub fn render(snap: &Snapshot, ex: &Explore) -> String {
    let mut out = String::new();
    let ready = snap.tenants.len() - snap.not_ready().len();
    let _ = writeln!(
        out,
        "\nCityCloud demo: {} agencies on a local control plane ({})",
        snap.tenants.len(),
        ex.server
    );
    match (&ex.operator_pod, &ex.operator) {
        (Some(pod), _) => {
            let _ = writeln!(
                out,
                "Operator: pod {ns}/{} {} on node {} (image {}, installed by the chart)\n  \
                 metrics: kubectl -n {ns} port-forward deploy/{release} 8080 &\n  \
                 curl -H \"Authorization: Bearer $(cat {})\" http://127.0.0.1:8080/metrics",
                pod.name,
                if pod.ready { "Ready" } else { "NOT Ready" },
                pod.node,
                pod.image,
                ex.metrics_token,
                ns = testbed::operator::RELEASE_NAMESPACE,
                release = testbed::operator::RELEASE,
            );
        }
        (None, Some((pid, addr))) => {
            let _ = writeln!(
                out,
                "Operator: running (pid {pid}), metrics at http://{addr}/metrics for a reader's token:\n  \
                 curl -H \"Authorization: Bearer $(cat {})\" http://{addr}/metrics",
                ex.metrics_token
            );
        }
        (None, None) => {
            let _ = writeln!(out, "Operator: NOT running (see {})", ex.operator_log);
        }
    }

    let _ = writeln!(
        out,
        "\nAgencies — {ready} of {} tenants Ready",
        snap.tenants.len()
    );
    let tree = snap.tree();
    for (i, (t, depth)) in tree.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {}{} ({})",
            branch(&tree, i),
            t.spec.display_name,
            t.name_any()
        );
        let _ = depth;
    }

    for (t, _) in &tree {
        render_tenant(&mut out, snap, t);
    }

    render_services(&mut out, snap);
    render_explore(&mut out, snap, ex);
    out
}

/// The tree-drawing prefix of entry `i` of a depth-first list.
fn branch(tree: &[(&Tenant, usize)], i: usize) -> String {
    let depth = tree[i].1;
    if depth == 0 {
        return String::new();
    }
    // Whether another entry at `level` follows before the list climbs above `level`.
    let continues = |level: usize| {
        tree[i + 1..]
            .iter()
            .take_while(|(_, d)| *d >= level)
            .any(|(_, d)| *d == level)
    };
    let mut prefix = String::new();
    for level in 1..depth {
        prefix.push_str(if continues(level) { "│  " } else { "   " });
    }
    prefix.push_str(if continues(depth) {
        "├─ "
    } else {
        "└─ "
    });
    prefix
}

fn render_tenant(out: &mut String, snap: &Snapshot, t: &Tenant) {
    let name = t.name_any();
    let status = t.status.clone().unwrap_or_default();
    let _ = writeln!(out, "\n{}", t.spec.display_name);

    let mut facts = vec![format!("tenant {name}")];
    if let Some(p) = &t.spec.parent {
        facts.push(format!("under {p}"));
    }
    let overrides: Vec<String> = t
        .environments()
        .iter()
        .filter_map(|e| Some(format!("{}: {}", e.name, e.quota_profile.as_ref()?)))
        .collect();
    if overrides.is_empty() {
        facts.push(format!("profile {}", t.spec.quota_profile));
    } else {
        facts.push(format!(
            "profile {} ({})",
            t.spec.quota_profile,
            overrides.join(", ")
        ));
    }
    if let Some(code) = &t.spec.agency_code {
        facts.push(format!("agency code {code}"));
    }
    let _ = writeln!(out, "  {:<11} {}", "agency", facts.join(" · "));

    let (ok, why) = readiness(t);
    let _ = writeln!(
        out,
        "  {:<11} {} {why}",
        "readiness",
        if ok { "✓" } else { "✗" }
    );

    let namespaces = if status.namespaces.is_empty() {
        t.namespaces()
    } else {
        status.namespaces.clone()
    };
    let _ = writeln!(out, "  {:<11} {}", "namespaces", namespaces.join(", "));

    let mut shown: Vec<String> = SHOWN_RESOURCES
        .iter()
        .filter_map(|r| {
            let u = status.usage.get(*r)?;
            Some(format!("{r} {} of {}", u.used.0, u.hard.0))
        })
        .collect();
    if shown.is_empty() {
        shown = status
            .usage
            .iter()
            .take(4)
            .map(|(r, u)| format!("{r} {} of {}", u.used.0, u.hard.0))
            .collect();
    }
    let quota = if shown.is_empty() {
        "not reported yet (status.usage is empty)".to_string()
    } else {
        shown.join(" · ")
    };
    let _ = writeln!(out, "  {:<11} {quota}", "quota used");

    let claims: Vec<&SharedServiceClaim> = snap
        .claims
        .iter()
        .filter(|c| c.namespace().is_some_and(|ns| namespaces.contains(&ns)))
        .collect();
    let bound_by_claims: BTreeSet<&str> = claims
        .iter()
        .filter(|c| claim_bound(c))
        .map(|c| c.spec.service.as_str())
        .collect();
    let services = if !status.bound_services.is_empty() {
        status.bound_services.join(", ")
    } else if bound_by_claims.is_empty() {
        "none".to_string()
    } else {
        format!(
            "{} (bound claims below; status.boundServices does not list them yet)",
            bound_by_claims
                .iter()
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let _ = writeln!(out, "  {:<11} {services}", "services");

    let width = claims
        .iter()
        .map(|c| claim_ref(c).chars().count())
        .max()
        .unwrap_or(0);
    for (i, c) in claims.iter().enumerate() {
        let label = if i == 0 { "claims" } else { "" };
        let _ = writeln!(
            out,
            "  {label:<11} {:<width$}  {}",
            claim_ref(c),
            claim_state(c)
        );
    }
}

fn claim_ref(c: &SharedServiceClaim) -> String {
    format!(
        "{}/{} → {}",
        c.namespace().unwrap_or_default(),
        c.name_any(),
        c.spec.service
    )
}

fn claim_bound(c: &SharedServiceClaim) -> bool {
    c.status
        .as_ref()
        .and_then(|s| find(&s.conditions, "Bound"))
        .is_some_and(|b| b.status == "True")
}

fn claim_state(c: &SharedServiceClaim) -> String {
    let status = c.status.clone().unwrap_or_default();
    match find(&status.conditions, "Bound") {
        Some(b) if b.status == "True" => {
            let secret = status
                .binding
                .map(|b| b.name)
                .unwrap_or_else(|| c.secret_name());
            format!("✓ Bound, Secret {secret}")
        }
        Some(b) => format!("✗ not bound, {}: {}", b.reason, b.message),
        None => "… no Bound condition yet (not reconciled)".to_string(),
    }
}

fn render_services(out: &mut String, snap: &Snapshot) {
    if snap.services.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nShared services (the catalogue agencies claim from)");
    let mut services: Vec<&SharedService> = snap.services.iter().collect();
    services.sort_by_key(|s| s.name_any());
    let width = services
        .iter()
        .map(|s| s.name_any().chars().count())
        .max()
        .unwrap_or(0);
    for s in services {
        let status = s.status.clone().unwrap_or_default();
        let endpoint = match find(&status.conditions, "EndpointReady") {
            Some(c) if c.status == "True" => "endpoint ready".to_string(),
            Some(c) => format!("endpoint NOT ready ({})", c.reason),
            None => "endpoint not checked yet".to_string(),
        };
        let e = &s.spec.endpoint;
        let _ = writeln!(
            out,
            "  {:<width$}  {}\n  {:<width$}  {:?}, {}/{}:{}, {endpoint}, {} claim(s) bound",
            s.name_any(),
            s.spec.display_name,
            "",
            s.spec.category,
            e.namespace,
            e.service,
            e.port,
            status.claims,
        );
    }
}

fn render_explore(out: &mut String, snap: &Snapshot, ex: &Explore) {
    // An owner group of the first tenant with two environments (sotttt in the samples), and
    // a namespace of another tenant, for the "can and cannot" example.
    let own = snap
        .tenants
        .iter()
        .find(|t| t.name_any() == "sotttt")
        .or_else(|| snap.tenants.first());
    let (tenant, group, own_ns) = match own {
        Some(t) => (
            t.name_any(),
            t.spec
                .owners
                .iter()
                .find(|s| s.kind == SubjectKind::Group)
                .map(|s| s.name.clone())
                .unwrap_or_else(|| format!("{}-admins", t.name_any())),
            t.namespaces().first().cloned().unwrap_or_default(),
        ),
        None => (
            "sotttt".into(),
            "sotttt-admins".into(),
            "sotttt-prod".into(),
        ),
    };
    let other_ns = snap
        .tenants
        .iter()
        .find(|t| t.name_any() == "congan-hp")
        .or_else(|| snap.tenants.iter().find(|t| t.name_any() != tenant))
        .and_then(|t| t.namespaces().first().cloned())
        .unwrap_or_else(|| "congan-hp-prod".into());
    let user_kc = format!("{}/an.kubeconfig", ex.demo_dir);

    let kc = &ex.kubeconfig;
    let as_user = format!("kubectl --kubeconfig {user_kc}");
    let sections: [(String, Vec<(String, &str)>); 2] = [
        (
            "Explore it (everything keeps running):".to_string(),
            vec![
                (format!("export KUBECONFIG={kc}"), ""),
                (
                    "kubectl get tenants -o wide".into(),
                    "agencies: display name, profile, namespaces, Ready",
                ),
                (
                    format!("kubectl get tnt {tenant} -o yaml"),
                    "status: conditions, namespaces, usage, boundServices",
                ),
                (
                    "kubectl get qp,ssvc".into(),
                    "quota profiles and the service catalogue",
                ),
                (
                    "kubectl get ssc -A".into(),
                    "who claimed which service; bound, or why not",
                ),
                (
                    format!("kubectl -n {own_ns} get quota,limits,rolebindings,netpol"),
                    "what a Tenant becomes",
                ),
            ],
        ),
        (
            format!(
                "Act as an agency user (a client certificate for user \"an\" in group \"{group}\"):"
            ),
            vec![
                (
                    format!(
                        "make kubeconfig CLUSTER_DIR={} AS_USER=an AS_GROUPS={group} > {user_kc}",
                        ex.cluster_dir
                    ),
                    "",
                ),
                (
                    format!("{as_user} get pods -n {own_ns}"),
                    "allowed: its own namespace",
                ),
                (
                    format!("{as_user} get tenant {tenant}"),
                    "allowed: its own Tenant",
                ),
                (
                    format!("{as_user} -n {own_ns} get ssc"),
                    "allowed: its claims (it may create them too)",
                ),
                (
                    format!("{as_user} get pods -n {other_ns}"),
                    "Forbidden: another agency's namespace",
                ),
                (
                    format!("{as_user} -n {own_ns} delete rolebinding citycloud-owners"),
                    "denied by an admission policy",
                ),
            ],
        ),
    ];
    for (title, commands) in sections {
        let _ = writeln!(out, "\n{title}");
        let width = commands
            .iter()
            .filter(|(_, note)| !note.is_empty())
            .map(|(c, _)| c.chars().count())
            .filter(|w| *w <= 70)
            .max()
            .unwrap_or(0);
        for (command, note) in commands {
            if note.is_empty() {
                let _ = writeln!(out, "  {command}");
            } else {
                let _ = writeln!(out, "  {command:<width$}   # {note}");
            }
        }
    }
    let _ = writeln!(
        out,
        "\nLogs: operator {}; control plane {}/\nAgain, later: make demo{} (refreshes it)   Stop everything: make demo-down",
        ex.operator_log,
        ex.cluster_logs,
        if ex.operator_pod.is_some() {
            " NODE=1"
        } else {
            ""
        }
    );
}
