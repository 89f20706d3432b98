//! When a scheduled deploy (a promotion or a rollback) may start: not
//! before a given instant, and only inside a daily window such as
//! "22:00-02:00".
//!
//! A deploy restarts an instance's flows, so teams keep it to the hours
//! when a short interruption hurts least. The scheduler asks
//! [`earliest_start`] when to wake up and [`may_start`] whether to go now;
//! both are decided here, from the time passed in, so every minute of the
//! day can be tested.
//!
//! All times are UTC: a daily window is minutes since midnight UTC, and the
//! console shows windows and start times in UTC, so what a person reads is
//! exactly what is enforced, with no time zone or daylight saving time rules
//! in between. Windows are whole minutes: the start is included, the end
//! excluded, and an end before the start wraps past midnight.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{refused, Micros, RuleError, MICROS_PER_SECOND};

pub const MINUTES_PER_DAY: u16 = 24 * 60;
const MICROS_PER_MINUTE: Micros = 60 * MICROS_PER_SECOND;
const MICROS_PER_DAY: Micros = MINUTES_PER_DAY as Micros * MICROS_PER_MINUTE;

/// A window of every day, in minutes since midnight UTC: from
/// `start_minute` (included) to `end_minute` (excluded), past midnight when
/// `end_minute < start_minute`. Written "HH:MM-HH:MM", which is also its
/// JSON form.
///
/// The fields are public for reading; a window built by hand with equal
/// minutes, or minutes past 23:59, is never open (it fails closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DailyWindow {
    pub start_minute: u16,
    pub end_minute: u16,
}

impl DailyWindow {
    /// A window from minutes since midnight UTC; both below
    /// [`MINUTES_PER_DAY`] and not equal.
    pub fn new(start_minute: u16, end_minute: u16) -> Result<Self, RuleError> {
        let window = DailyWindow {
            start_minute,
            end_minute,
        };
        if window.is_valid() {
            Ok(window)
        } else if start_minute == end_minute {
            Err(refused(
                "invalid_deploy_window",
                "a deploy window must not start and end at the same minute",
            ))
        } else {
            Err(refused(
                "invalid_deploy_window",
                "a deploy window's times are 00:00 to 23:59",
            ))
        }
    }

    /// "HH:MM-HH:MM" in 24-hour time, UTC, each part two digits (00:00 to
    /// 23:59); "22:00-02:00" wraps past midnight. Refused
    /// (`invalid_deploy_window`) otherwise, or when start and end are equal.
    pub fn parse(s: &str) -> Result<Self, RuleError> {
        let parsed = s
            .trim()
            .split_once('-')
            .and_then(|(start, end)| Some((parse_time(start)?, parse_time(end)?)));
        match parsed {
            Some((start, end)) => DailyWindow::new(start, end),
            None => Err(refused(
                "invalid_deploy_window",
                "a deploy window is written HH:MM-HH:MM in 24-hour UTC time, e.g. 22:00-02:00",
            )),
        }
    }

    fn is_valid(&self) -> bool {
        self.start_minute < MINUTES_PER_DAY
            && self.end_minute < MINUTES_PER_DAY
            && self.start_minute != self.end_minute
    }

    /// Whether the window wraps past midnight.
    pub fn wraps(&self) -> bool {
        self.end_minute < self.start_minute
    }

    /// How many minutes a day the window is open.
    pub fn open_minutes(&self) -> u16 {
        if !self.is_valid() {
            0
        } else if self.wraps() {
            MINUTES_PER_DAY - self.start_minute + self.end_minute
        } else {
            self.end_minute - self.start_minute
        }
    }

    /// Whether the instant falls inside the window (UTC).
    pub fn contains(&self, at: Micros) -> bool {
        if !self.is_valid() {
            return false;
        }
        let minute = minute_of_day(at);
        if self.wraps() {
            minute >= self.start_minute || minute < self.end_minute
        } else {
            self.start_minute <= minute && minute < self.end_minute
        }
    }

    /// The first instant at or after `at` inside the window: `at` itself,
    /// or the next start of the window. [`Micros::MAX`] for a window that
    /// is never open, or when the next start is past what `Micros` holds.
    pub fn next_open(&self, at: Micros) -> Micros {
        if !self.is_valid() {
            return Micros::MAX;
        }
        if self.contains(at) {
            return at;
        }
        let into_day = at.rem_euclid(MICROS_PER_DAY);
        let start = Micros::from(self.start_minute) * MICROS_PER_MINUTE;
        let wait = if start >= into_day {
            start - into_day
        } else {
            start + MICROS_PER_DAY - into_day
        };
        at.saturating_add(wait)
    }
}

fn minute_of_day(at: Micros) -> u16 {
    // rem_euclid keeps instants before 1970 on the right minute; the
    // result is below MINUTES_PER_DAY, so it fits.
    at.div_euclid(MICROS_PER_MINUTE)
        .rem_euclid(Micros::from(MINUTES_PER_DAY)) as u16
}

/// "HH:MM", two digits each, 00:00 to 23:59, as minutes since midnight.
fn parse_time(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() != 5 || b[2] != b':' {
        return None;
    }
    let digits = [b[0], b[1], b[3], b[4]];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let [h1, h2, m1, m2] = digits.map(|d| u16::from(d - b'0'));
    let (hours, minutes) = (h1 * 10 + h2, m1 * 10 + m2);
    (hours < 24 && minutes < 60).then_some(hours * 60 + minutes)
}

impl fmt::Display for DailyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start_minute / 60,
            self.start_minute % 60,
            self.end_minute / 60,
            self.end_minute % 60
        )
    }
}

impl TryFrom<String> for DailyWindow {
    type Error = RuleError;

    fn try_from(s: String) -> Result<Self, RuleError> {
        DailyWindow::parse(&s)
    }
}

impl From<DailyWindow> for String {
    fn from(window: DailyWindow) -> String {
        window.to_string()
    }
}

/// When a deploy may start: not before `not_before` (if set) and inside
/// `daily` (if set). Neither set means at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeployWindow {
    /// Microseconds since the Unix epoch.
    #[serde(default)]
    pub not_before: Option<Micros>,
    /// "HH:MM-HH:MM", UTC.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "22:00-02:00"))]
    pub daily: Option<DailyWindow>,
}

/// The first instant at or after `now`, and at or after `not_before`, that
/// lies inside the daily window (if any): that instant itself when it is
/// inside, else the minute the window next opens. [`Micros::MAX`] when the
/// window can never open (see [`DailyWindow`]).
pub fn earliest_start(window: &DeployWindow, now: Micros) -> Micros {
    let from = window
        .not_before
        .map_or(now, |not_before| not_before.max(now));
    match window.daily {
        Some(daily) => daily.next_open(from),
        None => from,
    }
}

/// Whether a deploy may start at `now`.
pub fn may_start(window: &DeployWindow, now: Micros) -> bool {
    earliest_start(window, now) == now
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: Micros = MICROS_PER_MINUTE;
    const DAY: Micros = MICROS_PER_DAY;
    /// 2026-12-04T00:00:00Z.
    const MIDNIGHT: Micros = 1_796_342_400 * MICROS_PER_SECOND;

    fn w(s: &str) -> DailyWindow {
        DailyWindow::parse(s).unwrap()
    }

    /// The minutes a window is open, walked one by one from its start.
    fn open_minutes(window: &DailyWindow) -> Vec<bool> {
        let mut open = vec![false; usize::from(MINUTES_PER_DAY)];
        let mut m = window.start_minute;
        while m != window.end_minute {
            open[usize::from(m)] = true;
            m = (m + 1) % MINUTES_PER_DAY;
        }
        open
    }

    fn windows() -> Vec<DailyWindow> {
        [
            "09:00-17:00",
            "22:00-02:00",
            "00:00-23:59",
            "23:59-00:00",
            "00:00-00:01",
            "23:00-00:00",
            "12:30-12:29",
            "01:15-01:16",
        ]
        .into_iter()
        .map(w)
        .collect()
    }

    #[test]
    fn parsing_reads_24_hour_times() {
        assert_eq!(
            w("09:00-17:30"),
            DailyWindow {
                start_minute: 540,
                end_minute: 1050
            }
        );
        assert_eq!(
            w("22:00-02:00"),
            DailyWindow {
                start_minute: 1320,
                end_minute: 120
            }
        );
        assert_eq!(
            w(" 00:00-23:59 "),
            DailyWindow {
                start_minute: 0,
                end_minute: 1439
            }
        );
        assert!(w("22:00-02:00").wraps());
        assert!(!w("02:00-22:00").wraps());
        for bad in [
            "",
            "-",
            "09:00",
            "09:00-",
            "-17:00",
            "9:00-17:00",
            "09:0-17:00",
            "09:00-17:00:00",
            "24:00-01:00",
            "00:00-24:00",
            "09:60-10:00",
            "10:00-10:00",
            "00:00-00:00",
            "09.00-17.00",
            "09:00 - 17:00",
            "+9:00-17:00",
            "09:00-17:00-18:00",
            "０９:00-17:00",
            "ab:cd-ef:gh",
        ] {
            assert_eq!(
                DailyWindow::parse(bad).unwrap_err().code,
                "invalid_deploy_window",
                "{bad:?}"
            );
        }
        assert_eq!(
            DailyWindow::new(0, 1440).unwrap_err().code,
            "invalid_deploy_window"
        );
        assert_eq!(
            DailyWindow::new(5, 5).unwrap_err().code,
            "invalid_deploy_window"
        );
    }

    /// Every pair of distinct minutes parses back from its text.
    #[test]
    fn every_window_round_trips_through_its_text() {
        for start in 0..MINUTES_PER_DAY {
            for end in 0..MINUTES_PER_DAY {
                let text = format!(
                    "{:02}:{:02}-{:02}:{:02}",
                    start / 60,
                    start % 60,
                    end / 60,
                    end % 60
                );
                match DailyWindow::parse(&text) {
                    Ok(window) => {
                        assert_ne!(start, end);
                        assert_eq!((window.start_minute, window.end_minute), (start, end));
                        assert_eq!(window.to_string(), text);
                    }
                    Err(_) => assert_eq!(start, end, "{text}"),
                }
            }
        }
    }

    #[test]
    fn serde_uses_the_text_form_and_checks_it() {
        let window = DeployWindow {
            not_before: Some(5),
            daily: Some(w("22:00-02:00")),
        };
        let json = serde_json::to_value(window).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"not_before": 5, "daily": "22:00-02:00"})
        );
        assert_eq!(
            serde_json::from_value::<DeployWindow>(json).unwrap(),
            window
        );
        assert_eq!(
            serde_json::from_str::<DeployWindow>("{}").unwrap(),
            DeployWindow::default()
        );
        for bad in [
            r#"{"daily": "10:00-10:00"}"#,
            r#"{"daily": "25:00-10:00"}"#,
            r#"{"daily": {"start_minute": 1, "end_minute": 2}}"#,
            r#"{"not_before": 1, "extra": 1}"#,
        ] {
            assert!(serde_json::from_str::<DeployWindow>(bad).is_err(), "{bad}");
        }
    }

    /// Every minute of a day (and a second into it, and the last
    /// microsecond of it), on a day after and a day before 1970.
    #[test]
    fn every_minute_of_a_day_is_judged_like_the_walked_window() {
        for window in windows() {
            let open = open_minutes(&window);
            assert_eq!(
                usize::from(window.open_minutes()),
                open.iter().filter(|o| **o).count()
            );
            for day in [MIDNIGHT, -3 * DAY] {
                for minute in 0..usize::from(MINUTES_PER_DAY) {
                    let at = day + minute as Micros * MIN;
                    for t in [at, at + MICROS_PER_SECOND, at + MIN - 1] {
                        assert_eq!(window.contains(t), open[minute], "{window} minute {minute}");
                        // The next open minute, walked.
                        let wait = (0..).find(|k| open[(minute + k) % open.len()]).unwrap();
                        let expected = if wait == 0 {
                            t
                        } else {
                            at + wait as Micros * MIN
                        };
                        let deploy = DeployWindow {
                            not_before: None,
                            daily: Some(window),
                        };
                        assert_eq!(
                            earliest_start(&deploy, t),
                            expected,
                            "{window} minute {minute}"
                        );
                        assert_eq!(may_start(&deploy, t), open[minute]);
                    }
                }
            }
        }
    }

    #[test]
    fn wrapping_windows_cross_midnight() {
        let window = DeployWindow {
            not_before: None,
            daily: Some(w("22:00-02:00")),
        };
        assert!(may_start(&window, MIDNIGHT - 2 * 60 * MIN));
        assert!(!may_start(&window, MIDNIGHT - 2 * 60 * MIN - 1));
        assert!(may_start(&window, MIDNIGHT));
        assert!(may_start(&window, MIDNIGHT + 2 * 60 * MIN - 1));
        assert!(!may_start(&window, MIDNIGHT + 2 * 60 * MIN));
        assert_eq!(
            earliest_start(&window, MIDNIGHT + 2 * 60 * MIN),
            MIDNIGHT + 22 * 60 * MIN
        );
    }

    #[test]
    fn not_before_comes_first_then_the_window() {
        let open = DeployWindow::default();
        assert_eq!(earliest_start(&open, 7), 7);
        assert!(may_start(&open, 7));
        let later = DeployWindow {
            not_before: Some(MIDNIGHT + 10 * MIN),
            daily: None,
        };
        assert_eq!(earliest_start(&later, MIDNIGHT), MIDNIGHT + 10 * MIN);
        assert!(!may_start(&later, MIDNIGHT + 10 * MIN - 1));
        assert!(may_start(&later, MIDNIGHT + 10 * MIN));
        assert!(may_start(&later, MIDNIGHT + 11 * MIN));
        // not_before at 03:00, window 22:00-02:00: 22:00 that day.
        let both = DeployWindow {
            not_before: Some(MIDNIGHT + 180 * MIN),
            daily: Some(w("22:00-02:00")),
        };
        assert_eq!(earliest_start(&both, MIDNIGHT), MIDNIGHT + 22 * 60 * MIN);
        // not_before at 23:00.5 inside the window: that very instant.
        let inside = MIDNIGHT + 23 * 60 * MIN + 30 * MICROS_PER_SECOND;
        let both = DeployWindow {
            not_before: Some(inside),
            daily: Some(w("22:00-02:00")),
        };
        assert_eq!(earliest_start(&both, MIDNIGHT), inside);
        assert!(!may_start(&both, MIDNIGHT));
        assert!(may_start(&both, inside));
    }

    #[test]
    fn hand_built_invalid_windows_never_open() {
        for (start, end) in [(5, 5), (1440, 10), (10, 1440), (u16::MAX, 0)] {
            let daily = DailyWindow {
                start_minute: start,
                end_minute: end,
            };
            let window = DeployWindow {
                not_before: None,
                daily: Some(daily),
            };
            assert_eq!(daily.open_minutes(), 0);
            for minute in 0..Micros::from(MINUTES_PER_DAY) {
                assert!(!daily.contains(MIDNIGHT + minute * MIN));
                assert!(!may_start(&window, MIDNIGHT + minute * MIN));
            }
            assert_eq!(earliest_start(&window, MIDNIGHT), Micros::MAX);
        }
    }

    #[test]
    fn the_ends_of_time_saturate() {
        let window = DeployWindow {
            not_before: None,
            daily: Some(w("00:00-00:01")),
        };
        let daily = window.daily.unwrap();
        for now in [Micros::MAX - DAY, Micros::MAX - 1, Micros::MAX] {
            let at = earliest_start(&window, now);
            assert!(
                at >= now && (at == Micros::MAX || daily.contains(at)),
                "{now}"
            );
        }
        for now in [Micros::MIN, Micros::MIN + 1] {
            let at = earliest_start(&window, now);
            assert!(at >= now && at - now < DAY && daily.contains(at), "{now}");
        }
    }

    fn any_window() -> impl Strategy<Value = DailyWindow> {
        (0..MINUTES_PER_DAY, 0..MINUTES_PER_DAY)
            .prop_filter("start != end", |(s, e)| s != e)
            .prop_map(|(s, e)| DailyWindow::new(s, e).unwrap())
    }

    proptest! {
        /// The answer is never before now or not_before, is inside the
        /// window, and no minute boundary between is.
        #[test]
        fn earliest_start_is_the_first_allowed_instant(
            daily in prop::option::of(any_window()),
            now in -100_000 * DAY..100_000 * DAY,
            not_before in prop::option::of(-100_000 * DAY..100_000 * DAY),
        ) {
            let window = DeployWindow { not_before, daily };
            let start = earliest_start(&window, now);
            let from = not_before.map_or(now, |n| n.max(now));
            prop_assert!(start >= now);
            prop_assert!(start >= from);
            if let Some(daily) = daily {
                prop_assert!(daily.contains(start));
                prop_assert!(start - from < DAY);
                // If it is not `from` itself, it is a minute boundary, and
                // no minute boundary in [from, start) is inside.
                if start != from {
                    prop_assert_eq!(start.rem_euclid(MIN), 0);
                    prop_assert!(!daily.contains(from));
                    let mut t = from + (MIN - from.rem_euclid(MIN)) % MIN;
                    while t < start {
                        prop_assert!(!daily.contains(t));
                        t += MIN;
                    }
                }
            } else {
                prop_assert_eq!(start, from);
            }
            prop_assert_eq!(may_start(&window, now), start == now);
            prop_assert!(may_start(&window, start));
        }
    }
}
