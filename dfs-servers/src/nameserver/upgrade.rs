//! Upgrades a store written by older code to the current schema, inside the opening
//! transaction, so a crash mid-upgrade leaves the old store untouched.

use super::store::{internal, Node, WriteTables};
use dfs_proto::names::EntryKind;
use dfs_proto::{ApiError, FileId};
use std::collections::HashMap;

/// Brings every node from schema `from` to [`super::store::SCHEMA_VERSION`].
///
/// 1 -> 2: nodes gain owners, atime/ctime and the subdirectory count. Schema 1 stored no
/// owners, so every file becomes root's (uid/gid 0) with its mode unchanged; atime and ctime
/// start equal to mtime (the only time it knew); each directory's subdirectories are counted.
pub fn upgrade(t: &mut WriteTables<'_>, from: u64) -> Result<(), ApiError> {
    if from >= 2 {
        return Ok(());
    }
    let raw = t.raw_nodes()?;
    let mut nodes: Vec<(FileId, Node)> = Vec::with_capacity(raw.len());
    let mut subdirs: HashMap<FileId, u64> = HashMap::new();
    for (id, value) in raw {
        let mut node: Node = serde_json::from_value(value).map_err(internal)?;
        node.uid = 0;
        node.gid = 0;
        node.atime_ns = node.mtime_ns;
        node.ctime_ns = node.mtime_ns;
        if node.kind == EntryKind::Dir && node.parent != 0 {
            *subdirs.entry(node.parent).or_default() += 1;
        }
        nodes.push((id, node));
    }
    let count = nodes.len();
    for (id, mut node) in nodes {
        node.subdirs = subdirs.get(&id).copied().unwrap_or(0);
        t.put_node(id, &node)?;
    }
    tracing::info!(nodes = count, from, "upgraded the store's schema");
    Ok(())
}
