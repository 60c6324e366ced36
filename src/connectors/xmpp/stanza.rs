//! Stanza building and parsing: IQ answers, roster items, presence `show` and status text,
//! message ids and dates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::delay::Delay;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Show;
use tokio_xmpp::parsers::roster::{Item, Roster as RosterQuery, Subscription};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
use tokio_xmpp::parsers::stanza_id::{OriginId, StanzaId};
use tokio_xmpp::Stanza;
use tracing::warn;

use crate::connectors::{Availability, ConnectorError, Roster, RosterEntry};
use crate::domain::ids::{Handle, Protocol};

/// The typed payload of an IQ result, or the error the server gave for `what`.
pub(super) fn parse_result<T: TryFrom<Element>>(
    iq: Iq,
    what: &str,
) -> Result<Option<T>, ConnectorError> {
    match iq {
        Iq::Result { payload: None, .. } => Ok(None),
        Iq::Result {
            payload: Some(payload),
            ..
        } => T::try_from(payload)
            .map(Some)
            .map_err(|_| ConnectorError::Protocol(format!("unreadable answer to {what}"))),
        Iq::Error { error, .. } => Err(ConnectorError::Protocol(format!(
            "the server refused {what}: {:?}",
            error.defined_condition
        ))),
        Iq::Get { .. } | Iq::Set { .. } => Err(ConnectorError::Protocol(format!(
            "unexpected request in answer to {what}"
        ))),
    }
}

/// What the answer to our roster request says about the contact list. Only a readable
/// `<query/>` is the whole list; an answer without one, a refusal or an unreadable payload tells
/// nothing, and an empty `Complete` in their place would make every contact depart.
pub(super) fn roster_of_answer(iq: Iq) -> Roster {
    match iq {
        Iq::Result {
            payload: Some(payload),
            ..
        } => match RosterQuery::try_from(payload) {
            Ok(query) => Roster::Complete(query.items.iter().filter_map(roster_entry).collect()),
            Err(_) => {
                Roster::Absent("the server's answer to the roster request is unreadable".to_owned())
            }
        },
        // RFC 6121 §2.6.3: "no roster changes since your version". We sent no version, so
        // there is nothing it could be relative to.
        Iq::Result { payload: None, .. } => {
            Roster::Absent("the server answered the roster request without a roster".to_owned())
        }
        Iq::Error { error, .. } => Roster::Absent(format!(
            "the server refused the roster request: {:?}",
            error.defined_condition
        )),
        Iq::Get { .. } | Iq::Set { .. } => {
            Roster::Absent("the server answered the roster request with a request".to_owned())
        }
    }
}

/// A roster item as Switchboard sees it; `None` for removals and unusable JIDs.
pub(super) fn roster_entry(item: &Item) -> Option<RosterEntry> {
    if item.subscription == Subscription::Remove {
        return None;
    }
    let handle = match Handle::parse(Protocol::Xmpp, item.jid.as_str()) {
        Ok(handle) => handle,
        Err(e) => {
            warn!(jid = %item.jid, "skipping a roster item: {e}");
            return None;
        }
    };
    let display_name = item
        .name
        .as_deref()
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned);
    Some(RosterEntry {
        handle,
        display_name,
    })
}

/// The sender's bare JID and handle and the text of a one-to-one message with a body; `None`
/// for group chat, headlines, errors and body-less notifications (chat states, receipts), which
/// are not ours to report.
pub(super) fn chat_message(message: &Message) -> Option<(BareJid, Handle, String)> {
    if !matches!(message.type_, MessageType::Chat | MessageType::Normal) {
        return None;
    }
    let from = message.from.as_ref()?.to_bare();
    let handle = Handle::parse(Protocol::Xmpp, from.as_str()).ok()?;
    let (_, body) = message.get_best_body_cloned(vec![])?;
    Some((from, handle, body))
}

/// The id our own server's archive gave `message`: its XEP-0359 `<stanza-id>` stamped `by` our
/// bare JID (Prosody's and ejabberd's mod_mam add it when archiving). A stanza-id by anyone
/// else (the sender, a room, a forger) says nothing about our archive and is ignored; servers
/// strip forged ones claiming to be by us.
pub(super) fn archive_id(message: &Message, own: &BareJid) -> Option<String> {
    message
        .payloads
        .iter()
        .filter(|payload| payload.is("stanza-id", ns::SID))
        .filter_map(|payload| StanzaId::try_from(payload.clone()).ok())
        .find(|stanza_id| stanza_id.by.resource().is_none() && stanza_id.by.to_bare() == *own)
        .map(|stanza_id| stanza_id.id)
}

/// The id of an incoming message that is the same whichever way it reaches us (live, offline
/// storage, archive query): the archive's id ([`archive_id`]), which an archive query gives
/// as the result's id; else the sender's XEP-0359 `<origin-id>`; else the stanza's `id`
/// attribute, which offline storage keeps.
pub(super) fn message_id(message: &Message, own: &BareJid) -> Option<String> {
    archive_id(message, own)
        .or_else(|| {
            message
                .payloads
                .iter()
                .filter(|payload| payload.is("origin-id", ns::SID))
                .find_map(|payload| OriginId::try_from(payload.clone()).ok())
                .map(|origin| origin.id)
        })
        .or_else(|| message.id.as_ref().map(|id| id.0.clone()))
        .filter(|id| !id.is_empty())
}

/// When a delayed message was first sent or stored (XEP-0203 `<delay stamp>`, which offline
/// storage and archives add): the earliest stamp, as each hop that delays it adds its own.
pub(super) fn delay_stamp(payloads: &[Element]) -> Option<DateTime<Utc>> {
    payloads
        .iter()
        .filter(|payload| payload.is("delay", ns::DELAY))
        .filter_map(|payload| Delay::try_from(payload.clone()).ok())
        .map(|delay| delay.stamp.0.with_timezone(&Utc))
        .min()
}

pub(super) fn availability(show: Option<&Show>) -> Availability {
    match show {
        None => Availability::Online,
        Some(Show::Chat) => Availability::Chat,
        Some(Show::Away) => Availability::Away,
        Some(Show::Xa) => Availability::ExtendedAway,
        Some(Show::Dnd) => Availability::DoNotDisturb,
    }
}

/// The status text to show: the one without a language tag, else English, else any.
pub(super) fn status_text(statuses: &BTreeMap<Lang, String>) -> Option<String> {
    let in_lang = |wanted: &str| {
        statuses
            .iter()
            .find_map(|(lang, text)| (lang.as_str() == wanted).then_some(text))
    };
    in_lang("")
        .or_else(|| in_lang("en"))
        .or_else(|| statuses.values().next())
        .map(|text| text.trim())
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

pub(super) fn result_reply(to: Option<Jid>, id: String) -> Stanza {
    Iq::Result {
        from: None,
        to,
        id,
        payload: None,
    }
    .into()
}

pub(super) fn error_reply(to: Option<Jid>, id: String, condition: DefinedCondition) -> Stanza {
    Iq::Error {
        from: None,
        to,
        id,
        error: StanzaError {
            type_: ErrorType::Cancel,
            by: None,
            defined_condition: condition,
            texts: BTreeMap::new(),
            other: None,
        },
        payload: None,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::jid::BareJid;

    use super::*;

    #[test]
    fn show_maps_to_availability() {
        assert_eq!(availability(None), Availability::Online);
        assert_eq!(availability(Some(&Show::Chat)), Availability::Chat);
        assert_eq!(availability(Some(&Show::Away)), Availability::Away);
        assert_eq!(availability(Some(&Show::Xa)), Availability::ExtendedAway);
        assert_eq!(availability(Some(&Show::Dnd)), Availability::DoNotDisturb);
    }

    #[test]
    fn status_prefers_untagged_then_english() {
        let statuses = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(lang, text)| (Lang((*lang).to_owned()), (*text).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(status_text(&statuses(&[])), None);
        assert_eq!(status_text(&statuses(&[("", "  ")])), None);
        assert_eq!(
            status_text(&statuses(&[("de", "weg"), ("", " out ")])),
            Some("out".to_owned())
        );
        assert_eq!(
            status_text(&statuses(&[("de", "weg"), ("en", "away")])),
            Some("away".to_owned())
        );
        assert_eq!(
            status_text(&statuses(&[("de", "weg")])),
            Some("weg".to_owned())
        );
    }

    #[test]
    fn roster_items_become_entries() {
        let item = |jid: &str, name: Option<&str>, subscription| Item {
            jid: BareJid::new(jid).unwrap(),
            name: name.map(str::to_owned),
            subscription,
            ask: Default::default(),
            groups: Vec::new(),
            approved: None,
        };
        assert_eq!(
            roster_entry(&item("Bob@Example.org", Some(" Bob "), Subscription::Both)),
            Some(RosterEntry {
                handle: Handle::parse(Protocol::Xmpp, "bob@example.org").unwrap(),
                display_name: Some("Bob".to_owned()),
            })
        );
        let unnamed = roster_entry(&item("carol@example.org", Some(""), Subscription::None));
        assert_eq!(unnamed.and_then(|entry| entry.display_name), None);
        assert_eq!(
            roster_entry(&item("dave@example.org", None, Subscription::Remove)),
            None
        );
    }

    #[test]
    fn only_a_readable_roster_answer_is_a_complete_roster() {
        let result = |payload: Option<&str>| Iq::Result {
            from: None,
            to: None,
            id: "switchboard-roster".to_owned(),
            payload: payload.map(|xml| xml.parse::<Element>().unwrap()),
        };
        assert_eq!(
            roster_of_answer(result(Some("<query xmlns='jabber:iq:roster'/>"))),
            Roster::Complete(Vec::new())
        );
        assert_eq!(
            roster_of_answer(result(Some(
                "<query xmlns='jabber:iq:roster'>\
                 <item jid='ben@example.org' name='Ben' subscription='both'/>\
                 <item jid='cid@example.org' subscription='remove'/></query>"
            ))),
            Roster::Complete(vec![RosterEntry {
                handle: Handle::parse(Protocol::Xmpp, "ben@example.org").unwrap(),
                display_name: Some("Ben".to_owned()),
            }])
        );
        // No payload (roster versioning's "nothing new"), another payload, a refusal: nothing
        // is known, which is not an empty roster.
        for answer in [
            result(None),
            result(Some("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>")),
            error_answer(DefinedCondition::ServiceUnavailable),
        ] {
            assert!(
                matches!(roster_of_answer(answer.clone()), Roster::Absent(_)),
                "{answer:?}"
            );
        }
    }

    fn message(xml: &str) -> Message {
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    #[test]
    fn the_archive_id_is_preferred_and_only_our_servers_counts() {
        let own = BareJid::new("hal@localhost").unwrap();
        let full = message(
            "<message xmlns='jabber:client' from='gus@localhost/x' id='attr-1' type='chat'>\
             <body>hi</body>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='gus@localhost' id='theirs'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='hal@localhost/phone' id='a-resource'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' by='HAL@localhost' id='ours'/>\
             <origin-id xmlns='urn:xmpp:sid:0' id='origin-1'/></message>",
        );
        assert_eq!(archive_id(&full, &own), Some("ours".to_owned()));
        assert_eq!(message_id(&full, &own), Some("ours".to_owned()));

        // Someone else's archive: the origin-id, then the stanza's own id.
        let other = BareJid::new("ivy@localhost").unwrap();
        assert_eq!(archive_id(&full, &other), None);
        assert_eq!(message_id(&full, &other), Some("origin-1".to_owned()));
        let plain = message(
            "<message xmlns='jabber:client' from='gus@localhost/x' id='attr-1' type='chat'>\
             <body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='gus@localhost' id='theirs'/>\
             </message>",
        );
        assert_eq!(message_id(&plain, &own), Some("attr-1".to_owned()));
        let bare = message("<message xmlns='jabber:client' from='gus@localhost/x' id=''/>");
        assert_eq!(message_id(&bare, &own), None);
    }

    #[test]
    fn the_earliest_delay_stamp_is_when_it_was_sent() {
        let delayed = message(
            "<message xmlns='jabber:client' from='gus@localhost/x'>\
             <delay xmlns='urn:xmpp:delay' from='localhost' stamp='2026-11-02T10:00:05Z'/>\
             <delay xmlns='urn:xmpp:delay' stamp='2026-11-02T11:00:01+02:00'/></message>",
        );
        assert_eq!(
            delay_stamp(&delayed.payloads),
            Some("2026-11-02T09:00:01Z".parse().unwrap())
        );
        let live = message("<message xmlns='jabber:client' from='gus@localhost/x'/>");
        assert_eq!(delay_stamp(&live.payloads), None);
    }

    fn error_answer(condition: DefinedCondition) -> Iq {
        Iq::Error {
            from: None,
            to: None,
            id: "switchboard-roster".to_owned(),
            error: StanzaError {
                type_: ErrorType::Cancel,
                by: None,
                defined_condition: condition,
                texts: BTreeMap::new(),
                other: None,
            },
            payload: None,
        }
    }
}
