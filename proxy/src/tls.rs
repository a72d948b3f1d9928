//! Inbound TLS (rustls): SNI picks the certificate (exact name, then wildcard, then the first
//! certificate as default) and certificate files are reloaded when they change on disk, so a
//! renewed certificate needs no restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rouse_core::HostPattern;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One certificate/key pair from the configuration and the names it serves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertConfig {
    /// PEM certificate chain file.
    pub cert: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
    /// SNI names this certificate serves (`*.example.com` allowed). Empty: only as the default.
    #[serde(default)]
    pub server_names: Vec<HostPattern>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    Load { path: String, reason: String },
}

struct Loaded {
    names: Vec<HostPattern>,
    key: Arc<CertifiedKey>,
    stamp: Vec<Option<SystemTime>>,
}

fn stamp(c: &CertConfig) -> Vec<Option<SystemTime>> {
    [&c.cert, &c.key]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn load(c: &CertConfig) -> Result<Loaded, TlsError> {
    let err = |p: &PathBuf, reason: String| TlsError::Load {
        path: p.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .map_err(|e| err(&c.cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&c.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(err(&c.cert, "no certificate in file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| err(&c.key, e.to_string()))?;
    let signing = any_supported_type(&key).map_err(|e| err(&c.key, e.to_string()))?;
    Ok(Loaded {
        names: c.server_names.clone(),
        key: Arc::new(CertifiedKey::new(certs, signing)),
        stamp: stamp(c),
    })
}

/// The live certificate set; implements rustls' resolver.
pub struct CertStore {
    configs: Vec<CertConfig>,
    loaded: ArcSwap<Vec<Loaded>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("configs", &self.configs)
            .finish()
    }
}

impl CertStore {
    /// Loads every certificate; any failure is an error at startup.
    pub fn load(configs: Vec<CertConfig>) -> Result<Arc<Self>, TlsError> {
        let loaded = configs.iter().map(load).collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(CertStore {
            configs,
            loaded: ArcSwap::from_pointee(loaded),
        }))
    }

    /// Reloads certificates whose files changed. A file that fails to load keeps its previous
    /// certificate in service (a half-written renewal must not take TLS down).
    pub fn reload_changed(&self) {
        let current = self.loaded.load();
        let mut changed = false;
        let next: Vec<Loaded> = self
            .configs
            .iter()
            .zip(current.iter())
            .map(|(c, old)| {
                if stamp(c) == old.stamp {
                    return Loaded { names: old.names.clone(), key: old.key.clone(), stamp: old.stamp.clone() };
                }
                match load(c) {
                    Ok(l) => {
                        changed = true;
                        tracing::info!(cert = %c.cert.display(), "Certificate reloaded.");
                        l
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Certificate reload failed; keeping the previous one.");
                        Loaded { names: old.names.clone(), key: old.key.clone(), stamp: old.stamp.clone() }
                    }
                }
            })
            .collect();
        if changed {
            self.loaded.store(Arc::new(next));
        }
    }

    /// Checks the files every `every` until the process exits.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.reload_changed();
        }
    }

    fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let loaded = self.loaded.load();
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            let exact = loaded.iter().find(|l| {
                l.names
                    .iter()
                    .any(|p| matches!(p, HostPattern::Exact(h) if *h == name))
            });
            let wildcard = || {
                loaded
                    .iter()
                    .filter_map(|l| {
                        l.names
                            .iter()
                            .filter_map(|p| match p {
                                HostPattern::Wildcard(s) if name.ends_with(s.as_str()) => {
                                    Some(s.len())
                                }
                                HostPattern::Any => Some(0),
                                _ => None,
                            })
                            .max()
                            .map(|len| (len, l))
                    })
                    .max_by_key(|(len, _)| *len)
                    .map(|(_, l)| l)
            };
            if let Some(l) = exact.or_else(wildcard) {
                return Some(l.key.clone());
            }
        }
        loaded.first().map(|l| l.key.clone())
    }
}

/// rustls calls this per handshake; it must not block.
#[derive(Debug)]
pub struct Resolver(pub Arc<CertStore>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.pick(hello.server_name())
    }
}
