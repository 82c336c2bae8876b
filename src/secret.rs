//! Connection URLs that may carry a password, wrapped so that printing one cannot leak it.
//!
//! Invariant: the raw text of a [`SecretUrl`] leaves this type only through
//! [`SecretUrl::expose`], which is called where a client configuration is built, never where
//! something is logged or formatted. `Display` and `Debug` show the masked form.

use std::fmt;

/// A Redis or Postgres connection string whose password must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url` as given; nothing is checked here (the settings' parsers do that).
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The raw text, password included: for handing to a client library only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url(&self.0))
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", mask_url(&self.0))
    }
}

/// Hides the password of a URL (`scheme://user:***@host/...`), of a `password=` query
/// parameter, and of a `password=` key in a Postgres key/value string.
fn mask_url(url: &str) -> String {
    let out = match url.find("://") {
        Some(scheme_end) => {
            let rest_start = scheme_end + 3;
            let rest = &url[rest_start..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            // The last '@' before the path separates userinfo from host.
            match rest[..authority_end].rfind('@').or_else(|| {
                // A password holding an unencoded '/' or '?' would end the authority early;
                // fall back to the last '@' anywhere before the query.
                rest[..rest.find('?').unwrap_or(rest.len())].rfind('@')
            }) {
                Some(at) => {
                    let userinfo = &rest[..at];
                    let masked = match userinfo.find(':') {
                        Some(colon) => format!("{}:***", &userinfo[..colon]),
                        None => userinfo.to_string(),
                    };
                    format!("{}{}{}", &url[..rest_start], masked, &rest[at..])
                }
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    };
    mask_password_pairs(&out)
}

/// Masks `password=value` wherever it appears (URL query or key/value connection string).
fn mask_password_pairs(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut out = String::with_capacity(s.len());
    let mut pos = 0;
    while let Some(found) = lower[pos..].find("password=") {
        let value_start = pos + found + "password=".len();
        out.push_str(&s[pos..value_start]);
        out.push_str("***");
        let rest = &s[value_start..];
        let value_len = if let Some(quoted) = rest.strip_prefix('\'') {
            quoted.find('\'').map_or(rest.len(), |e| e + 2)
        } else {
            rest.find(['&', ' ', '#']).unwrap_or(rest.len())
        };
        pos = value_start + value_len;
    }
    out.push_str(&s[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_url("redis://:s3cret@host:6379/0"), "redis://:***@host:6379/0");
        assert_eq!(mask_url("redis://user:s3cret@host"), "redis://user:***@host");
        assert_eq!(mask_url("postgres://u:p@ss@h/db"), "postgres://u:***@h/db");
        assert_eq!(mask_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            mask_url("postgres://h/db?user=u&password=s3cret&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable"
        );
        assert_eq!(mask_url("host=h password=s3cret user=u"), "host=h password=*** user=u");
        assert_eq!(mask_url("host=h password='a b' user=u"), "host=h password=*** user=u");
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let url = SecretUrl::new("redis://:hunter2@host:6379");
        for shown in [url.to_string(), format!("{url:?}"), format!("{:?}", Some(&url))] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("host:6379"), "{shown}");
        }
        assert_eq!(url.expose(), "redis://:hunter2@host:6379");
    }
}
