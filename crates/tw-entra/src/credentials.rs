//! The app's credential, loaded once: a client secret, or a certificate with its private key
//! that signs client assertions (reference §2.1, §2.2).
//!
//! The config names where a credential lives (a file or an environment variable), never the
//! value; [`LoadedApp::load`] reads it at start so a missing file fails loudly before the first
//! check. Errors name the file or variable, never its content, and `Debug` shows neither key
//! nor secret. Assertions are signed PS256 (the algorithm Microsoft's current page names) and
//! carry the certificate's `x5t#S256` thumbprint, by which Entra ID finds the registered key.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tw_core::config::{AppConfig, AppCredential, SecretSource};
use tw_core::{Secret, Timestamp};

/// How long a client assertion stays valid (Microsoft suggests 5–10 minutes).
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// The `client_assertion_type` that goes with a signed JWT.
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Why an app credential could not be loaded or used. Names where the credential was looked
/// for, never what it holds.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("reading the {what} from file {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        /// The I/O error (not found, permission denied), never file content.
        reason: String,
    },
    #[error("the {what} environment variable {name} is not set")]
    EnvMissing { what: &'static str, name: String },
    #[error("the {what} from {origin} is empty")]
    Empty { what: &'static str, origin: String },
    #[error("the certificate file {path} holds no PEM CERTIFICATE block")]
    NoCertificate { path: String },
    #[error("the private key from {origin} is not an RSA private key in PEM (PKCS#1 or PKCS#8) that can sign")]
    InvalidKey { origin: String },
    #[error("signing the client assertion failed")]
    Signing,
}

/// Whether the app signs in with a client secret or a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Secret,
    Certificate,
}

impl CredentialKind {
    /// `secret` or `certificate`, as the signin check's facts say it.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Secret => "secret",
            CredentialKind::Certificate => "certificate",
        }
    }

    /// `client secret` or `certificate`, for summaries.
    pub fn describe(self) -> &'static str {
        match self {
            CredentialKind::Secret => "client secret",
            CredentialKind::Certificate => "certificate",
        }
    }
}

enum Credential {
    Secret(Secret),
    Certificate {
        key: EncodingKey,
        /// base64url (no padding) SHA-256 of the certificate's DER.
        x5t_s256: String,
    },
}

/// The app identity with its credential read into memory, ready to ask for tokens.
pub struct LoadedApp {
    client_id: String,
    credential: Credential,
    credential_expires: Option<Timestamp>,
}

impl fmt::Debug for LoadedApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("LoadedApp");
        s.field("client_id", &self.client_id)
            .field("credential", &self.kind().as_str());
        if let Credential::Certificate { x5t_s256, .. } = &self.credential {
            // The thumbprint is public (it is in every assertion header) and tells which
            // certificate is loaded.
            s.field("x5t_s256", x5t_s256);
        }
        s.field("credential_expires", &self.credential_expires)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: String,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

impl LoadedApp {
    /// Reads the credential `config` names: the client secret, or the certificate PEM file and
    /// its private key, from files or from environment variables looked up with `env` (the
    /// binary passes `std::env::var`; tests pass a closure). A secret is trimmed of surrounding
    /// whitespace (files usually end with a newline). A private key is checked by signing a
    /// throwaway assertion, so a bad key fails here rather than at the first token request.
    pub fn load(
        config: &AppConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LoadedApp, CredentialError> {
        let credential = match &config.credential {
            AppCredential::Secret(source) => {
                let (value, origin) = read_source(source, "client secret", env)?;
                let trimmed = value.trim();
                if trimmed.is_empty() {
                    return Err(CredentialError::Empty {
                        what: "client secret",
                        origin,
                    });
                }
                Credential::Secret(Secret::new(trimmed))
            }
            AppCredential::Certificate {
                certificate_file,
                private_key,
            } => {
                let cert_pem = read_file(certificate_file, "certificate")?;
                let (key_pem, origin) = read_source(private_key, "private key", env)?;
                certificate_credential(
                    &cert_pem,
                    &key_pem,
                    &certificate_file.display().to_string(),
                    origin,
                )?
            }
        };
        // A configured date wins; a certificate also says when it ends by itself.
        let certificate_end = match &config.credential {
            AppCredential::Certificate {
                certificate_file, ..
            } => read_file(certificate_file, "certificate")
                .ok()
                .and_then(|pem| certificate_not_after(&pem)),
            AppCredential::Secret(_) => None,
        };
        Ok(LoadedApp {
            client_id: config.client_id.clone(),
            credential,
            credential_expires: config.credential_expires.or(certificate_end),
        })
    }

    /// An app with a client secret given directly (tests, tools).
    pub fn with_secret(client_id: impl Into<String>, secret: Secret) -> LoadedApp {
        LoadedApp {
            client_id: client_id.into(),
            credential: Credential::Secret(secret),
            credential_expires: None,
        }
    }

    /// An app with a certificate (PEM) and its RSA private key (PEM) given directly.
    pub fn with_certificate(
        client_id: impl Into<String>,
        certificate_pem: &str,
        private_key_pem: &Secret,
    ) -> Result<LoadedApp, CredentialError> {
        let credential = certificate_credential(
            certificate_pem,
            private_key_pem.expose(),
            "the given certificate",
            "the given private key".to_owned(),
        )?;
        Ok(LoadedApp {
            client_id: client_id.into(),
            credential,
            credential_expires: None,
        })
    }

    /// The application (client) id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn kind(&self) -> CredentialKind {
        match self.credential {
            Credential::Secret(_) => CredentialKind::Secret,
            Credential::Certificate { .. } => CredentialKind::Certificate,
        }
    }

    /// When the configured credential expires, if the config says.
    pub fn credential_expires(&self) -> Option<Timestamp> {
        self.credential_expires
    }

    /// The certificate's `x5t#S256` thumbprint (base64url SHA-256 of the DER); `None` for a
    /// client secret.
    pub fn x5t_s256(&self) -> Option<&str> {
        match &self.credential {
            Credential::Secret(_) => None,
            Credential::Certificate { x5t_s256, .. } => Some(x5t_s256),
        }
    }

    /// The form fields that prove the app's identity on the token endpoint of `tenant` at
    /// `login_url`: `client_secret`, or `client_assertion_type` and a fresh `client_assertion`
    /// signed now. The values are secrets: they go into the request body and nowhere else.
    pub fn credential_form(
        &self,
        login_url: &str,
        tenant: &str,
        now: Timestamp,
    ) -> Result<Vec<(&'static str, Secret)>, CredentialError> {
        match &self.credential {
            Credential::Secret(secret) => Ok(vec![("client_secret", secret.clone())]),
            Credential::Certificate { .. } => Ok(vec![
                ("client_assertion_type", Secret::new(CLIENT_ASSERTION_TYPE)),
                (
                    "client_assertion",
                    self.client_assertion(login_url, tenant, now)?,
                ),
            ]),
        }
    }

    /// A client assertion JWT for the token endpoint `{login_url}/{tenant}/oauth2/v2.0/token`:
    /// header `alg` PS256, `typ` JWT, `x5t#S256`; claims `aud` (that URL), `iss` = `sub` =
    /// client id, `jti` (a fresh UUID), `nbf` = `iat` = now, `exp` = now + 10 minutes.
    /// An app with a client secret has no assertion: [`CredentialError::Signing`].
    pub fn client_assertion(
        &self,
        login_url: &str,
        tenant: &str,
        now: Timestamp,
    ) -> Result<Secret, CredentialError> {
        let Credential::Certificate { key, x5t_s256 } = &self.credential else {
            return Err(CredentialError::Signing);
        };
        let mut header = Header::new(Algorithm::PS256);
        header.typ = Some("JWT".to_owned());
        header.x5t_s256 = Some(x5t_s256.clone());
        let now_secs = now.as_millis().div_euclid(1000);
        let claims = AssertionClaims {
            aud: token_url(login_url, tenant),
            iss: &self.client_id,
            sub: &self.client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now_secs,
            iat: now_secs,
            exp: now_secs + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, key)
            .map(Secret::new)
            .map_err(|_| CredentialError::Signing)
    }
}

/// The tenant's token endpoint, `{login_url}/{tenant}/oauth2/v2.0/token`.
pub fn token_url(login_url: &str, tenant: &str) -> String {
    format!(
        "{}/{}/oauth2/v2.0/token",
        login_url.trim_end_matches('/'),
        tenant
    )
}

/// base64url (no padding) of the SHA-256 of the first certificate in `certificate_pem`.
/// The certificate's `notAfter` (the first CERTIFICATE block of the PEM), when it parses:
/// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version, serialNumber,
/// signature, issuer, validity SEQUENCE { notBefore, notAfter }, … }, … } (RFC 5280).
pub fn certificate_not_after(certificate_pem: &str) -> Option<Timestamp> {
    use simple_asn1::ASN1Block;
    let blocks = pem::parse_many(certificate_pem).ok()?;
    let cert = blocks.iter().find(|block| block.tag() == "CERTIFICATE")?;
    let parsed = simple_asn1::from_der(cert.contents()).ok()?;
    let ASN1Block::Sequence(_, certificate) = parsed.first()? else {
        return None;
    };
    let ASN1Block::Sequence(_, tbs) = certificate.first()? else {
        return None;
    };
    // The validity is the first SEQUENCE of exactly two times.
    tbs.iter().find_map(|block| {
        let ASN1Block::Sequence(_, times) = block else {
            return None;
        };
        let [_, not_after] = times.as_slice() else {
            return None;
        };
        let at = match not_after {
            ASN1Block::UTCTime(_, at) | ASN1Block::GeneralizedTime(_, at) => at,
            _ => return None,
        };
        let millis = at.assume_utc().unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).ok().map(Timestamp)
    })
}

pub fn x5t_s256(certificate_pem: &str) -> Option<String> {
    let blocks = pem::parse_many(certificate_pem).ok()?;
    let cert = blocks.iter().find(|block| block.tag() == "CERTIFICATE")?;
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(cert.contents())))
}

fn certificate_credential(
    cert_pem: &str,
    key_pem: &str,
    cert_origin: &str,
    key_origin: String,
) -> Result<Credential, CredentialError> {
    let x5t_s256 = x5t_s256(cert_pem).ok_or_else(|| CredentialError::NoCertificate {
        path: cert_origin.to_owned(),
    })?;
    if key_pem.trim().is_empty() {
        return Err(CredentialError::Empty {
            what: "private key",
            origin: key_origin,
        });
    }
    // The parser's error is dropped on purpose: it could quote part of the key.
    let key = match EncodingKey::from_rsa_pem(key_pem.as_bytes()) {
        Ok(key) => key,
        Err(_) => return Err(CredentialError::InvalidKey { origin: key_origin }),
    };
    // The PEM parser does not look inside the key; ring does, when signing. A throwaway
    // signature now makes a bad key a start-up error instead of a failing check.
    if jsonwebtoken::encode(&Header::new(Algorithm::PS256), &serde_json::json!({}), &key).is_err() {
        return Err(CredentialError::InvalidKey { origin: key_origin });
    }
    Ok(Credential::Certificate { key, x5t_s256 })
}

fn read_file(path: &Path, what: &'static str) -> Result<String, CredentialError> {
    std::fs::read_to_string(path).map_err(|err| CredentialError::File {
        what,
        path: path.display().to_string(),
        reason: io_reason(&err),
    })
}

/// The I/O error's kind in words; `std::io::Error`'s display never includes file content, but
/// an `InvalidData` error for a non-UTF-8 file is described here without the decoder's detail.
fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::InvalidData => "the file is not UTF-8 text".to_owned(),
        _ => err.to_string(),
    }
}

/// The credential and where it came from (`file /etc/…` or `environment variable X`).
fn read_source(
    source: &SecretSource,
    what: &'static str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, String), CredentialError> {
    match source {
        SecretSource::File(path) => {
            read_file(path, what).map(|value| (value, format!("file {}", path.display())))
        }
        SecretSource::Env(name) => match env(name) {
            Some(value) => Ok((value, format!("environment variable {name}"))),
            None => Err(CredentialError::EnvMissing {
                what,
                name: name.clone(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_of_a_pem_without_certificate_is_none() {
        assert_eq!(x5t_s256("no pem here"), None);
        assert_eq!(
            x5t_s256("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            None
        );
    }

    #[test]
    fn token_url_joins_without_double_slash() {
        assert_eq!(
            token_url("https://login.microsoftonline.com/", "contoso.com"),
            "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
        );
    }

    #[test]
    fn secret_apps_have_no_assertion_and_debug_hides_the_secret() {
        let app = LoadedApp::with_secret("client", Secret::new("canary-secret-value"));
        assert!(app
            .client_assertion("https://l", "t", Timestamp(0))
            .is_err());
        let debug = format!("{app:?}");
        assert!(!debug.contains("canary-secret-value"), "{debug}");
        assert!(debug.contains("secret"), "{debug}");
    }
}
