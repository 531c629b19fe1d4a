//! A read cache for the SQLite backend (SQLite is single-process by design, so every write to
//! items goes through this process; PostgreSQL deployments are multi-process and get none).
//!
//! Items: one global *generation*, bumped after every committed write that touches items
//! (creation incl. group commits, update, delete, import chunks, user deletion by cascade).
//! A reader takes the generation *before* its query and tags the result with it; a cached
//! value is served only while the generation is still that tag. A write acknowledged to its
//! client has already bumped the generation, so no read that starts after it can see a
//! value read before it: reads are never stale in-process.
//!
//! Users (the `AuthUser` lookup on every authenticated request): cached by id, and by session
//! for the token check, dropped synchronously on every user or session write in this
//! process, and kept at most [`USER_TTL`] because `larder admin` commands may change a user
//! (or end their sessions) from another process.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::items::{Item, ItemSummary, PageKey, RenderedPage};
use super::users::User;

/// The most entries one map holds; past that it is cleared (cheap, and rare).
const MAX_ENTRIES: usize = 16_384;
/// The most rendered page answers (each up to about 25 KiB).
const MAX_PAGE_BODIES: usize = 64;
/// How long a cached user is trusted without being read again.
pub const USER_TTL: Duration = Duration::from_secs(2);

/// A map of values tagged with the generation they were read at.
#[derive(Debug)]
struct Tagged<K, V> {
    entries: Mutex<HashMap<K, (u64, V)>>,
    max: usize,
}

impl<K: Eq + Hash, V: Clone> Tagged<K, V> {
    fn new(max: usize) -> Self {
        Tagged {
            entries: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn get(&self, key: &K, generation: u64) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(key) {
            Some((tag, value)) if *tag == generation => Some(value.clone()),
            _ => None,
        }
    }

    fn put(&self, key: K, tag: u64, value: V, current: u64) {
        // Read before a write that has already landed: never worth keeping.
        if tag != current {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.max {
            // Old generations first; if that is not enough, everything.
            entries.retain(|_, (t, _)| *t == current);
            if entries.len() >= self.max {
                entries.clear();
            }
        }
        entries.insert(key, (tag, value));
    }
}

#[derive(Debug)]
pub struct ReadCache {
    generation: AtomicU64,
    items: Tagged<i64, Option<Item>>,
    /// A page's answer as the HTTP layer rendered it: a repeated read of an unchanged page
    /// is then a lookup and a reference count, not 20 items serialised again.
    page_bodies: Tagged<PageKey, RenderedPage>,
    newest: Tagged<i64, Vec<ItemSummary>>,
    /// Bumped on every user write, so a lookup that raced a deletion is not kept.
    user_generation: AtomicU64,
    users: Mutex<HashMap<i64, (u64, Instant, User)>>,
    /// The user a live session belongs to, by session id.
    sessions: Mutex<HashMap<String, (u64, Instant, User)>>,
}

impl Default for ReadCache {
    fn default() -> Self {
        ReadCache {
            generation: AtomicU64::new(0),
            items: Tagged::new(MAX_ENTRIES),
            page_bodies: Tagged::new(MAX_PAGE_BODIES),
            newest: Tagged::new(64),
            user_generation: AtomicU64::new(0),
            users: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

impl ReadCache {
    /// The item generation, to take before a query whose result may be cached.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Call after every committed write that touches items (before answering its client).
    pub fn items_changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn item(&self, id: i64, generation: u64) -> Option<Option<Item>> {
        self.items.get(&id, generation)
    }

    pub fn put_item(&self, id: i64, tag: u64, item: Option<Item>) {
        self.items.put(id, tag, item, self.generation());
    }

    pub fn page_body(&self, key: &PageKey, generation: u64) -> Option<RenderedPage> {
        self.page_bodies.get(key, generation)
    }

    pub fn put_page_body(&self, key: PageKey, tag: u64, page: RenderedPage) {
        self.page_bodies.put(key, tag, page, self.generation());
    }

    pub fn newest(&self, limit: i64, generation: u64) -> Option<Vec<ItemSummary>> {
        self.newest.get(&limit, generation)
    }

    pub fn put_newest(&self, limit: i64, tag: u64, items: Vec<ItemSummary>) {
        self.newest.put(limit, tag, items, self.generation());
    }

    /// The user generation, to take before a user query whose result may be cached.
    pub fn user_generation(&self) -> u64 {
        self.user_generation.load(Ordering::Acquire)
    }

    pub fn user(&self, id: i64) -> Option<User> {
        let users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let (tag, at, user) = users.get(&id)?;
        (*tag == self.user_generation() && at.elapsed() < USER_TTL).then(|| user.clone())
    }

    /// Keeps a user that exists (a missing one is not cached: it may be created any time).
    pub fn put_user(&self, tag: u64, user: User) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        // Checked under the lock, which `users_changed` also takes: a write that lands
        // after this check removes the entry again.
        if tag != self.user_generation() {
            return;
        }
        if users.len() >= MAX_ENTRIES {
            users.clear();
        }
        users.insert(user.id, (tag, Instant::now(), user));
    }

    /// The active user whose live session this is.
    pub fn session_user(&self, session_id: &str) -> Option<User> {
        let sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        let (tag, at, user) = sessions.get(session_id)?;
        (*tag == self.user_generation() && at.elapsed() < USER_TTL).then(|| user.clone())
    }

    /// Keeps the user of a live session (read at generation `tag`).
    pub fn put_session_user(&self, tag: u64, session_id: &str, user: User) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if tag != self.user_generation() {
            return;
        }
        if sessions.len() >= MAX_ENTRIES {
            sessions.clear();
        }
        sessions.insert(session_id.to_string(), (tag, Instant::now(), user));
    }

    /// Call after every committed write to users or sessions (before answering its client).
    pub fn users_changed(&self) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        self.user_generation.fetch_add(1, Ordering::AcqRel);
        users.clear();
        sessions.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chrono::Utc;

    fn item(id: i64, version: i64) -> Item {
        Item {
            id,
            name: "jam".into(),
            description: None,
            price: 1.0,
            quantity: 1,
            owner_id: 1,
            version,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    fn user(id: i64) -> User {
        User {
            id,
            email: "ann@example.com".into(),
            full_name: None,
            role: "user".into(),
            created_at: Utc::now(),
            tokens_valid_after: 0,
            is_active: true,
        }
    }

    #[test]
    fn a_write_invalidates_every_item_read_before_it() {
        let cache = ReadCache::default();
        let tag = cache.generation();
        cache.put_item(1, tag, Some(item(1, 1)));
        let page = RenderedPage {
            body: Bytes::from_static(b"{}"),
            etag: Bytes::from_static(b"W/\"0\""),
        };
        cache.put_page_body((0, 21, "".into()), tag, page);
        cache.put_newest(20, tag, vec![]);
        assert_eq!(
            cache.item(1, cache.generation()).unwrap().unwrap().version,
            1
        );
        cache.items_changed();
        let now = cache.generation();
        assert!(cache.item(1, now).is_none());
        assert!(cache.page_body(&(0, 21, "".into()), now).is_none());
        assert!(cache.newest(20, now).is_none());
    }

    #[test]
    fn a_value_read_before_a_concurrent_write_is_not_kept() {
        let cache = ReadCache::default();
        let tag = cache.generation();
        // The query ran, then a write committed, then the reader tries to keep its result.
        cache.items_changed();
        cache.put_item(1, tag, Some(item(1, 1)));
        assert!(cache.item(1, cache.generation()).is_none());
        assert!(cache.item(1, tag).is_none());
    }

    #[test]
    fn users_are_dropped_on_change_and_a_racing_lookup_is_not_kept() {
        let cache = ReadCache::default();
        cache.put_user(cache.user_generation(), user(7));
        assert!(cache.user(7).is_some());
        cache.users_changed();
        assert!(cache.user(7).is_none());
        let tag = cache.user_generation();
        cache.users_changed();
        cache.put_user(tag, user(7));
        assert!(cache.user(7).is_none());
        cache.put_session_user(cache.user_generation(), "s", user(7));
        assert_eq!(cache.session_user("s").map(|u| u.id), Some(7));
        cache.users_changed();
        assert!(cache.session_user("s").is_none());
    }

    #[test]
    fn the_size_is_bounded() {
        let cache = ReadCache::default();
        let tag = cache.generation();
        for id in 0..(MAX_ENTRIES as i64 * 2) {
            cache.put_item(id, tag, None);
        }
        assert!(cache.items.entries.lock().unwrap().len() <= MAX_ENTRIES);
    }
}
