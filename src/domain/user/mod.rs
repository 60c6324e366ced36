//! The user aggregate: registration, account bindings, roster contacts, meta-contacts, undo.

pub mod aggregate;
pub mod commands;
pub mod error;
pub mod events;

#[cfg(test)]
mod tests;

pub use aggregate::User;
pub use commands::{NewAccount, ProfileItem, RosterItem, UserCommand};
pub use error::UserError;
pub use events::{
    AuditedRead, BindingChange, BoundAccount, DepartureReason, MetaContactState, UserEvent,
};
