//! Fuzz target `dsn`: any bytes as a message in the bounce mailbox, through the mailflow
//! check's RFC 3464 parser and classifier (`tw_mailflow::classify_dsn_for_fuzzing`). The
//! bounce mailbox receives mail from anyone, so a hostile message must never crash a run,
//! and only a `failed` action with a recipient-unknown status may read as critical.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tw_core::Status;

fuzz_target!(|data: &[u8]| {
    let Some(blocks) = tw_mailflow::classify_dsn_for_fuzzing(data) else {
        return;
    };
    for (action, status, reason) in blocks {
        if reason.is_some_and(|r| r.status() == Status::Critical) {
            assert!(action.trim().eq_ignore_ascii_case("failed"), "{action:?}");
            assert!(status.trim().starts_with("5."), "{status:?}");
        }
    }
});
