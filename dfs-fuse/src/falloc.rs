//! `fallocate(2)` on a local dirty copy, with a portable fallback for cache directories on a
//! file system that does not offer it (the result reads the same; only the disk reservation
//! is lost).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// Applies `mode` (0, `FALLOC_FL_KEEP_SIZE`, or `FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE`)
/// to `file` over `offset..offset+length`.
pub fn apply(file: &File, mode: i32, offset: u64, length: u64) -> std::io::Result<()> {
    let (off, len) = match (i64::try_from(offset), i64::try_from(length)) {
        (Ok(o), Ok(l)) => (o, l),
        _ => return Err(std::io::Error::from_raw_os_error(libc::EFBIG)),
    };
    // SAFETY: a plain syscall on a descriptor `file` keeps open for the call's duration.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, off, len) };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(err);
    }
    let size = file.metadata()?.len();
    let end = offset + length;
    if mode & libc::FALLOC_FL_PUNCH_HOLE != 0 {
        // Zeros over the part of the range inside the file, in bounded chunks.
        let zeros = vec![0u8; 1 << 20];
        let mut at = offset;
        while at < end.min(size) {
            let n = (end.min(size) - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
    } else if mode & libc::FALLOC_FL_KEEP_SIZE == 0 && end > size {
        file.set_len(end)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn modes_change_size_and_content_as_linux_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all_at(&[7u8; 100], 0).unwrap();
        apply(&file, 0, 50, 150).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 200);
        apply(&file, libc::FALLOC_FL_KEEP_SIZE, 0, 1000).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 200);
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        apply(&file, punch, 10, 20).unwrap();
        let mut data = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(data.len(), 200);
        assert_eq!(&data[..10], &[7u8; 10]);
        assert_eq!(&data[10..30], &[0u8; 20]);
        assert_eq!(&data[30..100], &[7u8; 70]);
        assert!(data[100..].iter().all(|b| *b == 0));
    }
}
