//! Conversions between tw-core values and the column values they are stored as.
//!
//! Every column is read back through here, so an unknown spelling or an out-of-range number
//! becomes `StoreError::Decode` in one place instead of a panic somewhere else. A database
//! written by a newer build (a new reason, a new check kind) is the expected way to get here.

use std::time::Duration;

use tw_core::{CheckKind, Evidence, Reason, Status, EVIDENCE_VERSION};

use crate::StoreError;

pub(crate) fn parse_status(raw: &str) -> Result<Status, StoreError> {
    Status::ALL
        .into_iter()
        .find(|status| status.as_str() == raw)
        .ok_or_else(|| StoreError::decode("unknown status", format_args!("{raw:?}")))
}

pub(crate) fn parse_reason(raw: &str) -> Result<Reason, StoreError> {
    Reason::parse(raw).ok_or_else(|| StoreError::decode("unknown reason", format_args!("{raw:?}")))
}

pub(crate) fn parse_check(raw: &str) -> Result<CheckKind, StoreError> {
    raw.parse::<CheckKind>()
        .map_err(|err| StoreError::decode("unknown check kind", err))
}

pub(crate) fn count_from_db(raw: i64) -> Result<u32, StoreError> {
    u32::try_from(raw).map_err(|_| StoreError::decode("run count out of range", raw))
}

/// Durations are stored in whole microseconds; anything past i64 (about 292,000 years) is
/// clamped rather than refused, since it can only be a bug upstream and is still evidence.
pub(crate) fn duration_to_db(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

pub(crate) fn duration_from_db(micros: i64) -> Result<Duration, StoreError> {
    u64::try_from(micros)
        .map(Duration::from_micros)
        .map_err(|_| StoreError::decode("negative duration", micros))
}

pub(crate) fn evidence_to_db(evidence: &Evidence) -> Result<String, StoreError> {
    serde_json::to_string(evidence)
        .map_err(|err| StoreError::decode("evidence could not be encoded as JSON", err))
}

/// Reads evidence written under `version`. There has only ever been version 1; when
/// `EVIDENCE_VERSION` is bumped, the upgrade of older rows belongs here, so readers always get
/// today's shape.
pub(crate) fn evidence_from_db(version: i64, json: &str) -> Result<Evidence, StoreError> {
    if version > i64::from(EVIDENCE_VERSION) {
        return Err(StoreError::decode(
            "evidence written by a newer build",
            format_args!("version {version}, this build reads up to {EVIDENCE_VERSION}"),
        ));
    }
    serde_json::from_str(json).map_err(|err| StoreError::decode("evidence JSON", err))
}
