//! TLS for every connector: rustls with ring, the public web PKI roots plus any extra roots
//! Switchboard was configured with; the certificate must be valid for the name dialled.

use std::io;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use crate::connectors::{ConnectorError, ExtraRootsError};

/// The public web PKI roots.
pub(crate) fn public_roots() -> RootCertStore {
    RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    }
}

/// The public roots plus every `CERTIFICATE` block in `pem`.
pub(crate) fn roots_with(pem: &[u8]) -> Result<RootCertStore, ExtraRootsError> {
    let mut roots = public_roots();
    let mut added = 0;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        let certificate =
            certificate.map_err(|e| ExtraRootsError(format!("unreadable PEM certificate: {e}")))?;
        roots
            .add(certificate)
            .map_err(|e| ExtraRootsError(format!("unusable as a trust anchor: {e}")))?;
        added += 1;
    }
    if added == 0 {
        return Err(ExtraRootsError("no PEM CERTIFICATE block found".to_owned()));
    }
    Ok(roots)
}

/// A client configuration trusting `roots`, with ring named as the provider rather than taken
/// from the process default (which panics when two providers are compiled in).
pub(crate) fn client_config(roots: RootCertStore) -> Arc<ClientConfig> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        // rustls' own default versions with its own ring provider: cannot fail.
        .unwrap_or_else(|e| unreachable!("ring supports rustls' default versions: {e}"));
    Arc::new(builder.with_root_certificates(roots).with_no_client_auth())
}

/// The same trust, offering `protocol` by ALPN (e.g. `xmpp-client` for XMPP's direct TLS).
#[cfg(feature = "xmpp")]
pub(crate) fn with_alpn(config: &ClientConfig, protocol: &[u8]) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.alpn_protocols = vec![protocol.to_vec()];
    Arc::new(config)
}

/// The TLS handshake over a fresh connection to `host`.
pub(crate) async fn handshake(
    tcp: TcpStream,
    host: &str,
    config: &Arc<ClientConfig>,
) -> Result<TlsStream<TcpStream>, ConnectorError> {
    let name = ServerName::try_from(host.to_owned()).map_err(|_| {
        ConnectorError::InvalidAccount(format!("{host} is not a name a certificate can be for"))
    })?;
    TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            ConnectorError::Unreachable(format!(
                "TLS handshake with {host} failed: {}",
                failure(&e)
            ))
        })
}

/// A handshake failure in words, certificate problems first.
pub(crate) fn failure(error: &io::Error) -> String {
    use tokio_rustls::rustls::Error as TlsError;
    let Some(TlsError::InvalidCertificate(problem)) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsError>())
    else {
        return error.to_string();
    };
    match problem {
        CertificateError::UnknownIssuer => {
            "certificate not trusted (issued by no trusted root CA)".to_owned()
        }
        // rustls words most of them "certificate expired: …", "certificate not valid for …".
        other => match other.to_string() {
            text if text.starts_with("certificate") => text,
            text => format!("certificate rejected: {text}"),
        },
    }
}
