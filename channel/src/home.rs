//! `$LEASEHOLD_HOME`: identities and enrollments on disk.
//!
//! ```text
//! $LEASEHOLD_HOME/
//!   identities/NAME.key     32-byte Ed25519 seed, mode 0600 (refused if group/other can read)
//!   enrollments/NAME.json   the control this identity enrolled with (address, pinned key)
//!   control/                the control's data directory (see the control crate)
//! ```

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Identity, PublicIdentity};

/// Where an identity is enrolled: enough to reach and pin the control.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    /// Control addresses (every replica's); clients start at a random one.
    pub addrs: Vec<String>,
    /// The control's pinned identity.
    pub control: PublicIdentity,
}

/// Errors reading or writing the home directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HomeError {
    /// The name has characters that cannot be a file name.
    #[error(
        "invalid identity name {0:?}: use 1-64 letters, digits, `.`, `_` or `-`, not starting with `.` or `-`"
    )]
    InvalidName(String),
    /// `identity create` for a name that exists.
    #[error("identity {0:?} already exists")]
    AlreadyExists(String),
    /// No identity of that name.
    #[error("no identity named {0:?} (create it with `leasehold identity create {0}`)")]
    NotFound(String),
    /// A key file that others can read.
    #[error(
        "refusing to use {path}: its mode is {mode:o}, but key files must not be readable by group or others (chmod 600 it)"
    )]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The identity has not enrolled with a control.
    #[error("identity {0:?} is not enrolled (run `leasehold enroll TICKET --identity {0}`)")]
    NotEnrolled(String),
    /// A file is not what it should be.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file system failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The leasehold home directory.
#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The home at `root` (not created until something is written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The control's default data directory.
    pub fn control_dir(&self) -> PathBuf {
        self.root.join("control")
    }

    fn identities(&self) -> PathBuf {
        self.root.join("identities")
    }

    fn key_path(&self, name: &str) -> Result<PathBuf, HomeError> {
        validate_name(name)?;
        Ok(self.identities().join(format!("{name}.key")))
    }

    fn enrollment_path(&self, name: &str) -> Result<PathBuf, HomeError> {
        validate_name(name)?;
        Ok(self.root.join("enrollments").join(format!("{name}.json")))
    }

    /// Creates identity `name`. Fails, changing nothing, if it exists.
    pub fn create_identity(&self, name: &str) -> Result<Identity, HomeError> {
        let path = self.key_path(name)?;
        let identity = Identity::generate();
        write_key_file(&path, &identity).map_err(|e| match e {
            HomeError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists => {
                HomeError::AlreadyExists(name.to_owned())
            }
            other => other,
        })?;
        Ok(identity)
    }

    /// Loads identity `name`, refusing a key file others can read.
    pub fn load_identity(&self, name: &str) -> Result<Identity, HomeError> {
        read_key_file(&self.key_path(name)?).map_err(|e| match e {
            HomeError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                HomeError::NotFound(name.to_owned())
            }
            other => other,
        })
    }

    /// Whether identity `name` exists.
    pub fn has_identity(&self, name: &str) -> Result<bool, HomeError> {
        Ok(self.key_path(name)?.exists())
    }

    /// All identities, sorted by name.
    pub fn list_identities(&self) -> Result<Vec<(String, PublicIdentity)>, HomeError> {
        let dir = self.identities();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".key")) else {
                continue;
            };
            if validate_name(name).is_err() {
                continue;
            }
            out.push((name.to_owned(), self.load_identity(name)?.public()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Records that identity `name` enrolled with a control.
    pub fn save_enrollment(&self, name: &str, enrollment: &Enrollment) -> Result<(), HomeError> {
        let path = self.enrollment_path(name)?;
        let json = serde_json::to_vec_pretty(enrollment).expect("enrollment serializes");
        let tmp = path.with_extension("json.tmp");
        let _ = fs::remove_file(&tmp);
        write_private(&tmp, &json)?;
        fs::rename(&tmp, &path).map_err(io_error(&path))
    }

    /// The enrollment of identity `name`.
    pub fn load_enrollment(&self, name: &str) -> Result<Enrollment, HomeError> {
        let path = self.enrollment_path(name)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(HomeError::NotEnrolled(name.to_owned()));
            }
            Err(e) => return Err(io_error(&path)(e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| HomeError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }
}

/// Reads an identity key file, refusing one that group or others can read.
pub fn read_key_file(path: &Path) -> Result<Identity, HomeError> {
    let mut file = fs::File::open(path).map_err(io_error(path))?;
    let mode = file
        .metadata()
        .map_err(io_error(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(HomeError::InsecurePermissions {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    let mut seed = Zeroizing::new(Vec::with_capacity(33));
    Read::by_ref(&mut file)
        .take(33)
        .read_to_end(&mut seed)
        .map_err(io_error(path))?;
    let seed: &[u8; 32] = seed.as_slice().try_into().map_err(|_| HomeError::Corrupt {
        path: path.to_owned(),
        reason: "a key file holds exactly 32 bytes".into(),
    })?;
    Ok(Identity::from_seed(seed))
}

/// Writes a new identity key file (0600); fails if it exists.
pub fn write_key_file(path: &Path, identity: &Identity) -> Result<(), HomeError> {
    write_private(path, identity.seed().as_ref())
}

/// Creates `path` (and its directory, 0700) with mode 0600; fails if it exists.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), HomeError> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_error(dir))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(io_error(path))
}

/// Checks an identity name is safe as a file name.
pub fn validate_name(name: &str) -> Result<(), HomeError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(HomeError::InvalidName(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_load_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let a = home.create_identity("app-1").unwrap();
        let b = home.create_identity("admin").unwrap();
        assert_eq!(home.load_identity("app-1").unwrap().public(), a.public());
        let list = home.list_identities().unwrap();
        assert_eq!(
            list,
            vec![("admin".into(), b.public()), ("app-1".into(), a.public())]
        );
        let mode = fs::metadata(dir.path().join("identities/app-1.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn duplicate_create_fails_and_keeps_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        let first = home.create_identity("app").unwrap();
        assert!(matches!(
            home.create_identity("app"),
            Err(HomeError::AlreadyExists(_))
        ));
        assert_eq!(home.load_identity("app").unwrap().public(), first.public());
    }

    #[test]
    fn readable_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        home.create_identity("app").unwrap();
        let path = dir.path().join("identities/app.key");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            home.load_identity("app"),
            Err(HomeError::InsecurePermissions { .. })
        ));
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path());
        for bad in ["", "../x", "a/b", ".hidden", "-flag", &"x".repeat(65)] {
            assert!(
                matches!(home.create_identity(bad), Err(HomeError::InvalidName(_))),
                "{bad}"
            );
        }
    }
}
