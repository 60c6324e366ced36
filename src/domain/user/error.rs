//! Why the user aggregate refused a command.

use crate::domain::ids::{AccountId, ContactId, MetaContactId};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("this user name is already taken")]
    UserNameTaken,
    #[error("no such user")]
    NotRegistered,
    #[error("the account {handle} on {server} is already bound")]
    DuplicateAccount { handle: String, server: String },
    #[error("the same account appears twice in the request")]
    DuplicateInRequest,
    #[error("no bound account {0}")]
    UnknownAccount(AccountId),
    #[error("no contact {0}")]
    UnknownContact(ContactId),
    #[error("contact {0} is not on the list any more (removed upstream or its account unbound)")]
    ContactDeparted(ContactId),
    #[error("contact {0} is not a dormant member of a meta-contact: only those can be forgotten")]
    ContactNotDormant(ContactId),
    #[error("no open match suggestion for contact {0}")]
    UnknownSuggestion(ContactId),
    #[error("a match policy threshold must be between 1 and 100")]
    BadThreshold,
    #[error("this account was bound before as {expected}: bind it with that id")]
    AccountIdMismatch { expected: AccountId },
    #[error("no meta-contact {0}")]
    UnknownMetaContact(MetaContactId),
    #[error("a meta-contact {0} already exists")]
    MetaContactExists(MetaContactId),
    #[error("contact {0} is already in the list")]
    ContactExists(ContactId),
    #[error("merging needs at least two different contacts")]
    TooFewContacts,
    #[error(
        "contact {contact_id} is already in meta-contact {meta_contact_id}: remove it there first"
    )]
    ContactAlreadyBound {
        contact_id: ContactId,
        meta_contact_id: MetaContactId,
    },
    #[error("contact {contact_id} is not in meta-contact {meta_contact_id}")]
    ContactNotInMetaContact {
        contact_id: ContactId,
        meta_contact_id: MetaContactId,
    },
    #[error("contact {0} is in no meta-contact: messages to it have only one way to go")]
    NoRouteChoice(ContactId),
    #[error("event {0} is not a binding event and cannot be undone")]
    NotUndoable(usize),
    #[error("event {target} cannot be undone exactly: event {conflicting} changed the same contacts since")]
    UndoConflict { target: usize, conflicting: usize },
}
