//! Integration tests against real PostgreSQL and real Prosody (started by scripts/test.sh).

mod crash;
mod errors;
mod flow;
mod helpers;
mod http;
mod security;
mod subscriptions;
