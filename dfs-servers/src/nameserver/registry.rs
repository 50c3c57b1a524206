//! Fileserver liveness, kept in memory: a fileserver is alive while it heartbeats.
//!
//! The durable part (id, URL, capacity, dirs) lives in the store; this only remembers when each
//! server was last heard from, so a nameserver restart does not need to persist clock readings.

use dfs_proto::ServerId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the nameserver knows about a fileserver right now.
#[derive(Clone, Debug)]
pub struct Live {
    /// Its stable name.
    pub id: ServerId,
    /// Its base URL.
    pub url: String,
    /// Free bytes at the last heartbeat (placement prefers the emptiest servers).
    pub free_bytes: u64,
    /// When it was last heard from.
    pub last_seen: Instant,
}

/// The liveness table.
pub struct Registry {
    servers: Mutex<HashMap<ServerId, Live>>,
    timeout: Duration,
}

impl Registry {
    /// An empty registry; a server is dead `timeout` after its last heartbeat.
    pub fn new(timeout: Duration) -> Registry {
        Registry {
            servers: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServerId, Live>> {
        self.servers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `id` (at `url`) was just heard from.
    pub fn seen(&self, id: &str, url: &str, free_bytes: u64) {
        let mut servers = self.lock();
        servers.insert(
            id.to_owned(),
            Live {
                id: id.to_owned(),
                url: url.to_owned(),
                free_bytes,
                last_seen: Instant::now(),
            },
        );
    }

    /// Marks `id` dead now (a writer could not upload to it and it does not answer either);
    /// its next heartbeat or registration makes it alive again.
    pub fn mark_dead(&self, id: &str) {
        let mut servers = self.lock();
        if let Some(live) = servers.get_mut(id) {
            if let Some(past) = Instant::now().checked_sub(self.timeout) {
                live.last_seen = past;
            }
        }
    }

    /// Whether `id` heartbeated within the timeout.
    pub fn is_alive(&self, id: &str) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|l| l.last_seen.elapsed() < self.timeout)
    }

    /// The entry of `id`, alive or not.
    pub fn get(&self, id: &str) -> Option<Live> {
        self.lock().get(id).cloned()
    }

    /// Every live server, emptiest first (ties broken by id, so placement is deterministic).
    pub fn live(&self) -> Vec<Live> {
        let mut live: Vec<Live> = self
            .lock()
            .values()
            .filter(|l| l.last_seen.elapsed() < self.timeout)
            .cloned()
            .collect();
        live.sort_by(|a, b| b.free_bytes.cmp(&a.free_bytes).then(a.id.cmp(&b.id)));
        live
    }

    /// URL of `id` when it is alive.
    pub fn live_url(&self, id: &str) -> Option<String> {
        self.lock()
            .get(id)
            .filter(|l| l.last_seen.elapsed() < self.timeout)
            .map(|l| l.url.clone())
    }
}
