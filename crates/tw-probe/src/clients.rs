//! Long-lived clients built once from config: the DNS resolver, the TLS configuration used
//! for STARTTLS, the SMTP identity, the per-destination concurrency limiter, and for the HTTP
//! checks the pooled HTTP client, token cache, Graph client, RDAP client and each tenant's
//! loaded app credentials.
//!
//! Building them is the only fallible step of the probe crate ([`ClientBuildError`]); after
//! that, probes never return errors, only observations.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tw_core::config::{Config, EntraConfig};
use tw_core::{DomainName, EmailAddress, TenantName};
use tw_entra::credentials::LoadedApp;
use tw_entra::graph::GraphClient;
use tw_entra::rdap::RdapClient;
use tw_entra::token::TokenCache;

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("cannot read extra CA file {path}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("extra CA file {path} holds no usable PEM certificate")]
    CaFileEmpty { path: PathBuf },
    #[error("extra CA file {path} has a certificate rustls rejects")]
    CaRejected {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot read the system DNS configuration")]
    SystemDns(#[source] hickory_resolver::ResolveError),
    #[error("TLS configuration")]
    Tls(#[source] rustls::Error),
    #[error("cannot read entra.extra_ca_file {path}")]
    EntraCaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP client")]
    Http(#[source] tw_entra::http::HttpSetupError),
    #[error("mailflow relay or bounce mailbox")]
    Mailflow(#[source] tw_mailflow::SetupError),
    #[error("app credentials of tenant {tenant}")]
    App {
        tenant: TenantName,
        #[source]
        source: tw_entra::credentials::CredentialError,
    },
}

/// What an SMTP probe session needs to introduce itself.
#[derive(Debug, Clone)]
pub struct SmtpIdentity {
    pub helo_name: DomainName,
    pub mail_from: EmailAddress,
    /// Port of every MX connection: 25, or a simulator's port in tests and the demo.
    pub port: u16,
}

/// Every client a probe may use. Cheap to share behind an `Arc`.
pub struct Clients {
    pub resolver: TokioResolver,
    pub tls: Arc<rustls::ClientConfig>,
    pub smtp: SmtpIdentity,
    pub destinations: DestinationLimiter,
    pub entra: EntraClients,
    /// The relay and bounce mailbox of the `mailflow` check, when `[mailflow]` is configured.
    pub mailflow: Option<Mailflow>,
}

/// What the mailflow check needs: its config and its loaded credentials.
pub struct Mailflow {
    pub config: tw_core::config::MailflowConfig,
    pub clients: tw_mailflow::MailflowClients,
}

/// What the HTTP checks share: one pooled client, one token cache, one Graph client (with its
/// per-tenant concurrency limits), one RDAP client (with its bootstrap cache).
pub struct EntraClients {
    pub http: reqwest::Client,
    pub config: EntraConfig,
    pub tokens: TokenCache,
    pub graph: GraphClient,
    pub rdap: RdapClient,
    apps: HashMap<TenantName, Arc<LoadedApp>>,
}

impl EntraClients {
    /// Reads every tenant's app credential (file or environment variable) now, so a missing
    /// secret stops the start or the reload instead of failing probes later.
    fn from_config(config: &Config) -> Result<EntraClients, ClientBuildError> {
        let entra = &config.entra;
        let extra_ca = match &entra.extra_ca_file {
            Some(path) => {
                Some(
                    std::fs::read(path).map_err(|source| ClientBuildError::EntraCaFile {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let http =
            tw_entra::http::build_client(extra_ca.as_deref()).map_err(ClientBuildError::Http)?;
        let env = |name: &str| std::env::var(name).ok();
        let mut apps = HashMap::new();
        // Tenants sharing the global app share one loaded copy.
        let mut loaded: Vec<(tw_core::config::AppConfig, Arc<LoadedApp>)> = Vec::new();
        for tenant in &config.tenants {
            let Some(app) = &tenant.app else { continue };
            let shared = loaded
                .iter()
                .find(|(seen, _)| seen == app)
                .map(|(_, loaded)| Arc::clone(loaded));
            let app_loaded = match shared {
                Some(shared) => shared,
                None => {
                    let fresh = Arc::new(LoadedApp::load(app, &env).map_err(|source| {
                        ClientBuildError::App {
                            tenant: tenant.name.clone(),
                            source,
                        }
                    })?);
                    loaded.push((app.clone(), Arc::clone(&fresh)));
                    fresh
                }
            };
            apps.insert(tenant.name.clone(), app_loaded);
        }
        Ok(EntraClients {
            graph: GraphClient::new(
                http.clone(),
                &entra.graph_url,
                entra.max_concurrent_per_tenant.get(),
                entra.max_retries,
                entra.max_retry_wait,
            ),
            rdap: RdapClient::from_config(entra),
            tokens: TokenCache::for_cloud(entra.cloud),
            http,
            config: entra.clone(),
            apps,
        })
    }

    /// The tenant's loaded app, if it has one.
    pub fn app(&self, tenant: &TenantName) -> Option<&LoadedApp> {
        self.apps.get(tenant).map(Arc::as_ref)
    }
}

impl Clients {
    pub fn from_config(config: &Config) -> Result<Clients, ClientBuildError> {
        let mailflow = match &config.mailflow {
            Some(mailflow) => Some(Mailflow {
                clients: tw_mailflow::MailflowClients::load(mailflow, &|name| {
                    std::env::var(name).ok()
                })
                .map_err(ClientBuildError::Mailflow)?,
                config: mailflow.clone(),
            }),
            None => None,
        };
        Ok(Clients {
            mailflow,
            entra: EntraClients::from_config(config)?,
            resolver: build_resolver(&config.dns.nameservers, config.dns.timeout)?,
            tls: Arc::new(build_tls(config.smtp.extra_ca_file.as_deref())?),
            smtp: SmtpIdentity {
                helo_name: config.smtp.helo_name.clone(),
                mail_from: config.smtp.mail_from.clone(),
                port: config.smtp.port,
            },
            destinations: DestinationLimiter::new(config.schedule.max_per_destination.get()),
        })
    }
}

fn build_resolver(
    nameservers: &[SocketAddr],
    timeout: Duration,
) -> Result<TokioResolver, ClientBuildError> {
    let mut builder = if nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(ClientBuildError::SystemDns)?
    } else {
        let mut config = ResolverConfig::new();
        for addr in nameservers {
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
    };
    let options: &mut ResolverOpts = builder.options_mut();
    options.timeout = timeout;
    options.attempts = 2;
    // Cache within TTLs, but never for long: a monitor exists to notice changes.
    options.cache_size = 4_096;
    options.positive_max_ttl = Some(Duration::from_secs(300));
    options.negative_max_ttl = Some(Duration::from_secs(60));
    options.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    Ok(builder.build())
}

/// Public web PKI roots plus the operator's extra CAs. The ring provider is named explicitly
/// so nothing depends on a process-wide default being installed.
fn build_tls(extra_ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientBuildError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca_file {
        let pem = std::fs::read(path).map_err(|source| ClientBuildError::CaFile {
            path: path.to_owned(),
            source,
        })?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err(ClientBuildError::CaFileEmpty {
                path: path.to_owned(),
            });
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|source| ClientBuildError::CaRejected {
                    path: path.to_owned(),
                    source,
                })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientBuildError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Bounds concurrent probes per destination (an MX host), so an MSP with many tenants on the
/// same EOP frontend never opens a burst of sessions that looks like harvesting.
pub struct DestinationLimiter {
    per_destination: usize,
    semaphores: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl DestinationLimiter {
    pub fn new(per_destination: usize) -> DestinationLimiter {
        DestinationLimiter {
            per_destination: per_destination.max(1),
            semaphores: Mutex::new(HashMap::new()),
        }
    }

    /// A permit for one session to `destination`. `None` only if the semaphore was closed,
    /// which this type never does; the caller then proceeds rather than stalls.
    pub async fn acquire(&self, destination: &str) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut map = self.semaphores.lock();
            map.entry(destination.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_destination)))
                .clone()
        };
        semaphore.acquire_owned().await.ok()
    }
}
