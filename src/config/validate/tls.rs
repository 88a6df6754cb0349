//! `[tls]`: certificate files (each loaded now, so a bad one is refused naming it) and ACME.

use super::*;

pub(super) fn tls(raw: &RawTls, eps: &BTreeMap<String, Entrypoint>, p: &mut Problems) -> TlsSettings {
    let min_version = match raw.min_version.as_deref().unwrap_or("1.2") {
        "1.2" => TlsVersion::V12,
        "1.3" => TlsVersion::V13,
        other => {
            p.add("tls.min_version", format!("{other:?} is not one of 1.2, 1.3"));
            TlsVersion::V12
        }
    };
    // Every certificate must load now: a bad file is refused here, with its name.
    let mut check = |f: &RawCertFiles, key: String| -> CertFiles {
        let files = CertFiles {
            cert: f.cert.clone().into(),
            key: f.key.clone().into(),
        };
        match crate::tls::cert::load(&files.cert, &files.key) {
            Ok(c) if c.expired() => log::warn!("{key}: {} expired; it is served anyway", files.cert.display()),
            Ok(_) => {}
            Err(e) => p.add(key, e.to_string()),
        }
        files
    };
    let default_certificate = raw.default_certificate.as_ref().map(|f| check(f, "tls.default_certificate".into()));
    let certificates = raw
        .certificates
        .iter()
        .enumerate()
        .map(|(i, f)| check(f, format!("tls.certificates[{i}]")))
        .collect();
    let acme = raw.acme.as_ref().map(|a| {
        if !a.email.contains('@') {
            p.add("tls.acme.email", format!("{:?} is not an email address", a.email));
        }
        if !(a.directory.starts_with("https://") || a.directory.starts_with("http://")) || reqwest::Url::parse(&a.directory).is_err() {
            p.add("tls.acme.directory", format!("{:?} is not a URL", a.directory));
        }
        if let Some(ca) = a.ca_file.as_ref().filter(|c| !c.is_empty()) {
            if let Err(e) = std::fs::read(ca)
                .map_err(|e| e.to_string())
                .and_then(|b| crate::tls::roots(&b).map(|_| ()))
            {
                p.add("tls.acme.ca_file", format!("{ca}: {e}"));
            }
        }
        for (i, d) in a.domains.iter().enumerate() {
            if !matches!(HostMatch::parse(d), Ok(HostMatch::Exact(_))) {
                p.add(
                    format!("tls.acme.domains[{i}]"),
                    format!("{d:?} is not a host name (HTTP-01 cannot issue wildcards)"),
                );
            }
        }
        if !eps.values().any(|e| e.kind == EntrypointKind::Http) {
            p.add("tls.acme", "HTTP-01 needs an http entrypoint to answer on");
        }
        AcmeSettings {
            email: a.email.clone(),
            directory: a.directory.clone(),
            ca_file: a.ca_file.clone().filter(|c| !c.is_empty()).map(Into::into),
            storage: a.storage.clone().unwrap_or_else(|| "/var/lib/lariat/acme".into()).into(),
            on_host_rule: a.on_host_rule.unwrap_or(true),
            domains: a.domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            renew_before: a.renew_before.map(|d| d.0).unwrap_or(Duration::from_secs(30 * 86400)),
        }
    });
    TlsSettings {
        min_version,
        default_certificate,
        certificates,
        acme,
    }
}
