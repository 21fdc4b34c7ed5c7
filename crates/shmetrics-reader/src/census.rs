//! A census of a metrics directory as it is now: which writers are alive, which files this
//! user cannot read. Cheap (one listing, one open and lock probe per segment, nothing
//! mapped or parsed), for health checks that must not wait for, or trust, the last scrape.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use shmetrics_layout::{SEGMENT_PREFIX, SEGMENT_SUFFIX};

use crate::ReaderError;
use crate::directory::archive_names;
use crate::legacy::parse_db_name;

/// What a metrics directory holds now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Census {
    /// Segments whose writer holds its lock: processes alive now.
    pub live_segments: usize,
    /// Segments whose writer has exited (their values stay merged until compacted).
    pub dead_segments: usize,
    /// The archive of compacted segments, when there is one (0 or 1).
    pub archives: usize,
    /// `prometheus_client` `.db` files.
    pub db_files: usize,
    /// Processes named by `.db` files (the pid in their names) that exist now.
    pub db_writers: usize,
    /// Segment and `.db` files this user cannot read: owned by another user, or whose
    /// permissions refuse it. A reader running as another user than the writers sees only
    /// these.
    pub unreadable: usize,
    /// Entries that are neither: other files, links, directories.
    pub other_entries: usize,
}

impl Census {
    /// Files a scrape can read: segments, the archive and `.db` files.
    pub fn readable(&self) -> usize {
        self.live_segments + self.dead_segments + self.archives + self.db_files
    }
}

/// Takes the census of `dir`.
///
/// # Errors
/// [`ReaderError`] when `dir` is missing, not a directory or cannot be listed.
pub fn census(dir: &Path) -> Result<Census, ReaderError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(ReaderError::DirMissing(dir.to_owned()));
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(ReaderError::NotADirectory(dir.to_owned()));
        }
        Err(e) => return Err(ReaderError::Io(dir.to_owned(), e)),
    };
    let euid = nix::unistd::geteuid().as_raw();
    let archives = archive_names(euid);
    let mut census = Census::default();
    let mut db_pids = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|e| ReaderError::Io(dir.to_owned(), e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Segments being created, archive parts and other hidden files.
        if name.starts_with('.') {
            continue;
        }
        let is_file = entry.file_type().is_ok_and(|t| t.is_file());
        let db = parse_db_name(&name);
        let segment = name.starts_with(SEGMENT_PREFIX) && name.ends_with(SEGMENT_SUFFIX);
        if !is_file || (db.is_none() && !segment) {
            census.other_entries += 1;
            continue;
        }
        let path = entry.path();
        let opened = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path);
        let file = match opened {
            Ok(file) if file.metadata().is_ok_and(|m| m.uid() == euid) => file,
            // Another user's file (never read), or one this user may not open.
            Ok(_) | Err(_) => {
                census.unreadable += 1;
                continue;
            }
        };
        if let Some(db) = db {
            census.db_files += 1;
            if process_exists(db.pid) {
                db_pids.insert(db.pid);
            }
        } else if archives.iter().any(|a| *a == name) {
            census.archives = 1;
        } else {
            match file.try_lock_shared() {
                Ok(()) => census.dead_segments += 1,
                Err(std::fs::TryLockError::WouldBlock) => census.live_segments += 1,
                // A lock that cannot be probed is not evidence of death.
                Err(std::fs::TryLockError::Error(_)) => census.live_segments += 1,
            }
        }
    }
    census.db_writers = db_pids.len();
    Ok(census)
}

/// Whether a process with this pid exists (in this pid namespace; a reused pid counts).
fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}
