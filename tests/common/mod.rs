//! Helpers every connector interop test shares (`mod common;` in tests/xmpp.rs, irc.rs,
//! matrix.rs, nostr.rs, and the API tests): server settings from the environment, waiting for
//! events, plain XMPP, Matrix and Nostr clients for the other side, and a tap on the wire.

#![allow(dead_code)] // each test crate uses a part

pub mod matrix_client;
#[cfg(feature = "nostr")]
pub mod nostr_client;
pub mod tap;
pub mod xmpp_client;

use std::time::Duration;

use switchboard::connectors::{Availability, ConnectorEvent, Roster, RosterEntry};
use switchboard::domain::ids::Handle;
use tokio::sync::mpsc;

/// A server setting scripts/test.sh exports; without it these tests fail rather than skip.
pub fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/test.sh"))
}

/// The contacts of a roster that must have been read whole; panics if it is absent.
#[track_caller]
pub fn complete(roster: &Roster) -> Vec<RosterEntry> {
    match roster {
        Roster::Complete(entries) => entries.clone(),
        Roster::Absent(reason) => {
            panic!("expected the whole roster, but the connector could not read it: {reason}")
        }
    }
}

/// Why a roster could not be read; panics if it was read (an empty list is a read one).
#[track_caller]
pub fn absent(roster: &Roster) -> String {
    match roster {
        Roster::Absent(reason) => reason.clone(),
        Roster::Complete(entries) => {
            panic!("expected an absent roster, but the connector read a whole one: {entries:?}")
        }
    }
}

/// Waits up to `limit` for the first event that `wanted` accepts; panics with everything seen
/// otherwise.
pub async fn wait_within(
    events: &mut mpsc::Receiver<ConnectorEvent>,
    limit: Duration,
    wanted: impl Fn(&ConnectorEvent) -> bool,
) -> ConnectorEvent {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(limit, async {
        while let Some(event) = events.recv().await {
            if wanted(&event) {
                return Some(event);
            }
            seen.push(event);
        }
        None
    })
    .await;
    match found {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the session ended; events seen: {seen:?}"),
        Err(_) => panic!("no matching event in time; events seen: {seen:?}"),
    }
}

/// Matches a presence event of `who` with this availability (any status text).
pub fn presence_is(who: Handle, availability: Availability) -> impl Fn(&ConnectorEvent) -> bool {
    move |event| {
        matches!(event, ConnectorEvent::Presence { handle, availability: seen, .. }
            if *handle == who && *seen == availability)
    }
}
