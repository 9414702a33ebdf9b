//! The RFC 5322 message the e-mail channel sends: headers, a plain-text body, and the
//! SMTP DATA framing (CRLF lines, dot-stuffing, the final `.`).
//!
//! Header values that come from alert text are forced onto one line (a CR or LF in a title
//! must not start a new header) and RFC 2047-encoded when they are not ASCII.

use tw_core::Timestamp;

use crate::text::{append_link, header_words, one_line, safe_token, truncate_chars};
use crate::Message;

/// RFC 5321's limit for a line, without its CRLF.
const MAX_LINE_BYTES: usize = 998;
/// Long enough for any title worth reading, short enough for every mail client.
const MAX_SUBJECT_CHARS: usize = 200;

/// The complete message, CRLF-terminated lines, not yet dot-stuffed.
pub(super) fn build(message: &Message, from: &str, to: &[String]) -> String {
    let mut body = message.body.trim_end().to_owned();
    append_link(&mut body, message);
    let transfer_encoding = if body.is_ascii() { "7bit" } else { "8bit" };
    let subject = truncate_chars(&one_line(&message.title), MAX_SUBJECT_CHARS);
    let headers = [
        ("Date", rfc5322_date(message.at)),
        ("From", from.to_owned()),
        ("To", to.join(", ")),
        ("Subject", header_words(&subject).join("\r\n ")),
        ("Message-ID", message_id(&message.id, from)),
        ("MIME-Version", "1.0".to_owned()),
        ("Content-Type", "text/plain; charset=utf-8".to_owned()),
        ("Content-Transfer-Encoding", transfer_encoding.to_owned()),
        // RFC 3834: vacation responders and the like must not answer an alert.
        ("Auto-Submitted", "auto-generated".to_owned()),
        ("X-Tenantwatch-Kind", token(&message.kind)),
        ("X-Tenantwatch-Severity", token(&message.severity)),
        ("X-Tenantwatch-Tenant", token(&message.tenant)),
    ];
    let mut out = String::with_capacity(body.len() + 1024);
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    for line in body.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        push_wrapped(&mut out, line);
    }
    out
}

/// Whether the message needs `BODY=8BITMIME`.
pub(super) fn is_8bit(text: &str) -> bool {
    !text.is_ascii()
}

/// The DATA payload: every line starting with `.` gets a second one (RFC 5321 4.5.2), then
/// the terminating `.` line.
pub(super) fn dot_stuffed(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 16);
    for line in text.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push(b'.');
        }
        out.extend_from_slice(line.as_bytes());
    }
    if !text.is_empty() && !text.ends_with("\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// `<local@domain>`, stable for one message id so a relay or client can recognise a retry
/// as the same message; the domain is the sender's.
pub(super) fn message_id(id: &str, from: &str) -> String {
    let domain = from
        .rsplit_once('@')
        .map(|(_, domain)| domain)
        .filter(|domain| !domain.is_empty())
        .unwrap_or("tenantwatch.invalid");
    format!("<tw.{}@{domain}>", safe_token(id))
}

/// A header token: printable ASCII only.
fn token(value: &str) -> String {
    value.chars().filter(char::is_ascii_graphic).collect()
}

/// Appends `line` plus CRLF, split into pieces of at most 998 bytes on character boundaries.
fn push_wrapped(out: &mut String, mut line: &str) {
    while line.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = line.split_at(cut);
        out.push_str(head);
        out.push_str("\r\n");
        line = tail;
    }
    out.push_str(line);
    out.push_str("\r\n");
}

/// RFC 5322 `date-time` in UTC, e.g. `Wed, 18 Nov 2026 11:06:40 +0000`.
pub(super) fn rfc5322_date(at: Timestamp) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.as_millis().div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = usize::try_from(days.rem_euclid(7))
        .ok()
        .and_then(|i| WEEKDAYS.get(i))
        .unwrap_or(&"Thu");
    let month_name = usize::try_from(month - 1)
        .ok()
        .and_then(|i| MONTHS.get(i))
        .unwrap_or(&"Jan");
    format!(
        "{weekday}, {day:02} {month_name} {year:04} {:02}:{:02}:{:02} +0000",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Proleptic Gregorian (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let cases = [
            (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
            (951_782_400_000, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_795_000_000_123, "Wed, 18 Nov 2026 11:06:40 +0000"),
        ];
        for (millis, expect) in cases {
            assert_eq!(rfc5322_date(Timestamp(millis)), expect, "{millis}");
        }
    }

    #[test]
    fn dot_stuffing() {
        assert_eq!(
            dot_stuffed("a\r\n.b\r\n..\r\n"),
            b"a\r\n..b\r\n...\r\n.\r\n"
        );
        assert_eq!(dot_stuffed("no newline"), b"no newline\r\n.\r\n");
    }

    #[test]
    fn message_ids() {
        assert_eq!(
            message_id("evt-1", "a@msp.example"),
            "<tw.evt-1@msp.example>"
        );
        assert!(message_id("1:sms", "a@msp.example").ends_with("@msp.example>"));
        assert_eq!(message_id("x", "nodomain"), "<tw.x@tenantwatch.invalid>");
    }

    #[test]
    fn long_lines_are_wrapped() {
        let mut out = String::new();
        push_wrapped(&mut out, &"é".repeat(600));
        for line in out.split_terminator("\r\n") {
            assert!(line.len() <= MAX_LINE_BYTES);
        }
        assert_eq!(out.replace("\r\n", ""), "é".repeat(600));
    }
}
