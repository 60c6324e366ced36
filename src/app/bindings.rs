//! Friend binding: meta-contacts (merge, add, remove, rename) and undoing a binding event.

use super::{AppError, Caller, Switchboard};
use crate::domain::ids::{ContactId, DisplayName, MetaContactId};
use crate::domain::metadata::Actor;
use crate::domain::user::UserCommand;
use crate::projections::contacts::ContactList;

impl Switchboard {
    /// Answers with the list the change leads to, once the views show it (read-your-writes).
    pub(super) async fn bind(
        &self,
        caller: Caller,
        command: UserCommand,
    ) -> Result<ContactList, AppError> {
        let sequence = self
            .execute(
                caller.user,
                command,
                Actor::User(caller.user),
                caller.request_id,
            )
            .await?;
        self.settle(caller.user, sequence).await?;
        self.contacts(caller.user, None).await
    }

    pub async fn merge_contacts(
        &self,
        caller: Caller,
        name: &str,
        contacts: Vec<ContactId>,
    ) -> Result<(MetaContactId, ContactList), AppError> {
        let name = DisplayName::parse(name).map_err(|e| AppError::bad_input("name", e))?;
        let id = MetaContactId::new_random();
        let list = self
            .bind(
                caller,
                UserCommand::MergeContacts {
                    meta_contact_id: id,
                    name,
                    contact_ids: contacts,
                },
            )
            .await?;
        Ok((id, list))
    }

    pub async fn add_to_meta_contact(
        &self,
        caller: Caller,
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
    ) -> Result<ContactList, AppError> {
        self.bind(
            caller,
            UserCommand::AddToMetaContact {
                meta_contact_id,
                contact_id,
            },
        )
        .await
    }

    pub async fn remove_from_meta_contact(
        &self,
        caller: Caller,
        meta_contact_id: MetaContactId,
        contact_id: ContactId,
    ) -> Result<ContactList, AppError> {
        self.bind(
            caller,
            UserCommand::RemoveFromMetaContact {
                meta_contact_id,
                contact_id,
            },
        )
        .await
    }

    /// Ends a dormant membership for good.
    pub async fn forget_contact(
        &self,
        caller: Caller,
        contact_id: ContactId,
    ) -> Result<ContactList, AppError> {
        self.bind(caller, UserCommand::ForgetContact { contact_id })
            .await
    }

    /// Clears the "new" mark of these contacts (`None`: all).
    pub async fn mark_contacts_seen(
        &self,
        caller: Caller,
        contact_ids: Option<Vec<ContactId>>,
    ) -> Result<ContactList, AppError> {
        self.bind(caller, UserCommand::MarkContactsSeen { contact_ids })
            .await
    }

    pub async fn rename_meta_contact(
        &self,
        caller: Caller,
        meta_contact_id: MetaContactId,
        name: &str,
    ) -> Result<ContactList, AppError> {
        let name = DisplayName::parse(name).map_err(|e| AppError::bad_input("name", e))?;
        self.bind(
            caller,
            UserCommand::RenameMetaContact {
                meta_contact_id,
                name,
            },
        )
        .await
    }

    /// Undoes the binding event with public id `event_id` (its global position).
    pub async fn undo(&self, caller: Caller, event_id: i64) -> Result<ContactList, AppError> {
        let stored = self
            .store
            .event_at(caller.user, event_id)
            .await
            .map_err(AppError::internal)?
            .ok_or_else(|| AppError::NotFound(format!("no event {event_id}")))?;
        if !stored.event.is_undoable() {
            return Err(AppError::BadInput(format!(
                "event {event_id} ({}) is not a contact binding and cannot be undone",
                stored.event.kind()
            )));
        }
        self.bind(
            caller,
            UserCommand::Undo {
                target_sequence: stored.sequence,
                target: Box::new(stored.event),
            },
        )
        .await
    }
}
