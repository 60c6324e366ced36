//! The user event store: postgres-es writes (a big commit goes in one statement of the same
//! rows), reads go through one decoder with the upcasters, and loaded aggregates are cached and
//! checked against the stored sequence, so a command's cost does not grow with the length of
//! the user's history.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use cqrs_es::persist::{
    EventStoreAggregateContext, EventUpcaster, PersistenceError, SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use prometheus_client::metrics::counter::Counter;

use crate::domain::ids::UserId;
use crate::domain::user::{User, UserEvent};

/// Upcasters for stored events of older versions. None yet: every event is at version 1.0.
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    Vec::new()
}

/// One stored event with everything the store adds to it.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Global position: the public id of an event.
    pub position: i64,
    /// The writing transaction, as text (xid8).
    pub tx_id: String,
    pub user_id: UserId,
    pub sequence: usize,
    pub event: UserEvent,
    pub actor: String,
    pub request_id: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

/// Where an event sits in commit order, the order projections apply events in: a projection
/// has applied an event once its checkpoint is at or past the event's point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CommitPoint {
    /// The writing transaction (xid8).
    pub tx_id: u64,
    pub position: i64,
}

impl CommitPoint {
    /// From the text form of an xid8 and a position.
    pub fn parse(tx_id: &str, position: i64) -> Result<Self, std::num::ParseIntError> {
        Ok(Self {
            tx_id: tx_id.parse()?,
            position,
        })
    }
}

/// What [`UserStore::append`] stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The stream's sequence after the append.
    pub sequence: usize,
    /// The point of the last event appended.
    pub at: CommitPoint,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer stored the next sequence first: decide again on fresh state.
    #[error("the stream was written concurrently")]
    Conflict,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event cannot be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("unexpected answer from the event store: {0}")]
    Answer(String),
}

/// One stored event exactly as the table holds it (secrets redacted), for export.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RawEvent {
    pub position: i64,
    pub sequence: i64,
    pub tx_id: String,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// Replaces every `password_hash` value, at any depth, by `"[redacted]"`.
fn redact(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (name, field) in fields.iter_mut() {
                if name == "password_hash" {
                    *field = Value::String("[redacted]".into());
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Columns every reader selects, in the order [`decode`] expects.
pub const EVENT_COLUMNS: &str = "position, tx_id::text AS tx_id, aggregate_id, sequence, \
     event_type, event_version, payload, metadata, recorded_at";

/// Decodes one row selected with [`EVENT_COLUMNS`], upcasting older versions.
///
/// An event of the current version is decoded straight from the row's bytes; only one that an
/// upcaster rewrites goes through a `serde_json::Value`.
pub fn decode(
    row: &sqlx::postgres::PgRow,
    upcasters: &[Box<dyn EventUpcaster>],
) -> Result<StoredEvent, PersistenceError> {
    let aggregate_id: String = row.try_get("aggregate_id").map_err(sql)?;
    let user_id = Uuid::parse_str(&aggregate_id)
        .map(UserId)
        .map_err(|e| PersistenceError::UnknownError(Box::new(e)))?;
    let sequence: i64 = row.try_get("sequence").map_err(sql)?;
    let sequence = usize::try_from(sequence).unwrap_or_default();
    let event_type: String = row.try_get("event_type").map_err(sql)?;
    let event_version: String = row.try_get("event_version").map_err(sql)?;
    let Json(metadata): Json<Metadata> = row.try_get("metadata").map_err(sql)?;
    let event: UserEvent = if upcasters
        .iter()
        .any(|u| u.can_upcast(&event_type, &event_version))
    {
        let serialized = SerializedEvent::new(
            aggregate_id,
            sequence,
            User::TYPE.to_owned(),
            event_type,
            event_version,
            row.try_get("payload").map_err(sql)?,
            row.try_get("metadata").map_err(sql)?,
        );
        let serialized = upcasters.iter().fold(serialized, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        });
        serde_json::from_value(serialized.payload)?
    } else {
        let Json(event) = row.try_get("payload").map_err(sql)?;
        event
    };
    Ok(StoredEvent {
        position: row.try_get("position").map_err(sql)?,
        tx_id: row.try_get("tx_id").map_err(sql)?,
        user_id,
        sequence,
        event,
        actor: metadata.actor.unwrap_or_else(|| "unknown".to_owned()),
        request_id: metadata.request_id,
        recorded_at: row.try_get("recorded_at").map_err(sql)?,
    })
}

/// What a reader takes from an event's metadata (other keys are passed over).
#[derive(serde::Deserialize)]
struct Metadata {
    actor: Option<String>,
    request_id: Option<String>,
}

fn sql(e: sqlx::Error) -> PersistenceError {
    PersistenceError::UnknownError(Box::new(e))
}

/// How many users' aggregates stay cached.
const CACHE_CAPACITY: usize = 10_000;

/// A cached aggregate: the state after `sequence`, and where its last append (if this node
/// made it) sits in commit order.
#[derive(Clone)]
struct Cached {
    user: Arc<User>,
    sequence: usize,
    last_append: Option<Appended>,
}

/// The event store the command side uses. Clones share one cache.
#[derive(Clone)]
pub struct UserStore {
    pool: PgPool,
    upcasters: Arc<Vec<Box<dyn EventUpcaster>>>,
    cache: Arc<Mutex<HashMap<UserId, Cached>>>,
    /// Events appended, for metrics.
    appended: Counter,
}

impl UserStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            upcasters: Arc::new(upcasters()),
            cache: Arc::new(Mutex::new(HashMap::new())),
            appended: Counter::default(),
        }
    }

    /// Counts every event it appends on `appended`.
    pub fn counting(mut self, appended: Counter) -> Self {
        self.appended = appended;
        self
    }

    /// The user's current state: the cached aggregate plus what was stored since, which is
    /// one indexed read of usually no rows, whatever the length of the history.
    pub async fn current(&self, user: UserId) -> Result<Arc<User>, PersistenceError> {
        let cached = self.cached(user);
        let (mut state, mut sequence) = cached
            .as_ref()
            .map(|c| (c.user.clone(), c.sequence))
            .unwrap_or_default();
        let newer = self.read_stream(user, sequence).await?;
        if newer.is_empty() {
            if cached.is_none() {
                self.remember(user, state.clone(), sequence, None);
            }
            return Ok(state);
        }
        let aggregate = Arc::make_mut(&mut state);
        for stored in newer {
            sequence = stored.sequence;
            aggregate.apply(stored.event);
        }
        self.remember(user, state.clone(), sequence, None);
        Ok(state)
    }

    /// Appends `events`, decided on `state` (the user's state at its sequence), in one
    /// statement: atomic by itself, one round trip, and a sequence already taken fails it
    /// (optimistic concurrency). The new state is cached.
    pub async fn append(
        &self,
        user: UserId,
        state: &User,
        events: Vec<UserEvent>,
        metadata: &HashMap<String, String>,
    ) -> Result<Appended, AppendError> {
        let envelopes = envelopes(user, state.sequence(), events, metadata);
        let rows = rows(&envelopes)?;
        let at = self.insert(&rows).await?;
        let mut next = state.clone();
        for envelope in envelopes {
            next.apply(envelope.payload);
        }
        let appended = Appended {
            sequence: next.sequence(),
            at,
        };
        self.appended.inc_by(rows.len() as u64);
        self.remember(user, Arc::new(next), appended.sequence, Some(appended));
        Ok(appended)
    }

    /// This node's cached state of the user, as it was after the last load or append here:
    /// possibly behind the stream (another node may have appended since).
    pub fn cached_state(&self, user: UserId) -> Option<Arc<User>> {
        self.cached(user).map(|c| c.user)
    }

    /// Where the user's event at `sequence` sits in commit order, if this node appended it
    /// last (the waiters of read-your-writes use it to wait without asking the database).
    pub fn commit_point(&self, user: UserId, sequence: usize) -> Option<CommitPoint> {
        self.cached(user)?
            .last_append
            .filter(|a| a.sequence == sequence)
            .map(|a| a.at)
    }

    /// Writes rows in one multi-row INSERT (10,000 events: 0.1 s, where one INSERT each took
    /// 2 s), returning the point of the last.
    async fn insert(&self, events: &[SerializedEvent]) -> Result<CommitPoint, AppendError> {
        let column = |f: fn(&SerializedEvent) -> String| events.iter().map(f).collect::<Vec<_>>();
        let sequences = events
            .iter()
            .map(|e| i64::try_from(e.sequence).map_err(|e| AppendError::Answer(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let json =
            |f: fn(&SerializedEvent) -> &Value| events.iter().map(f).cloned().collect::<Vec<_>>();
        let inserted = sqlx::query(
            "WITH rows AS (INSERT INTO events \
               (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                                  $6::jsonb[], $7::jsonb[]) \
             RETURNING tx_id, position) \
             SELECT max(tx_id::text) AS tx_id, max(position) AS position FROM rows",
        )
        .bind(column(|e| e.aggregate_type.clone()))
        .bind(column(|e| e.aggregate_id.clone()))
        .bind(sequences)
        .bind(column(|e| e.event_type.clone()))
        .bind(column(|e| e.event_version.clone()))
        .bind(json(|e| &e.payload))
        .bind(json(|e| &e.metadata))
        .fetch_one(&self.pool)
        .await;
        let row = match inserted {
            Ok(row) => row,
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(AppendError::Conflict)
            }
            Err(e) => return Err(e.into()),
        };
        let tx_id: Option<String> = row.try_get("tx_id")?;
        let position: Option<i64> = row.try_get("position")?;
        match (tx_id, position) {
            (Some(tx_id), Some(position)) => CommitPoint::parse(&tx_id, position)
                .map_err(|e| AppendError::Answer(format!("tx_id {tx_id}: {e}"))),
            _ => Err(AppendError::Answer("no row inserted".into())),
        }
    }

    /// Events of one user after `after_sequence`, in stream order.
    pub async fn read_stream(
        &self,
        user: UserId,
        after_sequence: usize,
    ) -> Result<Vec<StoredEvent>, PersistenceError> {
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 ORDER BY sequence"
        );
        let rows = sqlx::query(&query)
            .bind(User::TYPE)
            .bind(user.to_string())
            .bind(i64::try_from(after_sequence).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?;
        rows.iter().map(|r| decode(r, &self.upcasters)).collect()
    }

    /// Up to `limit` events of one user after `after_sequence`, as stored (not upcast): for the
    /// auditors' export. A password hash in a payload is replaced by `"[redacted]"`.
    pub async fn raw_page(
        &self,
        user: UserId,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<RawEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT position, sequence, tx_id::text AS tx_id, event_type, event_version, payload,                     metadata, recorded_at FROM events               WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3               ORDER BY sequence LIMIT $4",
        )
        .bind(User::TYPE)
        .bind(user.to_string())
        .bind(after_sequence)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let mut payload: Value = r.try_get("payload")?;
                redact(&mut payload);
                Ok(RawEvent {
                    position: r.try_get("position")?,
                    sequence: r.try_get("sequence")?,
                    tx_id: r.try_get("tx_id")?,
                    event_type: r.try_get("event_type")?,
                    event_version: r.try_get("event_version")?,
                    payload,
                    metadata: r.try_get("metadata")?,
                    recorded_at: r.try_get("recorded_at")?,
                })
            })
            .collect()
    }

    /// The stream's prefix up to the last event recorded at or before `as_of`, in stream order
    /// (time travel).
    pub async fn read_stream_as_of(
        &self,
        user: UserId,
        as_of: DateTime<Utc>,
    ) -> Result<Vec<StoredEvent>, PersistenceError> {
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
               AND sequence <= (SELECT COALESCE(max(sequence), 0) FROM events \
                                 WHERE aggregate_type = $1 AND aggregate_id = $2 AND recorded_at <= $3) \
             ORDER BY sequence"
        );
        let rows = sqlx::query(&query)
            .bind(User::TYPE)
            .bind(user.to_string())
            .bind(as_of)
            .fetch_all(&self.pool)
            .await
            .map_err(sql)?;
        rows.iter().map(|r| decode(r, &self.upcasters)).collect()
    }

    /// The user's event with public id `position`; none if it is another user's.
    pub async fn event_at(
        &self,
        user: UserId,
        position: i64,
    ) -> Result<Option<StoredEvent>, PersistenceError> {
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE position = $1 AND aggregate_type = $2 AND aggregate_id = $3"
        );
        let row = sqlx::query(&query)
            .bind(position)
            .bind(User::TYPE)
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql)?;
        row.map(|r| decode(&r, &self.upcasters)).transpose()
    }

    /// The public id (global position) of the user's event at `sequence`.
    pub async fn position_of(
        &self,
        user: UserId,
        sequence: usize,
    ) -> Result<Option<i64>, PersistenceError> {
        sqlx::query_scalar(
            "SELECT position FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
        )
        .bind(User::TYPE)
        .bind(user.to_string())
        .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
        .fetch_optional(&self.pool)
        .await
        .map_err(sql)
    }

    /// Drops a cached aggregate, e.g. after a failed commit.
    fn forget(&self, user: UserId) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&user);
        }
    }

    fn remember(
        &self,
        user: UserId,
        state: Arc<User>,
        sequence: usize,
        last_append: Option<Appended>,
    ) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_CAPACITY && !cache.contains_key(&user) {
                // Crude but bounded: start over rather than track recency.
                cache.clear();
            }
            let entry = cache.entry(user).or_insert_with(|| Cached {
                user: state.clone(),
                sequence,
                last_append: None,
            });
            // Another task may have cached a newer state meanwhile: keep the newest.
            if sequence >= entry.sequence {
                let last_append =
                    last_append.or(entry.last_append.filter(|a| a.sequence == sequence));
                *entry = Cached {
                    user: state,
                    sequence,
                    last_append,
                };
            }
        }
    }

    fn cached(&self, user: UserId) -> Option<Cached> {
        self.cache.lock().ok()?.get(&user).cloned()
    }
}

/// A commit's events numbered from `base + 1` on `user`'s stream, each with the metadata.
fn envelopes(
    user: UserId,
    base: usize,
    events: Vec<UserEvent>,
    metadata: &HashMap<String, String>,
) -> Vec<EventEnvelope<User>> {
    events
        .into_iter()
        .zip(base + 1..)
        .map(|(payload, sequence)| EventEnvelope {
            aggregate_id: user.to_string(),
            sequence,
            payload,
            metadata: metadata.clone(),
        })
        .collect()
}

/// The rows the events table stores for `envelopes`.
fn rows(envelopes: &[EventEnvelope<User>]) -> Result<Vec<SerializedEvent>, AppendError> {
    envelopes
        .iter()
        .map(|e| SerializedEvent::try_from(e).map_err(|e| AppendError::Answer(e.to_string())))
        .collect()
}

fn parse_user(
    aggregate_id: &str,
) -> Result<UserId, AggregateError<crate::domain::user::UserError>> {
    Uuid::parse_str(aggregate_id)
        .map(UserId)
        .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))
}

impl EventStore<User> for UserStore {
    type AC = EventStoreAggregateContext<User>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<User>>, AggregateError<crate::domain::user::UserError>> {
        let user = parse_user(aggregate_id)?;
        let events = self.read_stream(user, 0).await?;
        Ok(events
            .into_iter()
            .map(|e| EventEnvelope {
                aggregate_id: aggregate_id.to_owned(),
                sequence: e.sequence,
                payload: e.event,
                metadata: HashMap::from([("actor".to_owned(), e.actor)]),
            })
            .collect())
    }

    /// [`UserStore::current`], for cqrs-es.
    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<crate::domain::user::UserError>> {
        let user = parse_user(aggregate_id)?;
        let state = self.current(user).await?;
        Ok(EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            current_sequence: state.sequence(),
            aggregate: Arc::unwrap_or_clone(state),
            current_snapshot: None,
        })
    }

    /// The same one-statement append as [`UserStore::append`].
    async fn commit(
        &self,
        events: Vec<UserEvent>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<User>>, AggregateError<crate::domain::user::UserError>> {
        let user = parse_user(&context.aggregate_id)?;
        let envelopes = envelopes(user, context.current_sequence, events, &metadata);
        if envelopes.is_empty() {
            return Ok(envelopes);
        }
        let serialized =
            rows(&envelopes).map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        match self.insert(&serialized).await {
            Ok(_) => {
                // The context's aggregate is not trusted for the cache: a caller of this trait
                // may not have applied the events to it. The next load reads them.
                self.forget(user);
                self.appended.inc_by(envelopes.len() as u64);
                Ok(envelopes)
            }
            Err(AppendError::Conflict) => {
                self.forget(user);
                Err(AggregateError::AggregateConflict)
            }
            Err(e) => {
                self.forget(user);
                Err(AggregateError::UnexpectedError(Box::new(e)))
            }
        }
    }
}
