//! `shmetrics run`: runs a command with a metrics directory and serves `/metrics` for it
//! while the command runs.
//!
//! When `PROMETHEUS_MULTIPROC_DIR` is unset or empty, `run` creates a private directory
//! (mode 0700, `shmetrics-run-XXXXXXXXXXXX` under `$TMPDIR` or `/tmp`), exports it to the
//! command and removes it once the command has exited. When the variable is set, `run`
//! serves that directory and never deletes it. SIGINT, SIGTERM and SIGHUP received by
//! `run` are forwarded to the command, and `run` keeps serving until the command exits.
//! The exit status is the command's (128 + the signal number when a signal ended it);
//! `run`'s own failures exit with [`RUN_FAILED`] (125): bad arguments, an address it cannot
//! bind, a directory it cannot serve; 127 when the command is not found, 126 when it cannot
//! be started, as shells do.
//!
//! The command stays in `run`'s process group, so a Ctrl-C typed in a terminal reaches it
//! directly as well as through `run`'s forwarding.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus};
use std::time::{Duration, SystemTime};

use clap::Args;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shmetrics::server::{Server, Signals};
use shmetrics_writer::DIR_ENV;
use tokio::signal::unix::SignalKind;

use super::RUN_FAILED;
use super::error::CliError;
use super::http::{
    HttpArgs, announce, bind, listen_address, options, runtime, warn_about_directory,
};

/// Arguments of `run`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The HTTP endpoint.
    #[command(flatten)]
    pub(crate) http: HttpArgs,
    /// The command to run, after `--`, with its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub(crate) command: Vec<OsString>,
}

/// Name prefix of the private directories `run` creates.
pub(crate) const PRIVATE_DIR_PREFIX: &str = "shmetrics-run-";

/// The directory a `run` serves; removed when dropped if `run` created it.
#[derive(Debug)]
struct MetricsDir {
    path: PathBuf,
    owned: bool,
}

impl Drop for MetricsDir {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => super::output::err_line(format_args!(
                "shmetrics: run: cannot remove {}: {e}",
                self.path.display()
            )),
        }
    }
}

fn random_suffix(attempt: u32) -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(attempt);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Creates a fresh directory readable only by this user under `base`.
fn create_private_dir(base: &Path) -> io::Result<MetricsDir> {
    const ATTEMPTS: u32 = 64;
    for attempt in 0..ATTEMPTS {
        let path = base.join(format!("{PRIVATE_DIR_PREFIX}{}", random_suffix(attempt)));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {
                let dir = MetricsDir { path, owned: true };
                // The umask can only clear bits; make it exactly 0700 whatever it is.
                std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(0o700))?;
                return Ok(dir);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("cannot create a directory in {}: {e}", base.display()),
                ));
            }
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "cannot create a directory in {}: {ATTEMPTS} names taken",
            base.display()
        ),
    ))
}

/// The exit status that reports `status` to our parent: the code, or 128 + the signal.
fn exit_code(status: ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(code as u8),
        (None, Some(signal)) => ExitCode::from((128 + signal) as u8),
        (None, None) => ExitCode::FAILURE,
    }
}

fn spawn_error(program: &OsString, e: &io::Error) -> CliError {
    let program = program.to_string_lossy();
    if e.kind() == io::ErrorKind::NotFound {
        CliError::with_code(127, format!("run: {program}: command not found ({e})"))
    } else {
        CliError::with_code(126, format!("run: cannot run {program}: {e}"))
    }
}

/// Sends `signal` to the child, unless it has already been reaped.
fn forward(child: &tokio::process::Child, signal: i32) {
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    match Signal::try_from(signal) {
        Ok(sig) => {
            log::info!("forwarding {sig} to pid {pid}");
            if let Err(e) = kill(Pid::from_raw(pid), sig) {
                log::warn!("forwarding {sig} to pid {pid}: {e}");
            }
        }
        Err(e) => log::warn!("cannot forward signal {signal}: {e}"),
    }
}

/// Serves `server` while the command runs; returns the command's exit status.
async fn supervise(server: Server, command: &[OsString]) -> Result<ExitCode, CliError> {
    let mut signals = Signals::with(&[
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ])
    .map_err(|e| CliError::new(format!("run: cannot catch signals: {e}")))?;
    let Some((program, args)) = command.split_first() else {
        return Err(CliError::with_code(2, "run: no command given after --"));
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env(DIR_ENV, server.dir())
        .spawn()
        .map_err(|e| spawn_error(program, &e))?;
    announce(&server);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            signal = signals.recv() => forward(&child, signal),
        }
    };
    let _ = stop.send(());
    match serving.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("run: serving /metrics: {e}"),
        Err(e) => log::warn!("run: the /metrics server failed: {e}"),
    }
    let status = status.map_err(|e| {
        CliError::new(format!(
            "run: waiting for {}: {e}",
            program.to_string_lossy()
        ))
    })?;
    Ok(exit_code(status))
}

/// Runs `run`: sets up the directory, binds, starts the command, serves until it exits,
/// removes the directory if it created it.
///
/// # Errors
/// Exit status [`RUN_FAILED`] (125) for a missing user directory, an address that cannot
/// be bound, a bad `DYN_SYSTEM_PORT`, a private directory, runtime or signal handlers that
/// cannot be set up; 127 when the command is not found, 126 when it cannot be started.
pub(crate) fn run(args: &RunArgs) -> Result<ExitCode, CliError> {
    let own_failure = |mut e: CliError| {
        if !matches!(e.code, 126 | 127) {
            e.code = RUN_FAILED;
        }
        e
    };
    let listen = listen_address("run", &args.http).map_err(own_failure)?;
    let dir = match std::env::var_os(DIR_ENV) {
        Some(user) if !user.is_empty() => MetricsDir {
            path: PathBuf::from(user),
            owned: false,
        },
        _ => create_private_dir(&std::env::temp_dir())
            .map_err(|e| own_failure(CliError::new(format!("run: {e}"))))?,
    };
    let server = bind(
        "run",
        options("run", &dir.path, listen, &args.http).map_err(own_failure)?,
    )
    .map_err(own_failure)?;
    if !dir.owned {
        warn_unless_writable(&dir.path);
        warn_about_directory("run", &dir.path);
    }
    let rt = runtime("run").map_err(own_failure)?;
    let result = rt.block_on(supervise(server, &args.command));
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(dir);
    result.map_err(own_failure)
}

/// Warns when this user cannot create files in `dir`: the command's processes, which run
/// as this user, could not create their segments, and `/metrics` would stay empty.
fn warn_unless_writable(dir: &Path) {
    if let Err(e) = probe_writable(dir) {
        log::warn!(
            "run: {DIR_ENV}={} is not writable by this user ({e}): the command's processes \
             cannot create their metrics there",
            dir.display()
        );
    }
}

/// Creates a file in `dir` and removes it: an unnamed one (`O_TMPFILE`) where the file
/// system allows it, else a named one. Permission bits alone do not tell (root, read-only
/// mounts, ACLs).
fn probe_writable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let unnamed = std::fs::OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(dir);
    match unnamed {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
            ) =>
        {
            let probe = dir.join(format!(".shmetrics-run-probe-{}", std::process::id()));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&probe)?;
            std::fs::remove_file(&probe)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn private_dirs_are_fresh_0700_and_removed_on_drop() {
        let base = tempfile::tempdir().unwrap();
        let a = create_private_dir(base.path()).unwrap();
        let b = create_private_dir(base.path()).unwrap();
        assert_ne!(a.path, b.path);
        for d in [&a, &b] {
            let name = d.path.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with(PRIVATE_DIR_PREFIX), "{name}");
            assert_eq!(name.len(), PRIVATE_DIR_PREFIX.len() + 12, "{name}");
            assert_eq!(std::fs::metadata(&d.path).unwrap().mode() & 0o7777, 0o700);
        }
        std::fs::write(a.path.join("segment"), b"x").unwrap();
        let (pa, pb) = (a.path.clone(), b.path.clone());
        drop(a);
        drop(b);
        assert!(!pa.exists() && !pb.exists());
        let user = MetricsDir {
            path: base.path().to_owned(),
            owned: false,
        };
        drop(user);
        assert!(base.path().exists(), "a user directory is never removed");
    }

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), ExitCode::from(3));
        assert_eq!(exit_code(ExitStatus::from_raw(15)), ExitCode::from(143));
        assert_eq!(exit_code(ExitStatus::from_raw(9)), ExitCode::from(137));
    }
}
