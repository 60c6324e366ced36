//! `/graphql/ws`: subscriptions over a WebSocket (graphql-transport-ws or graphql-ws).

use std::sync::{Arc, Mutex};

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::Data;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use futures::{future, SinkExt, StreamExt};

use super::HttpState;
use crate::graphql::BearerToken;

/// Each subscription socket's read buffer (tungstenite's default: 128 KiB).
const READ_BUFFER: usize = 4 * 1024;

/// Subscriptions authenticate with `{"Authorization": "Bearer …"}` (or `{"token": …}`) in the
/// `connection_init` payload; each subscription lives only as long as that session.
pub(super) async fn subscriptions(
    State(state): State<HttpState>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        // tungstenite zero-fills its whole read buffer before every read (even one that finds
        // nothing): at the default 128 KiB that memset was 29 % of the presence fan-out bench's
        // CPU. Client messages are small; a longer one still grows the buffer.
        .read_buffer_size(READ_BUFFER)
        .max_message_size(state.limits.max_body_bytes)
        .max_frame_size(state.limits.max_body_bytes)
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve_socket(socket, state, protocol))
}

/// Serves one subscription socket, which then ends with a valid close frame. async-graphql
/// alone closes with reasons longer than a close frame holds (its messages for unreadable
/// input), which clients take for a broken connection; and it drops the connection without
/// any close frame after a read error (a message over the size limit) or a legacy
/// `connection_terminate`.
async fn serve_socket(socket: WebSocket, state: HttpState, protocol: GraphQLProtocol) {
    let (mut sink, stream) = socket.split();
    let read_error: Arc<Mutex<Option<String>>> = Arc::default();
    let stream = {
        let read_error = read_error.clone();
        stream.inspect(move |item| {
            if let Err(e) = item {
                *read_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
        })
    };
    let bounded =
        (&mut sink).with(|message| future::ready(Ok::<_, axum::Error>(bounded_close(message))));
    let app = state.app.clone();
    GraphQLWebSocket::new_with_pair(bounded, stream, state.schema.clone(), protocol)
        .on_connection_init(move |payload| async move {
            let token = payload
                .get("Authorization")
                .or_else(|| payload.get("authorization"))
                .and_then(|v| v.as_str())
                .and_then(|v| v.strip_prefix("Bearer "))
                .or_else(|| payload.get("token").and_then(|v| v.as_str()))
                .ok_or_else(|| async_graphql::Error::new("connection_init needs a bearer token"))?;
            // Checked here to refuse a bad socket early, and again at every
            // subscription: the session may end while the socket stays open.
            app.check_token(token.trim())
                .await
                .map_err(crate::graphql::api_error)?;
            let mut data = Data::default();
            data.insert(BearerToken(token.trim().to_owned()));
            Ok(data)
        })
        .serve()
        .await;
    // The closing frame, unless one went already (the send then fails, harmlessly).
    let read_error = read_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    let frame = match read_error {
        Some(error) => CloseFrame {
            code: close_code::PROTOCOL,
            reason: error.into(),
        },
        None => CloseFrame {
            code: close_code::NORMAL,
            reason: "".into(),
        },
    };
    let _ = sink.send(bounded_close(Message::Close(Some(frame)))).await;
}

/// A close frame's reason holds at most 123 bytes (125 with the code): a longer one is cut at
/// a character boundary.
fn bounded_close(message: Message) -> Message {
    const MAX_REASON: usize = 123;
    match message {
        Message::Close(Some(frame)) if frame.reason.len() > MAX_REASON => {
            let reason = frame.reason.as_str();
            let mut end = MAX_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            Message::Close(Some(CloseFrame {
                code: frame.code,
                reason: reason[..end].into(),
            }))
        }
        other => other,
    }
}
