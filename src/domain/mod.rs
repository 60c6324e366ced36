//! The domain: pure rules and types, no IO (no sqlx, axum, async-graphql or sockets).

pub mod ids;
pub mod matching;
pub mod metadata;
pub mod presence;
pub mod routing;
pub mod user;
