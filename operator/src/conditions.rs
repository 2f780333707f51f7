//! Status conditions as the API conventions want them: `lastTransitionTime` moves only when
//! the status flips, and each carries the generation it was computed from.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition before it is stamped with times and generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Cond {
    pub fn ok(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Cond {
            type_,
            ok: true,
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn fail(type_: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Cond {
            type_,
            ok: false,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Turns `desired` into conditions, keeping `lastTransitionTime` of `previous` where the
/// status did not change.
pub fn stamp(
    previous: &[Condition],
    desired: &[Cond],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = if d.ok { "True" } else { "False" }.to_string();
            let last = previous
                .iter()
                .find(|p| p.type_ == d.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time: last,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1_000).expect("valid"));
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2_000).expect("valid"));
        let first = stamp(
            &[],
            &[Cond::ok("Ready", "Provisioned", "all good")],
            Some(1),
            &t0,
        );
        let same = stamp(
            &first,
            &[Cond::ok("Ready", "Provisioned", "still good")],
            Some(2),
            &t1,
        );
        assert_eq!(same[0].last_transition_time, t0);
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = stamp(
            &same,
            &[Cond::fail("Ready", "QuotaProfileNotFound", "missing")],
            Some(3),
            &t1,
        );
        assert_eq!(flipped[0].last_transition_time, t1);
    }
}
