//! Who may read and who may change state over HTTP: one bearer token, by reference.
//!
//! The token is read once at start from `[server] api_token_file` or `api_token_env` into a
//! [`Secret`] (it never appears in `Debug`, logs or error texts). Requests present it as
//! `Authorization: Bearer <token>`, or, so a browser can open the status page without an
//! extension, as the password of HTTP Basic (any user name). Both are compared in constant
//! time: the SHA-256 digests of the presented and the configured token are compared byte by
//! byte without an early exit, so neither the content nor the length of the token leaks
//! through timing.
//!
//! Reads (status page, `/api/v1/`, `/metrics`) are open unless `read_requires_token`; anything
//! that changes state always needs the token, and with no token configured it is refused.
//! `/healthz` and `/readyz` are never guarded: systemd and load balancers probe them.

use std::path::PathBuf;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use tw_core::config::{SecretSource, ServerConfig};
use tw_core::Secret;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No credentials were presented (401).
    Missing,
    /// Credentials were presented and are not the token (401).
    Wrong,
    /// A state-changing request while no token is configured (403): there is nothing that
    /// could authorize it.
    NoTokenConfigured,
}

impl Denied {
    pub fn status(self) -> StatusCode {
        match self {
            Denied::Missing | Denied::Wrong => StatusCode::UNAUTHORIZED,
            Denied::NoTokenConfigured => StatusCode::FORBIDDEN,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => "this endpoint needs the API token (Authorization: Bearer <token>)",
            Denied::Wrong => "the API token presented is not valid",
            Denied::NoTokenConfigured => {
                "state-changing requests are disabled: no API token is configured ([server] api_token_file or api_token_env)"
            }
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750) for a 401; browsers asking for an HTML
    /// page also get a Basic challenge, so they prompt for the token as a password.
    pub fn challenges(self, browser: bool) -> Vec<HeaderValue> {
        let bearer = match self {
            Denied::Missing => HeaderValue::from_static("Bearer realm=\"tenantwatch\""),
            Denied::Wrong => {
                HeaderValue::from_static("Bearer realm=\"tenantwatch\", error=\"invalid_token\"")
            }
            Denied::NoTokenConfigured => return Vec::new(),
        };
        let mut challenges = Vec::with_capacity(2);
        if browser {
            challenges.push(HeaderValue::from_static(
                "Basic realm=\"tenantwatch\", charset=\"UTF-8\"",
            ));
        }
        challenges.push(bearer);
        challenges
    }
}

/// A token reference that could not be resolved at start.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the API token file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the environment variable {0} named by server.api_token_env is not set or not UTF-8")]
    Env(String),
    #[error("the API token is empty")]
    Empty,
}

/// The HTTP access rules, with the token resolved.
#[derive(Clone, Default)]
pub struct ApiAuth {
    /// SHA-256 of the token; the token itself is not kept, the digest is all a comparison
    /// needs.
    token_digest: Option<[u8; 32]>,
    read_requires_token: bool,
}

impl std::fmt::Debug for ApiAuth {
    /// Not even the digest: a digest of a weak token can be brute-forced offline.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAuth")
            .field("token", &self.token_digest.map(|_| "[redacted]"))
            .field("read_requires_token", &self.read_requires_token)
            .finish()
    }
}

impl ApiAuth {
    /// Open reads, no writes: the default without `[server] api_token_*`.
    pub fn open() -> ApiAuth {
        ApiAuth::default()
    }

    pub fn new(token: Option<&Secret>, read_requires_token: bool) -> ApiAuth {
        ApiAuth {
            token_digest: token.map(|token| digest(token.expose().as_bytes())),
            // Without a token there is nothing to require; config validation refuses that
            // combination, and here it fails closed: every guarded read is refused.
            read_requires_token,
        }
    }

    /// Reads the configured token (file or environment variable; a trailing newline, as
    /// editors and `systemd-creds` write it, is no part of it).
    pub fn from_config(server: &ServerConfig) -> Result<ApiAuth, TokenError> {
        let token = match &server.api_token {
            None => None,
            Some(source) => Some(read_token(source)?),
        };
        Ok(ApiAuth::new(token.as_ref(), server.read_requires_token))
    }

    pub fn has_token(&self) -> bool {
        self.token_digest.is_some()
    }

    pub fn read_requires_token(&self) -> bool {
        self.read_requires_token
    }

    /// Decides one request from its headers.
    pub fn authorize(&self, headers: &HeaderMap, access: Access) -> Result<(), Denied> {
        let needed = match access {
            Access::Read => self.read_requires_token,
            Access::Write => true,
        };
        if !needed {
            return Ok(());
        }
        let Some(expected) = &self.token_digest else {
            return Err(match access {
                Access::Write => Denied::NoTokenConfigured,
                // read_requires_token without a token: refuse rather than open up.
                Access::Read => Denied::Wrong,
            });
        };
        let mut presented = None;
        for value in headers.get_all(header::AUTHORIZATION) {
            presented = presented.or_else(|| credential(value));
        }
        let Some(presented) = presented else {
            return Err(Denied::Missing);
        };
        if constant_time_eq(&digest(&presented), expected) {
            Ok(())
        } else {
            Err(Denied::Wrong)
        }
    }
}

fn read_token(source: &SecretSource) -> Result<Secret, TokenError> {
    let value = match source {
        SecretSource::File(path) => {
            std::fs::read_to_string(path).map_err(|source| TokenError::File {
                path: path.clone(),
                source,
            })?
        }
        SecretSource::Env(name) => {
            std::env::var(name).map_err(|_| TokenError::Env(name.clone()))?
        }
    };
    let value = value.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(TokenError::Empty);
    }
    Ok(Secret::new(value))
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The token an `Authorization` header carries: `Bearer <token>`, or the password of
/// `Basic base64(user:password)`. Scheme names are case-insensitive (RFC 9110).
fn credential(value: &HeaderValue) -> Option<Vec<u8>> {
    let value = value.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!rest.is_empty()).then(|| rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64_decode(rest)?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        let password = decoded[colon + 1..].to_vec();
        return (!password.is_empty()).then_some(password);
    }
    None
}

/// Standard base64 with padding (RFC 4648 §4), as browsers send Basic credentials. Small
/// enough to keep here rather than add a crate for one header.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    fn value(byte: u8) -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, chunk) in bytes.chunks(4).enumerate() {
        let last = index + 1 == bytes.len() / 4;
        let padding = chunk.iter().rev().take_while(|b| **b == b'=').count();
        if padding > 2 || (padding > 0 && !last) {
            return None;
        }
        let mut group = 0u32;
        for (position, byte) in chunk.iter().enumerate() {
            let six = if position >= 4 - padding {
                0
            } else {
                value(*byte)?
            };
            group = (group << 6) | six;
        }
        let [_, a, b, c] = group.to_be_bytes();
        out.extend_from_slice(&[a, b, c][..3 - padding]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in authorization {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn base64_decodes_what_browsers_send_and_refuses_the_rest() {
        assert_eq!(
            base64_decode("dXNlcjpzM2NyZXQ="),
            Some(b"user:s3cret".to_vec())
        );
        assert_eq!(base64_decode("YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("YWJj"), Some(b"abc".to_vec()));
        assert_eq!(base64_decode(""), Some(Vec::new()));
        for bad in ["YQ=", "Y===", "YQ==YWJj", "YW*j", "é123"] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn open_reads_need_nothing_and_writes_need_a_configured_token() {
        let auth = ApiAuth::open();
        assert_eq!(auth.authorize(&headers(&[]), Access::Read), Ok(()));
        assert_eq!(
            auth.authorize(&headers(&["Bearer anything"]), Access::Write),
            Err(Denied::NoTokenConfigured)
        );
        assert_eq!(Denied::NoTokenConfigured.status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_token_is_accepted_as_bearer_or_basic_password_and_nothing_else() {
        let auth = ApiAuth::new(Some(&Secret::new("s3cret-token")), true);
        for access in [Access::Read, Access::Write] {
            assert_eq!(auth.authorize(&headers(&[]), access), Err(Denied::Missing));
            assert_eq!(
                auth.authorize(&headers(&["Bearer s3cret-token"]), access),
                Ok(())
            );
            assert_eq!(
                auth.authorize(&headers(&["bearer   s3cret-token "]), access),
                Ok(())
            );
            // "ops:s3cret-token"
            assert_eq!(
                auth.authorize(&headers(&["Basic b3BzOnMzY3JldC10b2tlbg=="]), access),
                Ok(())
            );
            for wrong in [
                "Bearer s3cret-toke",
                "Bearer s3cret-token2",
                "Bearer S3CRET-TOKEN",
                // "s3cret-token:x": the token as user name is not the password
                "Basic czNjcmV0LXRva2VuOng=",
            ] {
                assert_eq!(
                    auth.authorize(&headers(&[wrong]), access),
                    Err(Denied::Wrong),
                    "{wrong}"
                );
            }
            for unusable in [
                "s3cret-token",
                "Token s3cret-token",
                "Bearer ",
                "Basic !!!!",
            ] {
                assert_eq!(
                    auth.authorize(&headers(&[unusable]), access),
                    Err(Denied::Missing),
                    "{unusable}"
                );
            }
        }
    }

    #[test]
    fn a_token_with_open_reads_guards_only_writes() {
        let auth = ApiAuth::new(Some(&Secret::new("t")), false);
        assert_eq!(auth.authorize(&headers(&[]), Access::Read), Ok(()));
        assert_eq!(
            auth.authorize(&headers(&[]), Access::Write),
            Err(Denied::Missing)
        );
        assert_eq!(
            auth.authorize(&headers(&["Bearer t"]), Access::Write),
            Ok(())
        );
    }

    #[test]
    fn required_reads_without_a_token_fail_closed() {
        let auth = ApiAuth::new(None, true);
        assert_eq!(
            auth.authorize(&headers(&["Bearer guess"]), Access::Read),
            Err(Denied::Wrong)
        );
    }

    #[test]
    fn the_token_is_read_from_a_file_or_the_environment_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-file\n").unwrap();
        let server = |api_token| ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            api_token,
            read_requires_token: true,
        };
        let auth = ApiAuth::from_config(&server(Some(SecretSource::File(path.clone())))).unwrap();
        assert_eq!(
            auth.authorize(&headers(&["Bearer from-file"]), Access::Read),
            Ok(())
        );

        let missing =
            ApiAuth::from_config(&server(Some(SecretSource::File(dir.path().join("absent")))))
                .unwrap_err();
        assert!(missing.to_string().contains("absent"), "{missing}");

        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            ApiAuth::from_config(&server(Some(SecretSource::File(path)))),
            Err(TokenError::Empty)
        ));
        let unset = "TW_SERVER_TEST_TOKEN_THAT_IS_NEVER_SET";
        assert!(matches!(
            ApiAuth::from_config(&server(Some(SecretSource::Env(unset.into())))),
            Err(TokenError::Env(name)) if name == unset
        ));
        // PATH is set in every test environment; its value stands in for a token.
        let path_value = std::env::var("PATH").unwrap();
        let auth = ApiAuth::from_config(&server(Some(SecretSource::Env("PATH".into())))).unwrap();
        assert_eq!(
            auth.authorize(&headers(&[&format!("Bearer {path_value}")]), Access::Read),
            Ok(())
        );
    }

    #[test]
    fn debug_output_shows_no_token() {
        let auth = ApiAuth::new(Some(&Secret::new("canary-5d1e")), true);
        let shown = format!("{auth:?}");
        assert!(!shown.contains("canary-5d1e"), "{shown}");
    }
}
