//! Pure classification of SMTP replies into verdicts.
//!
//! Codes decide, text does not (Microsoft changes texts without notice). The one exception is
//! EOP's `550 5.4.1`, used both for Directory-Based Edge Blocking ("Access denied", the
//! recipient is gone) and for "Relay Access Denied" (the domain is no longer accepted); the
//! reference distinguishes them only by text, so we do too, and both are critical.

use tw_core::Reason;

/// One parsed server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// RFC 3463 enhanced status code, e.g. `5.1.10`, from the start of the first line.
    pub enhanced: Option<String>,
    /// Reply text, lines joined with a space, code prefixes removed.
    pub text: String,
}

impl Reply {
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply as one line, `550 5.4.1 Recipient address rejected: …`.
    pub fn one_line(&self) -> String {
        format!("{} {}", self.code, self.text)
    }

    fn enhanced_class(&self) -> Option<(u16, u16, u16)> {
        let mut parts = self
            .enhanced
            .as_deref()?
            .split('.')
            .map(|p| p.parse::<u16>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    }
}

/// Extract an enhanced status code (`d.ddd.ddd`, class 2, 4 or 5) from the start of a line.
pub fn parse_enhanced(text: &str) -> Option<String> {
    let token = text.split_whitespace().next()?;
    let mut parts = token.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let digits = |p: &str, max: usize| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit())
    };
    let valid = matches!(class, "2" | "4" | "5")
        && digits(subject, 3)
        && digits(detail, 3)
        && parts.next().is_none();
    valid.then(|| token.to_owned())
}

/// Why a reply that is not a positive answer to RCPT does not show the recipient is gone.
/// Used for replies at any step of the dialogue (greeting, EHLO, MAIL, RCPT).
pub(crate) fn classify_failure(reply: &Reply) -> Reason {
    if reply.is_transient() {
        return Reason::TemporaryFailure;
    }
    match reply.enhanced_class() {
        // 5.7.x: policy. At the probe it is our IP, sender or connector (5.7.1 Spamhaus,
        // 5.7.5xx, 5.7.606-649, 5.7.25, 5.7.64, 5.7.711, ...): the probe is blind, not the tenant.
        Some((5, 7, _)) => Reason::ProbeSourceBlocked,
        _ => Reason::UnexpectedReply,
    }
}

/// What a single RCPT reply says about its address, before the control address is considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptMeaning {
    Accepted,
    /// Positive evidence the recipient (or its domain) is unknown to the receiving side.
    Gone(Reason),
    /// Anything else: the reason it cannot tell.
    CannotTell(Reason),
}

pub fn classify_rcpt(reply: &Reply) -> RcptMeaning {
    if matches!(reply.code, 250 | 251) {
        return RcptMeaning::Accepted;
    }
    if !reply.is_permanent() {
        return RcptMeaning::CannotTell(classify_failure(reply));
    }
    match reply.enhanced_class() {
        // 5.1.1 bad destination mailbox; 5.1.10 RecipientNotFound.
        Some((5, 1, 1)) | Some((5, 1, 10)) => RcptMeaning::Gone(Reason::RecipientNotFound),
        Some((5, 4, 1))
            if reply
                .text
                .to_ascii_lowercase()
                .contains("relay access denied") =>
        {
            RcptMeaning::Gone(Reason::DomainNotAccepted)
        }
        // EOP Directory-Based Edge Blocking: "Recipient address rejected: Access denied".
        Some((5, 4, 1)) => RcptMeaning::Gone(Reason::RecipientNotFound),
        _ => RcptMeaning::CannotTell(classify_failure(reply)),
    }
}

/// The verdict for one watched address, given its reply and the control address's reply.
///
/// A `250` proves something only if the domain rejects a recipient that cannot exist;
/// a rejection proves something only if it is the unknown-recipient kind and the control was
/// rejected too (otherwise the server treats this address specially, which is not "gone").
pub fn classify_watched(watched: &Reply, control: Option<&Reply>) -> (Reason, String) {
    let watched_meaning = classify_rcpt(watched);
    let control_meaning = control.map(classify_rcpt);
    match (watched_meaning, control_meaning) {
        (RcptMeaning::CannotTell(reason), _) => (reason, format!("RCPT answered {}", watched.one_line())),
        (_, Some(RcptMeaning::Accepted)) => (
            Reason::AcceptsAllRecipients,
            format!(
                "domain accepts all recipients: the control address was accepted ({}), so RCPT answered {} proves nothing",
                control.map(Reply::one_line).unwrap_or_default(),
                watched.one_line()
            ),
        ),
        // The control was refused because the domain is not accepted, yet the watched
        // address was taken: contradictory, so no verdict either way.
        (RcptMeaning::Accepted, Some(RcptMeaning::Gone(Reason::DomainNotAccepted))) => (
            Reason::UnexpectedReply,
            format!(
                "contradictory answers: RCPT answered {} but the control address got {}",
                watched.one_line(),
                control.map(Reply::one_line).unwrap_or_default()
            ),
        ),
        (RcptMeaning::Accepted, Some(RcptMeaning::Gone(_))) => {
            (Reason::RecipientAccepted, format!("recipient accepted: {}", watched.one_line()))
        }
        (RcptMeaning::Gone(reason), Some(RcptMeaning::Gone(_))) => {
            let what = if reason == Reason::DomainNotAccepted { "domain not accepted" } else { "recipient not found" };
            (reason, format!("{what}: RCPT answered {}", watched.one_line()))
        }
        (_, Some(RcptMeaning::CannotTell(reason))) => (
            reason,
            format!(
                "control address answered {}: cannot tell whether RCPT {} means anything",
                control.map(Reply::one_line).unwrap_or_default(),
                watched.one_line()
            ),
        ),
        (_, None) => (
            Reason::ConnectionDropped,
            format!("the session ended before the control address was checked (RCPT answered {})", watched.one_line()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use tw_core::Status;

    use super::*;

    fn reply(line: &str) -> Reply {
        let (code, rest) = line.split_at(3);
        let text = rest.trim_start().to_owned();
        Reply {
            code: code.parse().unwrap(),
            enhanced: parse_enhanced(&text),
            text,
        }
    }

    const CONTROL_REJECTED: &str =
        "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)";

    /// watched reply, control reply (None: never sent) → expected reason label.
    fn check(watched: &str, control: Option<&str>, expect: &str) {
        let control = control.map(reply);
        let (reason, summary) = classify_watched(&reply(watched), control.as_ref());
        assert_eq!(
            reason.as_str(),
            expect,
            "{watched} / {control:?}: {summary}"
        );
        assert!(
            summary.contains(&watched[..3]),
            "summary names the reply: {summary}"
        );
    }

    #[test]
    fn rcpt_replies_classify_by_code() {
        let c = Some(CONTROL_REJECTED);
        check("250 2.1.5 Recipient OK", c, "recipient_accepted");
        check(
            "251 2.1.5 User not local; will forward",
            c,
            "recipient_accepted",
        );
        check(
            "550 5.4.1 Recipient address rejected: Access denied. AS(201806281) [DB5EUR01FT088]",
            c,
            "recipient_not_found",
        );
        check(
            "550 5.4.1 [a@contoso.com]: Recipient address rejected: Access denied",
            c,
            "recipient_not_found",
        );
        check(
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
            c,
            "recipient_not_found",
        );
        check("550 5.1.1 <a@contoso.com>: Recipient address rejected: User unknown in local recipient table", c, "recipient_not_found");
        check("550 5.4.1 Relay Access Denied", c, "domain_not_accepted");
        check(
            "550 5.7.606 Access denied, banned sending IP [192.0.2.1]",
            c,
            "probe_source_blocked",
        );
        check(
            "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus",
            c,
            "probe_source_blocked",
        );
        check("550 5.7.513 Service unavailable, Client host blocked by contoso.com using Customer Block list", c, "probe_source_blocked");
        check(
            "451 4.7.500 Server busy. Please try again later",
            c,
            "temporary_failure",
        );
        check(
            "450 4.2.1 Mailbox temporarily unavailable",
            c,
            "temporary_failure",
        );
        check(
            "421 4.3.2 Service not available, closing transmission channel",
            c,
            "temporary_failure",
        );
        check("550 Mailbox unavailable", c, "unexpected_reply");
        check("552 5.2.2 Mailbox full", c, "unexpected_reply");
        check(
            "553 5.1.3 Bad recipient address syntax",
            c,
            "unexpected_reply",
        );
    }

    #[test]
    fn an_accepted_address_with_a_relay_denied_control_is_contradictory() {
        check(
            "250 2.1.5 Recipient OK",
            Some("550 5.4.1 Relay Access Denied"),
            "unexpected_reply",
        );
    }

    #[test]
    fn accepted_control_makes_every_answer_blind() {
        let accepted = Some("250 2.1.5 Recipient OK");
        check("250 2.1.5 Recipient OK", accepted, "accepts_all_recipients");
        check("550 5.1.1 User unknown", accepted, "accepts_all_recipients");
    }

    #[test]
    fn control_that_cannot_tell_makes_the_watched_answer_unknown() {
        check(
            "250 2.1.5 Recipient OK",
            Some("451 4.7.500 Server busy"),
            "temporary_failure",
        );
        check(
            "550 5.1.1 User unknown",
            Some("550 5.7.606 Access denied, banned sending IP"),
            "probe_source_blocked",
        );
        check("250 2.1.5 Recipient OK", None, "connection_dropped");
    }

    #[test]
    fn only_positive_evidence_is_ever_critical() {
        let replies = [
            "250 2.1.5 Recipient OK",
            "550 5.4.1 Recipient address rejected: Access denied",
            "550 5.4.1 Relay Access Denied",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
            "550 5.7.606 Access denied",
            "451 4.7.500 Server busy",
            "421 4.3.2 Service not available",
            "550 No such user",
            "554 5.5.1 Error",
        ];
        for watched in replies {
            for control in replies.iter().map(|c| Some(*c)).chain([None]) {
                let (reason, _) = classify_watched(&reply(watched), control.map(reply).as_ref());
                if reason.status() == Status::Critical {
                    let gone = matches!(classify_rcpt(&reply(watched)), RcptMeaning::Gone(_));
                    let control_gone = control
                        .is_some_and(|c| matches!(classify_rcpt(&reply(c)), RcptMeaning::Gone(_)));
                    assert!(
                        gone && control_gone,
                        "{watched} / {control:?} gave critical without positive evidence"
                    );
                }
            }
        }
    }

    #[test]
    fn enhanced_codes_are_recognised_only_in_valid_form() {
        assert_eq!(parse_enhanced("5.1.10 RESOLVER.ADR"), Some("5.1.10".into()));
        assert_eq!(parse_enhanced("2.1.5 Recipient OK"), Some("2.1.5".into()));
        assert_eq!(parse_enhanced("Recipient OK"), None);
        assert_eq!(parse_enhanced("3.1.1 nope"), None);
        assert_eq!(parse_enhanced("5.1 short"), None);
        assert_eq!(parse_enhanced("5.1.1.1 long"), None);
        assert_eq!(parse_enhanced(""), None);
    }
}
