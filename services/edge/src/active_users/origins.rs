//! Which web origins may call the active-users endpoints for a customer
//! (`PRESENCE_CUSTOMER_ORIGINS`): the widget runs on the customer's own pages, so a count can
//! only be raised from them. A customer with an allow-list is refused to any other origin, and
//! to a request without an `Origin` (a browser always sends one across origins). A customer
//! without a list follows `PRESENCE_CUSTOMER_ORIGINS_DEFAULT`: `any` origin, or `none`. Lists
//! may also come from a file (`PRESENCE_CUSTOMER_ORIGINS_FILE`), re-read while the edge runs.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use presence_events::TenantId;

/// What a customer without an allow-list accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnlistedOrigins {
    /// Any origin (and none): the widget works from any site.
    Any,
    /// Nothing: every customer must be listed.
    None,
}

/// The allow-lists, parsed from `shop-42=https://shop42.com|https://www.shop42.com;shop-7=…`
/// (and from a file of such entries, one per line). Clones share the lists, so a reload of
/// the file reaches every handler.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
    lists: Arc<RwLock<Arc<Lists>>>,
    /// The lists of PRESENCE_CUSTOMER_ORIGINS, under those of the file.
    configured: Arc<Lists>,
}

#[derive(Debug)]
struct Lists {
    lists: HashMap<TenantId, Vec<String>>,
    unlisted: UnlistedOrigins,
}

/// Why an origin was refused for a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginRefusal {
    /// The customer has a list and the request named no origin.
    Missing,
    /// The origin is not on the customer's list (or the customer has none, and unlisted
    /// customers accept nothing).
    NotAllowed(String),
}

impl OriginRefusal {
    pub(crate) fn message(&self, customer: &TenantId) -> String {
        match self {
            OriginRefusal::Missing => {
                format!(
                    "customer {customer} accepts calls from its own sites only: no Origin was sent"
                )
            }
            OriginRefusal::NotAllowed(origin) => {
                let origin: String = origin.chars().take(100).collect();
                format!(
                    "origin {origin} may not call the active-users endpoints for customer {customer}"
                )
            }
        }
    }
}

/// An origin as compared: lower case, without a trailing slash.
fn normal(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl Lists {
    /// Parses `customer=origin|origin;customer=origin`; an empty text lists no customer.
    fn parse(text: &str, unlisted: UnlistedOrigins) -> Result<Self, String> {
        let mut lists = HashMap::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (customer, origins) = entry.split_once('=').ok_or_else(|| {
                format!("{entry:?}: expected customer=https://site|https://other")
            })?;
            let customer =
                TenantId::parse(customer.trim()).map_err(|e| format!("{entry:?}: {e}"))?;
            let origins: Vec<String> = origins
                .split('|')
                .map(normal)
                .filter(|o| !o.is_empty())
                .collect();
            for origin in &origins {
                if !(origin.starts_with("https://") || origin.starts_with("http://")) {
                    return Err(format!(
                        "{origin:?} (customer {customer}): an origin is scheme://host[:port]"
                    ));
                }
            }
            if origins.is_empty() {
                return Err(format!("customer {customer}: no origin listed"));
            }
            lists.insert(customer, origins);
        }
        Ok(Self { lists, unlisted })
    }

    /// These lists, then `file`'s (a customer it names takes its list from it): one entry
    /// per line, `#` starting a comment.
    fn with_file(&self, file: &str) -> Result<Self, String> {
        let entries: Vec<&str> = file
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .collect();
        let from_file = Lists::parse(&entries.join(";"), self.unlisted)?;
        let mut lists = self.lists.clone();
        lists.extend(from_file.lists);
        Ok(Self {
            lists,
            unlisted: self.unlisted,
        })
    }
}

impl OriginPolicy {
    /// Parses `customer=origin|origin;customer=origin`; an empty text lists no customer.
    #[cfg(test)]
    pub fn parse(text: &str, unlisted: UnlistedOrigins) -> Result<Self, String> {
        Self::load(text, None, unlisted)
    }

    /// The lists of `text` (PRESENCE_CUSTOMER_ORIGINS), then those of `file`
    /// (PRESENCE_CUSTOMER_ORIGINS_FILE's content), each error naming where it was.
    pub fn load(text: &str, file: Option<&str>, unlisted: UnlistedOrigins) -> Result<Self, String> {
        let configured = Arc::new(
            Lists::parse(text, unlisted).map_err(|e| format!("PRESENCE_CUSTOMER_ORIGINS: {e}"))?,
        );
        let lists = match file {
            Some(file) => Arc::new(
                configured
                    .with_file(file)
                    .map_err(|e| format!("PRESENCE_CUSTOMER_ORIGINS_FILE: {e}"))?,
            ),
            None => configured.clone(),
        };
        Ok(Self {
            lists: Arc::new(RwLock::new(lists)),
            configured,
        })
    }

    /// Takes the file's new content; on an error the lists in use stay. The number of
    /// customers listed.
    pub(crate) fn replace_file(&self, file: &str) -> Result<usize, String> {
        let lists = self.configured.with_file(file)?;
        let customers = lists.lists.len();
        *self.lists.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(lists);
        Ok(customers)
    }

    fn current(&self) -> Arc<Lists> {
        self.lists
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Any origin for every customer: what an edge does unless configured.
    #[cfg(test)]
    pub fn open() -> Self {
        Self::parse("", UnlistedOrigins::Any).expect("no lists parse")
    }

    /// Whether `origin` (the request's `Origin`, if any) may call for `customer`.
    pub(crate) fn check(
        &self,
        customer: &TenantId,
        origin: Option<&str>,
    ) -> Result<(), OriginRefusal> {
        let current = self.current();
        match (current.lists.get(customer), origin) {
            (Some(list), Some(origin)) if list.contains(&normal(origin)) => Ok(()),
            (Some(_), Some(origin)) => Err(OriginRefusal::NotAllowed(origin.to_owned())),
            (Some(_), None) => Err(OriginRefusal::Missing),
            (None, _) if current.unlisted == UnlistedOrigins::Any => Ok(()),
            (None, origin) => Err(origin.map_or(OriginRefusal::Missing, |o| {
                OriginRefusal::NotAllowed(o.to_owned())
            })),
        }
    }

    /// Whether a CORS preflight from `origin` may be answered (the customer is in the body,
    /// not known yet): it is on some customer's list, or unlisted customers take any.
    pub(crate) fn may_ask(&self, origin: &str) -> bool {
        let current = self.current();
        current.unlisted == UnlistedOrigins::Any || {
            let origin = normal(origin);
            current.lists.values().any(|list| list.contains(&origin))
        }
    }

    /// Customers with a list.
    #[cfg(test)]
    fn listed(&self) -> usize {
        self.current().lists.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    #[test]
    fn a_listed_customer_takes_its_own_origins_only_and_requires_one() {
        let policy = OriginPolicy::parse(
            "shop-42=https://shop42.com|https://www.shop42.com/; shop-7=http://localhost:8080",
            UnlistedOrigins::Any,
        )
        .unwrap();
        assert_eq!(policy.listed(), 2);
        let shop = tenant("shop-42");
        assert!(policy.check(&shop, Some("https://shop42.com")).is_ok());
        assert!(policy.check(&shop, Some("HTTPS://WWW.SHOP42.COM")).is_ok());
        assert_eq!(
            policy.check(&shop, Some("https://evil.example")),
            Err(OriginRefusal::NotAllowed("https://evil.example".into()))
        );
        assert_eq!(policy.check(&shop, None), Err(OriginRefusal::Missing));
        // Another customer's site is not this customer's.
        assert!(policy.check(&shop, Some("http://localhost:8080")).is_err());
        // Unlisted customers follow the default.
        assert!(
            policy
                .check(&tenant("other"), Some("https://evil.example"))
                .is_ok()
        );
        assert!(policy.check(&tenant("other"), None).is_ok());
        assert!(policy.may_ask("https://anything.example"));
    }

    #[test]
    fn with_none_for_the_unlisted_only_listed_origins_get_anywhere() {
        let policy =
            OriginPolicy::parse("shop-42=https://shop42.com", UnlistedOrigins::None).unwrap();
        assert!(
            policy
                .check(&tenant("other"), Some("https://shop42.com"))
                .is_err()
        );
        assert!(policy.check(&tenant("other"), None).is_err());
        assert!(policy.may_ask("https://shop42.com/"));
        assert!(!policy.may_ask("https://evil.example"));
        assert!(OriginPolicy::open().check(&tenant("x"), None).is_ok());
    }

    #[test]
    fn bad_lists_are_refused_at_start_with_what_is_wrong() {
        for (text, says) in [
            ("shop-42", "expected customer="),
            ("shop.42=https://a.com", "tenant"),
            ("shop-42=shop42.com", "scheme://host"),
            ("shop-42=", "no origin"),
        ] {
            let e = OriginPolicy::parse(text, UnlistedOrigins::Any).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert_eq!(
            OriginPolicy::parse(" ; ", UnlistedOrigins::Any)
                .unwrap()
                .listed(),
            0
        );
    }

    #[test]
    fn a_file_adds_lists_over_the_configured_ones_and_a_bad_reload_keeps_them() {
        let policy = OriginPolicy::load(
            "shop-42=https://shop42.com;shop-7=https://seven.example",
            Some("# the widget's sites\nshop-7=https://new.seven.example  # moved\n\nshop-9=https://nine.example|https://www.nine.example\n"),
            UnlistedOrigins::None,
        )
        .unwrap();
        assert_eq!(policy.listed(), 3);
        assert!(
            policy
                .check(&tenant("shop-42"), Some("https://shop42.com"))
                .is_ok()
        );
        assert!(
            policy
                .check(&tenant("shop-7"), Some("https://new.seven.example"))
                .is_ok()
        );
        assert!(
            policy
                .check(&tenant("shop-7"), Some("https://seven.example"))
                .is_err()
        );
        assert!(
            policy
                .check(&tenant("shop-9"), Some("https://www.nine.example"))
                .is_ok()
        );

        // A clone (a handler's) sees the reload.
        let handler = policy.clone();
        assert_eq!(
            policy.replace_file("shop-9=https://other.nine.example"),
            Ok(3)
        );
        assert!(
            handler
                .check(&tenant("shop-9"), Some("https://www.nine.example"))
                .is_err()
        );
        assert!(
            handler
                .check(&tenant("shop-9"), Some("https://other.nine.example"))
                .is_ok()
        );
        // The configured list of shop-7 is back once the file no longer names it.
        assert!(
            handler
                .check(&tenant("shop-7"), Some("https://seven.example"))
                .is_ok()
        );

        let e = policy.replace_file("shop-9=nine.example").unwrap_err();
        assert!(e.contains("scheme://host"), "{e}");
        assert!(
            handler
                .check(&tenant("shop-9"), Some("https://other.nine.example"))
                .is_ok()
        );

        let e = OriginPolicy::load("", Some("shop-9"), UnlistedOrigins::Any).unwrap_err();
        assert!(e.starts_with("PRESENCE_CUSTOMER_ORIGINS_FILE: "), "{e}");
        let e = OriginPolicy::load("x", None, UnlistedOrigins::Any).unwrap_err();
        assert!(e.starts_with("PRESENCE_CUSTOMER_ORIGINS: "), "{e}");
    }
}
