//! Same-person matching: suggestions with their evidence, accepting, rejecting, the policy.

use async_graphql::{Context, Enum, Object, SimpleObject, ID};

use super::types::ContactList;
use super::{api, api_error, caller, parse_id};
use crate::app::AppError;
use crate::domain::ids::{ContactId, MetaContactId};
use crate::domain::matching::{Evidence, MatchTarget, Suggestion};

/// The kind of a piece of evidence.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum EvidenceKind {
    /// A verified address (Nostr NIP-05) equal to the other contact's address.
    VerifiedAddress,
    SameEmail,
    /// The names are equal once case, accents, spacing and punctuation are set aside.
    SameName,
    /// The contact's name is the name of the meta-contact the other contact is in.
    MetaContactName,
    /// The same user name on two networks (`bob@server`, `@bob:server`, IRC `bob`).
    SameLocalPart,
}

/// Why Switchboard thinks two contacts are one person.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct MatchEvidence {
    pub kind: EvidenceKind,
    /// The value that matched (normalised).
    pub value: String,
    /// The evidence in words.
    pub description: String,
}

impl From<&Evidence> for MatchEvidence {
    fn from(evidence: &Evidence) -> Self {
        let (kind, value) = match evidence {
            Evidence::VerifiedAddress { address } => (EvidenceKind::VerifiedAddress, address),
            Evidence::SameEmail { email } => (EvidenceKind::SameEmail, email),
            Evidence::SameName { name } => (EvidenceKind::SameName, name),
            Evidence::MetaContactName { name } => (EvidenceKind::MetaContactName, name),
            Evidence::SameLocalPart { local_part } => (EvidenceKind::SameLocalPart, local_part),
        };
        Self {
            kind,
            value: value.clone(),
            description: evidence.describe(),
        }
    }
}

/// A contact that looks like a person already on the list.
#[derive(SimpleObject, Clone, Debug, PartialEq)]
pub struct MatchSuggestion {
    /// Give it to `acceptMatch` or `rejectMatch`.
    pub id: ID,
    /// The contact that arrived.
    pub contact_id: ID,
    /// The contact it looks like (when that one is in no meta-contact)...
    pub target_contact_id: Option<ID>,
    /// ...or the meta-contact it looks like.
    pub target_meta_contact_id: Option<ID>,
    /// 1 to 99: 95 verified address, 85 e-mail, 60 name, 40 user name; +10 per further kind.
    pub score: i32,
    pub evidence: Vec<MatchEvidence>,
}

fn suggestion_id(contact: ContactId, target: MatchTarget) -> ID {
    ID(match target {
        MatchTarget::Contact(other) => format!("{contact}:contact:{other}"),
        MatchTarget::MetaContact(meta) => format!("{contact}:meta:{meta}"),
    })
}

fn parse_suggestion_id(id: &ID) -> async_graphql::Result<(ContactId, MatchTarget)> {
    let bad = || {
        api_error(AppError::BadInput(
            "suggestionId: not a suggestion id".into(),
        ))
    };
    let mut parts = id.as_str().split(':');
    let (Some(contact), Some(kind), Some(target), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let contact = parse_id("suggestionId", &ID(contact.into()), ContactId)?;
    let target = match kind {
        "contact" => MatchTarget::Contact(parse_id("suggestionId", &ID(target.into()), ContactId)?),
        "meta" => {
            MatchTarget::MetaContact(parse_id("suggestionId", &ID(target.into()), MetaContactId)?)
        }
        _ => return Err(bad()),
    };
    Ok((contact, target))
}

impl From<&Suggestion> for MatchSuggestion {
    fn from(s: &Suggestion) -> Self {
        let (target_contact_id, target_meta_contact_id) = match s.target {
            MatchTarget::Contact(c) => (Some(ID(c.to_string())), None),
            MatchTarget::MetaContact(m) => (None, Some(ID(m.to_string()))),
        };
        Self {
            id: suggestion_id(s.contact_id, s.target),
            contact_id: ID(s.contact_id.to_string()),
            target_contact_id,
            target_meta_contact_id,
            score: i32::from(s.score),
            evidence: s.evidence.iter().map(MatchEvidence::from).collect(),
        }
    }
}

#[derive(Default)]
pub struct MatchQuery;

#[Object]
impl MatchQuery {
    /// Contacts that look like people already on the list, best first.
    async fn match_suggestions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Vec<MatchSuggestion>> {
        let (app, caller) = caller(ctx).await?;
        let open = api(app.match_suggestions(caller.user).await)?;
        Ok(open.iter().map(MatchSuggestion::from).collect())
    }

    /// The score from which suggestions are bound without asking; null: never.
    async fn match_policy(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<i32>> {
        let (app, caller) = caller(ctx).await?;
        Ok(api(app.match_policy(caller.user).await)?.map(i32::from))
    }
}

#[derive(Default)]
pub struct MatchMutation;

#[Object]
impl MatchMutation {
    /// Binds a suggested pair: the contact joins the meta-contact, or both form a new one named
    /// `name` (default: the other contact's name). Undoable like any binding.
    async fn accept_match(
        &self,
        ctx: &Context<'_>,
        suggestion_id: ID,
        name: Option<String>,
    ) -> async_graphql::Result<ContactList> {
        let (app, caller) = caller(ctx).await?;
        let (contact, target) = parse_suggestion_id(&suggestion_id)?;
        let list = api(app
            .accept_match(caller, contact, target, name.as_deref())
            .await)?;
        Ok(ContactList::new(list, caller.user, None))
    }

    /// Records that the two are different people: never suggested again.
    async fn reject_match(
        &self,
        ctx: &Context<'_>,
        suggestion_id: ID,
    ) -> async_graphql::Result<bool> {
        let (app, caller) = caller(ctx).await?;
        let (contact, target) = parse_suggestion_id(&suggestion_id)?;
        api(app.reject_match(caller, contact, target).await)?;
        Ok(true)
    }

    /// Suggestions scoring at least `autoBindAt` (1 to 100) are bound without asking, by the
    /// system and undoable; null: only suggest. Names alone score 60.
    async fn set_match_policy(
        &self,
        ctx: &Context<'_>,
        auto_bind_at: Option<i32>,
    ) -> async_graphql::Result<Option<i32>> {
        let (app, caller) = caller(ctx).await?;
        let threshold = auto_bind_at
            .map(|t| {
                u8::try_from(t).map_err(|_| {
                    api_error(AppError::BadInput(
                        "autoBindAt: must be between 1 and 100".into(),
                    ))
                })
            })
            .transpose()?;
        api(app.set_match_policy(caller, threshold).await)?;
        Ok(auto_bind_at)
    }
}
