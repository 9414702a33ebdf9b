//! DSN parser tests on real-shaped samples (Exchange Online, Postfix) and malformed input.

use super::*;

const TAG: &str = "twp-1761480005000-5f2c9a0e41d7b3c8";
const MESSAGE_ID: &str = "<twp-1761480005000-5f2c9a0e41d7b3c8@msp.example>";

/// An Exchange Online NDR as it lands in the sender's mailbox (the 5.1.10 case, after
/// EOP accepted the recipient), returning the original message as `message/rfc822`.
fn exchange_ndr() -> String {
    format!(
        "Return-Path: <>\r\n\
Received: from EUR05-AM6-obe.outbound.protection.outlook.com by mail.msp.example; Mon, 26 Oct 2026 12:00:09 +0000\r\n\
From: Microsoft Outlook <postmaster@contoso.onmicrosoft.com>\r\n\
To: <bounces@msp.example>\r\n\
Date: Mon, 26 Oct 2026 12:00:08 +0000\r\n\
Content-Type: multipart/report; report-type=\"delivery-status\";\r\n\
\tboundary=\"_000_AM0PR01MB1234eurprd01prodoutlookcom_\"\r\n\
Subject: Undeliverable: tenantwatch mail-flow probe {TAG}\r\n\
Message-ID: <0b1c2d3e-0000-4000-8000-abcdefabcdef@AM0PR01MB1234.eurprd01.prod.outlook.com>\r\n\
In-Reply-To: {MESSAGE_ID}\r\n\
References: {MESSAGE_ID}\r\n\
MIME-Version: 1.0\r\n\
X-MS-Exchange-Message-Is-Ndr:\r\n\
\r\n\
--_000_AM0PR01MB1234eurprd01prodoutlookcom_\r\n\
Content-Type: multipart/alternative; differences=Content-Type;\r\n\
\tboundary=\"_002_AM0PR01MB1234eurprd01prodoutlookcom_\"\r\n\
\r\n\
--_002_AM0PR01MB1234eurprd01prodoutlookcom_\r\n\
Content-Type: text/plain; charset=\"us-ascii\"\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Your message to ceo@contoso.com couldn't be delivered.\r\n\
ceo wasn't found at contoso.com.\r\n\
\r\n\
--_002_AM0PR01MB1234eurprd01prodoutlookcom_\r\n\
Content-Type: text/html; charset=\"us-ascii\"\r\n\
\r\n\
<html><body>ceo wasn't found at contoso.com.</body></html>\r\n\
--_002_AM0PR01MB1234eurprd01prodoutlookcom_--\r\n\
\r\n\
--_000_AM0PR01MB1234eurprd01prodoutlookcom_\r\n\
Content-Type: message/delivery-status\r\n\
\r\n\
Reporting-MTA: dns;AM0PR01MB1234.eurprd01.prod.outlook.com\r\n\
Received-From-MTA: dns;relay.msp.example\r\n\
Arrival-Date: Mon, 26 Oct 2026 12:00:07 +0000\r\n\
\r\n\
Final-Recipient: rfc822;ceo@contoso.com\r\n\
Action: failed\r\n\
Status: 5.1.10\r\n\
Diagnostic-Code: smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup\r\n\
X-Display-Name: ceo\r\n\
\r\n\
--_000_AM0PR01MB1234eurprd01prodoutlookcom_\r\n\
Content-Type: message/rfc822\r\n\
\r\n\
Date: Mon, 26 Oct 2026 12:00:05 +0000\r\n\
From: tenantwatch <bounces@msp.example>\r\n\
To: <ceo@contoso.com>\r\n\
Subject: tenantwatch mail-flow probe {TAG}\r\n\
Message-ID: {MESSAGE_ID}\r\n\
X-Tenantwatch-Probe: {TAG}\r\n\
\r\n\
This message checks that mail reaches ceo@contoso.com.\r\n\
\r\n\
--_000_AM0PR01MB1234eurprd01prodoutlookcom_--\r\n"
    )
}

/// A Postfix bounce for a recipient DBEB refused, with ENVID echoed and the headers returned.
fn postfix_dsn(action: &str, status: &str, tag: &str) -> String {
    format!(
        "Return-Path: <>\n\
Date: Mon, 26 Oct 2026 12:00:09 +0000 (UTC)\n\
From: MAILER-DAEMON@mail.msp.example (Mail Delivery System)\n\
Subject: Undelivered Mail Returned to Sender\n\
To: bounces@msp.example\n\
Auto-Submitted: auto-replied\n\
MIME-Version: 1.0\n\
Content-Type: multipart/report; report-type=delivery-status;\n\
\tboundary=\"3F2A41C0A2B.1761480009/mail.msp.example\"\n\
Content-Transfer-Encoding: 8bit\n\
Message-Id: <20261026120009.5B1E21C0A2C@mail.msp.example>\n\
\n\
This is a MIME-encapsulated message.\n\
\n\
--3F2A41C0A2B.1761480009/mail.msp.example\n\
Content-Description: Notification\n\
Content-Type: text/plain; charset=utf-8\n\
\n\
<ceo@contoso.com>: host contoso-com.mail.protection.outlook.com[52.101.68.2] said:\n\
\t550 5.4.1 Recipient address rejected: Access denied. AS(201806281)\n\
\n\
--3F2A41C0A2B.1761480009/mail.msp.example\n\
Content-Description: Delivery report\n\
Content-Type: message/delivery-status\n\
\n\
Reporting-MTA: dns; mail.msp.example\n\
X-Postfix-Queue-ID: 3F2A41C0A2B\n\
Original-Envelope-Id: {tag}\n\
Arrival-Date: Mon, 26 Oct 2026 12:00:08 +0000 (UTC)\n\
\n\
Final-Recipient: rfc822; ceo@contoso.com\n\
Original-Recipient: rfc822;ceo@contoso.com\n\
Action: {action}\n\
Status: {status}\n\
Remote-MTA: dns; contoso-com.mail.protection.outlook.com\n\
Diagnostic-Code: smtp; 550 5.4.1 Recipient address rejected: Access denied.\n\
\tAS(201806281) [AM4PEPF00027A5F.eurprd04.prod.outlook.com\n\
\t2026-10-26T12:00:09.123Z 08DD59CA63652EED]\n\
\n\
--3F2A41C0A2B.1761480009/mail.msp.example\n\
Content-Description: Undelivered Message Headers\n\
Content-Type: text/rfc822-headers\n\
\n\
Return-Path: <bounces@msp.example>\n\
Message-ID: <{tag}@msp.example>\n\
X-Tenantwatch-Probe: {tag}\n\
Subject: tenantwatch mail-flow probe {tag}\n\
\n\
--3F2A41C0A2B.1761480009/mail.msp.example--\n"
    )
}

#[test]
fn exchange_online_ndr_is_read_and_matched_to_its_probe() {
    let dsn = parse(exchange_ndr().as_bytes()).expect("a DSN");
    assert_eq!(
        dsn.reporting_mta.as_deref(),
        Some("dns;AM0PR01MB1234.eurprd01.prod.outlook.com")
    );
    assert_eq!(dsn.envelope_id, None);
    assert_eq!(
        dsn.subject.as_deref(),
        Some(format!("Undeliverable: tenantwatch mail-flow probe {TAG}").as_str())
    );
    let status = dsn.for_recipient("CEO@contoso.com").expect("a recipient");
    assert_eq!(status.action, "failed");
    assert_eq!(status.status, "5.1.10");
    assert_eq!(
        status.diagnostic_code.as_deref(),
        Some("smtp;550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup")
    );
    assert_eq!(status.remote_mta, None);
    assert!(dsn.refers_to(TAG, MESSAGE_ID));
    assert_eq!(dsn.probe_tag().as_deref(), Some(TAG));
    assert!(!dsn.refers_to(
        "twp-1-0000000000000000",
        "<twp-1-0000000000000000@msp.example>"
    ));
    assert_eq!(
        classify(&status.action, &status.status),
        Some(Reason::MailBounced)
    );
}

#[test]
fn postfix_dsn_with_folded_diagnostic_and_envid() {
    let dsn = parse(postfix_dsn("failed", "5.4.1", TAG).as_bytes()).expect("a DSN");
    assert_eq!(dsn.reporting_mta.as_deref(), Some("dns; mail.msp.example"));
    assert_eq!(dsn.envelope_id.as_deref(), Some(TAG));
    let status = &dsn.recipients[0];
    assert_eq!(
        status.final_recipient.as_deref(),
        Some("rfc822; ceo@contoso.com")
    );
    assert_eq!(
        status.remote_mta.as_deref(),
        Some("dns; contoso-com.mail.protection.outlook.com")
    );
    assert_eq!(
        status.diagnostic_code.as_deref(),
        Some("smtp; 550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [AM4PEPF00027A5F.eurprd04.prod.outlook.com 2026-10-26T12:00:09.123Z 08DD59CA63652EED]")
    );
    assert!(dsn.refers_to(TAG, MESSAGE_ID));
    assert_eq!(classify("failed", "5.4.1"), Some(Reason::MailBounced));
}

#[test]
fn a_dsn_about_another_probe_is_not_ours_even_when_our_tag_is_in_its_text() {
    let other = "twp-1761480001000-0000000000000001";
    let text = postfix_dsn("failed", "5.1.10", other).replace(
        "This is a MIME-encapsulated message.",
        &format!("This is a MIME-encapsulated message about {TAG}."),
    );
    let dsn = parse(text.as_bytes()).expect("a DSN");
    assert!(!dsn.refers_to(TAG, MESSAGE_ID));
    assert!(dsn.refers_to(other, &format!("<{other}@msp.example>")));
    assert_eq!(dsn.probe_tag().as_deref(), Some(other));
}

#[test]
fn base64_delivery_status_and_returned_headers_are_decoded() {
    // "Reporting-MTA: dns; mx.example\r\n\r\nFinal-Recipient: rfc822; a@b.example\r\nAction: delayed\r\nStatus: 4.4.7\r\n"
    let status = "UmVwb3J0aW5nLU1UQTogZG5zOyBteC5leGFtcGxlDQoNCkZpbmFsLVJlY2lwaWVudDogcmZjODIy\r\nOyBhQGIuZXhhbXBsZQ0KQWN0aW9uOiBkZWxheWVkDQpTdGF0dXM6IDQuNC43DQo=\r\n";
    let text = format!(
        "Content-Type: multipart/report; boundary=b; report-type=DELIVERY-STATUS\r\n\r\n\
--b\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n{status}\
--b\r\nContent-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
X-Tenantwatch-Probe: =\r\n{TAG}\r\n\r\n--b--\r\n"
    );
    let dsn = parse(text.as_bytes()).expect("a DSN");
    assert_eq!(dsn.reporting_mta.as_deref(), Some("dns; mx.example"));
    assert_eq!(dsn.recipients[0].action, "delayed");
    assert_eq!(dsn.recipients[0].status, "4.4.7");
    assert!(dsn.refers_to(TAG, MESSAGE_ID));
    assert_eq!(classify("delayed", "4.4.7"), Some(Reason::MailDelayed));
}

#[test]
fn statuses_are_classified_by_what_they_say_about_the_recipient() {
    let cases = [
        ("failed", "5.1.10", Some(Reason::MailBounced)),
        ("failed", "5.1.1", Some(Reason::MailBounced)),
        (
            "Failed",
            "5.1.2 (bad destination system)",
            Some(Reason::MailBounced),
        ),
        ("failed", "5.1.6", Some(Reason::MailBounced)),
        ("failed", "5.4.1", Some(Reason::MailBounced)),
        ("failed", "5.2.2", Some(Reason::MailFailed)),
        ("failed", "5.4.6", Some(Reason::MailFailed)),
        ("failed", "5.4.300", Some(Reason::MailFailed)),
        ("failed", "4.4.7", Some(Reason::MailFailed)),
        ("failed", "5.3.0", Some(Reason::MailFailed)),
        ("failed", "5.7.1", Some(Reason::BounceInconclusive)),
        ("failed", "5.7.509", Some(Reason::BounceInconclusive)),
        ("failed", "5.7.133", Some(Reason::BounceInconclusive)),
        ("failed", "5.1.8", Some(Reason::BounceInconclusive)),
        ("failed", "5.1.3", Some(Reason::BounceInconclusive)),
        ("failed", "5.1.0", Some(Reason::BounceInconclusive)),
        ("failed", "5.2.121", Some(Reason::BounceInconclusive)),
        ("failed", "5.3.4", Some(Reason::BounceInconclusive)),
        ("failed", "5.6.0", Some(Reason::BounceInconclusive)),
        ("failed", "4.7.500", Some(Reason::BounceInconclusive)),
        ("failed", "five", Some(Reason::BounceInconclusive)),
        ("failed", "7.1.1", Some(Reason::BounceInconclusive)),
        ("failed", "5.1", Some(Reason::BounceInconclusive)),
        ("delayed", "4.4.1", Some(Reason::MailDelayed)),
        ("delivered", "2.0.0", None),
        ("relayed", "2.0.0", None),
        ("exploded", "5.1.1", Some(Reason::BounceInconclusive)),
    ];
    for (action, status, expected) in cases {
        assert_eq!(classify(action, status), expected, "{action} {status}");
    }
}

/// Regression for a `dsn` fuzz finding: `str::parse` took "05" as class 5, so a mangled
/// `Status:05.1.1` read as a bounce. RFC 3463 allows exactly one digit for the class and one
/// to three digits for subject and detail.
#[test]
fn status_codes_follow_the_rfc_3463_grammar() {
    for status in [
        "05.1.1",
        "+5.1.1",
        "5.+1.1",
        "5.1.+1",
        "5.01.0001",
        "5.1.1000",
        "5..1",
        "5.1.",
        " .1.1",
        "5.1.1.1",
        "55.1.1",
        "٥.1.1",
    ] {
        assert_eq!(parse_status(status), None, "{status:?}");
        assert_eq!(
            classify("failed", status),
            Some(Reason::BounceInconclusive),
            "{status:?}"
        );
    }
    assert_eq!(parse_status("5.1.10"), Some((5, 1, 10)));
    assert_eq!(parse_status("4.7.500 (policy)"), Some((4, 7, 500)));
    assert_eq!(parse_status("5.001.1"), Some((5, 1, 1)));
    // The shape of the fuzzer's input: a Postfix DSN whose status lost its space and gained a 0.
    let fuzzed = postfix_dsn("failed", "5.1.1", TAG).replace("Status: 5.1.1", "Status:05.1.1");
    let dsn = parse(fuzzed.as_bytes()).expect("still a DSN");
    assert_eq!(dsn.recipients[0].status, "05.1.1");
    assert_eq!(
        classify(&dsn.recipients[0].action, &dsn.recipients[0].status),
        Some(Reason::BounceInconclusive)
    );
}

#[test]
fn messages_that_are_not_dsns_are_none() {
    let plain =
        format!("Subject: Re: probe\r\nIn-Reply-To: {MESSAGE_ID}\r\n\r\nI am out of office.\r\n");
    assert_eq!(parse(plain.as_bytes()), None);
    let other_report = "Content-Type: multipart/report; report-type=disposition-notification; boundary=x\r\n\r\n--x\r\nContent-Type: message/disposition-notification\r\n\r\nDisposition: manual-action/MDN-sent-manually; displayed\r\n--x--\r\n";
    assert_eq!(parse(other_report.as_bytes()), None);
    // A report with no delivery-status part says nothing.
    let empty_report = "Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n";
    assert_eq!(parse(empty_report.as_bytes()), None);
}

#[test]
fn malformed_input_never_panics() {
    let exchange = exchange_ndr();
    let mut samples: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\r\n\r\n".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status\r\n\r\nno boundary".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"unterminated\r\n\r\n--unterminated\r\n".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"\"\r\n\r\n----\r\n".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!====\r\n".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nStatus: =\r\n=Z=\r\n".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n\r\n\r\n\r\nStatus: 5.1.1\r\n :\r\n--x".to_vec(),
        vec![0xff; 300],
        " \t:\r\n: x\r\n\t\r\n".as_bytes().to_vec(),
    ];
    // Truncations of a real NDR at every 97th byte (as a partial fetch would cut it).
    for end in (0..exchange.len()).step_by(97) {
        samples.push(exchange.as_bytes()[..end].to_vec());
    }
    // Nesting far deeper than followed.
    let mut nested = String::from(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=b0\r\n\r\n",
    );
    for depth in 0..200 {
        nested.push_str(&format!(
            "--b{depth}\r\nContent-Type: multipart/mixed; boundary=b{}\r\n\r\n",
            depth + 1
        ));
    }
    samples.push(nested.into_bytes());
    // Many parts.
    let mut wide = String::from(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=w\r\n\r\n",
    );
    for _ in 0..10_000 {
        wide.push_str("--w\r\nContent-Type: text/plain\r\n\r\nx\r\n");
    }
    samples.push(wide.into_bytes());
    for sample in &samples {
        if let Some(dsn) = parse(sample) {
            for recipient in &dsn.recipients {
                let _ = classify(&recipient.action, &recipient.status);
            }
            let _ = dsn.probe_tag();
            let _ = dsn.refers_to(TAG, MESSAGE_ID);
        }
    }
    // The truncated NDR still yields its status once the status part is complete.
    let cut = exchange.find("Content-Type: message/rfc822").unwrap();
    let dsn = parse(&exchange.as_bytes()[..cut]).expect("a DSN");
    assert_eq!(dsn.recipients[0].status, "5.1.10");
}
