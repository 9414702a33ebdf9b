//! Client assertion checks of the simulated token endpoint: find the registered certificate by
//! the JWT header's thumbprint, verify the RS256/PS256 signature with that certificate's public
//! key, then the claims, each failure with the AADSTS code Entra gives it (reference §2.2, §2.5).
//!
//! The certificate is parsed with `rustls-webpki` (already in the tree through rustls, and a
//! strict X.509 parser) to get its SubjectPublicKeyInfo, which `jsonwebtoken` then takes as a
//! `PUBLIC KEY` PEM. Thumbprints are ring digests of the certificate DER.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

/// A registered certificate, ready to verify assertions.
pub(super) struct RegisteredCert {
    /// base64url(SHA-256(DER)), the `x5t#S256` header value.
    pub(super) x5t_s256: String,
    /// base64url(SHA-1(DER)), the legacy `x5t` header value.
    pub(super) x5t: String,
    key: DecodingKey,
}

/// Why a certificate could not be registered.
#[derive(Debug, thiserror::Error)]
pub(super) enum CertError {
    #[error("no PEM certificate: {0}")]
    Pem(String),
    #[error("not an X.509 v3 certificate: {0}")]
    X509(String),
    #[error("the public key is not an RSA key: {0}")]
    Key(String),
}

impl RegisteredCert {
    pub(super) fn parse(cert_pem: &str) -> Result<RegisteredCert, CertError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|err| CertError::Pem(err.to_string()))?;
        let cert = webpki::EndEntityCert::try_from(&der)
            .map_err(|err| CertError::X509(err.to_string()))?;
        let spki = cert.subject_public_key_info();
        let body = STANDARD.encode(spki.as_ref());
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        let key = DecodingKey::from_rsa_pem(pem.as_bytes())
            .map_err(|err| CertError::Key(err.to_string()))?;
        Ok(RegisteredCert {
            x5t_s256: thumbprint(&ring::digest::SHA256, der.as_ref()),
            x5t: thumbprint(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref()),
            key,
        })
    }
}

fn thumbprint(algorithm: &'static ring::digest::Algorithm, der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(algorithm, der).as_ref())
}

/// The AADSTS code a rejected assertion earns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejection {
    /// 50027: not a JWT, or a required claim missing.
    Malformed,
    /// 700027: no registered key with that thumbprint, unsupported algorithm, bad signature.
    Signature,
    /// 700024: `nbf`/`exp` do not bracket now.
    Time,
    /// 700023: `aud` is not this tenant's token endpoint.
    Audience,
    /// 700021: `iss`/`sub` are not the `client_id`.
    Issuer,
}

impl Rejection {
    pub(super) fn code(self) -> u32 {
        match self {
            Rejection::Malformed => 50027,
            Rejection::Signature => 700027,
            Rejection::Time => 700024,
            Rejection::Audience => 700023,
            Rejection::Issuer => 700021,
        }
    }
}

/// Checks `assertion` against the certificates registered for `client_id`; `audiences` are the
/// token endpoint URLs accepted as `aud`.
pub(super) fn verify(
    assertion: &str,
    certs: &[&RegisteredCert],
    client_id: &str,
    audiences: &[String],
) -> Result<(), Rejection> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|_| Rejection::Malformed)?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(Rejection::Signature);
    }
    let cert = certs
        .iter()
        .find(|cert| {
            header.x5t_s256.as_deref() == Some(cert.x5t_s256.as_str())
                || header.x5t.as_deref() == Some(cert.x5t.as_str())
        })
        .ok_or(Rejection::Signature)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    validation.set_audience(audiences);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_owned());
    let claims = jsonwebtoken::decode::<serde_json::Value>(assertion, &cert.key, &validation)
        .map_err(|err| match err.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidRsaKey(_) => Rejection::Signature,
            ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => Rejection::Time,
            ErrorKind::InvalidAudience => Rejection::Audience,
            ErrorKind::InvalidIssuer | ErrorKind::InvalidSubject => Rejection::Issuer,
            _ => Rejection::Malformed,
        })?
        .claims;
    match claims.get("jti").and_then(serde_json::Value::as_str) {
        Some(jti) if !jti.is_empty() => Ok(()),
        _ => Err(Rejection::Malformed),
    }
}
