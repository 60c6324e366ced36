//! Switchboard: one user name, many IM networks, one event-sourced contact list.

/// Use cases the API calls: registration, login, bindings, reads.
pub mod app;
/// The command line: serve, migrate, replay, schema.
pub mod cli;
/// Typed settings from file and environment.
pub mod config;
/// Protocol connectors behind one trait, and their registry.
pub mod connectors;
/// Pure domain: ids, the user aggregate, its commands, events and rules.
pub mod domain;
/// The GraphQL schema and its thin resolvers.
pub mod graphql;
/// The axum router: GraphQL, GraphiQL, subscriptions, health.
pub mod http;
/// What `/metrics` exports, counted by every layer.
pub mod metrics;
/// Read models: contact list, accounts, history; their catch-up runner and notifications.
pub mod projections;
/// A string wrapper for third-party secrets that never prints.
pub mod secret;
/// Building and running the server.
pub mod startup;
/// PostgreSQL: pool, migrations, event store, credential vault, sessions, embedded server.
pub mod store;
