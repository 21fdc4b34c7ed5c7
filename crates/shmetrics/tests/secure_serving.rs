//! `serve --web.config.file`: TLS, client certificates and basic authentication, with the
//! exporter toolkit's file format.
//!
//! - A real Prometheus (Debian's 2.42, on a free loopback port) scrapes `serve` over TLS
//!   with `tls_config.ca_file` and `basic_auth`, and over TLS with a client certificate
//!   (`RequireAndVerifyClientCert`); PromQL returns exactly the values the writers wrote.
//!   Its jobs with a wrong password, without a certificate and with an untrusted one are
//!   each down, and `serve` counts each refusal. The server certificate is rotated while
//!   Prometheus scrapes: its next handshake gets the new one and its scrapes go on.
//! - A rustls client checks the answers one by one: 401 with `WWW-Authenticate`, the
//!   configured headers, `/health` open only when the file excludes it, each refused
//!   certificate, and certificates and client CAs rotated while serving.
//! - The web configuration example of the exporter toolkit's documentation is accepted as
//!   is; files that cannot be used are refused at start-up with the key and the reason.
//!
//! Test certificates are made by the test (rcgen); none are committed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/tls.rs"]
mod tls;

use e2e::*;
use tls::{Ca, Client, Leaf};

const USER: &str = "prometheus";
const PASSWORD: &str = "correct horse battery staple";

/// A bcrypt hash of `password` (cost 6: the test's binaries are debug builds).
fn hash(password: &str) -> String {
    bcrypt::hash(password, 6).unwrap()
}

/// Replaces `path` with `text` in one step (write aside, rename), as a rotation does.
fn replace(path: &Path, text: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The value of the one sample of `name` (with its labels, as rendered) in `body`.
fn sample(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .parse()
        .unwrap()
}

/// Polls `check` (bounded) until it returns `Ok`; panics with its last error.
fn eventually<T>(
    what: &str,
    deadline: Deadline,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) if Instant::now() >= deadline.0 => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

struct Pki {
    server_ca: Ca,
    client_ca: Ca,
    client: Leaf,
    stranger: Leaf,
}

impl Pki {
    fn new() -> Self {
        let client_ca = Ca::new("shmetrics test clients");
        Self {
            server_ca: Ca::new("shmetrics test servers"),
            client: client_ca.client(USER),
            client_ca,
            stranger: Ca::new("someone else").client(USER),
        }
    }

    /// Writes the server's certificate and key, the client CA and the client identities
    /// into `dir`.
    fn write(&self, dir: &Path) {
        self.server_ca.write(&dir.join("server-ca.crt"));
        self.server_ca.server().write(dir, "server");
        self.client_ca.write(&dir.join("client-ca.crt"));
        self.client.write(dir, "client");
        self.stranger.write(dir, "stranger");
    }
}

#[test]
fn refusals_headers_and_rotation() {
    let deadline = Deadline(Instant::now() + Duration::from_secs(120));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let _writers = Writers::start(&dir);
    let pki = Pki::new();
    pki.write(w);

    // A: TLS and basic auth, /health open, one header.
    std::fs::write(
        w.join("a.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  {USER}: {}\n\
             basic_auth_excluded_paths: [/health]\n\
             http_server_config:\n  headers:\n    Strict-Transport-Security: max-age=63072000\n",
            hash(PASSWORD)
        ),
    )
    .unwrap();
    // B: client certificates with an allowed SAN, and basic auth with nothing excluded.
    std::fs::write(
        w.join("b.yml"),
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n  \
             client_allowed_sans: [{USER}]\n\
             basic_auth_users:\n  {USER}: {}\n",
            hash(PASSWORD)
        ),
    )
    .unwrap();
    let a_yml = w.join("a.yml");
    let b_yml = w.join("b.yml");
    let (_a, a) = start_serve(
        &dir,
        &["--web.config.file", a_yml.to_str().unwrap()],
        w.join("a.log"),
        deadline,
    );
    let (_b, b) = start_serve(
        &dir,
        &["--web.config.file", b_yml.to_str().unwrap()],
        w.join("b.log"),
        deadline,
    );

    let anonymous = Client::new(&pki.server_ca);
    let user = anonymous.clone().with_basic(USER, PASSWORD);

    // A: credentials.
    let got = anonymous.get(a, "/metrics").unwrap();
    assert_eq!(got.status, 401);
    assert_eq!(
        got.header("www-authenticate"),
        Some("Basic realm=\"shmetrics\", charset=\"UTF-8\"")
    );
    assert_eq!(
        got.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    let got = anonymous
        .clone()
        .with_basic(USER, "wrong")
        .get(a, "/metrics")
        .unwrap();
    assert_eq!(got.status, 401);
    let got = anonymous
        .clone()
        .with_basic("nobody", PASSWORD)
        .get(a, "/metrics")
        .unwrap();
    assert_eq!(got.status, 401);
    let got = anonymous.get(a, "/health").unwrap();
    assert_eq!(
        got.status, 200,
        "/health is excluded in a.yml: {}",
        got.body
    );
    assert_eq!(
        got.header("strict-transport-security"),
        Some("max-age=63072000")
    );
    // Plain HTTP to a TLS port gets no answer.
    assert!(http_get(a, "/health").is_err());
    let got = user.get(a, "/metrics").unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(sample(&got.body, "gen_c0_total{series=\"0\"}"), 21.0);
    assert_eq!(
        sample(
            &got.body,
            "shmetrics_http_refused_requests_total{reason=\"no_credentials\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &got.body,
            "shmetrics_http_refused_requests_total{reason=\"wrong_credentials\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(&got.body, "shmetrics_tls_handshake_failures_total"),
        1.0
    );

    // B: certificates first, then credentials.
    let with_cert = user.clone().with_identity(&pki.client);
    let got = with_cert.get(b, "/metrics").unwrap();
    assert_eq!(got.status, 200);
    let refused = [
        ("no certificate", user.clone()),
        (
            "untrusted certificate",
            user.clone().with_identity(&pki.stranger),
        ),
        (
            "a SAN outside client_allowed_sans",
            user.clone()
                .with_identity(&pki.client_ca.client("intruder")),
        ),
    ];
    for (what, client) in &refused {
        let e = client
            .get(b, "/metrics")
            .expect_err(&format!("{what} must be refused"));
        eprintln!("{what}: {e}");
    }
    let got = anonymous
        .clone()
        .with_identity(&pki.client)
        .get(b, "/health")
        .unwrap();
    assert_eq!(got.status, 401, "/health is not excluded in b.yml");
    let got = with_cert.get(b, "/metrics").unwrap();
    assert_eq!(
        sample(&got.body, "shmetrics_tls_handshake_failures_total"),
        3.0
    );

    // Rotation: a new server certificate is presented from the next connection on.
    let before = user.get(a, "/health").unwrap().server_cert;
    let rotated = pki.server_ca.server();
    replace(&w.join("server.key"), &rotated.key_pem);
    // Between the key and the certificate the pair does not match: the old one stays.
    let got = user.get(a, "/metrics").unwrap();
    assert_eq!(got.server_cert, before, "a mismatched pair is not used");
    replace(&w.join("server.crt"), &rotated.cert_pem);
    let got = user.get(a, "/metrics").unwrap();
    assert_eq!(
        got.server_cert, rotated.der,
        "the rotated certificate is served"
    );
    assert_ne!(rotated.der, before);
    let got = user.get(a, "/metrics").unwrap();
    assert_eq!(
        sample(&got.body, "shmetrics_tls_reloads_total{result=\"failed\"}"),
        1.0
    );
    assert_eq!(
        sample(&got.body, "shmetrics_tls_reloads_total{result=\"loaded\"}"),
        1.0
    );

    // A client CA rotated: the old clients are refused, the new CA's accepted.
    let new_ca = Ca::new("shmetrics test clients, 2");
    replace(&w.join("client-ca.crt"), &new_ca.pem());
    with_cert
        .get(b, "/metrics")
        .expect_err("a client of the old CA after rotation");
    let renewed = user.clone().with_identity(&new_ca.client(USER));
    let got = eventually("the new client CA", deadline, || renewed.get(b, "/metrics"));
    assert_eq!(got.status, 200);
    assert_eq!(
        got.server_cert, rotated.der,
        "b re-read the rotated server files too"
    );
}

/// The example file of the exporter toolkit's documentation (`docs/web-config.yml`),
/// with its `server.crt` and `server.key` beside it, as an operator would copy it.
const TOOLKIT_EXAMPLE: &str = "\
# TLS and basic authentication configuration example.
#
# Additionally, a certificate and a key file are needed.
tls_server_config:
  cert_file: server.crt
  key_file: server.key

# Usernames and passwords required to connect.
# Passwords are hashed with bcrypt: https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md#about-bcrypt.
basic_auth_users:
  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze
  bob: $2y$10$hLqFl9jSjoAAy95Z/zw8Ye8wkdMBM8c5Bn1ptYqP/AXyV0.oy0S8m

# Exclude /-/healthy and /-/ready from basic authentication
basic_auth_excluded_paths:
- /-/healthy
- /-/ready
";

/// Runs `serve` with `web` until it prints its first line; returns that line and
/// whether it is still running (then it is stopped).
fn first_line(dir: &Path, web: &Path) -> (String, Option<i32>) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .arg("--web.config.file")
        .arg(web)
        .env_remove("DYN_SYSTEM_PORT")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    let _ = child.kill();
    let status = child.wait().unwrap();
    (line.trim_end().to_owned(), status.code())
}

#[test]
fn toolkit_example_accepted_and_unusable_files_refused_at_start() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let ca = Ca::new("example");
    ca.server().write(w, "server");
    let example = w.join("web-config.yml");
    std::fs::write(&example, TOOLKIT_EXAMPLE).unwrap();
    let (line, _) = first_line(&dir, &example);
    assert!(line.starts_with("serving https://127.0.0.1:"), "{line}");

    // Files that parse but cannot be used: refused at start-up (exit 2), naming the key.
    let other = Ca::new("other").server();
    std::fs::write(w.join("other.key"), &other.key_pem).unwrap();
    std::fs::write(w.join("empty.crt"), "").unwrap();
    std::fs::write(w.join("garbage.key"), "not a key\n").unwrap();
    let cases = [
        (
            "cert_file: missing.crt\n  key_file: server.key",
            "tls_server_config.cert_file: cannot read",
        ),
        (
            "cert_file: empty.crt\n  key_file: server.key",
            "tls_server_config.cert_file: holds no PEM CERTIFICATE block",
        ),
        (
            "cert_file: server.crt\n  key_file: garbage.key",
            "tls_server_config.key_file: holds no usable PEM private key",
        ),
        (
            "cert_file: server.crt\n  key_file: other.key",
            "tls_server_config.key_file: cannot be used with the certificate",
        ),
        (
            "cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: empty.crt",
            "tls_server_config.client_ca_file: holds no PEM CERTIFICATE block",
        ),
        (
            "cert_file: server.crt\n  key_file: server.key\n  client_auth_typ: RequireAndVerifyClientCert",
            "not a valid web configuration: line 4 column 3: unknown field `client_auth_typ`",
        ),
    ];
    for (tls, reason) in cases {
        let path = w.join("bad.yml");
        std::fs::write(&path, format!("tls_server_config:\n  {tls}\n")).unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(&dir)
            .arg("--web.config.file")
            .arg(&path)
            .env_remove("DYN_SYSTEM_PORT")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{tls}: {stderr}");
        let want = format!("serve: web config {}: {reason}", path.display());
        assert!(stderr.contains(&want), "{tls}:\n{stderr}\nwant {want}");
        assert!(
            !stderr.contains("serving"),
            "never a plain-HTTP fallback: {stderr}"
        );
    }
    let missing = w.join("no-such.yml");
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&dir)
        .arg("--web.config.file")
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "serve: web config {}: cannot read it: No such file or directory",
            missing.display()
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Prometheus jobs: `(job, target, scheme settings)`.
fn tls_jobs(jobs: &[(&str, SocketAddr, String)]) -> String {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for (job, target, settings) in jobs {
        yaml.push_str(&format!(
            "  - job_name: {job}\n    scheme: https\n{settings}    static_configs:\n      - targets: ['{target}']\n"
        ));
    }
    yaml
}

#[test]
fn prometheus_scrapes_over_tls_with_basic_auth_and_client_certificates() {
    let started = Instant::now();
    let deadline = Deadline(started + TEST_LIMIT);
    let Some(binary) = prometheus_or_skip() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let mut writers = Writers::start(&dir);
    let pki = Pki::new();
    pki.write(w);
    let basic_yml = w.join("basic.yml");
    std::fs::write(
        &basic_yml,
        format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
             basic_auth_users:\n  {USER}: {}\n",
            hash(PASSWORD)
        ),
    )
    .unwrap();
    let mtls_yml = w.join("mtls.yml");
    std::fs::write(
        &mtls_yml,
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: client-ca.crt\n",
    )
    .unwrap();
    // One request per connection: every scrape is a new handshake, so Prometheus meets a
    // rotated certificate at its next scrape.
    let (mut serve_basic, basic) = start_serve(
        &dir,
        &[
            "--web.config.file",
            basic_yml.to_str().unwrap(),
            "--max-requests-per-connection",
            "1",
        ],
        w.join("serve-basic.log"),
        deadline,
    );
    let (mut serve_mtls, mtls) = start_serve(
        &dir,
        &["--web.config.file", mtls_yml.to_str().unwrap()],
        w.join("serve-mtls.log"),
        deadline,
    );
    let path = |name: &str| -> PathBuf { w.join(name) };
    let ca = format!(
        "    tls_config:\n      ca_file: {}\n",
        path("server-ca.crt").display()
    );
    let identity = |name: &str| {
        format!(
            "    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}\n",
            path("server-ca.crt").display(),
            path(&format!("{name}.crt")).display(),
            path(&format!("{name}.key")).display()
        )
    };
    let basic_auth = |password: &str| {
        format!("    basic_auth:\n      username: {USER}\n      password: '{password}'\n")
    };
    let jobs = [
        ("tls_basic", basic, format!("{ca}{}", basic_auth(PASSWORD))),
        ("mtls", mtls, identity("client")),
        (
            "wrong_password",
            basic,
            format!("{ca}{}", basic_auth("guess")),
        ),
        ("no_certificate", mtls, ca.clone()),
        ("untrusted_certificate", mtls, identity("stranger")),
    ];
    let config = w.join("prometheus.yml");
    std::fs::write(&config, tls_jobs(&jobs)).unwrap();
    let (proc, addr) = start_prometheus(&binary, &config, w, &[], deadline);
    let mut prom = Prometheus { addr, proc };

    // Two scrapes of each good job: a body counts the renderings before it.
    for job in ["tls_basic", "mtls"] {
        prom.wait_for(
            &format!("sum(shmetrics_scrape_duration_seconds_count{{job=\"{job}\"}})"),
            1.0,
            deadline,
        );
        check_job(&prom, job, if job == "mtls" { mtls } else { basic });
    }
    // The refused jobs: down, and counted by the servers (seen through the good jobs).
    for job in ["wrong_password", "no_certificate", "untrusted_certificate"] {
        prom.wait_for(
            &format!("count_over_time(up{{job=\"{job}\"}}[1m])"),
            2.0,
            deadline,
        );
        assert_eq!(
            prom.value(&format!("max_over_time(up{{job=\"{job}\"}}[1m])")),
            0.0,
            "job {job} must never be up"
        );
    }
    prom.wait_for(
        "shmetrics_http_refused_requests_total{job=\"tls_basic\",reason=\"wrong_credentials\"}",
        1.0,
        deadline,
    );
    assert_eq!(
        prom.value(
            "shmetrics_http_refused_requests_total{job=\"tls_basic\",reason=\"no_credentials\"}"
        ),
        0.0
    );
    prom.wait_for(
        "shmetrics_tls_handshake_failures_total{job=\"mtls\"}",
        2.0,
        deadline,
    );

    // The server certificate rotated while Prometheus scrapes: loaded at the next
    // handshake, and the scrapes after it succeed with the new one.
    let rotated = pki.server_ca.server();
    let scrapes = |prom: &Prometheus| {
        prom.value("sum(shmetrics_scrape_duration_seconds_count{job=\"tls_basic\"})")
    };
    replace(&w.join("server.key"), &rotated.key_pem);
    replace(&w.join("server.crt"), &rotated.cert_pem);
    prom.wait_for(
        "shmetrics_tls_reloads_total{job=\"tls_basic\",result=\"loaded\"}",
        1.0,
        deadline,
    );
    let after = scrapes(&prom);
    prom.wait_for(
        "sum(shmetrics_scrape_duration_seconds_count{job=\"tls_basic\"})",
        after + 2.0,
        deadline,
    );
    assert_eq!(prom.value("up{job=\"tls_basic\"}"), 1.0);
    assert_eq!(
        Client::new(&pki.server_ca)
            .with_basic(USER, PASSWORD)
            .get(basic, "/health")
            .unwrap()
            .server_cert,
        rotated.der,
        "the rotated certificate is served"
    );
    check_job(&prom, "tls_basic", basic);

    prom.proc.stop_cleanly();
    serve_basic.stop_cleanly();
    serve_mtls.stop_cleanly();
    assert_eq!(writers.stop(), Vec::<i32>::new(), "writers needed SIGKILL");
    eprintln!("secure end-to-end test took {:?}", started.elapsed());
}

/// The web configuration shown in docs/deployment.md ("TLS and authentication") starts
/// `serve` over TLS as printed, its files beside it.
#[test]
fn the_documented_web_configuration_starts_serve() {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deployment.md"),
    )
    .unwrap();
    let section = doc
        .split_once("## TLS and authentication")
        .expect("the section")
        .1;
    let yaml = section
        .split_once("```yaml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("a yaml block")
        .0;
    assert!(yaml.starts_with("# /etc/shmetrics/web.yml\n"), "{yaml}");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let ca = Ca::new("documented");
    ca.server().write(w, "server");
    Ca::new("clients").write(&w.join("clients-ca.crt"));
    let web = w.join("web.yml");
    std::fs::write(&web, yaml).unwrap();
    let (line, _) = first_line(&dir, &web);
    assert!(line.starts_with("serving https://127.0.0.1:"), "{line}");
}
