//! Blob capabilities the nameserver hands out: a reader gets one for the version it is told
//! about, a writer one for the versions its lease may publish. The fileservers check them
//! (see `fileserver::access`), so knowing a file's id and version is not enough to read it.

use super::namespace;
use super::store::Node;
use super::State;
use dfs_proto::auth::{now_unix_ms, BlobOp, CAPABILITY_TTL_MS};
use dfs_proto::names::Entry;
use dfs_proto::{version_block, version_for, DfsPath, FileId};

impl State {
    /// The entry of `node` as a reader gets it: live locations and, in a cluster with a key,
    /// a read capability for exactly its current version.
    pub fn reader_entry(&self, path: &DfsPath, id: FileId, node: &Node) -> Entry {
        let mut entry = namespace::entry(path, id, node, self.locations(&node.servers));
        self.add_read_capability(&mut entry);
        entry
    }

    /// Adds a read capability to an entry that names a blob (none for version 0 or an
    /// insecure cluster).
    pub fn add_read_capability(&self, entry: &mut Entry) {
        let Some(key) = self.verifier.cluster_key() else {
            return;
        };
        if entry.version == 0 {
            return;
        }
        let expires = now_unix_ms() + CAPABILITY_TTL_MS;
        entry.capability = Some(key.capability(entry.id, entry.version, BlobOp::Read, expires));
    }

    /// A write capability for every version a writer holding `token` may upload of file `id`
    /// (all `version_for(token, _)`: the capability names the first, and the fileserver
    /// checks the block a version belongs to).
    pub fn write_capability(&self, id: FileId, token: u64) -> Option<String> {
        let key = self.verifier.cluster_key()?;
        let expires = now_unix_ms() + CAPABILITY_TTL_MS;
        let block = version_block(version_for(token, 0));
        Some(key.capability(id, block, BlobOp::Write, expires))
    }
}
