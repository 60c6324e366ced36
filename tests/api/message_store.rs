//! The message store's group commit against a real PostgreSQL: several users' batches in one
//! transaction, each message once (a network id delivered twice, in the store or in the same
//! commit, is skipped), every user's change numbers in a row, positions in the order given.

use chrono::Utc;
use switchboard::domain::ids::{AccountId, ContactId, Handle, Protocol, UserId};
use switchboard::store::intake::Intake;
use switchboard::store::messages::{Incoming, MessageKind, MessageStore, Party};

use crate::helpers::migrated_database;

fn incoming(account: AccountId, from: &str, body: &str, id: Option<&str>) -> Incoming {
    let handle = Handle::parse(Protocol::Xmpp, from).unwrap();
    Incoming {
        from: Party {
            contact_id: ContactId::for_handle(account, &handle),
            account_id: account,
            protocol: Protocol::Xmpp,
            handle,
        },
        kind: MessageKind::Text,
        body: body.to_owned(),
        network_id: id.map(str::to_owned),
        sent_at: Utc::now(),
    }
}

fn bodies(messages: &[switchboard::store::messages::Message]) -> Vec<&str> {
    messages.iter().map(|m| m.body.as_str()).collect()
}

#[tokio::test]
async fn one_commit_stores_several_users_batches_each_message_once_in_order() {
    let pool = migrated_database().await;
    let store = MessageStore::new(pool.clone());
    let (ann, ben) = (
        UserId(uuid::Uuid::from_u128(1)),
        UserId(uuid::Uuid::from_u128(2)),
    );
    let (ann_account, ben_account) = (
        AccountId(uuid::Uuid::from_u128(11)),
        AccountId(uuid::Uuid::from_u128(12)),
    );
    let earlier = store
        .record_incoming(
            ann,
            &[incoming(ann_account, "x@a", "seen before", Some("n1"))],
        )
        .await
        .unwrap();
    assert_eq!(earlier.len(), 1);

    let ann_batch = vec![
        incoming(ann_account, "x@a", "seen before", Some("n1")),
        incoming(ann_account, "x@a", "one", Some("n2")),
        incoming(ann_account, "y@a", "two", None),
        incoming(ann_account, "x@a", "one again", Some("n2")),
    ];
    // The same network id on another account is another message.
    let ben_batch = vec![
        incoming(ben_account, "z@b", "three", Some("n2")),
        incoming(ben_account, "z@b", "four", Some("n3")),
    ];
    let stored = store
        .record_incoming_of_many(&[(ann, &ann_batch), (ben, &ben_batch)])
        .await
        .unwrap();
    assert_eq!(bodies(&stored[0]), ["one", "two"]);
    assert_eq!(bodies(&stored[1]), ["three", "four"]);
    assert!(stored[0].iter().all(|m| m.user_id == ann));
    assert!(stored[1].iter().all(|m| m.user_id == ben));
    let changes: Vec<i64> = stored[0].iter().map(|m| m.change).collect();
    assert_eq!(changes[1], changes[0] + 1, "{changes:?}");
    assert!(changes[0] > earlier[0].change);
    assert!(stored[0][0].position < stored[0][1].position);
    assert_eq!(store.last_change(ben).await.unwrap(), stored[1][1].change);

    // Through the intake: concurrent batches of many users, each answered with its own.
    let intake = Intake::start(store.clone());
    let writers = (0..40u128).map(|i| {
        let intake = intake.clone();
        async move {
            let user = UserId(uuid::Uuid::from_u128(100 + i % 8));
            let account = AccountId(uuid::Uuid::from_u128(200 + i));
            let id = format!("m{i}");
            let batch = vec![
                incoming(account, "p@q", &format!("hello {i}"), Some(&id)),
                incoming(account, "p@q", &format!("hello {i}"), Some(&id)),
            ];
            let stored = intake.record(user, batch).await.unwrap();
            assert_eq!(bodies(&stored), [format!("hello {i}")]);
            assert!(stored.iter().all(|m| m.user_id == user));
        }
    });
    futures::future::join_all(writers).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages WHERE body LIKE 'hello %'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 40);
}
