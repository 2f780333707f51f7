//! Adding a finalizer, against the real API server: a stale view of the object is a race to
//! look at again in a moment; a refusal by admission is an error the operator reports (logged,
//! retried with backoff), never a silent 250 ms loop.
use std::sync::Arc;

use citycloud::finalizers::{STALE_VIEW_RETRY, is_stale_view, outcome};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Error as FinalizerError, Event, finalizer};
use serde_json::json;
use testbed::fixtures::CONVERGE;
use testbed::{TestEnv, eventually};

const FINALIZER: &str = "citycloud.io/test-finalizer";

/// The reconcile never fails here: the operator's own error type, as `outcome` takes.
type Never = citycloud::Error;

/// One pass of kube-runtime's finalizer helper on `obj` as the reconcile saw it.
async fn add_finalizer(
    api: &Api<ConfigMap>,
    obj: ConfigMap,
) -> Result<Action, FinalizerError<Never>> {
    finalizer(api, FINALIZER, Arc::new(obj), |_: Event<ConfigMap>| async {
        Ok::<_, Never>(Action::await_change())
    })
    .await
}

async fn configmap(api: &Api<ConfigMap>, name: &str) -> ConfigMap {
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm");
    api.create(&PostParams::default(), &cm)
        .await
        .expect("create the ConfigMap")
}

async fn namespace(env: &TestEnv, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    Api::<Namespace>::all(env.admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the namespace");
}

/// Lets the namespace go: takes the finalizers off what the test left.
async fn release(api: &Api<ConfigMap>, name: &str) {
    let _ = api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await;
}

#[tokio::test]
async fn a_stale_view_when_adding_a_finalizer_is_looked_at_again_soon() {
    let env = TestEnv::new().await;
    let ns = env.name("fin-stale");
    namespace(&env, &ns).await;
    let api = Api::<ConfigMap>::namespaced(env.admin.clone(), &ns);
    let stale = configmap(&api, "obj").await;
    // Someone else (another trigger of the same reconcile, another controller) adds a
    // finalizer after this view was taken.
    api.patch(
        "obj",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/other"]}})),
    )
    .await
    .expect("the other finalizer");

    let result = add_finalizer(&api, stale).await;
    let Err(FinalizerError::AddFinalizer(kube::Error::Api(status))) = &result else {
        panic!("the stale view must fail the patch's test: {result:?}");
    };
    println!("stale view: {status:?}");
    assert!(is_stale_view(status), "classified as the race: {status:?}");
    assert_eq!(
        outcome(result).ok(),
        Some(Action::requeue(STALE_VIEW_RETRY))
    );
    release(&api, "obj").await;
}

#[tokio::test]
async fn an_admission_refusal_when_adding_a_finalizer_is_an_error_naming_the_policy() {
    let env = TestEnv::new().await;
    let ns = env.name("fin-refused");
    namespace(&env, &ns).await;
    let policy = env.name("no-test-finalizer");
    let vap: ValidatingAdmissionPolicy = serde_json::from_value(json!({
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                "operations": ["UPDATE"], "resources": ["configmaps"]}]},
            "validations": [{
                "expression": format!("!has(object.metadata.finalizers) || !object.metadata.finalizers.exists(f, f == '{FINALIZER}')"),
                "message": "the test finalizer is not allowed here"}]
        }
    }))
    .expect("policy");
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}}
    }))
    .expect("binding");
    let vaps = Api::<ValidatingAdmissionPolicy>::all(env.admin.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(env.admin.clone());
    vaps.create(&PostParams::default(), &vap)
        .await
        .expect("create the policy");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("create the binding");
    let api = Api::<ConfigMap>::namespaced(env.admin.clone(), &ns);

    // The API server enforces a new policy once its informer has it: try fresh objects until
    // one is refused (an accepted one is the policy not yet loaded, not the race).
    let mut attempt = 0;
    let status = eventually("the policy refuses the finalizer", CONVERGE, || {
        attempt += 1;
        let (api, name) = (api.clone(), format!("obj-{attempt}"));
        async move {
            let fresh = configmap(&api, &name).await;
            match add_finalizer(&api, fresh).await {
                Err(FinalizerError::AddFinalizer(kube::Error::Api(s))) => Some(s),
                _ => {
                    release(&api, &name).await;
                    None
                }
            }
        }
    })
    .await;
    println!(
        "refusal: {} {} {:?}",
        status.code, status.reason, status.message
    );
    assert!(
        !is_stale_view(&status),
        "a refusal is not the race: {status:?}"
    );
    let err = outcome(Err(FinalizerError::AddFinalizer(kube::Error::Api(
        status.clone(),
    ))))
    .expect_err("a refusal is an error");
    assert_eq!(err.metric_label(), "finalizer_refused");
    let text = err.to_string();
    assert!(
        text.contains(&policy) && text.contains("the test finalizer is not allowed here"),
        "names the policy and its message: {text}"
    );

    bindings
        .delete(&policy, &DeleteParams::default())
        .await
        .expect("delete the binding");
    vaps.delete(&policy, &DeleteParams::default())
        .await
        .expect("delete the policy");
}
