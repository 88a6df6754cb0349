//! Test certificates (rcgen, ECDSA P-256, signed by a test CA) and a TLS client that reports the
//! certificate it was served.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;

pub struct Ca {
    pub pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

pub fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate for `names`: (certificate PEM, key PEM).
pub fn issue_pem(ca: &Ca, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    (params.signed_by(&key, &ca.issuer).unwrap().pem(), key.serialize_pem())
}

/// Write a certificate for `names` and its key as `dir/{file}.pem` and `dir/{file}.key`.
pub fn issue(ca: &Ca, dir: &Path, file: &str, names: &[&str]) -> (String, String) {
    let (cert, key) = issue_pem(ca, names);
    let (c, k) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c.display().to_string(), k.display().to_string())
}

pub fn connector(ca: &Ca, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Handshake with `addr` naming `sni`; the DNS names of the certificate served, or the error.
pub async fn served_names_at(addr: std::net::SocketAddr, ca: &Ca, sni: &str) -> Result<Vec<String>, String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let tls = connector(ca, &[b"http/1.1"]).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let san = x.subject_alternative_name().unwrap().unwrap();
    Ok(san.value.general_names.iter().map(|n| n.to_string()).collect())
}

/// A TLS acceptor serving a certificate for `names` (written as `dir/{file}.pem` and `.key`).
pub fn acceptor(ca: &Ca, dir: &Path, file: &str, names: &[&str]) -> tokio_rustls::TlsAcceptor {
    let (c, k) = issue(ca, dir, file, names);
    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&c)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&k).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
