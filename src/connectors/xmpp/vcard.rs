//! Contacts' vCards (XEP-0054): fetched a few at a time beside the session's other traffic, read
//! into the [`Profile`] same-person matching uses, reported in batches.
//!
//! The session owns one [`VcardFetches`], a state machine without I/O: it says which request to
//! send next and when to wake up, takes the answers, and hands out batches to report. Requests
//! go out at most [`MAX_IN_FLIGHT`] at a time, each given [`ANSWER_TIMEOUT`]; an answer counts
//! only with the id we sent *and* from the contact we asked. An error, an empty vCard, a late or
//! unreadable answer all mean "no profile": nothing is reported for that contact.
//!
//! The vCard is read with minidom rather than xmpp-parsers' `VCard`, which only models `PHOTO`
//! and rejects the whole vCard when `PHOTO` is not `TYPE` + `BINVAL` (Prosody's
//! mod_vcard_legacy answers `EXTVAL` photos, or a `PHOTO` without `TYPE`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::vcard::VCardQuery;
use tracing::debug;

use crate::connectors::ContactProfile;
use crate::domain::ids::{Handle, Protocol};
use crate::domain::matching::Profile;

/// vCard requests awaiting an answer at once: enough to read a roster of hundreds in a few
/// seconds from a nearby server, few enough not to flood it or queue ahead of presence.
pub(super) const MAX_IN_FLIGHT: usize = 6;
/// How long one answer may take. A contact on another server is asked through server-to-server
/// links, which may first have to be opened; later answers are ignored.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);
/// Profiles per [`ConnectorEvent::Profiles`](crate::connectors::ConnectorEvent::Profiles).
pub(super) const BATCH_MAX: usize = 64;
/// How long a profile read may wait for others to share its event: a slow answer does not hold
/// up those already read.
pub(super) const BATCH_DELAY: Duration = Duration::from_secs(1);
/// Addresses kept per contact: a vCard with more is not about matching.
const MAX_EMAILS: usize = 8;
/// Longest nickname kept, in characters; longer ones are cut.
const MAX_NAME_CHARS: usize = 256;
/// RFC 5321's limit for a whole address (local part 64).
const MAX_EMAIL_LEN: usize = 254;
const ID_PREFIX: &str = "switchboard-vcard-";

/// Why a contact is asked: a first fetch reports only a profile with something in it; a
/// refresh (the contact's avatar changed) reports what it reads, empty or not, since it may
/// replace an earlier profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    First,
    Refresh,
}

#[derive(Debug)]
struct Request {
    id: String,
    handle: Handle,
    fetch: Fetch,
    deadline: Instant,
}

/// The vCard fetches of one session.
#[derive(Debug, Default)]
pub(super) struct VcardFetches {
    /// Contacts waiting for their request, oldest first.
    queue: VecDeque<(Handle, Fetch)>,
    /// At most [`MAX_IN_FLIGHT`].
    in_flight: Vec<Request>,
    /// Profiles read and not yet reported; at most one per contact.
    ready: Vec<ContactProfile>,
    /// When the oldest of `ready` was read.
    ready_since: Option<Instant>,
    requests_sent: u64,
}

impl VcardFetches {
    /// Queues the first fetch of each contact, e.g. the whole roster after login or a contact a
    /// roster push added. The caller asks once per contact and session.
    pub(super) fn fetch(&mut self, contacts: impl IntoIterator<Item = Handle>) {
        self.queue
            .extend(contacts.into_iter().map(|handle| (handle, Fetch::First)));
    }

    /// Queues a new fetch of a contact whose vCard changed, unless one is already waiting. One
    /// that is in flight may have been answered before the change, so it does not count.
    pub(super) fn refresh(&mut self, handle: Handle) {
        // A queued first fetch will read the new vCard just as well.
        if !self.queue.iter().any(|(queued, _)| *queued == handle) {
            self.queue.push_back((handle, Fetch::Refresh));
        }
    }

    /// Drops everything about a contact that left the roster: its place in the queue, an answer
    /// still to come, a profile not yet reported.
    pub(super) fn forget(&mut self, handle: &Handle) {
        self.queue.retain(|(queued, _)| queued != handle);
        self.in_flight.retain(|request| request.handle != *handle);
        self.ready.retain(|ready| ready.handle != *handle);
        if self.ready.is_empty() {
            self.ready_since = None;
        }
        self.release_buffers();
    }

    /// The next request to send, if one is queued and fewer than [`MAX_IN_FLIGHT`] are out.
    pub(super) fn next_request(&mut self, now: Instant) -> Option<Iq> {
        while self.in_flight.len() < MAX_IN_FLIGHT {
            let Some((handle, fetch)) = self.queue.pop_front() else {
                break;
            };
            self.release_buffers();
            // Handles come from roster items, which were JIDs; skip any that is not.
            let Ok(jid) = BareJid::new(handle.as_str()) else {
                continue;
            };
            self.requests_sent += 1;
            let id = format!("{ID_PREFIX}{}", self.requests_sent);
            let iq = Iq::from_get(id.clone(), VCardQuery).with_to(Jid::from(jid));
            self.in_flight.push(Request {
                id,
                handle,
                fetch,
                deadline: now + ANSWER_TIMEOUT,
            });
            return Some(iq);
        }
        None
    }

    /// Takes the answer to one of our requests; false if `iq` is not one (a ping's answer, a
    /// late answer, one from someone else than the contact asked).
    pub(super) fn answer(&mut self, iq: Iq, now: Instant) -> bool {
        if !matches!(iq, Iq::Result { .. } | Iq::Error { .. }) {
            return false;
        }
        let Some(at) = self.in_flight.iter().position(|request| {
            request.id == iq.id() && iq.from().is_some_and(|from| is_from(from, &request.handle))
        }) else {
            return false;
        };
        let Request { handle, fetch, .. } = self.in_flight.swap_remove(at);
        self.release_buffers();
        let profile = match iq {
            Iq::Result {
                payload: Some(payload),
                ..
            } if payload.is("vCard", ns::VCARD) => profile_of_vcard(&payload),
            Iq::Error { error, .. } => {
                debug!(%handle, condition = ?error.defined_condition, "no vCard");
                return true;
            }
            // No payload (RFC 6120 allows it; XEP-0054 says an empty vCard), or another one.
            _ => Profile::default(),
        };
        if fetch == Fetch::First && is_empty(&profile) {
            return true;
        }
        match self.ready.iter_mut().find(|ready| ready.handle == handle) {
            Some(ready) => ready.profile = profile,
            None => self.ready.push(ContactProfile { handle, profile }),
        }
        self.ready_since.get_or_insert(now);
        true
    }

    /// Gives up on the requests whose time is up: those contacts have no profile.
    pub(super) fn expire(&mut self, now: Instant) {
        self.in_flight.retain(|request| {
            let waiting = request.deadline > now;
            if !waiting {
                debug!(handle = %request.handle, "no answer to the vCard request in time");
            }
            waiting
        });
        self.release_buffers();
    }

    /// The profiles to report now, if any: when a batch is full, when everything asked has been
    /// answered, or when the oldest has waited [`BATCH_DELAY`].
    pub(super) fn take_batch(&mut self, now: Instant) -> Option<Vec<ContactProfile>> {
        let since = self.ready_since?;
        let due = self.ready.len() >= BATCH_MAX
            || (self.queue.is_empty() && self.in_flight.is_empty())
            || now >= since + BATCH_DELAY;
        if !due {
            return None;
        }
        let batch = if self.ready.len() > BATCH_MAX {
            let rest = self.ready.split_off(BATCH_MAX);
            std::mem::replace(&mut self.ready, rest)
        } else {
            std::mem::take(&mut self.ready)
        };
        self.ready_since = (!self.ready.is_empty()).then_some(now);
        Some(batch)
    }

    /// When the session must call [`expire`](Self::expire) and
    /// [`take_batch`](Self::take_batch) even if nothing else happens.
    pub(super) fn next_wakeup(&self) -> Option<Instant> {
        let batch = self.ready_since.map(|since| since + BATCH_DELAY);
        let expiry = self.in_flight.iter().map(|request| request.deadline).min();
        batch.into_iter().chain(expiry).min()
    }

    /// A whole roster queued at login leaves a large buffer behind, and the requests a smaller
    /// one: an idle session keeps neither.
    fn release_buffers(&mut self) {
        if self.queue.is_empty() && self.queue.capacity() > 0 {
            self.queue = VecDeque::new();
        }
        if self.in_flight.is_empty() && self.in_flight.capacity() > 0 {
            self.in_flight = Vec::new();
        }
    }
}

fn is_from(from: &Jid, handle: &Handle) -> bool {
    Handle::parse(Protocol::Xmpp, from.to_bare().as_str()).is_ok_and(|from| from == *handle)
}

fn is_empty(profile: &Profile) -> bool {
    profile.nickname.is_none() && profile.emails.is_empty() && profile.verified_address.is_none()
}

/// What a `<vCard xmlns='vcard-temp'/>` says for matching.
///
/// The name is `NICKNAME`, the name the contact chose to be called by; without one, `FN`, the
/// full name; without that, the parts of `N` (given, middle, family). One name only, as the
/// profile holds one, and the one a contact picked is the likelier to match what they use on
/// other networks. Whitespace is collapsed.
///
/// Addresses are every `EMAIL`'s `USERID` (or, as some old clients write it, the `EMAIL`'s own
/// text): trimmed, without `mailto:`, lower-cased, only those shaped like an address, without
/// duplicates, at most a few. An XMPP vCard is written by its owner, so nothing is verified.
pub(super) fn profile_of_vcard(vcard: &Element) -> Profile {
    let child_text = |parent: &Element, name: &str| {
        parent
            .get_child(name, ns::VCARD)
            .and_then(|child| name_text(&child.text()))
    };
    let nickname = child_text(vcard, "NICKNAME")
        .or_else(|| child_text(vcard, "FN"))
        .or_else(|| {
            let n = vcard.get_child("N", ns::VCARD)?;
            let parts: Vec<String> = ["GIVEN", "MIDDLE", "FAMILY"]
                .into_iter()
                .filter_map(|part| child_text(n, part))
                .collect();
            name_text(&parts.join(" "))
        });
    let mut emails: Vec<String> = Vec::new();
    for email in vcard
        .children()
        .filter(|child| child.is("EMAIL", ns::VCARD))
    {
        let raw = match email.get_child("USERID", ns::VCARD) {
            Some(userid) => userid.text(),
            None => email.text(),
        };
        if let Some(address) = email_address(&raw) {
            if !emails.contains(&address) {
                emails.push(address);
            }
        }
        if emails.len() == MAX_EMAILS {
            break;
        }
    }
    Profile {
        nickname,
        emails,
        verified_address: None,
    }
}

/// A name with its whitespace collapsed and its length bounded; `None` if blank.
fn name_text(raw: &str) -> Option<String> {
    let collapsed = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return None;
    }
    Some(match collapsed.char_indices().nth(MAX_NAME_CHARS) {
        Some((cut, _)) => collapsed[..cut].to_owned(),
        None => collapsed,
    })
}

/// `raw` as a lower-case e-mail address, if it looks like one: a local part without spaces or
/// the characters that delimit addresses, one `@`, and a domain of at least two dot-separated
/// labels of letters, digits and inner hyphens.
fn email_address(raw: &str) -> Option<String> {
    let trimmed = raw.trim();
    let trimmed = match trimmed.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("mailto:") => trimmed[7..].trim(),
        _ => trimmed,
    };
    let address = trimmed.to_lowercase();
    if address.len() > MAX_EMAIL_LEN {
        return None;
    }
    let (local, domain) = address.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"<>()[]\\,;:\"@".contains(c));
    let mut labels = domain.split('.');
    let domain_ok = domain.split('.').count() >= 2
        && labels.all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    (local_ok && domain_ok).then_some(address)
}

/// The avatar hash a contact's presence announces (XEP-0153 `<x xmlns='vcard-temp:x:update'>`):
/// `Some("")` for "no avatar", `None` when the presence says nothing about it (no element, an
/// empty one: "not ready to say", or a hash that is not hex). Lower case.
pub(super) fn avatar_hash(payloads: &[Element]) -> Option<String> {
    let photo = payloads
        .iter()
        .find(|payload| payload.is("x", ns::VCARD_UPDATE))?
        .get_child("photo", ns::VCARD_UPDATE)?;
    let hash = photo.text().trim().to_ascii_lowercase();
    (hash.len() <= 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hash)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

    use super::*;

    fn vcard(xml: &str) -> Profile {
        profile_of_vcard(&xml.parse::<Element>().unwrap())
    }

    fn handle(jid: &str) -> Handle {
        Handle::parse(Protocol::Xmpp, jid).unwrap()
    }

    fn profile(nickname: Option<&str>, emails: &[&str]) -> Profile {
        Profile {
            nickname: nickname.map(str::to_owned),
            emails: emails.iter().map(|e| (*e).to_owned()).collect(),
            verified_address: None,
        }
    }

    #[test]
    fn nickname_and_emails_are_read() {
        assert_eq!(
            vcard(
                "<vCard xmlns='vcard-temp'>
                   <FN>Eve Example</FN>
                   <NICKNAME>  Evie \n</NICKNAME>
                   <EMAIL><INTERNET/><PREF/><USERID> Eve@Example.ORG </USERID></EMAIL>
                   <EMAIL><HOME/><USERID>mailto:eve.home@example.com</USERID></EMAIL>
                   <EMAIL><USERID>eve@example.org</USERID></EMAIL>
                   <EMAIL>old.style@example.net</EMAIL>
                   <EMAIL><USERID>not an address</USERID></EMAIL>
                   <EMAIL><USERID/></EMAIL>
                   <JABBERID>eve@localhost</JABBERID>
                 </vCard>"
            ),
            profile(
                Some("Evie"),
                &[
                    "eve@example.org",
                    "eve.home@example.com",
                    "old.style@example.net"
                ]
            )
        );
    }

    #[test]
    fn the_name_falls_back_to_the_full_name_then_its_parts() {
        assert_eq!(
            vcard("<vCard xmlns='vcard-temp'><NICKNAME> </NICKNAME><FN>Eve  Example</FN></vCard>"),
            profile(Some("Eve Example"), &[])
        );
        // The shape Prosody's mod_vcard_legacy answers: empty elements for missing fields.
        assert_eq!(
            vcard(
                "<vCard xmlns='vcard-temp'><FN/><N><FAMILY>Example</FAMILY><GIVEN>Eve</GIVEN>\
                 <MIDDLE/><PREFIX>Dr</PREFIX><SUFFIX/></N></vCard>"
            ),
            profile(Some("Eve Example"), &[])
        );
        let long = "x".repeat(MAX_NAME_CHARS + 10);
        assert_eq!(
            vcard(&format!(
                "<vCard xmlns='vcard-temp'><NICKNAME>{long}</NICKNAME></vCard>"
            ))
            .nickname
            .map(|name| name.chars().count()),
            Some(MAX_NAME_CHARS)
        );
    }

    #[test]
    fn empty_vcards_and_foreign_elements_give_nothing() {
        for xml in [
            "<vCard xmlns='vcard-temp'/>",
            "<vCard xmlns='vcard-temp'><FN/><N><FAMILY/><GIVEN/></N><EMAIL><INTERNET/></EMAIL>\
             <PHOTO><EXTVAL>https://example.org/a.png</EXTVAL></PHOTO></vCard>",
            // Right names, wrong namespace.
            "<vCard xmlns='vcard-temp'><NICKNAME xmlns='urn:other'>Evie</NICKNAME>\
             <EMAIL xmlns='urn:other'><USERID>eve@example.org</USERID></EMAIL></vCard>",
        ] {
            assert_eq!(vcard(xml), Profile::default(), "{xml}");
        }
    }

    #[test]
    fn only_address_shaped_emails_are_kept() {
        for good in [
            "bob@example.org",
            "Bob.Smith+tag@Mail.Example.co.uk",
            "mailto:bob@example.org",
            "MAILTO: bob@example.org",
            "jörg@bücher.example",
        ] {
            assert!(email_address(good).is_some(), "{good}");
        }
        assert_eq!(
            email_address(" MailTo:Bob@Example.ORG ").as_deref(),
            Some("bob@example.org")
        );
        for bad in [
            "",
            "bob",
            "bob@",
            "@example.org",
            "bob@localhost",
            "bob@@example.org",
            "bob@example..org",
            "bob@-example.org",
            "bob@example.org.",
            "bob smith@example.org",
            "<bob@example.org>",
            "bob@exa mple.org",
            ".bob@example.org",
            "Bob <bob@example.org>",
        ] {
            assert_eq!(email_address(bad), None, "{bad}");
        }
        let long = format!("{}@example.org", "b".repeat(MAX_EMAIL_LEN));
        assert_eq!(email_address(&long), None);
        let many: String = (0..MAX_EMAILS + 3)
            .map(|i| format!("<EMAIL><USERID>u{i}@example.org</USERID></EMAIL>"))
            .collect();
        assert_eq!(
            vcard(&format!("<vCard xmlns='vcard-temp'>{many}</vCard>"))
                .emails
                .len(),
            MAX_EMAILS
        );
    }

    #[test]
    fn avatar_hashes_are_read_from_presence() {
        let x = |xml: &str| avatar_hash(&[xml.parse::<Element>().unwrap()]);
        assert_eq!(
            x("<x xmlns='vcard-temp:x:update'>\
               <photo> 01B87FCD030B72895FF8E88DB57EC525450F000D </photo></x>")
            .as_deref(),
            Some("01b87fcd030b72895ff8e88db57ec525450f000d")
        );
        assert_eq!(
            x("<x xmlns='vcard-temp:x:update'><photo/></x>").as_deref(),
            Some("")
        );
        assert_eq!(x("<x xmlns='vcard-temp:x:update'/>"), None);
        assert_eq!(
            x("<x xmlns='vcard-temp:x:update'><photo>not-hex</photo></x>"),
            None
        );
        assert_eq!(x("<x xmlns='jabber:x:other'><photo>ab</photo></x>"), None);
        assert_eq!(avatar_hash(&[]), None);
    }

    /// What the session does with a request: sends it, and gets its id and recipient back.
    fn sent(fetches: &mut VcardFetches, now: Instant) -> Option<(String, String)> {
        let iq = fetches.next_request(now)?;
        let Iq::Get {
            to: Some(to),
            id,
            payload,
            ..
        } = iq
        else {
            panic!("not a get with a recipient: {iq:?}");
        };
        assert!(payload.is("vCard", ns::VCARD));
        Some((id, to.to_string()))
    }

    fn result(id: &str, from: &str, xml: &str) -> Iq {
        Iq::Result {
            from: Some(Jid::new(from).unwrap()),
            to: None,
            id: id.to_owned(),
            payload: Some(xml.parse().unwrap()),
        }
    }

    fn error(id: &str, from: &str, condition: DefinedCondition) -> Iq {
        Iq::Error {
            from: Some(Jid::new(from).unwrap()),
            to: None,
            id: id.to_owned(),
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

    const EVIE: &str = "<vCard xmlns='vcard-temp'><NICKNAME>Evie</NICKNAME></vCard>";
    const EMPTY: &str = "<vCard xmlns='vcard-temp'/>";

    #[test]
    fn a_few_requests_at_a_time_then_one_batch_of_the_profiles_found() {
        let now = Instant::now();
        let mut fetches = VcardFetches::default();
        let contacts: Vec<String> = (0..MAX_IN_FLIGHT + 2)
            .map(|i| format!("c{i}@example.org"))
            .collect();
        fetches.fetch(contacts.iter().map(|jid| handle(jid)));

        let mut out: Vec<(String, String)> =
            std::iter::from_fn(|| sent(&mut fetches, now)).collect();
        assert_eq!(out.len(), MAX_IN_FLIGHT, "at most this many at once");
        assert_eq!(out[0].1, "c0@example.org");
        let ids: std::collections::HashSet<&String> = out.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), out.len(), "every request has its own id");
        assert_eq!(fetches.next_wakeup(), Some(now + ANSWER_TIMEOUT));

        // Answers with the right id but from someone else, or unknown ids, are not ours.
        let (id0, to0) = out.remove(0);
        assert!(!fetches.answer(result(&id0, "mallory@example.org", EVIE), now));
        assert!(!fetches.answer(result("switchboard-ping-1", &to0, EVIE), now));
        // A full JID of the contact is still the contact.
        assert!(fetches.answer(result(&id0, &format!("{to0}/desk"), EVIE), now));
        // An answer frees a place for the next contact.
        let (id6, to6) = sent(&mut fetches, now).expect("a place is free");
        assert_eq!(to6, format!("c{MAX_IN_FLIGHT}@example.org"));
        assert!(sent(&mut fetches, now).is_none());
        // Not all answered yet, and the first profile is fresh: no batch.
        assert_eq!(fetches.take_batch(now), None);

        // Errors and empty vCards: no profile.
        let (id1, to1) = out.remove(0);
        assert!(fetches.answer(error(&id1, &to1, DefinedCondition::ItemNotFound), now));
        let (id2, to2) = out.remove(0);
        assert!(fetches.answer(result(&id2, &to2, EMPTY), now));
        let (id3, to3) = out.remove(0);
        assert!(fetches.answer(
            Iq::Result {
                from: Some(Jid::new(&to3).unwrap()),
                to: None,
                id: id3,
                payload: None
            },
            now
        ));
        assert!(fetches.answer(result(&id6, &to6, EVIE), now));
        // The rest never answer: they time out, and so everything asked is settled.
        let later = now + ANSWER_TIMEOUT;
        let (id7, to7) = sent(&mut fetches, now).expect("the last one");
        assert!(sent(&mut fetches, now).is_none());
        fetches.expire(later);
        assert!(!fetches.answer(result(&id7, &to7, EVIE), later), "too late");
        assert_eq!(
            fetches.take_batch(later),
            Some(vec![
                ContactProfile {
                    handle: handle(&to0),
                    profile: profile(Some("Evie"), &[])
                },
                ContactProfile {
                    handle: handle(&to6),
                    profile: profile(Some("Evie"), &[])
                },
            ])
        );
        assert_eq!(fetches.take_batch(later), None);
        assert_eq!(fetches.next_wakeup(), None);
        assert_eq!(
            (fetches.queue.capacity(), fetches.in_flight.capacity()),
            (0, 0),
            "an idle session keeps no buffers"
        );
    }

    #[test]
    fn a_slow_answer_does_not_hold_back_the_profiles_read() {
        let now = Instant::now();
        let mut fetches = VcardFetches::default();
        fetches.fetch([handle("a@example.org"), handle("b@example.org")]);
        let (id_a, to_a) = sent(&mut fetches, now).unwrap();
        let _slow = sent(&mut fetches, now).unwrap();
        assert!(fetches.answer(result(&id_a, &to_a, EVIE), now));
        assert_eq!(fetches.take_batch(now), None);
        assert_eq!(fetches.next_wakeup(), Some(now + BATCH_DELAY));
        let batch = fetches.take_batch(now + BATCH_DELAY).expect("due");
        assert_eq!(batch.len(), 1);
        assert_eq!(fetches.next_wakeup(), Some(now + ANSWER_TIMEOUT));
    }

    #[test]
    fn big_rosters_are_reported_in_several_batches() {
        let now = Instant::now();
        let mut fetches = VcardFetches::default();
        let contacts: Vec<String> = (0..BATCH_MAX + 5)
            .map(|i| format!("c{i}@example.org"))
            .collect();
        fetches.fetch(contacts.iter().map(|jid| handle(jid)));
        let mut batches = Vec::new();
        while let Some((id, to)) = sent(&mut fetches, now) {
            assert!(fetches.answer(result(&id, &to, EVIE), now));
            batches.extend(fetches.take_batch(now));
        }
        assert_eq!(
            batches.iter().map(Vec::len).collect::<Vec<_>>(),
            [BATCH_MAX, 5]
        );
    }

    #[test]
    fn a_refresh_reports_even_an_emptied_vcard_and_forgotten_contacts_report_nothing() {
        let now = Instant::now();
        let mut fetches = VcardFetches::default();
        let eve = handle("eve@example.org");
        fetches.refresh(eve.clone());
        fetches.refresh(eve.clone());
        let (id, to) = sent(&mut fetches, now).unwrap();
        assert!(
            sent(&mut fetches, now).is_none(),
            "one refresh queued, not two"
        );
        assert!(fetches.answer(result(&id, &to, EMPTY), now));
        assert_eq!(
            fetches.take_batch(now),
            Some(vec![ContactProfile {
                handle: eve.clone(),
                profile: Profile::default()
            }])
        );

        // Forgotten while queued, in flight, or read but not reported: nothing comes of it.
        fetches.fetch([eve.clone(), handle("ann@example.org")]);
        let (id, to) = sent(&mut fetches, now).unwrap();
        fetches.forget(&eve);
        assert!(!fetches.answer(result(&id, &to, EVIE), now));
        let (id, to) = sent(&mut fetches, now).unwrap();
        assert_eq!(to, "ann@example.org");
        assert!(fetches.answer(result(&id, &to, EVIE), now));
        fetches.forget(&handle("ann@example.org"));
        assert_eq!(fetches.take_batch(now), None);
        assert_eq!(fetches.next_wakeup(), None);
    }
}
