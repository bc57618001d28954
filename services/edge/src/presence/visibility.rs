//! The visibility policy: which viewer classes may see which users.
//!
//! Rooms are per tenant and per class of *seen* users: a socket joins the audience room of
//! every class its viewer class may see, and a change is emitted to the one audience room of
//! the changed user's class, never by looping over sockets. One room per change means the
//! Socket.io layer walks a single set of sockets, with nothing to de-duplicate (a union of
//! viewer-class rooms is de-duplicated socket by socket, on every change). The rule table is
//! configuration (`PRESENCE_VISIBILITY_RULES`), e.g. the default
//! `male=female;female=*;other=*`: `male` viewers see only `female` users, `female` and
//! `other` viewers see everyone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use presence_events::{TenantId, ViewerClass};

/// Which users a viewer class may see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sees {
    Everyone,
    Only(Vec<ViewerClass>),
}

/// The visibility rule table.
#[derive(Clone, PartialEq, Eq)]
pub struct VisibilityPolicy {
    rules: BTreeMap<ViewerClass, Sees>,
}

impl VisibilityPolicy {
    /// Parses `viewer=seen,seen;viewer=*;…`. Every class a user can have (`male`, `female`,
    /// `other`) needs a rule.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut rules = BTreeMap::new();
        for rule in raw.split(';').map(str::trim).filter(|r| !r.is_empty()) {
            let (viewer, seen) = rule.split_once('=').ok_or_else(|| {
                format!("rule {rule:?} is not of the form viewer=seen,seen or viewer=*")
            })?;
            let viewer =
                ViewerClass::parse(viewer.trim()).map_err(|e| format!("in {rule:?}: {e}"))?;
            let sees = if seen.trim() == "*" {
                Sees::Everyone
            } else {
                let classes = seen
                    .split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(ViewerClass::parse)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("in {rule:?}: {e}"))?;
                Sees::Only(classes)
            };
            if rules.insert(viewer.clone(), sees).is_some() {
                return Err(format!("class {viewer} has two rules"));
            }
        }
        for required in ["male", "female", "other"] {
            if !rules.keys().any(|k| k.as_str() == required) {
                return Err(format!("no rule for viewer class {required:?}"));
            }
        }
        Ok(Self { rules })
    }

    /// A policy under which every class sees everyone (service callers).
    pub fn everyone() -> Self {
        Self {
            rules: BTreeMap::new(),
        }
    }

    /// Whether a viewer of class `viewer` may see a user of class `target`.
    pub fn can_see(&self, viewer: &ViewerClass, target: &ViewerClass) -> bool {
        match self.rules.get(viewer) {
            Some(Sees::Only(classes)) => classes.contains(target),
            Some(Sees::Everyone) | None => true,
        }
    }

    /// Every class a user can have: the three of the `gender` claim and any the table names.
    fn classes(&self) -> BTreeSet<ViewerClass> {
        let mut classes: BTreeSet<ViewerClass> = ["male", "female", "other"]
            .into_iter()
            .map(|c| ViewerClass::from_gender(Some(c)))
            .collect();
        for (viewer, sees) in &self.rules {
            classes.insert(viewer.clone());
            if let Sees::Only(seen) = sees {
                classes.extend(seen.iter().cloned());
            }
        }
        classes
    }

    /// The audience rooms (within `tenant`) a socket of class `viewer` joins: one per class of
    /// users it may see.
    pub fn rooms_of_viewer(&self, tenant: &TenantId, viewer: &ViewerClass) -> Vec<String> {
        self.classes()
            .iter()
            .filter(|target| self.can_see(viewer, target))
            .map(|target| audience_room(tenant, target))
            .collect()
    }
}

/// The audience room of the users of class `target` in `tenant`: every socket allowed to see
/// them. A change of such a user is emitted to this room only.
pub fn audience_room(tenant: &TenantId, target: &ViewerClass) -> String {
    format!("{tenant}/sees-{target}")
}

/// The room of the batch sockets (`auth: {batch: true}`) allowed to see the users of
/// `audience`: their changes reach it in `presence-updates` frames, once per window.
pub fn batch_room(audience: &str) -> String {
    format!("{audience}/batch")
}

impl Default for VisibilityPolicy {
    fn default() -> Self {
        // The default table is a constant known to parse.
        Self::parse(DEFAULT_RULES).unwrap_or_else(|_| Self {
            rules: BTreeMap::new(),
        })
    }
}

/// The default rule table.
pub const DEFAULT_RULES: &str = "male=female;female=*;other=*";

impl fmt::Debug for VisibilityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rules: Vec<String> = self
            .rules
            .iter()
            .map(|(viewer, sees)| match sees {
                Sees::Everyone => format!("{viewer}=*"),
                Sees::Only(classes) => format!(
                    "{viewer}={}",
                    classes
                        .iter()
                        .map(ViewerClass::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            })
            .collect();
        write!(f, "{:?}", rules.join(";"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> ViewerClass {
        ViewerClass::parse(s).unwrap()
    }

    #[test]
    fn by_default_male_viewers_see_only_female_users() {
        let policy = VisibilityPolicy::default();
        let table: Vec<(&str, &str, bool)> = vec![
            ("male", "male", false),
            ("male", "female", true),
            ("male", "other", false),
            ("female", "male", true),
            ("female", "female", true),
            ("female", "other", true),
            ("other", "male", true),
            ("other", "female", true),
            ("other", "other", true),
        ];
        for (viewer, target, expected) in table {
            assert_eq!(
                policy.can_see(&class(viewer), &class(target)),
                expected,
                "{viewer} viewing {target}"
            );
        }
    }

    #[test]
    fn viewers_join_the_audience_of_every_class_they_may_see() {
        let policy = VisibilityPolicy::default();
        let tenant = TenantId::default_tenant();
        assert_eq!(
            policy.rooms_of_viewer(&tenant, &class("male")),
            ["default/sees-female"]
        );
        for viewer in ["female", "other"] {
            assert_eq!(
                policy.rooms_of_viewer(&tenant, &class(viewer)),
                [
                    "default/sees-female",
                    "default/sees-male",
                    "default/sees-other"
                ],
                "{viewer} viewers"
            );
        }
        // A change of a user goes to the one audience room of the user's class; a viewer is
        // in it exactly when the table lets it see that class.
        for viewer in ["male", "female", "other"] {
            for target in ["male", "female", "other"] {
                assert_eq!(
                    policy
                        .rooms_of_viewer(&tenant, &class(viewer))
                        .contains(&audience_room(&tenant, &class(target))),
                    policy.can_see(&class(viewer), &class(target)),
                    "{viewer} viewing {target}"
                );
            }
        }
    }

    #[test]
    fn classes_named_only_by_the_table_have_an_audience_too() {
        let policy = VisibilityPolicy::parse("male=vip;female=*;other=*;vip=vip").unwrap();
        let tenant = TenantId::default_tenant();
        assert_eq!(
            policy.rooms_of_viewer(&tenant, &class("male")),
            ["default/sees-vip"]
        );
        assert!(
            policy
                .rooms_of_viewer(&tenant, &class("female"))
                .contains(&"default/sees-vip".to_string())
        );
    }

    #[test]
    fn the_rule_table_is_configuration() {
        let policy = VisibilityPolicy::parse("male=*; female=male; other=other").unwrap();
        assert!(policy.can_see(&class("male"), &class("male")));
        assert!(!policy.can_see(&class("female"), &class("female")));
        assert_eq!(format!("{policy:?}"), "\"female=male;male=*;other=other\"");
    }

    #[test]
    fn malformed_tables_are_refused_with_the_reason() {
        assert!(
            VisibilityPolicy::parse("male")
                .unwrap_err()
                .contains("form")
        );
        assert!(
            VisibilityPolicy::parse("male=*;female=*")
                .unwrap_err()
                .contains("other")
        );
        assert!(
            VisibilityPolicy::parse("male=*;male=*;female=*;other=*")
                .unwrap_err()
                .contains("two rules")
        );
        assert!(VisibilityPolicy::parse("ma.le=*").is_err());
    }
}
