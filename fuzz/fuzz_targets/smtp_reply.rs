//! Fuzz target `smtp_reply`: any bytes an SMTP server may send as one reply, through the
//! probe's reply parser (`tw_probe::smtp_rcpt::parse_reply`, async-smtp's parser underneath)
//! and the RCPT classifier. A hostile or broken MX must never crash the probe, and a reply
//! may only be read as "this address is gone" (critical) when it is a permanent 5xx
//! rejection and the control address was not accepted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tw_core::Status;
use tw_probe::smtp_rcpt::{classify_watched, parse_enhanced, parse_reply, Reply};

/// What a real reply's text may grow to (dialogue.rs keeps 1,024 bytes and marks the cut).
const MAX_TEXT: usize = 1_024 + '…'.len_utf8();

fuzz_target!(|data: &[u8]| {
    // The dialogue reads lines as bytes and decodes them lossily before parsing.
    let raw = String::from_utf8_lossy(data);
    let Some(reply) = parse_reply(&raw) else {
        return;
    };
    assert!((200..600).contains(&reply.code), "{reply:?}");
    assert!(reply.text.len() <= MAX_TEXT, "{} bytes", reply.text.len());
    if let Some(enhanced) = &reply.enhanced {
        assert_eq!(
            parse_enhanced(enhanced).as_ref(),
            Some(enhanced),
            "{reply:?}"
        );
    }
    let accepted = Reply {
        code: 250,
        enhanced: Some("2.1.5".to_owned()),
        text: "2.1.5 Recipient OK".to_owned(),
    };
    for control in [None, Some(&reply), Some(&accepted)] {
        let (reason, summary) = classify_watched(&reply, control);
        assert!(!summary.is_empty());
        if reason.status() == Status::Critical {
            assert!(
                reply.is_permanent()
                    && reply
                        .enhanced
                        .as_deref()
                        .is_some_and(|e| e.starts_with("5.")),
                "critical without a permanent rejection: {reply:?} -> {reason:?}"
            );
            assert!(
                !control.is_some_and(|c| c.code == 250 || c.code == 251),
                "critical although the control address was accepted: {reply:?}"
            );
        }
    }
});
