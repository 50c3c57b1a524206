//! Group commit at the nameserver (issue 14): concurrent changes share one commit and its
//! fsync, a refused (or panicking) change is taken back out without touching the others, and
//! a power cut at any write or sync of a group's commit loses no acknowledged change and
//! leaves no change in part.
//!
//! The store runs on a backend whose fsync takes a few milliseconds (over memory, or over the
//! power-loss simulator), so changes that start together really queue behind one commit and
//! form a group, as they do on a real disk.

use dfs_proto::names::CreateRequest;
use dfs_proto::{ApiError, DfsPath, ErrorCode, FileId};
use dfs_servers::common::crash_backend::CrashDisk;
use dfs_servers::nameserver::namespace;
use dfs_servers::nameserver::store::{Node, Read, Store, ROOT_ID};
use std::io;
use std::sync::Barrier;
use std::time::Duration;

fn p(s: &str) -> DfsPath {
    DfsPath::parse(s).unwrap()
}

/// A backend whose `sync_data` takes `delay`, like a disk's flush.
#[derive(Debug)]
struct SlowSync<B> {
    inner: B,
    delay: Duration,
}

impl<B: redb::StorageBackend> redb::StorageBackend for SlowSync<B> {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        std::thread::sleep(self.delay);
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write(offset, data)
    }
}

fn slow<B: redb::StorageBackend>(inner: B) -> SlowSync<B> {
    SlowSync {
        inner,
        delay: Duration::from_millis(20),
    }
}

fn create(store: &Store, path: &str) -> Result<FileId, ApiError> {
    let req = CreateRequest {
        path: p(path),
        mode: None,
        exclusive: true,
        owner: None,
    };
    store.write(|t| namespace::create(t, &req, 1)).map(|e| e.id)
}

/// Runs `jobs` on their own threads, all released at once; their results in order.
fn together<T: Send>(jobs: Vec<Box<dyn FnOnce() -> T + Send + '_>>) -> Vec<T> {
    let barrier = Barrier::new(jobs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    job()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The file `name` in the root: its id and node, when its entry exists.
fn lookup(store: &Store, name: &str) -> Option<(FileId, Node)> {
    store
        .read(|r| {
            Ok(match r.child(ROOT_ID, name)? {
                Some(id) => Some((id, r.node(id)?.expect("an entry's node exists"))),
                None => None,
            })
        })
        .unwrap()
}

#[test]
fn concurrent_changes_share_commits_and_a_refused_one_undoes_only_itself() {
    let store = Store::with_backend(slow(redb::backends::InMemoryBackend::new()), 0).unwrap();
    create(&store, "/taken").unwrap();
    let counter_before = store.read(|r| r.id_counter()).unwrap();
    let before = store.stats();
    let store = &store;
    let mut jobs: Vec<Box<dyn FnOnce() -> Result<(), ApiError> + Send>> = Vec::new();
    for i in 0..6 {
        jobs.push(Box::new(move || create(store, &format!("/f{i}")).map(drop)));
    }
    // Refused before it writes anything.
    jobs.push(Box::new(move || create(store, "/taken").map(drop)));
    // Refused after writing: a new id, a node, an entry and an attribute, all to be undone.
    jobs.push(Box::new(move || {
        store.write(|t| {
            let id = t.next_id()?;
            t.put_node(
                id,
                &Node::new(
                    ROOT_ID,
                    "ghost",
                    dfs_proto::names::EntryKind::File,
                    0o644,
                    1,
                ),
            )?;
            t.put_child(ROOT_ID, "ghost", id)?;
            t.put_xattr(id, "user.x", b"v")?;
            Err::<(), _>(ApiError::new(ErrorCode::Busy, "changed its mind"))
        })
    }));
    // Panics after writing: undone too, and answered with an error instead of a crash.
    jobs.push(Box::new(move || {
        store.write(|t| {
            let id = t.next_id()?;
            t.put_child(ROOT_ID, "panicked", id)?;
            panic!("a bug in a change");
        })
    }));
    let results = together(jobs);
    for (i, r) in results[..6].iter().enumerate() {
        assert!(r.is_ok(), "create /f{i}: {r:?}");
    }
    assert_eq!(
        results[6].as_ref().unwrap_err().code,
        ErrorCode::AlreadyExists
    );
    assert_eq!(results[7].as_ref().unwrap_err().code, ErrorCode::Busy);
    assert_eq!(results[8].as_ref().unwrap_err().code, ErrorCode::Internal);
    for i in 0..6 {
        let (_, node) =
            lookup(store, &format!("f{i}")).expect("every acknowledged create is there");
        assert_eq!(node.name, format!("f{i}"));
    }
    assert!(
        lookup(store, "ghost").is_none(),
        "a refused change left its entry"
    );
    assert!(
        lookup(store, "panicked").is_none(),
        "a panicked change left its entry"
    );
    // Only the six creates took ids; the refused changes' ids were taken back.
    assert_eq!(store.read(|r| r.id_counter()).unwrap(), counter_before + 6);
    let nodes = store.read(|r| r.all_nodes()).unwrap();
    assert_eq!(
        nodes.len(),
        1 + 1 + 6,
        "root, /taken and the six files, nothing else"
    );
    for (id, _) in &nodes {
        assert!(store.read(|r| r.xattr_sizes(*id)).unwrap().is_empty());
    }
    let after = store.stats();
    let (commits, changes) = (
        after.commits - before.commits,
        after.mutations - before.mutations,
    );
    assert_eq!(changes, 6, "six changes committed: {before:?} -> {after:?}");
    assert!(
        commits < changes,
        "changes arriving during a commit share the next one: {commits} commits for {changes}"
    );
    // The store goes on working alone, one change per commit.
    create(store, "/after").unwrap();
    assert!(lookup(store, "after").is_some());
}

/// Eight concurrent creates on a disk that loses power before its `k`-th write or sync from
/// the start of the group; the acknowledged ones must survive, the rest be whole or absent.
#[test]
fn a_power_cut_during_a_group_commit_loses_no_acknowledged_change() {
    let mut grouped = false;
    // Cuts after which some creates of the group were acknowledged and others not: the cut
    // fell between two commits of the group, the case group commit must get right.
    let mut split = 0;
    for k in 0.. {
        let disk = CrashDisk::new();
        let store = Store::with_backend(slow(disk.backend()), 0).unwrap();
        create(&store, "/before").unwrap();
        let floor = store.read(|r| r.id_counter()).unwrap();
        let stats = store.stats();
        disk.crash_after_ops(k);
        let jobs: Vec<Box<dyn FnOnce() -> Result<FileId, ApiError> + Send>> = (0..8)
            .map(|i| {
                let store = &store;
                Box::new(move || create(store, &format!("/g{i}")))
                    as Box<dyn FnOnce() -> Result<FileId, ApiError> + Send>
            })
            .collect();
        let results = together(jobs);
        let acked = results.iter().filter(|r| r.is_ok()).count();
        if acked > 0 && acked < results.len() {
            split += 1;
        }
        // The armed crash is cleared once it fires (and by the crash below).
        let fired = disk.crashed_or_unarmed();
        if !fired {
            let after = store.stats();
            grouped |= after.commits - stats.commits < after.mutations - stats.mutations;
        }
        drop(store);
        disk.crash();
        let store = Store::with_backend(disk.backend(), 0).unwrap();
        let what = format!("power cut before op {k} of the group");
        assert!(
            lookup(&store, "before").is_some(),
            "{what}: an earlier change was lost"
        );
        for (i, result) in results.iter().enumerate() {
            let name = format!("g{i}");
            match (result, lookup(&store, &name)) {
                (Ok(id), Some((found, node))) => {
                    assert_eq!(*id, found, "{what}: /{name} has another id");
                    assert_eq!(node.name, name);
                }
                (Ok(_), None) => panic!("{what}: acknowledged /{name} was lost"),
                (Err(_), Some((id, node))) => {
                    // Not acknowledged but durable: allowed, and it must be whole.
                    assert_eq!(node.name, name, "{what}");
                    assert!(id >= floor, "{what}: /{name} reused id {id}");
                }
                (Err(_), None) => {}
            }
        }
        // The id counter is above every id in the store, so no id is ever handed out twice.
        let counter = store.read(|r| r.id_counter()).unwrap();
        for (id, _) in store.read(|r| r.all_nodes()).unwrap() {
            assert!(
                id < counter,
                "{what}: id {id} not below the counter {counter}"
            );
        }
        // And the store takes new changes.
        create(&store, "/later").unwrap();
        if !fired {
            assert!(
                results.iter().all(|r| r.is_ok()),
                "no cut, every create succeeds"
            );
            assert!(
                split > 0,
                "no cut fell between two commits of the group ({k} cuts)"
            );
            break;
        }
        assert!(
            k < 1000,
            "a group of 8 creates takes more than 1000 disk operations"
        );
    }
    assert!(
        grouped,
        "the uncut run formed a group of more than one change"
    );
}

/// Every change of an acknowledged group survives a power cut right after it, on a disk that
/// may also have written any of the unsynced writes that followed.
#[test]
fn an_acknowledged_group_survives_a_power_cut_after_it() {
    let disk = CrashDisk::new();
    let store = Store::with_backend(slow(disk.backend()), 0).unwrap();
    let store_ref = &store;
    let jobs: Vec<Box<dyn FnOnce() -> Result<FileId, ApiError> + Send>> = (0..8)
        .map(|i| {
            Box::new(move || create(store_ref, &format!("/h{i}")))
                as Box<dyn FnOnce() -> Result<FileId, ApiError> + Send>
        })
        .collect();
    let results = together(jobs);
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    drop(store);
    disk.crash_keeping(|i| i % 2 == 0);
    let store = Store::with_backend(disk.backend(), 0).unwrap();
    for (i, id) in results.iter().enumerate() {
        let (found, _) = lookup(&store, &format!("h{i}")).expect("acknowledged create lost");
        assert_eq!(found, *id.as_ref().unwrap());
    }
}
