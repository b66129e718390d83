//! Connection targets: a `postgres://` URL, a libpq `key=value` string, or
//! nothing (then libpq's `PG*` variables and service files decide).
//!
//! A password written into the target is taken out of it: child programs
//! get it in `PGPASSWORD`, never on their command line where every user of
//! the machine can read it, and messages show the target without it.

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A connection target, with any password kept apart from it.
#[derive(Clone)]
pub struct Target {
    form: Form,
    password: Option<Zeroizing<String>>,
}

#[derive(Clone)]
enum Form {
    /// libpq defaults only.
    Empty,
    /// `postgresql://authority` and the query string, without password and
    /// database; `database` is the path's database.
    Url {
        prefix: String,
        query: Vec<(String, String)>,
        database: Option<String>,
    },
    /// `key=value` pairs, without `password` and `dbname`.
    Pairs {
        pairs: Vec<(String, String)>,
        database: Option<String>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Target {
    /// Parses a target given by the user; `None` means libpq defaults.
    pub fn parse(text: Option<&str>) -> Result<Target> {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Target {
                form: Form::Empty,
                password: None,
            });
        };
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            parse_url(text)
        } else if text.contains('=') {
            parse_pairs(text)
        } else {
            Err(Error::Invalid(format!(
                "connection {:?} is neither a postgres:// URL nor key=value pairs; write for example postgres://user@host:5432/dbname or \"host=/run/postgresql dbname=app\"",
                redact_guess(text)
            )))
        }
    }

    /// Sets the password to give child programs in `PGPASSWORD`; it
    /// replaces one written into the target.
    pub fn with_password(mut self, password: Zeroizing<String>) -> Target {
        self.password = Some(password);
        self
    }

    /// Returns whether a password was written into the target or set.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Returns the database named by the target itself, if any.
    pub fn database(&self) -> Option<&str> {
        match &self.form {
            Form::Empty => None,
            Form::Url { database, .. } | Form::Pairs { database, .. } => database.as_deref(),
        }
    }

    /// Connection string for `database`, without password.
    pub fn for_database(&self, database: &str) -> String {
        match &self.form {
            Form::Empty => format!("dbname={}", quote_value(database)),
            Form::Url { prefix, query, .. } => {
                let mut url = format!("{prefix}/{}", percent_encode(database));
                for (i, (key, value)) in query.iter().enumerate() {
                    url.push(if i == 0 { '?' } else { '&' });
                    url.push_str(&percent_encode(key));
                    url.push('=');
                    url.push_str(&percent_encode(value));
                }
                url
            }
            Form::Pairs { pairs, .. } => {
                let mut out: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={}", quote_value(v)))
                    .collect();
                out.push(format!("dbname={}", quote_value(database)));
                out.join(" ")
            }
        }
    }

    /// Returns the target as shown to users, without password.
    pub fn display(&self) -> String {
        match &self.form {
            Form::Empty => "(libpq defaults: PGHOST, PGPORT, PGUSER, service files)".into(),
            _ => self.for_database(self.database().unwrap_or("")),
        }
    }

    /// Environment for a child program: the password, if the target held
    /// one.
    pub fn env(&self) -> Vec<(&'static str, &str)> {
        match &self.password {
            Some(password) => vec![("PGPASSWORD", password.as_str())],
            None => Vec::new(),
        }
    }
}

/// Returns `text` with anything that may be a password replaced by `****`.
/// That is the part between `:` and `@` of a URL's user information, and
/// the value after `password=`.
fn redact_guess(text: &str) -> String {
    let mut out = text.to_string();
    if let Some(scheme_end) = out.find("://")
        && let Some(at) = out[scheme_end + 3..].find('@').map(|i| i + scheme_end + 3)
        && let Some(colon) = out[scheme_end + 3..at]
            .find(':')
            .map(|i| i + scheme_end + 3)
    {
        out.replace_range(colon + 1..at, "****");
    }
    if let Some(start) = out.find("password=") {
        let value_start = start + "password=".len();
        let value_end = out[value_start..]
            .find(['&', ' '])
            .map_or(out.len(), |i| i + value_start);
        out.replace_range(value_start..value_end, "****");
    }
    out
}

fn parse_url(text: &str) -> Result<Target> {
    let shown = redact_guess(text);
    let bad = |what: &str| {
        Error::Invalid(format!(
            "connection URL {shown} is invalid: {what}; write it as postgres://user[:password]@host[:port]/dbname[?key=value]"
        ))
    };
    let scheme_end = text.find("://").ok_or_else(|| bad("no scheme"))? + 3;
    let scheme = &text[..scheme_end];
    let rest = &text[scheme_end..];
    let (before_query, query_text) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    let mut password = None;
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = match userinfo.split_once(':') {
                Some((user, secret)) => {
                    password = Some(Zeroizing::new(
                        percent_decode(secret)
                            .map_err(|_| bad("the password has an invalid %-escape"))?,
                    ));
                    user
                }
                None => userinfo,
            };
            if user.is_empty() {
                hosts.to_string()
            } else {
                format!("{user}@{hosts}")
            }
        }
        None => authority.to_string(),
    };
    let database = match path.filter(|p| !p.is_empty()) {
        Some(path) => Some(
            percent_decode(path).map_err(|_| bad("the database name has an invalid %-escape"))?,
        ),
        None => None,
    };
    let mut query = Vec::new();
    let mut database = database;
    for pair in query_text
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| bad("a parameter has no '='"))?;
        let key = percent_decode(key).map_err(|_| bad("a parameter has an invalid %-escape"))?;
        let value = Zeroizing::new(
            percent_decode(value).map_err(|_| bad("a parameter has an invalid %-escape"))?,
        );
        match key.as_str() {
            "password" => password = Some(value),
            "dbname" => database = Some(value.to_string()),
            _ => query.push((key, value.to_string())),
        }
    }
    Ok(Target {
        form: Form::Url {
            prefix: format!("{scheme}{authority}"),
            query,
            database,
        },
        password,
    })
}

fn parse_pairs(text: &str) -> Result<Target> {
    let bad = |what: String| {
        Error::Invalid(format!(
            "connection string is invalid: {what}; write key=value pairs such as \"host=/run/postgresql port=5432 dbname=app\""
        ))
    };
    let mut chars = text.chars().peekable();
    let mut pairs = Vec::new();
    let mut password = None;
    let mut database = None;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(bad(format!("key {key:?} has no '='")));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = Zeroizing::new(String::new());
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(bad(format!("the value of {key} ends in a backslash"))),
                    },
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(bad(format!("the value of {key} has no closing quote"))),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(bad(format!("the value of {key} ends in a backslash"))),
                    }
                } else {
                    value.push(c);
                }
            }
        }
        match key.as_str() {
            "password" => password = Some(value),
            "dbname" => database = Some(value.to_string()),
            _ => pairs.push((key, value.to_string())),
        }
    }
    Ok(Target {
        form: Form::Pairs { pairs, database },
        password,
    })
}

fn quote_value(value: &str) -> String {
    if !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:".contains(c))
    {
        return value.to_string();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> std::result::Result<String, ()> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(())?;
            let hex = std::str::from_utf8(hex).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_password_is_taken_out() {
        let target = Target::parse(Some(
            "postgres://app:s%40cret@db.example:5433/prod?sslmode=require",
        ))
        .expect("parse");
        assert_eq!(target.database(), Some("prod"));
        assert_eq!(
            target.for_database("other db"),
            "postgres://app@db.example:5433/other%20db?sslmode=require"
        );
        assert_eq!(target.env(), vec![("PGPASSWORD", "s@cret")]);
        assert!(!target.display().contains("cret"));
    }

    #[test]
    fn url_query_password_and_socket_host() {
        let target =
            Target::parse(Some("postgresql:///app?host=/tmp/sock&password=x")).expect("parse");
        assert_eq!(target.database(), Some("app"));
        assert_eq!(
            target.for_database("b"),
            "postgresql:///b?host=%2Ftmp%2Fsock"
        );
        assert_eq!(target.env(), vec![("PGPASSWORD", "x")]);
    }

    #[test]
    fn pairs_replace_dbname_and_hide_password() {
        let target = Target::parse(Some("host=/tmp/s  password='it''s' dbname = app user=u"));
        assert!(target.is_err(), "'' is not an escape in libpq values");
        let target = Target::parse(Some(r"host=/tmp/s password='it\'s x' dbname = app user=u"))
            .expect("parse");
        assert_eq!(target.database(), Some("app"));
        assert_eq!(
            target.for_database("x y"),
            r"host=/tmp/s user=u dbname='x y'"
        );
        assert_eq!(target.env(), vec![("PGPASSWORD", "it's x")]);
    }

    #[test]
    fn empty_and_invalid() {
        let target = Target::parse(None).expect("parse");
        assert_eq!(target.database(), None);
        assert_eq!(target.for_database("app"), "dbname=app");
        let error = Target::parse(Some("just-a-name")).expect_err("rejected");
        assert!(error.to_string().contains("neither"), "{error}");
        let error = Target::parse(Some("postgres://u:p%zz@h/db")).expect_err("rejected");
        assert!(!error.to_string().contains("p%zz"), "{error}");
        assert!(
            error.to_string().contains("postgres://u:****@h/db"),
            "{error}"
        );
        assert_eq!(
            redact_guess("host=h password=s3cret user=u"),
            "host=h password=**** user=u"
        );
    }
}
