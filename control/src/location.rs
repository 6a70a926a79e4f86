//! Where the control keeps its state (`--store`): the embedded store in the data
//! directory, or shared PostgreSQL. Parsed from the command line and opened at start;
//! a URL's password never shows in `Debug`.

use leasehold_channel::Identity;

use crate::StartError;
use crate::datadir::DataDir;
use crate::store::postgres::is_postgres_url;
use crate::store::{AnyStore, PostgresStore, RedbStore};

/// Where the control keeps its state (`--store`).
#[derive(Clone, Default)]
pub enum StoreLocation {
    /// The embedded store in the data directory (the default; one process).
    #[default]
    Embedded,
    /// Shared PostgreSQL at this URL (several replicas). The URL may hold a password:
    /// never shown.
    Postgres(zeroize::Zeroizing<String>),
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str("Embedded"),
            Self::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

impl std::str::FromStr for StoreLocation {
    type Err = String;

    /// Absent, empty or `redb`: embedded; `postgres://…` or `postgresql://…`: shared.
    /// Surrounding whitespace is ignored: a URL read from a file (a Kubernetes Secret
    /// made with `--from-file`) usually ends with a newline.
    fn from_str(value: &str) -> Result<Self, String> {
        match value.trim() {
            "" | "redb" => Ok(Self::Embedded),
            url if is_postgres_url(url) => Ok(Self::Postgres(zeroize::Zeroizing::new(url.into()))),
            _ => Err("expected `redb` or a postgres:// (postgresql://) URL".into()),
        }
    }
}

impl StoreLocation {
    /// Opens it for `control serve`: the embedded store, or PostgreSQL after checking
    /// its schema and that it belongs to `identity`.
    pub(crate) async fn open(
        &self,
        data: &DataDir,
        identity: &Identity,
    ) -> Result<AnyStore, StartError> {
        Ok(match self {
            Self::Embedded => AnyStore::Redb(RedbStore::open(&data.store_path())?),
            Self::Postgres(url) => {
                AnyStore::Postgres(Box::new(PostgresStore::open(url, identity.public()).await?))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_from_a_file_keeps_no_trailing_newline() {
        let StoreLocation::Postgres(url) = "postgres://u:p@db:5432/leasehold\n".parse().unwrap()
        else {
            panic!("a PostgreSQL URL");
        };
        assert_eq!(url.as_str(), "postgres://u:p@db:5432/leasehold");
        assert!(matches!(" redb\n".parse(), Ok(StoreLocation::Embedded)));
        assert!("mysql://db".parse::<StoreLocation>().is_err());
    }
}
