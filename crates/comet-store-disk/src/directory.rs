//! The data directory: making sure it is ours, that nobody else uses it,
//! and that its format is one this build understands, before anything in
//! it is written.
//!
//! Layout: `history.db` (with SQLite's `-wal` and `-shm` beside it),
//! `history.journal` (format 5, see `journal`) and `LOCK`. The format is recorded inside `history.db` itself, in SQLite's
//! header fields `application_id` (Comet's tag) and `user_version` (the
//! format version), which can be read without changing the file.
//!
//! Refusals, each with a message that says what to do, and each leaving the
//! directory as it was found:
//! - another process holds `LOCK` (two servers on one directory);
//! - the directory holds other files but no `history.db` (not a Comet data
//!   directory: perhaps a wrong path);
//! - `history.db` is not SQLite, or is somebody else's SQLite database, or
//!   has a newer format version.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

/// SQLite `application_id` of a Comet history database ("Comt").
pub(crate) const APPLICATION_ID: i32 = 0x436f_6d74;
/// The format version this build reads and writes.
pub(crate) const FORMAT_VERSION: i32 = 5;
/// The database file's name in the data directory.
pub(crate) const DATABASE: &str = "history.db";
/// The journal's name in the data directory.
const JOURNAL: &str = "history.journal";
const LOCK: &str = "LOCK";

/// Why a data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process uses the directory.
    #[error(
        "the data directory {dir} is in use by another process{holder}; stop it, or give this server another --data-dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// ` (pid N)` when known.
        holder: String,
    },
    /// The directory is not a Comet data directory.
    #[error(
        "{dir} is not a Comet data directory (it holds {found} but no {DATABASE}); refusing to write there. Give an empty or new directory, or the one a Comet server created"
    )]
    NotOurs {
        /// The directory.
        dir: PathBuf,
        /// Some of what it holds.
        found: String,
    },
    /// The database is in a format this build does not understand.
    #[error("{path}: {reason}; the data directory was left untouched")]
    UnknownFormat {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The database is damaged beyond what recovery can repair.
    #[error(
        "{path} is damaged: {reason}; the data directory was left untouched. Restore it from a backup, or move it away to start a new history"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What the check found.
        reason: String,
    },
    /// The file system refused.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// SQLite refused.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done.
        what: String,
        /// The error.
        source: rusqlite::Error,
    },
}

/// What the database file was found to be.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No database yet (or an initialisation that never committed).
    Fresh,
    /// A Comet history of the current format.
    Current,
}

/// A data directory this process holds exclusively until dropped.
pub(crate) struct DataDirectory {
    path: PathBuf,
    _lock: File,
}

impl DataDirectory {
    /// Creates the directory if needed, takes its lock and checks what it
    /// holds.
    pub(crate) fn open(path: &Path) -> Result<(Self, Found), OpenError> {
        std::fs::create_dir_all(path).map_err(|source| OpenError::Io {
            what: format!("creating the data directory {}", path.display()),
            source,
        })?;
        let lock = take_lock(path)?;
        let directory = Self {
            path: path.to_path_buf(),
            _lock: lock,
        };
        let found = directory.inspect()?;
        Ok((directory, found))
    }

    /// The database file.
    pub(crate) fn database(&self) -> PathBuf {
        self.path.join(DATABASE)
    }

    /// The journal file.
    pub(crate) fn journal(&self) -> PathBuf {
        self.path.join(JOURNAL)
    }

    fn inspect(&self) -> Result<Found, OpenError> {
        let database = self.database();
        if !database.exists() {
            let foreign: Vec<String> = std::fs::read_dir(&self.path)
                .map_err(|source| OpenError::Io {
                    what: format!("listing {}", self.path.display()),
                    source,
                })?
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| !is_ignorable(name))
                .collect();
            if foreign.is_empty() {
                return Ok(Found::Fresh);
            }
            let mut shown: Vec<String> = foreign.iter().take(3).cloned().collect();
            if foreign.len() > 3 {
                shown.push(format!("and {} more", foreign.len() - 3));
            }
            return Err(OpenError::NotOurs {
                dir: self.path.clone(),
                found: shown.join(", "),
            });
        }
        check_format(&database)
    }
}

/// Files a directory may hold without being someone else's: our own, hidden
/// files, and a file system's `lost+found`.
fn is_ignorable(name: &str) -> bool {
    name == LOCK
        || name.starts_with(DATABASE)
        || name.starts_with(JOURNAL)
        || name.starts_with('.')
        || name == "lost+found"
}

fn take_lock(path: &Path) -> Result<File, OpenError> {
    let lock_path = path.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|source| OpenError::Io {
            what: format!("opening {}", lock_path.display()),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&lock_path)
                .ok()
                .map(|pid| pid.trim().to_string())
                .filter(|pid| !pid.is_empty())
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            return Err(OpenError::Locked {
                dir: path.to_path_buf(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(OpenError::Io {
                what: format!("locking {}", lock_path.display()),
                source,
            });
        }
    }
    let pid = std::process::id().to_string();
    let written = file
        .set_len(0)
        .and_then(|()| file.write_all(pid.as_bytes()))
        .and_then(|()| file.flush());
    written.map_err(|source| OpenError::Io {
        what: format!("writing {}", lock_path.display()),
        source,
    })?;
    Ok(file)
}

/// SQLite's write-ahead log of the database file `database`.
fn log_of(database: &Path) -> PathBuf {
    database.with_file_name(format!("{DATABASE}-wal"))
}

/// Reads the format fields without writing anything.
fn check_format(database: &Path) -> Result<Found, OpenError> {
    let unknown = |reason: String| OpenError::UnknownFormat {
        path: database.to_path_buf(),
        reason,
    };
    // Without a pending log, look at the file as immutable: SQLite then
    // creates no `-wal` or `-shm` beside it. With one (after a crash), the
    // log may hold the newest header, so read through it.
    let wal = log_of(database);
    let pending_log = std::fs::metadata(&wal).is_ok_and(|meta| meta.len() > 0);
    let opened = if pending_log {
        Connection::open_with_flags(
            database,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    } else {
        Connection::open_with_flags(
            format!("file:{}?immutable=1", uri_path(database)),
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
    };
    let connection =
        opened.map_err(|error| unknown(format!("cannot be opened as a database ({error})")))?;
    let read = |pragma: &str| -> Result<i32, OpenError> {
        connection
            .query_row(&format!("PRAGMA {pragma}"), [], |row| row.get(0))
            .map_err(|error| unknown(format!("is not a SQLite database ({error})")))
    };
    let application_id = read("application_id")?;
    let version = read("user_version")?;
    if application_id == 0 && version == 0 {
        let tables: i64 = connection
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(|error| unknown(format!("is not a SQLite database ({error})")))?;
        return if tables == 0 {
            Ok(Found::Fresh)
        } else {
            Err(unknown(
                "is a SQLite database, but not a Comet history".to_string(),
            ))
        };
    }
    if application_id != APPLICATION_ID {
        return Err(unknown(format!(
            "is a SQLite database of another application (application_id {application_id:#x})"
        )));
    }
    if version > FORMAT_VERSION {
        return Err(unknown(format!(
            "was written in history format {version} by a newer Comet; this build understands format {FORMAT_VERSION}. Run a newer Comet"
        )));
    }
    if version < 1 {
        return Err(unknown(format!("has an invalid format version {version}")));
    }
    Ok(Found::Current)
}

/// A path in the form of a `file:` URI (RFC 3986 path characters kept,
/// everything else percent-encoded).
fn uri_path(path: &Path) -> String {
    let mut encoded = String::new();
    for byte in path.as_os_str().as_encoded_bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'-' | b'.' | b'_' | b'~' => {
                encoded.push(*byte as char)
            }
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}
