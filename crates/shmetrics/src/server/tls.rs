//! TLS for the HTTP endpoint: a rustls server configuration built from the web
//! configuration's `tls_server_config`, rebuilt when its certificate, key or client CA file
//! changes (rotation without a restart), and the client certificate checks its
//! `client_auth_type` and `client_allowed_sans` ask for.

use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{SignatureScheme, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::web_config::{ClientAuth, Curve, PemSource, TlsSettings, TlsVersion, WebConfigError};

/// What identifies one version of a file: a rotation (rename or rewrite) changes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_nanos: i128,
    ctime_nanos: i128,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime_nanos: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_nanos: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// The configuration in use and the files it was built from.
struct Current {
    stamps: Vec<Option<FileStamp>>,
    config: Arc<ServerConfig>,
    /// The stamps of the last rebuild that failed: not retried (nor logged) until a file
    /// changes again.
    failed: Option<Vec<Option<FileStamp>>>,
}

/// Whether a [`Tls::config`] call rebuilt the configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reload {
    /// Nothing changed.
    None,
    /// A file changed and the new configuration is in use.
    Reloaded,
    /// A file changed and could not be used; the previous configuration stays.
    Failed,
}

/// The TLS side of the server.
pub(crate) struct Tls {
    settings: TlsSettings,
    config_path: PathBuf,
    current: Mutex<Current>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the certificate, key and client CA now.
    ///
    /// # Errors
    /// A file cannot be read, holds no certificate or key, or the key does not match the
    /// certificate: the error names the key of the web configuration file and why.
    pub(crate) fn new(settings: TlsSettings, config_path: &Path) -> Result<Self, WebConfigError> {
        let stamps = stamps(&settings);
        let config = build(&settings).map_err(|(key, reason)| WebConfigError {
            path: config_path.to_owned(),
            key: key.to_owned(),
            reason,
        })?;
        Ok(Self {
            settings,
            config_path: config_path.to_owned(),
            current: Mutex::new(Current {
                stamps,
                config: Arc::new(config),
                failed: None,
            }),
        })
    }

    /// The configuration for a new connection: rebuilt first when a file changed since it
    /// was built (a few `stat` calls per handshake). A file that cannot be used (such as a
    /// certificate rewritten before its key) keeps the previous configuration, logged once
    /// per change.
    pub(crate) fn config(&self) -> (Arc<ServerConfig>, Reload) {
        let now = stamps(&self.settings);
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if now == current.stamps || current.failed.as_ref() == Some(&now) {
            return (Arc::clone(&current.config), Reload::None);
        }
        match build(&self.settings) {
            Ok(config) => {
                log::info!(
                    "TLS certificate files changed: reloaded ({})",
                    self.config_path.display()
                );
                current.config = Arc::new(config);
                current.stamps = now;
                current.failed = None;
                (Arc::clone(&current.config), Reload::Reloaded)
            }
            Err((key, reason)) => {
                log::warn!(
                    "TLS files changed but cannot be used, keeping the previous ones: web config {}: {key}: {reason}",
                    self.config_path.display()
                );
                current.failed = Some(now);
                (Arc::clone(&current.config), Reload::Failed)
            }
        }
    }
}

fn stamps(settings: &TlsSettings) -> Vec<Option<FileStamp>> {
    [
        Some(&settings.cert),
        Some(&settings.key),
        settings.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|source| match source {
        PemSource::File(path) => stamp(path),
        PemSource::Inline(_) => None,
    })
    .collect()
}

type KeyError = (&'static str, String);

fn read(source: &PemSource, key: &'static str) -> Result<Vec<u8>, KeyError> {
    match source {
        PemSource::Inline(text) => Ok(text.as_bytes().to_vec()),
        PemSource::File(path) => {
            std::fs::read(path).map_err(|e| (key, format!("cannot read {}: {e}", path.display())))
        }
    }
}

/// `(file key, inline key)` of a source, for errors.
fn key_of(source: &PemSource, file: &'static str, inline: &'static str) -> &'static str {
    match source {
        PemSource::File(_) => file,
        PemSource::Inline(_) => inline,
    }
}

fn certificates(
    source: &PemSource,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, KeyError> {
    let pem = read(source, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| (key, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err((key, "holds no PEM CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// The ring provider with the suites and groups the settings name (all when none).
fn provider(settings: &TlsSettings) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.cipher_suites.is_empty() {
        // TLS 1.3 suites are not configurable (as in Go); the TLS 1.2 ones in the file's
        // order.
        let mut suites: Vec<_> = provider
            .cipher_suites
            .iter()
            .copied()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .collect();
        for name in &settings.cipher_suites {
            suites.extend(provider.cipher_suites.iter().copied().filter(|s| {
                s.version() == &rustls::version::TLS12 && s.suite().as_str() == Some(name.as_str())
            }));
        }
        provider.cipher_suites = suites;
    }
    if !settings.curve_preferences.is_empty() {
        use rustls::crypto::ring::kx_group;
        provider.kx_groups = settings
            .curve_preferences
            .iter()
            .filter_map(|c| match c {
                Curve::X25519 => Some(kx_group::X25519),
                Curve::P256 => Some(kx_group::SECP256R1),
                Curve::P384 => Some(kx_group::SECP384R1),
                Curve::P521 => None,
            })
            .collect();
    }
    provider
}

/// Builds the server configuration, reading every file.
fn build(settings: &TlsSettings) -> Result<ServerConfig, KeyError> {
    let cert_key = key_of(
        &settings.cert,
        "tls_server_config.cert_file",
        "tls_server_config.cert",
    );
    let key_key = key_of(
        &settings.key,
        "tls_server_config.key_file",
        "tls_server_config.key",
    );
    let chain = certificates(&settings.cert, cert_key)?;
    let key_pem = read(&settings.key, key_key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| (key_key, format!("holds no usable PEM private key: {e}")))?;
    let provider = Arc::new(provider(settings));
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if settings.min_version <= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if settings.max_version >= TlsVersion::Tls13 {
        versions.push(&rustls::version::TLS13);
    }
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| ("tls_server_config.min_version", e.to_string()))?;
    let verifier = client_verifier(settings, &provider)?;
    let mut config = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            (
                key_key,
                format!("cannot be used with the certificate ({e})"),
            )
        })?;
    config.ignore_client_order = settings.prefer_server_cipher_suites;
    // HTTP/1.1 only: a client offering h2 and http/1.1 (as Prometheus) gets http/1.1.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn client_verifier(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, KeyError> {
    let roots = match &settings.client_ca {
        None => None,
        Some(source) => {
            let key = key_of(
                source,
                "tls_server_config.client_ca_file",
                "tls_server_config.client_ca",
            );
            let mut roots = RootCertStore::empty();
            for cert in certificates(source, key)? {
                roots
                    .add(cert)
                    .map_err(|e| (key, format!("holds a certificate that is not a CA: {e}")))?;
            }
            Some(Arc::new(roots))
        }
    };
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ClientCertVerifier> = match settings.client_auth {
        ClientAuth::NoClientCert => return Ok(WebPkiClientVerifier::no_client_auth()),
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Arc::new(AnyCertificate {
                mandatory: settings.client_auth.requires_certificate(),
                algorithms,
            })
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let roots = roots.ok_or((
                "tls_server_config.client_ca_file",
                "needed to verify client certificates".to_owned(),
            ))?;
            let builder = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(provider));
            let builder = if settings.client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            builder.build().map_err(|e| {
                (
                    "tls_server_config.client_ca_file",
                    format!("cannot verify client certificates with it: {e}"),
                )
            })?
        }
    };
    if settings.client_allowed_sans.is_empty() {
        Ok(verifier)
    } else {
        Ok(Arc::new(AllowedSans {
            inner: verifier,
            allowed: settings.client_allowed_sans.clone(),
        }))
    }
}

/// `RequestClientCert` and `RequireAnyClientCert`: any certificate is taken (not checked
/// against a CA), but the handshake's signatures are, as in Go.
#[derive(Debug)]
struct AnyCertificate {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: the inner verifier's checks, then one of the certificate's
/// subject alternative names (DNS name, e-mail address, IP address or URI, as Go writes
/// them) must be in the list.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

/// The subject alternative names of a DER certificate, as strings.
fn subject_alt_names(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(s) | GeneralName::RFC822Name(s) | GeneralName::URI(s) => {
                Some((*s).to_owned())
            }
            GeneralName::IPAddress(bytes) => match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                16 => <[u8; 16]>::try_from(*bytes)
                    .ok()
                    .map(|b| IpAddr::from(b).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if subject_alt_names(end_entity)
            .iter()
            .any(|name| self.allowed.contains(name))
        {
            Ok(verified)
        } else {
            log::debug!("client certificate refused: none of its SANs is in client_allowed_sans");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
