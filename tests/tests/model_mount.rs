//! A seeded model checker for the mount: two mounts A and B of one cluster, a few files in one
//! directory, random operations, and after every operation a comparison with an in-memory
//! model of what the contract (DESIGN.md contract 1–5, docs/SEMANTICS.md) promises. It proves
//! that on one mount all descriptors of a file share one coherent view (as on a local disk),
//! that every `close()` of a writer that returned 0 published exactly the mount's content, that
//! the other mount's fresh opens see exactly the published content, and that a second writer
//! on the other mount gets EBUSY while A writes.
//!
//! The seed is `DFS_SEED` (printed); a mismatch panics with the seed, the operation's index
//! and the last 20 operations. Default tier: 300 operations per mount mode. Long tier
//! (`DFS_LONG=1`): 5,000 operations × 3 seeds per mode.
//!
//! # The model's rules
//!
//! Per file (by identity; names map to files): `published` (what a fresh open on B must read)
//! and `local` (what every checked descriptor on A reads: A's one view of the file).
//!
//! * A opens (read, write, read-write; `O_TRUNC`, `O_APPEND`, `O_CREAT`): must succeed, or
//!   fail with ENOENT for an absent name without `O_CREAT`. `O_CREAT` of an absent name
//!   creates an empty published file. The first writer starts from the published content;
//!   `O_TRUNC` empties A's view at once.
//! * `pwrite` (appends on `O_APPEND`), `ftruncate`, a `MAP_SHARED` write + `msync` change A's
//!   view at once, for every descriptor of the file on A (`msync` may also publish: on the
//!   plain path it is an `fsync` of the file, with passthrough it syncs the backing file;
//!   the model accepts either); `pread`, `fstat` and an mmap read of
//!   any checked descriptor must show exactly A's view.
//! * `close()` and `fsync()` of a writable descriptor must return 0 and publish A's view (every
//!   close of a writer publishes, SEMANTICS "Every close of a descriptor publishes"). A
//!   read-only descriptor's close may or may not publish pending changes (the contract only
//!   speaks of handles with changes): the model accepts either, decided by B's next read.
//! * A child process (`cat`, an appending writer) is a separate process on A: it reads A's view
//!   and its close publishes. Starting it closes the inherited descriptors at `exec` (or at
//!   its exit), which flushes, so every file A writes is published then; where A held a
//!   single writable descriptor of the file, that flush also gives the lease back until A's
//!   next write (SEMANTICS, "Every close of a descriptor publishes"): B's write may then
//!   fail with EBUSY or succeed, and after it succeeds A's (stale) descriptors of the file
//!   are closed without checking their result.
//! * B only does whole-file operations. A read must return `published` (ENOENT for an absent
//!   name). A write (`O_TRUNC`) must fail with EBUSY while A holds a writable descriptor of
//!   that file, and succeed otherwise, replacing both `published` and A's view. A descriptor
//!   A opened before such a change on B is no longer checked: the contract promises
//!   close-to-open across mounts, not coherence of already-open descriptors.
//! * Unlink and rename (on either mount) only of files A does not hold open for writing (the
//!   lease stays on the old path; items 7 and 10 of `mount_coherence` cover those cases).
//!   A's read-only descriptors of an unlinked or renamed file keep reading its content (and
//!   `fstat` keeps working on them, except after B renamed or removed the file, where the
//!   contract does not say).
//! * Both mounts run with `entry_timeout=0,attr_timeout=0`: names and attributes cached by
//!   the kernel may lag by up to those timeouts (a documented deviation), which the model
//!   does not describe. Even then the kernel trusts a name it looked up within the same
//!   jiffy (up to 10 ms), so after every change of the namespace (create, rename, unlink, on
//!   either mount) the checker waits 20 ms before the next operation.

use dfs_tests::cluster::Cluster;
use dfs_tests::mount::Mount;
use dfs_tests::posix::{self, close, describe, fstat_size, mmap_read, mmap_write, pread, pwrite};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

const NAMES: [&str; 4] = ["f0", "f1", "f2", "f3"];
const DIR: &str = "m";
const MAX_FDS: usize = 6;
const MAX_SIZE: usize = 3 * 4096 + 700;

/// Tests of this binary run one at a time: a process one starts would close (flush, publish)
/// the other's inherited descriptors.
static SERIAL: Mutex<()> = Mutex::new(());

type FileId = u32;

#[derive(Debug, Clone)]
struct FileModel {
    /// What a fresh open on B must read.
    published: Vec<u8>,
    /// Contents that may or may not have been published since (oldest first; decided by B's
    /// next read): a read-only close with changes pending, an msync.
    maybe: Vec<Vec<u8>>,
    /// A's one view of the file.
    local: Vec<u8>,
    /// A flush by a child process (of its inherited copy) published this file while A held a
    /// single writable descriptor, which gave the lease back (SEMANTICS, "Every close of a
    /// descriptor publishes"); A's next write re-takes it. Until then B may write.
    lease_dropped: bool,
    /// B renamed it or removed its name (unlink, or a rename over it): A's descriptors keep
    /// reading it (item 10), but whether `fstat` on them still works the contract does not
    /// say (the mount may ask the nameserver by the old name).
    moved_by_b: bool,
}

struct Desc {
    /// A stable number for the log (`fd7`), unlike its index in the list.
    num: usize,
    file: File,
    id: FileId,
    name: String,
    flags: i32,
    read: bool,
    write: bool,
    append: bool,
    /// False once B changed the file after this open: then only close-to-open is promised.
    checked: bool,
}

#[derive(Default)]
struct Model {
    names: BTreeMap<String, FileId>,
    files: HashMap<FileId, FileModel>,
    next_id: FileId,
    next_fd: usize,
    descs: Vec<Desc>,
}

impl Model {
    fn writers(&self, id: FileId) -> usize {
        self.descs.iter().filter(|d| d.id == id && d.write).count()
    }

    fn new_file(&mut self, name: &str, content: Vec<u8>) -> FileId {
        self.next_id += 1;
        let id = self.next_id;
        self.files.insert(
            id,
            FileModel {
                published: content.clone(),
                maybe: Vec::new(),
                local: content,
                lease_dropped: false,
                moved_by_b: false,
            },
        );
        self.names.insert(name.to_owned(), id);
        id
    }

    /// Every file A holds open for writing is published (a flush of each writable
    /// descriptor, as a child process's exec or exit closes them).
    fn flush_all_writers(&mut self) {
        let ids: Vec<FileId> = self
            .descs
            .iter()
            .filter(|d| d.write)
            .map(|d| d.id)
            .collect();
        for id in ids {
            let single = self.writers(id) == 1;
            let f = self.files.get_mut(&id).expect("file of an open descriptor");
            f.published = f.local.clone();
            f.maybe.clear();
            if single {
                f.lease_dropped = true;
            }
        }
    }
}

fn flag_names(flags: i32) -> String {
    let mut names = vec![match flags & libc::O_ACCMODE {
        libc::O_WRONLY => "WRONLY",
        libc::O_RDWR => "RDWR",
        _ => "RDONLY",
    }];
    for (bit, name) in [
        (libc::O_TRUNC, "TRUNC"),
        (libc::O_APPEND, "APPEND"),
        (libc::O_CREAT, "CREAT"),
    ] {
        if flags & bit != 0 {
            names.push(name);
        }
    }
    names.join("|")
}

fn errno_of(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "ENOENT".into(),
        Some(libc::EBUSY) => "EBUSY".into(),
        Some(libc::ESTALE) => "ESTALE".into(),
        Some(libc::EIO) => "EIO".into(),
        _ => e.to_string(),
    }
}

/// Fields drop in order: the model's descriptors are closed before the mounts unmount.
struct Checker {
    model: Model,
    seed: u64,
    mode: &'static str,
    a: Mount,
    b: Mount,
    rng: StdRng,
    history: VecDeque<String>,
    op: usize,
}

impl Checker {
    fn path_a(&self, name: &str) -> std::path::PathBuf {
        self.a.path(&format!("{DIR}/{name}"))
    }

    fn path_b(&self, name: &str) -> std::path::PathBuf {
        self.b.path(&format!("{DIR}/{name}"))
    }

    fn note(&mut self, what: String) {
        if self.history.len() == 20 {
            self.history.pop_front();
        }
        self.history.push_back(format!("#{} {what}", self.op));
    }

    fn fail(&self, msg: String) -> ! {
        let descs: Vec<String> = self
            .model
            .descs
            .iter()
            .map(|d| {
                format!(
                    "fd{}: file {} ({}) {}{}",
                    d.num,
                    d.id,
                    d.name,
                    flag_names(d.flags),
                    if d.checked { "" } else { " (unchecked)" }
                )
            })
            .collect();
        let files: Vec<String> = self
            .model
            .files
            .iter()
            .map(|(id, f)| {
                format!(
                    "file {id}: published {} / local {}",
                    describe(&f.published),
                    describe(&f.local)
                )
            })
            .collect();
        panic!(
            "model mismatch [{}] (DFS_SEED={} op #{}): {msg}\nnames: {:?}\n{}\n{}\nlast operations:\n  {}",
            self.mode,
            self.seed,
            self.op,
            self.model.names,
            descs.join("\n"),
            files.join("\n"),
            self.history
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        )
    }

    fn data(&mut self, max: usize) -> Vec<u8> {
        let len = self.rng.random_range(1..=max);
        let letter = self.rng.random_range(b'a'..=b'z');
        (0..len)
            .map(|i| {
                if i % 97 == 0 {
                    self.rng.random_range(b'A'..=b'Z')
                } else {
                    letter
                }
            })
            .collect()
    }

    fn pick_name(&mut self) -> String {
        NAMES[self.rng.random_range(0..NAMES.len())].to_owned()
    }

    fn pick_desc(&mut self, pred: impl Fn(&Desc) -> bool) -> Option<usize> {
        let fit: Vec<usize> = (0..self.model.descs.len())
            .filter(|&i| pred(&self.model.descs[i]))
            .collect();
        if fit.is_empty() {
            None
        } else {
            Some(fit[self.rng.random_range(0..fit.len())])
        }
    }

    /// One random operation; false when the chosen operation was not possible.
    fn step(&mut self) -> bool {
        let choice = self.rng.random_range(0..100);
        match choice {
            0..=13 => self.op_open(),
            14..=25 => self.op_close(),
            26..=36 => self.op_pread(),
            37..=50 => self.op_pwrite(),
            51..=54 => self.op_ftruncate(),
            55..=59 => self.op_mmap_read(),
            60..=64 => self.op_mmap_write(),
            65..=67 => self.op_fsync(),
            68..=70 => self.op_drop_cache(),
            71..=72 => self.op_child_read(),
            73..=74 => self.op_child_append(),
            75..=81 => self.op_b_read(),
            82..=88 => self.op_b_write(),
            89..=93 => self.op_unlink(),
            _ => self.op_rename(),
        }
    }

    fn op_open(&mut self) -> bool {
        if self.model.descs.len() >= MAX_FDS {
            return false;
        }
        let name = self.pick_name();
        let (access, read, write) = match self.rng.random_range(0..3) {
            0 => (libc::O_RDONLY, true, false),
            1 => (libc::O_WRONLY, false, true),
            _ => (libc::O_RDWR, true, true),
        };
        let mut flags = access;
        if write {
            if self.rng.random_bool(0.2) {
                flags |= libc::O_TRUNC;
            }
            if self.rng.random_bool(0.25) {
                flags |= libc::O_APPEND;
            }
            if self.rng.random_bool(0.4) {
                flags |= libc::O_CREAT;
            }
        }
        self.note(format!("A open {name} {}", flag_names(flags)));
        let result = posix::open(&self.path_a(&name), flags);
        let existing = self.model.names.get(&name).copied();
        let id = match (existing, result) {
            (None, Err(e)) if flags & libc::O_CREAT == 0 => {
                if e.raw_os_error() != Some(libc::ENOENT) {
                    self.fail(format!(
                        "A: open of the absent name {name} failed with {e}, expected ENOENT"
                    ));
                }
                return true;
            }
            (_, Err(e)) => self.fail(format!(
                "A: open({name}, {}) failed with {}",
                flag_names(flags),
                errno_of(&e)
            )),
            (None, Ok(file)) if flags & libc::O_CREAT == 0 => {
                drop(file);
                self.fail(format!("A: open of the absent name {name} succeeded"))
            }
            (None, Ok(file)) => {
                let id = self.model.new_file(&name, Vec::new());
                self.push_desc(file, id, &name, flags, read, write);
                id
            }
            (Some(id), Ok(file)) => {
                if write && self.model.writers(id) == 0 {
                    let f = self.model.files.get_mut(&id).expect("named file");
                    f.local = f.published.clone();
                }
                if flags & libc::O_TRUNC != 0 {
                    self.model
                        .files
                        .get_mut(&id)
                        .expect("named file")
                        .local
                        .clear();
                }
                self.push_desc(file, id, &name, flags, read, write);
                id
            }
        };
        let _ = id;
        true
    }

    fn push_desc(
        &mut self,
        file: File,
        id: FileId,
        name: &str,
        flags: i32,
        read: bool,
        write: bool,
    ) {
        let num = self.model.next_fd;
        self.model.next_fd += 1;
        self.note(format!("  -> fd{num} (file {id})"));
        self.model.descs.push(Desc {
            num,
            file,
            id,
            name: name.to_owned(),
            flags,
            read,
            write,
            append: flags & libc::O_APPEND != 0,
            checked: true,
        });
    }

    fn op_close(&mut self) -> bool {
        let Some(i) = self.pick_desc(|_| true) else {
            return false;
        };
        let desc = self.model.descs.remove(i);
        self.note(format!(
            "A close fd{} (file {} {} {})",
            desc.num,
            desc.id,
            desc.name,
            flag_names(desc.flags)
        ));
        let (id, write) = (desc.id, desc.write);
        if let Err(e) = close(desc.file) {
            self.fail(format!("A: close() failed with {}", errno_of(&e)));
        }
        let writers_left = self.model.writers(id);
        let f = self.model.files.get_mut(&id).expect("file of a descriptor");
        if writers_left == 0 {
            f.lease_dropped = false;
        }
        if write {
            f.published = f.local.clone();
            f.maybe.clear();
        } else if writers_left > 0 && f.local != f.published {
            let local = f.local.clone();
            f.maybe.push(local);
        }
        true
    }

    fn op_pread(&mut self) -> bool {
        let Some(i) = self.pick_desc(|d| d.read) else {
            return false;
        };
        let n = self.model.descs[i].num;
        let size = self.model.files[&self.model.descs[i].id].local.len();
        let off = self.rng.random_range(0..=size + 64) as u64;
        let len = self.rng.random_range(1..=6000);
        self.note(format!("A pread fd{n} off {off} len {len}"));
        let d = &self.model.descs[i];
        let got = pread(&d.file, off, len);
        if !d.checked {
            return true;
        }
        let local = &self.model.files[&d.id].local;
        let from = (off as usize).min(local.len());
        let to = (from + len).min(local.len());
        match got {
            Ok(got) if got == local[from..to] => {}
            Ok(got) => self.fail(format!(
                "A: pread of fd{n} at {off} read {}, A's view there is {}",
                describe(&got),
                describe(&local[from..to])
            )),
            Err(e) => self.fail(format!("A: pread of fd{n} failed: {}", errno_of(&e))),
        }
        true
    }

    fn op_pwrite(&mut self) -> bool {
        let Some(i) = self.pick_desc(|d| d.write) else {
            return false;
        };
        let n = self.model.descs[i].num;
        let id = self.model.descs[i].id;
        let size = self.model.files[&id].local.len();
        let mut data = self.data(3000);
        let append = self.model.descs[i].append;
        let off = if append {
            size
        } else {
            self.rng.random_range(0..=size + 100)
        };
        data.truncate(MAX_SIZE.saturating_sub(off).max(1));
        self.note(format!(
            "A pwrite fd{n} off {off}{} {}",
            if append { " (append)" } else { "" },
            describe(&data)
        ));
        if let Err(e) = pwrite(&self.model.descs[i].file, off as u64, &data) {
            self.fail(format!("A: pwrite on fd{n} failed: {}", errno_of(&e)));
        }
        self.note_write_seen(id);
        let local = &mut self.model.files.get_mut(&id).expect("file").local;
        if local.len() < off + data.len() {
            local.resize(off + data.len(), 0);
        }
        local[off..off + data.len()].copy_from_slice(&data);
        true
    }

    fn op_ftruncate(&mut self) -> bool {
        let Some(i) = self.pick_desc(|d| d.write) else {
            return false;
        };
        let n = self.model.descs[i].num;
        let len = self.rng.random_range(0..=MAX_SIZE);
        self.note(format!("A ftruncate fd{n} to {len}"));
        if let Err(e) = self.model.descs[i].file.set_len(len as u64) {
            self.fail(format!("A: ftruncate of fd{n} failed: {}", errno_of(&e)));
        }
        let id = self.model.descs[i].id;
        let f = self.model.files.get_mut(&id).expect("file");
        f.local.resize(len, 0);
        f.lease_dropped = false;
        true
    }

    fn op_mmap_read(&mut self) -> bool {
        let Some(i) = self.pick_desc(|d| d.read && d.checked) else {
            return false;
        };
        let n = self.model.descs[i].num;
        let local = self.model.files[&self.model.descs[i].id].local.clone();
        if local.is_empty() {
            return false;
        }
        self.note(format!("A mmap read fd{n} ({} bytes)", local.len()));
        match mmap_read(&self.model.descs[i].file, local.len()) {
            Ok(got) if got == local => {}
            Ok(got) => self.fail(format!(
                "A: mmap of fd{n} reads {}, A's view is {}",
                describe(&got),
                describe(&local)
            )),
            Err(e) => self.fail(format!("A: mmap read of fd{n}: {e}")),
        }
        true
    }

    fn op_mmap_write(&mut self) -> bool {
        let Some(i) = self.pick_desc(|d| d.read && d.write && d.checked) else {
            return false;
        };
        let n = self.model.descs[i].num;
        let id = self.model.descs[i].id;
        let size = self.model.files[&id].local.len();
        if size == 0 {
            return false;
        }
        let off = self.rng.random_range(0..size);
        let mut data = self.data(2000);
        data.truncate(size - off);
        self.note(format!(
            "A mmap write fd{n} off {off} {} (map {size})",
            describe(&data)
        ));
        if let Err(e) = mmap_write(&self.model.descs[i].file, size, off, &data) {
            self.fail(format!("A: mmap write of fd{n}: {e}"));
        }
        // msync(MS_SYNC) of a shared file mapping is an fsync of its file on the plain path
        // (which publishes); with passthrough it syncs the backing file. Either is accepted.
        let f = self.model.files.get_mut(&id).expect("file");
        f.local[off..off + data.len()].copy_from_slice(&data);
        let local = f.local.clone();
        f.maybe.push(local);
        self.note_write_seen(id);
        true
    }

    /// A write through a descriptor re-takes a lease given back by a child's flush, on the
    /// plain path where the daemon sees every write. With passthrough the kernel writes the
    /// backing file directly: the lease is re-taken only at the next flush, fsync or close
    /// (SEMANTICS, "FUSE passthrough"), so B may still write meanwhile.
    fn note_write_seen(&mut self, id: u32) {
        if self.mode != "passthrough" {
            self.model.files.get_mut(&id).expect("file").lease_dropped = false;
        }
    }

    fn op_fsync(&mut self) -> bool {
        let Some(i) = self.pick_desc(|d| d.write) else {
            return false;
        };
        let n = self.model.descs[i].num;
        self.note(format!("A fsync fd{n}"));
        if let Err(e) = self.model.descs[i].file.sync_all() {
            self.fail(format!("A: fsync of fd{n} failed: {}", errno_of(&e)));
        }
        let id = self.model.descs[i].id;
        let f = self.model.files.get_mut(&id).expect("file");
        f.published = f.local.clone();
        f.maybe.clear();
        true
    }

    fn op_drop_cache(&mut self) -> bool {
        let Some(i) = self.pick_desc(|_| true) else {
            return false;
        };
        let n = self.model.descs[i].num;
        self.note(format!(
            "A drop the page cache via fd{n} (POSIX_FADV_DONTNEED)"
        ));
        // SAFETY: fadvise on an open descriptor.
        unsafe {
            libc::posix_fadvise(
                std::os::fd::AsRawFd::as_raw_fd(&self.model.descs[i].file),
                0,
                0,
                libc::POSIX_FADV_DONTNEED,
            );
        }
        true
    }

    fn op_child_read(&mut self) -> bool {
        let name = self.pick_name();
        let Some(&id) = self.model.names.get(&name) else {
            return false;
        };
        self.note(format!("child process: cat A/{name}"));
        let out = Command::new("cat")
            .arg(self.path_a(&name))
            .output()
            .expect("run cat");
        // Its exec closed our inherited descriptors: a flush of each.
        self.model.flush_all_writers();
        let local = &self.model.files[&id].local;
        if !out.status.success() || out.stdout != *local {
            self.fail(format!(
                "a child process reading A/{name} got {} ({}; {}), A's view is {}",
                describe(&out.stdout),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                describe(local)
            ));
        }
        true
    }

    fn op_child_append(&mut self) -> bool {
        let name = self.pick_name();
        let data = self.data(500);
        self.note(format!(
            "child process: open A/{name} WRONLY|APPEND|CREAT, write {}, close",
            describe(&data)
        ));
        let result = posix::write_in_child_process(
            &self.path_a(&name),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT,
            &data,
        );
        if let Err(e) = result {
            self.fail(format!("a child process appending to A/{name}: {e}"));
        }
        // Its exit closed our inherited descriptors (a flush each), its own close published.
        let id = match self.model.names.get(&name) {
            Some(&id) => id,
            None => self.model.new_file(&name, Vec::new()),
        };
        if self.model.writers(id) == 0 {
            let f = self.model.files.get_mut(&id).expect("file");
            f.local = f.published.clone();
        }
        self.model
            .files
            .get_mut(&id)
            .expect("file")
            .local
            .extend_from_slice(&data);
        self.model.flush_all_writers();
        let f = self.model.files.get_mut(&id).expect("file");
        f.published = f.local.clone();
        f.maybe.clear();
        true
    }

    fn op_b_read(&mut self) -> bool {
        let name = self.pick_name();
        self.note(format!("B read {name}"));
        self.check_b(&name);
        true
    }

    fn op_b_write(&mut self) -> bool {
        let name = self.pick_name();
        let data = self.data(MAX_SIZE);
        self.note(format!(
            "B write {name} (O_TRUNC|O_CREAT) {}",
            describe(&data)
        ));
        let existing = self.model.names.get(&name).copied();
        let busy = existing.is_some_and(|id| self.model.writers(id) > 0);
        let dropped = existing.is_some_and(|id| self.model.files[&id].lease_dropped);
        let opened = posix::open(
            &self.path_b(&name),
            libc::O_WRONLY | libc::O_TRUNC | libc::O_CREAT,
        );
        match (opened, busy) {
            (Err(e), true) if e.raw_os_error() == Some(libc::EBUSY) => return true,
            (Err(e), true) => self.fail(format!(
                "B: open for writing of {name}, which A holds open for writing, failed with {} \
                 instead of EBUSY",
                errno_of(&e)
            )),
            (Err(e), false) => self.fail(format!(
                "B: open for writing of {name} failed with {} although A holds no writer",
                errno_of(&e)
            )),
            (Ok(file), true) if dropped => {
                // The lease was given back (see `lease_dropped`): B may write. A's
                // descriptors of the file now hold a stale copy whose next write or close may
                // fail (EBUSY/ESTALE, as documented): the model closes them here.
                if let Err(e) = pwrite(&file, 0, &data) {
                    self.fail(format!("B: write to {name}: {}", errno_of(&e)));
                }
                if let Err(e) = close(file) {
                    self.fail(format!("B: close() of {name} failed with {}", errno_of(&e)));
                }
                let id = existing.expect("busy means it exists");
                let (stale, keep): (Vec<Desc>, Vec<Desc>) =
                    self.model.descs.drain(..).partition(|d| d.id == id);
                self.model.descs = keep;
                for d in stale {
                    let _ = close(d.file);
                }
                self.note(format!(
                    "  (B's write succeeded after a child's flush gave the lease back; A's \
                     descriptors of file {id} closed)"
                ));
            }
            (Ok(file), true) => {
                drop(file);
                self.fail(format!(
                    "B: open for writing of {name} succeeded while A holds it open for writing \
                     (expected EBUSY)"
                ))
            }
            (Ok(file), false) => {
                if let Err(e) = pwrite(&file, 0, &data) {
                    self.fail(format!("B: write to {name}: {}", errno_of(&e)));
                }
                if let Err(e) = close(file) {
                    self.fail(format!("B: close() of {name} failed with {}", errno_of(&e)));
                }
            }
        }
        let id = match existing {
            Some(id) => id,
            None => self.model.new_file(&name, Vec::new()),
        };
        let f = self.model.files.get_mut(&id).expect("file");
        f.published = data.clone();
        f.local = data;
        f.maybe.clear();
        f.lease_dropped = false;
        for d in self.model.descs.iter_mut().filter(|d| d.id == id) {
            d.checked = false;
        }
        true
    }

    fn op_unlink(&mut self) -> bool {
        let name = self.pick_name();
        let on_a = self.rng.random_bool(0.5);
        let existing = self.model.names.get(&name).copied();
        if existing.is_some_and(|id| self.model.writers(id) > 0) {
            return false;
        }
        let label = if on_a { "A" } else { "B" };
        self.note(format!("{label} unlink {name}"));
        let path = if on_a {
            self.path_a(&name)
        } else {
            self.path_b(&name)
        };
        let result = std::fs::remove_file(path);
        match (existing, result) {
            (Some(id), Ok(())) => {
                self.model.names.remove(&name);
                if !on_a {
                    self.model.files.get_mut(&id).expect("file").moved_by_b = true;
                }
            }
            (None, Err(e)) if e.raw_os_error() == Some(libc::ENOENT) => {}
            (Some(_), Err(e)) => self.fail(format!("{label}: unlink {name}: {}", errno_of(&e))),
            (None, Err(e)) => self.fail(format!(
                "{label}: unlink of the absent {name} failed with {} instead of ENOENT",
                errno_of(&e)
            )),
            (None, Ok(())) => self.fail(format!("{label}: unlink of the absent {name} succeeded")),
        }
        true
    }

    fn op_rename(&mut self) -> bool {
        let from = self.pick_name();
        let to = self.pick_name();
        let on_a = self.rng.random_bool(0.5);
        let (Some(&src), dst) = (
            self.model.names.get(&from),
            self.model.names.get(&to).copied(),
        ) else {
            return false;
        };
        if from == to
            || self.model.writers(src) > 0
            || dst.is_some_and(|id| self.model.writers(id) > 0)
        {
            return false;
        }
        let label = if on_a { "A" } else { "B" };
        self.note(format!("{label} rename {from} -> {to}"));
        let (p, q) = if on_a {
            (self.path_a(&from), self.path_a(&to))
        } else {
            (self.path_b(&from), self.path_b(&to))
        };
        if let Err(e) = std::fs::rename(p, q) {
            self.fail(format!("{label}: rename {from} -> {to}: {}", errno_of(&e)));
        }
        self.model.names.remove(&from);
        self.model.names.insert(to, src);
        if !on_a {
            self.model.files.get_mut(&src).expect("file").moved_by_b = true;
            if let Some(replaced) = dst {
                self.model
                    .files
                    .get_mut(&replaced)
                    .expect("file")
                    .moved_by_b = true;
            }
        }
        true
    }

    /// B's fresh open of `name` must read the published content (ENOENT when absent).
    fn check_b(&mut self, name: &str) {
        let got = std::fs::read(self.path_b(name));
        let Some(&id) = self.model.names.get(name) else {
            match got {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return,
                Err(e) => self.fail(format!("B: read of the absent {name}: {}", errno_of(&e))),
                Ok(c) => self.fail(format!("B: the absent name {name} reads {}", describe(&c))),
            }
        };
        let f = self.model.files.get_mut(&id).expect("named file");
        match got {
            Ok(c) if c == f.published => f.maybe.clear(),
            Ok(c) if f.maybe.contains(&c) => {
                f.published = c;
                f.maybe.clear();
            }
            Ok(c) => {
                let msg = format!(
                    "B: a fresh open of {name} reads {}, the published content is {} (A's view: {})",
                    describe(&c),
                    describe(&f.published),
                    describe(&f.local)
                );
                self.fail(msg)
            }
            Err(e) => self.fail(format!("B: read of {name}: {}", errno_of(&e))),
        }
    }

    /// After every operation: every checked descriptor on A shows A's view (fstat, pread),
    /// and B's fresh opens show the published content of every name.
    fn check_all(&mut self) {
        for i in 0..self.model.descs.len() {
            let d = &self.model.descs[i];
            let n = d.num;
            if !d.checked {
                continue;
            }
            let local = &self.model.files[&d.id].local;
            match fstat_size(&d.file) {
                _ if self.model.files[&d.id].moved_by_b => {}
                Ok(size) if size == local.len() as u64 => {}
                Ok(size) => self.fail(format!(
                    "A: fstat of fd{n} ({}) says {size} bytes, A's view has {}",
                    d.name,
                    local.len()
                )),
                Err(e) => self.fail(format!("A: fstat of fd{n}: {}", errno_of(&e))),
            }
            if d.read {
                match pread(&d.file, 0, local.len() + 64) {
                    Ok(got) if got == *local => {}
                    Ok(got) => self.fail(format!(
                        "A: fd{n} ({}, {}) reads {}, A's view is {}",
                        d.name,
                        flag_names(d.flags),
                        describe(&got),
                        describe(local)
                    )),
                    Err(e) => self.fail(format!("A: pread of fd{n}: {}", errno_of(&e))),
                }
            }
        }
        for name in NAMES {
            self.check_b(name);
        }
    }
}

fn run_model(seed: u64, ops: usize, mode: &'static str, a_opts: &[&str]) {
    eprintln!("model [{mode}]: DFS_SEED={seed}, {ops} operations");
    let cluster = Cluster::start(2);
    let mut opts = vec!["-o", "entry_timeout=0,attr_timeout=0"];
    opts.extend_from_slice(a_opts);
    let Some(a) = Mount::try_start(&cluster.nameserver, &opts) else {
        return;
    };
    if a_opts.contains(&"passthrough") && a.passthrough_granted() != Some(true) {
        eprintln!("skipping the {mode} model: FUSE passthrough is not available in this kernel");
        return;
    }
    let b = Mount::start(
        &cluster.nameserver,
        &["-o", "entry_timeout=0,attr_timeout=0"],
    );
    std::fs::create_dir(a.path(DIR)).unwrap();
    let mut checker = Checker {
        seed,
        mode,
        a,
        b,
        rng: StdRng::seed_from_u64(seed),
        model: Model::default(),
        history: VecDeque::new(),
        op: 0,
    };
    for name in &NAMES[..2] {
        let data = checker.data(5000);
        std::fs::write(checker.path_a(name), &data).unwrap();
        checker.model.new_file(name, data);
    }
    let started = Instant::now();
    let mut done = 0;
    while done < ops {
        checker.op = done;
        let names_before = checker.model.names.clone();
        if checker.step() {
            if checker.model.names != names_before {
                // Names the other mount looked up within this jiffy may still resolve.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            checker.check_all();
            done += 1;
        }
    }
    eprintln!(
        "model [{mode}]: {ops} operations in {:?}, seed {seed} clean",
        started.elapsed()
    );
    while let Some(d) = checker.model.descs.pop() {
        let _ = close(d.file);
    }
}

fn seeds_and_ops() -> (Vec<u64>, usize) {
    let seed = dfs_tests::test_seed();
    if dfs_tests::long_tier() {
        ((0..3).map(|i| seed.wrapping_add(i)).collect(), 5000)
    } else {
        (vec![seed], 300)
    }
}

#[test]
fn model_two_mounts_plain() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (seeds, ops) = seeds_and_ops();
    for seed in seeds {
        run_model(seed, ops, "plain", &["-o", "nopassthrough"]);
    }
}

#[test]
fn model_two_mounts_passthrough() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (seeds, ops) = seeds_and_ops();
    for seed in seeds {
        run_model(seed, ops, "passthrough", &["-o", "passthrough"]);
    }
}
