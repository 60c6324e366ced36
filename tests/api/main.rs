//! Integration tests against real PostgreSQL and real Prosody (started by scripts/test.sh).

mod audit;
mod chat;
mod chat_durability;
#[path = "../common/mod.rs"]
mod common;
mod crash;
mod embedded;
mod errors;
mod event_store;
mod flow;
mod fuzz;
mod helpers;
mod http;
mod limits;
mod lists;
mod live;
mod load;
mod matching;
mod message_store;
mod metrics;
mod networks;
mod nostr_upstream;
mod presence;
mod projection_fold;
mod projections;
mod read_your_writes;
mod reconciliation;
mod restart;
mod security;
mod sessions;
mod subscriptions;
mod throttle;
mod tls;
mod upstream;
mod upstream_policy;
