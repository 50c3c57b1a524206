//! Raw POSIX file operations the mount tests need beyond `std::fs`: `open(2)` with exact
//! flags, `close(2)` with its result, positioned I/O, `mmap` in a child process (so a SIGBUS
//! fails a test instead of killing the test binary), and work in a separate process.
//!
//! Two kinds of child process, because on DFS every `close()` of a descriptor is a FUSE
//! `flush` that publishes:
//! - [`in_child_sharing_fds`] (`clone(CLONE_FILES)`): shares this process's descriptor table,
//!   so its exit closes nothing and sends no flush. For mmap reads and writes.
//! - [`in_forked_child`] (`fork`): a separate process with copies of every descriptor; its
//!   exit closes them (a flush for each, which publishes the changes of writable ones, as any
//!   forked child of a real program would).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The page size `mmap` offsets are aligned to.
pub const PAGE: usize = 4096;

/// `open(2)` with exactly `flags` (plus `O_CLOEXEC`), mode 0644 when it creates.
pub fn open(path: &Path, flags: i32) -> io::Result<File> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL byte in a test path");
    // SAFETY: `c` is a valid NUL-terminated string; open(2) has no other preconditions.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `close(2)` with its result, which dropping a `File` throws away.
pub fn close(file: File) -> io::Result<()> {
    let fd = file.into_raw_fd();
    // SAFETY: `fd` was just taken out of a `File`, so it is open and owned by nobody else.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `pread(2)` until `len` bytes or end of file; a short result means EOF came first.
pub fn pread(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

/// `pwrite(2)` of all of `data` at `offset`.
pub fn pwrite(file: &File, offset: u64, data: &[u8]) -> io::Result<()> {
    file.write_all_at(data, offset)
}

/// `fstat(2)` size.
pub fn fstat_size(file: &File) -> io::Result<u64> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer and the descriptor is open.
    if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.st_size as u64)
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// Exited with this code.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

/// A signal's name for messages (`SIGBUS`, ...).
pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGABRT => "SIGABRT".into(),
        other => format!("signal {other}"),
    }
}

fn wait_child(pid: libc::pid_t) -> ChildEnd {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        assert_eq!(
            err.kind(),
            io::ErrorKind::Interrupted,
            "waitpid({pid}): {err}"
        );
    }
    if libc::WIFSIGNALED(status) {
        ChildEnd::Signaled(libc::WTERMSIG(status))
    } else {
        ChildEnd::Exited(libc::WEXITSTATUS(status))
    }
}

/// Runs `f` in a child process that shares this process's descriptor table
/// (`clone(CLONE_FILES)`) but has its own copy of the memory: a SIGBUS or SIGSEGV kills only
/// the child, and its exit closes no descriptor (no FUSE flush). `f`'s result is the exit
/// code. `f` must not allocate, lock or print: other threads may hold those locks at the
/// clone. Pass results back through a [`SharedBuf`].
pub fn in_child_sharing_fds(f: impl FnOnce() -> i32) -> ChildEnd {
    // SAFETY: a raw clone without CLONE_VM returns twice like fork; the child only runs `f`
    // (which by contract touches no lock) and `_exit`s.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_FILES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        panic!("clone(CLONE_FILES): {}", io::Error::last_os_error());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running any of the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    wait_child(pid as libc::pid_t)
}

/// Runs `f` in a forked child (its own copy of every descriptor; its exit closes them, a
/// FUSE flush each). `f`'s result is the exit code; it should avoid printing.
pub fn in_forked_child(f: impl FnOnce() -> i32) -> ChildEnd {
    // SAFETY: the child runs `f` and `_exit`s; glibc's fork keeps malloc usable in the child.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        panic!("fork: {}", io::Error::last_os_error());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running any of the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    wait_child(pid)
}

/// The errno of the last failed call, as an exit code for a child.
pub fn errno_code() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(255)
}

/// Anonymous `MAP_SHARED` memory: what a child writes here, the parent sees.
pub struct SharedBuf {
    ptr: *mut u8,
    len: usize,
}

impl SharedBuf {
    /// `len` zeroed bytes shared with children created after this call.
    pub fn new(len: usize) -> SharedBuf {
        let len = len.max(1);
        // SAFETY: an anonymous mapping with no address hint.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            ptr != libc::MAP_FAILED,
            "mmap anonymous: {}",
            io::Error::last_os_error()
        );
        SharedBuf {
            ptr: ptr as *mut u8,
            len,
        }
    }

    /// The raw pointer (for the child).
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// A copy of the first `n` bytes.
    pub fn to_vec(&self, n: usize) -> Vec<u8> {
        assert!(n <= self.len);
        // SAFETY: `ptr` is valid for `len` bytes and no child runs while the parent reads.
        unsafe { std::slice::from_raw_parts(self.ptr, n).to_vec() }
    }

    /// The u64 stored at byte `at` (a child's progress counter).
    pub fn u64_at(&self, at: usize) -> u64 {
        assert!(at + 8 <= self.len);
        // SAFETY: in bounds; unaligned read of plain bytes.
        unsafe { std::ptr::read_unaligned(self.ptr.add(at) as *const u64) }
    }
}

impl Drop for SharedBuf {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped.
        unsafe {
            libc::munmap(self.ptr as *mut libc::c_void, self.len);
        }
    }
}

/// Reads the first `len` bytes of `file` through a `MAP_SHARED` mapping, in a child
/// ([`in_child_sharing_fds`]) so a SIGBUS fails the caller with a message (which signal, and
/// how many bytes were read before it) instead of killing the test binary.
pub fn mmap_read(file: &File, len: usize) -> Result<Vec<u8>, String> {
    if len == 0 {
        return Ok(Vec::new());
    }
    // Layout: [0..8) progress, [8..8+len) the bytes.
    let shared = SharedBuf::new(len + 8);
    let fd = file.as_raw_fd();
    let base = shared.ptr();
    let end = in_child_sharing_fds(|| {
        // SAFETY: maps `len` bytes of an open descriptor; copies page by page into the shared
        // buffer, which is valid for `len + 8` bytes; no allocation.
        unsafe {
            let map = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if map == libc::MAP_FAILED {
                return errno_code();
            }
            let src = map as *const u8;
            let mut at = 0;
            while at < len {
                let n = PAGE.min(len - at);
                std::ptr::copy_nonoverlapping(src.add(at), base.add(8 + at), n);
                at += n;
                std::ptr::write_unaligned(base as *mut u64, at as u64);
            }
            libc::munmap(map, len);
        }
        0
    });
    match end {
        ChildEnd::Exited(0) => Ok(shared.to_vec(len + 8)[8..].to_vec()),
        ChildEnd::Exited(code) => Err(format!(
            "mmap(PROT_READ, MAP_SHARED) of {len} bytes failed: {}",
            io::Error::from_raw_os_error(code)
        )),
        ChildEnd::Signaled(sig) => Err(format!(
            "reading a {len}-byte MAP_SHARED mapping was killed by {} after {} bytes",
            signal_name(sig),
            shared.u64_at(0)
        )),
    }
}

/// Writes `data` at `offset` through a `MAP_SHARED` read-write mapping of the first
/// `map_len` bytes of `file` (opened `O_RDWR`), then `msync(MS_SYNC)` and `munmap`, in a
/// child ([`in_child_sharing_fds`]). `offset + data.len()` must be within `map_len`.
pub fn mmap_write(file: &File, map_len: usize, offset: usize, data: &[u8]) -> Result<(), String> {
    assert!(offset + data.len() <= map_len, "write outside the mapping");
    // [0..8): the step that failed (1 mmap, 2 msync, 3 munmap).
    let shared = SharedBuf::new(8);
    let step = shared.ptr() as *mut u64;
    let fd = file.as_raw_fd();
    let end = in_child_sharing_fds(|| {
        // SAFETY: maps `map_len` bytes of an open descriptor and writes inside the mapping.
        unsafe {
            std::ptr::write_unaligned(step, 1);
            let map = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            if map == libc::MAP_FAILED {
                return errno_code();
            }
            std::ptr::copy_nonoverlapping(data.as_ptr(), (map as *mut u8).add(offset), data.len());
            std::ptr::write_unaligned(step, 2);
            if libc::msync(map, map_len, libc::MS_SYNC) != 0 {
                return errno_code();
            }
            std::ptr::write_unaligned(step, 3);
            if libc::munmap(map, map_len) != 0 {
                return errno_code();
            }
        }
        0
    });
    let step = match shared.u64_at(0) {
        1 => "mmap",
        2 => "msync/writing the mapping",
        _ => "munmap",
    };
    match end {
        ChildEnd::Exited(0) => Ok(()),
        ChildEnd::Exited(code) => Err(format!(
            "{step} of a {map_len}-byte MAP_SHARED read-write mapping failed: {}",
            io::Error::from_raw_os_error(code)
        )),
        ChildEnd::Signaled(sig) => Err(format!(
            "the child writing a {map_len}-byte MAP_SHARED mapping was killed by {} in {step}",
            signal_name(sig)
        )),
    }
}

/// In a separate, forked process ([`in_forked_child`]): `open(path, flags)`, write all of
/// `data` (at the descriptor's offset), `close()`. `Err` says which call failed and its errno.
pub fn write_in_child_process(path: &Path, flags: i32, data: &[u8]) -> Result<(), String> {
    let c = CString::new(path.as_os_str().as_bytes()).expect("no NUL byte in a test path");
    // [0..8): the step that failed (1 open, 2 write, 3 close); [8..16): its errno.
    let shared = SharedBuf::new(16);
    let out = shared.ptr() as *mut u64;
    let fail = |step: u64| {
        let errno = errno_code();
        // SAFETY: `out` points at 16 bytes of shared memory.
        unsafe {
            std::ptr::write_unaligned(out, step);
            std::ptr::write_unaligned(out.add(1), errno as u64);
        }
        1
    };
    let end = in_forked_child(|| {
        // SAFETY: plain syscalls on a valid path and buffer; no allocation.
        unsafe {
            let fd = libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint);
            if fd < 0 {
                return fail(1);
            }
            let mut done = 0;
            while done < data.len() {
                let n = libc::write(
                    fd,
                    data[done..].as_ptr() as *const libc::c_void,
                    data.len() - done,
                );
                if n < 0 {
                    return fail(2);
                }
                done += n as usize;
            }
            if libc::close(fd) != 0 {
                return fail(3);
            }
        }
        0
    });
    match end {
        ChildEnd::Exited(0) => Ok(()),
        ChildEnd::Exited(_) => {
            let step = match shared.u64_at(0) {
                1 => "open",
                2 => "write",
                _ => "close",
            };
            Err(format!(
                "{step}() in the child process failed: {}",
                io::Error::from_raw_os_error(shared.u64_at(8) as i32)
            ))
        }
        ChildEnd::Signaled(sig) => Err(format!(
            "the writing child process was killed by {}",
            signal_name(sig)
        )),
    }
}

/// A short description of `bytes` for failure messages: the length and its first runs of
/// equal bytes (`12288 bytes: 'a'x4096 'b'x8192`).
pub fn describe(bytes: &[u8]) -> String {
    let mut runs: Vec<(u8, usize)> = Vec::new();
    for &b in bytes {
        match runs.last_mut() {
            Some((last, n)) if *last == b => *n += 1,
            _ => runs.push((b, 1)),
        }
    }
    let shown: Vec<String> = runs
        .iter()
        .take(6)
        .map(|(b, n)| {
            if b.is_ascii_graphic() || *b == b' ' {
                format!("{:?}x{n}", *b as char)
            } else {
                format!("0x{b:02x}x{n}")
            }
        })
        .collect();
    let more = if runs.len() > 6 {
        format!(" ... ({} runs)", runs.len())
    } else {
        String::new()
    };
    format!("{} bytes: {}{more}", bytes.len(), shown.join(" "))
}
