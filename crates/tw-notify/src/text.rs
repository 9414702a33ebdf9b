//! Small text transformations the channels share: URL and form encoding, RFC 2047 header
//! words, truncation, and the one place a URL is cut down to what may be shown.
//!
//! They are hand-written rather than pulled in as crates because each is a few lines with a
//! table test, and the exact bytes they produce are part of what the channel tests assert.

use sha2::{Digest, Sha256};

use crate::Message;

/// `scheme://host[:port]` of `url`: the only part of a receiver's URL that may appear in an
/// error or a log, because paths and queries of webhook and SMS gateway URLs carry tokens.
pub(crate) fn url_origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => match (parsed.host_str(), parsed.port()) {
            (Some(host), Some(port)) => format!("{}://{host}:{port}", parsed.scheme()),
            (Some(host), None) => format!("{}://{host}", parsed.scheme()),
            (None, _) => format!("{}:", parsed.scheme()),
        },
        Err(_) => "<invalid url>".to_owned(),
    }
}

/// `base` without trailing slashes, so `base + "/path"` never doubles them.
pub(crate) fn trim_base(base: &str) -> &str {
    base.trim_end_matches('/')
}

/// Percent-encodes everything except RFC 3986 unreserved characters, for one path segment
/// (a Matrix room id `!abc:example.org` must travel as `%21abc%3Aexample.org`).
pub(crate) fn encode_path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one value, as the WHATWG URL standard
/// (and so every form parser) defines it.
pub(crate) fn encode_form_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"*-._".contains(&byte) {
            out.push(char::from(byte));
        } else if byte == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// `id` if it is a short token of `[A-Za-z0-9_-]`, otherwise a stable hash of it: the form
/// ntfy sequence ids and e-mail Message-ID local parts accept without escaping.
pub(crate) fn safe_token(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        id.to_owned()
    } else {
        let digest = Sha256::digest(id.as_bytes());
        format!("h{}", hex(digest.get(..16).unwrap_or(&digest)))
    }
}

/// `text` with every control character (CR and LF included) turned into a space, so it can
/// go into a header without starting a new one.
pub(crate) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// At most `max` characters of `text`, marking a cut with `…`.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `text` on one line with whitespace collapsed, cut to at most `max` characters at a word
/// boundary and marked with `…`. Cutting only between words matters for redaction: a token
/// is either whole (and so recognised and removed) or absent, never a leaking prefix.
pub(crate) fn truncate_words(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut cut = false;
    for word in text.split_whitespace() {
        let needed = word.chars().count() + usize::from(!out.is_empty());
        if out.chars().count() + needed > max.saturating_sub(2) {
            cut = true;
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if cut {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push('…');
    }
    out
}

/// At most `max` bytes of `text`, cut on a character boundary and marked with `…`.
pub(crate) fn truncate_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = text.get(..cut).unwrap_or_default().to_owned();
    out.push('…');
    out
}

/// A one-line header value as RFC 2047 words: unchanged when it is printable ASCII,
/// otherwise `=?UTF-8?Q?…?=` words of at most 75 characters, never splitting a character.
/// The caller joins the words with a space (a folded header joins them with CRLF space).
pub(crate) fn header_words(value: &str) -> Vec<String> {
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return vec![value.to_owned()];
    }
    const PREFIX: &str = "=?UTF-8?Q?";
    const SUFFIX: &str = "?=";
    const MAX_PAYLOAD: usize = 75 - PREFIX.len() - SUFFIX.len();
    let mut words = Vec::new();
    let mut payload = String::new();
    let mut buf = [0u8; 4];
    for c in value.chars() {
        let mut encoded = String::new();
        if c.is_ascii_alphanumeric() {
            encoded.push(c);
        } else if c == ' ' {
            encoded.push('_');
        } else {
            for byte in c.encode_utf8(&mut buf).bytes() {
                encoded.push_str(&format!("={byte:02X}"));
            }
        }
        if payload.len() + encoded.len() > MAX_PAYLOAD {
            words.push(format!("{PREFIX}{payload}{SUFFIX}"));
            payload.clear();
        }
        payload.push_str(&encoded);
    }
    if !payload.is_empty() {
        words.push(format!("{PREFIX}{payload}{SUFFIX}"));
    }
    words
}

/// The text of channels that have no title field: title, blank line, body, and the status
/// page link unless the body already carries it. A body that already opens with the title
/// (as tw-alert renders it) is not given a second one.
pub(crate) fn titled_text(message: &Message) -> String {
    let title = one_line(&message.title);
    let body = message.body.trim();
    let mut text = if body_repeats_title(message) {
        body.to_owned()
    } else {
        format!("{title}\n\n{body}")
    };
    append_link(&mut text, message);
    text
}

/// The body without its opening title line, for channels that show the title on their own
/// (an ntfy notification's title, an e-mail subject stays in the body as mail readers expect).
pub(crate) fn body_after_title(message: &Message) -> &str {
    let body = message.body.trim();
    if body_repeats_title(message) {
        let title = one_line(&message.title);
        body.get(title.len()..).unwrap_or(body).trim_start()
    } else {
        body
    }
}

fn body_repeats_title(message: &Message) -> bool {
    let title = one_line(&message.title);
    !title.is_empty() && message.body.trim_start().starts_with(&title)
}

/// Appends the status page link on its own line unless `text` already contains it.
pub(crate) fn append_link(text: &mut String, message: &Message) {
    if let Some(link) = &message.link {
        if !text.contains(link.as_str()) {
            text.push_str("\n\n");
            text.push_str(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let cases = [
            (
                "https://hooks.example.com/services/T/B/secret",
                "https://hooks.example.com",
            ),
            ("http://127.0.0.1:8080/x?token=1", "http://127.0.0.1:8080"),
            ("https://api.telegram.org", "https://api.telegram.org"),
            ("https://user:pw@example.com/", "https://example.com"),
            ("not a url", "<invalid url>"),
        ];
        for (url, origin) in cases {
            assert_eq!(url_origin(url), origin, "{url}");
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(
            encode_path_segment("!room:example.org"),
            "%21room%3Aexample.org"
        );
        assert_eq!(encode_path_segment("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(encode_form_value("+1 555&x=ü*"), "%2B1+555%26x%3D%C3%BC*");
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }

    #[test]
    fn tokens() {
        assert_eq!(safe_token("evt-42_a"), "evt-42_a");
        let hashed = safe_token("42:sms/oncall");
        assert_eq!(hashed.len(), 33);
        assert!(hashed.starts_with('h'));
        assert_eq!(hashed, safe_token("42:sms/oncall"));
        assert_ne!(hashed, safe_token("43:sms/oncall"));
        assert!(safe_token("").starts_with('h'));
    }

    #[test]
    fn truncation() {
        assert_eq!(truncate_chars("abcdef", 4), "abc…");
        assert_eq!(truncate_chars("abc", 4), "abc");
        assert_eq!(truncate_bytes("ääää", 6), "ä…");
        assert_eq!(truncate_bytes("abc", 6), "abc");
        assert_eq!(one_line(" a\r\nb\tc "), "a  b c");
        assert_eq!(truncate_words("a  bb\n ccc dddd", 10), "a bb ccc …");
        assert_eq!(truncate_words("a bb", 10), "a bb");
        assert_eq!(truncate_words("averyveryverylongword", 10), "…");
    }

    #[test]
    fn titles_are_not_repeated() {
        let mut message = crate::Message {
            id: "e".into(),
            kind: "firing".into(),
            severity: "critical".into(),
            tenant: "t".into(),
            check: "c".into(),
            target: "x".into(),
            status: "critical".into(),
            reason: "r".into(),
            title: "CRITICAL t: x".into(),
            short: "s".into(),
            body: "Verdict: critical\n".into(),
            since: tw_core::Timestamp(0),
            at: tw_core::Timestamp(0),
            link: Some("https://status.example/t".into()),
        };
        assert_eq!(
            titled_text(&message),
            "CRITICAL t: x\n\nVerdict: critical\n\nhttps://status.example/t"
        );
        assert_eq!(body_after_title(&message), "Verdict: critical");
        message.body = "CRITICAL t: x\n\nVerdict: critical\nsee https://status.example/t\n".into();
        assert_eq!(
            titled_text(&message),
            "CRITICAL t: x\n\nVerdict: critical\nsee https://status.example/t"
        );
        assert_eq!(
            body_after_title(&message),
            "Verdict: critical\nsee https://status.example/t"
        );
    }

    #[test]
    fn header_words_encode_only_when_needed() {
        assert_eq!(header_words("CRITICAL: contoso"), vec!["CRITICAL: contoso"]);
        assert_eq!(
            header_words("Grüße a_b"),
            vec!["=?UTF-8?Q?Gr=C3=BC=C3=9Fe_a=5Fb?="]
        );
        let long = "ü".repeat(40);
        let words = header_words(&long);
        assert!(words.len() > 1);
        for word in &words {
            assert!(word.len() <= 75, "{word}");
            assert!(word.starts_with("=?UTF-8?Q?") && word.ends_with("?="));
        }
        let payload: String = words
            .iter()
            .map(|w| w.trim_start_matches("=?UTF-8?Q?").trim_end_matches("?="))
            .collect();
        assert_eq!(payload, "=C3=BC".repeat(40));
    }
}
