//! The batch paths of the projections against the per-event reference: a random but valid
//! stream of 10,000 events of several users (the user aggregate driven by random commands from a
//! seeded RNG, plus a few events only the first version wrote) is stored in a real events table;
//! the views built one event at a time by each projection's `apply` must equal, row for row,
//! the views its `apply_batch` builds in the live runner's batches, in small odd batches and in
//! a rebuild's big ones.
//!
//! `SWITCHBOARD_FOLD_SEED` picks another stream.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::Aggregate;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sqlx::{PgConnection, PgPool};
use switchboard::domain::ids::{
    ContactId, DisplayName, Handle, MetaContactId, PersonRef, Protocol, UserId, UserName,
};
use switchboard::domain::matching::Profile;
use switchboard::domain::user::{
    AuditedRead, NewAccount, ProfileItem, RosterItem, User, UserCommand, UserEvent,
};
use switchboard::projections::runner::{catch_up_limited, rebuild, Projection, BATCH};
use switchboard::store::event_store::{upcasters, StoredEvent};
use uuid::Uuid;

use crate::helpers::migrated_database;

const EVENTS: usize = 10_000;
const USERS: usize = 12;
/// (network, server, own handle) of the accounts a user may bind.
const ACCOUNTS: [(Protocol, &str, &str); 3] = [
    (Protocol::Xmpp, "xmpp.example", "me@xmpp.example"),
    (Protocol::Irc, "irc.example", "me"),
    (Protocol::Matrix, "matrix.example", "@me:matrix.example"),
];
const PEOPLE: [&str; 8] = ["bob", "carol", "dan", "erin", "fred", "gina", "hal", "ivy"];
const NAMES: [&str; 6] = ["Bob", "bob", "Carol", "Dan", "Erin E.", "Fred"];
/// Names as upstream rosters give them: anything, including what COPY and JSON must escape.
const ROSTER_NAMES: [&str; 3] = ["Zoë \"Z\" \\ O'Neil", "tab\there", "two\nlines\r"];

/// Each projection's `apply`, one event at a time: the reference.
struct EventByEvent(Arc<dyn Projection>);

#[async_trait]
impl Projection for EventByEvent {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    async fn apply(&self, conn: &mut PgConnection, event: &StoredEvent) -> Result<(), sqlx::Error> {
        self.0.apply(conn, event).await
    }
    async fn reset(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        self.0.reset(conn).await
    }
}

/// One user of the stream: the aggregate as its commands left it, and its stream.
struct Person {
    id: UserId,
    name: UserName,
    state: User,
    log: Vec<UserEvent>,
}

fn handle_of(protocol: Protocol, person: &str) -> Handle {
    let raw = match protocol {
        Protocol::Xmpp => format!("{person}@example.org"),
        Protocol::Matrix => format!("@{person}:example.org"),
        _ => person.to_owned(),
    };
    Handle::parse(protocol, &raw).unwrap()
}

fn display_name(rng: &mut StdRng) -> Option<String> {
    match rng.gen_range(0..10) {
        0..=1 => None,
        2 => Some(ROSTER_NAMES.choose(rng).unwrap().to_string()),
        _ => Some(NAMES.choose(rng).unwrap().to_string()),
    }
}

fn meta_name(rng: &mut StdRng) -> DisplayName {
    DisplayName::parse(&format!(
        "{} {}",
        NAMES.choose(rng).unwrap(),
        rng.gen_range(0..4)
    ))
    .unwrap()
}

impl Person {
    fn new(n: usize) -> Self {
        let name = UserName::parse(&format!("fold{n}")).unwrap();
        Self {
            id: UserId::for_name(&name),
            name,
            state: User::default(),
            log: Vec::new(),
        }
    }

    fn account(&self, slot: usize) -> NewAccount {
        let (protocol, server, handle) = ACCOUNTS[slot];
        let handle = Handle::parse(protocol, handle).unwrap();
        NewAccount {
            account_id: self
                .state
                .account_id_for(self.id, protocol, server, &handle),
            protocol,
            server: server.to_owned(),
            handle,
        }
    }

    fn any_contact(&self, rng: &mut StdRng) -> Option<ContactId> {
        let ids: Vec<&ContactId> = self.state.contacts().keys().collect();
        ids.choose(rng).map(|c| **c)
    }

    fn any_meta(&self, rng: &mut StdRng) -> Option<MetaContactId> {
        let ids: Vec<&MetaContactId> = self.state.meta_contacts().keys().collect();
        ids.choose(rng).map(|m| **m)
    }

    fn roster(&self, rng: &mut StdRng, slot: usize) -> Vec<RosterItem> {
        let protocol = ACCOUNTS[slot].0;
        let mut roster = Vec::new();
        for person in PEOPLE {
            if rng.gen_bool(0.7) {
                roster.push(RosterItem {
                    handle: handle_of(protocol, person),
                    display_name: display_name(rng),
                });
            }
        }
        roster
    }

    /// A random command, most of them about what exists (so most are accepted).
    fn command(&self, rng: &mut StdRng) -> Option<UserCommand> {
        if self.state.registration().is_none() {
            let slots: Vec<usize> = (0..ACCOUNTS.len()).filter(|_| rng.gen_bool(0.6)).collect();
            return Some(UserCommand::Register {
                user_name: self.name.clone(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                accounts: slots.into_iter().map(|s| self.account(s)).collect(),
            });
        }
        let slot = rng.gen_range(0..ACCOUNTS.len());
        let account_id = self.account(slot).account_id;
        Some(match rng.gen_range(0..100) {
            0..=4 => UserCommand::BindAccount(self.account(slot)),
            5..=6 => UserCommand::UnbindAccount { account_id },
            7..=24 => UserCommand::SyncRoster {
                account_id,
                roster: Some(self.roster(rng, slot)),
            },
            25..=27 => UserCommand::UpdateProfiles {
                account_id,
                profiles: vec![ProfileItem {
                    handle: handle_of(ACCOUNTS[slot].0, PEOPLE.choose(rng).unwrap()),
                    profile: Profile {
                        nickname: display_name(rng),
                        emails: Vec::new(),
                        verified_address: None,
                    },
                }],
            },
            28..=30 => UserCommand::AddContact {
                account_id,
                handle: handle_of(ACCOUNTS[slot].0, PEOPLE.choose(rng).unwrap()),
                display_name: display_name(rng),
            },
            31..=32 => UserCommand::AcceptMessageRequest {
                account_id,
                handle: handle_of(ACCOUNTS[slot].0, PEOPLE.choose(rng).unwrap()),
                display_name: display_name(rng),
            },
            33..=35 => UserCommand::RemoveContact {
                contact_id: self.any_contact(rng)?,
            },
            36..=38 => UserCommand::ForgetContact {
                contact_id: self
                    .state
                    .contacts()
                    .iter()
                    .filter(|(_, c)| c.is_dormant())
                    .map(|(id, _)| *id)
                    .collect::<Vec<_>>()
                    .choose(rng)
                    .copied()?,
            },
            39..=41 => UserCommand::MarkContactsSeen {
                contact_ids: if rng.gen_bool(0.5) {
                    None
                } else {
                    Some(self.any_contact(rng).into_iter().collect())
                },
            },
            42..=49 => {
                let mut ids: Vec<ContactId> = self.state.contacts().keys().copied().collect();
                ids.shuffle(rng);
                ids.truncate(rng.gen_range(2..=3));
                UserCommand::MergeContacts {
                    meta_contact_id: MetaContactId(Uuid::from_u128(rng.gen())),
                    name: meta_name(rng),
                    contact_ids: ids,
                }
            }
            50..=56 => UserCommand::AddToMetaContact {
                meta_contact_id: self.any_meta(rng)?,
                contact_id: self.any_contact(rng)?,
            },
            57..=61 => {
                let meta = self.any_meta(rng)?;
                let members = &self.state.meta_contacts()[&meta].members;
                UserCommand::RemoveFromMetaContact {
                    meta_contact_id: meta,
                    contact_id: *members.choose(rng)?,
                }
            }
            // Often, and often several in a row: renames within one batch.
            62..=79 => UserCommand::RenameMetaContact {
                meta_contact_id: self.any_meta(rng)?,
                name: meta_name(rng),
            },
            80..=89 => {
                let undoable: Vec<usize> = (0..self.log.len())
                    .filter(|i| self.log[*i].is_undoable())
                    .collect();
                let index = if rng.gen_bool(0.6) {
                    *undoable.last()?
                } else {
                    *undoable.choose(rng)?
                };
                UserCommand::Undo {
                    target_sequence: index + 1,
                    target: Box::new(self.log[index].clone()),
                }
            }
            90..=93 => {
                let open: Vec<_> = self.state.open_suggestions().cloned().collect();
                let suggestion = open.choose(rng)?;
                if rng.gen_bool(0.7) {
                    UserCommand::AcceptMatch {
                        contact_id: suggestion.contact_id,
                        target: suggestion.target,
                        meta_contact_id: MetaContactId(Uuid::from_u128(rng.gen())),
                        name: None,
                    }
                } else {
                    UserCommand::RejectMatch {
                        contact_id: suggestion.contact_id,
                        target: suggestion.target,
                    }
                }
            }
            94 => UserCommand::SetMatchPolicy {
                auto_bind_at: [None, Some(40), Some(90)].choose(rng).copied().flatten(),
            },
            95 => UserCommand::RecordAuditorRead {
                auditor: "inspector".into(),
                read: AuditedRead::History,
            },
            96..=97 => UserCommand::SetRoutePreference {
                person: PersonRef::MetaContact(self.any_meta(rng)?),
                via: None,
            },
            _ => return None,
        })
    }

    /// What the first version wrote for a contact removed upstream: a removal that leaves its
    /// meta-contact (dissolving it when it was the last member).
    fn legacy_removal(&self, rng: &mut StdRng) -> Option<UserEvent> {
        let listed: Vec<(&ContactId, _)> = self
            .state
            .contacts()
            .iter()
            .filter(|(_, c)| c.is_listed())
            .collect();
        let (id, contact) = listed.choose(rng)?;
        Some(UserEvent::RosterContactRemoved {
            contact_id: **id,
            account_id: contact.account_id,
            left_meta_contact: contact.meta_contact,
        })
    }

    /// One step: the events a random command (or a legacy removal) wrote, applied.
    fn step(&mut self, rng: &mut StdRng) -> Vec<UserEvent> {
        let events = if self.state.registration().is_some() && rng.gen_bool(0.02) {
            self.legacy_removal(rng).into_iter().collect()
        } else {
            match self.command(rng) {
                Some(command) => self.state.decide(command).unwrap_or_default(),
                None => Vec::new(),
            }
        };
        for event in &events {
            self.state.apply(event.clone());
        }
        self.log.extend(events.iter().cloned());
        events
    }
}

/// Stores a random stream of at least `count` events, in transactions of random size that mix
/// the users' commits. Returns the number of events of each kind.
async fn store_random_stream(pool: &PgPool, seed: u64, count: usize) -> BTreeMap<String, usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut people: Vec<Person> = (0..USERS).map(Person::new).collect();
    let mut kinds = BTreeMap::new();
    let mut written = 0;
    while written < count {
        // (user, sequence, kind, payload) of one transaction.
        let mut rows: Vec<(String, i64, String, String)> = Vec::new();
        let commands = rng.gen_range(1..60);
        for _ in 0..commands {
            let person = people.choose_mut(&mut rng).unwrap();
            let first = person.log.len();
            for (i, event) in person.step(&mut rng).into_iter().enumerate() {
                *kinds.entry(event.kind().to_owned()).or_insert(0) += 1;
                rows.push((
                    person.id.to_string(),
                    (first + i + 1) as i64,
                    event.kind().to_owned(),
                    serde_json::to_string(&event).unwrap(),
                ));
            }
        }
        written += rows.len();
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
               payload, metadata) \
             SELECT 'User', a, s, t, '1.0', p::jsonb, \
                    jsonb_build_object('actor', 'user:' || a, 'request_id', gen_random_uuid()::text) \
               FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[]) AS r(a, s, t, p)",
        )
        .bind(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.1).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.2.clone()).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.3.clone()).collect::<Vec<_>>())
        .execute(pool)
        .await
        .unwrap();
    }
    kinds
}

/// Every row of the views, as text, in key order.
async fn views(pool: &PgPool, tables: &[(&str, &str)]) -> Vec<(String, Vec<String>)> {
    let mut all = Vec::new();
    for (table, order) in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM {table} t ORDER BY {order}"))
                .fetch_all(pool)
                .await
                .unwrap();
        all.push((table.to_string(), rows));
    }
    all
}

/// Fails with the first row that differs, not with two dumps of thousands of rows.
fn assert_same(reference: &[(String, Vec<String>)], got: &[(String, Vec<String>)], how: &str) {
    for ((table, want), (_, have)) in reference.iter().zip(got) {
        if let Some(i) = (0..want.len().max(have.len())).find(|i| want.get(*i) != have.get(*i)) {
            panic!(
                "{how}: {table} differs from the event-by-event views at row {i} of {}/{}:\n  \
                 event by event: {:?}\n  {how}: {:?}",
                want.len(),
                have.len(),
                want.get(i),
                have.get(i)
            );
        }
    }
}

/// Clears a projection's views and checkpoint, then applies every event in batches of at most
/// `limit` through the live runner's path.
async fn catch_up_from_zero(pool: &PgPool, projection: &dyn Projection, limit: i64) {
    let mut tx = pool.begin().await.unwrap();
    projection.reset(&mut tx).await.unwrap();
    sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1")
        .bind(projection.name())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let upcasters = upcasters();
    while catch_up_limited(pool, projection, &upcasters, limit)
        .await
        .unwrap()
        > 0
    {}
}

#[tokio::test]
async fn batch_folding_projections_equal_the_event_by_event_ones_on_a_random_stream() {
    let seed = std::env::var("SWITCHBOARD_FOLD_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let pool = migrated_database().await;
    let kinds = store_random_stream(&pool, seed, EVENTS).await;
    // The stream exercises what the folds must get right.
    for kind in [
        "UserRegistered",
        "AccountBound",
        "AccountUnbound",
        "RosterContactAdded",
        "RosterContactRemoved",
        "RosterContactDeparted",
        "RosterContactReturned",
        "RosterContactRenamed",
        "ContactsSeen",
        "ContactsMerged",
        "ContactAddedToMetaContact",
        "ContactRemovedFromMetaContact",
        "DormantContactForgotten",
        "MetaContactRenamed",
        "BindingUndone",
        "MatchSuggested",
    ] {
        assert!(
            kinds.get(kind).copied().unwrap_or(0) > 0,
            "seed {seed}: no {kind} in {kinds:?}"
        );
    }

    let contacts_tables = [
        ("user_view", "user_id"),
        ("account_view", "user_id, account_id"),
        ("meta_contact_view", "user_id, meta_contact_id"),
        ("contact_view", "user_id, contact_id"),
    ];
    let history_tables = [("history_view", "position")];
    for (projection, tables) in [
        (
            switchboard::projections::by_name("contacts").unwrap(),
            &contacts_tables[..],
        ),
        (
            switchboard::projections::by_name("history").unwrap(),
            &history_tables[..],
        ),
    ] {
        let name = projection.name();
        let reference = EventByEvent(projection.clone());
        rebuild(&pool, &reference, |_, _| {}).await.unwrap();
        let expected = views(&pool, tables).await;
        assert!(
            expected.iter().all(|(_, rows)| !rows.is_empty()),
            "{name}: an empty view proves nothing"
        );

        rebuild(&pool, projection.as_ref(), |_, _| {})
            .await
            .unwrap();
        assert_same(
            &expected,
            &views(&pool, tables).await,
            &format!("{name} rebuild"),
        );

        for limit in [BATCH, 7] {
            catch_up_from_zero(&pool, projection.as_ref(), limit).await;
            assert_same(
                &expected,
                &views(&pool, tables).await,
                &format!("{name} in batches of {limit}"),
            );
        }
    }
    pool.close().await;
}
