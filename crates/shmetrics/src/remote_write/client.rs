//! One remote write request over HTTP/1.1, plain or TLS (rustls), on a connection of its
//! own: the protocol's headers, the target's credentials and extra headers, a timeout over
//! the whole exchange.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{Credentials, RemoteWriteTarget};

/// The most bytes of an answer read.
const ANSWER_LIMIT: usize = 64 << 10;

/// How one attempt ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 2xx.
    Sent,
    /// 4xx but 429: the receiver refuses this request and would again.
    Refused(u16, String),
    /// A connection error, a timeout, 5xx or 429: worth another try.
    Retry(String),
}

/// The TLS client configuration of a target (its CA, or the system's roots, and its
/// client certificate), built once.
pub(crate) fn tls_config(target: &RemoteWriteTarget) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = &target.tls;
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("tls_config.ca_file: cannot read {}: {e}", path.display()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("tls_config.ca_file: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("tls_config.ca_file: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "tls_config.ca_file: {} holds no PEM CERTIFICATE block",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("tls_config.cert_file: {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls_config.key_file: {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls_config.key_file: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("tls_config: give both cert_file and key_file, or neither".into()),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Sends `body` to `target` once.
pub(crate) async fn post(
    target: &RemoteWriteTarget,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: Bytes,
) -> Outcome {
    match tokio::time::timeout(target.timeout, exchange(target, tls, body)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Retry(format!("no answer within {:?}", target.timeout)),
    }
}

async fn exchange(
    target: &RemoteWriteTarget,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: Bytes,
) -> Outcome {
    let request = match request(target, body) {
        Ok(r) => r,
        Err(e) => return Outcome::Refused(0, e),
    };
    let stream = match TcpStream::connect((target.host.as_str(), target.port)).await {
        Ok(s) => s,
        Err(e) => return Outcome::Retry(format!("cannot connect: {e}")),
    };
    let _ = stream.set_nodelay(true);
    match tls {
        None => send(TokioIo::new(stream), request).await,
        Some(config) => {
            let name = target
                .tls
                .server_name
                .clone()
                .unwrap_or_else(|| target.host.clone());
            let Ok(name) = ServerName::try_from(name.clone()) else {
                return Outcome::Refused(0, format!("{name:?} is not a TLS server name"));
            };
            match tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(name, stream)
                .await
            {
                Ok(stream) => send(TokioIo::new(stream), request).await,
                Err(e) => Outcome::Retry(format!("TLS handshake: {e}")),
            }
        }
    }
}

fn request(target: &RemoteWriteTarget, body: Bytes) -> Result<Request<Full<Bytes>>, String> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(&target.path)
        .header(header::HOST, &target.authority)
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .header(header::CONTENT_ENCODING, "snappy")
        .header(
            header::USER_AGENT,
            concat!("shmetrics/", env!("CARGO_PKG_VERSION")),
        )
        .header("X-Prometheus-Remote-Write-Version", "0.1.0");
    for (name, value) in &target.headers {
        builder = builder.header(name, value);
    }
    let authorization = match &target.credentials {
        Credentials::None => None,
        Credentials::Basic { user, password } => {
            use base64::Engine as _;
            let password = password.read()?;
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            Some(format!("Basic {token}"))
        }
        Credentials::Bearer(token) => Some(format!("Bearer {}", token.read()?)),
    };
    if let Some(value) = authorization {
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| "the credentials cannot be sent in a header".to_owned())?;
        value.set_sensitive(true);
        builder = builder.header(header::AUTHORIZATION, value);
    }
    builder.body(Full::new(body)).map_err(|e| e.to_string())
}

async fn send<T>(io: T, request: Request<Full<Bytes>>) -> Outcome
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(pair) => pair,
        Err(e) => return Outcome::Retry(format!("HTTP: {e}")),
    };
    let driver = tokio::spawn(async move {
        if let Err(e) = conn.await {
            log::debug!("remote write connection: {e}");
        }
    });
    let outcome = match sender.send_request(request).await {
        Err(e) => Outcome::Retry(format!("HTTP: {e}")),
        Ok(response) => {
            let status = response.status().as_u16();
            // The start of the answer, for the log; a larger one is not read (a receiver
            // cannot make the sender hold its answer).
            let limited = http_body_util::Limited::new(response.into_body(), ANSWER_LIMIT);
            let text = match limited.collect().await {
                Ok(b) => {
                    let bytes = b.to_bytes();
                    String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                        .trim()
                        .to_owned()
                }
                Err(_) => String::new(),
            };
            match status {
                200..=299 => Outcome::Sent,
                429 => Outcome::Retry(format!("HTTP 429: {text}")),
                400..=499 => Outcome::Refused(status, text),
                _ => Outcome::Retry(format!("HTTP {status}: {text}")),
            }
        }
    };
    driver.abort();
    outcome
}
