//! Opening the PostgreSQL store: the URL (its TLS parameters in `url.rs`), the TLS
//! connector (`tls.rs`) and the connection pool, and the checks that `control init`,
//! `control migrate` and `control serve` make before a replica uses the database
//! (schema migrated, control identity recorded and the same as this replica's).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use leasehold_channel::PublicIdentity;

use super::schema::{self, IDENTITY_KEY, Migrated};
use super::tls::PgTls;
use super::{PgError, PostgresStore, pg, url};

/// Connections a replica keeps to PostgreSQL at most.
const POOL_SIZE: usize = 16;
/// How long the TCP connection to PostgreSQL has to be made (unless the URL says
/// otherwise): an unreachable database must fail a request fast enough for the client
/// to try another replica (the proxy renews with a third of its lease left, which must
/// cover one such wait and the failover).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a new pooled connection has, connect and authentication (SCRAM's key
/// derivation is deliberately slow) together.
const POOL_CREATE: Duration = Duration::from_secs(5);
/// How long a request waits for a free pooled connection: contention under a burst,
/// not reachability (the timeouts above and below are for that).
const POOL_WAIT: Duration = Duration::from_secs(5);
/// How long data sent to PostgreSQL may stay unacknowledged before the kernel drops the
/// connection (`TCP_USER_TIMEOUT`; the URL's `tcp_user_timeout` wins). A network cut
/// drops packets without a word: without this, a statement on a pooled connection
/// waits for TCP's retransmissions to give up, a quarter of an hour, and the replica
/// neither refuses nor reports not-ready meanwhile.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle time before TCP keepalive probes start, and between probes (the URL's
/// `keepalives_idle`/`keepalives_interval` win): an idle pooled connection across a
/// cut is found dead within seconds, not at the system default of two hours, so the
/// next request gets a fresh connection (or a clear "unavailable") instead of a
/// dead one.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(3);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_RETRIES: u32 = 3;
/// tokio-postgres's default keepalive idle time: one the URL did not set.
const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Whether `url` names a PostgreSQL store rather than the embedded one.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

impl PostgresStore {
    /// A pool for `url`; connects lazily (see [`Self::init`] and [`Self::open`]).
    /// Reads the root certificates the URL's `sslrootcert` names, if it verifies.
    pub fn connect(url: &str) -> Result<Self, PgError> {
        // `sslmode` and `sslrootcert` as libpq reads them; the rest as written.
        let (rest, settings) = url::split(url)?;
        let mut config: tokio_postgres::Config =
            rest.parse().map_err(|e: tokio_postgres::Error| {
                // The parser's messages name the bad part, never the whole URL.
                PgError::Url(e.to_string())
            })?;
        // libpq ignores sslmode over Unix sockets, where the server offers no TLS.
        let hosts = config.get_hosts();
        let unix_only = !hosts.is_empty()
            && hosts
                .iter()
                .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
        config.ssl_mode(if unix_only {
            tokio_postgres::config::SslMode::Disable
        } else {
            settings.mode.for_client()
        });
        let tls = PgTls::new(&settings)?;
        tracing::debug!(
            sslmode = settings.mode.as_str(),
            verifies_chain = settings.verifies_chain(),
            "PostgreSQL store"
        );
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if config.get_keepalives_idle() == DEFAULT_KEEPALIVE_IDLE {
            config.keepalives_idle(KEEPALIVE_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVE_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVE_RETRIES);
        }
        config.application_name("leasehold-control");
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(POOL_CREATE))
            .build()
            .map_err(|e| PgError::Url(e.to_string()))?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| PgError::Query(format!("random source: {e}")))?;
        Ok(Self {
            pool,
            config,
            tls,
            replica: data_encoding::HEXLOWER.encode(&id),
        })
    }

    /// `control init`: applies the migrations and records `identity` as the control's,
    /// or checks it against the one already recorded (refused before anything is
    /// applied when it is another's).
    pub async fn init(url: &str, identity: PublicIdentity) -> Result<Self, PgError> {
        let store = Self::connect(url)?;
        let local = identity.to_string();
        {
            let mut client = store.client_for_setup().await?;
            schema::migrate(&mut client, |recorded| match recorded {
                Some(recorded) if recorded != local => Err(PgError::IdentityMismatch {
                    local: local.clone(),
                    recorded: recorded.to_owned(),
                }),
                _ => Ok(()),
            })
            .await?;
        }
        store.record_identity(identity).await?;
        Ok(store)
    }

    /// The first half of `control init`, before any identity exists: connects, refuses
    /// a database that already records a control identity (changing nothing), and
    /// applies the migrations.
    pub async fn prepare(url: &str) -> Result<Self, PgError> {
        let store = Self::connect(url)?;
        {
            let mut client = store.client_for_setup().await?;
            schema::migrate(&mut client, |recorded| match recorded {
                Some(recorded) => Err(PgError::AlreadyInitialized {
                    recorded: recorded.to_owned(),
                }),
                None => Ok(()),
            })
            .await?;
        }
        Ok(store)
    }

    /// `control migrate`: brings the schema of the database of an existing control,
    /// `identity`'s, to this build's. Refused, with nothing changed, when the database
    /// records another identity or none (then it is `control init`'s to set up). Run
    /// again, or by two replicas at once, it applies each migration once.
    pub async fn upgrade(url: &str, identity: PublicIdentity) -> Result<Migrated, PgError> {
        let store = Self::connect(url)?;
        let local = identity.to_string();
        let mut client = store.client_for_setup().await?;
        schema::migrate(&mut client, |recorded| match recorded {
            None => Err(PgError::NoIdentity),
            Some(recorded) if recorded != local => Err(PgError::NotThisControl {
                local: local.clone(),
                recorded: recorded.to_owned(),
            }),
            Some(_) => Ok(()),
        })
        .await
    }

    /// The second half: records `identity` as the control's (or refuses when another
    /// init recorded its own meanwhile).
    pub async fn claim_for(self, identity: PublicIdentity) -> Result<Self, PgError> {
        self.record_identity(identity).await?;
        Ok(self)
    }

    /// `control serve`: checks the schema and the identity; changes nothing.
    pub async fn open(url: &str, identity: PublicIdentity) -> Result<Self, PgError> {
        let store = Self::connect(url)?;
        {
            let client = store.client_for_setup().await?;
            // An empty database is not an old one: it needs `control init`.
            if schema::version(&client).await? == 0 {
                return Err(PgError::NoIdentity);
            }
            schema::check(&client).await?;
        }
        match store.recorded_identity().await? {
            None => Err(PgError::NoIdentity),
            Some(recorded) if recorded != identity.to_string() => Err(PgError::IdentityMismatch {
                local: identity.to_string(),
                recorded,
            }),
            Some(_) => Ok(store),
        }
    }

    async fn client_for_setup(&self) -> Result<deadpool_postgres::Object, PgError> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => pg(e),
            other => PgError::Unreachable(other.to_string()),
        })
    }

    async fn recorded_identity(&self) -> Result<Option<String>, PgError> {
        let client = self.client_for_setup().await?;
        let row = client
            .query_opt(
                "SELECT value FROM leasehold_meta WHERE key = $1",
                &[&IDENTITY_KEY],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn record_identity(&self, identity: PublicIdentity) -> Result<(), PgError> {
        let client = self.client_for_setup().await?;
        client
            .execute(
                "INSERT INTO leasehold_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                &[&IDENTITY_KEY, &identity.to_string()],
            )
            .await
            .map_err(pg)?;
        match self.recorded_identity().await? {
            Some(recorded) if recorded == identity.to_string() => Ok(()),
            Some(recorded) => Err(PgError::IdentityMismatch {
                local: identity.to_string(),
                recorded,
            }),
            None => Err(PgError::NoIdentity),
        }
    }
}
