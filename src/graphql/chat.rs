//! Chat: sending to a person, conversations, read markers, and the routing preference.

use async_graphql::{Context, Enum, Object, SimpleObject, Subscription, ID};
use chrono::{DateTime, Utc};
use futures::stream::{self, Stream, StreamExt};

use super::subscriptions::next_change;
use super::types::{ContactList, Protocol};
use super::{api, caller, parse_id};
use crate::app::chat::{ConversationPage, ConversationSummary, Correspondent};
use crate::domain::ids::{ContactId, MetaContactId, PersonRef};
use crate::store::messages::{self, Direction};

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum MessageDirection {
    /// Received from the person.
    Incoming,
    /// Sent by the user.
    Outgoing,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum MessageState {
    /// Incoming, stored.
    Received,
    /// Outgoing, waiting to go out: nobody reachable yet, or the account reconnecting.
    Queued,
    /// Outgoing, handed to the network.
    Sent,
    /// Outgoing, refused by the network (`failure` says why).
    Failed,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum MessageKind {
    /// A text message.
    Text,
    /// A stranger's invitation to talk (Matrix): a message request before anything they wrote
    /// can be read; `body` is what they said with it, often empty. `acceptMessageRequest`
    /// joins it, and what they wrote follows.
    Invitation,
}

/// One message of a conversation.
#[derive(SimpleObject, Clone, Debug)]
pub struct Message {
    pub id: ID,
    pub direction: MessageDirection,
    pub kind: MessageKind,
    pub state: MessageState,
    pub body: String,
    /// The network it went through (outgoing: the one chosen so far).
    pub network: Protocol,
    /// The contact it was exchanged with, on that network.
    pub contact_id: ID,
    pub handle: String,
    pub account_id: ID,
    /// When it was stored.
    pub at: DateTime<Utc>,
    /// Incoming: when the sender sent it (as the network says); outgoing: when it went out.
    pub sent_at: Option<DateTime<Utc>>,
    /// Outgoing: why it goes through this network, in words.
    pub route_reason: Option<String>,
    pub failure: Option<String>,
    pub client_id: Option<String>,
}

impl From<messages::Message> for Message {
    fn from(m: messages::Message) -> Self {
        Self {
            id: ID(m.id.to_string()),
            direction: match m.direction {
                Direction::In => MessageDirection::Incoming,
                Direction::Out => MessageDirection::Outgoing,
            },
            kind: match m.kind {
                messages::MessageKind::Text => MessageKind::Text,
                messages::MessageKind::Invitation => MessageKind::Invitation,
            },
            state: match m.state {
                messages::MessageState::Received => MessageState::Received,
                messages::MessageState::Queued => MessageState::Queued,
                messages::MessageState::Sent => MessageState::Sent,
                messages::MessageState::Failed => MessageState::Failed,
            },
            body: m.body,
            network: m.protocol.into(),
            contact_id: ID(m.contact_id.to_string()),
            handle: m.handle.as_str().to_owned(),
            account_id: ID(m.account_id.to_string()),
            at: m.created_at,
            sent_at: m.sent_at,
            route_reason: m.route_reason,
            failure: m.failure,
            client_id: m.client_id,
        }
    }
}

/// Whom a conversation is with.
#[derive(SimpleObject, Clone, Debug)]
pub struct ConversationPartner {
    /// The meta-contact's id, or the contact's: give it to `conversation`, `sendMessage`, `markRead`.
    pub id: ID,
    pub name: String,
    /// Someone who wrote or invited the user but is no contact: a message request.
    pub is_request: bool,
    /// Whether `id` is a meta-contact's.
    pub is_meta_contact: bool,
}

impl From<Correspondent> for ConversationPartner {
    fn from(c: Correspondent) -> Self {
        Self {
            id: ID(c.id.to_string()),
            name: c.name,
            is_request: c.person.is_none(),
            is_meta_contact: matches!(c.person, Some(PersonRef::MetaContact(_))),
        }
    }
}

/// A page of a conversation, newest first.
#[derive(SimpleObject, Clone, Debug)]
pub struct Conversation {
    pub with: ConversationPartner,
    pub messages: Vec<Message>,
    /// Older messages exist: pass the last message's id as `after`.
    pub has_more: bool,
}

impl From<ConversationPage> for Conversation {
    fn from(page: ConversationPage) -> Self {
        Self {
            with: page.with.into(),
            messages: page.messages.into_iter().map(Message::from).collect(),
            has_more: page.has_more,
        }
    }
}

/// A conversation at a glance.
#[derive(SimpleObject, Clone, Debug)]
pub struct ConversationOverview {
    pub with: ConversationPartner,
    pub last_message: Message,
    /// Incoming messages after the read marker.
    pub unread: i64,
}

impl From<ConversationSummary> for ConversationOverview {
    fn from(s: ConversationSummary) -> Self {
        Self {
            with: s.with.into(),
            last_message: s.last.into(),
            unread: s.unread,
        }
    }
}

#[derive(Default)]
pub struct ChatQuery;

#[Object]
impl ChatQuery {
    /// The messages exchanged with a person (meta-contact or contact id, or a requester's
    /// contact id) across all their networks, newest first.
    async fn conversation(
        &self,
        ctx: &Context<'_>,
        with: ID,
        #[graphql(default = 50)] first: i64,
        after: Option<ID>,
    ) -> async_graphql::Result<Conversation> {
        let (app, caller) = caller(ctx).await?;
        let with = parse_id("with", &with, |u| u)?;
        let after = after.map(|a| parse_id("after", &a, |u| u)).transpose()?;
        Ok(api(app.conversation(caller.user, with, first, after).await)?.into())
    }

    /// Every conversation, latest activity first, with unread counts.
    async fn conversations(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<ConversationOverview>> {
        let (app, caller) = caller(ctx).await?;
        let all = api(app.conversations(caller.user).await)?;
        Ok(all.into_iter().map(ConversationOverview::from).collect())
    }
}

#[derive(Default)]
pub struct ChatMutation;

#[Object]
impl ChatMutation {
    /// Sends `text` to a person (meta-contact or contact id) through `via` (one of their
    /// contacts), or where the routing rules say: the user's preference, the most available
    /// network, where they last wrote. Stored before the answer; with nobody reachable it is
    /// `QUEUED` and goes out when someone is. The same `clientId` twice is one message.
    async fn send_message(
        &self,
        ctx: &Context<'_>,
        to: ID,
        text: String,
        via: Option<ID>,
        client_id: Option<String>,
    ) -> async_graphql::Result<Message> {
        let (app, caller) = caller(ctx).await?;
        let to = parse_id("to", &to, |u| u)?;
        let via = via.map(|v| parse_id("via", &v, ContactId)).transpose()?;
        Ok(api(app.send_message(caller, to, text, via, client_id).await)?.into())
    }

    /// Messages to this meta-contact go through `via` (one of its contacts) while its account
    /// is connected; without `via`, the routing rules choose again. Recorded in the history.
    async fn set_route_preference(
        &self,
        ctx: &Context<'_>,
        meta_contact_id: ID,
        via: Option<ID>,
    ) -> async_graphql::Result<bool> {
        let (app, caller) = caller(ctx).await?;
        let meta = parse_id("metaContactId", &meta_contact_id, MetaContactId)?;
        let via = via.map(|v| parse_id("via", &v, ContactId)).transpose()?;
        api(app.set_route_preference(caller, meta, via).await)?;
        Ok(true)
    }

    /// Makes a contact of someone who wrote or invited the user without being one (a
    /// conversation with `isRequest`): marked new, and kept on the list even while the
    /// network's own contact list does not have them. The network is told where the account is
    /// connected: XMPP adds them to the roster and shares presence both ways, Matrix joins their
    /// invitations (what they wrote there follows). Nostr's follow list is public and left alone.
    async fn accept_message_request(
        &self,
        ctx: &Context<'_>,
        contact_id: ID,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let contact = parse_id("contactId", &contact_id, ContactId)?;
        let list = api(app.accept_message_request(caller, contact).await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    /// Marks the conversation with `with` read up to the message `upTo`.
    async fn mark_read(
        &self,
        ctx: &Context<'_>,
        with: ID,
        up_to: ID,
    ) -> async_graphql::Result<bool> {
        let (app, caller) = caller(ctx).await?;
        let with = parse_id("with", &with, |u| u)?;
        let up_to = parse_id("upTo", &up_to, |u| u)?;
        api(app.mark_read(caller.user, with, up_to).await)?;
        Ok(true)
    }
}

#[derive(Default)]
pub struct ChatSubscription;

#[Subscription]
impl ChatSubscription {
    /// Each message received from anyone, once, in the order stored.
    async fn message_received(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Message>> {
        message_changes(ctx, Direction::In).await
    }

    /// Each outgoing message as it is stored (`QUEUED`) and as its state changes (`SENT`,
    /// `FAILED`), in order, none missed; a message that changed twice between two deliveries
    /// comes once, in its latest state (e.g. `SENT` without the `QUEUED` before it).
    async fn message_status_changed(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Message>> {
        message_changes(ctx, Direction::Out).await
    }
}

/// The user's messages in one direction that changed after the subscription started, none
/// skipped: each read takes those after the last change number delivered (see
/// `store::messages`).
async fn message_changes(
    ctx: &Context<'_>,
    direction: Direction,
) -> async_graphql::Result<impl Stream<Item = Message>> {
    let (app, caller) = caller(ctx).await?;
    let user = caller.user;
    let changes = app.views().subscribe();
    let last = api(app.last_message_change(user).await)?;
    // `more`: the last read was a full page, so more changes wait without a new notification.
    let batches = stream::unfold(
        (app, changes, last, false),
        move |(app, mut changes, mut last, mut more)| async move {
            loop {
                if !more {
                    next_change(&mut changes, user, &[messages::VIEW]).await?;
                }
                match app.message_changes(user, last).await {
                    Ok(found) => {
                        more = found.len() >= crate::app::chat::CHANGES_PAGE;
                        last = found.last().map_or(last, |m| m.change);
                        let items: Vec<Message> = found
                            .into_iter()
                            .filter(|m| m.direction == direction)
                            .map(Message::from)
                            .collect();
                        if !items.is_empty() {
                            return Some((stream::iter(items), (app, changes, last, more)));
                        }
                    }
                    Err(e) => {
                        more = false;
                        tracing::warn!(%user, error = %e, "messages unavailable for a subscription")
                    }
                }
            }
        },
    );
    Ok(batches.flatten())
}
