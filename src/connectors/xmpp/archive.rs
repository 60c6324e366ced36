//! Catch-up from the account's message archive (XEP-0313 MAM) after login, and the message
//! cursor that says how far the archive has been read.
//!
//! The session owns one [`Archive`], a state machine without I/O like the vCard fetches: it says
//! which request to send, takes the answers and the archived messages, and says which messages
//! and cursors to report. First a disco#info on our bare JID: only an account advertising
//! `urn:xmpp:mam:2` has an archive. Then, with a cursor from the last session (an archive id),
//! the messages archived after it, a page of [`PAGE_SIZE`] at a time, at most [`MAX_PAGES`]
//! pages; without one (a first login), only the id of the newest archived message, which
//! becomes the cursor: nothing of the past is fetched. A cursor is reported after every page.
//!
//! The cursor is the archive id of the last message reported, or `""` for "before everything in
//! the archive" (an empty archive at a first login): no archive gives an empty id.
//!
//! Failures cost the catch-up, never the session: no MAM, an error or no answer within
//! [`ANSWER_TIMEOUT`] end it with a debug log. A cursor the archive no longer knows
//! (`item-not-found`: archives expire old messages, Prosody's after a week by default) means
//! everything still archived is newer, so the catch-up starts again from the archive's start.
//!
//! Live cursors: once the catch-up has read everything, the id the archive gave a live message
//! (its `<stanza-id by='our bare JID'>`) is a cursor too, reported after the message. Not while
//! catching up (older archived messages may still be unread), and never again in a session
//! whose catch-up stopped early (page limit, error, timeout): the cursor then stays where the
//! catch-up left it, so the next login goes on from there.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::disco::{DiscoInfoQuery, DiscoInfoResult};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::mam::{Fin, Query, QueryId, Result_ as ArchivedMessage};
use tokio_xmpp::parsers::message::Message;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::rsm::SetQuery;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;
use tracing::debug;

use super::stanza::{chat_message, delay_stamp};
use crate::connectors::IncomingMessage;

/// Archived messages asked for per page (Prosody's default maximum is 50).
pub(super) const PAGE_SIZE: usize = 50;
/// Pages read per login: at most 1000 archived messages. What lies beyond waits for the next
/// login, which goes on from the cursor.
pub(super) const MAX_PAGES: usize = 20;
/// How long the server may take to answer one request.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
const DISCO_ID: &str = "switchboard-mam-disco";
const QUERY_ID_PREFIX: &str = "switchboard-mam-";

/// What the session does when the archive says so.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Step {
    Send(Box<Iq>),
    Report(IncomingMessage),
    Cursor(String),
}

#[derive(Debug)]
enum State {
    NotStarted,
    Discovering {
        deadline: Instant,
    },
    Querying {
        id: String,
        deadline: Instant,
        /// Only the newest archive id is wanted (a first login).
        newest_only: bool,
        /// Pages read so far, this one not included.
        pages: usize,
        /// The catch-up already started again from the archive's start.
        restarted: bool,
    },
    /// Read everything: live cursors may follow.
    Following,
    /// No archive: no cursors at all.
    Off,
    /// Stopped early: the cursor stays where it is until the next login.
    Frozen,
}

/// The archive side of one session.
#[derive(Debug)]
pub(super) struct Archive {
    own: BareJid,
    /// Where the catch-up reads from: the login's cursor, then each page's last id. `None`: a
    /// first login; `Some("")`: the archive's start.
    cursor: Option<String>,
    state: State,
    requests: u64,
    /// Ids reported while catching up, live or archived: with offline storage beside the
    /// archive, a message may come both ways.
    seen: HashSet<String>,
}

impl Archive {
    pub(super) fn new(own: BareJid, cursor: Option<String>) -> Self {
        Self {
            own,
            cursor,
            state: State::NotStarted,
            requests: 0,
            seen: HashSet::new(),
        }
    }

    /// The disco#info request that starts it all.
    pub(super) fn start(&mut self, now: Instant) -> Iq {
        self.state = State::Discovering {
            deadline: now + ANSWER_TIMEOUT,
        };
        Iq::from_get(DISCO_ID, DiscoInfoQuery { node: None }).with_to(Jid::from(self.own.clone()))
    }

    /// May the archive id of a live message be reported as the cursor?
    pub(super) fn live_cursors(&self) -> bool {
        matches!(self.state, State::Following)
    }

    /// A live message with this id is about to be reported: false if the catch-up already
    /// reported it.
    pub(super) fn first_sight(&mut self, id: &str) -> bool {
        if self.catching_up() {
            self.seen.insert(id.to_owned())
        } else {
            true
        }
    }

    fn catching_up(&self) -> bool {
        matches!(
            self.state,
            State::Discovering { .. } | State::Querying { .. }
        )
    }

    /// When [`expire`](Self::expire) must run even if nothing else happens.
    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        match self.state {
            State::Discovering { deadline } | State::Querying { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    /// Gives up on a request whose time is up.
    pub(super) fn expire(&mut self, now: Instant) {
        match &self.state {
            State::Discovering { deadline } if *deadline <= now => {
                debug!("no answer to the archive disco#info in time: no catch-up");
                self.finish(State::Off);
            }
            State::Querying {
                deadline,
                newest_only,
                ..
            } if *deadline <= now => {
                debug!("no answer to the archive query in time: catch-up stopped");
                self.stop(*newest_only);
            }
            _ => {}
        }
    }

    /// Takes the answer to one of our requests; `None` if `iq` is not one.
    pub(super) fn answer(&mut self, iq: &Iq, now: Instant) -> Option<Vec<Step>> {
        if !matches!(iq, Iq::Result { .. } | Iq::Error { .. }) || !self.is_own(iq.from()) {
            return None;
        }
        match &self.state {
            State::Discovering { .. } if iq.id() == DISCO_ID => Some(self.discovered(iq, now)),
            State::Querying { id, .. } if iq.id() == id => Some(self.page_done(iq, now)),
            _ => None,
        }
    }

    /// Takes a message from the archive; `None` if `message` is not a result of our current
    /// query. The inner step reports it, unless it is not a chat message from a contact or was
    /// reported already.
    pub(super) fn result(&mut self, message: &Message) -> Option<Option<Step>> {
        let State::Querying {
            id, newest_only, ..
        } = &self.state
        else {
            return None;
        };
        if !self.is_own(message.from.as_ref()) {
            return None;
        }
        let archived = message
            .payloads
            .iter()
            .find(|payload| payload.is("result", ns::MAM))
            .and_then(|payload| ArchivedMessage::try_from(payload.clone()).ok())?;
        if archived.queryid.as_ref().map(|q| q.0.as_str()) != Some(id.as_str()) {
            return None;
        }
        if *newest_only {
            return Some(None);
        }
        let forwarded = archived.forwarded;
        let Some((from, handle, body)) = chat_message(&forwarded.message) else {
            return Some(None);
        };
        // Our own outgoing messages are archived too.
        if from == self.own || !self.seen.insert(archived.id.clone()) {
            return Some(None);
        }
        let sent_at = delay_stamp(&forwarded.message.payloads)
            .or_else(|| {
                forwarded
                    .delay
                    .map(|delay| delay.stamp.0.with_timezone(&chrono::Utc))
            })
            .unwrap_or_else(chrono::Utc::now);
        Some(Some(Step::Report(IncomingMessage {
            from: handle,
            body,
            sent_at,
            id: Some(archived.id),
        })))
    }

    fn discovered(&mut self, iq: &Iq, now: Instant) -> Vec<Step> {
        let has_mam = match iq {
            Iq::Result {
                payload: Some(payload),
                ..
            } => DiscoInfoResult::try_from(payload.clone())
                .is_ok_and(|info| info.features.contains(ns::MAM)),
            _ => false,
        };
        if !has_mam {
            debug!("the account has no message archive: no catch-up");
            self.finish(State::Off);
            return Vec::new();
        }
        let newest_only = self.cursor.is_none();
        vec![Step::Send(Box::new(self.query(now, newest_only, 0, false)))]
    }

    fn query(&mut self, now: Instant, newest_only: bool, pages: usize, restarted: bool) -> Iq {
        self.requests += 1;
        let id = format!("{QUERY_ID_PREFIX}{}", self.requests);
        let set = if newest_only {
            SetQuery {
                max: Some(1),
                after: None,
                // Empty: the last page.
                before: Some(String::new()),
                index: None,
            }
        } else {
            SetQuery {
                max: Some(PAGE_SIZE),
                after: self.cursor.clone().filter(|cursor| !cursor.is_empty()),
                before: None,
                index: None,
            }
        };
        let query = Query {
            queryid: Some(QueryId(id.clone())),
            node: None,
            form: None,
            set: Some(set),
            flip_page: false,
        };
        self.state = State::Querying {
            id: id.clone(),
            deadline: now + ANSWER_TIMEOUT,
            newest_only,
            pages,
            restarted,
        };
        Iq::from_set(id, query)
    }

    fn page_done(&mut self, iq: &Iq, now: Instant) -> Vec<Step> {
        let State::Querying {
            newest_only,
            pages,
            restarted,
            ..
        } = self.state
        else {
            return Vec::new();
        };
        let fin = match iq {
            Iq::Result {
                payload: Some(payload),
                ..
            } => Fin::try_from(payload.clone()).ok(),
            _ => None,
        };
        let Some(fin) = fin else {
            if let Iq::Error { error, .. } = iq {
                let forgotten = error.defined_condition == DefinedCondition::ItemNotFound;
                if forgotten && !newest_only && !restarted {
                    debug!("the archive no longer has the cursor: reading it from its start");
                    self.cursor = Some(String::new());
                    return vec![Step::Send(Box::new(self.query(now, false, pages, true)))];
                }
                debug!(condition = ?error.defined_condition, "the archive query failed");
            } else {
                debug!("unreadable answer to the archive query");
            }
            self.stop(newest_only);
            return Vec::new();
        };
        // The newest id; none in an empty archive, whose start is then the cursor.
        let last = fin.set.last.filter(|last| !last.is_empty());
        if newest_only {
            let cursor = last.unwrap_or_default();
            self.cursor = Some(cursor.clone());
            self.finish(State::Following);
            return vec![Step::Cursor(cursor)];
        }
        let mut steps = Vec::new();
        if let Some(last) = last.clone() {
            self.cursor = Some(last.clone());
            steps.push(Step::Cursor(last));
        }
        let pages = pages + 1;
        if fin.complete {
            self.finish(State::Following);
        } else if last.is_none() {
            debug!("an incomplete archive page without a last id: catch-up stopped");
            self.finish(State::Frozen);
        } else if pages >= MAX_PAGES {
            debug!(
                pages,
                "archive catch-up limit reached: the rest waits for the next login"
            );
            self.finish(State::Frozen);
        } else {
            steps.push(Step::Send(Box::new(
                self.query(now, false, pages, restarted),
            )));
        }
        steps
    }

    /// A failed query: a first login lost only the starting point, which live messages give
    /// as well; a catch-up leaves the cursor where it is.
    fn stop(&mut self, newest_only: bool) {
        self.finish(if newest_only {
            State::Following
        } else {
            State::Frozen
        });
    }

    fn finish(&mut self, state: State) {
        self.state = state;
        self.seen = HashSet::new();
    }

    fn is_own(&self, from: Option<&Jid>) -> bool {
        from.is_none_or(|from| from.resource().is_none() && from.to_bare() == self.own)
    }
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::minidom::Element;

    use super::*;
    use crate::domain::ids::{Handle, Protocol};

    fn own() -> BareJid {
        BareJid::new("hal@localhost").unwrap()
    }

    fn iq(xml: &str) -> Iq {
        Iq::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn message(xml: &str) -> Message {
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn sent(steps: &[Step]) -> &Iq {
        match steps {
            [.., Step::Send(iq)] => iq,
            other => panic!("no request in {other:?}"),
        }
    }

    fn disco_answer(features: &str) -> Iq {
        iq(&format!(
            "<iq xmlns='jabber:client' type='result' id='{DISCO_ID}' from='hal@localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info'>{features}</query></iq>"
        ))
    }

    fn fin(id: &str, complete: bool, last: Option<&str>) -> Iq {
        let last = last.map_or(String::new(), |last| format!("<last>{last}</last>"));
        iq(&format!(
            "<iq xmlns='jabber:client' type='result' id='{id}'>\
             <fin xmlns='urn:xmpp:mam:2' complete='{complete}'>\
             <set xmlns='http://jabber.org/protocol/rsm'>{last}</set></fin></iq>"
        ))
    }

    fn archived(query: &str, id: &str, from: &str, body: &str) -> Message {
        message(&format!(
            "<message xmlns='jabber:client' to='hal@localhost/sb'>\
             <result xmlns='urn:xmpp:mam:2' queryid='{query}' id='{id}'>\
             <forwarded xmlns='urn:xmpp:forward:0'>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-11-02T10:00:00Z'/>\
             <message xmlns='jabber:client' from='{from}' to='hal@localhost' type='chat'>\
             <body>{body}</body></message></forwarded></result></message>"
        ))
    }

    fn query_xml(iq: &Iq) -> String {
        match iq {
            Iq::Set { payload, .. } => String::from(payload),
            other => panic!("not a query: {other:?}"),
        }
    }

    #[test]
    fn a_catch_up_pages_from_the_cursor_and_reports_chat_messages_once() {
        let now = Instant::now();
        let mut archive = Archive::new(own(), Some("c0".to_owned()));
        let disco = archive.start(now);
        assert_eq!(disco.to(), Some(&Jid::from(own())));
        assert!(!archive.live_cursors());
        let steps = archive
            .answer(&disco_answer("<feature var='urn:xmpp:mam:2'/>"), now)
            .unwrap();
        let first = sent(&steps).clone();
        let xml = query_xml(&first);
        assert!(xml.contains("<after>c0</after>"), "{xml}");
        assert!(xml.contains("<max>50</max>"), "{xml}");

        // Offline storage delivered "a1" live before the archive did.
        assert!(archive.first_sight("a1"));
        let q = first.id().to_owned();
        assert_eq!(
            archive.result(&archived(&q, "a1", "gus@localhost/x", "one")),
            Some(None)
        );
        let Some(Some(Step::Report(two))) =
            archive.result(&archived(&q, "a2", "gus@localhost/x", "two"))
        else {
            panic!("a2 is reported")
        };
        assert_eq!(
            two,
            IncomingMessage {
                from: Handle::parse(Protocol::Xmpp, "gus@localhost").unwrap(),
                body: "two".to_owned(),
                sent_at: "2026-11-02T10:00:00Z".parse().unwrap(),
                id: Some("a2".to_owned()),
            }
        );
        // Our own message, another query's result: not reported.
        assert_eq!(
            archive.result(&archived(&q, "a3", "hal@localhost/phone", "mine")),
            Some(None)
        );
        assert_eq!(
            archive.result(&archived("other", "a4", "gus@localhost/x", "x")),
            None
        );
        // A live message seen in the archive already is not reported again.
        assert!(!archive.first_sight("a2"));

        let steps = archive.answer(&fin(&q, false, Some("a3")), now).unwrap();
        assert_eq!(steps[0], Step::Cursor("a3".to_owned()));
        let second = sent(&steps).clone();
        assert!(query_xml(&second).contains("<after>a3</after>"));
        assert!(!archive.live_cursors());
        let steps = archive
            .answer(&fin(second.id(), true, Some("a9")), now)
            .unwrap();
        assert_eq!(steps, [Step::Cursor("a9".to_owned())]);
        assert!(archive.live_cursors());
        assert!(archive.first_sight("a2"), "the catch-up is over");
        assert_eq!(archive.next_wakeup(), None);
    }

    #[test]
    fn a_first_login_only_takes_the_newest_id() {
        let now = Instant::now();
        let mut archive = Archive::new(own(), None);
        archive.start(now);
        let steps = archive
            .answer(&disco_answer("<feature var='urn:xmpp:mam:2'/>"), now)
            .unwrap();
        let query = sent(&steps).clone();
        let xml = query_xml(&query);
        assert!(
            xml.contains("<max>1</max>") && xml.contains("<before"),
            "{xml}"
        );
        assert_eq!(
            archive.result(&archived(query.id(), "n1", "gus@localhost/x", "old")),
            Some(None),
            "nothing of the past is reported"
        );
        let steps = archive.answer(&fin(query.id(), false, Some("n1")), now);
        assert_eq!(steps, Some(vec![Step::Cursor("n1".to_owned())]));
        assert!(archive.live_cursors());

        // An empty archive: its start is the cursor, and the next login reads from there.
        let mut empty = Archive::new(own(), None);
        empty.start(now);
        let steps = empty
            .answer(&disco_answer("<feature var='urn:xmpp:mam:2'/>"), now)
            .unwrap();
        let id = sent(&steps).id().to_owned();
        assert_eq!(
            empty.answer(&fin(&id, true, None), now),
            Some(vec![Step::Cursor(String::new())])
        );
        let mut next = Archive::new(own(), Some(String::new()));
        next.start(now);
        let steps = next
            .answer(&disco_answer("<feature var='urn:xmpp:mam:2'/>"), now)
            .unwrap();
        assert!(!query_xml(sent(&steps)).contains("<after"));
    }

    #[test]
    fn without_an_archive_there_are_no_cursors() {
        let now = Instant::now();
        let mut archive = Archive::new(own(), Some("c0".to_owned()));
        archive.start(now);
        // An answer from someone else is not ours.
        let forged = iq(&format!(
            "<iq xmlns='jabber:client' type='result' id='{DISCO_ID}' from='gus@localhost'>\
             <query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='urn:xmpp:mam:2'/></query></iq>"
        ));
        assert_eq!(archive.answer(&forged, now), None);
        let steps = archive.answer(&disco_answer("<feature var='urn:xmpp:ping'/>"), now);
        assert_eq!(steps, Some(Vec::new()));
        assert!(!archive.live_cursors());

        let mut silent = Archive::new(own(), None);
        silent.start(now);
        silent.expire(now + ANSWER_TIMEOUT);
        assert!(!silent.live_cursors());
        assert_eq!(silent.next_wakeup(), None);
    }

    #[test]
    fn a_failed_catch_up_keeps_the_cursor_and_a_forgotten_one_restarts() {
        let now = Instant::now();
        let start = |cursor: &str| {
            let mut archive = Archive::new(own(), Some(cursor.to_owned()));
            archive.start(now);
            let steps = archive
                .answer(&disco_answer("<feature var='urn:xmpp:mam:2'/>"), now)
                .unwrap();
            let id = sent(&steps).id().to_owned();
            (archive, id)
        };
        let error = |id: &str, condition: &str| {
            iq(&format!(
                "<iq xmlns='jabber:client' type='error' id='{id}'><error type='cancel'>\
                 <{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
            ))
        };

        let (mut archive, id) = start("c0");
        assert_eq!(
            archive.answer(&error(&id, "internal-server-error"), now),
            Some(Vec::new())
        );
        assert!(!archive.live_cursors(), "frozen: the next login goes on");

        let (mut archive, id) = start("c0");
        let late = now + ANSWER_TIMEOUT;
        archive.expire(late);
        assert!(!archive.live_cursors());
        assert_eq!(archive.answer(&fin(&id, true, Some("x")), late), None);

        let (mut archive, id) = start("expired");
        let steps = archive.answer(&error(&id, "item-not-found"), now).unwrap();
        let again = sent(&steps).clone();
        assert!(!query_xml(&again).contains("<after"));
        // Only once.
        assert_eq!(
            archive.answer(&error(again.id(), "item-not-found"), now),
            Some(Vec::new())
        );
        assert!(!archive.live_cursors());
    }

    #[test]
    fn the_catch_up_stops_after_max_pages() {
        let now = Instant::now();
        let mut archive = Archive::new(own(), Some("c0".to_owned()));
        archive.start(now);
        let mut steps = archive
            .answer(&disco_answer("<feature var='urn:xmpp:mam:2'/>"), now)
            .unwrap();
        for page in 1..=MAX_PAGES {
            let id = sent(&steps).id().to_owned();
            steps = archive
                .answer(&fin(&id, false, Some(&format!("p{page}"))), now)
                .unwrap();
            assert_eq!(steps[0], Step::Cursor(format!("p{page}")));
        }
        assert_eq!(steps.len(), 1, "no request after the last page: {steps:?}");
        assert!(!archive.live_cursors());
    }
}
