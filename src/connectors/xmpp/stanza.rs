//! Stanza building and parsing: IQ answers, roster items, presence `show` and status text.

use std::collections::BTreeMap;

use tokio_xmpp::jid::Jid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::message::Lang;
use tokio_xmpp::parsers::presence::Show;
use tokio_xmpp::parsers::roster::{Item, Roster as RosterQuery, Subscription};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};
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
