//! JSON body and query extractors whose rejections are `ApiError`s (4xx JSON, never plain text).

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use dfs_proto::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;

/// Like `axum::Json`, but a malformed body becomes `{"code":"bad_request",...}`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    let code = match &rejection {
        JsonRejection::BytesRejection(_) => ErrorCode::PayloadTooLarge,
        _ => ErrorCode::BadRequest,
    };
    let message = rejection.body_text();
    ApiError::new(path_code(&message).unwrap_or(code), message)
}

/// Path validation failures inside a body or query keep their specific code.
fn path_code(message: &str) -> Option<ErrorCode> {
    if message.contains("longer than") {
        Some(ErrorCode::NameTooLong)
    } else if message.contains("path ") || message.contains("a name must") {
        Some(ErrorCode::InvalidPath)
    } else {
        None
    }
}

/// Like `axum::extract::Query`, but a malformed query becomes a JSON `bad_request`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> ApiError {
    let message = rejection.body_text();
    ApiError::new(
        path_code(&message).unwrap_or(ErrorCode::BadRequest),
        message,
    )
}
