//! Which of a person's contacts a message goes out through, and why, in words.
//!
//! The rules, in order:
//! 1. the network the sender picked (`via`), whatever the presences;
//! 2. the user's own preference for that person, while its account is connected (and, on a
//!    network that drops messages to people who are not there, IRC, while the person is on);
//! 3. the most available contact that is not offline (see [`crate::domain::presence`]);
//! 4. everyone offline: the network the person last wrote from, else the first contact, on a
//!    network that keeps messages for people who are offline (not IRC), with its account
//!    connected;
//! 5. nothing left: the message waits (queued) until the person or an account comes online.
//!
//! A contact whose account is not connected has no known presence and is never chosen by
//! rules 2–4. The reason lists every network of the person, so the user sees the whole picture
//! ("Bob is online on Matrix; away on XMPP; not connected on IRC").

use chrono::{DateTime, Utc};

use crate::domain::ids::{ContactId, Protocol};
use crate::domain::presence::{Availability, Presence};

/// One contact of the person, as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member<'a> {
    pub contact_id: ContactId,
    pub protocol: Protocol,
    /// Its presence; `None` while its account is not connected.
    pub presence: Option<&'a Presence>,
    /// When the person last wrote from this contact.
    pub last_inbound: Option<DateTime<Utc>>,
}

/// Which rule chose the route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Via,
    Preference,
    MostAvailable,
    LastWrote,
    KeptForTheOffline,
}

/// The router's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routing {
    /// Send now through this contact.
    Send {
        contact_id: ContactId,
        rule: Rule,
        reason: String,
    },
    /// Nobody reachable: keep the message until someone is. `contact_id` is where it was
    /// asked to go (`via`), if anywhere.
    Queue {
        contact_id: Option<ContactId>,
        reason: String,
    },
}

/// Why a route cannot even be considered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingError {
    #[error("the person has no contact to write to")]
    NoContacts,
    #[error("contact {0} is not one of the person's contacts")]
    NotAMember(ContactId),
}

/// Chooses the route of a message to the person called `name` with these `members`.
pub fn route(
    name: &str,
    members: &[Member<'_>],
    via: Option<ContactId>,
    preference: Option<ContactId>,
) -> Result<Routing, RoutingError> {
    if members.is_empty() {
        return Err(RoutingError::NoContacts);
    }
    let member = |id: ContactId| members.iter().find(|m| m.contact_id == id);
    if let Some(via) = via {
        let chosen = member(via).ok_or(RoutingError::NotAMember(via))?;
        let network = chosen.protocol.name();
        return Ok(if chosen.presence.is_some() {
            Routing::Send {
                contact_id: via,
                rule: Rule::Via,
                reason: format!("you chose {network}"),
            }
        } else {
            Routing::Queue {
                contact_id: Some(via),
                reason: format!(
                    "you chose {network}; the {network} account is not connected, so it waits"
                ),
            }
        });
    }
    let picture = picture(name, members);
    let send = |m: &Member<'_>, rule: Rule, why: String| Routing::Send {
        contact_id: m.contact_id,
        rule,
        reason: why,
    };
    if let Some(preferred) = preference.and_then(member) {
        let reachable = preferred.presence.is_some_and(|p| {
            p.availability > Availability::Offline
                || preferred.protocol.keeps_messages_for_the_offline()
        });
        if reachable {
            let why = format!(
                "your preference for {name}: {}; {picture}",
                preferred.protocol.name()
            );
            return Ok(send(preferred, Rule::Preference, why));
        }
    }
    let best = members
        .iter()
        .filter_map(|m| m.presence.map(|p| (m, p)))
        .fold(
            None::<(&Member<'_>, &Presence)>,
            |best, (m, p)| match best {
                Some((_, chosen)) if chosen.availability >= p.availability => best,
                _ => Some((m, p)),
            },
        );
    if let Some((m, _)) = best.filter(|(_, p)| p.availability > Availability::Offline) {
        return Ok(send(m, Rule::MostAvailable, picture));
    }
    let keeps =
        |m: &&Member<'_>| m.presence.is_some() && m.protocol.keeps_messages_for_the_offline();
    let last_wrote = members
        .iter()
        .filter(keeps)
        .filter(|m| m.last_inbound.is_some())
        .max_by_key(|m| m.last_inbound);
    if let Some(m) = last_wrote {
        let why = format!("{picture}; {name} last wrote on {}", m.protocol.name());
        return Ok(send(m, Rule::LastWrote, why));
    }
    if let Some(m) = members.iter().find(keeps) {
        let why = format!(
            "{picture}; {} keeps the message until {name} comes back",
            m.protocol.name()
        );
        return Ok(send(m, Rule::KeptForTheOffline, why));
    }
    Ok(Routing::Queue {
        contact_id: None,
        reason: format!("{picture}; it waits until {name} can be reached"),
    })
}

/// "Bob is online on Matrix; away on XMPP; not connected on IRC": every network once, the
/// most available first.
fn picture(name: &str, members: &[Member<'_>]) -> String {
    let mut seen: Vec<(Option<Availability>, Protocol)> = members
        .iter()
        .map(|m| (m.presence.map(|p| p.availability), m.protocol))
        .collect();
    // Each network once, at its best; then the most available first.
    seen.sort_by(|a, b| a.1.name().cmp(b.1.name()).then(b.0.cmp(&a.0)));
    seen.dedup_by(|later, kept| later.1 == kept.1);
    seen.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.name().cmp(b.1.name())));
    let parts: Vec<String> = seen
        .iter()
        .map(|(availability, protocol)| {
            let state = match availability {
                None => "not connected",
                Some(Availability::Chat) => "free to chat",
                Some(Availability::Online) => "online",
                Some(Availability::Away) => "away",
                Some(Availability::ExtendedAway) => "away for long",
                Some(Availability::DoNotDisturb) => "busy",
                Some(Availability::Offline) => "offline",
            };
            format!("{state} on {}", protocol.name())
        })
        .collect();
    if seen.iter().all(|(a, _)| *a == Some(Availability::Offline)) {
        return format!("{name} is offline everywhere");
    }
    format!("{name} is {}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn id(n: u128) -> ContactId {
        ContactId(Uuid::from_u128(n))
    }

    fn seen(availability: Availability) -> Presence {
        Presence {
            availability,
            status: None,
        }
    }

    fn member(n: u128, protocol: Protocol, presence: Option<&Presence>) -> Member<'_> {
        Member {
            contact_id: id(n),
            protocol,
            presence,
            last_inbound: None,
        }
    }

    fn sent_to(routing: &Routing) -> (ContactId, Rule, &str) {
        match routing {
            Routing::Send {
                contact_id,
                rule,
                reason,
            } => (*contact_id, *rule, reason),
            Routing::Queue { reason, .. } => panic!("queued: {reason}"),
        }
    }

    #[test]
    fn the_most_available_network_wins_and_the_reason_shows_every_network() {
        let (away, online) = (seen(Availability::Away), seen(Availability::Online));
        let members = [
            member(1, Protocol::Xmpp, Some(&away)),
            member(2, Protocol::Matrix, Some(&online)),
            member(3, Protocol::Irc, None),
        ];
        let routing = route("Bob", &members, None, None).unwrap();
        assert_eq!(
            sent_to(&routing),
            (
                id(2),
                Rule::MostAvailable,
                "Bob is online on Matrix; away on XMPP; not connected on IRC"
            )
        );
    }

    #[test]
    fn via_wins_over_everything_and_waits_when_its_account_is_not_connected() {
        let online = seen(Availability::Online);
        let members = [
            member(1, Protocol::Xmpp, Some(&online)),
            member(2, Protocol::Irc, None),
        ];
        let routing = route("Bob", &members, Some(id(1)), Some(id(2))).unwrap();
        assert_eq!(sent_to(&routing).1, Rule::Via);
        assert_eq!(
            route("Bob", &members, Some(id(2)), None).unwrap(),
            Routing::Queue {
                contact_id: Some(id(2)),
                reason: "you chose IRC; the IRC account is not connected, so it waits".into(),
            }
        );
        assert_eq!(
            route("Bob", &members, Some(id(9)), None),
            Err(RoutingError::NotAMember(id(9)))
        );
        assert_eq!(route("Bob", &[], None, None), Err(RoutingError::NoContacts));
    }

    #[test]
    fn a_preference_wins_while_its_account_is_connected() {
        let (offline, online) = (seen(Availability::Offline), seen(Availability::Online));
        let members = [
            member(1, Protocol::Xmpp, Some(&offline)),
            member(2, Protocol::Matrix, Some(&online)),
        ];
        let routing = route("Bob", &members, None, Some(id(1))).unwrap();
        assert_eq!(sent_to(&routing).0, id(1));
        assert_eq!(sent_to(&routing).1, Rule::Preference);
        assert!(sent_to(&routing)
            .2
            .starts_with("your preference for Bob: XMPP"));
        // Its account down: the other rules decide.
        let members = [
            member(1, Protocol::Xmpp, None),
            member(2, Protocol::Matrix, Some(&online)),
        ];
        let routing = route("Bob", &members, None, Some(id(1))).unwrap();
        assert_eq!(sent_to(&routing).0, id(2));
        // Preferred IRC while the nick is away: it would be lost there.
        let members = [
            member(1, Protocol::Irc, Some(&offline)),
            member(2, Protocol::Matrix, Some(&online)),
        ];
        let routing = route("Bob", &members, None, Some(id(1))).unwrap();
        assert_eq!(sent_to(&routing).0, id(2));
    }

    #[test]
    fn offline_everywhere_goes_where_the_person_last_wrote_never_to_irc() {
        let offline = seen(Availability::Offline);
        let mut members = [
            member(1, Protocol::Irc, Some(&offline)),
            member(2, Protocol::Xmpp, Some(&offline)),
            member(3, Protocol::Nostr, Some(&offline)),
        ];
        members[0].last_inbound = Some(Utc::now());
        members[2].last_inbound = Some(Utc::now() - chrono::Duration::hours(1));
        let routing = route("Bob", &members, None, None).unwrap();
        assert_eq!(
            sent_to(&routing),
            (
                id(3),
                Rule::LastWrote,
                "Bob is offline everywhere; Bob last wrote on Nostr"
            )
        );
        members[2].last_inbound = None;
        let routing = route("Bob", &members, None, None).unwrap();
        assert_eq!(sent_to(&routing).0, id(2));
        assert_eq!(sent_to(&routing).1, Rule::KeptForTheOffline);
    }

    #[test]
    fn nobody_reachable_means_the_message_waits() {
        let offline = seen(Availability::Offline);
        let members = [
            member(1, Protocol::Irc, Some(&offline)),
            member(2, Protocol::Xmpp, None),
        ];
        assert_eq!(
            route("Bob", &members, None, None).unwrap(),
            Routing::Queue {
                contact_id: None,
                reason: "Bob is offline on IRC; not connected on XMPP; it waits until Bob can be reached".into(),
            }
        );
    }
}
