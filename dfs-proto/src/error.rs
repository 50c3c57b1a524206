//! The one error vocabulary: each [`ErrorCode`] has one HTTP status and one errno.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a request failed, as every part of DFS names it.
///
/// The wire form is snake_case (`"not_found"`); the mount turns it into [`ErrorCode::errno`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, wrong types, missing fields, bad query strings.
    BadRequest,
    /// A path that failed validation (empty, `..`, NUL, control characters, not absolute).
    InvalidPath,
    /// A path component over 255 bytes or a path over 4096 bytes.
    NameTooLong,
    /// The path, file, version or lease does not exist.
    NotFound,
    /// The target already exists (mkdir, exclusive create, rename with no-replace).
    AlreadyExists,
    /// rmdir of a directory that still has entries, or rename over a non-empty directory.
    NotEmpty,
    /// A file operation on a directory.
    IsDirectory,
    /// A directory operation on a file, or a path whose parent is a file.
    NotDirectory,
    /// Another client holds the write lease.
    Busy,
    /// The writer's base version is no longer current: someone else published first.
    Stale,
    /// The writer's fencing token is lower than one the nameserver has already seen.
    Fenced,
    /// The lease ran out (or was never granted to this client).
    LeaseExpired,
    /// The uploaded bytes do not match the announced checksum or length.
    ChecksumMismatch,
    /// The body is larger than the server accepts.
    PayloadTooLarge,
    /// Renaming a directory into its own subtree.
    InvalidMove,
    /// The endpoint exists but not with this HTTP method.
    MethodNotAllowed,
    /// No credential, or one the server cannot verify (bad signature, revoked, malformed).
    Unauthenticated,
    /// A valid credential without the right for this request (a read-only key writing, a
    /// client key on a server-only endpoint, a capability for another blob).
    Forbidden,
    /// No live fileserver can take the data, or the disk is full.
    NoSpace,
    /// A server this request depends on is unreachable; retrying later may work.
    Unavailable,
    /// A bug or an I/O failure on the server; never caused by bad input.
    Internal,
    /// The extended attribute does not exist (ENODATA).
    NoData,
    /// An extended attribute name over 255 bytes (ERANGE, as the kernel answers).
    OutOfRange,
    /// An extended attribute value over 64 KiB (E2BIG).
    TooBig,
    /// A feature the file system does not offer, such as an unknown attribute namespace
    /// (EOPNOTSUPP).
    NotSupported,
    /// An operation the file system never allows on this kind of entry, such as a hard
    /// link to a directory (EPERM).
    NotPermitted,
    /// A file already has the most names (hard links) it may have (EMLINK).
    TooManyLinks,
}

impl ErrorCode {
    /// The HTTP status this code travels with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidPath | ErrorCode::NameTooLong => 400,
            ErrorCode::InvalidMove | ErrorCode::OutOfRange | ErrorCode::NotSupported => 400,
            ErrorCode::NotPermitted | ErrorCode::TooManyLinks => 400,
            ErrorCode::NoData => 404,
            ErrorCode::TooBig => 413,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists
            | ErrorCode::NotEmpty
            | ErrorCode::IsDirectory
            | ErrorCode::NotDirectory
            | ErrorCode::Fenced => 409,
            ErrorCode::LeaseExpired => 410,
            ErrorCode::Stale => 412,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::ChecksumMismatch => 422,
            ErrorCode::Busy => 423,
            ErrorCode::NoSpace => 507,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }

    /// The errno the mount returns for this code.
    pub fn errno(self) -> i32 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidPath
            | ErrorCode::InvalidMove
            | ErrorCode::MethodNotAllowed => libc::EINVAL,
            ErrorCode::NameTooLong => libc::ENAMETOOLONG,
            ErrorCode::NoData => libc::ENODATA,
            ErrorCode::OutOfRange => libc::ERANGE,
            ErrorCode::TooBig => libc::E2BIG,
            ErrorCode::NotSupported => libc::EOPNOTSUPP,
            ErrorCode::NotPermitted => libc::EPERM,
            ErrorCode::TooManyLinks => libc::EMLINK,
            ErrorCode::NotFound => libc::ENOENT,
            ErrorCode::AlreadyExists => libc::EEXIST,
            ErrorCode::NotEmpty => libc::ENOTEMPTY,
            ErrorCode::IsDirectory => libc::EISDIR,
            ErrorCode::NotDirectory => libc::ENOTDIR,
            ErrorCode::Busy => libc::EBUSY,
            ErrorCode::Stale | ErrorCode::Fenced => libc::ESTALE,
            ErrorCode::PayloadTooLarge => libc::EFBIG,
            ErrorCode::NoSpace => libc::ENOSPC,
            ErrorCode::Unauthenticated | ErrorCode::Forbidden => libc::EACCES,
            ErrorCode::LeaseExpired
            | ErrorCode::ChecksumMismatch
            | ErrorCode::Unavailable
            | ErrorCode::Internal => libc::EIO,
        }
    }

    /// The [`std::io::ErrorKind`] a program using the file-like client API sees for this
    /// code: the same meaning as [`ErrorCode::errno`], in the vocabulary of `std::io`.
    pub fn io_kind(self) -> std::io::ErrorKind {
        use std::io::ErrorKind as K;
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidPath
            | ErrorCode::NameTooLong
            | ErrorCode::InvalidMove
            | ErrorCode::MethodNotAllowed
            | ErrorCode::OutOfRange => K::InvalidInput,
            ErrorCode::NotFound | ErrorCode::NoData => K::NotFound,
            ErrorCode::TooBig => K::ArgumentListTooLong,
            ErrorCode::NotSupported => K::Unsupported,
            ErrorCode::NotPermitted => K::PermissionDenied,
            ErrorCode::TooManyLinks => K::TooManyLinks,
            ErrorCode::AlreadyExists => K::AlreadyExists,
            ErrorCode::NotEmpty => K::DirectoryNotEmpty,
            ErrorCode::IsDirectory => K::IsADirectory,
            ErrorCode::NotDirectory => K::NotADirectory,
            ErrorCode::Busy => K::ResourceBusy,
            ErrorCode::Stale | ErrorCode::Fenced => K::StaleNetworkFileHandle,
            ErrorCode::PayloadTooLarge => K::FileTooLarge,
            ErrorCode::NoSpace => K::StorageFull,
            ErrorCode::ChecksumMismatch => K::InvalidData,
            ErrorCode::Unauthenticated | ErrorCode::Forbidden => K::PermissionDenied,
            ErrorCode::LeaseExpired | ErrorCode::Unavailable | ErrorCode::Internal => K::Other,
        }
    }

    /// The code a bare HTTP status maps back to, for replies that carry no JSON body.
    pub fn from_http_status(status: u16) -> ErrorCode {
        match status {
            401 => ErrorCode::Unauthenticated,
            403 => ErrorCode::Forbidden,
            404 => ErrorCode::NotFound,
            405 => ErrorCode::MethodNotAllowed,
            409 => ErrorCode::AlreadyExists,
            410 => ErrorCode::LeaseExpired,
            412 => ErrorCode::Stale,
            413 => ErrorCode::PayloadTooLarge,
            422 => ErrorCode::ChecksumMismatch,
            423 => ErrorCode::Busy,
            507 => ErrorCode::NoSpace,
            502..=504 => ErrorCode::Unavailable,
            400..=499 => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }

    /// Whether retrying the same request later might succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        f.write_str(&text)
    }
}

/// An error as it travels on the wire: `{"code": "not_found", "message": "no such file: /a"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// What went wrong, machine-readable.
    pub code: ErrorCode,
    /// What went wrong, for a person reading a log.
    pub message: String,
}

impl ApiError {
    /// An error with a code and a human message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// Shorthand for [`ErrorCode::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// Shorthand for [`ErrorCode::NotFound`].
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// Shorthand for [`ErrorCode::Internal`]; logs nothing by itself.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }

    /// Shorthand for [`ErrorCode::Unavailable`].
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// The errno for the mount.
    pub fn errno(&self) -> i32 {
        self.code.errno()
    }
}

impl From<std::io::Error> for ApiError {
    fn from(err: std::io::Error) -> ApiError {
        if err.raw_os_error() == Some(libc::ENOSPC) {
            return ApiError::new(ErrorCode::NoSpace, err.to_string());
        }
        ApiError::internal(format!("i/o error: {err}"))
    }
}

/// An [`ApiError`] as an [`std::io::Error`] of kind [`ErrorCode::io_kind`], keeping the
/// `ApiError` inside (`err.get_ref()` and downcast) so a program can still read the code.
impl From<ApiError> for std::io::Error {
    fn from(err: ApiError) -> std::io::Error {
        std::io::Error::new(err.code.io_kind(), err)
    }
}

impl From<reqwest::Error> for ApiError {
    fn from(err: reqwest::Error) -> ApiError {
        if err.is_decode() {
            return ApiError::internal(format!("undecodable reply: {err}"));
        }
        ApiError::unavailable(format!("request failed: {}", with_causes(&err)))
    }
}

/// What a client should check when the server's certificate was refused.
pub const CERTIFICATE_HINT: &str =
    "the server's TLS certificate is not trusted: give the cluster's CA with --ca FILE or DFS_CA";

/// `err` followed by its causes, so that "error sending request" says why (connection
/// refused, an untrusted certificate, ...), with a hint when TLS verification failed.
fn with_causes(err: &reqwest::Error) -> String {
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(inner) = cause {
        let line = inner.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = inner.source();
    }
    if text.contains("invalid peer certificate") {
        text.push_str(" (");
        text.push_str(CERTIFICATE_HINT);
        text.push(')');
    }
    text
}

#[cfg(feature = "axum")]
mod axum_impl {
    use super::ApiError;
    use axum::http::StatusCode;
    use axum::response::{IntoResponse, Response};

    impl IntoResponse for ApiError {
        fn into_response(self) -> Response {
            let status = StatusCode::from_u16(self.code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, axum::Json(self)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_is_snake_case_json() {
        let e = ApiError::new(ErrorCode::NotEmpty, "dir /a has entries");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"code":"not_empty","message":"dir /a has entries"}"#
        );
        assert_eq!(serde_json::from_str::<ApiError>(&json).unwrap(), e);
        assert_eq!(ErrorCode::NotEmpty.to_string(), "not_empty");
    }

    #[test]
    fn bad_input_codes_are_4xx() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::InvalidPath,
            ErrorCode::NameTooLong,
            ErrorCode::PayloadTooLarge,
            ErrorCode::InvalidMove,
        ] {
            assert!((400..500).contains(&code.http_status()), "{code:?}");
        }
        assert_eq!(ErrorCode::Busy.errno(), libc::EBUSY);
        assert_eq!(ErrorCode::Fenced.errno(), libc::ESTALE);
        assert_eq!(ErrorCode::NotPermitted.errno(), libc::EPERM);
        assert_eq!(ErrorCode::TooManyLinks.errno(), libc::EMLINK);
    }
}
