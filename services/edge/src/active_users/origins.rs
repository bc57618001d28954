//! Which web origins may call the active-users endpoints for a customer
//! (`PRESENCE_CUSTOMER_ORIGINS`): the widget runs on the customer's own pages, so a count can
//! only be raised from them. A customer with an allow-list is refused to any other origin, and
//! to a request without an `Origin` (a browser always sends one across origins). A customer
//! without a list follows `PRESENCE_CUSTOMER_ORIGINS_DEFAULT`: `any` origin, or `none`.

use std::collections::HashMap;

use presence_events::TenantId;

/// What a customer without an allow-list accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UnlistedOrigins {
    /// Any origin (and none): the widget works from any site.
    Any,
    /// Nothing: every customer must be listed.
    None,
}

/// The allow-lists, parsed from `shop-42=https://shop42.com|https://www.shop42.com;shop-7=…`.
#[derive(Debug, Clone)]
pub struct OriginPolicy {
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

impl OriginPolicy {
    /// Parses `customer=origin|origin;customer=origin`; an empty text lists no customer.
    pub fn parse(text: &str, unlisted: UnlistedOrigins) -> Result<Self, String> {
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

    /// Any origin for every customer: what an edge does unless configured.
    #[cfg(test)]
    pub fn open() -> Self {
        Self {
            lists: HashMap::new(),
            unlisted: UnlistedOrigins::Any,
        }
    }

    /// Whether `origin` (the request's `Origin`, if any) may call for `customer`.
    pub(crate) fn check(
        &self,
        customer: &TenantId,
        origin: Option<&str>,
    ) -> Result<(), OriginRefusal> {
        match (self.lists.get(customer), origin) {
            (Some(list), Some(origin)) if list.contains(&normal(origin)) => Ok(()),
            (Some(_), Some(origin)) => Err(OriginRefusal::NotAllowed(origin.to_owned())),
            (Some(_), None) => Err(OriginRefusal::Missing),
            (None, _) if self.unlisted == UnlistedOrigins::Any => Ok(()),
            (None, origin) => Err(origin.map_or(OriginRefusal::Missing, |o| {
                OriginRefusal::NotAllowed(o.to_owned())
            })),
        }
    }

    /// Whether a CORS preflight from `origin` may be answered (the customer is in the body,
    /// not known yet): it is on some customer's list, or unlisted customers take any.
    pub(crate) fn may_ask(&self, origin: &str) -> bool {
        self.unlisted == UnlistedOrigins::Any || {
            let origin = normal(origin);
            self.lists.values().any(|list| list.contains(&origin))
        }
    }

    /// Customers with a list.
    #[cfg(test)]
    fn listed(&self) -> usize {
        self.lists.len()
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
}
