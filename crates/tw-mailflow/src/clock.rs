//! Dates in the two shapes mail needs: RFC 5322 for the probe's `Date:` header and IMAP's
//! `dd-Mon-yyyy` for `SEARCH BEFORE` (RFC 3501 §9).
//!
//! Formatting by hand keeps a date crate out for two strings; the civil-date conversion is
//! Howard Hinnant's `civil_from_days`, exact for the proleptic Gregorian calendar.

use tw_core::Timestamp;

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mon, 26 Oct 2026 12:00:07 +0000`.
pub(crate) fn rfc5322(at: Timestamp) -> String {
    let secs = at.as_millis().div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    format!(
        "{weekday}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        month_name(month),
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// `26-Oct-2026`, the date argument of IMAP `SEARCH BEFORE`.
pub(crate) fn imap_date(at: Timestamp) -> String {
    let days = at.as_millis().div_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    format!("{day:02}-{}-{year:04}", month_name(month))
}

fn month_name(month: u32) -> &'static str {
    MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan")
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

    #[test]
    fn known_instants() {
        assert_eq!(
            rfc5322(Timestamp(1_641_513_919_000)),
            "Fri, 7 Jan 2022 00:05:19 +0000"
        );
        assert_eq!(rfc5322(Timestamp(0)), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(
            rfc5322(Timestamp(951_782_400_000)),
            "Tue, 29 Feb 2000 00:00:00 +0000"
        );
        assert_eq!(imap_date(Timestamp(1_687_422_391_592)), "22-Jun-2023");
        assert_eq!(imap_date(Timestamp(0)), "01-Jan-1970");
    }
}
