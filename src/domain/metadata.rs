//! Who caused an event, when, and from which request: stored beside every event.

use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::ids::UserId;

/// The party that caused an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The user themself, through the API.
    User(UserId),
    /// Switchboard, reconciling with what a connector saw upstream.
    Reconciliation,
    /// An operator, by name.
    Admin(String),
    /// An auditor, by name: only ever records a read.
    Auditor(String),
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::User(id) => write!(f, "user:{id}"),
            Actor::Reconciliation => f.write_str("system:reconciliation"),
            Actor::Admin(name) => write!(f, "admin:{name}"),
            Actor::Auditor(name) => write!(f, "auditor:{name}"),
        }
    }
}

impl Actor {
    pub fn parse(s: &str) -> Option<Self> {
        match s.split_once(':')? {
            ("user", id) => Uuid::parse_str(id).ok().map(|u| Actor::User(UserId(u))),
            ("system", "reconciliation") => Some(Actor::Reconciliation),
            ("admin", name) => Some(Actor::Admin(name.to_owned())),
            ("auditor", name) => Some(Actor::Auditor(name.to_owned())),
            _ => None,
        }
    }
}

/// The metadata of one command's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    pub actor: Actor,
    pub request_id: Uuid,
    pub at: DateTime<Utc>,
}

impl EventMetadata {
    pub fn new(actor: Actor, request_id: Uuid, at: DateTime<Utc>) -> Self {
        Self {
            actor,
            request_id,
            at,
        }
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            ("actor".to_owned(), self.actor.to_string()),
            ("request_id".to_owned(), self.request_id.to_string()),
            ("at".to_owned(), self.at.to_rfc3339()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_round_trip_through_text() {
        for actor in [
            Actor::User(UserId(Uuid::from_u128(5))),
            Actor::Reconciliation,
            Actor::Admin("ops".into()),
        ] {
            assert_eq!(Actor::parse(&actor.to_string()), Some(actor));
        }
        assert_eq!(Actor::parse("robot"), None);
    }
}
