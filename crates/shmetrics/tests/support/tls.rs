//! Test certificates made on the spot (rcgen; none committed) and a small HTTPS client
//! (rustls over a blocking socket) that reports what the server presented and answered.
#![allow(dead_code)] // Each test binary uses a subset.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate authority that signs server and client certificates.
pub(crate) struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A signed certificate and its key, as PEM.
#[derive(Clone)]
pub(crate) struct Leaf {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: Vec<u8>,
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`.
    pub(crate) fn write(&self, dir: &Path, name: &str) {
        std::fs::write(dir.join(format!("{name}.crt")), &self.cert_pem).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), &self.key_pem).unwrap();
    }
}

impl Ca {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub(crate) fn write(&self, path: &Path) {
        std::fs::write(path, self.pem()).unwrap();
    }

    fn leaf(&self, names: &[&str], usage: ExtendedKeyUsagePurpose, cn: &str) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub(crate) fn server(&self) -> Leaf {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            "shmetrics test server",
        )
    }

    /// A client certificate with the DNS name `san`.
    pub(crate) fn client(&self, san: &str) -> Leaf {
        self.leaf(&[san], ExtendedKeyUsagePurpose::ClientAuth, san)
    }
}

/// What an HTTPS request got.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The header lines, lower-cased names.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    /// The server's certificate (DER) as presented in the handshake.
    pub(crate) server_cert: Vec<u8>,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How to connect.
#[derive(Default, Clone)]
pub(crate) struct Client {
    /// PEM of the CA the server certificate must chain to.
    pub(crate) ca_pem: String,
    /// A client certificate to present.
    pub(crate) identity: Option<Leaf>,
    /// `(user, password)` for basic authentication.
    pub(crate) basic: Option<(String, String)>,
}

impl Client {
    pub(crate) fn new(ca: &Ca) -> Self {
        Self {
            ca_pem: ca.pem(),
            ..Self::default()
        }
    }

    pub(crate) fn with_identity(mut self, leaf: &Leaf) -> Self {
        self.identity = Some(leaf.clone());
        self
    }

    pub(crate) fn with_basic(mut self, user: &str, password: &str) -> Self {
        self.basic = Some((user.to_owned(), password.to_owned()));
        self
    }

    fn config(&self) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert: CertificateDer<'static> = cert.unwrap();
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        match &self.identity {
            None => builder.with_no_client_auth(),
            Some(leaf) => {
                let chain: Vec<CertificateDer<'static>> =
                    rustls::pki_types::pem::PemObject::pem_slice_iter(leaf.cert_pem.as_bytes())
                        .map(Result::unwrap)
                        .collect();
                let key: PrivateKeyDer<'static> =
                    rustls::pki_types::pem::PemObject::from_pem_slice(leaf.key_pem.as_bytes())
                        .unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        }
    }

    /// `GET path` over TLS with `Connection: close`; `Err` with the reason when the
    /// handshake or the connection fails.
    pub(crate) fn get(&self, addr: SocketAddr, path: &str) -> Result<Answer, String> {
        let config = Arc::new(self.config());
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some((user, password)) = &self.basic {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            request.push_str(&format!("Authorization: Basic {encoded}\r\n"));
        }
        request.push_str("\r\n");
        tls.write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // A server that closes without close_notify after a complete answer.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(e.to_string()),
        }
        let server_cert = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no end of headers")?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Answer {
            status,
            headers,
            body: body.to_owned(),
            server_cert,
        })
    }
}
