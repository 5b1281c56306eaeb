//! TLS on TCP endpoints (rustls with ring): the certificate and key are
//! read from PEM files, and read again on request (`trellis` reloads them
//! on SIGHUP) without dropping a connection: new handshakes get the new
//! certificate, established connections keep theirs.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use trellis_config::router::TlsConfig;

/// A TLS endpoint's server config: its certificate and, with
/// `ca_certificates`, the CAs client certificates are verified against;
/// both reloadable.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<ArcSwap<rustls::ServerConfig>>,
    resolver: Arc<Resolver>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Read the endpoint's certificate and key (and CA certificates); `path`
    /// names the config key in errors (`transports[0].endpoint.tls`).
    ///
    /// # Errors
    /// A file cannot be read or holds no usable certificate or key (the
    /// message names the key path and the file).
    pub fn new(cfg: &TlsConfig, path: &str) -> Result<TlsSettings, (String, String)> {
        let key = load(cfg, path)?;
        let resolver = Arc::new(Resolver {
            current: ArcSwap::from_pointee(key),
        });
        let config = server_config(cfg, path, &resolver)?;
        Ok(TlsSettings {
            config: Arc::new(ArcSwap::from_pointee(config)),
            resolver,
        })
    }

    /// An acceptor for one handshake, with the settings as they are now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.load_full())
    }

    /// Read the files again; on success new handshakes use them.
    ///
    /// # Errors
    /// As [`TlsSettings::new`]; the old certificates stay in use.
    pub fn reload(&self, cfg: &TlsConfig, path: &str) -> Result<(), (String, String)> {
        let key = load(cfg, path)?;
        let config = server_config(cfg, path, &self.resolver)?;
        self.resolver.current.store(Arc::new(key));
        self.config.store(Arc::new(config));
        Ok(())
    }
}

/// The server config: the resolver's certificate and, with
/// `ca_certificates`, a client certificate required and verified against
/// them (as Crossbar.io does).
fn server_config(
    cfg: &TlsConfig,
    path: &str,
    resolver: &Arc<Resolver>,
) -> Result<rustls::ServerConfig, (String, String)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| (path.to_owned(), format!("cannot set up TLS: {e}")))?;
    let builder = match cfg.ca_certificates.as_deref() {
        Some(files) if !files.is_empty() => {
            let mut roots = rustls::RootCertStore::empty();
            for (i, file) in files.iter().enumerate() {
                let key = format!("{path}.ca_certificates[{i}]");
                for cert in read_certs(Path::new(file))
                    .map_err(|e| (key.clone(), format!("{file:?}: {e}")))?
                {
                    roots.add(cert).map_err(|e| {
                        (
                            key.clone(),
                            format!("{file:?}: not a usable CA certificate ({e})"),
                        )
                    })?;
                }
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| {
                (
                    format!("{path}.ca_certificates"),
                    format!("cannot verify client certificates with these CAs: {e}"),
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// What a session's transport details say of the client's certificate
/// (`client_cert`), in Crossbar.io's shape: `sha1` and `sha256`
/// fingerprints (upper-case hex, colon-separated), `subject` and `issuer`
/// (lower-case attribute names: `cn`, `o`, `ou`, `c`, `st`, `l`, ...),
/// `serial` (hex), `not_before` and `not_after` (ISO 8601 UTC), `expired`,
/// `version`, `signature_algorithm`.
pub fn client_cert_details(der: &[u8]) -> proto::Dict {
    fn fingerprint(alg: &'static ring::digest::Algorithm, der: &[u8]) -> String {
        let d = ring::digest::digest(alg, der);
        d.as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
    let mut out = proto::dict! {
        "sha1" => fingerprint(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der),
        "sha256" => fingerprint(&ring::digest::SHA256, der),
    };
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return out;
    };
    let name = |n: &x509_parser::x509::X509Name<'_>| -> proto::Dict {
        let mut d = proto::Dict::new();
        for attr in n.iter_attributes() {
            let key = x509_parser::objects::oid2abbrev(
                attr.attr_type(),
                x509_parser::objects::oid_registry(),
            )
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|_| attr.attr_type().to_id_string());
            if let Ok(v) = attr.as_str() {
                d.insert(key, v.into());
            }
        }
        d
    };
    let validity = cert.validity();
    let rfc3339 = |t: &x509_parser::time::ASN1Time| {
        crate::time::format_unix_millis(t.timestamp().saturating_mul(1000))
    };
    out.insert("subject".into(), name(cert.subject()).into());
    out.insert("issuer".into(), name(cert.issuer()).into());
    out.insert("serial".into(), cert.raw_serial_as_string().into());
    out.insert("not_before".into(), rfc3339(&validity.not_before).into());
    out.insert("not_after".into(), rfc3339(&validity.not_after).into());
    out.insert("expired".into(), (!validity.is_valid()).into());
    out.insert("version".into(), i64::from(cert.version().0).into());
    out.insert(
        "signature_algorithm".into(),
        x509_parser::objects::oid2sn(
            &cert.signature_algorithm.algorithm,
            x509_parser::objects::oid_registry(),
        )
        .map(str::to_owned)
        .unwrap_or_else(|_| cert.signature_algorithm.algorithm.to_id_string())
        .into(),
    );
    out
}

#[derive(Debug)]
struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The certificate chain (the certificate file's, then the chain files')
/// and the signing key, checked to belong together.
fn load(cfg: &TlsConfig, path: &str) -> Result<CertifiedKey, (String, String)> {
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    for (key, file) in std::iter::once(("certificate", &cfg.certificate)).chain(
        cfg.chain_certificates
            .iter()
            .map(|f| ("chain_certificates", f)),
    ) {
        let certs = read_certs(Path::new(file))
            .map_err(|e| (format!("{path}.{key}"), format!("{file:?}: {e}")))?;
        chain.extend(certs);
    }
    let key_der = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| {
        (
            format!("{path}.key"),
            format!(
                "{:?}: no usable private key ({}); give a PEM file with a PKCS#8, RSA or EC key",
                cfg.key,
                pem_error(&e)
            ),
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| {
        (
            format!("{path}.key"),
            format!("{:?}: the key is not usable for TLS: {e}", cfg.key),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        // webpki takes only version 3 certificates; `openssl x509 -req`
        // without extensions makes version 1 ones, which OpenSSL (and so
        // Crossbar.io) serves.
        if e.to_string().contains("UnsupportedCertVersion") {
            return (
                format!("{path}.certificate"),
                format!(
                    "{:?} is an X.509 version 1 certificate, which rustls does not take: issue it as version 3 (`openssl x509 -req ... -extfile` with, say, `subjectAltName=DNS:localhost`, or `openssl req -x509`)",
                    cfg.certificate
                ),
            );
        }
        (
            format!("{path}.key"),
            format!(
                "{:?} does not belong to the certificate {:?} ({e})",
                cfg.key, cfg.certificate
            ),
        )
    })?;
    Ok(certified)
}

/// The TLS client settings for NATS (`cluster.nats.tls`) when the CA
/// files are given: their roots and, if given, the client certificate.
/// `None` without CA files: async-nats then verifies the servers against
/// the system's roots (and takes the client certificate itself), which
/// this has checked can be read.
///
/// # Errors
/// A file cannot be read or holds no usable certificate or key (the
/// message names the key and the file).
pub fn nats_client_config(
    t: &trellis_config::router::NatsTls,
) -> Result<Option<rustls::ClientConfig>, (String, String)> {
    const PATH: &str = "cluster.nats.tls";
    let client = match (&t.certificate, &t.key) {
        (Some(cert), Some(key)) => {
            let chain = read_certs(Path::new(cert))
                .map_err(|e| (format!("{PATH}.certificate"), format!("{cert:?}: {e}")))?;
            let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                (
                    format!("{PATH}.key"),
                    format!(
                        "{key:?}: no usable private key ({}); give a PEM file with a PKCS#8, RSA or EC key",
                        pem_error(&e)
                    ),
                )
            })?;
            Some((chain, key_der))
        }
        _ => None,
    };
    if t.ca_certificates.is_empty() {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, file) in t.ca_certificates.iter().enumerate() {
        let at = || format!("{PATH}.ca_certificates[{i}]");
        for cert in read_certs(Path::new(file)).map_err(|e| (at(), format!("{file:?}: {e}")))? {
            roots
                .add(cert)
                .map_err(|e| (at(), format!("{file:?}: not a usable CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| (PATH.to_owned(), format!("cannot set up TLS: {e}")))?
        .with_root_certificates(roots);
    Ok(Some(match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            (
                format!("{PATH}.key"),
                format!(
                    "{:?} is not usable with the certificate {:?}: {e}",
                    t.key.as_deref().unwrap_or_default(),
                    t.certificate.as_deref().unwrap_or_default()
                ),
            )
        })?,
        None => builder.with_no_client_auth(),
    }))
}

fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| pem_error(&e))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(&e))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into());
    }
    Ok(certs)
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM item of that kind in the file".into(),
        other => format!("not PEM: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate and key for `names`, written to `dir`.
    pub(crate) fn write_cert(dir: &Path, stem: &str, names: &[&str]) -> TlsConfig {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let c = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        TlsConfig {
            key: key.display().to_string(),
            certificate: cert.display().to_string(),
            chain_certificates: Vec::new(),
            ca_certificates: None,
            dhparam: None,
            ciphers: None,
        }
    }

    /// Made with `openssl x509 -req -signkey` and no extensions: version 1.
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBIzCBywIUQCIDm0xq0GzfCCPjJJFAqG2P2KcwCgYIKoZIzj0EAwIwFDESMBAG\nA1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNzA2Mjc0M1oYDzIxMjYxMTEzMDYyNzQz\nWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC\nAATHxVjjolIY2AOmd5AqUHRoWV+IftpuK68itnORnO+4ATAs4LBYKsEabENdO1iE\nWNaTFv90LVpowUw1bE4/O3x2MAoGCCqGSM49BAMCA0cAMEQCIERyR982ImJbVLLx\ne+Tb08qXBfHhU/M6OQ4RA2qGSqIrAiBpfril/5amw46qYkQO1odI/vlw9SW7r0+q\nZzKw3b04qA==\n-----END CERTIFICATE-----\n";
    const V1_KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6w+VEioKae2ErelC\nA8EajR7i21jhvghGDGpYVrVnOC2hRANCAATHxVjjolIY2AOmd5AqUHRoWV+Iftpu\nK68itnORnO+4ATAs4LBYKsEabENdO1iEWNaTFv90LVpowUw1bE4/O3x2\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_version_1_certificate_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("v1.crt"), dir.path().join("v1.key"));
        std::fs::write(&c, V1_CERT).unwrap();
        std::fs::write(&k, V1_KEY).unwrap();
        let cfg = TlsConfig {
            key: k.display().to_string(),
            certificate: c.display().to_string(),
            ..write_cert(dir.path(), "a", &["localhost"])
        };
        let (path, msg) = TlsSettings::new(&cfg, "p").unwrap_err();
        assert_eq!(path, "p.certificate");
        assert!(msg.contains("X.509 version 1 certificate"), "{msg}");
    }

    #[test]
    fn loads_reloads_and_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_cert(dir.path(), "a", &["localhost"]);
        let t = TlsSettings::new(&a, "transports[0].endpoint.tls").unwrap();
        let first = t.resolver.current.load_full();
        let b = write_cert(dir.path(), "b", &["localhost"]);
        t.reload(&b, "p").unwrap();
        assert_ne!(t.resolver.current.load_full().cert, first.cert);
        // A key of another certificate.
        let mixed = TlsConfig {
            key: a.key.clone(),
            ..b.clone()
        };
        let (path, msg) = t.reload(&mixed, "p").unwrap_err();
        assert_eq!(path, "p.key");
        assert!(msg.contains("does not belong to the certificate"), "{msg}");
        // Missing and non-PEM files.
        let missing = TlsConfig {
            certificate: dir.path().join("nope.crt").display().to_string(),
            ..a.clone()
        };
        let (path, msg) = TlsSettings::new(&missing, "p").unwrap_err();
        assert_eq!(path, "p.certificate");
        assert!(msg.contains("nope.crt"), "{msg}");
        std::fs::write(dir.path().join("junk.key"), "hello").unwrap();
        let junk = TlsConfig {
            key: dir.path().join("junk.key").display().to_string(),
            ..a
        };
        let (path, msg) = TlsSettings::new(&junk, "p").unwrap_err();
        assert_eq!(path, "p.key");
        assert!(msg.contains("no usable private key"), "{msg}");
    }

    #[test]
    fn client_certificate_details_in_crossbars_shape() {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "device-7");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        p.not_before = rcgen::date_time_ymd(2020, 1, 2);
        p.not_after = rcgen::date_time_ymd(2021, 3, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let d = client_cert_details(cert.der());
        let sha1 = d.get("sha1").and_then(proto::Value::as_str).unwrap();
        assert_eq!(sha1.len(), 59, "{sha1}");
        assert!(
            sha1.chars()
                .all(|c| c == ':' || c.is_ascii_digit() || c.is_ascii_uppercase())
        );
        let subject = match d.get("subject") {
            Some(proto::Value::Dict(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            subject.get("cn").and_then(proto::Value::as_str),
            Some("device-7")
        );
        assert_eq!(
            subject.get("o").and_then(proto::Value::as_str),
            Some("Acme")
        );
        assert_eq!(
            d.get("not_after").and_then(proto::Value::as_str),
            Some("2021-03-04T00:00:00.000Z")
        );
        assert_eq!(d.get("expired"), Some(&proto::Value::Bool(true)));
        // Garbage still gets its fingerprints, nothing else.
        let d = client_cert_details(b"not a certificate");
        assert!(d.contains_key("sha256") && !d.contains_key("subject"));
    }
}
