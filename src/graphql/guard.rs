//! Every subscription lives only as long as its session (see `app::subscribers`): a schema
//! extension wraps each subscription's stream, so no resolver can forget it.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextSubscribe};
use async_graphql::{Response, ServerError};
use futures::stream::{self, BoxStream, StreamExt};

use super::{api_error, BearerToken};
use crate::app::{AppError, Switchboard};

/// Ends a subscription when its session ends, and refuses one over the session's limit.
pub struct SessionBound;

impl ExtensionFactory for SessionBound {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(SessionBoundExtension)
    }
}

struct SessionBoundExtension;

impl Extension for SessionBoundExtension {
    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let app = ctx.data_opt::<Arc<Switchboard>>().cloned();
        let token = ctx.data_opt::<BearerToken>().cloned();
        let inner = next.run(ctx, stream);
        let bound = async move {
            let slot = match (app, token) {
                (Some(app), Some(token)) => app.open_subscription(&token.0).await,
                _ => Err(AppError::Unauthenticated),
            };
            match slot {
                Ok(slot) => inner.take_until(slot.ended()).boxed(),
                Err(e) => {
                    // Not tied to a place in the document: no locations.
                    let error = api_error(e);
                    let mut server = ServerError::new(error.message, None);
                    server.extensions = error.extensions;
                    stream::once(async move { Response::from_errors(vec![server]) }).boxed()
                }
            }
        };
        stream::once(bound).flatten().boxed()
    }
}
