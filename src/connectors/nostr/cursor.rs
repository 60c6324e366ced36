//! The message cursor's arithmetic: which stored messages a login reports, how far back the
//! relay is asked for gift wraps, and what the session reports as read (see the module
//! documentation of the connector for the reasoning).

use std::time::Duration;

use nostr::Timestamp;
use tracing::warn;

/// Stored messages dated (by their rumor) up to this much before the point to resume from are
/// still reported: sent during the login, in flight when the last session ended, or by a sender
/// whose clock is a little behind. Reporting one twice is harmless (the app keeps one per rumor
/// id); missing one is not.
pub const MESSAGE_MARGIN: Duration = Duration::from_secs(10);
/// A login reports stored messages from at most this far back, whatever the cursor: the relay
/// query stays bounded (and relays prune old events anyway).
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);
/// NIP-59 back-dates gift wraps at random by up to two days (plus a little slack): the relay
/// must be asked for wraps that much older than the oldest rumor wanted.
pub(super) const GIFT_WRAP_LOOKBACK: Duration = Duration::from_secs(2 * 24 * 3600 + 3600);

/// Where a login's message catch-up starts.
#[derive(Debug, Clone, Copy)]
pub(super) struct Resume {
    /// When the session started: the first cursor it reports.
    pub started: Timestamp,
    /// The oldest rumor date of the stored messages it reports ([`report_from`]).
    pub report_from: Timestamp,
}

impl Resume {
    pub(super) fn new(cursor: Option<&str>, started: Timestamp) -> Self {
        Self {
            started,
            report_from: report_from(cursor, started),
        }
    }

    /// The relay's `since` for the gift wraps to ask for.
    pub(super) fn wraps_since(&self) -> Timestamp {
        wraps_since(self.report_from)
    }
}

/// The oldest rumor date a login reports from the messages the relay stored, for a login at
/// `started` with the cursor the previous session reported (`None`: first login, nothing old).
/// A cursor ahead of our clock (the clock went back) counts as now; one that cannot be read
/// reaches back as far as allowed, as re-reporting beats losing.
fn report_from(cursor: Option<&str>, started: Timestamp) -> Timestamp {
    let horizon = started - CATCH_UP_LIMIT;
    let resume = match cursor {
        None => started,
        Some(text) => match parse(text) {
            Some(at) => at.min(started),
            None => {
                warn!(cursor = %text, "unreadable Nostr message cursor: catching up from the limit");
                horizon
            }
        },
    };
    (resume - MESSAGE_MARGIN).max(horizon)
}

/// The relay's `since` for gift wraps whose rumors are dated from `report_from` on.
fn wraps_since(report_from: Timestamp) -> Timestamp {
    report_from - GIFT_WRAP_LOOKBACK
}

/// The cursor's text: unix seconds.
pub(super) fn format(at: Timestamp) -> String {
    at.as_secs().to_string()
}

fn parse(text: &str) -> Option<Timestamp> {
    text.trim().parse::<u64>().ok().map(Timestamp::from_secs)
}

/// What a session reports as read: the session start once the stored messages are reported,
/// moved on to each reported message's rumor date, never back, and never past our own clock (a
/// sender's clock ahead must not make the next login skip what comes in the meantime).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor(Timestamp);

impl Cursor {
    pub(super) fn new(started: Timestamp) -> Self {
        Self(started)
    }

    /// After reporting a message whose rumor is dated `rumor`, at `now`.
    pub(super) fn reported(&mut self, rumor: Timestamp, now: Timestamp) {
        self.0 = self.0.max(rumor.min(now));
    }

    pub(super) fn text(&self) -> String {
        format(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STARTED: u64 = 1_700_000_000;

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    #[test]
    fn a_first_login_reports_only_what_came_during_it() {
        let from = report_from(None, at(STARTED));
        assert_eq!(from, at(STARTED) - MESSAGE_MARGIN);
    }

    #[test]
    fn a_cursor_resumes_a_margin_before_it() {
        let cursor = format(at(STARTED - 3600));
        assert_eq!(
            report_from(Some(&cursor), at(STARTED)),
            at(STARTED - 3600) - MESSAGE_MARGIN
        );
        // Messages at exactly the cursor second are reported again, not lost.
        assert!(report_from(Some(&cursor), at(STARTED)) <= at(STARTED - 3600));
    }

    #[test]
    fn an_old_or_unreadable_cursor_reaches_back_to_the_limit_only() {
        let old = format(at(STARTED) - CATCH_UP_LIMIT - Duration::from_secs(1));
        let limit = at(STARTED) - CATCH_UP_LIMIT;
        assert_eq!(report_from(Some(&old), at(STARTED)), limit);
        assert_eq!(report_from(Some("yesterday"), at(STARTED)), limit);
        assert_eq!(report_from(Some(""), at(STARTED)), limit);
    }

    #[test]
    fn a_cursor_ahead_of_our_clock_counts_as_now() {
        let ahead = format(at(STARTED + 86_400));
        assert_eq!(
            report_from(Some(&ahead), at(STARTED)),
            at(STARTED) - MESSAGE_MARGIN
        );
    }

    #[test]
    fn the_relay_is_asked_for_wraps_back_dated_two_days_before() {
        let from = at(STARTED);
        let since = wraps_since(from);
        assert!(since <= from - Duration::from_secs(2 * 24 * 3600));
        assert!(since >= from - Duration::from_secs(3 * 24 * 3600));
    }

    #[test]
    fn the_cursor_moves_on_with_reported_rumors_never_back_nor_ahead_of_now() {
        let now = at(STARTED + 100);
        let mut cursor = Cursor::new(at(STARTED));
        cursor.reported(at(STARTED - 50), now);
        assert_eq!(cursor.text(), STARTED.to_string(), "an older rumor");
        cursor.reported(at(STARTED + 40), now);
        assert_eq!(cursor.text(), (STARTED + 40).to_string());
        cursor.reported(at(STARTED + 30), now);
        assert_eq!(cursor.text(), (STARTED + 40).to_string(), "never back");
        cursor.reported(at(STARTED + 86_400), now);
        assert_eq!(cursor.text(), (STARTED + 100).to_string(), "clamped to now");
    }

    #[test]
    fn a_reported_cursor_resumes_where_it_stopped() {
        let mut cursor = Cursor::new(at(STARTED));
        cursor.reported(at(STARTED + 40), at(STARTED + 100));
        let from = report_from(Some(&cursor.text()), at(STARTED + 1000));
        assert_eq!(from, at(STARTED + 40) - MESSAGE_MARGIN);
    }
}
