//! The probe message: a unique tag, and a small plain-text message that carries it in its
//! Message-ID, its subject and an `X-Tenantwatch-Probe` header.
//!
//! The tag is how a bounce is matched to the probe that caused it: DSNs return the original
//! headers (`RET=HDRS` is asked for), and `ENVID` carries the tag into
//! `Original-Envelope-Id` where the relay and Exchange support the DSN extension.
//! `Auto-Submitted: auto-generated` (RFC 3834) keeps out-of-office replies away.

use tw_core::{EmailAddress, TenantName, Timestamp};

use crate::clock;

/// The header that names the probe; also what stale-bounce clean-up searches for.
pub(crate) const PROBE_HEADER: &str = "X-Tenantwatch-Probe";
/// Every tag starts with this, so a stale probe bounce is recognisable by its tag alone.
pub(crate) const TAG_PREFIX: &str = "twp-";

/// A fresh tag: `twp-<unix ms>-<64 random bits in hex>`; letters, digits and dashes only, so
/// it needs no quoting in an IMAP search or an `ENVID`.
pub(crate) fn new_tag(now: Timestamp) -> String {
    format!("{TAG_PREFIX}{}-{:016x}", now.as_millis(), fastrand::u64(..))
}

/// The Message-ID for `tag`, on the sender's own domain.
pub(crate) fn message_id(tag: &str, from: &EmailAddress) -> String {
    format!("<{tag}@{}>", from.domain())
}

/// The message text with CRLF line endings (not yet dot-stuffed).
pub(crate) fn build(
    tag: &str,
    from: &EmailAddress,
    to: &EmailAddress,
    tenant: &TenantName,
    now: Timestamp,
) -> String {
    let lines = [
        format!("Date: {}", clock::rfc5322(now)),
        format!("From: tenantwatch <{from}>"),
        format!("To: <{to}>"),
        format!("Subject: tenantwatch mail-flow probe {tag}"),
        format!("Message-ID: {}", message_id(tag, from)),
        format!("{PROBE_HEADER}: {tag}"),
        "Auto-Submitted: auto-generated".to_owned(),
        "MIME-Version: 1.0".to_owned(),
        "Content-Type: text/plain; charset=us-ascii".to_owned(),
        "Content-Transfer-Encoding: 7bit".to_owned(),
        String::new(),
        format!("This message checks that mail reaches {to} (tenant {tenant})."),
        "It was sent by tenantwatch, the monitor of your IT provider, and can be deleted."
            .to_owned(),
        String::new(),
        format!("Probe: {tag}"),
    ];
    let mut text = lines.join("\r\n");
    text.push_str("\r\n");
    text
}

/// RFC 5321 §4.5.2 transparency, and the terminating `.` line.
pub(crate) fn dot_stuffed(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 8);
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_in_the_message_id_subject_and_header() {
        let from = EmailAddress::parse("bounces@msp.example").unwrap();
        let to = EmailAddress::parse("ceo@contoso.com").unwrap();
        let tenant = TenantName::parse("contoso").unwrap();
        let tag = new_tag(Timestamp(1_700_000_000_000));
        assert!(tag.starts_with("twp-1700000000000-"), "{tag}");
        assert_eq!(tag.len(), "twp-1700000000000-".len() + 16);
        assert_ne!(tag, new_tag(Timestamp(1_700_000_000_000)));
        let text = build(&tag, &from, &to, &tenant, Timestamp(1_700_000_000_000));
        assert!(text.contains(&format!("Message-ID: <{tag}@msp.example>\r\n")));
        assert!(text.contains(&format!("X-Tenantwatch-Probe: {tag}\r\n")));
        assert!(text.contains(&format!("Subject: tenantwatch mail-flow probe {tag}\r\n")));
        assert!(text.contains("\r\n\r\nThis message checks that mail reaches ceo@contoso.com"));
        assert!(text.is_ascii());
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(dot_stuffed("a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuffed("a"), b"a\r\n.\r\n");
    }
}
