//! POSIX namespace logic over the store: lookups, mkdir/rmdir/create/unlink/rename/setattr,
//! open-for-write and publish. Pure functions of one transaction; no I/O besides the store.

use super::placement;
use super::registry::Live;
use super::store::{Node, Read, WriteTables, ROOT_ID};
use dfs_proto::names::{
    CreateRequest, Entry, EntryKind, FileserverRef, LinkRequest, MkdirRequest, MknodRequest,
    OpenWriteRequest, Owner, PublishRequest, RenameRequest, SetAttrRequest, SymlinkRequest,
    UnlinkResponse,
};
use dfs_proto::{ApiError, DfsPath, ErrorCode, FileId, ServerId, Version};

/// A blob that is no longer referenced and may be deleted from `server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Garbage {
    /// Fileserver holding it.
    pub server: ServerId,
    /// Its file.
    pub file_id: FileId,
    /// Its version.
    pub version: Version,
}

/// Permission bits only; file-type bits from a client are ignored.
const MODE_MASK: u32 = 0o7777;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
/// Longest symlink target accepted, as Linux's PATH_MAX less the NUL.
pub const MAX_TARGET: usize = 4095;

/// The node a new entry in `parent` gets: the caller's owner, except that under a setgid
/// directory it takes the directory's group (and a new directory inherits setgid), as POSIX
/// file systems do.
fn new_node(
    pid: FileId,
    parent: &Node,
    name: &str,
    kind: EntryKind,
    mode: u32,
    owner: Option<Owner>,
    now: i64,
) -> Node {
    let owner = owner.unwrap_or_default();
    let mut mode = mode & MODE_MASK;
    let mut gid = owner.gid;
    if parent.mode & S_ISGID != 0 {
        gid = parent.gid;
        if kind == EntryKind::Dir {
            mode |= S_ISGID;
        }
    }
    Node::new(pid, name, kind, mode, now).owned_by(owner.uid, gid)
}

fn err(code: ErrorCode, message: String) -> ApiError {
    ApiError::new(code, message)
}

/// Finds `path`: `not_found` when it or a parent is missing, `not_directory` when a parent is
/// a file.
pub fn resolve(r: &impl Read, path: &DfsPath) -> Result<(FileId, Node), ApiError> {
    let mut id = ROOT_ID;
    let mut node = r
        .node(ROOT_ID)?
        .ok_or_else(|| ApiError::internal("root directory missing"))?;
    let mut walked = DfsPath::root();
    for name in path.components() {
        if node.kind != EntryKind::Dir {
            return Err(err(
                ErrorCode::NotDirectory,
                format!("{walked} is not a directory"),
            ));
        }
        walked = walked.join(name)?;
        id = r.child(id, name)?.ok_or_else(|| {
            err(
                ErrorCode::NotFound,
                format!("no such file or directory: {walked}"),
            )
        })?;
        node = r
            .node(id)?
            .ok_or_else(|| ApiError::internal(format!("dangling entry {walked}")))?;
    }
    Ok((id, node))
}

/// Finds the directory that would contain `path`.
fn resolve_parent(r: &impl Read, path: &DfsPath) -> Result<(FileId, Node), ApiError> {
    let parent = path.parent();
    let (id, node) = resolve(r, &parent)?;
    if node.kind != EntryKind::Dir {
        return Err(err(
            ErrorCode::NotDirectory,
            format!("{parent} is not a directory"),
        ));
    }
    Ok((id, node))
}

/// The parent (id, node) of a path and the path's own (id, node) when it exists.
type Lookup = (FileId, Node, Option<(FileId, Node)>);

/// Looks `path` up when its parent exists; `None` when only the last component is missing.
fn lookup(r: &impl Read, path: &DfsPath) -> Result<Lookup, ApiError> {
    let (pid, parent) = resolve_parent(r, path)?;
    let child = match r.child(pid, path.name())? {
        Some(id) => {
            let node = r
                .node(id)?
                .ok_or_else(|| ApiError::internal(format!("dangling entry {path}")))?;
            Some((id, node))
        }
        None => None,
    };
    Ok((pid, parent, child))
}

/// The wire form of a node at `path`.
pub fn entry(path: &DfsPath, id: FileId, node: &Node, locations: Vec<String>) -> Entry {
    Entry {
        id,
        path: path.clone(),
        kind: node.kind,
        size: node.size,
        mode: node.mode,
        mtime_ns: node.mtime_ns,
        version: node.version,
        checksum: node.checksum,
        servers: node.servers.clone(),
        locations,
        uid: node.uid,
        gid: node.gid,
        atime_ns: Some(node.atime_ns),
        ctime_ns: Some(node.ctime_ns),
        nlink: if node.kind == EntryKind::Dir {
            2 + node.subdirs
        } else {
            node.names()
        },
        target: node.target.clone(),
        rdev: node.rdev,
        read_cap: None,
    }
}

/// A directory's entries changed: mtime and ctime move, and its subdirectory count by
/// `subdirs` (a directory added or removed below it).
fn touch_dir(
    t: &mut WriteTables<'_>,
    id: FileId,
    mut node: Node,
    subdirs: i64,
    now: i64,
) -> Result<(), ApiError> {
    node.mtime_ns = now;
    node.ctime_ns = now;
    node.subdirs = node.subdirs.saturating_add_signed(subdirs);
    t.put_node(id, &node)
}

/// Every blob the node's current version occupies.
fn garbage_of(id: FileId, node: &Node) -> Vec<Garbage> {
    if node.kind != EntryKind::File || node.version == 0 {
        return Vec::new();
    }
    node.servers
        .iter()
        .map(|s| Garbage {
            server: s.clone(),
            file_id: id,
            version: node.version,
        })
        .collect()
}

/// Creates a directory.
pub fn mkdir(t: &mut WriteTables<'_>, req: &MkdirRequest, now: i64) -> Result<Entry, ApiError> {
    if req.path.is_root() {
        return Err(err(ErrorCode::AlreadyExists, "/ already exists".into()));
    }
    let (pid, parent, existing) = lookup(t, &req.path)?;
    if existing.is_some() {
        return Err(err(
            ErrorCode::AlreadyExists,
            format!("{} already exists", req.path),
        ));
    }
    let id = t.next_id()?;
    let node = new_node(
        pid,
        &parent,
        req.path.name(),
        EntryKind::Dir,
        req.mode.unwrap_or(0o755),
        req.owner,
        now,
    );
    t.put_node(id, &node)?;
    t.put_child(pid, req.path.name(), id)?;
    touch_dir(t, pid, parent, 1, now)?;
    Ok(entry(&req.path, id, &node, Vec::new()))
}

/// Removes an empty directory.
pub fn rmdir(t: &mut WriteTables<'_>, path: &DfsPath, now: i64) -> Result<(), ApiError> {
    if path.is_root() {
        return Err(err(ErrorCode::Busy, "cannot remove /".into()));
    }
    let (pid, parent, existing) = lookup(t, path)?;
    let (id, node) =
        existing.ok_or_else(|| err(ErrorCode::NotFound, format!("no such directory: {path}")))?;
    if node.kind != EntryKind::Dir {
        return Err(err(
            ErrorCode::NotDirectory,
            format!("{path} is not a directory"),
        ));
    }
    if !t.children(id, None, 1)?.is_empty() {
        return Err(err(ErrorCode::NotEmpty, format!("{path} is not empty")));
    }
    t.remove_child(pid, path.name())?;
    t.remove_node(id)?;
    touch_dir(t, pid, parent, -1, now)
}

/// Creates an empty file, or returns the existing one unless `exclusive`.
pub fn create(t: &mut WriteTables<'_>, req: &CreateRequest, now: i64) -> Result<Entry, ApiError> {
    let (id, node) = create_file(t, &req.path, req.mode, req.exclusive, req.owner, now)?;
    Ok(entry(&req.path, id, &node, Vec::new()))
}

fn create_file(
    t: &mut WriteTables<'_>,
    path: &DfsPath,
    mode: Option<u32>,
    exclusive: bool,
    owner: Option<Owner>,
    now: i64,
) -> Result<(FileId, Node), ApiError> {
    if path.is_root() {
        let code = if exclusive {
            ErrorCode::AlreadyExists
        } else {
            ErrorCode::IsDirectory
        };
        return Err(err(code, "/ is a directory".into()));
    }
    let (pid, parent, existing) = lookup(t, path)?;
    if let Some((id, node)) = existing {
        if exclusive {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!("{path} already exists"),
            ));
        }
        if node.kind == EntryKind::Dir {
            return Err(err(
                ErrorCode::IsDirectory,
                format!("{path} is a directory"),
            ));
        }
        return Ok((id, node));
    }
    let id = t.next_id()?;
    let node = new_node(
        pid,
        &parent,
        path.name(),
        EntryKind::File,
        mode.unwrap_or(0o644),
        owner,
        now,
    );
    t.put_node(id, &node)?;
    t.put_child(pid, path.name(), id)?;
    touch_dir(t, pid, parent, 0, now)?;
    Ok((id, node))
}

/// Finds the free name `path` for a new entry: its parent (id, node), or `already_exists`.
fn free_name(t: &mut WriteTables<'_>, path: &DfsPath) -> Result<(FileId, Node), ApiError> {
    if path.is_root() {
        return Err(err(ErrorCode::AlreadyExists, "/ already exists".into()));
    }
    let (pid, parent, existing) = lookup(t, path)?;
    if existing.is_some() {
        return Err(err(
            ErrorCode::AlreadyExists,
            format!("{path} already exists"),
        ));
    }
    Ok((pid, parent))
}

/// Creates a symbolic link: a namespace entry holding its target, no blob.
pub fn symlink(t: &mut WriteTables<'_>, req: &SymlinkRequest, now: i64) -> Result<Entry, ApiError> {
    if req.target.is_empty() || req.target.len() > MAX_TARGET || req.target.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "a symlink target must be 1 to {MAX_TARGET} bytes without NUL"
        )));
    }
    let (pid, parent) = free_name(t, &req.path)?;
    let id = t.next_id()?;
    let mut node = new_node(
        pid,
        &parent,
        req.path.name(),
        EntryKind::Symlink,
        0o777,
        req.owner,
        now,
    );
    node.mode = 0o777;
    node.size = req.target.len() as u64;
    node.target = Some(req.target.clone());
    t.put_node(id, &node)?;
    t.put_child(pid, req.path.name(), id)?;
    touch_dir(t, pid, parent, 0, now)?;
    Ok(entry(&req.path, id, &node, Vec::new()))
}

/// Creates a FIFO, socket or device node: a namespace entry with no content.
pub fn mknod(t: &mut WriteTables<'_>, req: &MknodRequest, now: i64) -> Result<Entry, ApiError> {
    let devices = [EntryKind::CharDevice, EntryKind::BlockDevice];
    match req.kind {
        EntryKind::Fifo | EntryKind::Socket if req.rdev == 0 => {}
        EntryKind::Fifo | EntryKind::Socket => {
            return Err(ApiError::bad_request("rdev is only for device nodes"));
        }
        kind if devices.contains(&kind) => {}
        kind => {
            return Err(ApiError::bad_request(format!(
                "mknod makes fifo, socket, char_device or block_device, not {kind:?}"
            )));
        }
    }
    let (pid, parent) = free_name(t, &req.path)?;
    let id = t.next_id()?;
    let mut node = new_node(
        pid,
        &parent,
        req.path.name(),
        req.kind,
        req.mode,
        req.owner,
        now,
    );
    node.rdev = req.rdev;
    t.put_node(id, &node)?;
    t.put_child(pid, req.path.name(), id)?;
    touch_dir(t, pid, parent, 0, now)?;
    Ok(entry(&req.path, id, &node, Vec::new()))
}

/// Removes a file; returns its id (so a mount marks only the write of the file that was
/// really removed, not whatever it last knew under that name) and the blobs that became
/// garbage.
pub fn unlink(
    t: &mut WriteTables<'_>,
    path: &DfsPath,
    now: i64,
) -> Result<(UnlinkResponse, Vec<Garbage>), ApiError> {
    if path.is_root() {
        return Err(err(ErrorCode::IsDirectory, "/ is a directory".into()));
    }
    let (pid, parent, existing) = lookup(t, path)?;
    let (id, node) =
        existing.ok_or_else(|| err(ErrorCode::NotFound, format!("no such file: {path}")))?;
    if node.kind == EntryKind::Dir {
        return Err(err(
            ErrorCode::IsDirectory,
            format!("{path} is a directory"),
        ));
    }
    t.remove_child(pid, path.name())?;
    let (garbage, remaining) = forget_name(t, pid, path.name(), id, node, now)?;
    touch_dir(t, pid, parent, 0, now)?;
    let reply = match remaining {
        Some(node) => UnlinkResponse {
            id: Some(id),
            nlink: node.names(),
            remaining: Some(path_of(t, id, &node)?),
        },
        None => UnlinkResponse {
            id: Some(id),
            nlink: 0,
            remaining: None,
        },
    };
    Ok((reply, garbage))
}

/// Removes the name (`pid`, `name`) of node `id` from the node: a file with other names
/// keeps them (and its content; ctime moves), the last name takes the node and makes its
/// content garbage. The directory entry itself is the caller's to remove or replace.
fn forget_name(
    t: &mut WriteTables<'_>,
    pid: FileId,
    name: &str,
    id: FileId,
    mut node: Node,
    now: i64,
) -> Result<(Vec<Garbage>, Option<Node>), ApiError> {
    if node.drop_name(pid, name) {
        node.ctime_ns = now;
        t.put_node(id, &node)?;
        return Ok((Vec::new(), Some(node)));
    }
    t.remove_node(id)?;
    Ok((garbage_of(id, &node), None))
}

/// Most names one file may have (`EMLINK` beyond), so that one node stays small.
pub const MAX_LINKS: usize = 1000;

/// Gives the existing non-directory at `req.path` one more name, `req.new_path` (link(2)).
pub fn link(t: &mut WriteTables<'_>, req: &LinkRequest, now: i64) -> Result<Entry, ApiError> {
    let (id, mut node) = resolve(t, &req.path)?;
    if node.kind == EntryKind::Dir {
        return Err(err(
            ErrorCode::NotPermitted,
            format!(
                "{} is a directory: directories have no hard links",
                req.path
            ),
        ));
    }
    if node.links.len() + 1 >= MAX_LINKS {
        return Err(err(
            ErrorCode::TooManyLinks,
            format!("{} has {MAX_LINKS} names already", req.path),
        ));
    }
    let (pid, parent) = free_name(t, &req.new_path)?;
    t.put_child(pid, req.new_path.name(), id)?;
    node.links.push((pid, req.new_path.name().to_owned()));
    node.ctime_ns = now;
    t.put_node(id, &node)?;
    touch_dir(t, pid, parent, 0, now)?;
    Ok(entry(&req.new_path, id, &node, Vec::new()))
}

/// Renames atomically (files and whole directory trees); returns the moved entry and the blobs
/// of a replaced file.
pub fn rename(
    t: &mut WriteTables<'_>,
    req: &RenameRequest,
    now: i64,
) -> Result<(Entry, Vec<Garbage>), ApiError> {
    let (from, to) = (&req.from, &req.to);
    if from.is_root() || to.is_root() {
        return Err(err(ErrorCode::InvalidMove, "cannot rename /".into()));
    }
    let (src_pid, _, src) = lookup(t, from)?;
    let (src_id, mut src_node) = src.ok_or_else(|| {
        err(
            ErrorCode::NotFound,
            format!("no such file or directory: {from}"),
        )
    })?;
    if req.exchange {
        return exchange(t, req, src_pid, src_id, src_node, now).map(|e| (e, Vec::new()));
    }
    if from == to {
        return Ok((entry(to, src_id, &src_node, Vec::new()), Vec::new()));
    }
    if src_node.kind == EntryKind::Dir && to.starts_with(from) {
        return Err(err(
            ErrorCode::InvalidMove,
            format!("cannot move {from} into its own subtree {to}"),
        ));
    }
    let (dst_pid, _, dst) = lookup(t, to)?;
    let mut garbage = Vec::new();
    if let Some((dst_id, dst_node)) = dst {
        if dst_id == src_id && !req.no_replace {
            // Two names of one file: rename(2) does nothing and succeeds.
            return Ok((entry(to, src_id, &src_node, Vec::new()), Vec::new()));
        }
        if req.no_replace {
            return Err(err(
                ErrorCode::AlreadyExists,
                format!("{to} already exists"),
            ));
        }
        let (src_dir, dst_dir) = (
            src_node.kind == EntryKind::Dir,
            dst_node.kind == EntryKind::Dir,
        );
        match (src_dir, dst_dir) {
            (true, false) => {
                return Err(err(
                    ErrorCode::NotDirectory,
                    format!("{to} is not a directory"),
                ));
            }
            (false, true) => {
                return Err(err(ErrorCode::IsDirectory, format!("{to} is a directory")));
            }
            (true, true) => {
                if !t.children(dst_id, None, 1)?.is_empty() {
                    return Err(err(ErrorCode::NotEmpty, format!("{to} is not empty")));
                }
            }
            (false, false) => {}
        }
        if dst_dir {
            // The replaced directory leaves the destination; the moved one arrives below.
            if let Some(parent) = t.node(dst_pid)? {
                touch_dir(t, dst_pid, parent, -1, now)?;
            }
            t.remove_node(dst_id)?;
        } else {
            garbage = forget_name(t, dst_pid, to.name(), dst_id, dst_node, now)?.0;
        }
    }
    t.remove_child(src_pid, from.name())?;
    t.put_child(dst_pid, to.name(), src_id)?;
    src_node.rename_name((src_pid, from.name()), (dst_pid, to.name()));
    src_node.ctime_ns = now;
    t.put_node(src_id, &src_node)?;
    let moved = i64::from(src_node.kind == EntryKind::Dir);
    // Re-read the parents: they may be the same directory, or one may have been rewritten above.
    if src_pid == dst_pid {
        if let Some(parent) = t.node(src_pid)? {
            touch_dir(t, src_pid, parent, 0, now)?;
        }
    } else {
        for (pid, delta) in [(src_pid, -moved), (dst_pid, moved)] {
            if let Some(parent) = t.node(pid)? {
                touch_dir(t, pid, parent, delta, now)?;
            }
        }
    }
    Ok((entry(to, src_id, &src_node, Vec::new()), garbage))
}

/// RENAME_EXCHANGE: swaps the entries of `req.from` (already looked up) and `req.to` in one
/// transaction; both must exist, of any kinds, and neither may contain the other.
fn exchange(
    t: &mut WriteTables<'_>,
    req: &RenameRequest,
    src_pid: FileId,
    src_id: FileId,
    mut src_node: Node,
    now: i64,
) -> Result<Entry, ApiError> {
    let (from, to) = (&req.from, &req.to);
    if req.no_replace {
        return Err(ApiError::bad_request(
            "exchange and no_replace exclude each other",
        ));
    }
    let (dst_pid, _, dst) = lookup(t, to)?;
    let (dst_id, mut dst_node) = dst.ok_or_else(|| {
        err(
            ErrorCode::NotFound,
            format!("no such file or directory: {to}"),
        )
    })?;
    if from == to {
        return Ok(entry(to, src_id, &src_node, Vec::new()));
    }
    if to.starts_with(from) || from.starts_with(to) {
        return Err(err(
            ErrorCode::InvalidMove,
            format!("cannot exchange {from} with a path inside it or containing it ({to})"),
        ));
    }
    // A directory that changes parents moves one subdirectory count with it.
    let dirs = |n: &Node| i64::from(n.kind == EntryKind::Dir);
    let src_delta = dirs(&dst_node) - dirs(&src_node);
    if dst_id == src_id {
        // Two names of one file: swapping them changes nothing.
        return Ok(entry(to, src_id, &src_node, Vec::new()));
    }
    t.put_child(src_pid, from.name(), dst_id)?;
    t.put_child(dst_pid, to.name(), src_id)?;
    dst_node.rename_name((dst_pid, to.name()), (src_pid, from.name()));
    t.put_node(dst_id, &dst_node)?;
    src_node.rename_name((src_pid, from.name()), (dst_pid, to.name()));
    t.put_node(src_id, &src_node)?;
    let moves = if src_pid == dst_pid {
        vec![(src_pid, 0)]
    } else {
        vec![(src_pid, src_delta), (dst_pid, -src_delta)]
    };
    for (pid, delta) in moves {
        if let Some(parent) = t.node(pid)? {
            touch_dir(t, pid, parent, delta, now)?;
        }
    }
    Ok(entry(to, src_id, &src_node, Vec::new()))
}

/// Changes mode, owner and times; every change moves ctime. A change of owner or group
/// without an explicit mode clears setuid, and setgid when group-executable, as chown(2)
/// does (the kernel sends the mode it wants when it decided itself). The caller's right to
/// the change is the mount's to check (the kernel's `default_permissions`): the servers trust
/// the uid it sends, as NFS servers trust AUTH_SYS.
pub fn setattr(
    t: &mut WriteTables<'_>,
    req: &SetAttrRequest,
    now: i64,
) -> Result<(FileId, Node), ApiError> {
    let (id, mut node) = resolve(t, &req.path)?;
    let chown = req.uid.is_some_and(|u| u != node.uid) || req.gid.is_some_and(|g| g != node.gid);
    if let Some(uid) = req.uid {
        node.uid = uid;
    }
    if let Some(gid) = req.gid {
        node.gid = gid;
    }
    if let Some(mode) = req.mode {
        node.mode = mode & MODE_MASK;
    } else if (chown && node.kind != EntryKind::Dir) || req.kill_suid {
        node.mode &= !S_ISUID;
        if node.mode & 0o010 != 0 {
            node.mode &= !S_ISGID;
        }
    }
    if let Some(mtime) = req.mtime_ns {
        node.mtime_ns = mtime;
    }
    if let Some(atime) = req.atime_ns {
        node.atime_ns = atime;
    }
    if !req.access {
        node.ctime_ns = now;
    }
    t.put_node(id, &node)?;
    Ok((id, node))
}

/// Registers a writer: creates the file if asked, refuses a token lower than one seen, and
/// durably records the token as the file's highest.
pub fn open_write(
    t: &mut WriteTables<'_>,
    req: &OpenWriteRequest,
    now: i64,
) -> Result<(FileId, Node), ApiError> {
    let (id, mut node) = match req.create {
        Some(mode) => create_file(t, &req.path, Some(mode), req.exclusive, req.owner, now)?,
        None => resolve(t, &req.path)?,
    };
    not_content(&req.path, &node)?;
    if req.token < node.token {
        return Err(err(
            ErrorCode::Fenced,
            format!(
                "token {} is lower than {} already seen for {}",
                req.token, node.token, req.path
            ),
        ));
    }
    if req.token > node.token {
        node.token = req.token;
        t.put_node(id, &node)?;
    }
    Ok((id, node))
}

/// Refuses to write content to anything but a regular file.
fn not_content(path: &DfsPath, node: &Node) -> Result<(), ApiError> {
    match node.kind {
        EntryKind::File => Ok(()),
        EntryKind::Dir => Err(err(
            ErrorCode::IsDirectory,
            format!("{path} is a directory"),
        )),
        kind => Err(ApiError::bad_request(format!(
            "{path} is a {kind:?}, not a regular file: it has no content to write"
        ))),
    }
}

/// Finds a file by id, wherever it is now: a publish follows its file, not the name it was
/// opened under, so a rename on another mount while it is written does not lose the write.
pub fn resolve_id(r: &impl Read, id: FileId) -> Result<(Node, DfsPath), ApiError> {
    let node = r.node(id)?.ok_or_else(|| {
        err(
            ErrorCode::NotFound,
            format!("file {id} was removed while it was written"),
        )
    })?;
    let path = path_of(r, id, &node)?;
    Ok((node, path))
}

/// The answer to an open-write that would change nothing durable: no `create`, the token is
/// already the file's highest, and placement needs no new `/` mapping. `None` when a write
/// transaction is needed (or the request will fail there). Lets a writer re-ask for targets
/// (with `exclude`) as often as it needs without a commit each time.
pub fn open_write_unchanged(
    r: &impl Read,
    req: &OpenWriteRequest,
    live: &[Live],
    default_replication: u32,
) -> Result<Option<(FileId, Node, Vec<FileserverRef>)>, ApiError> {
    if req.create.is_some() {
        return Ok(None);
    }
    let (id, node) = resolve(r, &req.path)?;
    if node.kind != EntryKind::File || node.token != req.token {
        return Ok(None);
    }
    let plan = placement::plan(&r.dirmap()?, live, &req.path, default_replication);
    if plan.root_update.is_some() {
        return Ok(None);
    }
    Ok(Some((id, node, plan.targets)))
}

/// Makes an uploaded version current, atomically; returns the node, its current path and
/// the blobs of the replaced version. The file is found by `req.file_id` (the path is only
/// informational), so it is published under its current name. `known` says whether a
/// server id is registered.
pub fn publish(
    t: &mut WriteTables<'_>,
    req: &PublishRequest,
    min_replicas: u32,
    known: impl Fn(&str) -> bool,
    now: i64,
) -> Result<(FileId, Node, DfsPath, Vec<Garbage>), ApiError> {
    let id = req.file_id;
    let (mut node, path) = resolve_id(t, id)?;
    not_content(&path, &node)?;
    if req.token < node.token {
        return Err(err(
            ErrorCode::Fenced,
            format!(
                "token {} is lower than {} already seen for {path}",
                req.token, node.token
            ),
        ));
    }
    if node.version == req.version && node.checksum == req.checksum && node.size == req.size {
        // A retry of a publish whose reply was lost: exactly one version exists.
        return Ok((id, node, path, Vec::new()));
    }
    if req.base_version != node.version {
        return Err(err(
            ErrorCode::Stale,
            format!(
                "base version {} of {path} is not current (now {})",
                req.base_version, node.version
            ),
        ));
    }
    if req.version <= node.version {
        return Err(err(
            ErrorCode::Stale,
            format!(
                "version {} of {path} is not newer than the current {}",
                req.version, node.version
            ),
        ));
    }
    let mut servers: Vec<ServerId> = Vec::new();
    for s in &req.servers {
        if !known(s) {
            return Err(ApiError::bad_request(format!("unknown fileserver {s:?}")));
        }
        if !servers.contains(s) {
            servers.push(s.clone());
        }
    }
    if req.size > 0 {
        if servers.is_empty() {
            return Err(ApiError::bad_request(
                "a non-empty version needs at least one fileserver",
            ));
        }
        if (servers.len() as u64) < u64::from(min_replicas) {
            return Err(ApiError::unavailable(format!(
                "only {} fileservers acknowledged, {min_replicas} required",
                servers.len()
            )));
        }
    }
    let garbage = garbage_of(id, &node);
    node.size = req.size;
    node.checksum = req.checksum;
    node.version = req.version;
    node.servers = servers;
    node.mtime_ns = req.mtime_ns.unwrap_or(now);
    node.ctime_ns = now;
    node.token = node.token.max(req.token);
    t.put_node(id, &node)?;
    Ok((id, node, path, garbage))
}

/// One page of a directory, in name order; `next_after` is set when more may follow.
pub fn list(
    r: &impl Read,
    path: &DfsPath,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Entry>, Option<String>), ApiError> {
    let (id, node) = resolve(r, path)?;
    if node.kind != EntryKind::Dir {
        return Err(err(
            ErrorCode::NotDirectory,
            format!("{path} is not a directory"),
        ));
    }
    let page = r.children(id, after, limit + 1)?;
    let more = page.len() > limit;
    let mut entries = Vec::with_capacity(page.len().min(limit));
    for (name, child) in page.into_iter().take(limit) {
        let node = r
            .node(child)?
            .ok_or_else(|| ApiError::internal(format!("dangling entry {name} in {path}")))?;
        let child_path = path.join(&name).map_err(super::store::internal)?;
        entries.push(entry(&child_path, child, &node, Vec::new()));
    }
    let next = if more {
        entries.last().map(|e| e.path.name().to_owned())
    } else {
        None
    };
    Ok((entries, next))
}

/// The full path of node `id`, by walking parents (for scans that start from ids).
pub fn path_of(r: &impl Read, id: FileId, node: &Node) -> Result<DfsPath, ApiError> {
    let mut names = vec![node.name.clone()];
    let mut parent = node.parent;
    let mut depth = 0;
    while parent != ROOT_ID && parent != 0 {
        let p = r
            .node(parent)?
            .ok_or_else(|| ApiError::internal(format!("node {id} has a dangling parent")))?;
        names.push(p.name.clone());
        parent = p.parent;
        depth += 1;
        if depth > 4096 {
            return Err(ApiError::internal(format!("node {id} has a parent cycle")));
        }
    }
    if id == ROOT_ID {
        return Ok(DfsPath::root());
    }
    let mut path = DfsPath::root();
    for name in names.iter().rev() {
        path = path.join(name).map_err(super::store::internal)?;
    }
    Ok(path)
}
