//! Extended attributes of files and directories: pure logic over one store transaction, with
//! the limits of `dfs_proto::xattr` (255-byte names, 64 KiB values, 256 KiB per inode).

use super::namespace::resolve;
use super::store::{Read, WriteTables};
use dfs_proto::names::{Entry, RemoveXattrRequest, SetXattrRequest};
use dfs_proto::xattr::{validate_name, SetMode, MAX_LIST, MAX_TOTAL, MAX_VALUE};
use dfs_proto::{ApiError, DfsPath, ErrorCode};

fn no_data(path: &DfsPath, name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NoData,
        format!("{path} has no attribute {name:?}"),
    )
}

/// The names among `entries` (one listing page) that have extended attributes.
pub fn marked(r: &impl Read, entries: &[Entry]) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for e in entries {
        if r.has_xattrs(e.id)? {
            out.push(e.path.name().to_owned());
        }
    }
    Ok(out)
}

/// The attribute names of `path`, sorted.
pub fn list(r: &impl Read, path: &DfsPath) -> Result<Vec<String>, ApiError> {
    let (id, _) = resolve(r, path)?;
    Ok(r.xattr_sizes(id)?
        .into_iter()
        .map(|(name, _)| name)
        .collect())
}

/// One attribute's value; `no_data` when `path` has none by that name.
pub fn get(r: &impl Read, path: &DfsPath, name: &str) -> Result<Vec<u8>, ApiError> {
    validate_name(name)?;
    let (id, _) = resolve(r, path)?;
    r.xattr(id, name)?.ok_or_else(|| no_data(path, name))
}

/// Sets an attribute, honouring create/replace; `no_space` when the inode's attributes would
/// outgrow their bound (as ext4 answers when its attribute block is full).
pub fn set(t: &mut WriteTables<'_>, req: &SetXattrRequest) -> Result<(), ApiError> {
    validate_name(&req.name)?;
    if req.value.0.len() > MAX_VALUE {
        return Err(ApiError::new(
            ErrorCode::TooBig,
            format!(
                "attribute value is {} bytes, at most {MAX_VALUE}",
                req.value.0.len()
            ),
        ));
    }
    let (id, _) = resolve(t, &req.path)?;
    let others: Vec<(String, usize)> = t
        .xattr_sizes(id)?
        .into_iter()
        .filter(|(name, _)| name != &req.name)
        .collect();
    let exists = t.xattr(id, &req.name)?.is_some();
    match (req.mode, exists) {
        (SetMode::Create, true) => {
            return Err(ApiError::new(
                ErrorCode::AlreadyExists,
                format!("{} already has attribute {:?}", req.path, req.name),
            ))
        }
        (SetMode::Replace, false) => return Err(no_data(&req.path, &req.name)),
        _ => {}
    }
    let list: usize = others.iter().map(|(n, _)| n.len() + 1).sum::<usize>() + req.name.len() + 1;
    let total: usize =
        others.iter().map(|(n, v)| n.len() + v).sum::<usize>() + req.name.len() + req.value.0.len();
    if list > MAX_LIST || total > MAX_TOTAL {
        return Err(ApiError::new(
            ErrorCode::NoSpace,
            format!(
                "{}'s attributes would take {total} bytes ({list} of names); at most \
                 {MAX_TOTAL} ({MAX_LIST} of names)",
                req.path
            ),
        ));
    }
    t.put_xattr(id, &req.name, &req.value.0)
}

/// Removes an attribute; `no_data` when it does not exist.
pub fn remove(t: &mut WriteTables<'_>, req: &RemoveXattrRequest) -> Result<(), ApiError> {
    validate_name(&req.name)?;
    let (id, _) = resolve(t, &req.path)?;
    if t.remove_xattr(id, &req.name)? {
        Ok(())
    } else {
        Err(no_data(&req.path, &req.name))
    }
}
