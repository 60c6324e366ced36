//! A plain tokio-xmpp client for the other side of a test: the user's other client editing the
//! roster, or a contact changing presence and sending messages.

use std::time::Duration;

use futures::StreamExt;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::BareJid;
use tokio_xmpp::parsers::roster::{Item, Roster, Subscription};
use tokio_xmpp::xmlstream::Timeouts;
use tokio_xmpp::{Client, IqRequest, IqResponse};

/// `user@localhost` online on `server` (host:port, plain TCP).
pub async fn raw_client(server: &str, user: &str, password: &str) -> Client {
    let jid = BareJid::new(&format!("{user}@localhost")).unwrap();
    let mut client = Client::new_plaintext(
        jid,
        password.to_owned(),
        DnsConfig::addr(server),
        Timeouts::tight(),
    );
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = client.next().await {
            if event.is_online() {
                return;
            }
        }
        panic!("{user}'s raw client ended before going online");
    })
    .await
    .expect("raw client login timed out");
    client
}

/// Adds or renames a roster item (or removes it, with `Subscription::Remove`) the way the
/// user's other client would; the server pushes the change to every session of the account.
pub async fn set_roster_item(
    editor: &mut Client,
    jid: &str,
    name: &str,
    subscription: Subscription,
) {
    let roster = Roster {
        ver: None,
        items: vec![Item {
            jid: BareJid::new(jid).unwrap(),
            name: Some(name.to_owned()).filter(|name| !name.is_empty()),
            subscription,
            ask: Default::default(),
            groups: Vec::new(),
            approved: None,
        }],
    };
    let answer = editor
        .send_iq(None, IqRequest::Set(roster.into()))
        .await
        .await
        .unwrap();
    assert!(matches!(answer, IqResponse::Result(_)), "{answer:?}");
}

/// Publishes the client's own vCard (XEP-0054), `xml` being the whole `<vCard
/// xmlns='vcard-temp'>` element, the way the contact's own client would.
pub async fn set_vcard(client: &mut Client, xml: &str) {
    let vcard: tokio_xmpp::minidom::Element = xml.parse().expect("a vCard element");
    let answer = client
        .send_iq(None, IqRequest::Set(vcard))
        .await
        .await
        .unwrap();
    assert!(matches!(answer, IqResponse::Result(_)), "{answer:?}");
}
