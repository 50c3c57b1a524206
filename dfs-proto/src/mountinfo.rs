//! Whether a directory is currently a mount point, read from `/proc/self/mountinfo`: the one
//! readiness check shared by `dfs up`, the test harness and the benchmark.

use std::path::Path;

/// True when `dir` appears as a mount point in `/proc/self/mountinfo`.
pub fn is_mounted(dir: &Path) -> bool {
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = escape(&dir.to_string_lossy());
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_mounted_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/")));
        let dir = std::env::temp_dir().join(format!("dfs-mi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!is_mounted(&dir));
        std::fs::remove_dir(&dir).unwrap();
        assert_eq!(escape("/a b\\c"), "/a\\040b\\134c");
    }
}
