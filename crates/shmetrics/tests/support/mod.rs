//! Helpers shared by the integration tests: the external validators.
//!
//! README's test command installs them and sets `SHMETRICS_REQUIRE_VALIDATORS=1`, which turns
//! a missing validator into a failure instead of a skipped check.
#![allow(dead_code)] // Each test binary uses a subset.

use std::collections::HashSet;
use std::process::{Command, Stdio};

pub(crate) mod engines;

/// Whether a missing validator fails the test.
pub(crate) fn required() -> bool {
    std::env::var("SHMETRICS_REQUIRE_VALIDATORS").is_ok_and(|v| v == "1")
}

/// Whether `promtool` can run; a failure when it cannot and validators are required.
pub(crate) fn promtool_available() -> bool {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok || !required(), "promtool is not installed");
    if !ok {
        eprintln!("promtool not available: promtool checks skipped");
    }
    ok
}

/// Lint findings that come from upstream metric names we must reproduce as they are, not
/// from our rendering: vLLM's `vllm:` prefix, and its histogram
/// `vllm:iteration_tokens_total`.
pub(crate) const ACCEPTED_LINTS: &[&str] = &[
    "metric names should not contain ':'",
    "non-counter metrics should not have \"_total\" suffix",
];

/// Runs `promtool check metrics` on text-format `text` (when promtool is available): it must
/// parse, and every lint finding must be one of [`ACCEPTED_LINTS`].
pub(crate) fn promtool_check(text: &str, what: &str) {
    use std::io::Write;
    if !promtool_available() {
        return;
    }
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    assert!(
        code == Some(0) || code == Some(3),
        "promtool rejected {what} (exit {code:?}): {findings}\n{text}"
    );
    for line in findings.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            ACCEPTED_LINTS.iter().any(|a| line.contains(a)),
            "promtool lint finding in {what}: {line}"
        );
    }
}

/// Every `# TYPE` line names a different family.
pub(crate) fn assert_type_lines_unique(text: &str) {
    let mut seen = HashSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(
            seen.insert(name.to_owned()),
            "family {name} appears twice:\n{text}"
        );
    }
}

/// The families of `reader`'s directory that `filter` keeps, as Prometheus text (no
/// self-metrics), checked for duplicate families and by promtool (`what` names it there).
pub(crate) fn checked_scrape(
    reader: &mut shmetrics_reader::Reader,
    filter: &shmetrics_reader::PrefixFilter,
    what: &str,
) -> String {
    let mut out = Vec::new();
    reader
        .scrape(
            shmetrics_reader::Format::Prometheus,
            filter,
            false,
            &mut out,
        )
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert_type_lines_unique(&text);
    promtool_check(&text, what);
    text
}

/// The path of example `name` of the package under test, built by `cargo test` with the
/// other targets into `target/<profile>/examples/`, next to the test binaries' `deps/`.
pub(crate) fn example_binary(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .expect("the test binary lies in target/<profile>/deps");
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples (or run `cargo build --examples`)",
        path.display()
    );
    path
}

/// `GET url` over HTTP/1.1 with an optional `Accept` header; returns the status line and
/// headers (lower-cased) and the body. Fails the test on a status other than 200.
pub(crate) fn http_get(url: &str, accept: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (address, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the server");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    (head.to_ascii_lowercase(), body.to_owned())
}
