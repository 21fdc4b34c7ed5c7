"""Machinery shared by the comparison scripts in benches/compare/.

- prometheus_client: re-executing a script under an interpreter that has it (and, where the
  script asks for it, creating the repository's .venv as ci/test.sh does);
- binaries: locating `shmetrics` and `scrape-client` in the cargo target directory;
- exposition: parsing Prometheus text format 0.0.4 as both sides write it, and comparing two
  outputs sample by sample;
- processes: `Cleanup` (every process and directory a script starts, removed whatever
  happens), `shmetrics generate --stay`, `shmetrics serve`, `scrape-client`, a bounded pool of
  child processes, child resource usage (wait4) and a process's VmHWM;
- statistics: nearest-rank percentiles.

The scripts import it as `common` (their own directory is first on sys.path).
"""

import json
import math
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIREMENTS = os.path.join(REPO, "ci", "requirements.txt")
DEFAULT_VENV = os.path.join(REPO, ".venv")


# ---------------------------------------------------------------------------------------
# prometheus_client and the interpreter.
# ---------------------------------------------------------------------------------------

def _has_prometheus_client(py):
    return subprocess.run([py, "-c", "import prometheus_client"], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0


def install_venv(venv, log_prefix):
    """Creates `venv` (python3 -m venv) when it has no interpreter, then installs
    ci/requirements.txt into it when it cannot import prometheus_client, as ci/test.sh does.
    Returns the venv's python."""
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        print(f"{log_prefix}: creating {venv} (python3 -m venv)", file=sys.stderr, flush=True)
        base = shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", venv], check=True)
    if not _has_prometheus_client(py):
        print(f"{log_prefix}: installing {os.path.relpath(REQUIREMENTS, REPO)} into {venv}",
              file=sys.stderr, flush=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "-r", REQUIREMENTS], check=True)
    return py


def ensure_prometheus_client(script, argv, reexec_env, python=None, venv=None, name="compare"):
    """Makes sure `script` runs under an interpreter with prometheus_client.

    With `python`, re-executes `script` under it (once). Otherwise, when the running
    interpreter lacks prometheus_client, re-executes under `venv`'s python: with `venv`
    given, that venv is created and provisioned first if needed (`install_venv`); without it,
    the repository's .venv/bin/python must already exist."""
    env = dict(os.environ, **{reexec_env: "1"})
    if python and not os.environ.get(reexec_env):
        os.execve(python, [python, os.path.abspath(script)] + argv, env)
    try:
        import prometheus_client  # noqa: F401
        return
    except ImportError:
        pass
    if os.environ.get(reexec_env):
        sys.exit(f"{name}: prometheus_client is not importable by {sys.executable}; "
                 f"run ci/test.sh (creates .venv) or pass --python")
    if python is None and venv is not None:
        py = install_venv(venv, name)
    else:
        py = python or os.path.join(DEFAULT_VENV, "bin", "python")
        if not os.path.exists(py):
            sys.exit(f"{name}: prometheus_client is not importable by {sys.executable} and "
                     f"{py} cannot provide it; run ci/test.sh (creates .venv) or pass --python")
    os.execve(py, [py, os.path.abspath(script)] + argv, env)


def child_env(reexec_env, **extra):
    """The environment for a child interpreter of a script: without the script's re-exec
    marker, with `extra` set."""
    env = dict(os.environ, **extra)
    env.pop(reexec_env, None)
    return env


# ---------------------------------------------------------------------------------------
# Binaries and the machine.
# ---------------------------------------------------------------------------------------

def target_dir(explicit=None):
    return explicit or os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target")


def find_binaries(target, shmetrics=None, scrape_client=None, name="compare"):
    """(shmetrics, scrape-client) paths, from TARGET/release unless given; exits with a build
    hint when one is missing."""
    shm = shmetrics or os.path.join(target, "release", "shmetrics")
    client = scrape_client or os.path.join(target, "release", "scrape-client")
    for b in (shm, client):
        if not os.access(b, os.X_OK):
            sys.exit(f"{name}: {b} not found; run "
                     "`cargo build --release -p shmetrics -p shmetrics-benches` (or pass "
                     "--target-dir / --shmetrics / --scrape-client)")
    return shm, client


def machine_info(load_before):
    from importlib.metadata import version

    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(),
            "prometheus_client": version("prometheus_client"),
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}


# ---------------------------------------------------------------------------------------
# Text exposition parsing (Prometheus text format 0.0.4 as both sides write it).
# ---------------------------------------------------------------------------------------

LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def unescape(s):
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            n = s[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(n, "\\" + n))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_sample(line):
    """(name, {label: value}, value) of one sample line."""
    brace = line.find("{")
    if brace >= 0:
        end = line.rindex("}")
        name = line[:brace]
        labels = {k: unescape(v) for k, v in LABEL_RE.findall(line[brace + 1:end])}
        rest = line[end + 1:].split()
    else:
        parts = line.split()
        name, labels, rest = parts[0], {}, parts[1:]
    return name, labels, float(rest[0])


def parse_exposition(text):
    """Families in order: {name, type, help, samples: [(sample name, labels, value)]}."""
    families = {}
    order = []
    current = None
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            kind, rest = line[2:6], line[7:]
            name, _, tail = rest.partition(" ")
            fam = families.get(name)
            if fam is None:
                fam = families[name] = {"name": name, "type": "untyped", "help": "", "samples": []}
                order.append(name)
            if kind == "HELP":
                fam["help"] = unescape(tail)
            else:
                fam["type"] = tail.strip()
            current = fam
            continue
        if line.startswith("#"):
            continue
        name, labels, value = parse_sample(line)
        if current is None or not sample_belongs(name, current):
            raise ValueError(f"sample {name} outside its family: {line!r}")
        current["samples"].append((name, labels, value))
    return [families[n] for n in order]


def sample_belongs(sample, fam):
    name = fam["name"]
    if fam["type"] in ("histogram", "summary"):
        return sample == name or sample in (name + "_bucket", name + "_sum", name + "_count")
    return sample == name


def count_samples(families):
    return sum(len(f["samples"]) for f in families)


def sample_values(families):
    """{(sample name, sorted labels): value} with `le` normalised as a number and `pid`
    values hidden (pids differ between the two sides)."""
    values = {}
    for fam in families:
        for name, labels, value in fam["samples"]:
            norm = []
            for k, v in sorted(labels.items()):
                if k == "le":
                    v = repr(float(v))
                elif k == "pid":
                    v = "*"
                norm.append((k, v))
            values[(name, tuple(norm))] = value
    return values


def compare_outputs(shm_families, py_families, histogram_names):
    """Raises unless both outputs hold the same samples with the same values (`_sum`
    samples of the families in `histogram_names` excepted: a replay may make those
    approximate). Returns the number of values compared."""
    a, b = sample_values(shm_families), sample_values(py_families)
    missing, extra = a.keys() - b.keys(), b.keys() - a.keys()
    if missing or extra:
        raise RuntimeError(
            f"prometheus_client output differs from the shmetrics dump: {len(missing)} samples "
            f"missing (e.g. {sorted(missing)[:3]}), {len(extra)} extra "
            f"(e.g. {sorted(extra)[:3]})")
    exact = [k for k in a if not (k[0].endswith("_sum") and k[0][:-4] in histogram_names)]
    wrong = [k for k in exact if not math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-9)]
    if wrong:
        k = wrong[0]
        raise RuntimeError(f"{len(wrong)} of {len(exact)} values differ, e.g. {k}: shmetrics "
                           f"{a[k]}, prometheus_client {b[k]}")
    return len(exact)


# ---------------------------------------------------------------------------------------
# Statistics.
# ---------------------------------------------------------------------------------------

def percentile(sorted_values, p):
    """Nearest-rank percentile (as scrape-client computes it)."""
    rank = max(1, min(len(sorted_values), math.ceil(p / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


def summarize(times_s):
    t = sorted(x * 1e3 for x in times_s)
    return {
        "count": len(t),
        "p50_ms": percentile(t, 50), "p90_ms": percentile(t, 90), "p99_ms": percentile(t, 99),
        "mean_ms": sum(t) / len(t), "min_ms": t[0], "max_ms": t[-1],
    }


# ---------------------------------------------------------------------------------------
# Processes.
# ---------------------------------------------------------------------------------------

class Cleanup:
    """Processes and directories to remove, whatever happens."""

    def __init__(self):
        self.pids = []      # engine pids printed by `generate --stay`
        self.groups = []    # process groups of `generate` runs (its engines inherit them)
        self.procs = []     # Popen objects started here
        self.dirs = []

    def stop_pids(self):
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        for pid in self.pids:
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.02)
            else:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.pids = []
        # Engines of a `generate` interrupted before it printed their pids.
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.groups = []

    def stop_procs(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = []

    def all(self):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.stop_procs()
        self.stop_pids()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs = []


def interrupt_on_signals():
    """SIGINT and SIGTERM raise KeyboardInterrupt, so that `finally: cleanup.all()` runs."""
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def start_generate(shm, directory, extra, cleanup, timeout=600):
    """Runs `shmetrics generate --dir DIR EXTRA --stay` in its own session and returns the
    pids of the workers it leaves running (also recorded in `cleanup.pids`)."""
    gen = subprocess.Popen(
        [shm, "generate", "--dir", directory] + list(extra) + ["--stay"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    cleanup.groups.append(gen.pid)
    cleanup.procs.append(gen)
    stdout, stderr = gen.communicate(timeout=timeout)
    cleanup.procs.remove(gen)
    if gen.returncode != 0:
        raise RuntimeError(f"shmetrics generate exited {gen.returncode}: {stderr.strip()}")
    pids = [int(x) for x in stdout.split()]
    cleanup.pids.extend(pids)
    return pids


def start_serve(shm, directory, cleanup, extra=(), self_metrics=False):
    """Starts `shmetrics serve` on a free loopback port (recorded in `cleanup.procs`) and
    returns it with its `/metrics` URL (`http://` or, with a web configuration, `https://`)."""
    quiet = [] if self_metrics else ["--no-self-metrics"]
    proc = subprocess.Popen(
        [shm, "serve", "--dir", directory, "--listen", "127.0.0.1:0", *quiet, *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cleanup.procs.append(proc)
    deadline = time.monotonic() + 30
    seen = []
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            m = re.search(r"serving (https?://\S+/metrics)", line)
            if m:
                # Keep draining stderr so the server never blocks on a full pipe.
                threading.Thread(target=proc.stderr.read, daemon=True).start()
                return proc, m.group(1)
        elif proc.poll() is not None:
            break
    raise RuntimeError(f"shmetrics serve did not start: {''.join(seen)}")


def stop_proc(proc, cleanup):
    if proc.stdin:
        proc.stdin.close()
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    cleanup.procs.remove(proc)


def scrape_client(client, url, count, warmup, accept=None, timeout=1800):
    """Runs scrape-client and returns its JSON result."""
    cmd = [client, url, "--count", str(count), "--warmup", str(warmup)]
    if accept:
        cmd += ["--accept", accept]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
    return json.loads(out.stdout)


def run_pool(commands, parallelism, cleanup, env=None, progress=None, label="command"):
    """Runs `commands` (argument lists), at most `parallelism` at once; raises with every
    failure's stderr (as `LABEL i exited ...`) once all have ended. `progress(done, total)`
    is called as they end."""
    pending = list(enumerate(commands))
    running = {}
    failures = []
    done = 0
    while pending or running:
        while pending and len(running) < parallelism:
            i, cmd = pending.pop(0)
            proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            cleanup.procs.append(proc)
            running[i] = proc
        for i, proc in list(running.items()):
            if proc.poll() is not None:
                err = proc.stderr.read()
                if proc.returncode != 0:
                    failures.append(f"{label} {i} exited {proc.returncode}: {err.strip()}")
                cleanup.procs.remove(proc)
                del running[i]
                done += 1
                if progress:
                    progress(done, len(commands))
        time.sleep(0.01)
    if failures:
        raise RuntimeError("; ".join(failures))


def run_with_rusage(cmd, cleanup, stdout=subprocess.DEVNULL, timeout=600, env=None):
    """Runs `cmd` to completion; returns (wall seconds from spawn to exit, peak RSS in KiB
    from wait4's ru_maxrss, stderr text). Raises on a non-zero exit or after `timeout`."""
    with tempfile.TemporaryFile() as errf:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=stdout, stderr=errf,
                                env=env)
        cleanup.procs.append(proc)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        cleanup.procs.remove(proc)
        errf.seek(0)
        stderr = errf.read().decode("utf-8", "replace")
    if elapsed >= timeout:
        raise RuntimeError(f"{cmd[0]} ran over {timeout} s")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {stderr.strip()}")
    return elapsed, usage.ru_maxrss, stderr


def peak_rss_kib(cmd, cleanup, timeout=600):
    """Peak RSS in KiB of one run of `cmd` (output discarded) and how it was measured.

    A child's ru_maxrss (wait4) is not its own peak when its parent is a big process: on
    exec, Linux folds the RSS high-water mark of the memory it replaces into the child's
    ru_maxrss, and a child that Python spawns (vfork or fork) starts with the interpreter's
    memory. So the command runs under GNU time (`/usr/bin/time -f %M`, a small C parent
    that forks it): its figure exceeds the command's own peak by at most `time`'s RSS at
    fork, a few MiB at most. Without /usr/bin/time, the wait4 figure is returned, marked as
    an upper bound."""
    gnu_time = "/usr/bin/time"
    if os.access(gnu_time, os.X_OK):
        with tempfile.NamedTemporaryFile("r", suffix=".rss") as out:
            run_with_rusage([gnu_time, "-f", "%M", "-o", out.name] + list(cmd), cleanup,
                            timeout=timeout)
            return int(out.read().split()[-1]), "/usr/bin/time %M"
    _, maxrss, _ = run_with_rusage(cmd, cleanup, timeout=timeout)
    return maxrss, "wait4 ru_maxrss (upper bound: includes the spawning interpreter's RSS)"


def proc_status_kib(pid, field):
    """A `kB` field of /proc/PID/status (VmHWM, VmRSS, RssAnon, RssFile, ...), in KiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def vm_hwm_kib(pid):
    """Peak resident set size (VmHWM) of a running process, in KiB."""
    return proc_status_kib(pid, "VmHWM")


# ---------------------------------------------------------------------------------------
# prometheus_client's scrape.
# ---------------------------------------------------------------------------------------

def time_generate_latest(py_dir, count, warmup):
    """Times a fresh CollectorRegistry() + MultiProcessCollector(registry) +
    generate_latest(registry) per scrape, as prometheus_client documents; returns the
    summary and the last body."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    times = []
    body = b""
    for i in range(warmup + count):
        start = time.perf_counter()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=py_dir)
        body = generate_latest(registry)
        elapsed = time.perf_counter() - start
        if i >= warmup:
            times.append(elapsed)
    return summarize(times), body


def write_report(path, report):
    """Writes a run's results as indented JSON to `path` and says so."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"wrote {path}")

