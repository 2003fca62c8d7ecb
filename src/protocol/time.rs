//! Times of the JSON API: RFC 3339 in UTC, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
//!
//! A small strict parser and formatter instead of a date crate: the API
//! only ever sends UTC with a `Z`, so time zones, offsets and calendars
//! other than the proleptic Gregorian one are not needed. The day
//! arithmetic is Howard Hinnant's `days_from_civil` / `civil_from_days`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::reply::ParseError;

/// Seconds in a day.
const DAY: i64 = 86_400;

/// `t` as the JSON API writes times: RFC 3339 in UTC with exactly three
/// fraction digits (milliseconds, rounded down) and a `Z`; `None` for a
/// time outside the years 0000 to 9999, which RFC 3339 cannot write.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use heartbeat_sdk::protocol::format_time;
///
/// let t = UNIX_EPOCH + Duration::from_millis(1_795_600_801_234);
/// assert_eq!(format_time(t).unwrap(), "2026-11-25T10:00:01.234Z");
/// assert_eq!(format_time(UNIX_EPOCH - Duration::from_micros(1)).unwrap(), "1969-12-31T23:59:59.999Z");
/// ```
pub fn format_time(t: SystemTime) -> Option<String> {
    let (secs, nanos) = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => (i64::try_from(after.as_secs()).ok()?, after.subsec_nanos()),
        Err(before) => {
            let before = before.duration();
            let secs = i64::try_from(before.as_secs()).ok()?;
            match before.subsec_nanos() {
                0 => (secs.checked_neg()?, 0),
                n => (secs.checked_neg()?.checked_sub(1)?, 1_000_000_000 - n),
            }
        }
    };
    let (year, month, day) = civil_from_days(secs.div_euclid(DAY));
    if !(0..=9999).contains(&year) {
        return None;
    }
    let of_day = secs.rem_euclid(DAY);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        nanos / 1_000_000
    ))
}

/// A time as the JSON API writes it, strictly: `YYYY-MM-DDTHH:MM:SS`, an
/// optional `.` and 1 to 9 fraction digits, then `Z` (upper case `T` and
/// `Z`, no offset, no leap second, a day that exists in its month).
///
/// # Errors
/// A [`ParseError`] naming the text for anything else.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use heartbeat_sdk::protocol::parse_time;
///
/// let t = parse_time("2026-11-25T10:00:01.234Z").unwrap();
/// assert_eq!(t, UNIX_EPOCH + Duration::from_millis(1_795_600_801_234));
/// assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), UNIX_EPOCH);
/// assert!(parse_time("2026-11-25T10:00:01+01:00").is_err());
/// assert!(parse_time("2026-02-29T00:00:00Z").is_err());
/// ```
pub fn parse_time(text: &str) -> Result<SystemTime, ParseError> {
    parse(text).ok_or_else(|| {
        ParseError::new(format!(
            "invalid time {text:?} (expected YYYY-MM-DDTHH:MM:SS.mmmZ)"
        ))
    })
}

fn parse(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() < 20 || b.len() > 30 {
        return None;
    }
    let digits = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let punctuation = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if punctuation.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    let nanos = match &b[19..] {
        b"Z" => 0,
        [b'.', fraction @ .., b'Z'] if (1..=9).contains(&fraction.len()) => {
            let n = digits(20, 20 + fraction.len())?;
            n * 10u32.pow(9 - fraction.len() as u32)
        }
        _ => return None,
    };
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    let secs = days_from_civil(i64::from(year), month, day) * DAY
        + i64::from(hour * 3600 + minute * 60 + second);
    let whole = Duration::from_secs(secs.unsigned_abs());
    let at = if secs >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    at.checked_add(Duration::from_nanos(u64::from(nanos)))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// serde glue for the JSON API's conventions: times as [`format_time`]
/// strings, durations as whole milliseconds.
#[cfg(feature = "serde")]
pub(crate) mod serde_glue {
    use std::time::{Duration, SystemTime};

    use serde::{de, ser, Deserialize, Deserializer, Serializer};

    fn text<E: ser::Error>(t: SystemTime) -> Result<String, E> {
        super::format_time(t).ok_or_else(|| E::custom("time outside the years 0000 to 9999"))
    }

    /// `SystemTime` as an RFC 3339 string.
    pub(crate) mod time {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&text(*t)?)
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
            let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            super::super::parse_time(&text).map_err(de::Error::custom)
        }
    }

    /// `Option<SystemTime>` as an RFC 3339 string or `null`.
    pub(crate) mod opt_time {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<SystemTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&text::<S::Error>(*t)?),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SystemTime>, D::Error> {
            match <Option<std::borrow::Cow<'de, str>>>::deserialize(d)? {
                Some(text) => super::super::parse_time(&text)
                    .map(Some)
                    .map_err(de::Error::custom),
                None => Ok(None),
            }
        }
    }

    /// `Duration` as whole milliseconds (rounded down, saturating).
    pub(crate) mod ms {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(crate::protocol::whole_ms(*d))
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            u64::deserialize(d).map(Duration::from_millis)
        }
    }

    /// `Option<Duration>` as whole milliseconds or `null`.
    pub(crate) mod opt_ms {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            d: &Option<Duration>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&crate::protocol::whole_ms(*d)),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            Ok(<Option<u64>>::deserialize(d)?.map(Duration::from_millis))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> SystemTime {
        let d = Duration::from_millis(ms.unsigned_abs());
        if ms >= 0 {
            UNIX_EPOCH + d
        } else {
            UNIX_EPOCH - d
        }
    }

    #[test]
    fn known_dates_both_ways() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_795_600_801_234, "2026-11-25T10:00:01.234Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (-62_167_219_200_000, "0000-01-01T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ] {
            assert_eq!(format_time(at(ms)).as_deref(), Some(text), "{ms}");
            assert_eq!(parse_time(text).unwrap(), at(ms), "{text}");
        }
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // 1900-01-01 to 2300-01-01: all leap rules (4, 100, 400)
        let first = days_from_civil(1900, 1, 1);
        let last = days_from_civil(2300, 1, 1);
        assert_eq!(last - first, 146_097);
        let mut expected = (1900, 1, 1);
        for days in first..last {
            let date = civil_from_days(days);
            assert_eq!(date, expected);
            assert_eq!(days_from_civil(date.0, date.1, date.2), days);
            let (y, m, d) = expected;
            expected = if d < days_in_month(y as u32, m) {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn fractions_of_any_length_and_none() {
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), at(1000));
        assert_eq!(parse_time("1970-01-01T00:00:00.5Z").unwrap(), at(500));
        assert_eq!(
            parse_time("1970-01-01T00:00:00.000000001Z").unwrap(),
            UNIX_EPOCH + Duration::from_nanos(1)
        );
        // formatting rounds down to the millisecond
        assert_eq!(
            format_time(UNIX_EPOCH + Duration::from_nanos(1_999_999)).unwrap(),
            "1970-01-01T00:00:00.001Z"
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "2026-11-25",
            "2026-11-25T10:00:01",
            "2026-11-25T10:00:01.Z",
            "2026-11-25T10:00:01.1234567890Z",
            "2026-11-25t10:00:01Z",
            "2026-11-25T10:00:01z",
            "2026-11-25 10:00:01Z",
            "2026-11-25T10:00:01+00:00",
            "2026-11-25T10:00:01.234Z ",
            " 2026-11-25T10:00:01.234Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-12-31T23:59:60Z",
            "+026-01-01T00:00:00Z",
            "2026-+1-01T00:00:00Z",
            "２026-01-01T00:00:00Z",
            "2026-01-01T00:00:00.-1Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_time("x").unwrap_err().reason(),
            "invalid time \"x\" (expected YYYY-MM-DDTHH:MM:SS.mmmZ)"
        );
    }

    #[test]
    fn times_rfc_3339_cannot_write_are_none() {
        let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(format_time(year_10000), None);
        if let Some(before_year_0) = UNIX_EPOCH.checked_sub(Duration::from_secs(62_167_219_201)) {
            assert_eq!(format_time(before_year_0), None);
        }
    }
}
