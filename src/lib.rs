//! Switchboard: one user name, many IM networks, one event-sourced contact list.

/// Protocol connectors behind one trait, and their registry.
pub mod connectors;
/// Pure domain: ids, the user aggregate, its commands, events and rules.
pub mod domain;
/// A string wrapper for third-party secrets that never prints.
pub mod secret;
