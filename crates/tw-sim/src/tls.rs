//! Test certificates: a throwaway CA whose leaf certificates the SMTP simulator presents on
//! STARTTLS, and self-signed certificates that no CA vouches for.
//!
//! Tests need a certificate chain a probe can verify without the internet, and one it must
//! reject. Every rustls config here names the ring provider explicitly, because a process-wide
//! default provider is global state that another test (or crate) may or may not have installed.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConfig;

/// Why a certificate or TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("generating certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("building tls config: {0}")]
    Tls(#[from] rustls::Error),
    #[error("binding a listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A certificate authority that lives only as long as the test that made it.
pub struct TestCa {
    /// The CA certificate in PEM, for a probe's "extra CA" setting.
    pub ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    // The signing key is deliberately left out: it is a secret, even a throwaway one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Generates a fresh CA key and self-signed CA certificate.
    pub fn generate() -> Result<TestCa, SimError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "tw-sim test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        Ok(TestCa {
            ca_cert_pem: certificate.pem(),
            ca_cert_der: certificate.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate in DER, for building a client root store directly.
    pub fn ca_cert_der(&self) -> CertificateDer<'static> {
        self.ca_cert_der.clone()
    }

    /// A rustls `ServerConfig` whose leaf certificate, signed by this CA, carries `dns_names` as
    /// SANs. Wildcards such as `*.mail.protection.outlook.com` are allowed; EOP itself presents
    /// a wildcard rather than the per-tenant MX name (reference §4.2).
    pub fn server_config(&self, dns_names: &[&str]) -> Result<Arc<ServerConfig>, SimError> {
        let params = leaf_params(dns_names)?;
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.issuer)?;
        build_server_config(certificate.der().clone(), &key)
    }
}

/// A rustls `ServerConfig` with a self-signed leaf certificate that no `TestCa` issued, for
/// tests where the probe must report a certificate failure.
pub fn untrusted_server_config(dns_names: &[&str]) -> Result<Arc<ServerConfig>, SimError> {
    let params = leaf_params(dns_names)?;
    let key = KeyPair::generate()?;
    let certificate = params.self_signed(&key)?;
    build_server_config(certificate.der().clone(), &key)
}

fn leaf_params(dns_names: &[&str]) -> Result<CertificateParams, SimError> {
    let names: Vec<String> = dns_names.iter().map(|name| name.to_string()).collect();
    let mut params = CertificateParams::new(names)?;
    // EOP's certificate subject is CN=mail.protection.outlook.com while the SAN is the
    // wildcard (reference §4.2), so the CN is the first name without its wildcard label.
    let common_name = dns_names
        .first()
        .map(|name| name.strip_prefix("*.").unwrap_or(name))
        .unwrap_or("tw-sim");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

fn build_server_config(
    certificate: CertificateDer<'static>,
    key: &KeyPair,
) -> Result<Arc<ServerConfig>, SimError> {
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![certificate], key_der)?;
    Ok(Arc::new(config))
}
