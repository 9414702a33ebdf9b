//! Reading delivery status notifications (RFC 3464) out of raw messages, and what each one
//! says about the recipient.
//!
//! A DSN is `multipart/report; report-type=delivery-status`: a human part, a
//! `message/delivery-status` part of header-like field blocks (per message, then per
//! recipient: `Reporting-MTA`, `Action`, `Status`, `Diagnostic-Code`, `Remote-MTA`), and the
//! original message or its headers (`text/rfc822-headers`, `message/rfc822`). The MIME walk
//! here is small and bounded on purpose: the input comes from any MTA on the internet, so it
//! must never panic, loop or grow without limit, and nothing outside the parts above is read.
//!
//! Only statuses that name the recipient as unknown are critical; see [`classify`].

use tw_core::Reason;

use crate::message::{PROBE_HEADER, TAG_PREFIX};

/// Deepest MIME nesting followed.
const MAX_DEPTH: usize = 6;
/// Most parts looked at in one message.
const MAX_PARTS: usize = 64;
/// Most header fields kept from one block.
const MAX_FIELDS: usize = 500;

/// The fields of one recipient block of a DSN, as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RecipientStatus {
    pub(crate) final_recipient: Option<String>,
    pub(crate) original_recipient: Option<String>,
    pub(crate) action: String,
    pub(crate) status: String,
    pub(crate) diagnostic_code: Option<String>,
    pub(crate) remote_mta: Option<String>,
}

/// A parsed DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Dsn {
    pub(crate) subject: Option<String>,
    pub(crate) date: Option<String>,
    pub(crate) reporting_mta: Option<String>,
    pub(crate) envelope_id: Option<String>,
    pub(crate) recipients: Vec<RecipientStatus>,
    /// Header fields of the original message the DSN returned.
    pub(crate) returned: Vec<(String, String)>,
    /// The DSN's own `In-Reply-To` and `References`, which Exchange sets to the original id.
    pub(crate) references: String,
}

impl Dsn {
    /// Whether this DSN is about the probe message with `tag` and `message_id`.
    pub(crate) fn refers_to(&self, tag: &str, message_id: &str) -> bool {
        self.envelope_id.as_deref() == Some(tag)
            || self.returned_field(PROBE_HEADER).as_deref() == Some(tag)
            || self.returned_field("Message-ID").as_deref() == Some(message_id)
            || self
                .references
                .split_whitespace()
                .any(|id| id == message_id)
    }

    /// The tag of the probe this DSN is about, if it is about one at all.
    pub(crate) fn probe_tag(&self) -> Option<String> {
        if let Some(tag) = self.returned_field(PROBE_HEADER) {
            return tag.starts_with(TAG_PREFIX).then_some(tag);
        }
        if let Some(id) = self
            .envelope_id
            .as_ref()
            .filter(|id| id.starts_with(TAG_PREFIX))
        {
            return Some(id.clone());
        }
        let id = self.returned_field("Message-ID")?;
        let tag = id.strip_prefix('<')?.split('@').next()?;
        tag.starts_with(TAG_PREFIX).then(|| tag.to_owned())
    }

    /// The block for `recipient` (matched on `Final-Recipient` or `Original-Recipient`), else
    /// the first block: a probe message has a single recipient.
    pub(crate) fn for_recipient(&self, recipient: &str) -> Option<&RecipientStatus> {
        let names = |status: &RecipientStatus| {
            [&status.final_recipient, &status.original_recipient]
                .into_iter()
                .flatten()
                .any(|value| address_of(value).eq_ignore_ascii_case(recipient))
        };
        self.recipients
            .iter()
            .find(|status| names(status))
            .or_else(|| self.recipients.first())
    }

    fn returned_field(&self, name: &str) -> Option<String> {
        self.returned
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.trim().to_owned())
    }
}

/// `rfc822; admin@contoso.com` → `admin@contoso.com` (brackets dropped too).
fn address_of(value: &str) -> &str {
    let address = value.split_once(';').map_or(value, |(_, address)| address);
    address.trim().trim_start_matches('<').trim_end_matches('>')
}

/// What a recipient block means for the mailbox, or `None` when it is not a failure at all
/// (`delivered`, `relayed`, `expanded`: success notices some MTAs send).
///
/// * `failed` with 5.1.1 (bad mailbox), 5.1.2 (bad destination system), 5.1.6 (mailbox
///   moved), 5.1.10 (Exchange's `RESOLVER.ADR.RecipientNotFound`, the motivating incident)
///   or 5.4.1 (DBEB's "access denied", or the domain no longer accepted): the recipient is
///   unknown or unresolvable → `mail_bounced` (critical).
/// * `delayed` → `mail_delayed` (warning): mail does not get through yet, nothing says why.
/// * `failed` with a status about the recipient's mailbox, system or route (x.2.0-x.2.2 full
///   or disabled, x.3.0-x.3.3 mail system, other x.4.x routing, loops and expiry, a 4.x.x
///   given up on) → `mail_failed` (warning): mail to the address is lost, but the DSN does
///   not say the address is gone.
/// * `failed` for reasons on the sending side or in policy (x.7.x security and policy, x.5.x
///   protocol, x.6.x content, 5.1.0/5.1.3/5.1.7/5.1.8 and other address statuses, 5.2.3 and
///   5.3.4 size, Exchange's 5.2.12x receive limits) or with a status that cannot be read →
///   `bounce_inconclusive` (unknown): the cause may be our relay, our sender domain or a
///   tenant rule, so it must not page anyone about the mailbox.
pub(crate) fn classify(action: &str, status: &str) -> Option<Reason> {
    let action = action.trim().to_ascii_lowercase();
    match action.as_str() {
        "delivered" | "relayed" | "expanded" => return None,
        "delayed" => return Some(Reason::MailDelayed),
        "failed" => {}
        _ => return Some(Reason::BounceInconclusive),
    }
    let Some((class, subject, detail)) = parse_status(status) else {
        return Some(Reason::BounceInconclusive);
    };
    Some(match (class, subject, detail) {
        (5, 1, 1 | 2 | 6 | 10) | (5, 4, 1) => Reason::MailBounced,
        (4 | 5, 2, 0..=2) | (4 | 5, 3, 0..=3) | (4 | 5, 4, _) => Reason::MailFailed,
        _ => Reason::BounceInconclusive,
    })
}

/// `5.1.10` (possibly followed by a comment) → `(5, 1, 10)`.
pub(crate) fn parse_status(status: &str) -> Option<(u8, u16, u16)> {
    let code = status.split_whitespace().next()?;
    let mut parts = code.split('.');
    let class = parts.next()?;
    let subject = number_of_digits(parts.next()?, 3)?;
    let detail = number_of_digits(parts.next()?, 3)?;
    // RFC 3463: class = "2" / "4" / "5", exactly one digit. `str::parse` alone would also
    // take "05" or "+5", and a mangled "05.1.1" must not read as a bounce (found by the
    // `dsn` fuzz target; regression test `status_codes_follow_the_rfc_3463_grammar`).
    let class = match class {
        "2" => 2,
        "4" => 4,
        "5" => 5,
        _ => return None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some((class, subject, detail))
}

/// `field` as a number when it is 1 to `max_digits` ASCII digits and nothing else.
fn number_of_digits(field: &str, max_digits: usize) -> Option<u16> {
    if field.is_empty() || field.len() > max_digits || !field.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    field.parse().ok()
}

/// Parses `raw` as a DSN; `None` when it is not a delivery-status report.
pub(crate) fn parse(raw: &[u8]) -> Option<Dsn> {
    let text = String::from_utf8_lossy(raw);
    let top = Part::parse(&text);
    let (mime, params) = top.content_type();
    let report_type = params
        .iter()
        .find(|(key, _)| key == "report-type")
        .map(|(_, value)| value.to_ascii_lowercase());
    if mime != "multipart/report" || report_type.as_deref() != Some("delivery-status") {
        return None;
    }
    let mut dsn = Dsn {
        subject: top.header("Subject"),
        date: top.header("Date"),
        references: [top.header("In-Reply-To"), top.header("References")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        ..Dsn::default()
    };
    let mut parts = Vec::new();
    top.descendants(0, &mut parts);
    let mut found_status = false;
    for part in &parts {
        let (mime, _) = part.content_type();
        match mime.as_str() {
            "message/delivery-status" | "message/global-delivery-status" if !found_status => {
                found_status = true;
                read_status_fields(&part.decoded_body(), &mut dsn);
            }
            "text/rfc822-headers" | "message/global-headers" if dsn.returned.is_empty() => {
                dsn.returned = header_block(&part.decoded_body()).0;
            }
            "message/rfc822" | "message/global" if dsn.returned.is_empty() => {
                dsn.returned = header_block(&part.decoded_body()).0;
            }
            _ => {}
        }
    }
    found_status.then_some(dsn)
}

fn read_status_fields(body: &str, dsn: &mut Dsn) {
    let mut blocks = Vec::new();
    let mut rest = body.trim_start_matches(['\r', '\n']);
    while !rest.trim().is_empty() && blocks.len() < MAX_PARTS {
        let (fields, after) = header_block(rest);
        if !fields.is_empty() {
            blocks.push(fields);
        }
        if after.len() == rest.len() {
            break;
        }
        rest = after.trim_start_matches(['\r', '\n']);
    }
    let field = |fields: &[(String, String)], name: &str| {
        fields
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    let mut blocks = blocks.into_iter();
    if let Some(message) = blocks.next() {
        dsn.reporting_mta = field(&message, "Reporting-MTA");
        dsn.envelope_id = field(&message, "Original-Envelope-Id");
    }
    for fields in blocks {
        let (Some(action), Some(status)) = (field(&fields, "Action"), field(&fields, "Status"))
        else {
            continue;
        };
        dsn.recipients.push(RecipientStatus {
            final_recipient: field(&fields, "Final-Recipient"),
            original_recipient: field(&fields, "Original-Recipient"),
            action,
            status,
            diagnostic_code: field(&fields, "Diagnostic-Code"),
            remote_mta: field(&fields, "Remote-MTA"),
        });
    }
}

/// One MIME entity: its header fields and its (still encoded) body.
struct Part {
    headers: Vec<(String, String)>,
    body: String,
}

impl Part {
    fn parse(text: &str) -> Part {
        let (headers, body) = header_block(text);
        Part {
            headers,
            body: body.to_owned(),
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    }

    /// The lower-cased media type (`text/plain` when absent, RFC 2045) and its parameters
    /// with lower-cased names and unquoted values.
    fn content_type(&self) -> (String, Vec<(String, String)>) {
        let Some(value) = self.header("Content-Type") else {
            return ("text/plain".to_owned(), Vec::new());
        };
        let mut pieces = split_unquoted(&value, ';').into_iter();
        let mime = pieces
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        let params = pieces
            .filter_map(|piece| {
                let (key, value) = piece.split_once('=')?;
                let value = value.trim();
                let value = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .map_or_else(|| value.to_owned(), |v| v.replace("\\\"", "\""));
                Some((key.trim().to_ascii_lowercase(), value))
            })
            .collect();
        (mime, params)
    }

    /// This part's children if it is a multipart with a boundary.
    fn children(&self) -> Vec<Part> {
        let (mime, params) = self.content_type();
        if !mime.starts_with("multipart/") {
            return Vec::new();
        }
        let Some(boundary) = params
            .iter()
            .find(|(key, _)| key == "boundary")
            .map(|(_, value)| value.clone())
            .filter(|b| !b.is_empty())
        else {
            return Vec::new();
        };
        let delimiter = format!("--{boundary}");
        let mut parts = Vec::new();
        let mut current: Option<String> = None;
        for line in self.body.split('\n') {
            let bare = line.trim_end_matches('\r').trim_end();
            if bare == delimiter || bare == format!("{delimiter}--") {
                if let Some(text) = current.take() {
                    parts.push(Part::parse(&text));
                }
                if bare != delimiter || parts.len() >= MAX_PARTS {
                    break;
                }
                current = Some(String::new());
            } else if let Some(text) = current.as_mut() {
                text.push_str(line.trim_end_matches('\r'));
                text.push_str("\r\n");
            }
        }
        // A missing close delimiter (a truncated fetch) still yields the last part.
        if let Some(text) = current {
            parts.push(Part::parse(&text));
        }
        parts
    }

    /// Every part below this one, depth-first, bounded.
    fn descendants(&self, depth: usize, out: &mut Vec<Part>) {
        if depth >= MAX_DEPTH {
            return;
        }
        for child in self.children() {
            if out.len() >= MAX_PARTS {
                return;
            }
            let grandchildren_possible = child.content_type().0.starts_with("multipart/");
            if grandchildren_possible {
                child.descendants(depth + 1, out);
            }
            out.push(child);
        }
    }

    fn decoded_body(&self) -> String {
        let encoding = self
            .header("Content-Transfer-Encoding")
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match encoding.as_str() {
            "base64" => String::from_utf8_lossy(&decode_base64_lenient(&self.body)).into_owned(),
            "quoted-printable" => {
                String::from_utf8_lossy(&decode_quoted_printable(&self.body)).into_owned()
            }
            _ => self.body.clone(),
        }
    }
}

/// Header fields up to the first empty line (unfolded), and the rest after that line.
fn header_block(text: &str) -> (Vec<(String, String)>, &str) {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        offset += line.len();
        let bare = line.trim_end_matches(['\r', '\n']);
        if bare.is_empty() {
            return (fields, text.get(offset..).unwrap_or(""));
        }
        if bare.starts_with([' ', '\t']) {
            if let Some((_, value)) = fields.last_mut() {
                value.push(' ');
                value.push_str(bare.trim());
            }
            continue;
        }
        if fields.len() >= MAX_FIELDS {
            continue;
        }
        if let Some((key, value)) = bare.split_once(':') {
            let key = key.trim();
            if !key.is_empty() && !key.contains(' ') {
                fields.push((key.to_owned(), value.trim().to_owned()));
            }
        }
    }
    (fields, "")
}

/// Splits at `separator` outside double quotes.
fn split_unquoted(text: &str, separator: char) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in text.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == separator && !quoted {
            pieces.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    pieces.push(current);
    pieces
}

/// Base64 ignoring anything outside the alphabet (line breaks), stopping at padding.
fn decode_base64_lenient(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut word = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        word = (word << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((word >> bits) as u8);
            word &= (1 << bits) - 1;
        }
    }
    out
}

fn decode_quoted_printable(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        if byte != b'=' {
            out.push(byte);
            i += 1;
            continue;
        }
        let rest = &bytes[i + 1..];
        if rest.starts_with(b"\r\n") {
            i += 3;
        } else if rest.starts_with(b"\n") {
            i += 2;
        } else if let (Some(hi), Some(lo)) = (
            rest.first().and_then(|b| (*b as char).to_digit(16)),
            rest.get(1).and_then(|b| (*b as char).to_digit(16)),
        ) {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests;
