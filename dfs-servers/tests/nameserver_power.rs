//! Power loss for the nameserver (issue 4, item 7): the namespace logic runs a script of
//! operations on a simulated disk that loses everything not yet synced, and the power is cut
//! at every write and sync of every commit, and after every acknowledged operation.
//!
//! After each cut the store is reopened on what survived and must hold exactly the state after
//! the acknowledged operations, plus the operation in flight either wholly or not at all; the
//! id counter and the per-file fencing tokens never go back.

use dfs_proto::names::{
    CreateRequest, OpenWriteRequest, PublishRequest, RegisterRequest, RenameRequest, SetAttrRequest,
};
use dfs_proto::names::{RemoveXattrRequest, SetXattrRequest};
use dfs_proto::xattr::{SetMode, XattrValue};
use dfs_proto::{version_for, ApiError, Checksum, DfsPath, ErrorCode, FileId};
use dfs_servers::common::crash_backend::{CrashBackend, CrashDisk};
use dfs_servers::nameserver::namespace;
use dfs_servers::nameserver::placement;
use dfs_servers::nameserver::registry::Live;
use dfs_servers::nameserver::store::{
    DirRecord, FileserverRecord, Node, Read, Store, WriteTables, ROOT_ID,
};
use dfs_servers::nameserver::xattr;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn p(s: &str) -> DfsPath {
    DfsPath::parse(s).unwrap()
}

/// One acknowledged-or-not operation of the script, as a handler would run it.
#[derive(Clone, Debug)]
enum Step {
    Register(&'static str, &'static [&'static str]),
    Mkdir(&'static str),
    Create(&'static str),
    /// path, fencing token, create.
    OpenWrite(&'static str, u64, bool),
    /// path, token, sequence, content, servers that acknowledged the upload.
    Publish(
        &'static str,
        u64,
        u64,
        &'static [u8],
        &'static [&'static str],
    ),
    Chmod(&'static str, u32),
    Touch(&'static str, i64),
    Rename(&'static str, &'static str),
    Unlink(&'static str),
    Rmdir(&'static str),
    Replication(&'static str, Option<u32>),
    /// path, attribute name, value.
    SetXattr(&'static str, &'static str, &'static [u8]),
    RemoveXattr(&'static str, &'static str),
    /// RENAME_EXCHANGE of two paths.
    Exchange(&'static str, &'static str),
}

const SCRIPT: &[Step] = &[
    Step::Register("fs1", &[]),
    Step::Register("fs2", &["/data"]),
    Step::Mkdir("/a"),
    Step::Mkdir("/a/b"),
    Step::Create("/a/f"),
    // The first open-write also maps `/` to the live fileservers.
    Step::OpenWrite("/a/f", 5, false),
    Step::Publish("/a/f", 5, 1, b"hello", &["fs1"]),
    Step::Chmod("/a/f", 0o600),
    Step::SetXattr("/a/f", "user.kept", b"follows the file"),
    Step::SetXattr("/a/f", "user.gone", b"removed below"),
    Step::RemoveXattr("/a/f", "user.gone"),
    Step::OpenWrite("/a/new", 6, true),
    Step::Publish("/a/new", 6, 1, b"x", &["fs1", "fs2"]),
    Step::Rename("/a/f", "/a/b/g"),
    Step::Mkdir("/a/b/c"),
    Step::Create("/a/b/c/h"),
    // A directory tree moves in one change.
    Step::Rename("/a/b", "/t"),
    Step::OpenWrite("/t/g", 9, false),
    Step::Publish("/t/g", 9, 1, b"world", &["fs2"]),
    Step::Publish("/t/g", 9, 2, b"world, again", &["fs1", "fs2"]),
    Step::Replication("/t", Some(3)),
    Step::SetXattr("/a/new", "trusted.swap", b"new"),
    Step::Exchange("/a/new", "/t/g"),
    Step::Exchange("/t/g", "/a/new"),
    // Replacing a file target (its attributes go with it).
    Step::SetXattr("/t/g", "user.replaced", b"dropped with its file"),
    Step::Rename("/a/new", "/t/g"),
    Step::Unlink("/t/c/h"),
    Step::Rmdir("/t/c"),
    Step::Touch("/t", 42),
    Step::Register("fs1", &["/t"]),
    Step::Replication("/t", None),
    Step::Rmdir("/a"),
    Step::OpenWrite("/t/g", 12, false),
    Step::Create("/z"),
];

fn live() -> Vec<Live> {
    ["fs1", "fs2"]
        .iter()
        .map(|id| Live {
            id: id.to_string(),
            url: format!("http://{id}.invalid"),
            free_bytes: 1 << 30,
            last_seen: Instant::now(),
        })
        .collect()
}

/// Runs `step` the way the HTTP handler does: one write transaction, committed before "the
/// reply". `now` is fixed per step so two runs produce identical states.
fn run_step(store: &Store, step: &Step, now: i64) -> Result<(), ApiError> {
    let live = live();
    store.write(|t: &mut WriteTables<'_>| {
        match step {
            Step::Register(id, dirs) => placement::register(
                t,
                &RegisterRequest {
                    id: id.to_string(),
                    url: format!("http://{id}.invalid/"),
                    capacity_bytes: 1 << 40,
                    free_bytes: 1 << 30,
                    dirs: dirs.iter().map(|d| p(d)).collect(),
                    secret: None,
                },
            )?,
            Step::Mkdir(path) => {
                namespace::mkdir(
                    t,
                    &dfs_proto::names::MkdirRequest {
                        path: p(path),
                        mode: None,
                        owner: None,
                    },
                    now,
                )?;
            }
            Step::Create(path) => {
                namespace::create(
                    t,
                    &CreateRequest {
                        path: p(path),
                        mode: None,
                        exclusive: true,
                        owner: None,
                    },
                    now,
                )?;
            }
            Step::OpenWrite(path, token, create) => {
                let req = OpenWriteRequest {
                    path: p(path),
                    token: *token,
                    create: create.then_some(0o644),
                    exclusive: false,
                    exclude: Vec::new(),
                    owner: None,
                    lease: None,
                };
                namespace::open_write(t, &req, now)?;
                placement::targets(t, &live, &req.path, 2)?;
            }
            Step::Publish(path, token, seq, content, servers) => {
                let (id, node) = namespace::resolve(t, &p(path))?;
                let known: Vec<String> = t.fileservers()?.into_iter().map(|(id, _)| id).collect();
                let req = PublishRequest {
                    path: p(path),
                    file_id: id,
                    base_version: node.version,
                    version: version_for(*token, *seq),
                    token: *token,
                    size: content.len() as u64,
                    checksum: Checksum::of(content),
                    servers: servers.iter().map(|s| s.to_string()).collect(),
                    mtime_ns: None,
                    lease: None,
                };
                namespace::publish(t, &req, 1, |s| known.iter().any(|k| k == s), now)?;
            }
            Step::Chmod(path, mode) => {
                namespace::setattr(
                    t,
                    &SetAttrRequest {
                        path: p(path),
                        mode: Some(*mode),
                        mtime_ns: None,
                        atime_ns: None,
                        uid: None,
                        gid: None,
                        kill_suid: false,
                        access: false,
                    },
                    now,
                )?;
            }
            Step::Touch(path, mtime) => {
                namespace::setattr(
                    t,
                    &SetAttrRequest {
                        path: p(path),
                        mode: None,
                        mtime_ns: Some(*mtime),
                        atime_ns: None,
                        uid: None,
                        gid: None,
                        kill_suid: false,
                        access: false,
                    },
                    now,
                )?;
            }
            Step::Rename(from, to) => {
                namespace::rename(
                    t,
                    &RenameRequest {
                        from: p(from),
                        to: p(to),
                        no_replace: false,
                        exchange: false,
                    },
                    now,
                )?;
            }
            Step::Unlink(path) => {
                namespace::unlink(t, &p(path), now)?;
            }
            Step::Rmdir(path) => namespace::rmdir(t, &p(path), now)?,
            Step::Replication(dir, r) => {
                placement::set_replication(t, &p(dir), *r)?;
            }
            Step::SetXattr(path, name, value) => xattr::set(
                t,
                &SetXattrRequest {
                    path: p(path),
                    name: name.to_string(),
                    value: XattrValue(value.to_vec()),
                    mode: SetMode::Any,
                },
            )?,
            Step::RemoveXattr(path, name) => xattr::remove(
                t,
                &RemoveXattrRequest {
                    path: p(path),
                    name: name.to_string(),
                },
            )?,
            Step::Exchange(a, b) => {
                namespace::rename(
                    t,
                    &RenameRequest {
                        from: p(a),
                        to: p(b),
                        no_replace: false,
                        exchange: true,
                    },
                    now,
                )?;
            }
        }
        Ok(())
    })
}

fn now_of(step: usize) -> i64 {
    1_000_000 + step as i64 * 1000
}

/// Everything the store holds, in a comparable form.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    /// Every node reachable from the root, by path.
    tree: BTreeMap<String, (FileId, Node)>,
    /// Nodes no directory entry leads to (a half-applied change would leave some).
    unreachable: Vec<FileId>,
    fileservers: Vec<(String, FileserverRecord)>,
    dirmap: Vec<(DfsPath, DirRecord)>,
    next_id: FileId,
    /// Extended attributes of every node reachable from the root, by path.
    xattrs: BTreeMap<String, Vec<(String, Vec<u8>)>>,
    /// Ids no directory entry leads to that still hold attributes (a removal half-applied).
    orphan_xattrs: Vec<FileId>,
}

fn snapshot(store: &Store) -> Snapshot {
    store
        .read(|r| {
            let mut tree = BTreeMap::new();
            let root = r.node(ROOT_ID)?.expect("the root survives everything");
            tree.insert("/".to_owned(), (ROOT_ID, root));
            let mut todo = vec![(ROOT_ID, String::new())];
            while let Some((dir, prefix)) = todo.pop() {
                for (name, id) in r.children(dir, None, usize::MAX)? {
                    let path = format!("{prefix}/{name}");
                    let node = r
                        .node(id)?
                        .unwrap_or_else(|| panic!("{path} points at missing node {id}"));
                    assert_eq!(
                        (node.parent, node.name.as_str()),
                        (dir, name.as_str()),
                        "{path}: node disagrees with its directory entry"
                    );
                    if node.kind == dfs_proto::names::EntryKind::Dir {
                        todo.push((id, path.clone()));
                    }
                    tree.insert(path, (id, node));
                }
            }
            let reachable: Vec<FileId> = tree.values().map(|(id, _)| *id).collect();
            let unreachable = r
                .all_nodes()?
                .into_iter()
                .map(|(id, _)| id)
                .filter(|id| !reachable.contains(id))
                .collect();
            let mut xattrs = BTreeMap::new();
            for (path, (id, _)) in &tree {
                let mut attrs = Vec::new();
                for (name, _) in r.xattr_sizes(*id)? {
                    let value = r
                        .xattr(*id, &name)?
                        .expect("a listed attribute has a value");
                    attrs.push((name, value));
                }
                if !attrs.is_empty() {
                    xattrs.insert(path.clone(), attrs);
                }
            }
            let mut orphan_xattrs = Vec::new();
            for id in ROOT_ID..r.id_counter()? {
                if !reachable.contains(&id) && !r.xattr_sizes(id)?.is_empty() {
                    orphan_xattrs.push(id);
                }
            }
            Ok(Snapshot {
                xattrs,
                orphan_xattrs,
                tree,
                unreachable,
                fileservers: r.fileservers()?,
                dirmap: r.dirmap()?,
                next_id: r.id_counter()?,
            })
        })
        .unwrap()
}

/// The state after each prefix of the script, from a run without faults.
fn reference() -> Vec<Snapshot> {
    let disk = CrashDisk::new();
    let store = Store::with_backend(disk.backend(), 0).unwrap();
    let mut states = vec![snapshot(&store)];
    for (i, step) in SCRIPT.iter().enumerate() {
        run_step(&store, step, now_of(i)).unwrap_or_else(|e| panic!("{step:?}: {e}"));
        let snap = snapshot(&store);
        assert!(snap.unreachable.is_empty(), "{step:?} left orphans");
        assert!(
            snap.orphan_xattrs.is_empty(),
            "{step:?} left attributes behind"
        );
        states.push(snap);
    }
    // The script's attributes: the replaced file's went with it, the survivor's followed it.
    let last = states.last().unwrap();
    assert_eq!(
        last.xattrs.get("/t/g"),
        Some(&vec![("trusted.swap".to_owned(), b"new".to_vec())])
    );
    assert!(states
        .iter()
        .any(|s| s.xattrs.values().flatten().any(|(n, _)| n == "user.kept")));
    states
}

/// What must hold after any crash: `got` is the state after `acked` steps, or after `acked + 1`
/// when a step was in flight; ids and tokens did not go back; a new id is fresh.
fn check(refs: &[Snapshot], store: &Store, acked: usize, in_flight: bool, what: &str) -> Snapshot {
    let got = snapshot(store);
    let ok = got == refs[acked] || (in_flight && got == refs[acked + 1]);
    assert!(
        ok,
        "{what}: {acked} steps acknowledged{}, but the store holds neither state.\n\
         got: {got:#?}\nexpected: {:#?}",
        if in_flight {
            format!(", {:?} in flight", SCRIPT[acked])
        } else {
            String::new()
        },
        refs[acked]
    );
    let acked_state = &refs[acked];
    assert!(
        got.next_id >= acked_state.next_id,
        "{what}: id counter went back"
    );
    let max_id = got
        .tree
        .values()
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(ROOT_ID);
    assert!(
        got.next_id > max_id,
        "{what}: counter not above id {max_id}"
    );
    // The highest fencing token per file never goes back.
    for (id, node) in acked_state.tree.values() {
        if let Some((_, now)) = got.tree.values().find(|(gid, _)| gid == id) {
            assert!(
                now.token >= node.token,
                "{what}: token of file {id} went back"
            );
        }
    }
    got
}

/// After the checks: the next id handed out is one no acknowledged operation ever saw.
fn fresh_id_is_new(refs: &[Snapshot], store: &Store, acked: usize, what: &str) {
    let entry = store
        .write(|t| {
            namespace::create(
                t,
                &CreateRequest {
                    path: p("/fresh-after-crash"),
                    mode: None,
                    exclusive: true,
                    owner: None,
                },
                0,
            )
        })
        .unwrap();
    for state in &refs[..=acked] {
        assert!(
            state.tree.values().all(|(id, _)| *id < entry.id),
            "{what}: new id {} was already used",
            entry.id
        );
    }
}

/// Which unsynced writes reach the platter when the power goes: `keep(k, i)` for the `i`-th
/// change since the last sync, in a cut before op `k`.
type Keep = fn(u64, usize) -> bool;

/// A backend that cuts the power right before its `k`-th mutating call (write, set_len,
/// sync), keeping the unsynced writes `keep` picks: a disk that reordered them, so the commit
/// in flight may have reached the disk in part or in whole. (`CrashDisk::crash_after_ops`
/// always drops them.)
#[derive(Debug)]
struct Cut {
    inner: CrashBackend,
    disk: CrashDisk,
    /// Mutating calls left before the cut; `None` once it happened or when disarmed.
    left: Arc<Mutex<Option<u64>>>,
    k: u64,
    keep: Keep,
}

impl Cut {
    fn step(&self) -> std::io::Result<()> {
        let mut left = self.left.lock().unwrap();
        match *left {
            Some(0) => {
                *left = None;
                let (k, keep) = (self.k, self.keep);
                self.disk.crash_keeping(|i| keep(k, i));
                Err(std::io::Error::other("simulated power cut"))
            }
            Some(n) => {
                *left = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl redb::StorageBackend for Cut {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.step()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.step()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.step()?;
        self.inner.write(offset, data)
    }
}

/// Runs the script on a fresh disk that loses power right before its `k`-th write or sync
/// after the store was opened (`keep` picks unsynced writes that reach the platter anyway),
/// then reopens and checks. Returns false once the script finishes before the `k`-th op.
fn crash_at(refs: &[Snapshot], k: u64, keep: Keep) -> bool {
    let disk = CrashDisk::new();
    let left = Arc::new(Mutex::new(None));
    let store = Store::with_backend(
        Cut {
            inner: disk.backend(),
            disk: disk.clone(),
            left: left.clone(),
            k,
            keep,
        },
        0,
    )
    .unwrap();
    *left.lock().unwrap() = Some(k);
    let mut acked = 0;
    let mut in_flight = false;
    for (i, step) in SCRIPT.iter().enumerate() {
        match run_step(&store, step, now_of(i)) {
            Ok(()) => acked += 1,
            Err(err) => {
                assert_eq!(err.code, ErrorCode::Internal, "{step:?} failed: {err}");
                in_flight = true;
                break;
            }
        }
    }
    let finished = !in_flight;
    if finished {
        assert!(left.lock().unwrap().is_some(), "cut at {k} fired unnoticed");
        // The power goes right after the last acknowledged step.
        disk.crash_keeping(|i| keep(k, i));
    }
    drop(store);
    let what = format!("power cut before op {k}");
    let store = Store::with_backend(disk.backend(), 0)
        .unwrap_or_else(|e| panic!("{what}: store does not reopen: {e}"));
    let got = check(refs, &store, acked, in_flight, &what);
    if in_flight && got == refs[acked + 1] {
        APPLIED_IN_FLIGHT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fresh_id_is_new(refs, &store, acked, &what);
    !finished
}

/// Cuts whose in-flight step turned out applied (its commit reached the disk whole).
static APPLIED_IN_FLIGHT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn sweep(keep: Keep) -> u64 {
    let refs = reference();
    let mut k = 0;
    while crash_at(&refs, k, keep) {
        k += 1;
    }
    k
}

#[test]
fn power_loss_at_every_write_and_sync_of_the_script() {
    let steps = sweep(|_, _| false);
    eprintln!(
        "{} script steps, power cut before each of {steps} writes/syncs",
        SCRIPT.len()
    );
    assert!(
        steps > SCRIPT.len() as u64,
        "each step should take at least one write: {steps}"
    );
}

#[test]
fn power_loss_with_some_unsynced_writes_reaching_the_disk() {
    // A disk that reorders writes: some unsynced ones survive, chosen by fixed patterns.
    let patterns: [Keep; 3] = [
        |_, _| true,
        |k, i| (k as usize + i) & 1 == 0,
        |k, i| (k as usize * 7 + i * 13) % 5 < 2,
    ];
    for keep in patterns {
        sweep(keep);
    }
    let applied = APPLIED_IN_FLIGHT.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{applied} cuts left the operation in flight applied (whole)");
    // With every unsynced write kept, a cut before a commit's last sync applies it: the sweep
    // must have seen both outcomes of an in-flight operation.
    assert!(applied > 0, "no cut ever applied the operation in flight");
}

#[test]
fn power_loss_after_every_acknowledged_operation() {
    let refs = reference();
    let disk = CrashDisk::new();
    let mut store = Store::with_backend(disk.backend(), 0).unwrap();
    for (i, step) in SCRIPT.iter().enumerate() {
        run_step(&store, step, now_of(i)).unwrap_or_else(|e| panic!("{step:?}: {e}"));
        disk.crash();
        drop(store);
        store = Store::with_backend(disk.backend(), 0).unwrap();
        let what = format!("crash after {step:?}");
        check(&refs, &store, i + 1, false, &what);
    }
    fresh_id_is_new(&refs, &store, SCRIPT.len(), "end");
}

#[test]
fn power_loss_while_the_store_is_created() {
    for k in 0..64 {
        let disk = CrashDisk::new();
        disk.crash_after_ops(k);
        let opened = Store::with_backend(disk.backend(), 0);
        let done = opened.is_ok() && !disk.crashed_or_unarmed();
        drop(opened);
        disk.crash();
        let store = match Store::with_backend(disk.backend(), 0) {
            Ok(store) => store,
            // redb refuses an image whose creation never finished. `Store::open` never meets
            // one: it creates under a temp name and renames only a finished store into place.
            Err(_) if !done => continue,
            Err(e) => panic!("crash at op {k}, after creation finished: {e}"),
        };
        let snap = snapshot(&store);
        assert_eq!(snap.tree.len(), 1, "crash at op {k}: more than the root");
        assert!(snap.unreachable.is_empty() && snap.dirmap.is_empty());
        if done {
            return;
        }
    }
    panic!("store creation takes more than 64 writes");
}

#[test]
fn a_real_store_is_created_whole_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), 0).unwrap();
        run_step(&store, &Step::Mkdir("/kept"), 1).unwrap();
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["nameserver.redb".to_owned()]);
    // A temp file left by a crash during creation is cleaned up by the next first start.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("nameserver.redb.creating"), b"half").unwrap();
    drop(Store::open(other.path(), 0).unwrap());
    assert!(!other.path().join("nameserver.redb.creating").exists());
    let store = Store::open(dir.path(), 0).unwrap();
    assert!(snapshot(&store).tree.contains_key("/kept"));
}
