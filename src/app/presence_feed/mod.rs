//! `presenceChanged` fan-out: one shared feed per user on this node, whatever the number of
//! its subscribers here.
//!
//! A presence write names the handles it changed (`switchboard_presence`, from any node); the
//! node's router hands them to the user's feed, which reads just those rows, updates its state
//! ([`state::FeedState`]) and broadcasts the items that changed to every subscriber. So one
//! change costs one small read per node and work in the size of the change, not of the list.
//! What cannot be told by handle — an account's status, the contact list itself, a missed or
//! lagging notification — makes the feed read everything again, once for all its subscribers;
//! a subscriber that falls behind the broadcast catches up from the shared state.

mod state;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{watch, Notify};

use super::{AppError, Switchboard};
use crate::domain::ids::{AccountId, Handle, UserId};
use crate::projections::contacts::{self, ContactList};
use crate::projections::live::{self, LiveViews, PresenceChanged};

use state::FeedState;
pub use state::{ContactPresence, ContactRef, MemberPresence};

/// Batches kept for subscribers that are slow to take them; one further behind catches up
/// from the shared state.
const BATCHES_KEPT: usize = 256;
/// Wait before reading again after a failed read.
const RETRY: Duration = Duration::from_millis(500);

/// The items of one change, numbered in the order they happened.
#[derive(Debug, Clone)]
struct Batch {
    version: u64,
    items: Arc<[ContactPresence]>,
}

/// What a feed must read again.
#[derive(Debug, Default)]
struct Pending {
    everything: bool,
    handles: HashMap<AccountId, HashSet<Handle>>,
}

impl Pending {
    fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    fn is_empty(&self) -> bool {
        !self.everything && self.handles.is_empty()
    }

    fn merge(&mut self, other: Pending) {
        self.everything |= other.everything;
        for (account, handles) in other.handles {
            self.handles.entry(account).or_default().extend(handles);
        }
    }
}

/// What a feed reads from.
#[derive(Debug, Clone)]
struct Reader {
    pool: PgPool,
    live: LiveViews,
}

impl Reader {
    async fn everything(
        &self,
        user: UserId,
    ) -> Result<(ContactList, super::PresenceMap), AppError> {
        let (list, presence) = tokio::try_join!(
            async { Ok::<_, AppError>(ContactList::load(&self.pool, user).await?) },
            async { Ok::<_, AppError>(self.live.presence(user).await?) },
        )?;
        Ok((list, presence))
    }
}

/// One user's feed, shared by its subscribers on this node.
struct Feed {
    user: UserId,
    reader: Reader,
    /// `None` until the first subscriber's read succeeds.
    state: tokio::sync::Mutex<Option<FeedState>>,
    pending: Mutex<Pending>,
    wake: Notify,
    batches: broadcast::Sender<Batch>,
}

impl Feed {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tell(&self, work: Pending) {
        self.pending().merge(work);
        self.wake.notify_one();
    }

    /// Applies what is pending, one read at a time, until the feed has no subscriber left.
    async fn run(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            let work = std::mem::take(&mut *self.pending());
            if work.is_empty() {
                continue;
            }
            let failed = {
                let mut state = self.state.lock().await;
                // Not read yet: the first subscriber's read will see all of it.
                let Some(state) = state.as_mut() else {
                    continue;
                };
                match self.apply(state, &work).await {
                    Ok(items) => {
                        if !items.is_empty() {
                            // Sent under the state's lock: a subscriber joining sees either
                            // the state before this batch and then the batch, or the state
                            // after it.
                            let _ = self.batches.send(Batch {
                                version: state.version(),
                                items: items.into(),
                            });
                        }
                        None
                    }
                    Err(e) => Some(e),
                }
            };
            if let Some(e) = failed {
                tracing::warn!(user = %self.user, error = %e, "presence unavailable for subscriptions; reading again");
                self.tell(work);
                tokio::time::sleep(RETRY).await;
            }
        }
    }

    async fn apply(
        &self,
        state: &mut FeedState,
        work: &Pending,
    ) -> Result<Vec<ContactPresence>, AppError> {
        if work.everything {
            let (list, presence) = self.reader.everything(self.user).await?;
            return Ok(state.replace(list, presence));
        }
        let mut changed = Vec::new();
        for (account, handles) in &work.handles {
            let handles: Vec<Handle> = handles.iter().cloned().collect();
            let mut known = self.reader.live.presence_of(*account, &handles).await?;
            changed.extend(state.observe(
                *account,
                handles.into_iter().map(|h| {
                    let p = known.remove(&h);
                    (h, p)
                }),
            ));
        }
        Ok(changed)
    }
}

/// A feed in use: the last one dropped stops its task.
struct FeedHandle {
    feed: Arc<Feed>,
    task: tokio::task::AbortHandle,
}

impl Drop for FeedHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The feeds of this node's users with `presenceChanged` subscribers.
#[derive(Default)]
pub(super) struct PresenceFeeds {
    feeds: Mutex<HashMap<UserId, Weak<FeedHandle>>>,
}

impl PresenceFeeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, Weak<FeedHandle>>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user's feed, started if it is not running.
    fn feed(&self, user: UserId, reader: &Reader) -> Arc<FeedHandle> {
        let mut feeds = self.lock();
        if let Some(handle) = feeds.get(&user).and_then(Weak::upgrade) {
            return handle;
        }
        feeds.retain(|_, f| f.strong_count() > 0);
        let feed = Arc::new(Feed {
            user,
            reader: reader.clone(),
            state: tokio::sync::Mutex::new(None),
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            batches: broadcast::channel(BATCHES_KEPT).0,
        });
        let task = tokio::spawn(feed.clone().run()).abort_handle();
        let handle = Arc::new(FeedHandle { feed, task });
        feeds.insert(user, Arc::downgrade(&handle));
        handle
    }

    /// Hands `work` to the user's feed, if it has one here.
    fn tell(&self, user: UserId, work: Pending) {
        let feed = self.lock().get(&user).and_then(Weak::upgrade);
        if let Some(handle) = feed {
            handle.feed.tell(work);
        }
    }

    /// Every feed reads everything again (notifications may have been missed).
    fn tell_all(&self) {
        let feeds: Vec<Arc<FeedHandle>> = self.lock().values().filter_map(Weak::upgrade).collect();
        for handle in feeds {
            handle.feed.tell(Pending::everything());
        }
    }
}

/// One subscriber's view of its user's feed.
pub struct PresenceChanges {
    handle: Arc<FeedHandle>,
    batches: broadcast::Receiver<Batch>,
    /// The version of the last change this subscriber has got.
    seen: u64,
}

impl PresenceChanges {
    /// The next change's items; `None` never comes while the server runs.
    pub async fn next(&mut self) -> Option<Arc<[ContactPresence]>> {
        loop {
            match self.batches.recv().await {
                Ok(batch) if batch.version <= self.seen => {}
                Ok(batch) => {
                    self.seen = batch.version;
                    return Some(batch.items);
                }
                // Batches were dropped for this subscriber: what changed since its last one,
                // from the shared state.
                Err(RecvError::Lagged(_)) => {
                    let state = self.handle.feed.state.lock().await;
                    let state = state.as_ref()?;
                    let missed = state.changed_since(self.seen);
                    self.seen = state.version();
                    if !missed.is_empty() {
                        return Some(missed.into());
                    }
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

impl Switchboard {
    /// The presence changes of the user's contacts from now on (`presenceChanged`). The
    /// first subscriber of a user on this node reads the list and presence; others share it.
    pub async fn presence_changes(&self, user: UserId) -> Result<PresenceChanges, AppError> {
        let reader = Reader {
            pool: self.pool.clone(),
            live: self.live_views.clone(),
        };
        let handle = self.presence_feeds.feed(user, &reader);
        let mut state = handle.feed.state.lock().await;
        if state.is_none() {
            let (list, presence) = reader.everything(user).await?;
            *state = Some(FeedState::new(list, presence));
        }
        let seen = state.as_ref().map_or(0, FeedState::version);
        let batches = handle.feed.batches.subscribe();
        drop(state);
        Ok(PresenceChanges {
            handle,
            batches,
            seen,
        })
    }

    /// Routes presence notifications (from every node) and changes of the views presence
    /// depends on to this node's feeds, until `stop`.
    pub async fn run_presence_feeds(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut views = self.views.subscribe();
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = super::listen(&self.pool, live::PRESENCE_CHANNEL).await;
                // Whatever was said while nobody listened is read again.
                self.presence_feeds.tell_all();
            }
            let told = {
                let note = async {
                    match listener.as_mut() {
                        Some(l) => l.try_recv().await,
                        None => {
                            tokio::time::sleep(RETRY).await;
                            Ok(None)
                        }
                    }
                };
                tokio::select! {
                    _ = stop.changed() => return,
                    note = note => Told::Note(note),
                    change = views.recv() => Told::View(change),
                }
            };
            match told {
                Told::Note(Ok(Some(note))) => match PresenceChanged::parse(note.payload()) {
                    Ok(change) => self.presence_feeds.tell(change.user_id, work_of(change)),
                    Err(e) => tracing::warn!(error = %e, "malformed presence notification"),
                },
                // The connection was lost: what was said meanwhile is lost too.
                Told::Note(Ok(None) | Err(_)) => {
                    if listener.is_some() {
                        tracing::warn!("presence notifications interrupted; reading again");
                    }
                    listener = None;
                }
                Told::View(Ok(change)) => {
                    if change.view == live::STATUS || change.view == contacts::NAME {
                        self.presence_feeds
                            .tell(change.user_id, Pending::everything());
                    }
                }
                Told::View(Err(RecvError::Lagged(_))) => self.presence_feeds.tell_all(),
                Told::View(Err(RecvError::Closed)) => return,
            }
        }
    }
}

/// What woke the router.
enum Told {
    Note(Result<Option<sqlx::postgres::PgNotification>, sqlx::Error>),
    View(Result<crate::projections::notify::ViewChanged, RecvError>),
}

fn work_of(change: PresenceChanged) -> Pending {
    match change.handles {
        Some(handles) => Pending {
            everything: false,
            handles: HashMap::from([(change.account_id, handles.into_iter().collect())]),
        },
        None => Pending::everything(),
    }
}
