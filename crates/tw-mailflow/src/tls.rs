//! The TLS client configuration shared by the relay and IMAP connections: the public web PKI
//! roots plus the operator's extra certificate authorities.
//!
//! The ring provider is named explicitly so nothing depends on a process-wide default that
//! another crate may or may not have installed.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Builds the client config; `extra_ca_pem` must hold at least one certificate when given.
pub(crate) fn client_config(
    extra_ca_pem: Option<&str>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = extra_ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .filter_map(Result::ok)
            .collect();
        if certs.is_empty() {
            return Err("the extra CA file holds no PEM certificate".into());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|err| format!("extra CA certificate rejected: {err}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("TLS setup: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
