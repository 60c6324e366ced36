//! Same-person matching: the open suggestions, taking or rejecting one, and the policy.

use super::{AppError, Caller, Switchboard};
use crate::domain::ids::{ContactId, DisplayName, MetaContactId, UserId};
use crate::domain::matching::{MatchTarget, Suggestion};
use crate::domain::metadata::Actor;
use crate::domain::user::UserCommand;
use crate::projections::contacts::ContactList;

impl Switchboard {
    /// The open suggestions, best first. Read from the user's aggregate (cached, checked
    /// against the store), which decides them.
    pub async fn match_suggestions(&self, user: UserId) -> Result<Vec<Suggestion>, AppError> {
        let state = self.load(user).await?;
        let mut open: Vec<Suggestion> = state.open_suggestions().cloned().collect();
        open.sort_by(|a, b| {
            b.score
                .cmp(&a.score)
                .then(a.contact_id.cmp(&b.contact_id))
                .then(a.target.cmp(&b.target))
        });
        Ok(open)
    }

    /// Binds the suggested pair: into the target's meta-contact, or as a new one named `name`
    /// (default: the other contact's name).
    pub async fn accept_match(
        &self,
        caller: Caller,
        contact_id: ContactId,
        target: MatchTarget,
        name: Option<&str>,
    ) -> Result<ContactList, AppError> {
        let name = name
            .map(DisplayName::parse)
            .transpose()
            .map_err(|e| AppError::bad_input("name", e))?;
        self.bind(
            caller,
            UserCommand::AcceptMatch {
                contact_id,
                target,
                meta_contact_id: MetaContactId::new_random(),
                name,
            },
        )
        .await
    }

    /// Records that the pair are different people, for good.
    pub async fn reject_match(
        &self,
        caller: Caller,
        contact_id: ContactId,
        target: MatchTarget,
    ) -> Result<(), AppError> {
        let sequence = self
            .execute(
                caller.user,
                UserCommand::RejectMatch { contact_id, target },
                Actor::User(caller.user),
                caller.request_id,
            )
            .await?;
        self.settle(caller.user, sequence).await
    }

    /// Sets the score from which suggestions are bound without asking (`None`: never).
    pub async fn set_match_policy(
        &self,
        caller: Caller,
        auto_bind_at: Option<u8>,
    ) -> Result<(), AppError> {
        let sequence = self
            .execute(
                caller.user,
                UserCommand::SetMatchPolicy { auto_bind_at },
                Actor::User(caller.user),
                caller.request_id,
            )
            .await?;
        self.settle(caller.user, sequence).await
    }

    pub async fn match_policy(&self, user: UserId) -> Result<Option<u8>, AppError> {
        Ok(self.load(user).await?.match_policy())
    }
}
