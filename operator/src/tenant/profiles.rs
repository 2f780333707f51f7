//! Which QuotaProfile watch events are news for the tenants using the profile: a changed spec
//! (a new generation) or the profile's removal. Not a status rewrite: the QuotaProfile
//! controller rewrites the tenant count as tenants come and go, and taking that for news
//! reconciled every tenant of the profile each time.
//!
//! Judged from the watch events themselves, not from the reflector's store: during the first
//! list the store is still empty (it is filled at once when the list ends), so a profile
//! would look unknown there, and its first status rewrite afterwards new.
use std::collections::{BTreeSet, HashMap};

use kube::ResourceExt;
use kube::runtime::watcher::Event;

use crate::api::QuotaProfile;

#[derive(Debug, Default)]
pub struct ProfileNews {
    /// The generation each profile was last seen at.
    generations: HashMap<String, Option<i64>>,
    /// While the watch lists (at the start, and again after a lost watch): the profiles
    /// listed so far.
    listing: Option<BTreeSet<String>>,
    /// Whether the first list is done. Its profiles are no news: every tenant is reconciled
    /// at the start anyway.
    listed: bool,
}

impl ProfileNews {
    /// The names of the profiles whose tenants `event` concerns.
    pub fn news(&mut self, event: &Event<QuotaProfile>) -> Vec<String> {
        match event {
            Event::Init => {
                self.listing = Some(BTreeSet::new());
                Vec::new()
            }
            Event::InitApply(p) => {
                if let Some(listing) = &mut self.listing {
                    listing.insert(p.name_any());
                }
                let changed = self.seen(p);
                if self.listed && changed {
                    vec![p.name_any()]
                } else {
                    Vec::new()
                }
            }
            Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                // Deleted while the watch was lost: no Delete event comes for those.
                let gone: Vec<String> = self
                    .generations
                    .keys()
                    .filter(|name| !listed.contains(*name))
                    .cloned()
                    .collect();
                for name in &gone {
                    self.generations.remove(name);
                }
                let first = !self.listed;
                self.listed = true;
                if first { Vec::new() } else { gone }
            }
            Event::Apply(p) => {
                if self.seen(p) {
                    vec![p.name_any()]
                } else {
                    Vec::new()
                }
            }
            Event::Delete(p) => {
                self.generations.remove(&p.name_any());
                vec![p.name_any()]
            }
        }
    }

    /// Remembers `p`'s generation; whether it differs from the one seen before (or none was).
    fn seen(&mut self, p: &QuotaProfile) -> bool {
        let generation = p.metadata.generation;
        self.generations.insert(p.name_any(), generation) != Some(generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(name: &str, generation: i64, tenants: i64) -> QuotaProfile {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "citycloud.io/v1alpha1",
            "kind": "QuotaProfile",
            "metadata": {"name": name, "generation": generation},
            "spec": {},
            "status": {"tenants": tenants},
        }))
        .expect("a QuotaProfile")
    }

    fn listed(news: &mut ProfileNews, profiles: &[QuotaProfile]) -> Vec<String> {
        let mut out = news.news(&Event::Init);
        for p in profiles {
            out.extend(news.news(&Event::InitApply(p.clone())));
        }
        out.extend(news.news(&Event::InitDone));
        out
    }

    #[test]
    fn a_status_rewrite_after_the_first_list_is_no_news() {
        let mut news = ProfileNews::default();
        assert!(listed(&mut news, &[profile("medium", 1, 10)]).is_empty());
        // The tenant count goes up: the same spec.
        assert!(
            news.news(&Event::Apply(profile("medium", 1, 11)))
                .is_empty()
        );
        assert_eq!(
            news.news(&Event::Apply(profile("medium", 2, 11))),
            vec!["medium"],
            "a spec change is news"
        );
        assert_eq!(
            news.news(&Event::Apply(profile("small", 1, 0))),
            vec!["small"],
            "so is a new profile"
        );
        assert_eq!(
            news.news(&Event::Delete(profile("small", 1, 0))),
            vec!["small"]
        );
    }

    #[test]
    fn a_relist_brings_what_changed_or_went_while_the_watch_was_lost() {
        let mut news = ProfileNews::default();
        listed(
            &mut news,
            &[profile("a", 1, 0), profile("b", 1, 0), profile("c", 1, 0)],
        );
        let mut again = listed(&mut news, &[profile("a", 1, 5), profile("b", 3, 0)]);
        again.sort();
        assert_eq!(
            again,
            vec!["b", "c"],
            "b changed, c was deleted; a only counted"
        );
        assert!(
            news.news(&Event::Apply(profile("c", 1, 0)))
                .contains(&"c".to_string())
        );
    }
}
