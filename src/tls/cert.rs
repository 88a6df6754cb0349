//! Loading a certificate and its key from PEM files: the chain (leaf first), a PKCS#8, RSA or EC
//! key that must match the leaf, and what the table and the admin API need from the leaf (its
//! names, validity).

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{cert} and {key}: {message}")]
    Pair { cert: PathBuf, key: PathBuf, message: String },
}

/// Where a certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    File,
    Kubernetes,
    Acme,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::Kubernetes => "kubernetes",
            Source::Acme => "acme",
        }
    }
}

/// A certificate ready to serve.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    /// DNS names of the leaf (SANs, else its CN), lowercase; wildcards as `*.parent`.
    pub names: Vec<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub source: Source,
    /// The files, for display.
    pub origin: String,
}

impl Loaded {
    pub fn expired(&self) -> bool {
        self.not_after < SystemTime::now()
    }
}

fn unix(t: i64) -> SystemTime {
    if t >= 0 {
        UNIX_EPOCH + Duration::from_secs(t as u64)
    } else {
        UNIX_EPOCH
    }
}

/// Build a served certificate from PEM bytes.
pub fn from_pem(chain_pem: &[u8], key_pem: &[u8], source: Source, origin: String) -> Result<Loaded, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {e}"))?;
    let leaf = chain.first().ok_or("no certificate in the PEM")?.clone();
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("no usable private key (PKCS#8, RSA or EC PEM): {e}"))?;
    let key = CertifiedKey::from_der(chain, key, &default_provider()).map_err(|e| format!("the key does not fit the certificate: {e}"))?;
    let (_, x509) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| format!("unreadable certificate: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            x509.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(|s| s.to_ascii_lowercase()),
        );
    }
    let validity = x509.validity();
    Ok(Loaded {
        key: Arc::new(key),
        names,
        not_before: unix(validity.not_before.timestamp()),
        not_after: unix(validity.not_after.timestamp()),
        source,
        origin,
    })
}

/// Load a certificate and key from files; errors name the file (or both, for a mismatch).
pub fn load(cert: &Path, key: &Path) -> Result<Loaded, CertError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| CertError::File {
            path: p.to_path_buf(),
            message: e.to_string(),
        })
    };
    let (c, k) = (read(cert)?, read(key)?);
    from_pem(&c, &k, Source::File, format!("{} + {}", cert.display(), key.display())).map_err(|message| {
        let path = if message.contains("private key") { key } else { cert };
        if message.contains("does not fit") {
            CertError::Pair {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
                message,
            }
        } else {
            CertError::File {
                path: path.to_path_buf(),
                message,
            }
        }
    })
}
