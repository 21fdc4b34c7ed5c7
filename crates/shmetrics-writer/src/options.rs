//! Registry settings: where and how a process's segments are created.

/// Registry settings; the defaults suit most processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Permission bits of new segment files (default `0o600`: only the owner may read).
    pub file_mode: u32,
    /// Size of the first segment in bytes (default 256 KiB). Each continuation segment
    /// doubles the previous size, up to `max_segment_size`.
    pub initial_segment_size: usize,
    /// Largest segment in bytes (default 64 MiB).
    pub max_segment_size: usize,
    /// Most segments per process (default 64). Series beyond what they hold are counted as
    /// dropped and get handles that write to private memory: the engine never fails or
    /// blocks on metrics.
    pub max_segments: usize,
    /// Survive a segment file truncated under this process (default `false`). Only this
    /// process and its own user can truncate its segments; if one does, the next write to a
    /// page past the new end raises `SIGBUS`, which ends the process as for any mapped file.
    /// With this set, a `SIGBUS` inside the process's own segments replaces the page with
    /// private zeros instead: the engine goes on, the series on that page count again from
    /// zero, privately (no reader sees them; the file's new size makes readers reject the
    /// segment), and [`Registry::truncated`](crate::Registry::truncated) says so. It
    /// installs a process-wide `SIGBUS` handler that passes any other fault to the handler
    /// the process had before.
    pub guard_truncation: bool,
    /// In a child forked from this process, create the child's segments in the directory
    /// `PROMETHEUS_MULTIPROC_DIR` names at the fork (when it names one), instead of this
    /// registry's (default `false`). As `prometheus_client` reopens its files after a fork:
    /// the Python drop-in sets it, so a child forked after the variable changed writes
    /// into the new directory, and one whose registry's directory was removed does not
    /// lose its metrics while the variable names another.
    pub follow_env_dir_after_fork: bool,
    /// Copies a counter, histogram or summary series is spread over once threads of this
    /// process are found writing it at the same time (default: the number of CPUs this
    /// process may run on, rounded up to a power of two, from 2 to 16). A power of two up
    /// to [`MAX_STRIPES`](crate::MAX_STRIPES); `1` never spreads a series. Each copy is a
    /// series record with the same labels that readers add up, placed once, the first time
    /// 64 writes to the series' float word (a histogram's or summary's sum, a counter's
    /// fractional part) met another thread's write within a millisecond; from then on each
    /// thread writes the copy its number picks, as in a family registered with
    /// `Registry::histogram_striped` or `counter_striped`, whose copies this does not
    /// change. A series written at once only now and then is never spread.
    pub contention_stripes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            file_mode: 0o600,
            initial_segment_size: 256 * 1024,
            max_segment_size: 64 * 1024 * 1024,
            max_segments: 64,
            guard_truncation: false,
            follow_env_dir_after_fork: false,
            contention_stripes: default_contention_stripes(),
        }
    }
}

/// The default [`Options::contention_stripes`]: a copy per CPU this process may run on (two
/// threads on two CPUs each get one), at most 16 (a series' slots, 16 times over, for each
/// series a thread pool writes at once).
fn default_contention_stripes() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, usize::from);
    cpus.next_power_of_two().clamp(2, 16)
}

/// Environment variable that turns [`Options::guard_truncation`] on for registries opened
/// with [`Options::from_env`] (`Registry::open`, `Registry::from_env`, and so the Python
/// package): `1`.
pub const GUARD_TRUNCATION_ENV: &str = "SHMETRICS_GUARD_TRUNCATION";

impl Options {
    /// The defaults, with [`Options::guard_truncation`] on when [`GUARD_TRUNCATION_ENV`] is
    /// `1`: an engine that embeds the Python package or opens registries through
    /// [`Registry::open`](crate::Registry::open) can opt in without code.
    pub fn from_env() -> Self {
        Self {
            guard_truncation: std::env::var(GUARD_TRUNCATION_ENV).as_deref() == Ok("1"),
            ..Self::default()
        }
    }
}
