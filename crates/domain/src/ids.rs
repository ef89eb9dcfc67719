//! Identifier newtypes. Each carries a type prefix (`case_…`, `evt_…`) so it is easy to grep,
//! and none of them is derived from personal data.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The type prefix every value of this identifier starts with.
            pub const PREFIX: &'static str = $prefix;

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let rest = s.strip_prefix($prefix).ok_or_else(|| {
                    format!("{} must start with `{}`", stringify!($name), $prefix)
                })?;
                if rest.is_empty()
                    || rest.len() > 64
                    || !rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(format!("{} has an invalid body", stringify!($name)));
                }
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

prefixed_id!(
    /// A case: one per accepted or rejected application.
    CaseId,
    "case_"
);
prefixed_id!(
    /// An event on the bus (the CloudEvents `id`).
    EventId,
    "evt_"
);

impl CaseId {
    /// The case of an application. Derived (SHA-256) from the portal's `application_id`, so that
    /// every worker and every redelivery names the same case without asking the store, and a
    /// second submission of one application can never open a second case.
    pub fn for_application(application_id: &ApplicationId) -> CaseId {
        let digest = crate::sha256_hex(application_id.as_str().as_bytes());
        CaseId(format!("case_{}", &digest[..24]))
    }
}

impl EventId {
    /// A fresh event id from 16 random bytes supplied by the caller (the domain has no RNG).
    pub fn from_random(bytes: [u8; 16]) -> EventId {
        EventId(format!("evt_{}", crate::hex(&bytes)))
    }

    /// A deterministic event id: the same `parts` always give the same id. Used where a
    /// re-emission of the same fact (a timer firing twice) must be recognised as a duplicate.
    pub fn derived(parts: &[&str]) -> EventId {
        let digest = crate::sha256_hex(parts.join("\u{1f}").as_bytes());
        EventId(format!("evt_{}", &digest[..32]))
    }
}

/// The portal's application identifier: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApplicationId(String);

impl ApplicationId {
    /// Parses an application id, naming what is wrong.
    pub fn parse(s: &str) -> Result<ApplicationId, String> {
        if s.is_empty() || s.len() > 64 {
            return Err("must be 1-64 characters".into());
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err("may contain only A-Z, a-z, 0-9, `_` and `-`".into());
        }
        Ok(ApplicationId(s.to_owned()))
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApplicationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ApplicationId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ApplicationId::parse(&s)
    }
}

impl From<ApplicationId> for String {
    fn from(id: ApplicationId) -> String {
        id.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_id_is_stable_and_prefixed() {
        let a = ApplicationId::parse("PORTAL-2026-000123").unwrap();
        let c1 = CaseId::for_application(&a);
        assert_eq!(c1, CaseId::for_application(&a));
        assert!(c1.as_str().starts_with("case_"));
        assert_eq!(c1.as_str().len(), 5 + 24);
        let b = ApplicationId::parse("PORTAL-2026-000124").unwrap();
        assert_ne!(c1, CaseId::for_application(&b));
        assert_eq!(c1.as_str().parse::<CaseId>().unwrap(), c1);
    }

    #[test]
    fn application_id_rules() {
        assert!(ApplicationId::parse("").is_err());
        assert!(ApplicationId::parse(&"a".repeat(65)).is_err());
        assert!(ApplicationId::parse(&"a".repeat(64)).is_ok());
        assert!(ApplicationId::parse("has space").is_err());
        assert!(ApplicationId::parse("申请").is_err());
        assert!(ApplicationId::parse("ok_-09AZ").is_ok());
    }

    #[test]
    fn derived_event_ids_repeat() {
        assert_eq!(EventId::derived(&["a", "b"]), EventId::derived(&["a", "b"]));
        assert_ne!(EventId::derived(&["a", "b"]), EventId::derived(&["ab"]));
        assert!("nope".parse::<CaseId>().is_err());
    }
}
