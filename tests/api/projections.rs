//! The catch-up reader's ordering guarantee, against a real PostgreSQL: an event whose
//! transaction commits late is never skipped, even when a later position committed first.

use sqlx::PgPool;
use switchboard::domain::ids::{UserId, UserName};
use switchboard::domain::user::UserEvent;
use switchboard::projections::history::HistoryProjection;
use switchboard::projections::runner::catch_up;
use switchboard::store::event_store::upcasters;

use crate::helpers::{fresh_database, migrated_database, open_transaction};

/// Breaks the history view (no row can be written) or mends it.
async fn refuse_history_rows(pool: &PgPool, refuse: bool) {
    let change = if refuse {
        "ADD CONSTRAINT no_rows CHECK (false) NOT VALID"
    } else {
        "DROP CONSTRAINT no_rows"
    };
    sqlx::query(&format!("ALTER TABLE history_view {change}"))
        .execute(pool)
        .await
        .unwrap();
}

async fn insert_registration(conn: &mut sqlx::PgConnection, name: &str) -> i64 {
    insert_registration_as(conn, name, None).await
}

/// Inserts a registration, under the given transaction id instead of the writer's own if any.
async fn insert_registration_as(
    conn: &mut sqlx::PgConnection,
    name: &str,
    tx_id: Option<&str>,
) -> i64 {
    let user_name = UserName::parse(name).unwrap();
    let event = UserEvent::UserRegistered {
        user_name: user_name.clone(),
        password_hash: "$argon2id$test".into(),
    };
    sqlx::query_scalar(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, tx_id) \
         VALUES ('User', $1, 1, 'UserRegistered', '1.0', $2, '{\"actor\": \"admin:test\"}', \
                 COALESCE($3::text::xid8, pg_current_xact_id())) RETURNING position",
    )
    .bind(UserId::for_name(&user_name).to_string())
    .bind(serde_json::to_value(&event).unwrap())
    .bind(tx_id)
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn history_positions(pool: &PgPool) -> Vec<i64> {
    sqlx::query_scalar("SELECT position FROM history_view ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_late_commit_is_read_in_commit_order_not_skipped() {
    let pool = migrated_database().await;
    let upcasters = upcasters();

    // A takes the earlier position but stays open; B takes a later one and commits first.
    let mut a = pool.begin().await.unwrap();
    let early = insert_registration(&mut a, "early").await;
    let mut b = pool.begin().await.unwrap();
    let late = insert_registration(&mut b, "late").await;
    b.commit().await.unwrap();
    assert!(early < late);

    // While A is open, B's row is not read either: reading it now would move the checkpoint
    // past A's position, and A would be lost when it commits.
    let read = catch_up(&pool, &HistoryProjection, &upcasters)
        .await
        .unwrap();
    assert_eq!(read, 0);
    assert!(history_positions(&pool).await.is_empty());

    a.commit().await.unwrap();
    let read = catch_up(&pool, &HistoryProjection, &upcasters)
        .await
        .unwrap();
    assert_eq!(read, 2);
    let mut both = vec![early, late];
    both.sort();
    assert_eq!(history_positions(&pool).await, both);
    assert_eq!(
        catch_up(&pool, &HistoryProjection, &upcasters)
            .await
            .unwrap(),
        0
    );
    pool.close().await;
}

#[tokio::test]
async fn a_failing_batch_leaves_the_checkpoint_where_it_was() {
    let pool = migrated_database().await;
    let upcasters = upcasters();
    let mut conn = pool.acquire().await.unwrap();
    insert_registration(&mut conn, "first").await;
    drop(conn);
    // Break the view: the batch fails, nothing is written, and nothing is skipped.
    refuse_history_rows(&pool, true).await;
    assert!(catch_up(&pool, &HistoryProjection, &upcasters)
        .await
        .is_err());
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = 'history'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(checkpoint, 0);
    refuse_history_rows(&pool, false).await;
    assert_eq!(
        catch_up(&pool, &HistoryProjection, &upcasters)
            .await
            .unwrap(),
        1
    );
    assert_eq!(history_positions(&pool).await.len(), 1);
    pool.close().await;
}

#[tokio::test]
async fn transactions_that_cannot_write_events_do_not_hold_the_reader_back() {
    let url = fresh_database().await;
    let pool = PgPool::connect(&url).await.unwrap();
    switchboard::store::migrate(&pool).await.unwrap();
    let upcasters = upcasters();
    sqlx::query("CREATE TABLE unrelated (n int)")
        .execute(&pool)
        .await
        .unwrap();

    // One open writer in another database of the same cluster, one in this database writing a
    // table that is not `events`, one only reading `events`.
    let other_database = open_transaction(
        &fresh_database().await,
        &[
            "CREATE TABLE batch_job (n int)",
            "INSERT INTO batch_job VALUES (1)",
        ],
    )
    .await;
    let same_database = open_transaction(&url, &["INSERT INTO unrelated VALUES (1)"]).await;
    let reader = open_transaction(
        &url,
        &[
            "SELECT count(*) FROM events",
            "INSERT INTO unrelated VALUES (2)",
        ],
    )
    .await;

    let mut conn = pool.acquire().await.unwrap();
    let position = insert_registration(&mut conn, "prompt").await;
    drop(conn);
    let read = catch_up(&pool, &HistoryProjection, &upcasters)
        .await
        .unwrap();
    assert_eq!(read, 1, "the committed event is read at once");
    assert_eq!(history_positions(&pool).await, vec![position]);

    for tx in [other_database, same_database, reader] {
        tx.rollback().await.unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn a_writer_that_locked_events_before_its_id_is_read_after_commit() {
    let pool = migrated_database().await;
    let upcasters = upcasters();

    // A holds the writing lock but no transaction id yet: it gets a newer id than B when it
    // writes, so B may be read before A commits without skipping A.
    let mut a = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE events IN ROW EXCLUSIVE MODE")
        .execute(&mut *a)
        .await
        .unwrap();
    let mut b = pool.acquire().await.unwrap();
    let first = insert_registration(&mut b, "first").await;
    drop(b);
    assert_eq!(
        catch_up(&pool, &HistoryProjection, &upcasters)
            .await
            .unwrap(),
        1
    );
    let second = insert_registration(&mut a, "second").await;
    // A is open with an id now: nothing after it may be read.
    assert_eq!(
        catch_up(&pool, &HistoryProjection, &upcasters)
            .await
            .unwrap(),
        0
    );
    a.commit().await.unwrap();
    assert_eq!(
        catch_up(&pool, &HistoryProjection, &upcasters)
            .await
            .unwrap(),
        1
    );
    assert_eq!(history_positions(&pool).await, vec![first, second]);
    pool.close().await;
}

#[tokio::test]
async fn events_written_after_another_table_in_one_transaction_are_refused() {
    let pool = migrated_database().await;
    sqlx::query("CREATE TABLE unrelated (n int)")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO unrelated VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let refused = sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('User', 'x', 1, 'UserRegistered', '1.0', '{}', '{}')",
    )
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("first rows a transaction writes"),
        "{refused}"
    );
    tx.rollback().await.unwrap();

    // Several event statements in one transaction stay allowed.
    let mut tx = pool.begin().await.unwrap();
    insert_registration(&mut tx, "one").await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('User', 'x', 2, 'UserRegistered', '1.0', '{}', '{}')",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    pool.close().await;
}

/// Transaction ids compare as numbers, not as text: a batch holding transactions 9 and 10 must
/// end its checkpoint at 10 (as text, "10" sorts before "9": the checkpoint would land on 9 and
/// the next read would apply transaction 10's event a second time).
#[tokio::test]
async fn a_batch_spanning_a_digit_boundary_of_transaction_ids_keeps_commit_order() {
    let pool = migrated_database().await;
    let upcasters = upcasters();
    let mut conn = pool.acquire().await.unwrap();
    // The later transaction takes the earlier position, so position order cannot hide the bug.
    let tenth = insert_registration_as(&mut conn, "tenth", Some("10")).await;
    let ninth = insert_registration_as(&mut conn, "ninth", Some("9")).await;
    drop(conn);

    let read = catch_up(&pool, &HistoryProjection, &upcasters)
        .await
        .unwrap();
    assert_eq!(read, 2);
    let checkpoint: (String, i64) = sqlx::query_as(
        "SELECT tx_id::text, position FROM projection_checkpoints WHERE name = 'history'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(checkpoint, ("10".to_owned(), tenth));
    assert_eq!(
        catch_up(&pool, &HistoryProjection, &upcasters)
            .await
            .unwrap(),
        0,
        "nothing is read twice"
    );
    let mut both = vec![ninth, tenth];
    both.sort();
    assert_eq!(history_positions(&pool).await, both);
    pool.close().await;
}

async fn checkpoint_position(pool: &PgPool, name: &str) -> i64 {
    sqlx::query_scalar("SELECT position FROM projection_checkpoints WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
        .unwrap()
        .unwrap_or(0)
}

#[tokio::test]
async fn projections_caught_up_together_each_start_from_their_own_checkpoint() {
    use switchboard::projections::contacts::ContactsProjection;
    use switchboard::projections::runner::{catch_up_together, Projection};

    let pool = migrated_database().await;
    let upcasters = upcasters();
    let mut conn = pool.acquire().await.unwrap();
    let first = insert_registration(&mut conn, "first").await;
    // The history is ahead: it has applied the first event, the contact list nothing.
    assert_eq!(
        catch_up(&pool, &HistoryProjection, &upcasters)
            .await
            .unwrap(),
        1
    );
    let second = insert_registration(&mut conn, "second").await;
    drop(conn);

    let both: [&dyn Projection; 2] = [&ContactsProjection, &HistoryProjection];
    let caught = catch_up_together(&pool, &both, &upcasters, 500)
        .await
        .unwrap();
    assert_eq!(caught.read, 2, "read from the older checkpoint");
    assert_eq!(caught.checkpoints[0], caught.checkpoints[1]);
    assert_eq!(caught.checkpoints[0].position, second);
    // The history applied only the second event; the contact list both.
    assert_eq!(history_positions(&pool).await, vec![first, second]);
    let users: Vec<String> =
        sqlx::query_scalar("SELECT user_name FROM user_view ORDER BY user_name")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(users, ["first", "second"]);
    assert_eq!(checkpoint_position(&pool, "contacts").await, second);
    assert_eq!(checkpoint_position(&pool, "history").await, second);
    // Nothing is left, and nothing moves back.
    let again = catch_up_together(&pool, &both, &upcasters, 500)
        .await
        .unwrap();
    assert_eq!(again.read, 0);
    assert_eq!(again.checkpoints, caught.checkpoints);
    pool.close().await;
}

#[tokio::test]
async fn a_projection_that_fails_alone_does_not_hold_the_others_back() {
    use std::time::Duration;
    use switchboard::projections::progress::Progress;

    let pool = migrated_database().await;
    // The history cannot take a row; the contact list is fine.
    refuse_history_rows(&pool, true).await;
    let mut conn = pool.acquire().await.unwrap();
    let event = insert_registration(&mut conn, "first").await;
    drop(conn);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let progress = Progress::default();
    let runner = tokio::spawn(switchboard::projections::runner::run(
        pool.clone(),
        switchboard::projections::all(),
        progress.clone(),
        stop,
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while checkpoint_position(&pool, "contacts").await < event {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the contact list never caught up while the history failed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(checkpoint_position(&pool, "history").await, 0);
    assert_eq!(progress.watch("contacts").borrow().position, event);

    // Mended, the history catches up on its own too.
    refuse_history_rows(&pool, false).await;
    while checkpoint_position(&pool, "history").await < event {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the history never caught up once mended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(history_positions(&pool).await, vec![event]);
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), runner)
        .await
        .expect("the runner stops when told")
        .unwrap();
    pool.close().await;
}

async fn history_indexes(pool: &PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT indexname::text, indexdef FROM pg_indexes \
          WHERE tablename = 'history_view' ORDER BY indexname",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Index definitions a rebuild keeps while it runs.
async fn waiting_indexes(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM projection_deferred_indexes")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rebuild_cut_short_loses_no_index_and_a_whole_one_builds_them_as_they_were() {
    use switchboard::projections::runner::{rebuild, restore_indexes};

    let pool = migrated_database().await;
    let before = history_indexes(&pool).await;
    assert_eq!(before.len(), 5, "the key and four lookups: {before:?}");
    let mut conn = pool.acquire().await.unwrap();
    insert_registration(&mut conn, "first").await;
    insert_registration(&mut conn, "second").await;
    drop(conn);

    // Cut short after its first batch: the lookups are gone, their definitions kept.
    let cut = {
        let pool = pool.clone();
        tokio::spawn(async move {
            rebuild(&pool, &HistoryProjection, |_, _| panic!("cut short"))
                .await
                .ok();
        })
    };
    assert!(cut.await.unwrap_err().is_panic());
    let during = history_indexes(&pool).await;
    assert_eq!(during.len(), 1, "only the primary key stays: {during:?}");
    assert_eq!(waiting_indexes(&pool).await, 4);

    // What a start does: every index is back, as the migrations made it.
    restore_indexes(&pool).await.unwrap();
    assert_eq!(history_indexes(&pool).await, before);

    // A whole rebuild ends with the same indexes, and nothing left waiting.
    rebuild(&pool, &HistoryProjection, |_, _| {}).await.unwrap();
    assert_eq!(history_indexes(&pool).await, before);
    assert_eq!(history_positions(&pool).await.len(), 2);
    assert_eq!(waiting_indexes(&pool).await, 0);
    pool.close().await;
}
