//! `serve --remote-write`: the merged directory sent with the remote write 1.0 protocol to
//! the real receivers, each started by the test on a free loopback port: Debian's
//! `prometheus` with `--web.enable-remote-write-receiver` and Debian's `victoria-metrics`.
//!
//! - After a few intervals PromQL on each returns exactly the merged values of the writers
//!   (`generate --stay`), with the external labels.
//! - Both receivers stopped for a few intervals and restarted: every interval of the
//!   outage arrives once the queue drains (the raw points have no gap and no duplicate),
//!   nothing is counted as failed and the queues end empty.
//! - A receiver that answers 400 is not retried (each request sent once, counted as
//!   failed); one that answers 503 is (counted as retried, never failed, kept queued).
//! - Over TLS (the receiver's CA, a client certificate, the server name), with basic auth
//!   from a file (re-read at each request), a bearer token and extra headers, as a test
//!   receiver sees them; a receiver whose CA is not trusted gets nothing.

#[path = "support/e2e.rs"]
mod e2e;
#[path = "support/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::*;

/// Seconds between two remote writes in these tests.
const INTERVAL: &str = "0.5";

/// The value of `series` (name and labels as rendered) in `serve`'s `/metrics`.
fn self_metric(serve: SocketAddr, series: &str) -> f64 {
    let (status, body) = http_get(serve, "/metrics").expect("scrape serve");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .parse()
        .unwrap()
}

fn remote(metric: &str, name: &str) -> String {
    format!("shmetrics_remote_write_{metric}{{remote=\"{name}\"}}")
}

/// Polls `check` until it holds (bounded by `deadline`).
fn wait_until(what: &str, deadline: Deadline, mut check: impl FnMut() -> bool) {
    while !check() {
        assert!(Instant::now() < deadline.0, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The raw points of `gen_c0_total{series="0"}` of job `rw`: strictly increasing times
/// (no duplicate), no two more than `max_gap` apart (no gap), every value exact; returns
/// the first and last time.
fn check_points(tsdb: &Prometheus, name: &str, max_gap: f64) -> (f64, f64) {
    let matrix = try_matrix(tsdb.addr, "gen_c0_total{job=\"rw\",series=\"0\"}[10m]")
        .unwrap_or_else(|e| panic!("{name}: {e}\n{}", tsdb.proc.log_tail()));
    assert_eq!(matrix.len(), 1, "{name}: {matrix:?}");
    let points = &matrix[0].1;
    assert!(points.len() >= 8, "{name}: {points:?}");
    for pair in points.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap > 0.0,
            "{name}: a duplicate or out-of-order point: {pair:?}"
        );
        assert!(
            gap <= max_gap,
            "{name}: a gap of {gap} s: {pair:?}\n{points:?}"
        );
    }
    let want = f64::from(PROCESSES) * OPS as f64;
    assert!(points.iter().all(|&(_, v)| v == want), "{name}: {points:?}");
    (points[0].0, points[points.len() - 1].0)
}

#[test]
fn prometheus_and_victoria_metrics_get_every_interval_through_an_outage() {
    let started = Instant::now();
    let deadline = Deadline(started + Duration::from_secs(120));
    let Some(binary) = prometheus_or_skip() else {
        return;
    };
    if !victoria_metrics_or_skip() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let mut writers = Writers::start(&dir);

    // The receivers, each on a port it keeps across its restart.
    let config = w.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let prom_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let prom_data = w.join("prometheus-data");
    let receiver = ["--web.enable-remote-write-receiver"];
    let start_prom = |log: &str| {
        start_prometheus_at(
            &binary,
            &config,
            w,
            &prom_data,
            prom_addr,
            &receiver,
            w.join(log),
            deadline,
        )
        .expect("prometheus on its port")
    };
    let vm_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let vm_data = w.join("vm-data");
    let start_vm = |log: &str| {
        start_victoria_metrics_at(w, &vm_data, vm_addr, w.join(log), deadline)
            .expect("victoria-metrics on its port")
    };
    let mut prom = Prometheus {
        addr: prom_addr,
        proc: start_prom("prometheus-1.log"),
    };
    let mut vm = Prometheus {
        addr: vm_addr,
        proc: start_vm("vm-1.log"),
    };

    // Two targets from the web configuration file, the external labels from it and from
    // the command line.
    let web = w.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "remote_write:\n  \
             - url: http://{prom_addr}/api/v1/write\n    name: prometheus\n    \
             queue_config: {{min_backoff: 50ms, max_backoff: 1s}}\n  \
             - url: http://{vm_addr}/api/v1/write\n    name: victoria\n    \
             headers: {{X-Tenant: test}}\n    \
             queue_config: {{min_backoff: 50ms, max_backoff: 1s}}\n\
             external_labels:\n  job: rw\n"
        ),
    )
    .unwrap();
    let (mut serve, addr) = start_serve(
        &dir,
        &[
            "--web.config.file",
            web.to_str().unwrap(),
            "--remote-write-interval",
            INTERVAL,
            "--remote-write-label",
            "instance=node-7",
        ],
        w.join("serve.log"),
        deadline,
    );

    // Exact values on both.
    for (tsdb, name) in [(&prom, "prometheus"), (&vm, "victoria")] {
        tsdb.wait_for("count(gen_c0_total{job=\"rw\"})", 1.0, deadline);
        check_values(tsdb, "rw");
        assert_eq!(
            tsdb.one("gen_c0_total{series=\"0\"}").0["instance"],
            "node-7",
            "{name}: the external label"
        );
    }

    // Both down for a while, then back on the same ports and data.
    let before = self_metric(addr, &remote("samples_retried_total", "prometheus"));
    assert_eq!(before, 0.0, "nothing retried while both were up");
    prom.proc.stop_cleanly();
    vm.proc.stop_cleanly();
    let down = Instant::now();
    wait_until(
        "requests queued while the receivers are down",
        deadline,
        || {
            self_metric(addr, &remote("queue_requests", "prometheus")) >= 4.0
                && self_metric(addr, &remote("queue_requests", "victoria")) >= 4.0
        },
    );
    let outage = down.elapsed();
    prom.proc = start_prom("prometheus-2.log");
    vm.proc = start_vm("vm-2.log");
    for name in ["prometheus", "victoria"] {
        wait_until("the queue to drain", deadline, || {
            self_metric(addr, &remote("queue_requests", name)) == 0.0
        });
        assert!(self_metric(addr, &remote("samples_retried_total", name)) > 0.0);
        assert_eq!(
            self_metric(addr, &remote("samples_failed_total", name)),
            0.0,
            "{name}: nothing lost"
        );
    }
    // A few more intervals after the outage.
    std::thread::sleep(Duration::from_secs(2));
    for (tsdb, name) in [(&prom, "prometheus"), (&vm, "victoria")] {
        let (first, last) = check_points(tsdb, name, 1.6);
        assert!(
            last - first > outage.as_secs_f64() + 2.0,
            "{name}: the points span the outage ({first}..{last}, outage {outage:?})"
        );
        check_values(tsdb, "rw");
    }

    serve.stop_cleanly();
    prom.proc.stop_cleanly();
    vm.proc.stop_cleanly();
    assert_eq!(writers.stop(), Vec::<i32>::new(), "writers needed SIGKILL");
    eprintln!("remote write end-to-end test took {:?}", started.elapsed());
}

/// Reads one request (head, then the body by its length); returns its head, lower-cased.
fn read_request(stream: &mut impl Read) -> Option<String> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if raw.len() >= end + 4 + length {
            return Some(head);
        }
    }
}

/// A receiver that answers every request with `status` (over TLS with `tls`), keeping the
/// heads of the requests it got.
fn fake_receiver(
    status: &'static str,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heads);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut tcp) = stream else { continue };
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            // 204 has no body; the others say why, as receivers do.
            let body = if status.starts_with("204") {
                ""
            } else {
                "nope"
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            match &tls {
                None => {
                    if let Some(head) = read_request(&mut tcp) {
                        seen.lock().unwrap().push(head);
                        let _ = tcp.write_all(answer.as_bytes());
                    }
                }
                Some(config) => {
                    let mut conn = rustls::ServerConnection::new(Arc::clone(config)).unwrap();
                    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
                    if let Some(head) = read_request(&mut stream) {
                        seen.lock().unwrap().push(head);
                        let _ = stream.write_all(answer.as_bytes());
                        let _ = stream.flush();
                    }
                    conn.send_close_notify();
                    let _ = conn.complete_io(&mut tcp);
                }
            }
        }
    });
    (addr, heads)
}

fn count(heads: &Mutex<Vec<String>>) -> usize {
    heads.lock().unwrap().len()
}

#[test]
fn a_4xx_answer_is_not_retried_and_a_5xx_is() {
    let deadline = Deadline(Instant::now() + Duration::from_secs(60));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let mut writers = Writers::start(&dir);
    let (refusing, refused) = fake_receiver("400 Bad Request", None);
    let (failing, attempts) = fake_receiver("503 Service Unavailable", None);
    let refusing_url = format!("http://{refusing}/api/v1/write");
    let failing_url = format!("http://{failing}/api/v1/write");
    let (mut serve, addr) = start_serve(
        &dir,
        &[
            "--remote-write",
            &refusing_url,
            "--remote-write",
            &failing_url,
            "--remote-write-interval",
            "0.2",
            "--remote-write-label",
            "instance=node-7",
        ],
        work.path().join("serve.log"),
        deadline,
    );
    wait_until("five refused requests", deadline, || count(&refused) >= 5);
    std::thread::sleep(Duration::from_millis(500));
    let failed = self_metric(addr, &remote("samples_failed_total", &refusing_url));
    let requests = count(&refused);
    // Every request the refusing receiver got was counted as failed once: none retried.
    assert_eq!(
        self_metric(addr, &remote("samples_retried_total", &refusing_url)),
        0.0
    );
    assert_eq!(
        self_metric(addr, &remote("samples_sent_total", &refusing_url)),
        0.0
    );
    assert!(failed > 0.0);
    let per_request = failed / requests as f64;
    assert!(
        (per_request - per_request.round()).abs() < 1e-9 && per_request > 100.0,
        "{failed} failed samples over {requests} requests"
    );
    // The failing receiver: the oldest request again and again, nothing dropped.
    assert!(count(&attempts) >= 2);
    assert!(self_metric(addr, &remote("samples_retried_total", &failing_url)) > 0.0);
    assert_eq!(
        self_metric(addr, &remote("samples_failed_total", &failing_url)),
        0.0
    );
    assert!(self_metric(addr, &remote("queue_requests", &failing_url)) >= 2.0);
    assert!(self_metric(addr, &remote("queue_oldest_seconds", &failing_url)) > 0.2);
    serve.stop_cleanly();
    let log = std::fs::read_to_string(work.path().join("serve.log")).unwrap();
    assert!(
        log.contains(&format!(
            "remote write {refusing_url}: HTTP 400, request dropped"
        )),
        "{log}"
    );
    assert!(log.contains("not sent at shutdown"), "{log}");
    assert_eq!(writers.stop(), Vec::<i32>::new());
}

/// The value of header `name` in a lower-cased request head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

#[test]
fn tls_credentials_and_headers_reach_the_receiver() {
    use base64::Engine as _;
    let deadline = Deadline(Instant::now() + Duration::from_secs(60));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let mut writers = Writers::start(&dir);

    // A receiver over TLS that requires a client certificate of its client CA.
    let server_ca = tls::Ca::new("receivers");
    let client_ca = tls::Ca::new("senders");
    server_ca.write(&w.join("receiver-ca.crt"));
    client_ca.client("node-7").write(w, "client");
    let leaf = server_ca.server();
    let config = {
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(
                rustls::pki_types::CertificateDer::from_pem_slice(client_ca.pem().as_bytes())
                    .unwrap(),
            )
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(leaf.der.clone())],
                rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap()
    };
    let (secure, secure_heads) = fake_receiver("204 No Content", Some(Arc::new(config)));
    let (plain, plain_heads) = fake_receiver("200 OK", None);
    std::fs::write(w.join("password"), "first\n").unwrap();
    std::fs::write(w.join("token"), "tok-1").unwrap();
    std::fs::write(w.join("other-ca.crt"), tls::Ca::new("other").pem()).unwrap();
    let web = w.join("web.yml");
    std::fs::write(
        &web,
        format!(
            "remote_write:
  - url: https://127.0.0.1:{port}/api/v1/write
    name: secure
    basic_auth: {{username: shm, password_file: password}}
    headers: {{X-Scope-OrgID: team-a}}
    tls_config: {{ca_file: receiver-ca.crt, cert_file: client.crt, key_file: client.key, server_name: localhost}}
  - url: http://{plain}/write
    name: bearer
    authorization: {{credentials_file: token}}
  - url: https://127.0.0.1:{port}/api/v1/write
    name: untrusted
    tls_config: {{ca_file: other-ca.crt, server_name: localhost}}
",
            port = secure.port()
        ),
    )
    .unwrap();
    let (mut serve, addr) = start_serve(
        &dir,
        &[
            "--web.config.file",
            web.to_str().unwrap(),
            "--remote-write-interval",
            "0.2",
            "--remote-write-label",
            "instance=node-7",
        ],
        w.join("serve.log"),
        deadline,
    );
    wait_until(
        "requests over TLS and with a bearer token",
        deadline,
        || count(&secure_heads) >= 2 && count(&plain_heads) >= 2,
    );
    let basic = |password: &str| {
        format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("shm:{password}"))
        )
        .to_ascii_lowercase()
    };
    {
        let heads = secure_heads.lock().unwrap();
        let head = &heads[0];
        assert!(head.starts_with("post /api/v1/write http/1.1"), "{head}");
        assert_eq!(header(head, "authorization"), Some(basic("first").as_str()));
        assert_eq!(header(head, "x-scope-orgid"), Some("team-a"));
        assert_eq!(header(head, "content-type"), Some("application/x-protobuf"));
        assert_eq!(header(head, "content-encoding"), Some("snappy"));
        assert_eq!(
            header(head, "x-prometheus-remote-write-version"),
            Some("0.1.0")
        );
        assert!(header(head, "user-agent").is_some_and(|u| u.starts_with("shmetrics/")));
        let plain = plain_heads.lock().unwrap();
        assert!(plain[0].starts_with("post /write http/1.1"), "{}", plain[0]);
        assert_eq!(header(&plain[0], "authorization"), Some("bearer tok-1"));
    }
    // Secrets in files are read at each request: rotated, the next request has the new one.
    std::fs::write(w.join("password"), "second").unwrap();
    wait_until("the rotated password", deadline, || {
        secure_heads
            .lock()
            .unwrap()
            .last()
            .is_some_and(|h| header(h, "authorization") == Some(basic("second").as_str()))
    });
    // The target that does not trust the receiver's CA sends nothing, and keeps trying.
    assert_eq!(
        self_metric(addr, &remote("samples_sent_total", "untrusted")),
        0.0
    );
    assert!(self_metric(addr, &remote("samples_retried_total", "untrusted")) > 0.0);
    assert!(self_metric(addr, &remote("samples_sent_total", "secure")) > 0.0);
    serve.stop_cleanly();
    let log = std::fs::read_to_string(w.join("serve.log")).unwrap();
    assert!(
        log.contains(
            "remote write untrusted: TLS handshake: invalid peer certificate: UnknownIssuer"
        ),
        "{log}"
    );
    assert_eq!(writers.stop(), Vec::<i32>::new());
}

/// The fenced block of `language` that follows `heading` in docs/deployment.md.
fn documented(heading: &str, language: &str) -> String {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/deployment.md"),
    )
    .unwrap();
    let section = doc.split_once(heading).expect("the section").1;
    section
        .split_once(&format!("```{language}\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the block")
        .0
        .to_owned()
}

/// docs/deployment.md, "Remote write": the command line runs as printed (its directory and
/// receiver pointed at the test's), its requests carry the documented labels' values; the
/// web configuration file starts `serve` with its two targets, its files beside it.
#[test]
fn the_documented_remote_write_command_and_file_run_as_printed() {
    let deadline = Deadline(Instant::now() + Duration::from_secs(60));
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let dir = w.join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let mut writers = Writers::start_with(&dir, &["--workload", "vllm"]);
    let (receiver, heads) = fake_receiver("204 No Content", None);

    let command = documented("## Remote write", "sh").replace("\\\n", " ");
    let args: Vec<String> = command
        .split_whitespace()
        .map(|a| {
            a.replace("/run/shmetrics", dir.to_str().unwrap())
                .replace("victoria.monitoring:8428", &receiver.to_string())
        })
        .collect();
    assert_eq!(args[..2], ["shmetrics", "serve"], "{command}");
    let mut args: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    // The interval: the documented 15 s, shortened for the test.
    let interval = args
        .iter()
        .position(|a| *a == "--remote-write-interval")
        .unwrap();
    assert_eq!(args[interval + 1], "15");
    args[interval + 1] = "0.2";
    let dir_at = args.iter().position(|a| *a == "--dir").unwrap();
    args.drain(dir_at..dir_at + 2);
    let (mut serve, addr) = start_serve(&dir, &args, w.join("serve.log"), deadline);
    let target = format!("http://{receiver}/api/v1/write");
    wait_until("requests sent", deadline, || {
        self_metric(addr, &remote("samples_sent_total", &target)) > 0.0
    });
    assert!(heads.lock().unwrap()[0].starts_with("post /api/v1/write http/1.1"));
    serve.stop_cleanly();
    let log = std::fs::read_to_string(w.join("serve.log")).unwrap();
    assert!(!log.contains("without external labels"), "{log}");

    // The file, with the files it names.
    let ca = tls::Ca::new("mimir");
    ca.write(&w.join("mimir-ca.crt"));
    tls::Ca::new("fleet")
        .client("gpu-node-7")
        .write(w, "client");
    std::fs::write(w.join("mimir-password"), "secret").unwrap();
    std::fs::write(w.join("victoria-token"), "token").unwrap();
    let yaml = documented("## Remote write", "yaml");
    assert!(yaml.starts_with("# /etc/shmetrics/web.yml\n"), "{yaml}");
    let web = w.join("web.yml");
    std::fs::write(&web, &yaml).unwrap();
    let (mut serve, addr) = start_serve(
        &dir,
        &["--web.config.file", web.to_str().unwrap()],
        w.join("serve-file.log"),
        deadline,
    );
    assert_eq!(
        self_metric(addr, &remote("samples_failed_total", "mimir")),
        0.0
    );
    assert_eq!(
        self_metric(
            addr,
            &remote(
                "samples_failed_total",
                "http://victoria.monitoring:8428/api/v1/write"
            )
        ),
        0.0
    );
    serve.stop_cleanly();
    assert_eq!(writers.stop(), Vec::<i32>::new());
}

/// A receiver that answers 400 with an endless body: the sender reads the start of it,
/// drops the request as refused and holds no more of the answer than that.
#[test]
fn an_endless_answer_is_not_read_whole() {
    let deadline = Deadline(Instant::now() + Duration::from_secs(60));
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("metrics");
    std::fs::create_dir(&dir).unwrap();
    let mut writers = Writers::start(&dir);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut tcp) = stream else { continue };
            std::thread::spawn(move || {
                if read_request(&mut tcp).is_none() {
                    return;
                }
                let _ = write!(
                    tcp,
                    "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\n\r\n",
                    1u64 << 40
                );
                let chunk = vec![b'x'; 1 << 20];
                // Until the sender hangs up (at most 1 TiB).
                while tcp.write_all(&chunk).is_ok() {}
            });
        }
    });
    let url = format!("http://{receiver}/api/v1/write");
    let (mut serve, addr) = start_serve(
        &dir,
        &["--remote-write", &url, "--remote-write-interval", "0.2"],
        work.path().join("serve.log"),
        deadline,
    );
    wait_until("three refused requests", deadline, || {
        self_metric(addr, &remote("samples_failed_total", &url)) >= 3.0 * 500.0
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.child.id())).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 64 * 1024,
        "serve's peak resident set: {peak_kib} KiB"
    );
    assert_eq!(
        self_metric(addr, &remote("samples_retried_total", &url)),
        0.0
    );
    serve.stop_cleanly();
    assert_eq!(writers.stop(), Vec::<i32>::new());
}
