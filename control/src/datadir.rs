//! The control's data directory:
//!
//! ```text
//! DATA_DIR/            (mode 0700)
//!   identity.key       the control's Ed25519 key, 0600
//!   control.json       listen address and the addresses tickets advertise
//!   addon.json         the InfluxDB add-on settings, with the admin credential, 0600
//!   addons/ID.json     earlier add-on settings still owed revocations, 0600 (dir 0700)
//!   store.redb         the embedded store
//! ```
//!
//! The add-on settings live beside the store rather than in it so that a lost or
//! corrupted store still leaves the control able to sweep InfluxDB for its expired
//! credentials.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use leasehold_channel::Identity;
use leasehold_channel::home::{self, HomeError};
use leasehold_protocol::AddonConfig;
use serde::{Deserialize, Serialize};

/// Settings fixed at `control init`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Where `control serve` listens unless told otherwise.
    pub listen: SocketAddr,
    /// The addresses written into tickets, in order of preference.
    pub advertise: Vec<String>,
}

/// Problems with the data directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    /// `control init` on an initialized directory.
    #[error("{0} is already initialized (control.json exists); nothing was changed")]
    AlreadyInitialized(PathBuf),
    /// `control serve` on a directory never initialized.
    #[error("{0} is not initialized: run `leasehold control init` first")]
    NotInitialized(PathBuf),
    /// A key file problem.
    #[error(transparent)]
    Key(#[from] HomeError),
    /// Anything else on disk.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The address a local client uses to reach a control listening on `listen`.
pub fn local_address(listen: SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    addr.to_string()
}

/// A control data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    path: PathBuf,
}

impl DataDir {
    /// The directory at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The store file.
    pub fn store_path(&self) -> PathBuf {
        self.path.join("store.redb")
    }

    fn settings_path(&self) -> PathBuf {
        self.path.join("control.json")
    }

    /// Creates the directory, the control identity and the settings. Refuses, changing
    /// nothing, if the directory is initialized already.
    pub fn init(&self, settings: &Settings) -> Result<Identity, DataDirError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |e: std::io::Error| DataDirError::Io {
                path,
                reason: e.to_string(),
            }
        };
        if self.settings_path().exists() {
            return Err(DataDirError::AlreadyInitialized(self.path.clone()));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(io(&self.path))?;
        let key = self.path.join("identity.key");
        // A key left by an interrupted init is reused rather than refused.
        let identity = match home::read_key_file(&key) {
            Ok(identity) => identity,
            Err(HomeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity::generate();
                home::write_key_file(&key, &identity)?;
                identity
            }
            Err(other) => return Err(other.into()),
        };
        let json = to_json(&self.settings_path(), settings)?;
        // Written last: its presence marks a complete init.
        home::write_private(&self.settings_path(), &json)?;
        Ok(identity)
    }

    fn addon_path(&self) -> PathBuf {
        self.path.join("addon.json")
    }

    /// The add-on settings, if configured.
    pub fn load_addon(&self) -> Result<Option<AddonConfig>, DataDirError> {
        let path = self.addon_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| DataDirError::Io {
                    path,
                    reason: format!("corrupt: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DataDirError::Io {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Replaces the add-on settings atomically (write a 0600 temporary, then rename).
    pub fn save_addon(&self, addon: &AddonConfig) -> Result<(), DataDirError> {
        replace_config(self.addon_path(), addon)
    }

    fn retired_dir(&self) -> PathBuf {
        self.path.join("addons")
    }

    /// Keeps an earlier add-on configuration, `id` ([`crate::issuer::addon_id`]), so
    /// the leases it issued can be revoked where they live (0600, replaced atomically).
    pub fn save_retired_addon(&self, id: &str, addon: &AddonConfig) -> Result<(), DataDirError> {
        replace_config(self.retired_dir().join(format!("{id}.json")), addon)
    }

    /// Forgets earlier configuration `id`; already gone counts as done.
    pub fn remove_retired_addon(&self, id: &str) -> Result<(), DataDirError> {
        let path = self.retired_dir().join(format!("{id}.json"));
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DataDirError::Io {
                path,
                reason: e.to_string(),
            }),
        }
    }

    /// Every earlier add-on configuration kept, by the id in its file name. Files not
    /// named like one (an interrupted write's temporary) are skipped.
    pub fn load_retired_addons(&self) -> Result<Vec<(String, AddonConfig)>, DataDirError> {
        let dir = self.retired_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(DataDirError::Io {
                    path: dir,
                    reason: e.to_string(),
                });
            }
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| DataDirError::Io {
                path: dir.clone(),
                reason: e.to_string(),
            })?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !crate::issuer::is_addon_id(id) {
                continue;
            }
            let path = entry.path();
            let bytes = fs::read(&path).map_err(|e| DataDirError::Io {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let bytes = zeroize::Zeroizing::new(bytes);
            let config = serde_json::from_slice(&bytes).map_err(|e| DataDirError::Io {
                path,
                reason: format!("corrupt: {e}"),
            })?;
            out.push((id.to_owned(), config));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Loads the control identity and settings.
    pub fn load(&self) -> Result<(Identity, Settings), DataDirError> {
        let path = self.settings_path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataDirError::NotInitialized(self.path.clone()));
            }
            Err(e) => {
                return Err(DataDirError::Io {
                    path,
                    reason: e.to_string(),
                });
            }
        };
        let settings = serde_json::from_slice(&bytes).map_err(|e| DataDirError::Io {
            path,
            reason: format!("corrupt: {e}"),
        })?;
        let identity = home::read_key_file(&self.path.join("identity.key"))?;
        Ok((identity, settings))
    }
}

impl DataDir {
    /// Replaces the settings of an initialized directory (e.g. new advertised
    /// addresses), atomically: a 0600 temporary, then a rename. The identity is kept.
    pub fn save_settings(&self, settings: &Settings) -> Result<(), DataDirError> {
        self.load()?;
        let path = self.settings_path();
        let tmp = path.with_extension("json.tmp");
        let _ = fs::remove_file(&tmp);
        let json = to_json(&path, settings)?;
        home::write_private(&tmp, &json)?;
        fs::rename(&tmp, &path).map_err(|e| DataDirError::Io {
            path,
            reason: e.to_string(),
        })
    }
}

/// `value` as the JSON written to `path`. Plain settings always serialize; a failure
/// is still an error (the request that asked fails), never a panic.
fn to_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, DataDirError> {
    serde_json::to_vec_pretty(value).map_err(|e| DataDirError::Io {
        path: path.to_owned(),
        reason: format!("cannot encode: {e}"),
    })
}

/// Writes add-on settings to `path` atomically: a 0600 temporary, then a rename.
fn replace_config(path: PathBuf, addon: &AddonConfig) -> Result<(), DataDirError> {
    let tmp = path.with_extension("json.tmp");
    let _ = fs::remove_file(&tmp);
    let json = zeroize::Zeroizing::new(to_json(&path, addon)?);
    home::write_private(&tmp, &json)?;
    fs::rename(&tmp, &path).map_err(|e| DataDirError::Io {
        path,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_twice_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("control"));
        let settings = Settings {
            listen: "0.0.0.0:4100".parse().unwrap(),
            advertise: vec!["127.0.0.1:4100".into()],
        };
        let first = data.init(&settings).unwrap();
        assert!(matches!(
            data.init(&settings),
            Err(DataDirError::AlreadyInitialized(_))
        ));
        let (loaded, loaded_settings) = data.load().unwrap();
        assert_eq!(loaded.public(), first.public());
        assert_eq!(loaded_settings.advertise, settings.advertise);
        assert_eq!(local_address(settings.listen), "127.0.0.1:4100");
    }

    #[test]
    fn earlier_addon_configurations_are_kept_private_and_forgotten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = DataDir::new(dir.path().join("control"));
        assert!(data.load_retired_addons().unwrap().is_empty());
        let config = |password: &str| AddonConfig::InfluxdbV1 {
            endpoint_url: "http://a:8086".into(),
            username: "admin".into(),
            password: leasehold_channel::Secret::new(password.to_owned()),
            privileges: vec!["WRITE ON \"x\"".into()],
            default_ttl_secs: None,
            max_ttl_secs: None,
            max_live_leases: None,
            ca_pem: None,
        };
        let id = crate::issuer::addon_id(&config("p1"));
        data.save_retired_addon(&id, &config("p1")).unwrap();
        // Saved again (a rotated password): replaced, not refused.
        data.save_retired_addon(&id, &config("p2")).unwrap();
        let path = data.path().join("addons").join(format!("{id}.json"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&data.path().join("addons")), 0o700);
        // Stray files are not configurations.
        fs::write(data.path().join("addons").join("notes.txt"), "x").unwrap();
        let loaded = data.load_retired_addons().unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, id);
        assert!(
            matches!(&loaded[0].1, AddonConfig::InfluxdbV1 { password, .. } if password.expose() == "p2")
        );
        data.remove_retired_addon(&id).unwrap();
        data.remove_retired_addon(&id).unwrap();
        assert!(data.load_retired_addons().unwrap().is_empty());
    }
}
