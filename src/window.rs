//! When a request may start: a component's maintenance window (updates only between, say,
//! 02:00 and 04:00 local time, when nobody uses the device) and a request's own `not_before`. Pure: the time
//! zone and "now" are arguments, so DST and midnight cases are tested without the host's clock.
//!
//! A window bounds when an update *starts*; one started at 03:59 runs to its end. Health
//! checks and rollbacks are never held back: a rollback is how a bad update is undone, and
//! waiting hours for it would defeat it.

use std::fmt;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, ZonedDateTime};

/// A daily window in local time, `"HH:MM-HH:MM"`. It may wrap past midnight
/// (`"22:00-04:00"`); the start is inclusive, the end exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: Time,
    end: Time,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("{0:?} is not a window; write \"HH:MM-HH:MM\" in local time, e.g. \"02:00-04:00\"")]
    Syntax(String),
    #[error("{0:?} starts and ends at the same time; leave the window out to allow any time")]
    Empty(String),
}

impl Window {
    pub fn parse(text: &str) -> Result<Self, WindowError> {
        let syntax = || WindowError::Syntax(text.to_owned());
        let (start, end) = text.split_once('-').ok_or_else(syntax)?;
        let time = |part: &str| -> Result<Time, WindowError> {
            let (h, m) = part.trim().split_once(':').ok_or_else(syntax)?;
            let digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
            if !digits(h) || !digits(m) {
                return Err(syntax());
            }
            let (h, m) = (
                h.parse::<i8>().map_err(|_| syntax())?,
                m.parse().map_err(|_| syntax())?,
            );
            Time::new(h, m, 0, 0).map_err(|_| syntax())
        };
        let window = Window {
            start: time(start)?,
            end: time(end)?,
        };
        if window.start == window.end {
            return Err(WindowError::Empty(text.to_owned()));
        }
        Ok(window)
    }

    /// Whether a local time of day is inside the window.
    pub fn contains(&self, time: Time) -> bool {
        if self.start < self.end {
            self.start <= time && time < self.end
        } else {
            time >= self.start || time < self.end
        }
    }

    /// The first instant at or after `after` that is inside the window.
    pub fn next_open(&self, after: Timestamp, zone: &TimeZone) -> Timestamp {
        let local = after.to_zoned_datetime(zone.clone());
        if self.contains(local.time()) {
            return after;
        }
        let today = at(&local, self.start);
        match today {
            Some(start) if start.timestamp() > after => start.timestamp(),
            _ => local
                .checked_add(1.day())
                .ok()
                .and_then(|tomorrow| at(&tomorrow, self.start))
                // Unreachable in practice (the year 9999): do not hold the request forever.
                .map_or(after, |z| z.timestamp()),
        }
    }
}

/// `day`'s date at `time` in its zone (a time inside a DST gap moves forward, as clocks do).
fn at(day: &ZonedDateTime, time: Time) -> Option<ZonedDateTime> {
    day.with().time(time).build().ok()
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start.hour(),
            self.start.minute(),
            self.end.hour(),
            self.end.minute()
        )
    }
}

/// When a request may start: not before its `not_before`, and inside every window that
/// applies (an update: its components' windows). `None` means now.
pub fn start_time(
    now: Timestamp,
    not_before: Option<Timestamp>,
    windows: &[&Window],
    zone: &TimeZone,
) -> Option<Timestamp> {
    let mut start = not_before.filter(|t| *t > now).unwrap_or(now);
    // Several windows: move to the next opening of each in turn until all are open at once.
    // Windows that never overlap cannot all be open; give up after a few days' worth of turns
    // and start at the last opening found rather than never.
    for _ in 0..16 {
        let next = windows.iter().fold(start, |t, w| w.next_open(t, zone));
        if next == start {
            break;
        }
        start = next;
    }
    (start > now).then_some(start)
}

/// A request's `not_before`: RFC 3339 with an offset (`2026-11-28T02:00:00Z`,
/// `…+01:00`), or without one (`2026-11-28T02:00:00`, as the client's own `timestamp` is
/// written), which is then local time in `zone`.
pub fn parse_instant(text: &str, zone: &TimeZone) -> Option<Timestamp> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    civil
        .to_zoned_datetime(zone.clone())
        .ok()
        .map(|z| z.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> TimeZone {
        TimeZone::get("Europe/Berlin").unwrap_or_else(|_| TimeZone::fixed(jiff::tz::offset(1)))
    }

    fn local(text: &str, zone: &TimeZone) -> Timestamp {
        parse_instant(text, zone).unwrap()
    }

    #[test]
    fn windows_parse_and_say_what_is_wrong() {
        assert_eq!(
            Window::parse("02:00-04:00").unwrap().to_string(),
            "02:00-04:00"
        );
        assert_eq!(
            Window::parse("22:30 - 04:15").unwrap().to_string(),
            "22:30-04:15"
        );
        for bad in [
            "2-4",
            "02:00",
            "25:00-04:00",
            "02:60-04:00",
            "aa:bb-cc:dd",
            "",
        ] {
            assert!(
                matches!(Window::parse(bad), Err(WindowError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Window::parse("03:00-03:00"),
            Err(WindowError::Empty(_))
        ));
    }

    #[test]
    fn a_window_may_wrap_past_midnight() {
        let night = Window::parse("22:00-04:00").unwrap();
        let t = |h, m| Time::new(h, m, 0, 0).unwrap();
        assert!(night.contains(t(23, 0)) && night.contains(t(0, 0)) && night.contains(t(3, 59)));
        assert!(
            !night.contains(t(4, 0)) && !night.contains(t(12, 0)) && !night.contains(t(21, 59))
        );
        let day = Window::parse("02:00-04:00").unwrap();
        assert!(day.contains(t(2, 0)) && !day.contains(t(4, 0)) && !day.contains(t(1, 59)));
    }

    #[test]
    fn outside_the_window_the_request_waits_for_its_next_opening() {
        let zone = berlin();
        let window = Window::parse("02:00-04:00").unwrap();
        let now = local("2026-11-27T10:00:00", &zone);
        assert_eq!(
            start_time(now, None, &[&window], &zone),
            Some(local("2026-11-28T02:00:00", &zone))
        );
        let early = local("2026-11-27T01:30:00", &zone);
        assert_eq!(
            start_time(early, None, &[&window], &zone),
            Some(local("2026-11-27T02:00:00", &zone))
        );
        let inside = local("2026-11-27T03:00:00", &zone);
        assert_eq!(start_time(inside, None, &[&window], &zone), None);
    }

    #[test]
    fn not_before_and_the_window_combine() {
        let zone = berlin();
        let window = Window::parse("02:00-04:00").unwrap();
        let now = local("2026-11-27T03:00:00", &zone);
        // Inside the window now, but not before 05:00: the next night's window.
        let not_before = local("2026-11-27T05:00:00", &zone);
        assert_eq!(
            start_time(now, Some(not_before), &[&window], &zone),
            Some(local("2026-11-28T02:00:00", &zone))
        );
        // A not_before in the past is now.
        let past = local("2026-11-26T05:00:00", &zone);
        assert_eq!(start_time(now, Some(past), &[], &zone), None);
        assert_eq!(
            start_time(now, Some(not_before), &[], &zone),
            Some(not_before)
        );
    }

    #[test]
    fn a_window_opening_in_a_dst_gap_opens_when_the_clock_jumps() {
        // Europe/Berlin skips 02:00-03:00 on 2026-03-29.
        let zone = TimeZone::get("Europe/Berlin");
        let Ok(zone) = zone else { return }; // no zoneinfo on this machine
        let window = Window::parse("02:30-04:00").unwrap();
        let now = local("2026-03-29T01:00:00", &zone);
        let start = start_time(now, None, &[&window], &zone).unwrap();
        assert_eq!(start, "2026-03-29T01:30:00Z".parse::<Timestamp>().unwrap());
    }

    #[test]
    fn several_windows_must_be_open_at_once() {
        let zone = berlin();
        let a = Window::parse("01:00-03:00").unwrap();
        let b = Window::parse("02:30-05:00").unwrap();
        let now = local("2026-11-27T10:00:00", &zone);
        assert_eq!(
            start_time(now, None, &[&a, &b], &zone),
            Some(local("2026-11-28T02:30:00", &zone))
        );
    }

    #[test]
    fn instants_with_and_without_an_offset() {
        let zone = TimeZone::fixed(jiff::tz::offset(1));
        assert_eq!(
            parse_instant("2026-11-28T02:00:00Z", &zone).unwrap(),
            "2026-11-28T02:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_instant("2026-11-28T03:00:00+01:00", &zone).unwrap(),
            parse_instant("2026-11-28T03:00:00", &zone).unwrap()
        );
        assert!(parse_instant("tomorrow", &zone).is_none());
        assert!(parse_instant("2026-13-01T00:00:00", &zone).is_none());
    }
}
