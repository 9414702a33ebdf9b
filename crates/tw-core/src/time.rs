//! Wall-clock timestamps: one type, UTC milliseconds since the Unix epoch.
//!
//! Intervals and deadlines use `tokio::time::Instant` in the crates that own a runtime; this
//! type is only for "when did it happen", which is what gets stored, exported and shown.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current wall-clock time. A clock set before 1970 reads as the epoch rather than
    /// failing: a timestamp is evidence, never a reason to stop probing.
    pub fn now() -> Timestamp {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }

    pub fn as_millis(self) -> i64 {
        self.0
    }

    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// This timestamp moved by `duration` (saturating).
    pub fn plus(self, duration: Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// This timestamp moved back by `duration` (saturating).
    pub fn minus(self, duration: Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(millis))
    }

    /// Parses the UTC times Microsoft, RDAP servers and operators write: RFC 3339 with `Z`,
    /// `+00:00` or no zone at all (taken as UTC), fractional seconds, or a bare date
    /// (`2027-03-01`, midnight UTC). Other offsets are refused rather than misread.
    pub fn parse_utc(raw: &str) -> Option<Timestamp> {
        let raw = raw.trim();
        let normalised = if raw.len() == 10 {
            format!("{raw}T00:00:00Z")
        } else if let Some(head) = raw.strip_suffix("+00:00") {
            format!("{head}Z")
        } else {
            raw.to_owned()
        };
        let at = humantime::parse_rfc3339_weak(&normalised).ok()?;
        let millis = at.duration_since(UNIX_EPOCH).ok()?.as_millis();
        i64::try_from(millis).ok().map(Timestamp)
    }

    /// Whole days from `self` until `later` (negative when `later` is in the past),
    /// rounded towards minus infinity so "expires in 0 days" means today.
    pub fn days_until(self, later: Timestamp) -> i64 {
        later.0.saturating_sub(self.0).div_euclid(86_400_000)
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T12:00:00.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // humantime formats years 0000-9999 only; anything else is shown as raw milliseconds
        // rather than failing (a `to_string` that errors would panic).
        const LAST_RFC3339_MILLIS: u64 = 253_402_300_799_999;
        match u64::try_from(self.0) {
            Ok(millis) if millis > LAST_RFC3339_MILLIS => write!(f, "{millis}ms-after-epoch"),
            Ok(millis) => {
                let at = UNIX_EPOCH + Duration::from_millis(millis);
                write!(f, "{}", humantime::format_rfc3339_millis(at))
            }
            Err(_) => write!(f, "{}ms-before-epoch", self.0.unsigned_abs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_rfc3339_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_000_000_123).to_string(),
            "2026-11-18T11:06:40.123Z"
        );
    }

    #[test]
    fn far_future_and_past_display_without_failing() {
        assert_eq!(
            Timestamp(i64::MAX).to_string(),
            format!("{}ms-after-epoch", i64::MAX)
        );
        assert_eq!(Timestamp(-5).to_string(), "5ms-before-epoch");
    }

    #[test]
    fn parses_the_utc_spellings_in_the_wild() {
        let at = Timestamp(1_786_593_600_000); // 2026-08-13T04:00:00Z
        assert_eq!(Timestamp::parse_utc("2026-08-13T04:00:00Z"), Some(at));
        assert_eq!(Timestamp::parse_utc("2026-08-13T04:00:00"), Some(at));
        assert_eq!(Timestamp::parse_utc("2026-08-13T04:00:00+00:00"), Some(at));
        assert_eq!(Timestamp::parse_utc("2026-08-13T04:00:00.000Z"), Some(at));
        assert_eq!(
            Timestamp::parse_utc("2026-08-13"),
            Some(Timestamp(1_786_579_200_000))
        );
        assert_eq!(Timestamp::parse_utc("2026-08-13T04:00:00+02:00"), None);
        assert_eq!(Timestamp::parse_utc("soon"), None);
        assert_eq!(Timestamp::parse_utc(""), None);
    }

    #[test]
    fn days_until_rounds_down() {
        let now = Timestamp(1_786_593_600_000);
        assert_eq!(now.days_until(now.plus(Duration::from_secs(86_400 * 7))), 7);
        assert_eq!(now.days_until(now.plus(Duration::from_secs(3_600))), 0);
        assert_eq!(now.days_until(now.minus(Duration::from_secs(3_600))), -1);
    }

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(
            Timestamp(i64::MAX).plus(Duration::from_secs(1)),
            Timestamp(i64::MAX)
        );
        assert_eq!(Timestamp(5).millis_since(Timestamp(10)), 0);
        assert_eq!(Timestamp(10).millis_since(Timestamp(4)), 6);
    }
}
