//! Who a Tenant's owners, members and viewers are: the RBAC subjects its RoleBindings name.

use k8s_openapi::api::rbac::v1 as rbac;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The API group of RBAC's User and Group subjects.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// A user, a group or a service account that is granted rights over a tenant's namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[x_kube(
    validation = Rule::new("self.kind != 'ServiceAccount' || has(self.__namespace__)")
        .message(Message::Message("namespace is required when kind is ServiceAccount".into()))
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.kind == 'ServiceAccount' || !has(self.__namespace__)")
        .message(Message::Message("namespace is only allowed when kind is ServiceAccount; users and groups are not namespaced".into()))
        .reason(Reason::FieldValueForbidden)
)]
pub struct Subject {
    /// User, Group or ServiceAccount.
    pub kind: SubjectKind,
    /// The user or group name as the cluster's authenticator reports it, or the service
    /// account's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The service account's namespace; required for, and only for, a ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = crate::validation::dns_label("namespace"))]
    pub namespace: Option<String>,
}

/// The kind of a [`Subject`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
#[allow(
    missing_docs,
    reason = "schemars would turn documented variants into a oneOf in the CRD; the fields of this type say what each value means"
)]
pub enum SubjectKind {
    User,
    Group,
    ServiceAccount,
}

impl SubjectKind {
    /// The name Kubernetes uses for this kind of subject.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::User => "User",
            SubjectKind::Group => "Group",
            SubjectKind::ServiceAccount => "ServiceAccount",
        }
    }
}

impl Subject {
    /// A user, by name.
    pub fn user(name: impl Into<String>) -> Self {
        Self {
            kind: SubjectKind::User,
            name: name.into(),
            namespace: None,
        }
    }

    /// A group, by name.
    pub fn group(name: impl Into<String>) -> Self {
        Self {
            kind: SubjectKind::Group,
            name: name.into(),
            namespace: None,
        }
    }

    /// A service account, by namespace and name.
    pub fn service_account(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind: SubjectKind::ServiceAccount,
            name: name.into(),
            namespace: Some(namespace.into()),
        }
    }

    /// This subject as a RoleBinding or ClusterRoleBinding names it: users and groups in the
    /// `rbac.authorization.k8s.io` API group without a namespace, service accounts in the
    /// core group with theirs.
    pub fn to_rbac_subject(&self) -> rbac::Subject {
        match self.kind {
            SubjectKind::User | SubjectKind::Group => rbac::Subject {
                api_group: Some(RBAC_GROUP.to_owned()),
                kind: self.kind.as_str().to_owned(),
                name: self.name.clone(),
                namespace: None,
            },
            SubjectKind::ServiceAccount => rbac::Subject {
                api_group: None,
                kind: self.kind.as_str().to_owned(),
                name: self.name.clone(),
                namespace: self.namespace.clone(),
            },
        }
    }
}

impl From<&Subject> for rbac::Subject {
    fn from(subject: &Subject) -> Self {
        subject.to_rbac_subject()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_users_bind_in_the_rbac_group_without_namespace() {
        let subject = Subject::group("sotttt-admins").to_rbac_subject();
        assert_eq!(
            subject.api_group.as_deref(),
            Some("rbac.authorization.k8s.io")
        );
        assert_eq!(subject.kind, "Group");
        assert_eq!(subject.name, "sotttt-admins");
        assert_eq!(subject.namespace, None);
        assert_eq!(Subject::user("alice").to_rbac_subject().kind, "User");
    }

    #[test]
    fn service_accounts_bind_in_the_core_group_with_their_namespace() {
        let subject = Subject::service_account("ci", "deployer").to_rbac_subject();
        assert_eq!(subject.api_group, None);
        assert_eq!(subject.kind, "ServiceAccount");
        assert_eq!(subject.namespace.as_deref(), Some("ci"));
    }

    #[test]
    fn reads_the_yaml_of_the_design() {
        let subject: Subject =
            serde_yaml_ng::from_str("{kind: ServiceAccount, name: deployer, namespace: ci}")
                .expect("valid subject");
        assert_eq!(subject, Subject::service_account("ci", "deployer"));
    }
}
