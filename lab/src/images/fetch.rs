//! Downloads behind a trait, so the cache and the Debian client run against a
//! fake in tests. The real fetcher speaks https through ureq and shows a
//! progress bar on a terminal, plain lines otherwise (CI logs).

use std::cell::OnceCell;
use std::io::{self, IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered 404: the file has left the archive.
    #[error("{url} is not there (HTTP 404)")]
    NotFound { url: String },
    /// The server could not be reached or the transfer failed.
    #[error("cannot download {url}: {reason}")]
    Failed { url: String, reason: String },
    /// Anything else (the cache, a hash mismatch), already explained.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Something that can copy the body at a URL into a writer.
pub trait Fetcher {
    /// Writes the body of `url` to `out`; `what` names it for progress lines.
    fn fetch(&self, url: &str, what: &str, out: &mut dyn Write) -> Result<(), FetchError>;
}

/// The largest download: every image, package index and source tarball
/// the lab fetches is well below it (the largest, a kernel package, is
/// about 100 MiB); a server sending more is refused, not allowed to fill
/// the disk.
pub const MAX_DOWNLOAD: u64 = 1 << 30;

/// The https fetcher. Its agent (and the CA bundle it loads) is made on the
/// first download, so a run served from the cache never builds one.
pub struct HttpFetcher {
    agent: OnceCell<ureq::Agent>,
    terminal: bool,
    /// Bytes a download may have.
    max_bytes: u64,
}

impl HttpFetcher {
    pub fn new() -> HttpFetcher {
        HttpFetcher {
            agent: OnceCell::new(),
            terminal: io::stderr().is_terminal(),
            max_bytes: MAX_DOWNLOAD,
        }
    }

    fn agent(&self) -> &ureq::Agent {
        self.agent.get_or_init(|| {
            ureq::Agent::config_builder()
                .timeout_connect(Some(Duration::from_secs(15)))
                .timeout_recv_body(Some(Duration::from_secs(60)))
                .http_status_as_error(false)
                .tls_config(
                    ureq::tls::TlsConfig::builder()
                        .root_certs(root_certs())
                        .build(),
                )
                .build()
                .into()
        })
    }

    fn progress(&self, what: &str, length: Option<u64>) -> ProgressBar {
        if !self.terminal {
            let size = length.map_or_else(String::new, |n| format!(" ({})", human_size(n)));
            eprintln!("fetch: {what}{size}");
            return ProgressBar::with_draw_target(length, ProgressDrawTarget::hidden());
        }
        let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
        let template = if length.is_some() {
            "fetch: {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
        } else {
            "fetch: {msg} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_owned());
        bar
    }
}

impl Default for HttpFetcher {
    fn default() -> Self {
        HttpFetcher::new()
    }
}

impl Fetcher for HttpFetcher {
    fn fetch(&self, url: &str, what: &str, out: &mut dyn Write) -> Result<(), FetchError> {
        let failed = |reason: String| FetchError::Failed {
            url: url.to_owned(),
            reason,
        };
        let start = Instant::now();
        let mut response = self
            .agent()
            .get(url)
            .call()
            .map_err(|err| failed(err.to_string()))?;
        let status = response.status().as_u16();
        if status == 404 {
            return Err(FetchError::NotFound {
                url: url.to_owned(),
            });
        }
        if status != 200 {
            return Err(failed(format!("HTTP {status}")));
        }
        let length = response.body().content_length();
        let too_big = || {
            failed(format!(
                "larger than the {} cap",
                human_size(self.max_bytes)
            ))
        };
        if length.is_some_and(|n| n > self.max_bytes) {
            return Err(too_big());
        }
        let bar = self.progress(what, length);
        let mut reader = response.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|err| failed(err.to_string()))?;
            if n == 0 {
                break;
            }
            total = total.saturating_add(n as u64);
            if total > self.max_bytes {
                return Err(too_big());
            }
            out.write_all(&buf[..n])
                .map_err(|err| FetchError::Other(anyhow::anyhow!("cannot write {what}: {err}")))?;
            bar.inc(n as u64);
        }
        bar.finish_and_clear();
        if !self.terminal {
            eprintln!(
                "fetch: {what} done in {:.1}s",
                start.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}

/// The host's CA bundle (`$SSL_CERT_FILE`, else the usual Linux and macOS
/// places), so https works where the system trusts a TLS-inspecting proxy;
/// Mozilla's roots built into ureq when there is none.
fn root_certs() -> ureq::tls::RootCerts {
    const BUNDLES: [&str; 4] = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
        "/usr/local/etc/openssl/cert.pem",
    ];
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let bundles = from_env
        .into_iter()
        .chain(BUNDLES.iter().map(std::path::PathBuf::from));
    for bundle in bundles {
        let Ok(pem) = std::fs::read(&bundle) else {
            continue;
        };
        let certs: Vec<_> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        if !certs.is_empty() {
            return ureq::tls::RootCerts::new_with_certs(&certs);
        }
    }
    ureq::tls::RootCerts::WebPki
}

/// `1.5 MiB`-style sizes for progress lines.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves one request on 127.0.0.1 with a 200 and `body`, announced
    /// with its length or (chunked) without; returns the URL.
    fn serve_once(body: Vec<u8>, announce_length: bool) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/file", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = if announce_length {
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .and_then(|()| stream.write_all(&body))
            } else {
                write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                .and_then(|()| write!(stream, "{:x}\r\n", body.len()))
                .and_then(|()| stream.write_all(&body))
                .and_then(|()| stream.write_all(b"\r\n0\r\n\r\n"))
            };
        });
        url
    }

    #[test]
    fn downloads_over_the_cap_are_refused() {
        let fetcher = HttpFetcher {
            max_bytes: 1000,
            ..HttpFetcher::new()
        };
        for announce_length in [true, false] {
            let mut out = Vec::new();
            let url = serve_once(vec![7; 1000], announce_length);
            fetcher.fetch(&url, "small", &mut out).unwrap();
            assert_eq!(out.len(), 1000);
            let mut out = Vec::new();
            let url = serve_once(vec![7; 1001], announce_length);
            let err = fetcher.fetch(&url, "big", &mut out).unwrap_err();
            assert!(
                err.to_string().contains("larger than the 1000 B cap"),
                "{err}"
            );
            assert!(out.len() <= 1000);
        }
    }
}
