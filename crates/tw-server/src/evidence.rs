//! Evidence as HTML: the SMTP transcript and reply codes, DNS answers, every HTTP exchange with
//! Microsoft's request and correlation ids and AADSTS codes, the mailflow probe and its DSN.
//!
//! All of it came from the outside world, so all of it goes through [`Html::text`].

use tw_core::{
    Direction, DnsEvidence, Evidence, HttpEvidence, MailflowEvidence, SmtpEvidence, TranscriptLine,
};

use crate::html::{self, Html};

pub(crate) fn render(out: &mut Html, evidence: &Evidence) {
    match evidence {
        Evidence::None => {
            out.raw("<p class=\"muted\">No evidence recorded.</p>");
        }
        Evidence::SmtpRcpt(smtp) => smtp_html(out, smtp),
        Evidence::Dns(dns) => dns_html(out, dns),
        Evidence::Http(http) => http_html(out, http),
        Evidence::Mailflow(mailflow) => mailflow_html(out, mailflow),
    }
}

/// A definition list of the fields that are set.
fn facts(out: &mut Html, rows: &[(&'static str, Option<String>)]) {
    if rows.iter().all(|(_, value)| value.is_none()) {
        return;
    }
    out.raw("<dl class=\"facts\">");
    for (name, value) in rows {
        if let Some(value) = value {
            out.element("dt", &[], name).element("dd", &[], value);
        }
    }
    out.raw("</dl>");
}

fn transcript(out: &mut Html, title: &'static str, lines: &[TranscriptLine]) {
    if lines.is_empty() {
        return;
    }
    out.element("h4", &[], title);
    out.raw("<pre class=\"transcript\">");
    for line in lines {
        let who = match line.direction {
            Direction::Client => "C: ",
            Direction::Server => "S: ",
            Direction::Note => "*  ",
        };
        out.text(&format!("{:>6}ms ", line.at_ms))
            .text(who)
            .text(&line.line)
            .raw("\n");
    }
    out.raw("</pre>");
}

fn list(out: &mut Html, title: &'static str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    out.element("h4", &[], title).raw("<ul>");
    for item in items {
        out.element("li", &[], item);
    }
    out.raw("</ul>");
}

fn opt<T: ToString>(value: &Option<T>) -> Option<String> {
    value.as_ref().map(ToString::to_string)
}

fn smtp_html(out: &mut Html, smtp: &SmtpEvidence) {
    facts(
        out,
        &[
            ("MX host", smtp.mx_host.clone()),
            ("Connected to", smtp.peer.clone()),
            (
                "TLS",
                smtp.tls.as_ref().map(|tls| {
                    let mut text = if tls.established {
                        "established".to_owned()
                    } else {
                        "not established".to_owned()
                    };
                    if let Some(protocol) = &tls.protocol {
                        text.push_str(&format!(" ({protocol})"));
                    }
                    if let Some(error) = &tls.error {
                        text.push_str(&format!(": {error}"));
                    }
                    text
                }),
            ),
        ],
    );
    if !smtp.rcpt.is_empty() {
        out.element("h4", &[], "RCPT replies");
        out.raw("<table class=\"evidence\"><thead><tr><th>address</th><th>code</th><th>enhanced</th><th>reply</th></tr></thead><tbody>");
        for rcpt in &smtp.rcpt {
            out.raw("<tr><td>").text(&rcpt.address);
            if rcpt.control {
                out.raw(" <span class=\"muted\">(control: must not exist)</span>");
            }
            out.raw("</td>")
                .element("td", &[], &opt(&rcpt.code).unwrap_or_default())
                .element("td", &[], rcpt.enhanced.as_deref().unwrap_or(""))
                .element("td", &[], &rcpt.text)
                .raw("</tr>");
        }
        out.raw("</tbody></table>");
    }
    transcript(out, "SMTP transcript", &smtp.transcript);
}

fn dns_html(out: &mut Html, dns: &DnsEvidence) {
    facts(out, &[("Domain", Some(dns.domain.clone()))]);
    if !dns.records.is_empty() {
        out.element("h4", &[], "DNS answers");
        out.raw("<table class=\"evidence\"><thead><tr><th>record</th><th>values</th></tr></thead><tbody>");
        for (label, values) in &dns.records {
            out.raw("<tr>").element("td", &[], label).raw("<td>");
            for (index, value) in values.iter().enumerate() {
                if index > 0 {
                    out.raw("<br>");
                }
                out.text(value);
            }
            out.raw("</td></tr>");
        }
        out.raw("</tbody></table>");
    }
    let errors: Vec<String> = dns
        .lookup_errors
        .iter()
        .map(|(label, error)| format!("{label}: {error}"))
        .collect();
    list(out, "Lookups that failed", &errors);
    let findings: Vec<String> = dns
        .findings
        .iter()
        .map(|finding| {
            format!(
                "{} ({}): {}",
                finding.record, finding.status, finding.message
            )
        })
        .collect();
    list(out, "Findings", &findings);
    list(out, "Changes since the last run", &dns.drift);
}

fn http_html(out: &mut Html, http: &HttpEvidence) {
    if !http.exchanges.is_empty() {
        out.element("h4", &[], "HTTP requests");
        out.raw("<table class=\"evidence\"><thead><tr><th>request</th><th>status</th><th>ms</th><th>error</th><th>AADSTS</th><th>ids</th></tr></thead><tbody>");
        for exchange in &http.exchanges {
            out.raw("<tr><td>")
                .text(&exchange.method)
                .raw(" <code>")
                .text(&exchange.url)
                .raw("</code></td>")
                .element("td", &[], &opt(&exchange.status).unwrap_or_default())
                .element("td", &[], &exchange.elapsed_ms.to_string());
            let error = [exchange.error_code.as_deref(), exchange.error.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": ");
            let retry = exchange
                .retry_after_s
                .map(|s| format!(" (Retry-After {s}s)"))
                .unwrap_or_default();
            out.element("td", &[], &format!("{error}{retry}"));
            let aadsts: Vec<String> = exchange
                .aadsts
                .iter()
                .map(|c| format!("AADSTS{c}"))
                .collect();
            out.element("td", &[], &aadsts.join(" "));
            out.raw("<td class=\"ids\">");
            for (name, value) in [
                ("request-id", &exchange.request_id),
                ("client-request-id", &exchange.client_request_id),
                ("correlation-id", &exchange.correlation_id),
                ("trace-id", &exchange.trace_id),
            ] {
                if let Some(value) = value {
                    out.text(name)
                        .raw(": <code>")
                        .text(value)
                        .raw("</code><br>");
                }
            }
            out.raw("</td></tr>");
        }
        out.raw("</tbody></table>");
    }
    if !http.facts.is_empty() {
        out.element("h4", &[], "What was read");
        out.raw("<dl class=\"facts\">");
        for (name, value) in &http.facts {
            out.element("dt", &[], name).element("dd", &[], value);
        }
        out.raw("</dl>");
    }
    list(out, "Findings", &http.findings);
}

fn mailflow_html(out: &mut Html, mailflow: &MailflowEvidence) {
    facts(
        out,
        &[
            ("Probe tag", Some(mailflow.tag.clone())),
            ("Message-ID", Some(mailflow.message_id.clone())),
            ("MAIL FROM", Some(mailflow.mail_from.clone())),
            ("RCPT TO", Some(mailflow.rcpt_to.clone())),
            ("Relay", Some(mailflow.relay.clone())),
            ("Relay accepted at", mailflow.sent_at.map(html::when)),
            ("Relay reply", mailflow.relay_reply.clone()),
            ("Bounce mailbox", Some(mailflow.mailbox.clone())),
            (
                "Waited",
                Some(format!(
                    "{} ms, {} mailbox searches",
                    mailflow.waited_ms, mailflow.polls
                )),
            ),
        ],
    );
    if let Some(dsn) = &mailflow.dsn {
        out.element("h4", &[], "Delivery status notification");
        facts(
            out,
            &[
                ("Action", Some(dsn.action.clone())),
                ("Status", Some(dsn.status.clone())),
                ("Diagnostic-Code", dsn.diagnostic_code.clone()),
                ("Reporting-MTA", dsn.reporting_mta.clone()),
                ("Remote-MTA", dsn.remote_mta.clone()),
                ("Final-Recipient", dsn.final_recipient.clone()),
                ("Subject", dsn.subject.clone()),
                ("Date", dsn.date.clone()),
                ("Found after", Some(format!("{} ms", dsn.found_after_ms))),
            ],
        );
    }
    transcript(out, "Relay transcript", &mailflow.relay_transcript);
    transcript(out, "IMAP transcript", &mailflow.imap_transcript);
    list(out, "Deleted from the bounce mailbox", &mailflow.deleted);
    list(out, "Findings", &mailflow.findings);
}
