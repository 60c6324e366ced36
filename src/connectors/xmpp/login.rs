//! The login over an opened connection (`transport.rs`): SASL, resource binding and the roster,
//! up to the initial presence.

use std::collections::{BTreeSet, VecDeque};
use std::io;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, BufStream};
use tokio_xmpp::connect::AsyncReadAndWrite;
use tokio_xmpp::error::{AuthError, Error as XmppError};
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::bind::{BindQuery, BindResponse};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::ns;
use tokio_xmpp::parsers::presence::Presence;
use tokio_xmpp::parsers::roster::Roster as RosterQuery;
use tokio_xmpp::parsers::sasl::DefinedCondition as SaslCondition;
use tokio_xmpp::parsers::stream_error::{DefinedCondition as StreamCondition, ReceivedStreamError};
use tokio_xmpp::parsers::stream_features::StreamFeatures;
use tokio_xmpp::xmlstream::{
    initiate_stream, FallibleStreamElement, PendingFeaturesRecv, ReadError, RecvFeaturesError,
    StreamHeader, Timeouts, XmppStream, XmppStreamElement,
};
use tokio_xmpp::Stanza;
use tracing::debug;

use super::stanza::{parse_result, roster_of_answer};
use super::transport::Opened;
use super::Target;
use crate::connectors::net::invalid;
use crate::connectors::{ConnectorError, Roster};
use crate::secret::Secret;

/// The XML stream over a buffered TCP connection, inside TLS or not.
pub(super) type Stream = XmppStream<Box<dyn AsyncReadAndWrite + Send>>;

/// The SASL mechanisms tokio-xmpp implements, minus ANONYMOUS: it would "succeed" as a throwaway
/// guest on servers that offer it, which is never what a bound account means.
const SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"];
/// Socket buffers of one stream. tokio's default is 8 KiB each way, per idle account; stanzas
/// are mostly far smaller, and a larger one is simply read or written in several turns.
const STREAM_READ_BUFFER: usize = 2048;
const STREAM_WRITE_BUFFER: usize = 1024;
const BIND_ID: &str = "switchboard-bind";
const ROSTER_ID: &str = "switchboard-roster";

/// What a successful login hands to the session.
pub(super) struct LoggedIn {
    pub(super) stream: Stream,
    /// Absent when the server's answer held no readable roster.
    pub(super) roster: Roster,
    /// Stanzas that arrived while waiting for the bind and roster answers.
    pub(super) backlog: VecDeque<Stanza>,
}

pub(super) async fn log_in(
    opened: Opened,
    target: &Target,
    secret: &Secret,
) -> Result<LoggedIn, ConnectorError> {
    let Opened {
        features,
        stream,
        encrypted,
        loopback,
    } = opened;

    // PLAIN puts the password itself on the wire: only inside TLS, or on loopback.
    let mechanisms = usable_mechanisms(&features.sasl_mechanisms, encrypted || loopback);
    if mechanisms.is_empty() {
        let reason = if features.sasl_mechanisms.contains("PLAIN") {
            "the server only offers PLAIN login, which would send the password unencrypted"
        } else {
            "the server offers no password login this connector supports"
        };
        return Err(ConnectorError::Protocol(reason.to_owned()));
    }
    let username = target.jid.node().map_or("", |node| node.as_str());
    let credentials = sasl::common::Credentials::default()
        .with_username(username)
        .with_password(secret.expose());
    let authenticated = tokio_xmpp::client_login(stream, mechanisms, credentials)
        .await
        .map_err(auth_error)?;

    // SASL success resets the stream; the new one offers resource binding.
    let pending = authenticated
        .send_header(stream_header(&target.jid))
        .await
        .map_err(login_io_error)?;
    let (features, mut stream) = receive_features(pending, &target.jid).await?;
    if features.bind.is_none() {
        return Err(ConnectorError::Protocol(
            "the server offers no resource binding".to_owned(),
        ));
    }

    let mut backlog = VecDeque::new();
    let bind = BindQuery::new(Some(new_resource()));
    send_stanza(&mut stream, Iq::from_set(BIND_ID, bind).into())
        .await
        .map_err(login_io_error)?;
    let bound: BindResponse = parse_result(
        await_answer(&mut stream, BIND_ID, &mut backlog).await?,
        "resource binding",
    )?
    .ok_or_else(|| ConnectorError::Protocol("empty answer to resource binding".to_owned()))?;
    debug!(jid = %bound.jid, "xmpp resource bound");

    // No version: the answer must be the whole roster (RFC 6121 §2.6), or it tells nothing.
    let query = RosterQuery {
        ver: None,
        items: Vec::new(),
    };
    send_stanza(&mut stream, Iq::from_get(ROSTER_ID, query).into())
        .await
        .map_err(login_io_error)?;
    let roster = roster_of_answer(await_answer(&mut stream, ROSTER_ID, &mut backlog).await?);
    if let Roster::Absent(reason) = &roster {
        debug!(%reason, "xmpp roster not read");
    }

    // Initial presence last: only now does the server send contacts' presence to us.
    send_stanza(&mut stream, Presence::available().into())
        .await
        .map_err(login_io_error)?;
    Ok(LoggedIn {
        stream,
        roster,
        backlog,
    })
}

/// The offered SASL mechanisms tokio-xmpp may choose from (it prefers SCRAM-SHA-256, then
/// SCRAM-SHA-1, then PLAIN).
fn usable_mechanisms(offered: &BTreeSet<String>, plain_allowed: bool) -> BTreeSet<String> {
    offered
        .iter()
        .filter(|mechanism| SASL_MECHANISMS.contains(&mechanism.as_str()))
        .filter(|mechanism| plain_allowed || mechanism.as_str() != "PLAIN")
        .cloned()
        .collect()
}

/// A resource of our own, so several Switchboard sessions of one account do not kick each other.
fn new_resource() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("switchboard-{}", &id[..12])
}

fn stream_header(jid: &BareJid) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(jid.domain().as_str().into()),
        from: None,
        id: None,
    }
}

/// Opens an XML stream to `jid`'s domain over `io` and reads the server's stream features.
pub(super) async fn open_stream<Io: AsyncRead + AsyncWrite + Unpin>(
    io: Io,
    jid: &BareJid,
    timeouts: Timeouts,
) -> Result<(StreamFeatures, XmppStream<BufStream<Io>>), ConnectorError> {
    let pending = initiate_stream(
        BufStream::with_capacity(STREAM_READ_BUFFER, STREAM_WRITE_BUFFER, io),
        ns::JABBER_CLIENT,
        stream_header(jid),
        timeouts,
    )
    .await
    .map_err(login_io_error)?;
    receive_features(pending, jid).await
}

async fn receive_features<Io: AsyncBufRead + AsyncWrite + Unpin>(
    pending: PendingFeaturesRecv<Io>,
    jid: &BareJid,
) -> Result<(StreamFeatures, XmppStream<Io>), ConnectorError> {
    pending.recv_features().await.map_err(|e| match e {
        RecvFeaturesError::Io(e) => login_io_error(e),
        RecvFeaturesError::StreamError(e) => login_stream_error(&e, jid),
    })
}

fn login_stream_error(error: &ReceivedStreamError, jid: &BareJid) -> ConnectorError {
    match error.0.condition {
        StreamCondition::HostUnknown => invalid(format!(
            "the server does not host the domain {}",
            jid.domain()
        )),
        _ => ConnectorError::Protocol(error.to_string()),
    }
}

fn login_io_error(error: io::Error) -> ConnectorError {
    match error.kind() {
        io::ErrorKind::InvalidData => {
            ConnectorError::Protocol(format!("the server does not speak XMPP: {error}"))
        }
        _ => ConnectorError::Unreachable(format!("connection failed during login: {error}")),
    }
}

fn auth_error(error: XmppError) -> ConnectorError {
    match error {
        XmppError::Auth(AuthError::Fail(condition)) => match condition {
            SaslCondition::NotAuthorized
            | SaslCondition::AccountDisabled
            | SaslCondition::CredentialsExpired
            | SaslCondition::InvalidAuthzid => ConnectorError::AuthFailed,
            SaslCondition::TemporaryAuthFailure => ConnectorError::Unreachable(
                "the server cannot check credentials right now".to_owned(),
            ),
            SaslCondition::EncryptionRequired | SaslCondition::MechanismTooWeak => {
                ConnectorError::Protocol(
                    "the server requires an encrypted connection for login".to_owned(),
                )
            }
            other => ConnectorError::Protocol(format!("login refused: {other:?}")),
        },
        // A local SASL failure, such as a challenge the mechanism cannot parse.
        XmppError::Auth(_) => ConnectorError::Protocol("the SASL exchange failed".to_owned()),
        XmppError::Io(e) => login_io_error(e),
        XmppError::Disconnected => {
            ConnectorError::Unreachable("the server closed the connection during login".to_owned())
        }
        other => ConnectorError::Protocol(other.to_string()),
    }
}

pub(super) async fn send_stanza(stream: &mut Stream, stanza: Stanza) -> io::Result<()> {
    stream.send(&XmppStreamElement::Stanza(stanza)).await
}

/// Reads until the answer to the IQ `id` arrives; other stanzas are kept for the session.
async fn await_answer(
    stream: &mut Stream,
    id: &str,
    backlog: &mut VecDeque<Stanza>,
) -> Result<Iq, ConnectorError> {
    loop {
        let element = match stream.next().await {
            Some(Ok(FallibleStreamElement::Ok(element))) => element,
            Some(Ok(FallibleStreamElement::Err(e))) => {
                debug!("ignoring an unparsable element during login: {e}");
                continue;
            }
            Some(Err(ReadError::ParseError(e))) => {
                debug!("ignoring an unparsable element during login: {e}");
                continue;
            }
            // The login deadline bounds the wait; nothing to do here.
            Some(Err(ReadError::SoftTimeout)) => continue,
            Some(Err(ReadError::HardError(e))) => return Err(login_io_error(e)),
            Some(Err(ReadError::StreamFooterReceived)) | None => {
                return Err(ConnectorError::Unreachable(
                    "the server closed the stream during login".to_owned(),
                ))
            }
        };
        match element {
            XmppStreamElement::Stanza(Stanza::Iq(iq @ (Iq::Result { .. } | Iq::Error { .. })))
                if iq.id() == id =>
            {
                return Ok(iq)
            }
            XmppStreamElement::Stanza(other) => backlog.push_back(other),
            XmppStreamElement::StreamError(e) => {
                return Err(ConnectorError::Protocol(e.to_string()))
            }
            other => debug!("ignoring {other:?} during login"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_login_only_where_allowed_and_never_anonymous() {
        let offered: BTreeSet<String> = ["ANONYMOUS", "PLAIN", "SCRAM-SHA-1", "X-OAUTH2"]
            .map(str::to_owned)
            .into();
        let names = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>();
        assert_eq!(
            names(usable_mechanisms(&offered, true)),
            ["PLAIN", "SCRAM-SHA-1"]
        );
        assert_eq!(names(usable_mechanisms(&offered, false)), ["SCRAM-SHA-1"]);
    }
}
