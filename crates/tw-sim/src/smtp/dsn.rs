//! The non-delivery report (NDR) Exchange Online mails back to the envelope sender when it
//! accepted a recipient at RCPT but cannot deliver to it afterwards: an RFC 3464 delivery
//! status notification with `550 5.1.10 RESOLVER.ADR.RecipientNotFound` (reference §4.5).
//!
//! The shape follows real Exchange Online NDRs: `multipart/report; report-type=delivery-status`
//! holding a human part (`multipart/alternative`, text and HTML), the `message/delivery-status`
//! part with `Reporting-MTA: dns;<mailbox server>.prod.outlook.com`, and the original message's
//! headers as `text/rfc822-headers`. Probes parse this without the simulator's help, so the
//! structure is written out here by hand rather than through a MIME library.

use super::clock::UtcTime;

/// The mailbox server Exchange Online names as the reporting MTA.
pub const EXCHANGE_REPORTING_MTA: &str = "AM0PR01MB1234.eurprd01.prod.outlook.com";

/// What an NDR is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NdrRequest {
    /// The envelope sender of the original message, to which the NDR goes.
    pub to: String,
    /// The recipient that could not be delivered to.
    pub recipient: String,
    /// The original message's header block (up to the blank line), as received.
    pub original_headers: String,
    /// `ENVID` from the original `MAIL FROM`, echoed as `Original-Envelope-Id`.
    pub envelope_id: Option<String>,
    /// The SMTP client that handed the original message over (`Received-From-MTA`).
    pub received_from: String,
}

/// The Exchange Online NDR for `request`, CRLF line endings, ready for a mailbox.
pub fn exchange_online_ndr(request: &NdrRequest) -> String {
    let now = UtcTime::now();
    let boundary = format!("_{:032x}_", fastrand::u128(..));
    let alternative = format!("_{:032x}_", fastrand::u128(..));
    let message_id = format!(
        "<{:016x}.{:08x}@{EXCHANGE_REPORTING_MTA}>",
        fastrand::u64(..),
        fastrand::u32(..)
    );
    let (local, domain) = request
        .recipient
        .rsplit_once('@')
        .unwrap_or((request.recipient.as_str(), ""));
    let diagnostic =
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup";
    let original_subject = header_value(&request.original_headers, "Subject").unwrap_or_default();
    let original_id = header_value(&request.original_headers, "Message-ID");
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push_str("\r\n");
    };
    line("Return-Path: <>");
    line(&format!(
        "Received: from {EXCHANGE_REPORTING_MTA} by tw-sim with local delivery; {}",
        now.rfc2822()
    ));
    line(&format!("Delivered-To: {}", request.to));
    line(&format!(
        "From: Microsoft Outlook <postmaster@{}>",
        if domain.is_empty() {
            "outlook.com"
        } else {
            domain
        }
    ));
    line(&format!("To: <{}>", request.to));
    line(&format!("Date: {}", now.rfc2822()));
    line(&format!("Subject: Undeliverable: {original_subject}"));
    line(&format!("Message-ID: {message_id}"));
    if let Some(id) = &original_id {
        line(&format!("In-Reply-To: {id}"));
        line(&format!("References: {id}"));
    }
    line("MIME-Version: 1.0");
    line(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\""
    ));
    line("Content-Language: en-US");
    line("X-MS-Exchange-Message-Is-Ndr:");
    line("Auto-Submitted: auto-replied");
    line("");
    line("This is a MIME-formatted message.");
    line("");
    line(&format!("--{boundary}"));
    line(&format!(
        "Content-Type: multipart/alternative; differences=Content-Type;\r\n\tboundary=\"{alternative}\""
    ));
    line("");
    line(&format!("--{alternative}"));
    line("Content-Type: text/plain; charset=\"us-ascii\"");
    line("Content-Transfer-Encoding: quoted-printable");
    line("");
    line(&format!(
        "Your message to {} couldn't be delivered.",
        request.recipient
    ));
    line(&format!("{local} wasn't found at {domain}."));
    line("");
    line("Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient n=");
    line("ot found by SMTP address lookup'");
    line("");
    line(&format!("--{alternative}"));
    line("Content-Type: text/html; charset=\"us-ascii\"");
    line("Content-Transfer-Encoding: quoted-printable");
    line("");
    line(&format!(
        "<html><body><p>Your message to {} couldn't be delivered.</p></body></html>",
        request.recipient
    ));
    line("");
    line(&format!("--{alternative}--"));
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: message/delivery-status");
    line("");
    line(&format!("Reporting-MTA: dns;{EXCHANGE_REPORTING_MTA}"));
    line(&format!("Received-From-MTA: dns;{}", request.received_from));
    if let Some(envid) = &request.envelope_id {
        line(&format!("Original-Envelope-Id: {envid}"));
    }
    line(&format!("Arrival-Date: {}", now.rfc2822()));
    line("");
    line(&format!("Final-Recipient: rfc822;{}", request.recipient));
    line("Action: failed");
    line("Status: 5.1.10");
    line(&format!("Diagnostic-Code: smtp;{diagnostic}"));
    line(&format!("X-Display-Name: {local}"));
    line("");
    line(&format!("--{boundary}"));
    line("Content-Type: text/rfc822-headers");
    line("");
    for header_line in request.original_headers.lines() {
        line(header_line.trim_end_matches('\r'));
    }
    line("");
    line(&format!("--{boundary}--"));
    out
}

/// The first value of `name` in a header block, unfolded.
fn header_value(headers: &str, name: &str) -> Option<String> {
    let mut found: Option<String> = None;
    for line in headers.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(value) = found.as_mut() {
            if line.starts_with([' ', '\t']) {
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((key, value)) = line.split_once(':') {
            if key.trim().eq_ignore_ascii_case(name) {
                found = Some(value.trim().to_owned());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndr_carries_the_status_the_diagnostic_and_the_original_headers() {
        let ndr = exchange_online_ndr(&NdrRequest {
            to: "bounces@msp.example".into(),
            recipient: "gone@contoso.com".into(),
            original_headers:
                "Subject: probe x\r\nMessage-ID: <x@msp.example>\r\nX-Tenantwatch-Probe: x\r\n"
                    .into(),
            envelope_id: Some("x".into()),
            received_from: "relay.msp.example".into(),
        });
        for expected in [
            "Subject: Undeliverable: probe x\r\n",
            "In-Reply-To: <x@msp.example>\r\n",
            "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=",
            "Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.outlook.com\r\n",
            "Original-Envelope-Id: x\r\n",
            "Final-Recipient: rfc822;gone@contoso.com\r\nAction: failed\r\nStatus: 5.1.10\r\n",
            "Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup\r\n",
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: probe x\r\n",
            "X-Tenantwatch-Probe: x\r\n",
        ] {
            assert!(ndr.contains(expected), "{expected:?} missing from\n{ndr}");
        }
        assert!(!ndr.contains("\n\n"), "bare LF line ending");
    }

    #[test]
    fn header_values_are_unfolded_and_case_insensitive() {
        let headers = "subject: a\r\n b\r\nTo: c\r\n";
        assert_eq!(header_value(headers, "Subject").as_deref(), Some("a b"));
        assert_eq!(header_value(headers, "From"), None);
    }
}
