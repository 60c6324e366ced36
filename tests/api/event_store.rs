//! The event store's two write paths against a real PostgreSQL: small commits through
//! postgres-es, big ones (a first roster import) in one statement. Both refuse a stale
//! sequence as a conflict and write nothing of it.

use std::collections::HashMap;

use cqrs_es::{AggregateError, EventStore};
use sqlx::PgPool;
use switchboard::domain::ids::{AccountId, ContactId, Handle, Protocol, UserId, UserName};
use switchboard::domain::user::UserEvent;
use switchboard::store::event_store::UserStore;

use crate::helpers::migrated_database;

fn contacts(account: AccountId, from: usize, count: usize) -> Vec<UserEvent> {
    (from..from + count)
        .map(|i| {
            let handle = Handle::parse(Protocol::Xmpp, &format!("c{i}@localhost")).unwrap();
            UserEvent::RosterContactAdded {
                contact_id: ContactId::for_handle(account, &handle),
                account_id: account,
                handle,
                display_name: Some(format!("C {i}")),
                is_new: false,
            }
        })
        .collect()
}

async fn stored(pool: &PgPool, user: UserId) -> Vec<i64> {
    sqlx::query_scalar("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence")
        .bind(user.to_string())
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn big_and_small_commits_are_stored_in_order_and_stale_ones_refused_whole() {
    let pool = migrated_database().await;
    let store = UserStore::new(pool.clone());
    let user_name = UserName::parse("stella").unwrap();
    let user = UserId::for_name(&user_name);
    let account = AccountId(uuid::Uuid::from_u128(7));
    let id = user.to_string();
    let metadata = HashMap::from([("actor".to_owned(), "admin:test".to_owned())]);

    let context = store.load_aggregate(&id).await.unwrap();
    let mut first = vec![UserEvent::UserRegistered {
        user_name,
        password_hash: "$argon2id$test".into(),
    }];
    first.extend(contacts(account, 0, 40));
    let written = store
        .commit(first, context, metadata.clone())
        .await
        .unwrap();
    assert_eq!(written.len(), 41);
    assert_eq!(stored(&pool, user).await, (1..=41).collect::<Vec<i64>>());

    // Two commands decided on the same state: the first wins, the second (big or small)
    // conflicts and leaves no trace.
    let context = store.load_aggregate(&id).await.unwrap();
    let stale = store.load_aggregate(&id).await.unwrap();
    let stale_small = store.load_aggregate(&id).await.unwrap();
    store
        .commit(contacts(account, 40, 2), context, metadata.clone())
        .await
        .unwrap();
    let refused = store
        .commit(contacts(account, 100, 30), stale, metadata.clone())
        .await;
    assert!(
        matches!(refused, Err(AggregateError::AggregateConflict)),
        "{refused:?}"
    );
    let refused = store
        .commit(contacts(account, 200, 2), stale_small, metadata.clone())
        .await;
    assert!(
        matches!(refused, Err(AggregateError::AggregateConflict)),
        "{refused:?}"
    );
    assert_eq!(stored(&pool, user).await, (1..=43).collect::<Vec<i64>>());

    // What the batch wrote reads back as written, metadata included.
    let events = store.read_stream(user, 0).await.unwrap();
    assert_eq!(events.len(), 43);
    assert_eq!(events[20].event, contacts(account, 19, 1)[0]);
    assert_eq!(events[20].actor, "admin:test");
}
