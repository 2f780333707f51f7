//! Building blocks of the CRD schemas that the derive macros cannot express alone: the CEL
//! rules (`x-kubernetes-validations`) shared by several kinds, and hand-written schema
//! fragments for maps of quantities.
//!
//! Every rule here is written for the API server's CEL cost estimator: it only runs over
//! strings with a `maxLength` and lists with a `maxItems`, so the estimate stays far below
//! the per-rule limit.

use kube::core::{Message, Reason, Rule};
use schemars::{Schema, SchemaGenerator, json_schema};

/// A DNS-1123 label: what Kubernetes requires of a namespace name, and so of a tenant name
/// and an environment name, which together make one.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A DNS-1123 subdomain: what Kubernetes requires of most object names (Secrets,
/// cluster-scoped objects such as QuotaProfiles and SharedServices).
pub const DNS_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A DNS-1035 label: what Kubernetes requires of a Service name.
pub const DNS_1035_LABEL: &str = "^[a-z]([-a-z0-9]*[a-z0-9])?$";

/// A non-negative `resource.Quantity` in its string form ("4", "500m", "8Gi", "1e3"), the
/// pattern Kubernetes' own code generators emit for quantities, without the minus sign:
/// neither a ResourceQuota nor a LimitRange accepts a negative amount.
pub const QUANTITY_PATTERN: &str = "^\\+?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\\+|-)?(([0-9]+(\\.[0-9]*)?)|(\\.[0-9]+))))?$";

/// Most resource names a quota or a limit range map may hold.
pub const MAX_RESOURCES: u32 = 64;

/// `pattern` as the body of a single-quoted CEL string literal.
fn cel_string(pattern: &str) -> String {
    pattern.replace('\\', "\\\\").replace('\'', "\\'")
}

/// A rule that the string it sits on matches `pattern`, failing with `message`.
fn matches(pattern: &str, message: String) -> Rule {
    Rule::new(format!("self.matches('{}')", cel_string(pattern))).message(Message::Message(message))
}

/// A rule that the string it sits on is a DNS-1123 label; `what` names the field for the
/// person reading the error, e.g. "environment name".
pub fn dns_label(what: &str) -> Rule {
    matches(
        DNS_LABEL,
        format!(
            "{what} must be a DNS label: lowercase letters, digits and '-', \
             starting and ending with a letter or digit"
        ),
    )
}

/// A rule that the string it sits on is a DNS-1123 subdomain (a valid object name).
pub fn dns_subdomain(what: &str) -> Rule {
    matches(
        DNS_SUBDOMAIN,
        format!(
            "{what} must be a valid object name: lowercase letters, digits, '-' and '.', \
             starting and ending with a letter or digit"
        ),
    )
}

/// A rule that the string it sits on is a DNS-1035 label (a valid Service name).
pub fn dns_1035_label(what: &str) -> Rule {
    matches(
        DNS_1035_LABEL,
        format!(
            "{what} must be a valid Service name: lowercase letters, digits and '-', \
             starting with a letter and ending with a letter or digit"
        ),
    )
}

/// A rule that the string it sits on has at least one character that is not white space.
pub fn not_blank(what: &str) -> Rule {
    matches("\\S", format!("{what} must not be blank")).reason(Reason::FieldValueRequired)
}

/// A rule that every entry of a list of objects with a `name` has a name of its own.
///
/// (Without a `reason`: with `FieldValueDuplicate` the API server drops the message.)
pub fn unique_names(what: &str) -> Rule {
    Rule::new("self.all(x, self.exists_one(y, y.name == x.name))")
        .message(Message::Message(format!("{what} must have unique names")))
}

/// Schema of a map from a resource name (`requests.cpu`, `pods`, `memory`) to a
/// non-negative quantity, written like a ResourceQuota's `hard`. Values may be strings or
/// integers, as in Kubernetes' own types; the pattern checks the strings.
pub fn quantity_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_RESOURCES,
        "additionalProperties": {
            "x-kubernetes-int-or-string": true,
            "pattern": QUANTITY_PATTERN,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // CEL unescapes `\\` to `\` inside a string literal, and rejects `\.` or `\S`: every
    // backslash of a regex must reach the CRD doubled.

    #[test]
    fn not_blank_escapes_the_backslash_for_cel() {
        assert_eq!(not_blank("x").rule, r"self.matches('\\S')");
    }

    #[test]
    fn subdomain_rule_escapes_the_dot_for_cel() {
        assert_eq!(
            dns_subdomain("x").rule,
            r"self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')"
        );
    }
}
