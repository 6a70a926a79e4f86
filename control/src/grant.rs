//! Validation of what a lease grants, before anything is stored: v2 permission arrays
//! checked against InfluxDB's `Permission`/`Resource` schemas, and v1 privilege clauses
//! parsed into a form that is re-rendered with correct InfluxQL quoting.

use std::fmt;

use serde_json::{Map, Value};

use leasehold_protocol::influxdb::RESOURCE_TYPES;

const RESOURCE_FIELDS: &[&str] = &["type", "id", "name", "orgID", "org"];

/// A grant that failed validation; names the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {problem}")]
pub struct GrantError {
    /// Path of the bad field, e.g. `permissions[0].resource.type`.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> GrantError {
    GrantError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Validates a v2 `permissions` array and fills each resource's `orgID` with `org_id`
/// (InfluxDB refuses an authorization whose permissions name another org).
pub fn normalize_permissions(value: &Value, org_id: &str) -> Result<Value, GrantError> {
    let list = value
        .as_array()
        .ok_or_else(|| bad("permissions", "must be a JSON array"))?;
    if list.is_empty() {
        return Err(bad("permissions", "must not be empty"));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, permission) in list.iter().enumerate() {
        let at = format!("permissions[{i}]");
        let object = permission
            .as_object()
            .ok_or_else(|| bad(&at, "must be an object"))?;
        // Unknown fields are refused, not ignored: a misspelt key would otherwise be
        // dropped silently and the lease grant more (or less) than the admin meant.
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "action" | "resource"))
        {
            return Err(bad(format!("{at}.{key}"), "unknown field"));
        }
        match object.get("action").and_then(Value::as_str) {
            Some("read" | "write") => {}
            Some(other) => {
                return Err(bad(
                    format!("{at}.action"),
                    format!("{other:?} is not read or write"),
                ));
            }
            None => {
                return Err(bad(
                    format!("{at}.action"),
                    "required: \"read\" or \"write\"",
                ));
            }
        }
        let resource = object
            .get("resource")
            .and_then(Value::as_object)
            .ok_or_else(|| bad(format!("{at}.resource"), "required object"))?;
        let mut resource: Map<String, Value> = resource.clone();
        for (key, value) in &resource {
            if !RESOURCE_FIELDS.contains(&key.as_str()) {
                return Err(bad(format!("{at}.resource.{key}"), "unknown field"));
            }
            if !value.is_string() {
                return Err(bad(format!("{at}.resource.{key}"), "must be a string"));
            }
        }
        // Checked here rather than left to InfluxDB: a policy is set once and used
        // for every lease, so a bad type must fail at `policy set`, not at each issue.
        match resource.get("type").and_then(Value::as_str) {
            Some(kind) if RESOURCE_TYPES.contains(&kind) => {}
            Some(kind) => {
                return Err(bad(
                    format!("{at}.resource.type"),
                    format!("{kind:?} is not an InfluxDB resource type"),
                ));
            }
            None => return Err(bad(format!("{at}.resource.type"), "required")),
        }
        // A lease may only reach the add-on's org: another org is refused, a missing
        // one filled in (InfluxDB needs it, and the admin need not repeat it).
        match resource.get("orgID").and_then(Value::as_str) {
            Some(id) if id != org_id => {
                return Err(bad(
                    format!("{at}.resource.orgID"),
                    format!("{id:?} is not the add-on's org {org_id:?}"),
                ));
            }
            Some(_) => {}
            None => {
                resource.insert("orgID".into(), Value::String(org_id.into()));
            }
        }
        let mut normalized = object.clone();
        normalized.insert("resource".into(), Value::Object(resource));
        out.push(Value::Object(normalized));
    }
    Ok(Value::Array(out))
}

/// A v1 privilege level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// `READ`
    Read,
    /// `WRITE`
    Write,
    /// `ALL` (read and write on one database)
    All,
}

/// One v1 privilege: a level on a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    /// The level.
    pub level: Level,
    /// The database name, unescaped.
    pub database: String,
}

impl Privilege {
    /// Parses `WRITE ON "db"`, `READ ON db`, `ALL ON "we\"ird"` (case-insensitive
    /// keywords). Cluster-wide `ALL PRIVILEGES` is refused: a lease must never be admin.
    pub fn parse(text: &str) -> Result<Self, GrantError> {
        let field = || format!("privilege {text:?}");
        let mut words = text.trim().splitn(3, char::is_whitespace);
        let level = match words.next().map(str::to_ascii_uppercase).as_deref() {
            Some("READ") => Level::Read,
            Some("WRITE") => Level::Write,
            Some("ALL") => Level::All,
            _ => return Err(bad(field(), "must start with READ, WRITE or ALL")),
        };
        if !words.next().is_some_and(|w| w.eq_ignore_ascii_case("ON")) {
            return Err(bad(
                field(),
                "expected `ON <database>` (admin privileges are not leased)",
            ));
        }
        let rest = words.next().unwrap_or("").trim();
        let database = parse_identifier(rest).ok_or_else(|| {
            bad(
                field(),
                "the database must be a name or a double-quoted identifier",
            )
        })?;
        if database.is_empty() {
            return Err(bad(field(), "the database name is empty"));
        }
        Ok(Self { level, database })
    }

    /// The `GRANT` statement giving this privilege to `user`.
    pub fn grant_to(&self, user: &str) -> String {
        format!("GRANT {self} TO {}", quote_identifier(user))
    }
}

impl fmt::Display for Privilege {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Read => "READ",
            Level::Write => "WRITE",
            Level::All => "ALL",
        };
        write!(f, "{level} ON {}", quote_identifier(&self.database))
    }
}

fn parse_identifier(text: &str) -> Option<String> {
    if let Some(inner) = text.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.chars();
        loop {
            match chars.next()? {
                '\\' => out.push(chars.next()?),
                '"' => return chars.as_str().trim().is_empty().then_some(out),
                c => out.push(c),
            }
        }
    }
    let bare = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    bare.then(|| text.to_owned())
}

/// Merges privileges per database. InfluxDB 1.x keeps one privilege per user and
/// database, so `GRANT READ` after `GRANT WRITE` on the same database would silently
/// replace it; READ and WRITE on one database therefore become ALL.
pub fn merge(privileges: &[Privilege]) -> Vec<Privilege> {
    let mut merged: Vec<Privilege> = Vec::with_capacity(privileges.len());
    for p in privileges {
        match merged.iter_mut().find(|m| m.database == p.database) {
            Some(m) if m.level != p.level => m.level = Level::All,
            Some(_) => {}
            None => merged.push(p.clone()),
        }
    }
    merged
}

/// An InfluxQL double-quoted identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An InfluxQL single-quoted string literal.
pub fn quote_string(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn permissions_get_the_org_filled_in() {
        let out = normalize_permissions(
            &json!([{"action":"write","resource":{"type":"buckets"}}]),
            "0123456789abcdef",
        )
        .unwrap();
        assert_eq!(
            out,
            json!([{"action":"write","resource":{"type":"buckets","orgID":"0123456789abcdef"}}])
        );
    }

    #[test]
    fn bad_permissions_name_the_field() {
        let org = "0123456789abcdef";
        let cases = [
            (json!({}), "permissions"),
            (json!([]), "permissions"),
            (
                json!([{"action":"delete","resource":{"type":"buckets"}}]),
                "permissions[0].action",
            ),
            (json!([{"action":"read"}]), "permissions[0].resource"),
            (
                json!([{"action":"read","resource":{"type":"bukkits"}}]),
                "permissions[0].resource.type",
            ),
            (
                json!([{"action":"read","resource":{"type":"buckets","orgID":"ffffffffffffffff"}}]),
                "permissions[0].resource.orgID",
            ),
            (
                json!([{"action":"read","resource":{"type":"buckets"}},{"action":"write","resource":{"type":"buckets","colour":"red"}}]),
                "permissions[1].resource.colour",
            ),
            (
                json!([{"action":"read","resource":{"type":"buckets"},"extra":1}]),
                "permissions[0].extra",
            ),
        ];
        for (value, field) in cases {
            assert_eq!(
                normalize_permissions(&value, org).unwrap_err().field,
                field,
                "{value}"
            );
        }
    }

    #[test]
    fn privileges_parse_and_requote() {
        let p = Privilege::parse(r#"write on "tele\"metry""#).unwrap();
        assert_eq!(
            p,
            Privilege {
                level: Level::Write,
                database: "tele\"metry".into()
            }
        );
        assert_eq!(p.grant_to("u"), r#"GRANT WRITE ON "tele\"metry" TO "u""#);
        assert_eq!(Privilege::parse("READ ON db_1").unwrap().database, "db_1");
        assert_eq!(
            Privilege::parse(r#"ALL ON "a\\b""#).unwrap().to_string(),
            r#"ALL ON "a\\b""#
        );
    }

    #[test]
    fn bad_privileges_are_refused() {
        for bad in [
            "",
            "WRITE",
            "WRITE db",
            "ALL PRIVILEGES",
            "DROP ON db",
            r#"WRITE ON "open"#,
            "WRITE ON db; DROP USER x",
            r#"WRITE ON "db" trailing"#,
            r#"WRITE ON """#,
        ] {
            assert!(Privilege::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_and_write_on_one_database_merge_into_all() {
        let parse = |s: &str| Privilege::parse(s).unwrap();
        let merged = merge(&[
            parse("WRITE ON a"),
            parse("READ ON b"),
            parse("READ ON a"),
            parse("READ ON b"),
        ]);
        assert_eq!(
            merged,
            vec![
                Privilege {
                    level: Level::All,
                    database: "a".into()
                },
                parse("READ ON b")
            ]
        );
    }

    #[test]
    fn string_literals_escape_quotes() {
        assert_eq!(quote_string(r"it's\"), r"'it\'s\\'");
    }
}
