//! The visibility policy: which viewer classes may see which users.
//!
//! Every socket sits in the room of its viewer class (per tenant); a change is emitted to the
//! rooms of the classes allowed to see the user, never by looping over sockets. The rule
//! table is configuration (`PRESENCE_VISIBILITY_RULES`), e.g. the default
//! `male=female;female=*;other=*`: `male` viewers see only `female` users, `female` and
//! `other` viewers see everyone.

use std::collections::BTreeMap;
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

    /// The rooms (one per allowed viewer class, within `tenant`) a change of a `target` user goes to.
    pub fn rooms_seeing(&self, tenant: &TenantId, target: &ViewerClass) -> Vec<String> {
        self.rules
            .keys()
            .filter(|viewer| self.can_see(viewer, target))
            .map(|viewer| viewer_room(tenant, viewer))
            .collect()
    }
}

/// The room of the viewers of one class in one tenant.
pub fn viewer_room(tenant: &TenantId, viewer: &ViewerClass) -> String {
    format!("{tenant}/viewer-{viewer}")
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
    fn changes_go_only_to_the_rooms_allowed_to_see_them() {
        let policy = VisibilityPolicy::default();
        let tenant = TenantId::default_tenant();
        assert_eq!(
            policy.rooms_seeing(&tenant, &class("male")),
            ["default/viewer-female", "default/viewer-other"]
        );
        assert_eq!(
            policy.rooms_seeing(&tenant, &class("female")),
            [
                "default/viewer-female",
                "default/viewer-male",
                "default/viewer-other"
            ]
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
