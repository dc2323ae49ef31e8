//! TLS of `cerebelum serve` (rustls with *ring*; no OpenSSL).
//!
//! The server's certificate and key are PEM files (`--tls-cert`,
//! `--tls-key`); `--tls-client-ca` also asks every client for a
//! certificate signed by that CA (mutual TLS), on top of its API key.
//! The files are read again on SIGHUP and when they change on disk
//! (checked every [`POLL`]): new connections get the new certificate, open
//! ones (watch streams, workers' polls) keep theirs. A bad new file is
//! logged and the certificate in use stays.
//!
//! gRPC, the console and `/metrics` share the listener, so all of them are
//! behind TLS when it is on. ALPN offers HTTP/2 and HTTP/1.1.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_stream::{Stream, StreamExt};

/// How often the files are checked for changes.
pub const POLL: Duration = Duration::from_secs(2);
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Where the server's TLS material is.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain, PEM (the server's certificate first).
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| Error::InvalidInput(format!("cannot read the {what} {}: {e}", path.display())))
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::InvalidInput(format!(
                "the {what} {} is not PEM certificates: {e}",
                path.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the {what} {} holds no certificate (expected `-----BEGIN CERTIFICATE-----`)",
            path.display()
        )));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFiles {
    /// The rustls configuration the files make now.
    pub fn load(&self) -> Result<Arc<ServerConfig>> {
        let chain = certificates(&self.cert, "TLS certificate (--tls-cert)")?;
        let key = PrivateKeyDer::from_pem_slice(&read(&self.key, "TLS key (--tls-key)")?).map_err(
            |e| {
                Error::InvalidInput(format!(
                    "the TLS key (--tls-key) {} is not a PEM private key: {e}",
                    self.key.display()
                ))
            },
        )?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Runtime(format!("TLS protocol versions: {e}")))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(path, "client CA (--tls-client-ca)")? {
                    roots.add(ca).map_err(|e| {
                        Error::InvalidInput(format!(
                            "the client CA (--tls-client-ca) {}: {e}",
                            path.display()
                        ))
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| {
                            Error::InvalidInput(format!(
                                "the client CA (--tls-client-ca) {}: {e}",
                                path.display()
                            ))
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|e| {
            Error::InvalidInput(format!(
                "the TLS key {} does not go with the certificate {}: {e}",
                self.key.display(),
                self.cert.display()
            ))
        })?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// What the files look like on disk: changes when one is replaced.
    fn stamp(&self) -> Vec<Option<(SystemTime, u64)>> {
        [Some(&self.cert), Some(&self.key), self.client_ca.as_ref()]
            .into_iter()
            .flatten()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    }
}

/// The server's TLS configuration, replaced when its files change.
pub struct ServerTls {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
}

impl ServerTls {
    /// Loads `files`; an error says which file is wrong and how.
    pub fn new(files: TlsFiles) -> Result<Arc<Self>> {
        let stamp = files.stamp();
        let current = files.load()?;
        Ok(Arc::new(Self {
            files,
            current: RwLock::new(current),
            stamp: Mutex::new(stamp),
        }))
    }

    /// Whether clients must present a certificate.
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; new connections use them. On an error the
    /// configuration in use stays.
    pub fn reload(&self) -> Result<()> {
        let stamp = self.files.stamp();
        let config = self.files.load()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
        Ok(())
    }

    fn changed(&self) -> bool {
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) != self.files.stamp()
    }

    /// Reloads on SIGHUP and when the files change, until dropped.
    pub async fn watch(self: Arc<Self>) {
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(h) => drop(h.recv().await),
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            let told = tokio::select! {
                () = hup => true,
                _ = tick.tick() => false,
            };
            if !told && !self.changed() {
                continue;
            }
            if let Err(e) = self.reload() {
                // Record the stamp anyway: a half-written pair is retried
                // when the next file changes, not logged every tick.
                *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = self.files.stamp();
                tracing::error!(
                    error = %e,
                    "the new TLS files are not usable; the certificate in use stays"
                );
            }
        }
    }

    /// The TLS connections of `tcp`'s clients: each handshake runs on its
    /// own task (a slow client does not hold up the others) with the
    /// configuration of the moment; failed handshakes are logged and
    /// dropped.
    pub fn incoming<S>(
        self: Arc<Self>,
        mut tcp: S,
    ) -> impl Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static
    where
        S: Stream<Item = std::io::Result<TcpStream>> + Unpin + Send + 'static,
    {
        let (tx, rx) = tokio::sync::mpsc::channel(128);
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    next = tcp.next() => match next {
                        Some(Ok(stream)) => stream,
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "accepting a connection failed");
                            continue;
                        }
                        None => return,
                    },
                    () = tx.closed() => return,
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(self.config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let peer = stream.peer_addr().ok();
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => drop(tx.send(Ok(tls)).await),
                        Ok(Err(e)) => tracing::info!(
                            peer = ?peer, error = %e,
                            "TLS handshake failed (a plaintext client, or an untrusted certificate)"
                        ),
                        Err(_) => tracing::info!(peer = ?peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}
