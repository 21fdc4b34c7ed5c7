//! The shell blocks of README.md and docs/*.md, run as printed.
//!
//! Every ```sh block of those pages has a plan here, found by the file and its first line;
//! a block without one fails the test, so a new example is either run or has a stated
//! reason not to be. Every block must at least parse (`bash -n`).
//!
//! Blocks run with `bash -euo pipefail`, in a scratch directory, with a `PATH` that starts
//! with a directory holding `shmetrics` (the binary this test was built with), a `cargo`
//! that runs it for `cargo run --release -p shmetrics -- ARGS` (instead of building it
//! again in release mode) and a stand-in `vllm` (it prints its arguments, writes a metric
//! through `prometheus_client`'s file layout, and exits 0). `/run/metrics`, which needs root, is
//! replaced by a scratch directory. The README's demo and serve commands listen on port
//! 8081 of every interface, as printed: the test needs that port free.
//!
//! Blocks not run here say why, and where the reason is another part of the test command
//! (`ci/test.sh` runs `ci/miri.sh`, the Python suite runs a block), that is checked too.
//!
//! The other examples are checked where they can run: README's Prometheus configuration
//! (```yaml) by `promtool check config` and its `/health` answer (```json) against a real
//! one, here; its PromQL (```promql) by a real Prometheus over the demo
//! (`tests/prometheus_e2e.rs`); Rust blocks as doctests; Python blocks by
//! `crates/shmetrics-python/tests/test_docs.py`; the engine unit of docs/deployment.md
//! (```ini) by `ci/deploy-check.py`; the command synopsis (```text) by
//! `readme_synopsis_matches_help` in `tests/cli.rs`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_shmetrics");

/// What is done with a block.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// The demo: started in the background until the blocks that use it have run.
    Demo,
    /// Runs while the demo runs; each output line is checked.
    AgainstDemo,
    /// Prometheus, with README's configuration, scraping the demo.
    Prometheus,
    /// `shmetrics serve`: started, asked for `/health`, stopped with SIGTERM.
    Serve,
    /// `shmetrics push` to a pushgateway the test starts where the block says.
    Push,
    /// Runs to completion; must exit 0.
    Run,
    /// Run as printed by another part of the test command (the text names it and is
    /// found in that file).
    RunBy(&'static str, &'static str),
    /// Not run: why.
    Skip(&'static str),
}

/// The plans: (file, first line of the block, plan).
const PLANS: &[(&str, &str, Plan)] = &[
    (
        "README.md",
        "cargo run --release -p shmetrics -- demo",
        Plan::Demo,
    ),
    (
        "README.md",
        "curl -s http://127.0.0.1:8081/metrics | grep -E",
        Plan::AgainstDemo,
    ),
    (
        "README.md",
        "prometheus --config.file=prometheus.yml",
        Plan::Prometheus,
    ),
    (
        "README.md",
        "./ci/test.sh",
        Plan::Skip("the test command itself, which runs this test"),
    ),
    (
        "README.md",
        "shmetrics serve --dir /run/metrics --prefix vllm: --prefix lmcache:",
        Plan::Serve,
    ),
    (
        "README.md",
        "shmetrics push --gateway http://127.0.0.1:9091",
        Plan::Push,
    ),
    (
        "README.md",
        "shmetrics run --prefix vllm: -- vllm serve",
        Plan::Run,
    ),
    (
        "README.md",
        "python3 -m venv .venv && .venv/bin/pip install maturin prometheus_client",
        Plan::RunBy("ci/python-test.sh", "maturin build --release"),
    ),
    (
        "docs/deployment.md",
        "install -m 0644 deploy/shmetrics.service",
        Plan::RunBy("ci/deploy-check.py", "systemd-analyze"),
    ),
    (
        "docs/deployment.md",
        "docker build -f deploy/Containerfile",
        Plan::Skip(
            "needs a Docker daemon, which this machine has not: ci/deploy-check.py checks the \
             Containerfile's stages, user and volume instead",
        ),
    ),
    (
        "docs/deployment.md",
        "kubectl apply -f deploy/kubernetes.yaml",
        Plan::RunBy("ci/deploy-check.py", "kubernetes-validate"),
    ),
    (
        "docs/deployment.md",
        "shmetrics serve --dir /run/shmetrics --prefix vllm: --prefix lmcache:",
        Plan::RunBy(
            "crates/shmetrics/tests/remote_write.rs",
            "fn the_documented_remote_write_command_and_file_run_as_printed",
        ),
    ),
    (
        "docs/performance.md",
        "cargo bench -p shmetrics-benches --bench facade",
        Plan::Skip(
            "a benchmark run (minutes on a quiet machine); the benches run in test mode in ci/test.sh",
        ),
    ),
    (
        "docs/performance.md",
        "cargo bench -p shmetrics-benches --bench writer -- exemplar_write",
        Plan::Skip(
            "a benchmark run (a minute on a quiet machine); the benches run in test mode in ci/test.sh",
        ),
    ),
    (
        "docs/performance.md",
        "cargo build --release -p shmetrics",
        Plan::Skip(
            "a benchmark run (minutes on a quiet machine; the scrape latency one rewrites a results file)",
        ),
    ),
    (
        "docs/performance.md",
        ".venv/bin/python benches/compare/python_instructions.py --config dropin",
        Plan::Skip(
            "a benchmark run (a minute under valgrind), the second line against a build of an \
             earlier commit in a second venv",
        ),
    ),
    (
        "docs/performance.md",
        ".venv/bin/python benches/compare/python_api.py --rounds 3 --python",
        Plan::Skip(
            "a benchmark run (ten minutes on a quiet machine) against a build of an earlier \
             commit in a second venv",
        ),
    ),
    (
        "docs/python.md",
        "python3 -m venv .venv && . .venv/bin/activate",
        Plan::RunBy("ci/python-test.sh", "maturin build --release"),
    ),
    (
        "docs/python.md",
        "export SHMETRICS_PROMETHEUS_CLIENT=1",
        Plan::Run,
    ),
    (
        "docs/python.md",
        "SHMETRICS_PROMETHEUS_CLIENT=1 PROMETHEUS_MULTIPROC_DIR=/tmp/vllm-metrics vllm serve MODEL",
        Plan::RunBy(
            "crates/shmetrics-python/tests/test_docs.py",
            "def test_the_vllm_serve_line_runs_as_printed",
        ),
    ),
    (
        "docs/python.md",
        "PROMETHEUS_MULTIPROC_DIR=/tmp/metrics gunicorn --preload -w 4",
        Plan::RunBy(
            "crates/shmetrics-python/tests/test_docs.py",
            "def test_the_gunicorn_line_runs_as_printed",
        ),
    ),
    (
        "docs/reliability.md",
        "ci/fuzz-smoke.sh",
        Plan::RunBy("ci/test.sh", "bash ci/fuzz-smoke.sh"),
    ),
    (
        "docs/reliability.md",
        "ci/miri.sh",
        Plan::RunBy("ci/test.sh", "bash ci/miri.sh"),
    ),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The text of README's fenced blocks in `language`.
fn readme_blocks(language: &str) -> Vec<String> {
    let text = std::fs::read_to_string(root().join("README.md")).unwrap();
    let fence = format!("```{language}");
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        current = match current.take() {
            None if trimmed == fence => Some(String::new()),
            None => None,
            Some(body) if trimmed == "```" => {
                out.push(body);
                None
            }
            Some(mut body) => {
                body.push_str(line);
                body.push('\n');
                Some(body)
            }
        };
    }
    out
}

/// The keys of a JSON object, nested objects' keys as `outer.inner`, sorted.
fn keys(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            let key = format!("{prefix}{k}");
            keys(v, &format!("{key}."), out);
            out.push(key);
        }
    }
    out.sort();
}

/// A shell block: where it is and its text.
struct Block {
    file: String,
    line: usize,
    text: String,
}

/// Every ```sh (or bash, shell) block of README.md and docs/*.md.
fn shell_blocks() -> Vec<Block> {
    let mut files = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut blocks = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        let mut current: Option<(usize, String)> = None;
        for (n, line) in text.lines().enumerate() {
            let fence = line.trim_start();
            match &mut current {
                None if matches!(fence, "```sh" | "```bash" | "```shell") => {
                    current = Some((n + 2, String::new()));
                }
                Some((start, body)) if fence == "```" => {
                    blocks.push(Block {
                        file: file.clone(),
                        line: *start,
                        text: std::mem::take(body),
                    });
                    current = None;
                }
                Some((_, body)) => {
                    body.push_str(line.trim_start_matches(' '));
                    body.push('\n');
                }
                None => {}
            }
        }
    }
    blocks
}

fn plan_of(block: &Block) -> Option<Plan> {
    let first = block.text.lines().next().unwrap_or("");
    PLANS
        .iter()
        .find(|(file, start, _)| *file == block.file && first.starts_with(start))
        .map(|(_, _, plan)| *plan)
}

/// A scratch directory with the `PATH` entries the blocks run with.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(BIN, bin.join("shmetrics")).unwrap();
        let script = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let path = bin.join(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script(
            "cargo",
            &format!(
                "#!/bin/sh\n# cargo run --release -p shmetrics -- ARGS: the binary under test\n\
                 [ \"$1 $2 $3 $4 $5\" = 'run --release -p shmetrics --' ] || exit 97\n\
                 shift 5\nexec '{BIN}' \"$@\"\n"
            ),
        );
        // vLLM writes `<type>_<pid>.db` files into PROMETHEUS_MULTIPROC_DIR; the stand-in
        // leaves a file where it would, so the test sees the directory it was given.
        script(
            "vllm",
            "#!/bin/sh\necho \"vllm stand-in: $*\"\n\
             [ -d \"$PROMETHEUS_MULTIPROC_DIR\" ] || { echo 'no PROMETHEUS_MULTIPROC_DIR' >&2; exit 3; }\n\
             echo \"$PROMETHEUS_MULTIPROC_DIR\"\nsleep 1\n",
        );
        Self { dir }
    }

    fn command(&self, text: &str) -> Command {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", text])
            .current_dir(self.dir.path())
            .env("PATH", path)
            .env_remove("PROMETHEUS_MULTIPROC_DIR")
            .env_remove("DYN_SYSTEM_PORT");
        for proxy in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            cmd.env_remove(proxy);
        }
        cmd
    }

    fn output(&self, text: &str) -> Output {
        self.command(text)
            .stdin(Stdio::null())
            .output()
            .expect("run bash")
    }
}

/// A background block, stopped with `signal` by [`Background::stop`] (and killed if the
/// test fails first), and what it printed after its first line (drained by a thread).
struct Background(Child, Option<std::thread::JoinHandle<String>>);

impl Background {
    /// Sends `signal` and waits, bounded; returns the exit code and the rest of the output.
    fn stop(mut self, signal: Signal) -> (Option<i32>, String) {
        // bash runs the block's one command with exec, so the pid is the command's.
        let _ = kill(Pid::from_raw(self.0.id() as i32), signal);
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.0.try_wait().ok().flatten();
        let rest = self
            .1
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        (status.and_then(|s| s.code()), format!("{status:?}: {rest}"))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts a block in the background and returns it with the first line it printed that
/// contains `marker` (on stdout, or stderr with `on_stderr`).
fn start(sandbox: &Sandbox, text: &str, marker: &str, on_stderr: bool) -> (Background, String) {
    let mut cmd = sandbox.command(text);
    cmd.stdin(Stdio::null());
    if on_stderr {
        cmd.stderr(Stdio::piped()).stdout(Stdio::null());
    } else {
        cmd.stdout(Stdio::piped());
    }
    let mut child = Background(cmd.spawn().expect("start bash"), None);
    let stream: Box<dyn std::io::Read + Send> = if on_stderr {
        Box::new(child.0.stderr.take().unwrap())
    } else {
        Box::new(child.0.stdout.take().unwrap())
    };
    let mut lines = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = lines.read_line(&mut line).expect("read the block's output");
        assert!(n > 0, "{text:?} ended before printing {marker:?}");
        if line.contains(marker) {
            break;
        }
    }
    // Keep draining so the block never blocks on a full pipe.
    child.1 = Some(std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut lines, &mut rest);
        rest
    }));
    (child, line.trim_end().to_owned())
}

fn port_8081_is_free() -> bool {
    std::net::TcpListener::bind("0.0.0.0:8081").is_ok()
}

#[test]
fn every_shell_block_of_the_docs_has_a_plan_and_parses() {
    let blocks = shell_blocks();
    assert!(blocks.len() >= 17, "{} blocks", blocks.len());
    for b in &blocks {
        let plan = plan_of(b).unwrap_or_else(|| {
            panic!(
                "{}:{}: no plan for this block: run it in tests/doc_commands.rs or say why not\n{}",
                b.file, b.line, b.text
            )
        });
        let syntax = Command::new("bash")
            .args(["-n", "-c", &b.text])
            .output()
            .unwrap();
        assert!(
            syntax.status.success(),
            "{}:{}: {}",
            b.file,
            b.line,
            String::from_utf8_lossy(&syntax.stderr)
        );
        match plan {
            Plan::RunBy(file, text) => {
                let by = std::fs::read_to_string(root().join(file)).unwrap();
                assert!(
                    by.contains(text),
                    "{}:{}: {file} does not contain {text:?}",
                    b.file,
                    b.line
                );
            }
            Plan::Skip(why) => eprintln!("{}:{}: not run: {why}", b.file, b.line),
            _ => {}
        }
    }
    // Every plan still has its block.
    for (file, start, _) in PLANS {
        assert!(
            blocks
                .iter()
                .any(|b| b.file == *file && b.text.lines().next().unwrap_or("").starts_with(start)),
            "{file}: no block starts with {start:?} any more"
        );
    }
}

fn block(plan: fn(Plan) -> bool) -> Vec<Block> {
    shell_blocks()
        .into_iter()
        .filter(|b| plan_of(b).is_some_and(plan))
        .collect()
}

/// README's demo, the `curl` lines run against it, then `serve` and `run` as printed, one
/// after another on port 8081; then the plain blocks.
#[test]
fn the_runnable_blocks_run_as_printed() {
    assert!(
        port_8081_is_free(),
        "port 8081 is taken: README's commands listen there, as printed"
    );
    let sandbox = Sandbox::new();

    // The demo, and the curl lines against it.
    let [demo] = &block(|p| matches!(p, Plan::Demo))[..] else {
        panic!("one demo block");
    };
    let (demo, banner) = start(&sandbox, &demo.text, "serving http://", false);
    assert!(
        banner.starts_with("serving http://127.0.0.1:8081/metrics (listening on 0.0.0.0:8081"),
        "{banner}"
    );
    let [curls] = &block(|p| matches!(p, Plan::AgainstDemo))[..] else {
        panic!("one block against the demo");
    };
    // Each line on its own, run again (bounded) until it shows what the demo settles to:
    // the engines start one after another, so a first answer may hold only some of them.
    type Check = fn(&str) -> Result<(), String>;
    let checks: [Check; 4] = [
        |out| {
            for engine in 0..4 {
                for metric in ["vllm:num_requests_running", "vllm:prompt_tokens_total"] {
                    let series = format!("{metric}{{engine=\"{engine}\"");
                    if !out.contains(&series) {
                        return Err(format!("no {series}"));
                    }
                }
            }
            Ok(())
        },
        |out| match out.ends_with("# EOF\n") {
            true => Ok(()),
            false => Err("no # EOF at the end".into()),
        },
        |out| match out.trim().parse::<usize>() {
            Ok(lines) if lines > 1000 => Ok(()),
            Ok(lines) => Err(format!("{lines} lines")),
            Err(_) => Err("wc -l printed no number".into()),
        },
        |out| match out.starts_with("{\"status\":\"ok\",\"live_segments\":5,") {
            true => Ok(()),
            false => Err("not five live segments".into()),
        },
    ];
    let lines: Vec<&str> = curls.text.lines().collect();
    assert_eq!(lines.len(), checks.len(), "one check per line of the block");
    for (line, check) in lines.into_iter().zip(checks) {
        let mut verdict = Err(String::from("not run"));
        let mut out = String::new();
        for _ in 0..100 {
            let o = sandbox.output(line);
            out = String::from_utf8_lossy(&o.stdout).into_owned();
            verdict = match o.status.success() {
                true => check(&out),
                false => Err(format!("exit {:?}", o.status.code())),
            };
            if verdict.is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Err(why) = verdict {
            panic!("{line}: {why}:\n{out}");
        }
    }

    // Prometheus, as README starts it, with README's configuration, scrapes the demo.
    let prometheus_runs = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        prometheus_runs || !support::required(),
        "prometheus is not installed"
    );
    if prometheus_runs {
        let [config] = &readme_blocks("yaml")[..] else {
            panic!("one yaml block in README");
        };
        std::fs::write(sandbox.dir.path().join("prometheus.yml"), config).unwrap();
        let [prometheus] = &block(|p| matches!(p, Plan::Prometheus))[..] else {
            panic!("one prometheus block");
        };
        let (prometheus, _) = start(
            &sandbox,
            &prometheus.text,
            "Server is ready to receive web requests.",
            true,
        );
        let query = "curl -s 'http://127.0.0.1:9190/api/v1/query?query=count(vllm:num_requests_running%7Bjob%3D%22vllm-engines%22%7D)'";
        let mut answer = String::new();
        for _ in 0..100 {
            answer = String::from_utf8_lossy(&sandbox.output(query).stdout).into_owned();
            if answer.contains("\"4\"]") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            answer.contains("\"4\"]"),
            "Prometheus did not see the 4 engines: {answer}"
        );
        let (code, rest) = prometheus.stop(Signal::SIGTERM);
        assert_eq!(code, Some(0), "{rest}");
    }

    let (code, rest) = demo.stop(Signal::SIGINT);
    assert_eq!(code, Some(0), "{rest}");
    assert!(
        rest.contains("stopped by signal 2; engines stopped"),
        "{rest}"
    );

    // serve, with a scratch directory for /run/metrics.
    let [serve] = &block(|p| matches!(p, Plan::Serve))[..] else {
        panic!("one serve block");
    };
    let scratch = sandbox.dir.path().join("run-metrics");
    std::fs::create_dir(&scratch).unwrap();
    let text = serve
        .text
        .replace("/run/metrics", scratch.to_str().unwrap());
    let (serve, line) = start(&sandbox, &text, "serving http://", true);
    assert!(
        line.starts_with("serving http://0.0.0.0:8081/metrics from "),
        "{line}"
    );
    let health = sandbox.output("curl -s http://127.0.0.1:8081/health");
    assert!(
        String::from_utf8_lossy(&health.stdout)
            .starts_with("{\"status\":\"ok\",\"live_segments\":0,"),
        "{health:?}"
    );
    // README's /health example has the fields of a real answer (after a scrape).
    sandbox.output("curl -s http://127.0.0.1:8081/metrics");
    let health = sandbox.output("curl -s http://127.0.0.1:8081/health");
    let real: serde_json::Value = serde_json::from_slice(&health.stdout).expect("JSON");
    let [example] = &readme_blocks("json")[..] else {
        panic!("one json block in README");
    };
    let example: serde_json::Value = serde_json::from_str(example).expect("README's JSON parses");
    let (mut want, mut got) = (Vec::new(), Vec::new());
    keys(&example, "", &mut want);
    keys(&real, "", &mut got);
    assert_eq!(
        want, got,
        "README's /health example against a real answer: {real}"
    );
    let (code, rest) = serve.stop(Signal::SIGTERM);
    assert_eq!(code, Some(0), "{rest}");

    // push, to Debian's pushgateway on its default port, as printed, with the same
    // scratch directory (a few segments in it).
    assert!(
        std::net::TcpListener::bind("127.0.0.1:9091").is_ok(),
        "port 9091 is taken: README's push command pushes there, as printed"
    );
    let gateway = Command::new("prometheus-pushgateway")
        .arg("--web.listen-address=127.0.0.1:9091")
        // Debian's build persists to /var/lib/prometheus by default: in memory only.
        .arg("--persistence.file=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match gateway {
        Err(e) => assert!(!support::required(), "prometheus-pushgateway: {e}"),
        Ok(child) => {
            let gateway = Background(child, None);
            let out = Command::new(BIN)
                .args([
                    "generate",
                    "--processes",
                    "2",
                    "--series",
                    "15",
                    "--ops",
                    "3",
                    "--dir",
                ])
                .arg(&scratch)
                .output()
                .unwrap();
            assert!(out.status.success());
            let [push] = &block(|p| matches!(p, Plan::Push))[..] else {
                panic!("one push block");
            };
            let text = push.text.replace("/run/metrics", scratch.to_str().unwrap());
            let mut pushed = None;
            for _ in 0..100 {
                // Until the gateway listens (the push itself retries, but not for long).
                let out = sandbox.output(&text);
                if out.status.success() {
                    pushed = Some(out);
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            assert!(pushed.is_some(), "the push never succeeded");
            let metrics = sandbox.output("curl -s http://127.0.0.1:9091/metrics");
            let metrics = String::from_utf8_lossy(&metrics.stdout);
            assert!(
                metrics.contains(
                    "gen_c0_total{instance=\"node-3\",job=\"nightly-eval\",series=\"0\"} 6\n"
                ),
                "{metrics}"
            );
            gateway.stop(Signal::SIGTERM);
        }
    }

    // The blocks that run to completion.
    for b in block(|p| matches!(p, Plan::Run)) {
        let out = sandbox.output(&b.text);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}:{} exited with {}: {stdout}{}",
            b.file,
            b.line,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if b.text.contains("vllm serve") {
            // run gave the stand-in a private directory and removed it afterwards.
            assert!(
                stdout.starts_with("vllm stand-in: serve Qwen/Qwen3-0.6B --api-server-count 4\n"),
                "{stdout}"
            );
            let dir = stdout.lines().nth(1).expect("the directory");
            assert!(!Path::new(dir).exists(), "{dir} left behind");
        }
    }
}

/// README's Prometheus configuration passes `promtool check config`.
#[test]
fn the_prometheus_configuration_passes_promtool() {
    if !support::promtool_available() {
        assert!(!support::required(), "promtool is not installed");
        eprintln!("promtool not available: skipped");
        return;
    }
    let [config] = &readme_blocks("yaml")[..] else {
        panic!("one yaml block in README");
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
