//! Archives that Crossbar.io downloads: a web path of type `archive` with
//! `"download": true` and an `origin` whose file is not in the node
//! directory is fetched once by `trellis start`, before anything runs,
//! checked against its `hashes`, and kept there (so later starts use the
//! file and need no network).
//!
//! HTTP/1.1 over hyper's client connection, TLS with rustls and the
//! system's CA certificates (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
//! honoured), redirects followed (GitHub's archive links redirect).

use std::path::{Path, PathBuf};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use trellis_config::node::{ConfigError, ConfigErrors, NodeConfig};
use trellis_config::preflight::{archives, downloads, sha256_file, shown_url as shown};

/// The most redirects followed.
const MAX_REDIRECTS: usize = 5;
/// The largest archive downloaded.
const MAX_BYTES: u64 = 256 << 20;
/// How long one download may take, redirects included.
const TIMEOUT: Duration = Duration::from_secs(120);

/// Download every archive the config asks for that is not there yet.
///
/// # Errors
/// Each archive that could not be fetched, or whose fingerprint is none of
/// its `hashes` (nothing is kept then), at its config key.
pub async fn fetch_missing_archives(cfg: &NodeConfig, node_dir: &Path) -> Result<(), ConfigErrors> {
    let mut errors = Vec::new();
    for (key, p) in archives(cfg) {
        let (Some(file), Some(origin)) = (&p.archive, &p.origin) else {
            continue;
        };
        let dest = node_dir.join(file);
        if !downloads(p) || dest.is_file() {
            continue;
        }
        let shown = shown(origin);
        tracing::info!(origin = %shown, file = %dest.display(), "downloading the archive {key}");
        let hashes = p.hashes.clone().unwrap_or_default();
        match tokio::time::timeout(TIMEOUT, fetch(origin, &dest, &hashes)).await {
            Ok(Ok(bytes)) => {
                tracing::info!(origin = %shown, file = %dest.display(), bytes, "downloaded the archive {key}");
            }
            Ok(Err(e)) => errors.push(ConfigError {
                path: format!("{key}.origin"),
                message: format!("cannot download {shown:?} into {}: {e}", dest.display()),
            }),
            Err(_) => errors.push({
                // The cut-off download's partial file goes too.
                let _ = std::fs::remove_file(temporary(&dest));
                ConfigError {
                    path: format!("{key}.origin"),
                    message: format!(
                        "downloading {shown:?} took more than {} s: fetch it into {} yourself",
                        TIMEOUT.as_secs(),
                        dest.display()
                    ),
                }
            }),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors {
            source: cfg.source.clone(),
            errors,
        })
    }
}

/// Fetch `origin` into `dest` (through a temporary file beside it), check
/// it against `hashes` when there are any; the size downloaded.
async fn fetch(origin: &str, dest: &Path, hashes: &[String]) -> Result<u64, String> {
    let tmp = temporary(dest);
    let result = async {
        let bytes = get(origin, &tmp).await?;
        if !hashes.is_empty() {
            let h = sha256_file(&tmp).map_err(|e| format!("cannot read it back: {e}"))?;
            if !hashes.iter().any(|x| x.eq_ignore_ascii_case(&h)) {
                return Err(format!(
                    "what it serves has the SHA-256 fingerprint {h}, which is none of the listed {}: nothing was kept",
                    hashes.join(", ")
                ));
            }
        }
        tokio::fs::rename(&tmp, dest)
            .await
            .map_err(|e| format!("cannot move it into place: {e}"))?;
        Ok(bytes)
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

fn temporary(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".download-{}", std::process::id()));
    dest.with_file_name(name)
}

/// GET `origin`, following redirects, into the file `to`; its size.
async fn get(origin: &str, to: &Path) -> Result<u64, String> {
    let mut url = url::Url::parse(origin).map_err(|e| format!("not a URL: {e}"))?;
    for _ in 0..=MAX_REDIRECTS {
        let response = request(&url).await?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| {
                    format!(
                        "{} answered {status} without a Location",
                        shown(url.as_str())
                    )
                })?;
            url = url.join(location).map_err(|e| {
                format!(
                    "{} redirected elsewhere, not to a URL: {e}",
                    shown(url.as_str())
                )
            })?;
            continue;
        }
        if !status.is_success() {
            return Err(format!("{} answered {status}", shown(url.as_str())));
        }
        return save(response.into_body(), to).await;
    }
    Err(format!("more than {MAX_REDIRECTS} redirects"))
}

/// Write the body to `to`, at most [`MAX_BYTES`].
async fn save(mut body: hyper::body::Incoming, to: &Path) -> Result<u64, String> {
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("the download broke off: {e}"))?;
        if let Ok(data) = frame.into_data() {
            total += data.len() as u64;
            if total > MAX_BYTES {
                return Err(format!("it is larger than {} MiB", MAX_BYTES >> 20));
            }
            file.write_all(&data)
                .await
                .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
        }
    }
    file.sync_all()
        .await
        .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    Ok(total)
}

/// One GET of `url` on a new connection.
async fn request(url: &url::Url) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let host = url
        .host_str()
        .ok_or_else(|| format!("{} names no host", shown(url.as_str())))?
        .to_owned();
    let port = url
        .port_or_known_default()
        .ok_or_else(|| format!("{} is not an http:// or https:// URL", shown(url.as_str())))?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    match url.scheme() {
        "http" => send(tcp, url, &host).await,
        "https" => {
            let name =
                rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))?;
            let tls = tls_connector()?
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}:{port} failed: {e}"))?;
            send(tls, url, &host).await
        }
        other => Err(format!("{other}:// is not http:// or https://")),
    }
}

async fn send<S>(
    io: S,
    url: &url::Url,
    host: &str,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP with {host} failed: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let req = hyper::Request::get(target)
        .header(hyper::header::HOST, host_header)
        .header(
            hyper::header::USER_AGENT,
            concat!("trellis/", env!("CARGO_PKG_VERSION")),
        )
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP with {host} failed: {e}"))
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no CA certificates found on this machine{}: install ca-certificates or set SSL_CERT_FILE",
            found
                .errors
                .first()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default()
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS setup failed: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
