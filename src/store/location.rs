//! Where a store lives: a SQLite file path (the default, `./mdmctl.db`) or a `postgres://`
//! URL. Displaying a location never shows a password.

use std::fmt;
use std::path::PathBuf;

use super::Backend;

#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// The URL as given (it may hold a password: use `Display`, never this field, in messages).
    Postgres(String),
}

impl Location {
    /// `postgres://…` or `postgresql://…` select PostgreSQL; `sqlite://PATH` or any other
    /// string is a SQLite file path.
    pub fn parse(s: &str) -> Location {
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Location::Postgres(s.to_string())
        } else if let Some(path) = s.strip_prefix("sqlite://") {
            Location::Sqlite(PathBuf::from(path))
        } else {
            Location::Sqlite(PathBuf::from(s))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => write!(f, "{}", p.display()),
            Location::Postgres(url) => f.write_str(&redact_url(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Location({self})")
    }
}

/// Replace the password in `scheme://user:password@host/…` and any `password=` query
/// parameter with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let (scheme, rest) = url.split_at(scheme_end + 3);
    // The user info ends at the last `@`: a password may hold `/`, `?`, `#` or `@` unencoded,
    // and must not be mistaken for the path (and printed).
    let authority_end = match rest.rfind('@') {
        Some(at) => at + rest[at..].find(['/', '?']).unwrap_or(rest.len() - at),
        None => rest.find(['/', '?']).unwrap_or(rest.len()),
    };
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{}", &userinfo[..colon], host),
                None => authority.to_string(),
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.find('?') {
        Some(q) => {
            let (path, query) = tail.split_at(q + 1);
            let query = query
                .split('&')
                .map(|kv| {
                    if kv.to_ascii_lowercase().starts_with("password=") {
                        "password=***".to_string()
                    } else {
                        kv.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("&");
            format!("{path}{query}")
        }
        None => tail.to_string(),
    };
    format!("{scheme}{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_display() {
        let l = Location::parse(
            "postgres://admin:s3cret@db.example:5432/mdm?sslmode=require&password=x2",
        );
        let shown = format!("{l} {l:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("x2"),
            "{shown}"
        );
        assert!(
            shown.contains("postgres://admin:***@db.example:5432/mdm?sslmode=require&password=***")
        );
        assert_eq!(
            redact_url("postgres://u@h/db"),
            "postgres://u@h/db",
            "no password, nothing to hide"
        );
        assert_eq!(
            redact_url("postgres://u:p@ss@h/db"),
            "postgres://u:***@h/db",
            "the last @ ends the userinfo"
        );
        for url in [
            "mysql://u:pa/ss@db/nanomdm",
            "mysql://u:pa?ss@db/nanomdm",
            "postgres://u:a/b?c#d@db:5432/x?sslmode=require",
        ] {
            let shown = redact_url(url);
            assert!(
                !shown.contains("pa/ss") && !shown.contains("pa?ss") && !shown.contains("a/b?c#d"),
                "{shown}"
            );
            assert!(shown.contains(":***@db"), "{shown}");
        }
    }

    #[test]
    fn selects_backend_from_scheme() {
        assert_eq!(Location::parse("mdmctl.db").backend(), Backend::Sqlite);
        assert_eq!(
            Location::parse("sqlite:///var/lib/m.db"),
            Location::Sqlite("/var/lib/m.db".into())
        );
        assert_eq!(
            Location::parse("PostgreSQL://h/db").backend(),
            Backend::Postgres
        );
    }
}
