//! kill -9 of the real nameserver under a namespace workload.
//!
//! One client runs mkdir / create / rename / unlink / rmdir / setattr through `NameClient`
//! while a killer restarts the nameserver with SIGKILL every 100-300 ms (quick tier: 30 kills;
//! `DFS_LONG=1`: 200). The client keeps a model of the namespace built from acknowledged
//! operations. An operation whose reply never came (the connection died with the server) may
//! have happened or not: the client lists the whole namespace as soon as the server answers
//! again and the listing must equal the model either without or with that one operation, which
//! then becomes the model. After every restart and at the end the listing must equal the model
//! exactly. Ids are learnt from replies and listings: an id never changes (renames keep it)
//! and a new one is always greater than every id seen before, so ids are never reused.
//!
//! Pass: every acknowledged operation is present after every restart, no operation is half
//! applied, no id is reused, and every restart is ready within 2 s.

use dfs_proto::client::NameClient;
use dfs_proto::names::{CreateRequest, Entry, EntryKind, RenameRequest, SetAttrRequest};
use dfs_proto::{ApiError, DfsPath, ErrorCode};
use dfs_tests::process::ProcessCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What the model knows about one path. `None` fields are not known exactly (a directory's
/// mtime moves with its children; an id is learnt on the first reply or listing).
#[derive(Clone, Debug, PartialEq)]
struct Attr {
    kind: EntryKind,
    mode: u32,
    mtime: Option<i64>,
    id: Option<u64>,
}

type Model = BTreeMap<String, Attr>;

#[derive(Clone, Debug)]
enum Op {
    Mkdir(String, u32),
    Create(String, u32),
    Rename(String, String),
    Unlink(String),
    Rmdir(String),
    SetAttr(String, u32, i64),
}

fn path(s: &str) -> DfsPath {
    DfsPath::parse(s).expect("the workload builds valid paths")
}

fn parent_of(p: &str) -> String {
    match p.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(at) => p[..at].to_owned(),
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn is_under(p: &str, dir: &str) -> bool {
    p == dir || p.starts_with(&format!("{dir}/"))
}

fn touch(model: &mut Model, dir: &str) {
    if let Some(a) = model.get_mut(dir) {
        a.mtime = None;
    }
}

/// The model after `op` succeeded.
fn apply(model: &Model, op: &Op) -> Model {
    let mut m = model.clone();
    match op {
        Op::Mkdir(p, mode) | Op::Create(p, mode) => {
            let kind = if matches!(op, Op::Mkdir(..)) {
                EntryKind::Dir
            } else {
                EntryKind::File
            };
            m.insert(
                p.clone(),
                Attr {
                    kind,
                    mode: *mode,
                    mtime: None,
                    id: None,
                },
            );
            touch(&mut m, &parent_of(p));
        }
        Op::Rename(from, to) => {
            let moved: Vec<(String, Attr)> = model
                .iter()
                .filter(|(p, _)| is_under(p, from))
                .map(|(p, a)| (p.clone(), a.clone()))
                .collect();
            for (p, a) in moved {
                m.remove(&p);
                m.insert(format!("{to}{}", &p[from.len()..]), a);
            }
            touch(&mut m, &parent_of(from));
            touch(&mut m, &parent_of(to));
        }
        Op::Unlink(p) | Op::Rmdir(p) => {
            m.remove(p);
            touch(&mut m, &parent_of(p));
        }
        Op::SetAttr(p, mode, mtime) => {
            if let Some(a) = m.get_mut(p) {
                a.mode = *mode;
                a.mtime = Some(*mtime);
            }
        }
    }
    m
}

/// A random operation that must succeed on `model`; names are unique (`seq`).
fn next_op(rng: &mut StdRng, model: &Model, seq: u64) -> Op {
    let dirs: Vec<&String> = model
        .iter()
        .filter(|(_, a)| a.kind == EntryKind::Dir)
        .map(|(p, _)| p)
        .collect();
    let files: Vec<&String> = model
        .iter()
        .filter(|(_, a)| a.kind == EntryKind::File)
        .map(|(p, _)| p)
        .collect();
    let non_root: Vec<&String> = model.keys().filter(|p| p.as_str() != "/").collect();
    let empty_dirs: Vec<&String> = dirs
        .iter()
        .copied()
        .filter(|d| d.as_str() != "/" && !model.keys().any(|p| p.starts_with(&format!("{d}/"))))
        .collect();
    let modes = [0o600, 0o640, 0o644, 0o700, 0o755];
    let mode = modes[rng.random_range(0..modes.len())];
    let dir = dirs[rng.random_range(0..dirs.len())].clone();
    // Keep the tree small: past 150 entries, only delete and setattr.
    let roll = if model.len() > 150 {
        rng.random_range(55..100)
    } else {
        rng.random_range(0..100)
    };
    match roll {
        0..12 => Op::Mkdir(join(&dir, &format!("d{seq}")), mode),
        12..40 => Op::Create(join(&dir, &format!("f{seq}")), mode),
        40..55 if !non_root.is_empty() => {
            let from = non_root[rng.random_range(0..non_root.len())].clone();
            let targets: Vec<&String> = dirs
                .iter()
                .copied()
                .filter(|d| !is_under(d, &from))
                .collect();
            let to_dir = targets[rng.random_range(0..targets.len())];
            Op::Rename(from, join(to_dir, &format!("r{seq}")))
        }
        55..75 if !files.is_empty() => Op::Unlink(files[rng.random_range(0..files.len())].clone()),
        75..90 if !empty_dirs.is_empty() => {
            Op::Rmdir(empty_dirs[rng.random_range(0..empty_dirs.len())].clone())
        }
        90..100 if !non_root.is_empty() => Op::SetAttr(
            non_root[rng.random_range(0..non_root.len())].clone(),
            mode,
            1_600_000_000_000_000_000 + seq as i64,
        ),
        // Nothing of the rolled kind to work on: a delete if possible, else a create.
        _ if !empty_dirs.is_empty() => {
            Op::Rmdir(empty_dirs[rng.random_range(0..empty_dirs.len())].clone())
        }
        _ if !files.is_empty() => Op::Unlink(files[rng.random_range(0..files.len())].clone()),
        _ => Op::Create(join(&dir, &format!("f{seq}")), mode),
    }
}

/// Sends `op`; the entry in the reply when there is one.
async fn send(c: &NameClient, op: &Op) -> Result<Option<Entry>, ApiError> {
    match op {
        Op::Mkdir(p, mode) => c.mkdir(&path(p), Some(*mode)).await.map(Some),
        Op::Create(p, mode) => c
            .create(&CreateRequest {
                path: path(p),
                mode: Some(*mode),
                exclusive: true,
                owner: None,
            })
            .await
            .map(Some),
        Op::Rename(from, to) => c
            .rename(&RenameRequest {
                from: path(from),
                to: path(to),
                no_replace: true,
                exchange: false,
            })
            .await
            .map(Some),
        Op::Unlink(p) => c.unlink(&path(p)).await.map(|_| None),
        Op::Rmdir(p) => c.rmdir(&path(p)).await.map(|()| None),
        Op::SetAttr(p, mode, mtime) => c
            .setattr(&SetAttrRequest {
                path: path(p),
                mode: Some(*mode),
                mtime_ns: Some(*mtime),
                atime_ns: None,
                uid: None,
                gid: None,
                kill_suid: false,
                access: false,
            })
            .await
            .map(Some),
    }
}

/// The whole namespace as the nameserver lists it.
async fn list_all(c: &NameClient) -> Result<BTreeMap<String, Entry>, ApiError> {
    let mut out = BTreeMap::new();
    let root = c.stat(&DfsPath::root()).await?;
    out.insert("/".to_owned(), root);
    let mut todo = vec![DfsPath::root()];
    while let Some(dir) = todo.pop() {
        for e in c.list(&dir).await? {
            if e.kind == EntryKind::Dir {
                todo.push(e.path.clone());
            }
            out.insert(e.path.as_str().to_owned(), e);
        }
    }
    Ok(out)
}

/// Lists until the server answers (it may be restarting); a listing changes nothing, and only
/// this client writes, so a retried walk sees one consistent state.
async fn observe(c: &NameClient) -> Result<BTreeMap<String, Entry>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match list_all(c).await {
            Ok(seen) => return Ok(seen),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => return Err(format!("nameserver did not answer for 30 s: {e}")),
        }
    }
}

/// Why `seen` is not `model`, or `None` when it is.
fn differs(model: &Model, seen: &BTreeMap<String, Entry>) -> Option<String> {
    if let Some(p) = model.keys().find(|p| !seen.contains_key(*p)) {
        return Some(format!("{p} missing"));
    }
    if let Some(p) = seen.keys().find(|p| !model.contains_key(*p)) {
        return Some(format!("{p} should not exist"));
    }
    for (p, a) in model {
        let e = &seen[p];
        if e.kind != a.kind
            || e.mode != a.mode
            || a.mtime.is_some_and(|m| m != e.mtime_ns)
            || a.id.is_some_and(|id| id != e.id)
        {
            return Some(format!("{p}: model {a:?}, nameserver {e:?}"));
        }
    }
    None
}

/// Everything the client tracks besides the model.
#[derive(Default)]
struct Stats {
    acked: u64,
    unacked_applied: u64,
    unacked_not_applied: u64,
    checks: u64,
    max_id: u64,
}

impl Stats {
    /// Learns the ids of `seen` the model did not know yet; each must be new.
    fn learn_ids(
        &mut self,
        model: &mut Model,
        seen: &BTreeMap<String, Entry>,
    ) -> Result<(), String> {
        let mut unknown: Vec<(u64, String)> = model
            .iter()
            .filter(|(p, a)| a.id.is_none() && p.as_str() != "/")
            .map(|(p, _)| (seen[p].id, p.clone()))
            .collect();
        unknown.sort();
        for (id, p) in unknown {
            self.new_id(id, &p)?;
            if let Some(a) = model.get_mut(&p) {
                a.id = Some(id);
            }
        }
        if let Some(root) = model.get_mut("/") {
            root.id = Some(1);
        }
        Ok(())
    }

    fn new_id(&mut self, id: u64, p: &str) -> Result<(), String> {
        if id <= self.max_id {
            return Err(format!(
                "{p} got id {id}, not above the highest seen {}",
                self.max_id
            ));
        }
        self.max_id = id;
        Ok(())
    }
}

/// The client loop; returns its stats, or why the history is wrong.
fn client(url: &str, seed: u64, stop: &AtomicBool, restarts: &AtomicU64) -> Result<Stats, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let c = NameClient::new(url).with_credential(dfs_tests::keys::credential_for(url));
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = Stats::default();
    let mut model = Model::new();
    model.insert(
        "/".to_owned(),
        Attr {
            kind: EntryKind::Dir,
            mode: 0o755,
            mtime: None,
            id: Some(1),
        },
    );
    let mut checked_restarts = 0;
    let mut seq = 0;
    let check = |model: &mut Model, stats: &mut Stats, when: &str| -> Result<(), String> {
        let seen = runtime.block_on(observe(&c))?;
        if let Some(why) = differs(model, &seen) {
            return Err(format!("{when}: namespace differs from the model: {why}"));
        }
        stats.learn_ids(model, &seen)?;
        stats.checks += 1;
        Ok(())
    };
    while !stop.load(Ordering::SeqCst) {
        let now = restarts.load(Ordering::SeqCst);
        if now != checked_restarts {
            check(&mut model, &mut stats, &format!("after restart {now}"))?;
            checked_restarts = now;
        }
        seq += 1;
        let op = next_op(&mut rng, &model, seq);
        let after = apply(&model, &op);
        match runtime.block_on(send(&c, &op)) {
            Ok(reply) => {
                stats.acked += 1;
                let mut after = after;
                if let Some(e) = reply {
                    let p = e.path.as_str().to_owned();
                    let known = after.get_mut(&p).ok_or(format!("{op:?}: reply for {p}"))?;
                    match known.id {
                        Some(id) if id != e.id => {
                            return Err(format!("{op:?}: id changed from {id} to {}", e.id))
                        }
                        Some(_) => {}
                        None => {
                            stats.new_id(e.id, &p)?;
                            known.id = Some(e.id);
                        }
                    }
                }
                model = after;
            }
            Err(e) if matches!(e.code, ErrorCode::Unavailable | ErrorCode::Internal) => {
                // No reply: the operation happened wholly or not at all.
                let seen = runtime.block_on(observe(&c))?;
                match (differs(&model, &seen), differs(&after, &seen)) {
                    (None, _) => stats.unacked_not_applied += 1,
                    (_, None) => {
                        stats.unacked_applied += 1;
                        model = after;
                    }
                    (Some(before), Some(applied)) => {
                        return Err(format!(
                            "{op:?} had no reply ({e}) and is half applied: \
                             not as before ({before}), not as after ({applied})"
                        ))
                    }
                }
                stats.learn_ids(&mut model, &seen)?;
            }
            Err(e) => return Err(format!("{op:?} refused though the model allows it: {e}")),
        }
    }
    check(&mut model, &mut stats, "at the end")?;
    eprintln!(
        "final namespace: {} entries ({} dirs)",
        model.len(),
        model.values().filter(|a| a.kind == EntryKind::Dir).count()
    );
    Ok(stats)
}

#[test]
fn nameserver_kill9_keeps_every_acknowledged_namespace_change() {
    let seed = dfs_tests::test_seed();
    let kills = if dfs_tests::long_tier() { 200 } else { 30 };
    let mut cluster = ProcessCluster::start_with(0, &[]);
    let url = cluster.nameserver.url.clone();
    let stop = AtomicBool::new(false);
    let restarts = AtomicU64::new(0);
    let started = Instant::now();
    let mut ready_times = Vec::new();
    let mut failure: Option<String> = None;

    let outcome = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let result = client(&url, seed, &stop, &restarts);
            // A broken history stops the killer too.
            stop.store(true, Ordering::SeqCst);
            result
        });
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6b696c6c);
        for _ in 0..kills {
            std::thread::sleep(Duration::from_millis(rng.random_range(100..300)));
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let ready = cluster.nameserver.restart();
            ready_times.push(ready);
            restarts.fetch_add(1, Ordering::SeqCst);
            if ready >= Duration::from_secs(2) {
                failure = Some(format!("restart {} took {ready:?}", ready_times.len()));
                break;
            }
        }
        // One more stretch of work on the last incarnation, then the final check.
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        client
            .join()
            .unwrap_or_else(|_| Err("client thread panicked".into()))
    });

    let stats = match (outcome, failure) {
        (Ok(stats), None) => stats,
        (Err(why), _) | (Ok(_), Some(why)) => {
            let log = cluster.nameserver.log();
            let tail: String = log.lines().rev().take(30).collect::<Vec<_>>().join("\n");
            cluster.keep_data();
            panic!("seed {seed}: {why}\nlast nameserver log lines (newest first):\n{tail}");
        }
    };
    let max = ready_times.iter().max().copied().unwrap_or_default();
    let mean = ready_times.iter().sum::<Duration>() / ready_times.len().max(1) as u32;
    eprintln!(
        "seed {seed}: {} kills in {:.1} s; {} ops acknowledged, {} unacknowledged \
         ({} applied, {} not); {} full checks; restart ready mean {mean:?}, max {max:?}",
        ready_times.len(),
        started.elapsed().as_secs_f64(),
        stats.acked,
        stats.unacked_applied + stats.unacked_not_applied,
        stats.unacked_applied,
        stats.unacked_not_applied,
        stats.checks,
    );
    assert_eq!(ready_times.len(), kills, "the killer stopped early");
    assert!(
        stats.acked > kills as u64,
        "too few operations: {}",
        stats.acked
    );
}
