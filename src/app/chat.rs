//! Chat with a person: sending (routed by the domain's rules, stored before the answer, sent by
//! the outbox), receiving (stored once per network message id), and reading conversations.

use std::collections::HashMap;

use uuid::Uuid;

use super::{AppError, Caller, Switchboard};
use crate::connectors::{IncomingMessage, Invitation};
use crate::domain::ids::{AccountId, ContactId, MetaContactId, PersonRef, UserId};
use crate::domain::routing::{self, Member, Routing, RoutingError};
use crate::domain::user::{User, UserCommand};
use crate::store::messages::{Incoming, Message, MessageKind, Outgoing, Party};

/// The longest message accepted, in characters.
pub const MAX_MESSAGE_CHARS: usize = 16_000;
/// The longest idempotency key accepted, in characters.
pub const MAX_CLIENT_ID_CHARS: usize = 200;
/// The most messages one page of a conversation holds.
pub const MAX_PAGE: i64 = 200;
/// The most message changes one read for a subscription returns.
pub const CHANGES_PAGE: usize = 500;

/// What an account received: a message, or a stranger's invitation to talk.
pub(super) enum Received {
    Message(IncomingMessage),
    Invitation(Invitation),
}

/// Someone the user talks to, with every contact of theirs that messages may belong to.
#[derive(Debug, Clone)]
pub struct Correspondent {
    /// `None` for a stranger: someone who wrote but is no contact.
    pub person: Option<PersonRef>,
    /// The id clients use for the conversation: the meta-contact's or the contact's.
    pub id: Uuid,
    pub name: String,
    /// Every contact of the person, departed ones included (their messages stay).
    pub contacts: Vec<ContactId>,
}

/// One person's conversation at a glance.
#[derive(Debug, Clone)]
pub struct ConversationSummary {
    pub with: Correspondent,
    pub last: Message,
    pub unread: i64,
}

/// One page of a conversation, newest first.
#[derive(Debug, Clone)]
pub struct ConversationPage {
    pub with: Correspondent,
    pub messages: Vec<Message>,
    pub has_more: bool,
}

impl Switchboard {
    /// Sends `text` to a person (a meta-contact or a contact id) through `via` (one of their
    /// contacts) or where the routing rules say. The message is stored before the answer;
    /// the same `client_id` again answers the message stored the first time.
    pub async fn send_message(
        &self,
        caller: Caller,
        to: Uuid,
        text: String,
        via: Option<ContactId>,
        client_id: Option<String>,
    ) -> Result<Message, AppError> {
        let user = caller.user;
        if text.trim().is_empty() {
            return Err(AppError::BadInput("text: must not be empty".into()));
        }
        if text.chars().count() > MAX_MESSAGE_CHARS {
            return Err(AppError::BadInput(format!(
                "text: at most {MAX_MESSAGE_CHARS} characters"
            )));
        }
        if let Some(key) = &client_id {
            if key.is_empty() || key.chars().count() > MAX_CLIENT_ID_CHARS {
                return Err(AppError::BadInput(format!(
                    "clientId: 1 to {MAX_CLIENT_ID_CHARS} characters"
                )));
            }
        }
        let state = self.load(user).await?;
        let with = correspondent(&state, to)
            .filter(|c| c.person.is_some())
            .ok_or_else(|| AppError::NotFound(format!("to: no contact or meta-contact {to}")))?;
        let (party, routing) = self.route(user, &state, &with, via).await?;
        let reason = match &routing {
            Routing::Send { reason, .. } | Routing::Queue { reason, .. } => reason.clone(),
        };
        let outgoing = Outgoing {
            id: Uuid::now_v7(),
            to: party,
            body: text,
            client_id,
            addressed_to: Some(with.id),
            auto_route: via.is_none() && matches!(with.person, Some(PersonRef::MetaContact(_))),
            route_reason: reason,
        };
        let send_now = matches!(routing, Routing::Send { .. });
        // Sendable through this node's connection: stored claimed for a first attempt (unless
        // older messages wait), and sent at once in the user's outbox turn, instead of asking
        // the outbox to find it.
        let here = send_now && self.live.session(user, outgoing.to.account_id).is_some();
        let turn = self.outbox_turn(user);
        let turn = if here { Some(turn.lock().await) } else { None };
        let (party, reason) = (outgoing.to.clone(), outgoing.route_reason.clone());
        let claim = here.then_some(super::outbox::ATTEMPT_HOLD);
        let (message, new) = self.messages.queue(user, &outgoing, claim).await?;
        if new && message.attempts > 0 {
            let id = message.id;
            // Stored: whatever happens now, the outbox sees it through.
            if let Err(e) = self.deliver(&message, party, reason).await {
                tracing::warn!(%user, message = %id, error = %e, "message stored; its attempt failed");
            }
        } else if new && send_now {
            drop(turn);
            self.kick_outbox(user).await;
        }
        Ok(self
            .messages
            .get(user, message.id)
            .await?
            .unwrap_or(message))
    }

    /// Where a message to `with` goes now: the contact (with its account) and the rule's answer.
    /// A queued message without a route is kept on the person's first contact still listed.
    pub(super) async fn route(
        &self,
        user: UserId,
        state: &User,
        with: &Correspondent,
        via: Option<ContactId>,
    ) -> Result<(Party, Routing), AppError> {
        let listed: Vec<Party> = with
            .contacts
            .iter()
            .filter_map(|id| party(state, *id))
            .collect();
        let (presence, last_inbound) = tokio::try_join!(
            async { Ok::<_, AppError>(self.live_views.presence(user).await?) },
            async { Ok::<_, AppError>(self.messages.last_inbound(user, &with.contacts).await?) },
        )?;
        let members: Vec<Member<'_>> = listed
            .iter()
            .map(|p| Member {
                contact_id: p.contact_id,
                protocol: p.protocol,
                presence: presence.get(&(p.account_id, p.handle.clone())),
                last_inbound: last_inbound.get(&p.contact_id).copied(),
            })
            .collect();
        let preference = with.person.and_then(|p| state.route_preference(p));
        let routing =
            routing::route(&with.name, &members, via, preference).map_err(|e| match e {
                RoutingError::NoContacts => AppError::BadInput(format!(
                    "to: {} has no contact on the list to write to",
                    with.name
                )),
                RoutingError::NotAMember(id) => {
                    AppError::BadInput(format!("via: contact {id} is not one of {}'s", with.name))
                }
            })?;
        let chosen = match &routing {
            Routing::Send { contact_id, .. } => Some(*contact_id),
            Routing::Queue { contact_id, .. } => *contact_id,
        };
        let party = chosen
            .and_then(|id| listed.iter().find(|p| p.contact_id == id))
            .or_else(|| listed.first())
            .cloned()
            .ok_or_else(|| AppError::internal("a route outside the person's contacts"))?;
        Ok((party, routing))
    }

    /// Sets (or with `via: None` clears) the contact a meta-contact's messages go through.
    pub async fn set_route_preference(
        &self,
        caller: Caller,
        meta_contact: MetaContactId,
        via: Option<ContactId>,
    ) -> Result<(), AppError> {
        self.execute(
            caller.user,
            UserCommand::SetRoutePreference {
                person: PersonRef::MetaContact(meta_contact),
                via,
            },
            crate::domain::metadata::Actor::User(caller.user),
            caller.request_id,
        )
        .await?;
        Ok(())
    }

    /// Stores what one account received (each network message once) and wakes the outbox:
    /// someone who writes can be written to.
    pub(super) async fn receive(
        &self,
        user: UserId,
        account: AccountId,
        messages: Vec<Received>,
    ) -> Result<Vec<Message>, AppError> {
        let state = self.load(user).await?;
        let Some(bound) = state.account(account) else {
            return Ok(Vec::new());
        };
        let protocol = bound.account.protocol;
        let from = |handle: crate::domain::ids::Handle| Party {
            contact_id: ContactId::for_handle(account, &handle),
            account_id: account,
            protocol,
            handle,
        };
        let incoming: Vec<Incoming> = messages
            .into_iter()
            .map(|received| match received {
                Received::Message(m) => Incoming {
                    from: from(m.from),
                    kind: MessageKind::Text,
                    body: m.body,
                    network_id: m.id,
                    sent_at: m.sent_at,
                },
                Received::Invitation(i) => Incoming {
                    from: from(i.from),
                    kind: MessageKind::Invitation,
                    body: i.note.unwrap_or_default(),
                    network_id: Some(i.id),
                    sent_at: i.received_at,
                },
            })
            .collect();
        let count = incoming.len() as u64;
        let recorded = self.intake.record(user, incoming).await?;
        self.metrics.messages("in", count);
        Ok(recorded)
    }

    /// One page of the conversation with `with` (a meta-contact, contact or stranger's contact
    /// id), newest first, before the message `after` (the previous page's last).
    pub async fn conversation(
        &self,
        user: UserId,
        with: Uuid,
        first: i64,
        after: Option<Uuid>,
    ) -> Result<ConversationPage, AppError> {
        if !(1..=MAX_PAGE).contains(&first) {
            return Err(AppError::BadInput(format!("first: 1 to {MAX_PAGE}")));
        }
        let state = self.load(user).await?;
        let with = self.find_correspondent(user, &state, with).await?;
        let before = match after {
            None => None,
            Some(id) => Some(
                self.messages
                    .get(user, id)
                    .await?
                    .filter(|m| with.contacts.contains(&m.contact_id))
                    .ok_or_else(|| {
                        AppError::BadInput(format!("after: no message {id} in this conversation"))
                    })?
                    .position,
            ),
        };
        let mut messages = self
            .messages
            .conversation(user, &with.contacts, before, first + 1)
            .await?;
        let has_more = messages.len() > usize::try_from(first).unwrap_or(usize::MAX);
        messages.truncate(usize::try_from(first).unwrap_or(usize::MAX));
        Ok(ConversationPage {
            with,
            messages,
            has_more,
        })
    }

    /// Every conversation, the latest activity first, with unread counts. Strangers' ones are
    /// among them, with `person: None` (message requests).
    pub async fn conversations(&self, user: UserId) -> Result<Vec<ConversationSummary>, AppError> {
        let state = self.load(user).await?;
        let activity = self.messages.activity(user).await?;
        let mut people: HashMap<Uuid, (Correspondent, i64, i64)> = HashMap::new();
        for contact in activity {
            let with = person_of(&state, contact.contact_id);
            let entry = people.entry(with.id).or_insert((with, 0, 0));
            entry.1 = entry.1.max(contact.last_position);
            entry.2 += contact.unread;
        }
        let positions: Vec<i64> = people.values().map(|(_, last, _)| *last).collect();
        let mut last: HashMap<i64, Message> = self
            .messages
            .at_positions(user, &positions)
            .await?
            .into_iter()
            .map(|m| (m.position, m))
            .collect();
        let mut summaries: Vec<ConversationSummary> = people
            .into_values()
            .filter_map(|(mut with, position, unread)| {
                let last = last.remove(&position)?;
                if with.name.is_empty() {
                    with.name = last.handle.as_str().to_owned();
                }
                Some(ConversationSummary { with, last, unread })
            })
            .collect();
        summaries.sort_by_key(|s| std::cmp::Reverse(s.last.position));
        Ok(summaries)
    }

    /// Marks the conversation with `with` read up to the message `up_to`.
    pub async fn mark_read(&self, user: UserId, with: Uuid, up_to: Uuid) -> Result<(), AppError> {
        let state = self.load(user).await?;
        let with = self.find_correspondent(user, &state, with).await?;
        let message = self
            .messages
            .get(user, up_to)
            .await?
            .filter(|m| with.contacts.contains(&m.contact_id))
            .ok_or_else(|| {
                AppError::BadInput(format!("upTo: no message {up_to} in this conversation"))
            })?;
        self.messages
            .mark_read(user, &with.contacts, message.position)
            .await?;
        Ok(())
    }

    /// Makes a contact of someone who wrote or invited the user without being one (a message
    /// request): marked new, and kept on the list whatever the account's upstream roster says.
    /// Where the account is connected through this node, the network is told too: it joins
    /// their invitations and adds them to the account's own contact list (see
    /// `SessionControl::accept`); a Matrix invitation left pending is joined at the next login
    /// otherwise, since it then comes from a contact.
    pub async fn accept_message_request(
        &self,
        caller: Caller,
        contact: ContactId,
    ) -> Result<crate::projections::contacts::ContactList, AppError> {
        let user = caller.user;
        let wrote = self
            .messages
            .conversation(user, &[contact], None, 1)
            .await?;
        let message = wrote.first().ok_or_else(|| {
            AppError::NotFound(format!("contactId: no message request from {contact}"))
        })?;
        let (account, handle) = (message.account_id, message.handle.clone());
        let list = self
            .bind(
                caller,
                UserCommand::AcceptMessageRequest {
                    account_id: account,
                    handle: handle.clone(),
                    display_name: None,
                },
            )
            .await?;
        if let Some(session) = self.live.session(user, account) {
            let invitations = self.messages.invitations(user, contact).await?;
            // The contact is the user's now, whatever the network answers: a refusal is logged.
            if let Err(e) = session.accept(&handle, &invitations).await {
                tracing::warn!(%account, error = %e, "message request not accepted upstream");
            }
        }
        Ok(list)
    }

    /// The user's last message change number (see `store::messages`).
    pub async fn last_message_change(&self, user: UserId) -> Result<i64, AppError> {
        Ok(self.messages.last_change(user).await?)
    }

    /// The user's message changes after the change number `after`, in order.
    pub async fn message_changes(
        &self,
        user: UserId,
        after: i64,
    ) -> Result<Vec<Message>, AppError> {
        let limit = i64::try_from(CHANGES_PAGE).unwrap_or(i64::MAX);
        Ok(self.messages.changes_after(user, after, limit).await?)
    }

    /// The person behind `id`, or the stranger whose contact id it is (someone who wrote).
    async fn find_correspondent(
        &self,
        user: UserId,
        state: &User,
        id: Uuid,
    ) -> Result<Correspondent, AppError> {
        if let Some(found) = correspondent(state, id) {
            return Ok(found);
        }
        let contact = ContactId(id);
        let wrote = self
            .messages
            .conversation(user, &[contact], None, 1)
            .await?;
        match wrote.first() {
            Some(message) => Ok(Correspondent {
                person: None,
                id,
                name: message.handle.as_str().to_owned(),
                contacts: vec![contact],
            }),
            None => Err(AppError::NotFound(format!(
                "with: no contact, meta-contact or conversation {id}"
            ))),
        }
    }
}

/// A meta-contact or a contact of the user, by id.
pub(super) fn correspondent(state: &User, id: Uuid) -> Option<Correspondent> {
    if let Some(meta) = state.meta_contacts().get(&MetaContactId(id)) {
        return Some(Correspondent {
            person: Some(PersonRef::MetaContact(MetaContactId(id))),
            id,
            name: meta.name.to_string(),
            contacts: meta.members.clone(),
        });
    }
    let contact = state.contacts().get(&ContactId(id))?;
    Some(Correspondent {
        person: Some(PersonRef::Contact(ContactId(id))),
        id,
        name: contact
            .display_name
            .clone()
            .unwrap_or_else(|| contact.handle.as_str().to_owned()),
        contacts: vec![ContactId(id)],
    })
}

/// The conversation a contact's messages belong to: its meta-contact's, its own, or (no
/// contact at all) a stranger's.
fn person_of(state: &User, contact: ContactId) -> Correspondent {
    let meta = state.contacts().get(&contact).and_then(|c| c.meta_contact);
    meta.and_then(|m| correspondent(state, m.0))
        .or_else(|| correspondent(state, contact.0))
        .unwrap_or(Correspondent {
            person: None,
            id: contact.0,
            name: String::new(),
            contacts: vec![contact],
        })
}

/// Where a message to `contact` goes: the contact on its account, while it is listed and the
/// account bound.
fn party(state: &User, contact: ContactId) -> Option<Party> {
    let found = state.contacts().get(&contact).filter(|c| c.is_listed())?;
    let account = state.account(found.account_id)?;
    Some(Party {
        contact_id: contact,
        account_id: found.account_id,
        protocol: account.account.protocol,
        handle: found.handle.clone(),
    })
}
