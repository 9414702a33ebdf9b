//! The `smtp_rcpt` check in real conversations with the EOP-like simulator on loopback: every
//! verdict here comes from DNS lookups against `tw_sim::dns` and an SMTP session (STARTTLS
//! included) against `tw_sim::smtp`, run through `tw_probe::run_job` from a parsed config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/sims.rs"]
mod support;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tw_core::{CheckKind, Direction, Observation, Reason, Status};
use tw_probe::ProbeMemory;
use tw_sim::dns::DnsFault;
use tw_sim::smtp::{RcptBehaviour, SmtpFault, SmtpStep};

use support::{lines, only, run_check, smtp_evidence, tenant, Cert, Sims, HELO, MAIL_FROM};

const DOMAIN: &str = "contoso.com";
const ADMIN: &str = "admin@contoso.com";
const MX_HOST: &str = "contoso-com.mail.protection.outlook.com";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Sims serving `contoso.com` as a Microsoft 365 domain.
async fn contoso(cert: Cert) -> Sims {
    let sims = Sims::start_with(cert).await;
    sims.dns.add_microsoft_365_domain(DOMAIN);
    sims
}

/// Runs the `smtp_rcpt` job for contoso watching `watch`, once.
async fn probe(sims: &Sims, watch: &[&str]) -> Vec<Observation> {
    let config = sims.config(&tenant("contoso", DOMAIN, watch));
    run_check(&config, CheckKind::SmtpRcpt, &ProbeMemory::default()).await
}

async fn probe_admin(sims: &Sims) -> Observation {
    let observation = only(probe(sims, &[ADMIN]).await);
    assert_eq!(observation.check, CheckKind::SmtpRcpt);
    assert_eq!(observation.tenant.as_str(), "contoso");
    assert_eq!(observation.target, ADMIN);
    assert_eq!(observation.status, observation.reason.status());
    observation
}

fn assert_verdict(observation: &Observation, status: Status, reason: Reason) {
    assert_eq!(
        (observation.status, observation.reason),
        (status, reason),
        "{}\n{:#?}",
        observation.summary,
        smtp_evidence(observation).transcript
    );
}

/// The RCPT verdict recorded for `address` (the control when `address` is `None`).
fn rcpt<'a>(observation: &'a Observation, address: Option<&str>) -> &'a tw_core::RcptVerdict {
    smtp_evidence(observation)
        .rcpt
        .iter()
        .find(|r| match address {
            Some(address) => !r.control && r.address == address,
            None => r.control,
        })
        .unwrap_or_else(|| panic!("no RCPT for {address:?} in {observation:#?}"))
}

fn control_address(observation: &Observation) -> String {
    rcpt(observation, None).address.clone()
}

#[tokio::test]
async fn accepted_recipient_is_ok_with_a_full_starttls_transcript() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Ok, Reason::RecipientAccepted);
    assert!(
        observation.summary.contains("250 2.1.5"),
        "{}",
        observation.summary
    );
    let evidence = smtp_evidence(&observation);
    assert_eq!(evidence.mx_host.as_deref(), Some(MX_HOST));
    assert_eq!(
        evidence.peer.as_deref(),
        Some(format!("127.0.0.1:{}", sims.smtp_port).as_str())
    );
    let tls = evidence.tls.as_ref().expect("TLS evidence");
    assert!(tls.established, "{tls:?}");
    assert!(
        tls.protocol
            .as_deref()
            .is_some_and(|p| p.starts_with("TLS")),
        "{tls:?}"
    );
    assert_eq!(tls.error, None);

    let control = control_address(&observation);
    assert!(
        control.starts_with("tw-control-") && control.ends_with("@contoso.com"),
        "{control}"
    );
    let ehlo = format!("EHLO {HELO}");
    let mail = format!("MAIL FROM:<{MAIL_FROM}>");
    let rcpt_admin = format!("RCPT TO:<{ADMIN}>");
    let rcpt_control = format!("RCPT TO:<{control}>");
    assert_eq!(
        lines(evidence, Direction::Client),
        [
            ehlo.as_str(),
            "STARTTLS",
            ehlo.as_str(),
            mail.as_str(),
            rcpt_admin.as_str(),
            rcpt_control.as_str(),
            "RSET",
            "QUIT",
        ]
    );
    let server = lines(evidence, Direction::Server);
    assert!(
        server[0].starts_with(&format!("220 {}", support::BANNER)),
        "{server:?}"
    );
    assert!(
        server.contains(&"220 2.0.0 SMTP server ready"),
        "{server:?}"
    );
    assert!(server.contains(&"250 2.1.5 Recipient OK"), "{server:?}");
    assert_eq!(
        server.last(),
        Some(&"221 2.0.0 Service closing transmission channel")
    );
    assert!(
        lines(evidence, Direction::Note)
            .iter()
            .any(|note| note.starts_with("TLS established") && note.contains(MX_HOST)),
        "{:?}",
        evidence.transcript
    );

    let admin = rcpt(&observation, Some(ADMIN));
    assert_eq!(
        (admin.code, admin.enhanced.as_deref()),
        (Some(250), Some("2.1.5"))
    );
    let control = rcpt(&observation, None);
    assert_eq!(
        (control.code, control.enhanced.as_deref()),
        (Some(550), Some("5.4.1"))
    );
    assert!(control.text.contains("Access denied"), "{}", control.text);

    assert_eq!(
        sims.smtp.rcpt_log(),
        [ADMIN.to_owned(), control.address.clone()]
    );
    assert_eq!(sims.smtp.sessions(), 1);
    assert!(!sims.smtp.saw_data(), "a probe must never send DATA");
}

#[tokio::test]
async fn dbeb_rejection_of_a_watched_address_is_critical_recipient_not_found() {
    let sims = contoso(Cert::Trusted).await;
    // Nothing set: the simulator answers every recipient with the DBEB 550 5.4.1.

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Critical, Reason::RecipientNotFound);
    assert!(
        observation
            .summary
            .contains("550 5.4.1 Recipient address rejected: Access denied"),
        "{}",
        observation.summary
    );
    let admin = rcpt(&observation, Some(ADMIN));
    assert_eq!(
        (admin.code, admin.enhanced.as_deref()),
        (Some(550), Some("5.4.1"))
    );
    assert!(admin.text.contains("AS(201806281)"), "{}", admin.text);
    let control = rcpt(&observation, None);
    assert_eq!(
        (control.code, control.enhanced.as_deref()),
        (Some(550), Some("5.4.1"))
    );
    assert!(smtp_evidence(&observation)
        .tls
        .as_ref()
        .is_some_and(|t| t.established));
    assert!(!sims.smtp.saw_data());
}

#[tokio::test]
async fn multi_line_5_1_10_rejection_is_critical_with_both_lines_in_the_transcript() {
    let sims = contoso(Cert::Trusted).await;
    let first =
        "550-5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup";
    let second = "550 5.1.10 Recipient admin@contoso.com not found";
    sims.smtp
        .set_recipient(ADMIN, RcptBehaviour::Reply(format!("{first}\n{second}")));

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Critical, Reason::RecipientNotFound);
    assert!(
        observation
            .summary
            .contains("550 5.1.10 RESOLVER.ADR.RecipientNotFound"),
        "{}",
        observation.summary
    );
    let admin = rcpt(&observation, Some(ADMIN));
    assert_eq!(
        (admin.code, admin.enhanced.as_deref()),
        (Some(550), Some("5.1.10"))
    );
    assert!(
        admin.text.contains("RecipientNotFound") && admin.text.contains("not found"),
        "{}",
        admin.text
    );
    let server = lines(smtp_evidence(&observation), Direction::Server);
    let at = server
        .iter()
        .position(|l| *l == first)
        .expect("first line in transcript");
    assert_eq!(server.get(at + 1), Some(&second));
}

#[tokio::test]
async fn relay_access_denied_is_critical_domain_not_accepted() {
    let sims = contoso(Cert::Trusted).await;
    let other = "it@contoso.com";
    // The simulator cannot script a default reply other than DBEB, so the control address
    // gets the DBEB 5.4.1; every watched address gets EOP's "Relay Access Denied".
    for address in [ADMIN, other] {
        sims.smtp.set_recipient(
            address,
            RcptBehaviour::Reply("550 5.4.1 Relay Access Denied [DB5EUR01FT088.eop-EUR01.prod.protection.outlook.com]".to_owned()),
        );
    }

    let observations = probe(&sims, &[ADMIN, other]).await;

    assert_eq!(observations.len(), 2);
    for observation in &observations {
        assert_verdict(observation, Status::Critical, Reason::DomainNotAccepted);
        assert!(
            observation.summary.contains("domain not accepted"),
            "{}",
            observation.summary
        );
        let watched = rcpt(observation, Some(&observation.target));
        assert_eq!(
            (watched.code, watched.enhanced.as_deref()),
            (Some(550), Some("5.4.1"))
        );
        assert!(watched.text.contains("Relay Access Denied"));
    }
    assert_eq!(sims.smtp.sessions(), 1);
}

#[tokio::test]
async fn accepted_control_address_makes_the_verdict_unknown_accepts_all_recipients() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_accept_all(true);

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::AcceptsAllRecipients);
    assert!(
        observation
            .summary
            .contains("domain accepts all recipients"),
        "{}",
        observation.summary
    );
    let control = rcpt(&observation, None);
    assert_eq!(
        (control.code, control.enhanced.as_deref()),
        (Some(250), Some("2.1.5"))
    );
    assert_eq!(rcpt(&observation, Some(ADMIN)).code, Some(250));
}

#[tokio::test]
async fn blocked_probe_source_is_unknown_probe_source_blocked() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_recipient(
        ADMIN,
        RcptBehaviour::Reply(
            "550 5.7.606 Access denied, banned sending IP [127.0.0.1]. To request removal from this list please visit https://sender.office.com/".to_owned(),
        ),
    );

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::ProbeSourceBlocked);
    assert!(
        observation.summary.contains("550 5.7.606"),
        "{}",
        observation.summary
    );
    let admin = rcpt(&observation, Some(ADMIN));
    assert_eq!(
        (admin.code, admin.enhanced.as_deref()),
        (Some(550), Some("5.7.606"))
    );
}

#[tokio::test]
async fn temporary_rcpt_failure_is_unknown_temporary_failure() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_recipient(
        ADMIN,
        RcptBehaviour::Reply("450 4.2.1 Mailbox temporarily unavailable".to_owned()),
    );

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::TemporaryFailure);
    assert!(
        observation.summary.contains("450 4.2.1"),
        "{}",
        observation.summary
    );
    let admin = rcpt(&observation, Some(ADMIN));
    assert_eq!(
        (admin.code, admin.enhanced.as_deref()),
        (Some(450), Some("4.2.1"))
    );
    // The session still ends politely.
    let client = lines(smtp_evidence(&observation), Direction::Client);
    assert_eq!(client[client.len() - 2..], ["RSET", "QUIT"]);
}

#[tokio::test]
async fn other_permanent_rcpt_reply_is_unknown_unexpected_reply() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_recipient(
        ADMIN,
        RcptBehaviour::Reply("550 Mailbox unavailable".to_owned()),
    );

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::UnexpectedReply);
    assert!(
        observation.summary.contains("550 Mailbox unavailable"),
        "{}",
        observation.summary
    );
    let admin = rcpt(&observation, Some(ADMIN));
    assert_eq!((admin.code, admin.enhanced.as_deref()), (Some(550), None));
}

#[tokio::test]
async fn greeting_421_is_unknown_temporary_failure_without_rcpt() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_fault(SmtpFault::Greeting(
        "421 4.3.2 Service not available, closing transmission channel".to_owned(),
    ));

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::TemporaryFailure);
    assert!(
        observation.summary.contains("greeting answered 421 4.3.2"),
        "{}",
        observation.summary
    );
    let evidence = smtp_evidence(&observation);
    assert!(evidence.rcpt.is_empty(), "{:?}", evidence.rcpt);
    assert!(lines(evidence, Direction::Client).is_empty());
    assert_eq!(
        lines(evidence, Direction::Server),
        ["421 4.3.2 Service not available, closing transmission channel"]
    );
    assert!(sims.smtp.rcpt_log().is_empty());
}

#[tokio::test]
async fn untrusted_certificate_is_unknown_tls_failed_with_the_tls_error() {
    let sims = contoso(Cert::Untrusted).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::TlsFailed);
    let evidence = smtp_evidence(&observation);
    let tls = evidence.tls.as_ref().expect("TLS evidence");
    assert!(!tls.established);
    assert_eq!(tls.protocol, None);
    let error = tls.error.as_deref().expect("TLS error");
    assert!(error.contains("certificate"), "{error}");
    assert!(
        observation.summary.contains(error),
        "{}",
        observation.summary
    );
    assert!(
        lines(evidence, Direction::Note)
            .iter()
            .any(|n| n.contains("TLS handshake with") && n.contains(error)),
        "{:?}",
        evidence.transcript
    );
    // Nothing is asked over a connection that could not be verified.
    assert!(evidence.rcpt.is_empty());
    assert_eq!(lines(evidence, Direction::Client).last(), Some(&"STARTTLS"));
    assert!(sims.smtp.rcpt_log().is_empty());
}

#[tokio::test]
async fn tarpit_ends_unknown_within_timeout() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_fault(SmtpFault::Tarpit);

    let start = Instant::now();
    let observation = probe_admin(&sims).await;
    let took = start.elapsed();

    assert_verdict(&observation, Status::Unknown, Reason::Timeout);
    assert!(
        took >= PROBE_TIMEOUT - Duration::from_millis(100),
        "ended early: {took:?}"
    );
    assert!(
        took < PROBE_TIMEOUT + Duration::from_secs(1),
        "took {took:?}"
    );
    assert!(observation.elapsed < PROBE_TIMEOUT + Duration::from_secs(1));
    let evidence = smtp_evidence(&observation);
    let notes = lines(evidence, Direction::Note);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("connected to 127.0.0.1")),
        "{notes:?}"
    );
    assert_eq!(notes.last(), Some(&"probe deadline reached"));
    assert!(lines(evidence, Direction::Server).is_empty());
    assert_eq!(sims.smtp.sessions(), 1);
}

#[tokio::test]
async fn connection_dropped_at_any_step_is_unknown_never_critical() {
    let sims = contoso(Cert::Trusted).await;
    // The step the server hangs up after, the client line the probe sent last, and how the
    // hang-up shows: a plain FIN before STARTTLS, a TCP close without TLS close_notify after.
    let cases = [
        (
            SmtpStep::Ehlo,
            "EHLO probe.msp.example",
            "connection closed by server",
        ),
        (
            SmtpStep::StartTls,
            "STARTTLS",
            "connection closed by server",
        ),
        (
            SmtpStep::Mail,
            "MAIL FROM:<probe@msp.example>",
            "read failed: peer closed connection without sending TLS close_notify",
        ),
        (
            SmtpStep::Rcpt,
            "RCPT TO:<admin@contoso.com>",
            "read failed: peer closed connection without sending TLS close_notify",
        ),
    ];
    for (step, last_sent, last_note) in cases {
        sims.smtp.set_fault(SmtpFault::DropAfter(step));

        let observation = probe_admin(&sims).await;

        assert_verdict(&observation, Status::Unknown, Reason::ConnectionDropped);
        assert!(
            observation.summary.contains(last_sent),
            "{step:?}: {}",
            observation.summary
        );
        let evidence = smtp_evidence(&observation);
        assert_eq!(
            lines(evidence, Direction::Client).last(),
            Some(&last_sent),
            "{step:?}"
        );
        let notes = lines(evidence, Direction::Note);
        assert!(
            notes.last().is_some_and(|note| note.starts_with(last_note)),
            "{step:?}: {notes:?}"
        );
        assert!(evidence.rcpt.is_empty(), "{step:?}: {:?}", evidence.rcpt);
    }
    assert_eq!(sims.smtp.sessions(), 4);
    // Only the last case got as far as RCPT.
    assert_eq!(sims.smtp.rcpt_log(), [ADMIN]);
    assert!(!sims.smtp.saw_data());
}

#[tokio::test]
async fn refused_connection_is_unknown_connect_failed() {
    let mut sims = contoso(Cert::Trusted).await;
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    sims.smtp_port = closed.local_addr().unwrap().port();
    drop(closed);

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::ConnectFailed);
    let peer = format!("127.0.0.1:{}", sims.smtp_port);
    assert!(
        observation.summary.contains(MX_HOST) && observation.summary.contains(&peer),
        "{}",
        observation.summary
    );
    let evidence = smtp_evidence(&observation);
    assert_eq!(evidence.mx_host.as_deref(), Some(MX_HOST));
    assert_eq!(evidence.peer.as_deref(), Some(peer.as_str()));
    assert!(
        lines(evidence, Direction::Note)
            .iter()
            .any(|n| n.starts_with(&format!("connect to {peer} failed"))),
        "{:?}",
        evidence.transcript
    );
    assert!(evidence.tls.is_none() && evidence.rcpt.is_empty());
    assert_eq!(sims.smtp.sessions(), 0);
}

#[tokio::test]
async fn domain_without_mx_is_unknown_mx_unresolvable() {
    let sims = contoso(Cert::Trusted).await;
    sims.dns.remove(DOMAIN, "MX");

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::MxUnresolvable);
    assert!(
        observation.summary.contains("contoso.com has no MX record"),
        "{}",
        observation.summary
    );
    let evidence = smtp_evidence(&observation);
    assert_eq!(evidence.mx_host, None);
    assert!(evidence.transcript.is_empty() && evidence.rcpt.is_empty());
    assert_eq!(sims.smtp.sessions(), 0);
}

#[tokio::test]
async fn servfail_for_the_mx_is_unknown_mx_unresolvable_and_says_the_lookup_failed() {
    let sims = contoso(Cert::Trusted).await;
    sims.dns.set_fault(DnsFault::ServFail);

    let observation = probe_admin(&sims).await;

    assert_verdict(&observation, Status::Unknown, Reason::MxUnresolvable);
    assert!(
        observation
            .summary
            .starts_with("MX lookup for contoso.com failed")
            && observation.summary.contains("ServFail"),
        "{}",
        observation.summary
    );
    assert_eq!(sims.smtp.sessions(), 0);
}

#[tokio::test]
async fn several_watched_addresses_share_one_session_and_get_their_own_verdicts() {
    let sims = contoso(Cert::Trusted).await;
    let gone = "former@contoso.com";
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);
    // `gone` is not set: DBEB rejects it like the control address.

    let observations = probe(&sims, &[ADMIN, gone]).await;

    assert_eq!(observations.len(), 2);
    let admin = &observations[0];
    let former = &observations[1];
    assert_eq!(admin.target, ADMIN);
    assert_verdict(admin, Status::Ok, Reason::RecipientAccepted);
    assert_eq!(former.target, gone);
    assert_verdict(former, Status::Critical, Reason::RecipientNotFound);
    // One session, so both carry the same evidence: three RCPTs, the control last.
    assert_eq!(admin.evidence, former.evidence);
    let evidence = smtp_evidence(admin);
    let sent: Vec<(&str, bool, Option<u16>)> = evidence
        .rcpt
        .iter()
        .map(|r| (r.address.as_str(), r.control, r.code))
        .collect();
    let control = control_address(admin);
    assert_eq!(
        sent,
        [
            (ADMIN, false, Some(250)),
            (gone, false, Some(550)),
            (control.as_str(), true, Some(550)),
        ]
    );
    assert_eq!(sims.smtp.sessions(), 1);
    assert_eq!(sims.smtp.rcpt_log(), [ADMIN, gone, control.as_str()]);
    assert!(!sims.smtp.saw_data());
}

#[tokio::test]
async fn each_session_uses_a_fresh_control_address() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::Accept);

    let first = control_address(&probe_admin(&sims).await);
    let second = control_address(&probe_admin(&sims).await);

    assert_ne!(first, second);
    assert_eq!(sims.smtp.sessions(), 2);
}

#[tokio::test]
async fn exchange_online_mx_without_starttls_is_unknown_tls_failed_and_nothing_is_asked() {
    let sims = contoso(Cert::NoStartTls).await;
    sims.smtp.set_recipient(ADMIN, RcptBehaviour::RejectUnknown);

    let observation = probe_admin(&sims).await;

    // A stripped STARTTLS could carry forged replies either way: no verdict from it.
    assert_verdict(&observation, Status::Unknown, Reason::TlsFailed);
    assert!(
        observation.summary.contains("did not offer STARTTLS"),
        "{}",
        observation.summary
    );
    let evidence = smtp_evidence(&observation);
    assert_eq!(
        evidence.tls.as_ref().and_then(|tls| tls.error.as_deref()),
        Some("STARTTLS not offered")
    );
    assert!(evidence.rcpt.is_empty(), "{:?}", evidence.rcpt);
    assert!(sims.smtp.rcpt_log().is_empty());
}

#[tokio::test]
async fn long_replies_are_kept_bounded_and_an_overlong_line_is_unknown_protocol_error() {
    let sims = contoso(Cert::Trusted).await;
    sims.smtp.set_recipient(
        ADMIN,
        RcptBehaviour::Reply(format!("550 5.1.1 {}", "x".repeat(1_900))),
    );

    // 1,900 bytes fit in a line (2,048) but the kept reply text is capped at 1 KiB and each
    // transcript line at 512 bytes.
    let admin = probe_admin(&sims).await;
    assert_verdict(&admin, Status::Critical, Reason::RecipientNotFound);
    assert!(rcpt(&admin, Some(ADMIN)).text.len() <= 1_024 + '…'.len_utf8());
    assert!(smtp_evidence(&admin)
        .transcript
        .iter()
        .all(|line| line.line.len() <= 512 + '…'.len_utf8()));

    // 4,000 bytes on one line is refused outright, and the address gets no verdict from it.
    sims.smtp.set_recipient(
        ADMIN,
        RcptBehaviour::Reply(format!("250 2.1.5 {}", "y".repeat(4_000))),
    );
    let refused = probe_admin(&sims).await;
    assert_verdict(&refused, Status::Unknown, Reason::ProtocolError);
    assert!(
        refused.summary.contains("reply line too long"),
        "{}",
        refused.summary
    );
}
