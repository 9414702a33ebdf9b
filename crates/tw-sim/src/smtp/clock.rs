//! Wall-clock timestamps in the two shapes EOP prints: the RFC 2822 date in its greeting and
//! the ISO 8601 instant inside DBEB rejections (reference §4.3, §4.4).
//!
//! Formatting by hand keeps a date crate out of the simulator for two strings; the civil-date
//! conversion is Howard Hinnant's `civil_from_days`, which is exact for the proleptic Gregorian
//! calendar.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time, split into the fields both formats need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UtcTime {
    year: i64,
    month: u32,
    day: u32,
    weekday: usize,
    hour: u64,
    minute: u64,
    second: u64,
    millis: u32,
}

impl UtcTime {
    pub(crate) fn now() -> UtcTime {
        // A clock before 1970 is a broken host, not something a fixture should fail on.
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        UtcTime::from_unix(since_epoch)
    }

    pub(crate) fn from_unix(since_epoch: Duration) -> UtcTime {
        let secs = since_epoch.as_secs();
        let days = (secs / 86_400) as i64;
        let secs_of_day = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        UtcTime {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4).rem_euclid(7)) as usize,
            hour: secs_of_day / 3600,
            minute: secs_of_day / 60 % 60,
            second: secs_of_day % 60,
            millis: since_epoch.subsec_millis(),
        }
    }

    /// `Fri, 7 Jan 2022 00:05:19 +0000`: the day is not zero-padded, as in real EOP banners.
    pub(crate) fn rfc2822(&self) -> String {
        let weekday = WEEKDAYS.get(self.weekday).copied().unwrap_or("Sun");
        let month = MONTHS
            .get(self.month.saturating_sub(1) as usize)
            .copied()
            .unwrap_or("Jan");
        format!(
            "{weekday}, {} {month} {} {:02}:{:02}:{:02} +0000",
            self.day, self.year, self.hour, self.minute, self.second
        )
    }

    /// `2023-06-22T08:26:31.592Z`, the form inside a DBEB rejection's brackets.
    pub(crate) fn iso8601(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(unix_millis: u64, rfc2822: &str, iso8601: &str) {
        let time = UtcTime::from_unix(Duration::from_millis(unix_millis));
        assert_eq!(time.rfc2822(), rfc2822);
        assert_eq!(time.iso8601(), iso8601);
    }

    #[test]
    fn formats_match_real_eop_samples() {
        check(
            1_641_513_919_000,
            "Fri, 7 Jan 2022 00:05:19 +0000",
            "2022-01-07T00:05:19.000Z",
        );
        check(
            1_687_422_391_592,
            "Thu, 22 Jun 2023 08:26:31 +0000",
            "2023-06-22T08:26:31.592Z",
        );
        check(
            0,
            "Thu, 1 Jan 1970 00:00:00 +0000",
            "1970-01-01T00:00:00.000Z",
        );
        check(
            951_782_400_000,
            "Tue, 29 Feb 2000 00:00:00 +0000",
            "2000-02-29T00:00:00.000Z",
        );
    }
}
