//! Commands to the user aggregate: what a person (or the system on their behalf) asks for.

use crate::domain::ids::{
    AccountId, ContactId, DisplayName, Handle, MetaContactId, PersonRef, Protocol, UserName,
};
use crate::domain::matching::{MatchTarget, Profile};
use crate::domain::user::events::{AuditedRead, UserEvent};

/// An account to bind; its secret has already been verified upstream and put in the vault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAccount {
    pub account_id: AccountId,
    pub protocol: Protocol,
    pub server: String,
    pub handle: Handle,
}

/// One contact as a connector read it from the upstream roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterItem {
    pub handle: Handle,
    pub display_name: Option<String>,
}

/// One contact's profile as its network gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileItem {
    pub handle: Handle,
    pub profile: Profile,
}

#[derive(Debug, Clone, PartialEq)]
pub enum UserCommand {
    /// Registers the user, binding `accounts` in the same commit (all or nothing).
    Register {
        user_name: UserName,
        password_hash: String,
        accounts: Vec<NewAccount>,
    },
    BindAccount(NewAccount),
    UnbindAccount {
        account_id: AccountId,
    },
    /// The account's upstream roster as just read: contacts new here are added, departed ones
    /// return, renamed ones are renamed, and contacts gone upstream depart (their memberships
    /// kept dormant). `None`: the connector could not read the list, so nothing is concluded.
    SyncRoster {
        account_id: AccountId,
        roster: Option<Vec<RosterItem>>,
    },
    /// What the account's network says about some of its contacts (see [`ProfileItem`]);
    /// contacts not named keep what they had, and handles not on the account are ignored.
    UpdateProfiles {
        account_id: AccountId,
        profiles: Vec<ProfileItem>,
    },
    /// The user accepts the message request of `handle`, who wrote to the account without being
    /// its contact: a contact marked new, kept whatever the upstream roster says.
    AcceptMessageRequest {
        account_id: AccountId,
        handle: Handle,
        display_name: Option<String>,
    },
    /// The user adds a contact by hand, on a network whose server keeps no contact list (IRC).
    AddContact {
        account_id: AccountId,
        handle: Handle,
        display_name: Option<String>,
    },
    /// The user removes a contact by hand (the counterpart of `AddContact`); a membership it
    /// has stays dormant.
    RemoveContact {
        contact_id: ContactId,
    },
    /// The user lets a dormant member go for good.
    ForgetContact {
        contact_id: ContactId,
    },
    /// Clears the "new" mark of these contacts (`None`: of every contact).
    MarkContactsSeen {
        contact_ids: Option<Vec<ContactId>>,
    },
    /// Takes an open suggestion: the contact joins the target's meta-contact (the other contact
    /// joins the contact's, if only the contact is in one by now), or the two form a new one
    /// with `meta_contact_id` and `name` (default: the other contact's name).
    AcceptMatch {
        contact_id: ContactId,
        target: MatchTarget,
        meta_contact_id: MetaContactId,
        name: Option<DisplayName>,
    },
    RejectMatch {
        contact_id: ContactId,
        target: MatchTarget,
    },
    SetMatchPolicy {
        auto_bind_at: Option<u8>,
    },
    /// Record that an auditor read the user's data.
    RecordAuditorRead {
        auditor: String,
        read: AuditedRead,
    },
    /// Send messages to `person` through `via`, one of its contacts (`None`: let the rules
    /// choose again).
    SetRoutePreference {
        person: PersonRef,
        via: Option<ContactId>,
    },
    MergeContacts {
        meta_contact_id: MetaContactId,
        name: DisplayName,
        contact_ids: Vec<ContactId>,
    },
    AddToMetaContact {
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
    },
    RemoveFromMetaContact {
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
    },
    RenameMetaContact {
        meta_contact_id: MetaContactId,
        name: DisplayName,
    },
    /// Reverses the binding event stored at `target_sequence` of this user's stream; `target` is
    /// that stored event, loaded by the application from the event store.
    Undo {
        target_sequence: usize,
        target: Box<UserEvent>,
    },
}

impl UserCommand {
    /// The command's name, e.g. for metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            UserCommand::Register { .. } => "Register",
            UserCommand::BindAccount { .. } => "BindAccount",
            UserCommand::UnbindAccount { .. } => "UnbindAccount",
            UserCommand::SyncRoster { .. } => "SyncRoster",
            UserCommand::UpdateProfiles { .. } => "UpdateProfiles",
            UserCommand::AcceptMessageRequest { .. } => "AcceptMessageRequest",
            UserCommand::AddContact { .. } => "AddContact",
            UserCommand::RemoveContact { .. } => "RemoveContact",
            UserCommand::ForgetContact { .. } => "ForgetContact",
            UserCommand::MarkContactsSeen { .. } => "MarkContactsSeen",
            UserCommand::AcceptMatch { .. } => "AcceptMatch",
            UserCommand::RejectMatch { .. } => "RejectMatch",
            UserCommand::SetMatchPolicy { .. } => "SetMatchPolicy",
            UserCommand::RecordAuditorRead { .. } => "RecordAuditorRead",
            UserCommand::SetRoutePreference { .. } => "SetRoutePreference",
            UserCommand::MergeContacts { .. } => "MergeContacts",
            UserCommand::AddToMetaContact { .. } => "AddToMetaContact",
            UserCommand::RemoveFromMetaContact { .. } => "RemoveFromMetaContact",
            UserCommand::RenameMetaContact { .. } => "RenameMetaContact",
            UserCommand::Undo { .. } => "Undo",
        }
    }
}
