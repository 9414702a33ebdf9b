//! SMTP AUTH (RFC 4954) as a submission relay checks it: PLAIN and LOGIN, whose credentials
//! travel base64-encoded.
//!
//! The decoder is a few lines here rather than a dependency, and it refuses anything that is
//! not canonical base64 so a client's encoding bug shows up as a failed login in tests.

/// Decodes standard base64 (with `=` padding); `None` for anything malformed.
pub(crate) fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if text.len() % 4 != 0 {
        return None;
    }
    let value = |byte: u8| -> Option<u32> {
        match byte {
            b'A'..=b'Z' => Some(u32::from(byte - b'A')),
            b'a'..=b'z' => Some(u32::from(byte - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(byte - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (index, chunk) in text.chunks(4).enumerate() {
        let padding = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if padding > 2 || (padding > 0 && index + 1 != chunks) {
            return None;
        }
        let mut word = 0u32;
        for &byte in &chunk[..4 - padding] {
            word = (word << 6) | value(byte)?;
        }
        word <<= 6 * padding as u32;
        let bytes = [(word >> 16) as u8, (word >> 8) as u8, word as u8];
        out.extend_from_slice(&bytes[..3 - padding]);
    }
    Some(out)
}

/// Encodes for the server's challenges (`334 VXNlcm5hbWU6` is "Username:").
pub(crate) fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let word = chunk
            .iter()
            .enumerate()
            .fold(0u32, |word, (i, &b)| word | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((word >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The user name and password of an AUTH PLAIN response (`authzid NUL authcid NUL passwd`).
pub(crate) fn plain_credentials(response: &str) -> Option<(String, String)> {
    let decoded = String::from_utf8(decode_base64(response)?).ok()?;
    let mut parts = decoded.split('\0');
    let _authzid = parts.next()?;
    let user = parts.next()?;
    let password = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    Some((user.to_owned(), password.to_owned()))
}

/// One base64 line of AUTH LOGIN, decoded.
pub(crate) fn login_value(response: &str) -> Option<String> {
    String::from_utf8(decode_base64(response)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_refuses_garbage() {
        for text in ["", "a", "ab", "abc", "abcd", "\0user\0pass"] {
            let encoded = encode_base64(text.as_bytes());
            assert_eq!(
                decode_base64(&encoded).unwrap(),
                text.as_bytes(),
                "{encoded}"
            );
        }
        assert_eq!(encode_base64(b"Username:"), "VXNlcm5hbWU6");
        assert_eq!(decode_base64("abc"), None);
        assert_eq!(decode_base64("ab=c"), None);
        assert_eq!(decode_base64("a==="), None);
        assert_eq!(decode_base64("YQ==YQ=="), None);
        assert_eq!(decode_base64("Y!=="), None);
    }

    #[test]
    fn plain_response_splits_into_user_and_password() {
        let response = encode_base64(b"\0probe\0s3cret");
        assert_eq!(
            plain_credentials(&response),
            Some(("probe".to_owned(), "s3cret".to_owned()))
        );
        assert_eq!(plain_credentials(&encode_base64(b"probe")), None);
    }
}
