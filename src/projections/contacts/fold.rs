//! The contact list's batch path: the view rows a batch touches are read once, every event of
//! the batch is applied to them in memory with the same rules as the per-event statements of
//! [`super::ContactsProjection::apply`], and each row that changed is written once.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::domain::user::UserEvent;
use crate::projections::contacts::departure_reason_name;
use crate::store::event_store::StoredEvent;

/// (user, account), (user, meta-contact) or (user, contact).
type Key = (Uuid, Uuid);

#[derive(Debug, Clone, PartialEq)]
struct UserRow {
    user_name: String,
    registered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
struct AccountRow {
    protocol: String,
    server: String,
    handle: String,
    bound_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
struct MetaContactRow {
    name: String,
    updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
struct ContactRow {
    account_id: Uuid,
    protocol: String,
    handle: String,
    display_name: Option<String>,
    meta_contact_id: Option<Uuid>,
    is_new: bool,
    added_at: DateTime<Utc>,
    departed_reason: Option<String>,
    departed_at: Option<DateTime<Utc>>,
}

/// Rows of one view table: each as read before the batch, and as the batch leaves it. `None`:
/// no such row.
struct Table<K, R> {
    rows: HashMap<K, (Option<R>, Option<R>)>,
}

impl<K: Eq + Hash + Copy, R: Clone + PartialEq> Table<K, R> {
    /// Every key asked for, with the rows found.
    fn loaded(keys: &HashSet<K>, found: Vec<(K, R)>) -> Self {
        let mut rows: HashMap<K, (Option<R>, Option<R>)> =
            keys.iter().map(|k| (*k, (None, None))).collect();
        for (key, row) in found {
            rows.insert(key, (Some(row.clone()), Some(row)));
        }
        Self { rows }
    }

    fn get(&self, key: &K) -> Option<&R> {
        self.rows.get(key).and_then(|(_, now)| now.as_ref())
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut R> {
        self.rows.get_mut(key).and_then(|(_, now)| now.as_mut())
    }

    fn set(&mut self, key: K, row: Option<R>) {
        self.rows.entry(key).or_insert((None, None)).1 = row;
    }

    /// Inserts `row` unless there is one (`INSERT … ON CONFLICT DO NOTHING`).
    fn insert_new(&mut self, key: K, row: R) {
        if self.get(&key).is_none() {
            self.set(key, Some(row));
        }
    }

    /// (keys of rows to delete, rows to write), each changed row once.
    fn changes(&self) -> (Vec<K>, Vec<(K, &R)>) {
        let mut gone = Vec::new();
        let mut written = Vec::new();
        for (key, (before, now)) in &self.rows {
            if before == now {
                continue;
            }
            match now {
                None => gone.push(*key),
                Some(row) => written.push((*key, row)),
            }
        }
        (gone, written)
    }
}

/// What a batch reads before it folds.
#[derive(Default)]
struct Wanted {
    users: HashSet<Uuid>,
    accounts: HashSet<Key>,
    meta_contacts: HashSet<Key>,
    contacts: HashSet<Key>,
    /// Meta-contacts whose every member row is needed (a legacy removal dissolves one left
    /// without members).
    members_of: HashSet<Key>,
}

impl Wanted {
    fn of(events: &[StoredEvent]) -> Self {
        let mut wanted = Self::default();
        for event in events {
            let user = event.user_id.0;
            if let Some(change) = event.event.binding_change() {
                wanted
                    .meta_contacts
                    .insert((user, change.meta_contact_id.0));
                for state in [&change.before, &change.after].into_iter().flatten() {
                    wanted
                        .contacts
                        .extend(state.members.iter().map(|c| (user, c.0)));
                }
                continue;
            }
            match &event.event {
                UserEvent::UserRegistered { .. } => {
                    wanted.users.insert(user);
                }
                UserEvent::AccountBound(account) => {
                    wanted.accounts.insert((user, account.account_id.0));
                }
                UserEvent::AccountUnbound { account_id } => {
                    wanted.accounts.insert((user, account_id.0));
                }
                UserEvent::RosterContactAdded {
                    contact_id,
                    account_id,
                    ..
                }
                | UserEvent::RosterContactReturned {
                    contact_id,
                    account_id,
                    ..
                } => {
                    wanted.accounts.insert((user, account_id.0));
                    wanted.contacts.insert((user, contact_id.0));
                }
                UserEvent::RosterContactRemoved {
                    contact_id,
                    left_meta_contact,
                    ..
                } => {
                    wanted.contacts.insert((user, contact_id.0));
                    if let Some(meta) = left_meta_contact {
                        wanted.meta_contacts.insert((user, meta.0));
                        wanted.members_of.insert((user, meta.0));
                    }
                }
                UserEvent::RosterContactDeparted { contact_id, .. }
                | UserEvent::RosterContactRenamed { contact_id, .. } => {
                    wanted.contacts.insert((user, contact_id.0));
                }
                UserEvent::ContactsSeen { contact_ids } => {
                    wanted
                        .contacts
                        .extend(contact_ids.iter().map(|c| (user, c.0)));
                }
                _ => {}
            }
        }
        wanted
    }
}

/// The rows a batch touches, folded over in memory.
struct Views {
    users: Table<Uuid, UserRow>,
    accounts: Table<Key, AccountRow>,
    meta_contacts: Table<Key, MetaContactRow>,
    contacts: Table<Key, ContactRow>,
}

/// Two columns of key pairs, for `unnest`.
fn columns(keys: &HashSet<Key>) -> (Vec<Uuid>, Vec<Uuid>) {
    keys.iter().copied().unzip()
}

impl Views {
    async fn load(conn: &mut PgConnection, wanted: &Wanted) -> Result<Self, sqlx::Error> {
        let mut users = Vec::new();
        if !wanted.users.is_empty() {
            let ids: Vec<Uuid> = wanted.users.iter().copied().collect();
            for r in sqlx::query(
                "SELECT user_id, user_name, registered_at FROM user_view WHERE user_id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?
            {
                users.push((
                    r.try_get("user_id")?,
                    UserRow {
                        user_name: r.try_get("user_name")?,
                        registered_at: r.try_get("registered_at")?,
                    },
                ));
            }
        }
        let mut accounts = Vec::new();
        if !wanted.accounts.is_empty() {
            let (u, a) = columns(&wanted.accounts);
            for r in sqlx::query(
                "SELECT v.user_id, v.account_id, v.protocol, v.server, v.handle, v.bound_at \
                   FROM account_view v JOIN unnest($1::uuid[], $2::uuid[]) AS k(u, a) \
                     ON v.user_id = k.u AND v.account_id = k.a",
            )
            .bind(&u)
            .bind(&a)
            .fetch_all(&mut *conn)
            .await?
            {
                accounts.push((
                    (r.try_get("user_id")?, r.try_get("account_id")?),
                    AccountRow {
                        protocol: r.try_get("protocol")?,
                        server: r.try_get("server")?,
                        handle: r.try_get("handle")?,
                        bound_at: r.try_get("bound_at")?,
                    },
                ));
            }
        }
        let mut meta_contacts = Vec::new();
        if !wanted.meta_contacts.is_empty() {
            let (u, m) = columns(&wanted.meta_contacts);
            for r in sqlx::query(
                "SELECT v.user_id, v.meta_contact_id, v.name, v.updated_at \
                   FROM meta_contact_view v JOIN unnest($1::uuid[], $2::uuid[]) AS k(u, m) \
                     ON v.user_id = k.u AND v.meta_contact_id = k.m",
            )
            .bind(&u)
            .bind(&m)
            .fetch_all(&mut *conn)
            .await?
            {
                meta_contacts.push((
                    (r.try_get("user_id")?, r.try_get("meta_contact_id")?),
                    MetaContactRow {
                        name: r.try_get("name")?,
                        updated_at: r.try_get("updated_at")?,
                    },
                ));
            }
        }
        let mut contacts = Vec::new();
        if !wanted.contacts.is_empty() || !wanted.members_of.is_empty() {
            let (u, c) = columns(&wanted.contacts);
            let (mu, mm) = columns(&wanted.members_of);
            for r in sqlx::query(
                "SELECT v.* FROM contact_view v JOIN unnest($1::uuid[], $2::uuid[]) AS k(u, c) \
                     ON v.user_id = k.u AND v.contact_id = k.c \
                 UNION \
                 SELECT v.* FROM contact_view v JOIN unnest($3::uuid[], $4::uuid[]) AS k(u, m) \
                     ON v.user_id = k.u AND v.meta_contact_id = k.m",
            )
            .bind(&u)
            .bind(&c)
            .bind(&mu)
            .bind(&mm)
            .fetch_all(&mut *conn)
            .await?
            {
                contacts.push((
                    (r.try_get("user_id")?, r.try_get("contact_id")?),
                    ContactRow {
                        account_id: r.try_get("account_id")?,
                        protocol: r.try_get("protocol")?,
                        handle: r.try_get("handle")?,
                        display_name: r.try_get("display_name")?,
                        meta_contact_id: r.try_get("meta_contact_id")?,
                        is_new: r.try_get("is_new")?,
                        added_at: r.try_get("added_at")?,
                        departed_reason: r.try_get("departed_reason")?,
                        departed_at: r.try_get("departed_at")?,
                    },
                ));
            }
        }
        Ok(Self {
            users: Table::loaded(&wanted.users, users),
            accounts: Table::loaded(&wanted.accounts, accounts),
            meta_contacts: Table::loaded(&wanted.meta_contacts, meta_contacts),
            contacts: Table::loaded(&wanted.contacts, contacts),
        })
    }

    /// One event, as [`super::ContactsProjection::apply`] writes it.
    fn apply(&mut self, event: &StoredEvent) {
        let user = event.user_id.0;
        let at = event.recorded_at;
        if let Some(change) = event.event.binding_change() {
            let key = (user, change.meta_contact_id.0);
            let members = |state: &Option<crate::domain::user::MetaContactState>| -> HashSet<Uuid> {
                state
                    .iter()
                    .flat_map(|s| s.members.iter().map(|m| m.0))
                    .collect()
            };
            let (before, after) = (members(&change.before), members(&change.after));
            match &change.after {
                None => self.meta_contacts.set(key, None),
                Some(state) if change.before.as_ref().map(|b| &b.name) != Some(&state.name) => {
                    self.meta_contacts.set(
                        key,
                        Some(MetaContactRow {
                            name: state.name.to_string(),
                            updated_at: at,
                        }),
                    )
                }
                Some(_) => {}
            }
            for left in before.difference(&after) {
                if let Some(row) = self.contacts.get_mut(&(user, *left)) {
                    if row.meta_contact_id == Some(key.1) {
                        row.meta_contact_id = None;
                    }
                }
            }
            for joined in after.difference(&before) {
                if let Some(row) = self.contacts.get_mut(&(user, *joined)) {
                    row.meta_contact_id = Some(key.1);
                }
            }
            return;
        }
        match &event.event {
            UserEvent::UserRegistered { user_name, .. } => self.users.insert_new(
                user,
                UserRow {
                    user_name: user_name.to_string(),
                    registered_at: at,
                },
            ),
            UserEvent::AccountBound(account) => self.accounts.insert_new(
                (user, account.account_id.0),
                AccountRow {
                    protocol: account.protocol.to_string(),
                    server: account.server.clone(),
                    handle: account.handle.as_str().to_owned(),
                    bound_at: at,
                },
            ),
            UserEvent::AccountUnbound { account_id } => {
                self.accounts.set((user, account_id.0), None)
            }
            UserEvent::RosterContactAdded {
                contact_id,
                account_id,
                handle,
                display_name,
                is_new,
            } => {
                // Inserted with the account's protocol, and not at all without the account.
                if let Some(account) = self.accounts.get(&(user, account_id.0)) {
                    let row = ContactRow {
                        account_id: account_id.0,
                        protocol: account.protocol.clone(),
                        handle: handle.as_str().to_owned(),
                        display_name: display_name.clone(),
                        meta_contact_id: None,
                        is_new: *is_new,
                        added_at: at,
                        departed_reason: None,
                        departed_at: None,
                    };
                    self.contacts.insert_new((user, contact_id.0), row);
                }
            }
            UserEvent::RosterContactRemoved {
                contact_id,
                left_meta_contact,
                ..
            } => {
                self.contacts.set((user, contact_id.0), None);
                if let Some(meta) = left_meta_contact {
                    let key = (user, meta.0);
                    let members_left = self.contacts.rows.iter().any(|((u, _), (_, now))| {
                        *u == user
                            && now
                                .as_ref()
                                .is_some_and(|c| c.meta_contact_id == Some(meta.0))
                    });
                    if !members_left {
                        self.meta_contacts.set(key, None);
                    }
                }
            }
            UserEvent::RosterContactDeparted {
                contact_id, reason, ..
            } => {
                if let Some(row) = self.contacts.get_mut(&(user, contact_id.0)) {
                    row.departed_reason = Some(departure_reason_name(*reason).to_owned());
                    row.departed_at = Some(at);
                }
            }
            UserEvent::RosterContactReturned {
                contact_id,
                account_id,
                handle,
                display_name,
                meta_contact_id,
            } => {
                let Some(account) = self.accounts.get(&(user, account_id.0)) else {
                    return;
                };
                let protocol = account.protocol.clone();
                let key = (user, contact_id.0);
                match self.contacts.get_mut(&key) {
                    Some(row) => {
                        row.display_name = display_name.clone();
                        row.departed_reason = None;
                        row.departed_at = None;
                    }
                    None => self.contacts.set(
                        key,
                        Some(ContactRow {
                            account_id: account_id.0,
                            protocol,
                            handle: handle.as_str().to_owned(),
                            display_name: display_name.clone(),
                            meta_contact_id: meta_contact_id.map(|m| m.0),
                            is_new: false,
                            added_at: at,
                            departed_reason: None,
                            departed_at: None,
                        }),
                    ),
                }
            }
            UserEvent::RosterContactRenamed {
                contact_id,
                display_name,
                ..
            } => {
                if let Some(row) = self.contacts.get_mut(&(user, contact_id.0)) {
                    row.display_name = display_name.clone();
                }
            }
            UserEvent::ContactsSeen { contact_ids } => {
                for id in contact_ids {
                    if let Some(row) = self.contacts.get_mut(&(user, id.0)) {
                        row.is_new = false;
                    }
                }
            }
            _ => {}
        }
    }

    /// Deletes the rows that went away and writes the ones that changed: at most two
    /// statements per table.
    async fn save(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let (gone, written) = self.users.changes();
        if !gone.is_empty() {
            sqlx::query("DELETE FROM user_view WHERE user_id = ANY($1)")
                .bind(&gone)
                .execute(&mut *conn)
                .await?;
        }
        if !written.is_empty() {
            let ids: Vec<Uuid> = written.iter().map(|(k, _)| *k).collect();
            let names: Vec<&str> = written.iter().map(|(_, r)| r.user_name.as_str()).collect();
            let at: Vec<DateTime<Utc>> = written.iter().map(|(_, r)| r.registered_at).collect();
            sqlx::query(
                "INSERT INTO user_view (user_id, user_name, registered_at) \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) \
                 ON CONFLICT (user_id) DO UPDATE \
                   SET user_name = EXCLUDED.user_name, registered_at = EXCLUDED.registered_at",
            )
            .bind(&ids)
            .bind(&names)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }

        let (gone, written) = self.accounts.changes();
        delete_pairs(conn, "account_view", "account_id", &gone).await?;
        if !written.is_empty() {
            let (u, a): (Vec<Uuid>, Vec<Uuid>) = written.iter().map(|(k, _)| *k).unzip();
            let protocol: Vec<&str> = written.iter().map(|(_, r)| r.protocol.as_str()).collect();
            let server: Vec<&str> = written.iter().map(|(_, r)| r.server.as_str()).collect();
            let handle: Vec<&str> = written.iter().map(|(_, r)| r.handle.as_str()).collect();
            let at: Vec<DateTime<Utc>> = written.iter().map(|(_, r)| r.bound_at).collect();
            sqlx::query(
                "INSERT INTO account_view (user_id, account_id, protocol, server, handle, bound_at) \
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], \
                                      $6::timestamptz[]) \
                 ON CONFLICT (user_id, account_id) DO UPDATE \
                   SET protocol = EXCLUDED.protocol, server = EXCLUDED.server, \
                       handle = EXCLUDED.handle, bound_at = EXCLUDED.bound_at",
            )
            .bind(&u)
            .bind(&a)
            .bind(&protocol)
            .bind(&server)
            .bind(&handle)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }

        let (gone, written) = self.meta_contacts.changes();
        delete_pairs(conn, "meta_contact_view", "meta_contact_id", &gone).await?;
        if !written.is_empty() {
            let (u, m): (Vec<Uuid>, Vec<Uuid>) = written.iter().map(|(k, _)| *k).unzip();
            let name: Vec<&str> = written.iter().map(|(_, r)| r.name.as_str()).collect();
            let at: Vec<DateTime<Utc>> = written.iter().map(|(_, r)| r.updated_at).collect();
            sqlx::query(
                "INSERT INTO meta_contact_view (user_id, meta_contact_id, name, updated_at) \
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) \
                 ON CONFLICT (user_id, meta_contact_id) DO UPDATE \
                   SET name = EXCLUDED.name, updated_at = EXCLUDED.updated_at",
            )
            .bind(&u)
            .bind(&m)
            .bind(&name)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
        }

        let (gone, written) = self.contacts.changes();
        delete_pairs(conn, "contact_view", "contact_id", &gone).await?;
        if !written.is_empty() {
            let (u, c): (Vec<Uuid>, Vec<Uuid>) = written.iter().map(|(k, _)| *k).unzip();
            let column = |f: fn(&ContactRow) -> Option<&str>| -> Vec<Option<&str>> {
                written.iter().map(|(_, r)| f(r)).collect()
            };
            sqlx::query(
                "INSERT INTO contact_view (user_id, contact_id, account_id, protocol, handle, \
                   display_name, meta_contact_id, is_new, added_at, departed_reason, departed_at) \
                 SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
                                      $6::text[], $7::uuid[], $8::bool[], $9::timestamptz[], \
                                      $10::text[], $11::timestamptz[]) \
                 ON CONFLICT (user_id, contact_id) DO UPDATE \
                   SET account_id = EXCLUDED.account_id, protocol = EXCLUDED.protocol, \
                       handle = EXCLUDED.handle, display_name = EXCLUDED.display_name, \
                       meta_contact_id = EXCLUDED.meta_contact_id, is_new = EXCLUDED.is_new, \
                       added_at = EXCLUDED.added_at, departed_reason = EXCLUDED.departed_reason, \
                       departed_at = EXCLUDED.departed_at",
            )
            .bind(&u)
            .bind(&c)
            .bind(
                written
                    .iter()
                    .map(|(_, r)| r.account_id)
                    .collect::<Vec<_>>(),
            )
            .bind(column(|r| Some(r.protocol.as_str())))
            .bind(column(|r| Some(r.handle.as_str())))
            .bind(column(|r| r.display_name.as_deref()))
            .bind(
                written
                    .iter()
                    .map(|(_, r)| r.meta_contact_id)
                    .collect::<Vec<_>>(),
            )
            .bind(written.iter().map(|(_, r)| r.is_new).collect::<Vec<_>>())
            .bind(written.iter().map(|(_, r)| r.added_at).collect::<Vec<_>>())
            .bind(column(|r| r.departed_reason.as_deref()))
            .bind(
                written
                    .iter()
                    .map(|(_, r)| r.departed_at)
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// Deletes the rows of `table` keyed by (user_id, `id_column`) in `keys`.
async fn delete_pairs(
    conn: &mut PgConnection,
    table: &str,
    id_column: &str,
    keys: &[Key],
) -> Result<(), sqlx::Error> {
    if keys.is_empty() {
        return Ok(());
    }
    let (u, id): (Vec<Uuid>, Vec<Uuid>) = keys.iter().copied().unzip();
    sqlx::query(&format!(
        "DELETE FROM {table} v USING unnest($1::uuid[], $2::uuid[]) AS k(u, id) \
          WHERE v.user_id = k.u AND v.{id_column} = k.id"
    ))
    .bind(&u)
    .bind(&id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies `events` in order: reads the rows they touch, folds, writes what changed.
pub async fn apply_batch(
    conn: &mut PgConnection,
    events: &[StoredEvent],
) -> Result<(), sqlx::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut views = Views::load(conn, &Wanted::of(events)).await?;
    for event in events {
        views.apply(event);
    }
    views.save(conn).await
}
