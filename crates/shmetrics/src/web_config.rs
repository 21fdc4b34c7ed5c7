//! The web configuration file of `--web.config.file`: TLS, client certificates, basic
//! authentication, response headers and a rate limit, in the format of the Prometheus
//! exporter toolkit (the same keys, defaults and meanings), so a file written for
//! node_exporter or Prometheus itself works unchanged.
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths are relative to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: clients-ca.crt
//! basic_auth_users:
//!   prometheus: $2y$10$X0h1gDsPszWURQaxFh.zoubFi6DXncSjhoQNJgRrnGs7EsimhC7zG
//! basic_auth_excluded_paths: [/health]
//! http_server_config:
//!   headers:
//!     Strict-Transport-Security: max-age=31536000
//! ```
//!
//! [`WebConfig::load`] reads and checks the whole file; every refusal names the key and
//! the reason ([`WebConfigError`]). Certificates and keys are read and checked when the
//! server starts (`server::Server::bind`) and re-read whenever their files change.
//! What rustls, the TLS library, cannot do is said where it matters: TLS 1.0 and 1.1
//! are never offered (a `min_version` below TLS12 serves TLS 1.2 and up), the CBC
//! cipher suites and the P-521 curve are left out of a list that names them (a list
//! left with nothing is refused), and HTTP/2 is not served (`http2` is accepted and
//! HTTP/1.1 is negotiated).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::remote_write::RemoteWriteTarget;

/// Why a web configuration file was refused: the file, the key (dotted, as
/// `tls_server_config.client_auth_type`; empty for the file as a whole) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WebConfigError {
    /// The file.
    pub path: PathBuf,
    /// The key at fault.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for WebConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "web config {}: {}", self.path.display(), self.reason)
        } else {
            write!(
                f,
                "web config {}: {}: {}",
                self.path.display(),
                self.key,
                self.reason
            )
        }
    }
}

/// PEM text from a file (re-read when it changes) or given inline in the configuration.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file (absolute, or joined to the configuration file's directory).
    File(PathBuf),
    /// Inline text (`cert`, `key`, `client_ca`).
    Inline(String),
}

impl fmt::Debug for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => f.debug_tuple("File").field(p).finish(),
            Self::Inline(_) => f.write_str("Inline(..)"),
        }
    }
}

/// `client_auth_type`: whether a client certificate is asked for, required and verified.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// No certificate asked for (the default).
    #[default]
    NoClientCert,
    /// Asked for, not required, not verified.
    RequestClientCert,
    /// Required (any certificate), not verified against a CA.
    RequireAnyClientCert,
    /// Not required; verified against the client CA when given.
    VerifyClientCertIfGiven,
    /// Required and verified against the client CA: the one setting that authenticates
    /// clients.
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    const NAMES: &'static str = "NoClientCert, RequestClientCert, RequireAnyClientCert, \
                                 VerifyClientCertIfGiven or RequireAndVerifyClientCert";

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "" | "NoClientCert" => Self::NoClientCert,
            "RequestClientCert" => Self::RequestClientCert,
            // The old name the exporter toolkit still accepts.
            "RequireAnyClientCert" | "RequireClientCert" => Self::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => Self::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => Self::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    /// Whether a handshake without a client certificate fails.
    pub fn requires_certificate(self) -> bool {
        matches!(
            self,
            Self::RequireAnyClientCert | Self::RequireAndVerifyClientCert
        )
    }

    /// Whether a client certificate is checked against the client CA.
    pub fn verifies(self) -> bool {
        matches!(
            self,
            Self::VerifyClientCertIfGiven | Self::RequireAndVerifyClientCert
        )
    }
}

/// A TLS protocol version of `min_version` and `max_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.0 (never served: below what rustls speaks).
    Tls10,
    /// TLS 1.1 (never served).
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TLS10" => Self::Tls10,
            "TLS11" => Self::Tls11,
            "TLS12" => Self::Tls12,
            "TLS13" => Self::Tls13,
            _ => return None,
        })
    }
}

/// An elliptic curve of `curve_preferences`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// X25519.
    X25519,
    /// NIST P-256.
    P256,
    /// NIST P-384.
    P384,
    /// NIST P-521 (not offered by rustls: left out).
    P521,
}

impl Curve {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "X25519" => Self::X25519,
            "CurveP256" => Self::P256,
            "CurveP384" => Self::P384,
            "CurveP521" => Self::P521,
            _ => return None,
        })
    }
}

/// The cipher suite names the exporter toolkit accepts (Go's secure suites), with whether
/// rustls offers them. TLS 1.3 suites are accepted and, as in Go, not configurable.
const CIPHER_SUITES: [(&str, bool); 15] = [
    ("TLS_AES_128_GCM_SHA256", true),
    ("TLS_AES_256_GCM_SHA384", true),
    ("TLS_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", true),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", true),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", true),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", true),
    // Go's short aliases of the two above.
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", true),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", true),
];

/// `tls_server_config`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// The certificate chain (`cert_file` or `cert`).
    pub cert: PemSource,
    /// Its private key (`key_file` or `key`).
    pub key: PemSource,
    /// `client_auth_type`.
    pub client_auth: ClientAuth,
    /// The client CA (`client_ca_file` or `client_ca`).
    pub client_ca: Option<PemSource>,
    /// `client_allowed_sans`: a client certificate must carry one of these DNS names,
    /// e-mail addresses, IP addresses or URIs (empty: any).
    pub client_allowed_sans: Vec<String>,
    /// `min_version` (default TLS12).
    pub min_version: TlsVersion,
    /// `max_version` (default TLS13).
    pub max_version: TlsVersion,
    /// `cipher_suites` that rustls offers, in the file's order, with Go's short names
    /// spelled out (empty: rustls' defaults).
    pub cipher_suites: Vec<String>,
    /// `prefer_server_cipher_suites` (default true).
    pub prefer_server_cipher_suites: bool,
    /// `curve_preferences` that rustls offers, in order (empty: rustls' defaults).
    pub curve_preferences: Vec<Curve>,
}

/// A bcrypt hash of `basic_auth_users`; its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(pub String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

/// `rate_limit`: a token bucket over all requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// One token comes back every `interval`.
    pub interval: Duration,
    /// Tokens the bucket holds (requests allowed at once).
    pub burst: u32,
}

/// A checked web configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// TLS; `None`: plain HTTP (no TLS key in the file).
    pub tls: Option<TlsSettings>,
    /// `basic_auth_users`: user name to bcrypt hash; empty: no basic authentication.
    pub users: BTreeMap<String, PasswordHash>,
    /// `basic_auth_excluded_paths`: request paths served without credentials (such as
    /// `/health`).
    pub auth_excluded_paths: Vec<String>,
    /// `http_server_config.headers`, added to every response.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// `http_server_config.http2` (accepted; HTTP/1.1 is served either way).
    pub http2: bool,
    /// `rate_limit` when its interval is not 0.
    pub rate_limit: Option<RateLimit>,
    /// `remote_write`: receivers the directory is sent to (an extension of the format; see
    /// [`crate::remote_write`]).
    pub remote_write: Vec<RemoteWriteTarget>,
    /// `external_labels`: added to every series sent by remote write.
    pub external_labels: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    basic_auth_excluded_paths: Option<Vec<String>>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    remote_write: Option<Vec<RawRemoteWrite>>,
    #[serde(default)]
    external_labels: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemoteWrite {
    url: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    remote_timeout: Option<String>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    basic_auth: Option<RawBasicAuth>,
    #[serde(default)]
    authorization: Option<RawAuthorization>,
    #[serde(default)]
    bearer_token: Option<String>,
    #[serde(default)]
    bearer_token_file: Option<String>,
    #[serde(default)]
    tls_config: Option<RawClientTls>,
    #[serde(default)]
    queue_config: Option<RawQueueConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBasicAuth {
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthorization {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    credentials: Option<String>,
    #[serde(default)]
    credentials_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawClientTls {
    #[serde(default)]
    ca_file: Option<String>,
    #[serde(default)]
    cert_file: Option<String>,
    #[serde(default)]
    key_file: Option<String>,
    #[serde(default)]
    server_name: Option<String>,
    #[serde(default)]
    insecure_skip_verify: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawQueueConfig {
    #[serde(default)]
    min_backoff: Option<String>,
    #[serde(default)]
    max_backoff: Option<String>,
    #[serde(default)]
    max_queue_bytes: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    #[serde(default)]
    cert: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    client_ca: String,
    #[serde(default)]
    cert_file: String,
    #[serde(default)]
    key_file: String,
    #[serde(default)]
    client_auth_type: String,
    #[serde(default)]
    client_ca_file: String,
    #[serde(default)]
    cipher_suites: Option<Vec<String>>,
    #[serde(default)]
    curve_preferences: Option<Vec<String>>,
    #[serde(default)]
    min_version: Option<String>,
    #[serde(default)]
    max_version: Option<String>,
    #[serde(default)]
    prefer_server_cipher_suites: Option<bool>,
    #[serde(default)]
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default)]
    http2: Option<bool>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    burst: Option<i64>,
}

/// The response headers the exporter toolkit lets a file set, and the values it allows
/// (`None`: any).
const HEADERS: [(&str, Option<&[&str]>); 5] = [
    ("Content-Security-Policy", None),
    ("X-Frame-Options", Some(&["deny", "sameorigin"])),
    ("X-Content-Type-Options", Some(&["nosniff"])),
    ("X-XSS-Protection", None),
    ("Strict-Transport-Security", None),
];

impl WebConfig {
    /// Reads and checks `path`. Certificate and key files are not read here (the server
    /// reads them when it starts, and again when they change).
    ///
    /// # Errors
    /// The file cannot be read, is not YAML, has a key the format does not know, or a
    /// value it does not allow; the error names the key and why.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| WebConfigError {
            path: path.to_owned(),
            key: String::new(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text` as the content of the file `path` (relative paths in it are joined
    /// to `path`'s directory).
    ///
    /// # Errors
    /// As [`WebConfig::load`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, WebConfigError> {
        let err = |key: &str, reason: String| WebConfigError {
            path: path.to_owned(),
            key: key.to_owned(),
            reason,
        };
        let raw: Option<RawConfig> = serde_saphyr::from_str(text).map_err(|e| {
            // The first line only: the parser's excerpt of the file could show a secret.
            let message = e.to_string();
            let line = message.lines().next().unwrap_or_default();
            let line = line.strip_prefix("error: ").unwrap_or(line);
            let line = line
                .split_once(", set DuplicateKeyPolicy")
                .map_or(line, |(l, _)| l);
            err("", format!("not a valid web configuration: {line}"))
        })?;
        let raw = raw.unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut config = WebConfig {
            path: path.to_owned(),
            http2: true,
            ..WebConfig::default()
        };
        if let Some(tls) = raw.tls_server_config {
            config.tls = tls_settings(tls, dir).map_err(|(k, r)| err(k, r))?;
        }
        if let Some(http) = raw.http_server_config {
            config.http2 = http.http2.unwrap_or(true);
            for (name, value) in http.headers.unwrap_or_default() {
                config
                    .headers
                    .push(header(&name, &value).map_err(|r| err("http_server_config.headers", r))?);
            }
        }
        for (user, hash) in raw.basic_auth_users.unwrap_or_default() {
            check_bcrypt(&hash)
                .map_err(|r| err("basic_auth_users", format!("user {user:?}: {r}")))?;
            config.users.insert(user, PasswordHash(hash));
        }
        for p in raw.basic_auth_excluded_paths.unwrap_or_default() {
            if !p.starts_with('/') {
                return Err(err(
                    "basic_auth_excluded_paths",
                    format!("{p:?} is not a request path (it must start with /)"),
                ));
            }
            config.auth_excluded_paths.push(p);
        }
        if let Some(limit) = raw.rate_limit {
            config.rate_limit = rate_limit(limit).map_err(|(k, r)| err(k, r))?;
        }
        for (i, target) in raw.remote_write.unwrap_or_default().into_iter().enumerate() {
            let target = remote_write_target(target, dir)
                .map_err(|(k, r)| err(&format!("remote_write[{i}]{k}"), r))?;
            if config.remote_write.iter().any(|t| t.name == target.name) {
                return Err(err(
                    &format!("remote_write[{i}].name"),
                    format!(
                        "{:?} names another target too: give each a distinct name",
                        target.name
                    ),
                ));
            }
            config.remote_write.push(target);
        }
        for (name, value) in raw.external_labels.unwrap_or_default() {
            check_label_name(&name).map_err(|r| err("external_labels", r))?;
            config.external_labels.push((name, value));
        }
        Ok(config)
    }

    /// Whether requests need credentials (`basic_auth_users` is not empty).
    pub fn basic_auth(&self) -> bool {
        !self.users.is_empty()
    }
}

type KeyError = (&'static str, String);

/// Checks a label name of `external_labels` or `--remote-write-label`: the classic
/// characters, not reserved (`__` prefix).
///
/// # Errors
/// Why it is not one.
pub fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let classic = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !classic {
        return Err(format!(
            "{name:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"
        ));
    }
    if name.starts_with("__") {
        return Err(format!("{name:?}: names starting with __ are reserved"));
    }
    Ok(())
}

fn duration_key(
    key: &'static str,
    text: Option<String>,
    default: Duration,
) -> Result<Duration, KeyError> {
    match text {
        None => Ok(default),
        Some(t) => parse_go_duration(&t)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                (
                    key,
                    format!("{t:?} is not a positive duration (such as 100ms, 5s or 1m)"),
                )
            }),
    }
}

fn remote_write_target(raw: RawRemoteWrite, dir: &Path) -> Result<RemoteWriteTarget, KeyError> {
    use crate::remote_write::{Credentials, RESERVED_HEADERS, Secret};
    let mut target = RemoteWriteTarget::new(&raw.url).map_err(|r| (".url", r))?;
    if let Some(name) = raw.name {
        if name.is_empty() {
            return Err((".name", "empty".into()));
        }
        target.name = name;
    }
    target.timeout = duration_key(".remote_timeout", raw.remote_timeout, target.timeout)?;
    for (name, value) in raw.headers.unwrap_or_default() {
        if RESERVED_HEADERS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&name))
        {
            return Err((
                ".headers",
                format!(
                    "{name} cannot be set here (the protocol or the credentials set it: use basic_auth or authorization)"
                ),
            ));
        }
        let header_name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| (".headers", format!("{name:?} is not a header name")))?;
        let header_value = http::HeaderValue::from_str(&value)
            .map_err(|_| (".headers", format!("{name}: not a valid header value")))?;
        target.headers.push((header_name, header_value));
    }
    let secret =
        |key: &'static str, inline: Option<String>, file: Option<String>, what: &str| match (
            inline, file,
        ) {
            (Some(v), None) => Ok(Some(Secret::Inline(v))),
            (None, Some(f)) => Ok(Some(Secret::File(dir.join(f)))),
            (None, None) => Ok(None),
            (Some(_), Some(_)) => {
                Err((key, format!("give either {what} or {what}_file, not both")))
            }
        };
    let mut credentials = Vec::new();
    if let Some(basic) = raw.basic_auth {
        let password = secret(
            ".basic_auth",
            basic.password,
            basic.password_file,
            "password",
        )?
        .ok_or((".basic_auth", "give password or password_file".to_owned()))?;
        credentials.push(Credentials::Basic {
            user: basic.username,
            password,
        });
    }
    if let Some(auth) = raw.authorization {
        let kind = auth.kind.unwrap_or_else(|| "Bearer".to_owned());
        if !kind.eq_ignore_ascii_case("bearer") {
            return Err((
                ".authorization.type",
                format!("{kind:?}: only Bearer is supported"),
            ));
        }
        let token = secret(
            ".authorization",
            auth.credentials,
            auth.credentials_file,
            "credentials",
        )?
        .ok_or((
            ".authorization",
            "give credentials or credentials_file".to_owned(),
        ))?;
        credentials.push(Credentials::Bearer(token));
    }
    if let Some(token) = secret(
        ".bearer_token",
        raw.bearer_token,
        raw.bearer_token_file,
        "bearer_token",
    )? {
        credentials.push(Credentials::Bearer(token));
    }
    if credentials.len() > 1 {
        return Err((
            ".basic_auth",
            "give at most one of basic_auth, authorization and bearer_token".into(),
        ));
    }
    target.credentials = credentials.pop().unwrap_or_default();
    let tls = raw.tls_config.unwrap_or_default();
    if tls.insecure_skip_verify == Some(true) {
        return Err((
            ".tls_config.insecure_skip_verify",
            "not supported: give the receiver's CA in tls_config.ca_file".into(),
        ));
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return Err((
            ".tls_config.cert_file",
            "give both cert_file and key_file, or neither".into(),
        ));
    }
    target.tls = crate::remote_write::ClientTls {
        ca_file: tls.ca_file.map(|f| dir.join(f)),
        cert_file: tls.cert_file.map(|f| dir.join(f)),
        key_file: tls.key_file.map(|f| dir.join(f)),
        server_name: tls.server_name,
    };
    let queue = raw.queue_config.unwrap_or_default();
    target.min_backoff = duration_key(
        ".queue_config.min_backoff",
        queue.min_backoff,
        target.min_backoff,
    )?;
    target.max_backoff = duration_key(
        ".queue_config.max_backoff",
        queue.max_backoff,
        target.max_backoff,
    )?;
    if target.min_backoff > target.max_backoff {
        return Err((".queue_config.min_backoff", "above max_backoff".into()));
    }
    if let Some(bytes) = queue.max_queue_bytes {
        if bytes == 0 {
            return Err((".queue_config.max_queue_bytes", "0 holds no request".into()));
        }
        target.max_queue_bytes = bytes;
    }
    Ok(target)
}

fn pem_source(
    inline: String,
    file: String,
    inline_key: &'static str,
    file_key: &'static str,
    dir: &Path,
) -> Result<Option<PemSource>, KeyError> {
    match (inline.is_empty(), file.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Err((
            file_key,
            format!("give either {inline_key} or {file_key}, not both"),
        )),
        (false, true) => Ok(Some(PemSource::Inline(inline))),
        (true, false) => Ok(Some(PemSource::File(dir.join(file)))),
    }
}

fn tls_settings(raw: RawTls, dir: &Path) -> Result<Option<TlsSettings>, KeyError> {
    const T: &str = "tls_server_config";
    let enabled = [
        &raw.cert,
        &raw.key,
        &raw.cert_file,
        &raw.key_file,
        &raw.client_ca,
        &raw.client_ca_file,
        &raw.client_auth_type,
    ]
    .iter()
    .any(|s| !s.is_empty());
    if !enabled {
        // As the exporter toolkit: a section without certificate, key or client settings
        // leaves TLS off. Anything else in it would then be ignored: say so.
        let ignored = raw.cipher_suites.is_some()
            || raw.curve_preferences.is_some()
            || raw.min_version.is_some()
            || raw.max_version.is_some()
            || raw.client_allowed_sans.is_some();
        if ignored {
            return Err((
                "tls_server_config.cert_file",
                "TLS settings are given without a certificate and key".into(),
            ));
        }
        return Ok(None);
    }
    let cert = pem_source(
        raw.cert,
        raw.cert_file,
        "tls_server_config.cert",
        "tls_server_config.cert_file",
        dir,
    )?
    .ok_or((
        "tls_server_config.cert_file",
        "missing one of cert or cert_file".to_owned(),
    ))?;
    let key = pem_source(
        raw.key,
        raw.key_file,
        "tls_server_config.key",
        "tls_server_config.key_file",
        dir,
    )?
    .ok_or((
        "tls_server_config.key_file",
        "missing one of key or key_file".to_owned(),
    ))?;
    let client_ca = pem_source(
        raw.client_ca,
        raw.client_ca_file,
        "tls_server_config.client_ca",
        "tls_server_config.client_ca_file",
        dir,
    )?;
    let client_auth = ClientAuth::parse(&raw.client_auth_type).ok_or_else(|| {
        (
            "tls_server_config.client_auth_type",
            format!(
                "{:?} is not one of {}",
                raw.client_auth_type,
                ClientAuth::NAMES
            ),
        )
    })?;
    if client_ca.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err((
            "tls_server_config.client_auth_type",
            "a client CA is given without a client_auth_type that asks for client certificates"
                .into(),
        ));
    }
    if client_auth.verifies() && client_ca.is_none() {
        return Err((
            "tls_server_config.client_ca_file",
            format!(
                "client_auth_type {client_auth:?} verifies client certificates against a CA: give client_ca_file or client_ca"
            ),
        ));
    }
    let client_allowed_sans = raw.client_allowed_sans.unwrap_or_default();
    if !client_allowed_sans.is_empty() && !client_auth.requires_certificate() {
        return Err((
            "tls_server_config.client_allowed_sans",
            "client_allowed_sans requires client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert".into(),
        ));
    }
    let version = |key: &'static str, value: Option<String>, default| match value {
        None => Ok(default),
        Some(v) => TlsVersion::parse(&v).ok_or_else(|| {
            (
                key,
                format!("{v:?} is not one of TLS10, TLS11, TLS12 or TLS13"),
            )
        }),
    };
    let min_version = version(
        "tls_server_config.min_version",
        raw.min_version,
        TlsVersion::Tls12,
    )?;
    let max_version = version(
        "tls_server_config.max_version",
        raw.max_version,
        TlsVersion::Tls13,
    )?;
    if max_version < TlsVersion::Tls12 {
        return Err((
            "tls_server_config.max_version",
            "rustls, shmetrics' TLS library, speaks TLS 1.2 and 1.3 only".into(),
        ));
    }
    if min_version > max_version {
        return Err((
            "tls_server_config.min_version",
            format!("{min_version:?} is above max_version {max_version:?}"),
        ));
    }
    if min_version < TlsVersion::Tls12 {
        log::warn!(
            "{T}.min_version {min_version:?}: TLS 1.0 and 1.1 are not offered (rustls speaks TLS 1.2 and 1.3)"
        );
    }
    let mut cipher_suites = Vec::new();
    let named = raw.cipher_suites.unwrap_or_default();
    for name in &named {
        let Some(&(_, offered)) = CIPHER_SUITES.iter().find(|(n, _)| n == name) else {
            return Err((
                "tls_server_config.cipher_suites",
                format!("unknown cipher: {name}"),
            ));
        };
        if offered {
            let full = if name.ends_with("POLY1305") {
                format!("{name}_SHA256")
            } else {
                name.clone()
            };
            cipher_suites.push(full);
        } else {
            log::warn!("{T}.cipher_suites: {name} (CBC) is not offered by rustls; left out");
        }
    }
    let tls12_suites = cipher_suites
        .iter()
        .filter(|n| n.contains("_WITH_"))
        .count();
    if !named.is_empty() && tls12_suites == 0 && min_version <= TlsVersion::Tls12 {
        return Err((
            "tls_server_config.cipher_suites",
            "none of the listed TLS 1.2 suites is offered by rustls (it has the ECDHE AES-GCM \
             and ChaCha20-Poly1305 suites only)"
                .into(),
        ));
    }
    let mut curve_preferences = Vec::new();
    let curves = raw.curve_preferences.unwrap_or_default();
    for name in &curves {
        let curve = Curve::parse(name).ok_or_else(|| {
            (
                "tls_server_config.curve_preferences",
                format!("unknown curve: {name}"),
            )
        })?;
        if curve == Curve::P521 {
            log::warn!("{T}.curve_preferences: CurveP521 is not offered by rustls; left out");
        } else {
            curve_preferences.push(curve);
        }
    }
    if !curves.is_empty() && curve_preferences.is_empty() {
        return Err((
            "tls_server_config.curve_preferences",
            "rustls offers none of the listed curves (it has X25519, CurveP256 and CurveP384)"
                .into(),
        ));
    }
    Ok(Some(TlsSettings {
        cert,
        key,
        client_auth,
        client_ca,
        client_allowed_sans,
        min_version,
        max_version,
        cipher_suites,
        prefer_server_cipher_suites: raw.prefer_server_cipher_suites.unwrap_or(true),
        curve_preferences,
    }))
}

/// Checks the shape of a bcrypt hash (`$2a$`, `$2b$`, `$2x$` or `$2y$`, a cost of 4 to 31,
/// 53 characters of bcrypt's base64).
fn check_bcrypt(hash: &str) -> Result<(), String> {
    let bad = || {
        Err("not a bcrypt hash (such as $2y$10$ followed by 53 characters; make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)".to_owned())
    };
    let Some(rest) = ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .find_map(|p| hash.strip_prefix(p))
    else {
        return bad();
    };
    let Some((cost, digest)) = rest.split_once('$') else {
        return bad();
    };
    let Ok(cost) = cost.parse::<u32>() else {
        return bad();
    };
    if !(4..=31).contains(&cost) {
        return Err(format!("bcrypt cost {cost} is outside 4..=31"));
    }
    if digest.len() != 53
        || !digest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    {
        return bad();
    }
    Ok(())
}

fn header(name: &str, value: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let Some(&(canonical, allowed)) = HEADERS.iter().find(|(n, _)| n.eq_ignore_ascii_case(name))
    else {
        let names: Vec<&str> = HEADERS.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "HTTP header {name:?} can not be configured (only {})",
            names.join(", ")
        ));
    };
    if let Some(values) = allowed
        && !values.iter().any(|v| v.eq_ignore_ascii_case(value))
    {
        return Err(format!(
            "invalid value for {canonical}: {value:?} (one of {})",
            values.join(", ")
        ));
    }
    let value = http::HeaderValue::from_str(value)
        .map_err(|_| format!("{canonical}: {value:?} is not a valid header value"))?;
    let name = http::HeaderName::from_bytes(canonical.as_bytes())
        .map_err(|_| format!("{canonical:?} is not a header name"))?;
    Ok((name, value))
}

fn rate_limit(raw: RawRateLimit) -> Result<Option<RateLimit>, KeyError> {
    let interval = match raw.interval {
        None => Duration::ZERO,
        Some(text) => parse_go_duration(&text).ok_or_else(|| {
            (
                "rate_limit.interval",
                format!("{text:?} is not a duration (such as 100ms, 1s or 1m30s)"),
            )
        })?,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    let burst = raw.burst.unwrap_or(0);
    let burst = u32::try_from(burst)
        .ok()
        .filter(|&b| b > 0)
        .ok_or_else(|| {
            (
                "rate_limit.burst",
                format!("{burst} lets no request through: give at least 1 with an interval"),
            )
        })?;
    Ok(Some(RateLimit { interval, burst }))
}

/// Parses a Go duration: a sequence of decimal numbers with units (`ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`), such as `1m30s` or `1.5s`; `0` alone is zero.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&n| n > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += number * seconds;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$2y$04$mejWAnmrk8DD1tizBcYcBOGx2YuP8AvZ.zo6F3YGaredAzU0LKU7m";

    fn parse(text: &str) -> Result<WebConfig, WebConfigError> {
        WebConfig::parse(Path::new("/etc/shmetrics/web.yml"), text)
    }

    #[test]
    fn empty_and_comment_only_files_change_nothing() {
        for text in ["", "# nothing yet\n", "tls_server_config:\n"] {
            let c = parse(text).unwrap();
            assert_eq!(c.tls, None);
            assert!(!c.basic_auth());
            assert!(c.http2);
            assert_eq!(c.rate_limit, None);
        }
    }

    #[test]
    fn every_key_of_the_format_is_read_with_its_default() {
        let c = parse(&format!(
            "tls_server_config:
  cert_file: tls/server.crt
  key_file: /abs/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
  client_allowed_sans: [prometheus.example, 10.0.0.1]
  min_version: TLS13
  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305]
  curve_preferences: [CurveP521, X25519]
  prefer_server_cipher_suites: false
http_server_config:
  http2: false
  headers:
    x-content-type-options: NoSniff
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  alice: {HASH}
basic_auth_excluded_paths: [/health]
rate_limit:
  interval: 1m30s
  burst: 5
"
        ))
        .unwrap();
        let tls = c.tls.unwrap();
        assert_eq!(
            tls.cert,
            PemSource::File(PathBuf::from("/etc/shmetrics/tls/server.crt"))
        );
        assert_eq!(tls.key, PemSource::File(PathBuf::from("/abs/server.key")));
        assert_eq!(tls.client_auth, ClientAuth::RequireAndVerifyClientCert);
        assert_eq!(
            tls.client_ca,
            Some(PemSource::File(PathBuf::from("/etc/shmetrics/ca.crt")))
        );
        assert_eq!(tls.client_allowed_sans, ["prometheus.example", "10.0.0.1"]);
        assert_eq!(
            (tls.min_version, tls.max_version),
            (TlsVersion::Tls13, TlsVersion::Tls13)
        );
        // The CBC suite is left out, Go's short name spelled out.
        assert_eq!(
            tls.cipher_suites,
            ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"]
        );
        assert_eq!(tls.curve_preferences, [Curve::X25519]);
        assert!(!tls.prefer_server_cipher_suites);
        assert!(!c.http2);
        let headers: Vec<(String, String)> = c
            .headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect();
        assert_eq!(
            headers,
            [
                (
                    "strict-transport-security".to_owned(),
                    "max-age=31536000".to_owned()
                ),
                ("x-content-type-options".to_owned(), "NoSniff".to_owned()),
            ]
        );
        assert_eq!(c.users["alice"].0, HASH);
        assert_eq!(format!("{:?}", c.users["alice"]), "PasswordHash(..)");
        assert_eq!(c.auth_excluded_paths, ["/health"]);
        assert_eq!(
            c.rate_limit,
            Some(RateLimit {
                interval: Duration::from_secs(90),
                burst: 5
            })
        );
    }

    #[test]
    fn inline_pem_is_kept_and_not_shown() {
        let c = parse(
            "tls_server_config:\n  cert: |\n    -----BEGIN CERTIFICATE-----\n  key: secret-key-text\n",
        )
        .unwrap();
        let tls = c.tls.unwrap();
        assert!(matches!(&tls.key, PemSource::Inline(k) if k == "secret-key-text"));
        assert!(!format!("{tls:?}").contains("secret-key-text"));
    }

    /// Each malformed variant: the key named and the reason.
    #[test]
    fn malformed_files_name_the_key_and_the_reason() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "tls_server_config:\n  cert_fil: a.crt\n",
                "",
                "not a valid web configuration: line 2 column 3: unknown field `cert_fil`, expected one of",
            ),
            (
                "tls_config:\n  cert_file: a\n",
                "",
                "unknown field `tls_config`",
            ),
            (
                "basic_auth_users:\n  a: x\n  a: y\n",
                "",
                "line 3 column 3: duplicate mapping key: a",
            ),
            ("- a\n", "", "line 1 column 1: expected mapping start"),
            (
                "tls_server_config:\n  cert_file: a.crt\n",
                "tls_server_config.key_file",
                "missing one of key or key_file",
            ),
            (
                "tls_server_config:\n  key_file: a.key\n",
                "tls_server_config.cert_file",
                "missing one of cert or cert_file",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  cert: b\n  key_file: k\n",
                "tls_server_config.cert_file",
                "give either tls_server_config.cert or tls_server_config.cert_file, not both",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  client_auth_type: RequireAndVerify\n",
                "tls_server_config.client_auth_type",
                "\"RequireAndVerify\" is not one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  client_ca_file: ca\n",
                "tls_server_config.client_auth_type",
                "a client CA is given without a client_auth_type that asks for client certificates",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  client_auth_type: RequireAndVerifyClientCert\n",
                "tls_server_config.client_ca_file",
                "client_auth_type RequireAndVerifyClientCert verifies client certificates against a CA: give client_ca_file or client_ca",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca\n  client_allowed_sans: [x]\n",
                "tls_server_config.client_allowed_sans",
                "client_allowed_sans requires client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  min_version: TLS1.2\n",
                "tls_server_config.min_version",
                "\"TLS1.2\" is not one of TLS10, TLS11, TLS12 or TLS13",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  min_version: TLS13\n  max_version: TLS12\n",
                "tls_server_config.min_version",
                "Tls13 is above max_version Tls12",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  max_version: TLS11\n",
                "tls_server_config.max_version",
                "rustls, shmetrics' TLS library, speaks TLS 1.2 and 1.3 only",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
                "tls_server_config.cipher_suites",
                "unknown cipher: TLS_RSA_WITH_RC4_128_SHA",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n",
                "tls_server_config.cipher_suites",
                "none of the listed TLS 1.2 suites is offered by rustls",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  curve_preferences: [CurveP999]\n",
                "tls_server_config.curve_preferences",
                "unknown curve: CurveP999",
            ),
            (
                "tls_server_config:\n  cert_file: a\n  key_file: k\n  curve_preferences: [CurveP521]\n",
                "tls_server_config.curve_preferences",
                "rustls offers none of the listed curves",
            ),
            (
                "tls_server_config:\n  min_version: TLS13\n",
                "tls_server_config.cert_file",
                "TLS settings are given without a certificate and key",
            ),
            (
                "basic_auth_users:\n  alice: hunter2\n",
                "basic_auth_users",
                "user \"alice\": not a bcrypt hash",
            ),
            (
                "basic_auth_users:\n  alice: $2y$99$mejWAnmrk8DD1tizBcYcBOGx2YuP8AvZ.zo6F3YGaredAzU0LKU7m\n",
                "basic_auth_users",
                "user \"alice\": bcrypt cost 99 is outside 4..=31",
            ),
            (
                "basic_auth_excluded_paths: [health]\n",
                "basic_auth_excluded_paths",
                "\"health\" is not a request path (it must start with /)",
            ),
            (
                "http_server_config:\n  headers:\n    Server: shmetrics\n",
                "http_server_config.headers",
                "HTTP header \"Server\" can not be configured (only Content-Security-Policy, X-Frame-Options, X-Content-Type-Options, X-XSS-Protection, Strict-Transport-Security)",
            ),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "http_server_config.headers",
                "invalid value for X-Frame-Options: \"allow\" (one of deny, sameorigin)",
            ),
            (
                "http_server_config:\n  http2: maybe\n",
                "",
                "line 2 column 10",
            ),
            (
                "rate_limit:\n  interval: 1 second\n  burst: 1\n",
                "rate_limit.interval",
                "\"1 second\" is not a duration (such as 100ms, 1s or 1m30s)",
            ),
            (
                "rate_limit:\n  interval: 1s\n",
                "rate_limit.burst",
                "0 lets no request through: give at least 1 with an interval",
            ),
            ("remote_write:\n  - name: a\n", "", "missing field `url`"),
            (
                "remote_write:\n  - url: ftp://x/y\n",
                "remote_write[0].url",
                "\"ftp://x/y\": the URL must start with http:// or https://",
            ),
            (
                "remote_write:\n  - url: http://u:p@x/api/v1/write\n",
                "remote_write[0].url",
                "give credentials with basic_auth, not in the URL",
            ),
            (
                "remote_write:\n  - url: http://a/w\n  - url: http://b/w\n    name: http://a/w\n",
                "remote_write[1].name",
                "\"http://a/w\" names another target too: give each a distinct name",
            ),
            (
                "remote_write:\n  - url: http://a/w\n    headers: {Authorization: x}\n",
                "remote_write[0].headers",
                "Authorization cannot be set here",
            ),
            (
                "remote_write:\n  - url: http://a/w\n    basic_auth: {username: u}\n",
                "remote_write[0].basic_auth",
                "give password or password_file",
            ),
            (
                "remote_write:\n  - url: http://a/w\n    basic_auth: {username: u, password: p, password_file: f}\n",
                "remote_write[0].basic_auth",
                "give either password or password_file, not both",
            ),
            (
                "remote_write:\n  - url: http://a/w\n    basic_auth: {username: u, password: p}\n    bearer_token: t\n",
                "remote_write[0].basic_auth",
                "give at most one of basic_auth, authorization and bearer_token",
            ),
            (
                "remote_write:\n  - url: http://a/w\n    authorization: {type: Digest, credentials: x}\n",
                "remote_write[0].authorization.type",
                "\"Digest\": only Bearer is supported",
            ),
            (
                "remote_write:\n  - url: https://a/w\n    tls_config: {insecure_skip_verify: true}\n",
                "remote_write[0].tls_config.insecure_skip_verify",
                "not supported: give the receiver's CA in tls_config.ca_file",
            ),
            (
                "remote_write:\n  - url: https://a/w\n    tls_config: {cert_file: c}\n",
                "remote_write[0].tls_config.cert_file",
                "give both cert_file and key_file, or neither",
            ),
            (
                "remote_write:\n  - url: http://a/w\n    remote_timeout: 0s\n",
                "remote_write[0].remote_timeout",
                "\"0s\" is not a positive duration",
            ),
            (
                "remote_write:\n  - url: http://a/w\n    queue_config: {min_backoff: 10s, max_backoff: 1s}\n",
                "remote_write[0].queue_config.min_backoff",
                "above max_backoff",
            ),
            (
                "remote_write:\n  - url: http://a/w\n    queue_config: {capacity: 10}\n",
                "",
                "unknown field `capacity`",
            ),
            (
                "external_labels:\n  __tenant: a\n",
                "external_labels",
                "\"__tenant\": names starting with __ are reserved",
            ),
            (
                "external_labels:\n  node-name: a\n",
                "external_labels",
                "\"node-name\" is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)",
            ),
        ];
        for &(text, key, reason) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.key, key, "{text}");
            assert!(
                e.reason.contains(reason),
                "{text}: {:?} does not contain {reason:?}",
                e.reason
            );
            assert_eq!(e.path, Path::new("/etc/shmetrics/web.yml"));
            let shown = e.to_string();
            let prefix = if key.is_empty() {
                "web config /etc/shmetrics/web.yml: ".to_owned()
            } else {
                format!("web config /etc/shmetrics/web.yml: {key}: ")
            };
            assert!(shown.starts_with(&prefix), "{shown}");
        }
    }

    #[test]
    fn remote_write_targets_with_their_settings() {
        use crate::remote_write::{Credentials, Secret};
        let c = parse(
            "remote_write:
  - url: https://mimir.example:8443/api/v1/push?x=1
    name: mimir
    remote_timeout: 10s
    headers: {X-Scope-OrgID: team-a}
    basic_auth: {username: shm, password_file: secrets/mimir}
    tls_config: {ca_file: ca.crt, cert_file: c.crt, key_file: c.key, server_name: mimir}
    queue_config: {min_backoff: 100ms, max_backoff: 10s, max_queue_bytes: 1048576}
  - url: http://[::1]/api/v1/write
    authorization: {credentials: tok}
external_labels: {cluster: prod, instance: node-7}
",
        )
        .unwrap();
        let [mimir, local] = &c.remote_write[..] else {
            panic!("two targets: {:?}", c.remote_write);
        };
        assert_eq!(mimir.name, "mimir");
        assert_eq!(mimir.url, "https://mimir.example:8443/api/v1/push?x=1");
        assert_eq!(mimir.timeout, Duration::from_secs(10));
        assert_eq!(mimir.headers[0].0.as_str(), "x-scope-orgid");
        assert_eq!(
            mimir.credentials,
            Credentials::Basic {
                user: "shm".into(),
                password: Secret::File(PathBuf::from("/etc/shmetrics/secrets/mimir"))
            }
        );
        assert_eq!(
            mimir.tls.ca_file.as_deref(),
            Some(Path::new("/etc/shmetrics/ca.crt"))
        );
        assert_eq!(mimir.tls.server_name.as_deref(), Some("mimir"));
        assert_eq!(
            (mimir.min_backoff, mimir.max_backoff, mimir.max_queue_bytes),
            (Duration::from_millis(100), Duration::from_secs(10), 1 << 20)
        );
        assert_eq!(local.name, "http://[::1]/api/v1/write");
        assert_eq!(
            local.credentials,
            Credentials::Bearer(Secret::Inline("tok".into()))
        );
        assert!(!format!("{local:?}").contains("tok"));
        assert_eq!(local.timeout, crate::remote_write::DEFAULT_TIMEOUT);
        assert_eq!(
            c.external_labels,
            [
                ("cluster".to_owned(), "prod".to_owned()),
                ("instance".to_owned(), "node-7".to_owned())
            ]
        );
    }

    #[test]
    fn parse_errors_never_echo_the_file() {
        let e = parse("basic_auth_users:\n  alice: [$2y$10$topsecret\n").unwrap_err();
        assert!(!e.reason.contains("topsecret"), "{e}");
        assert!(!e.reason.contains('\n'), "{e}");
    }

    #[test]
    fn go_durations() {
        for (text, want) in [
            ("0", Some(Duration::ZERO)),
            ("100ms", Some(Duration::from_millis(100))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("1h2m3s", Some(Duration::from_secs(3723))),
            ("250us", Some(Duration::from_micros(250))),
            ("250µs", Some(Duration::from_micros(250))),
            ("10ns", Some(Duration::from_nanos(10))),
            ("", None),
            ("1", None),
            ("s", None),
            ("1d", None),
            ("-1s", None),
        ] {
            assert_eq!(parse_go_duration(text), want, "{text}");
        }
    }
}
