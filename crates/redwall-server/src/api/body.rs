//! Extractors that turn malformed input into the API's JSON errors.

use crate::error::ApiError;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

/// A JSON body. Wrong content type, invalid UTF-8 or JSON, wrong field types
/// and oversize bodies each get a clear 4xx.
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send a JSON body with Content-Type: application/json",
        ),
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            e.body_text(),
        ),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::bad_request("malformed_json", "the body is not valid JSON")
        }
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the request body is too large",
            )
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

/// Query parameters, with the same kind of errors.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request("invalid_query", e.body_text()))
            }
            Err(other) => Err(ApiError::bad_request("invalid_query", other.body_text())),
        }
    }
}

/// A resource id from the path. Anything that cannot be one of our ids is
/// answered exactly like an id that does not exist.
pub struct IdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found())?;
        if crate::ids::looks_like_id(&id) {
            Ok(IdPath(id))
        } else {
            Err(ApiError::not_found())
        }
    }
}

/// The path parameter `key` of a team route (`{instance}`, `{agent}`,
/// `{group}`, ...): a name or an id as given, looked up later in the team
/// the guard resolved only; missing or longer than 64 bytes is a 404.
pub async fn named_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    key: &str,
) -> Result<String, ApiError> {
    axum::extract::RawPathParams::from_request_parts(parts, state)
        .await
        .ok()
        .and_then(|p| {
            p.iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        })
        .filter(|v| v.len() <= 64)
        .ok_or_else(ApiError::not_found)
}

/// The second id of a team route (`/api/v1/teams/{team}/.../{id}`). The team
/// itself is resolved and checked by the guard.
pub struct TeamItemPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TeamItemPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        #[derive(serde::Deserialize)]
        struct Params {
            id: String,
        }
        let axum::extract::Path(Params { id }) =
            axum::extract::Path::<Params>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found())?;
        if crate::ids::looks_like_id(&id) {
            Ok(TeamItemPath(id))
        } else {
            Err(ApiError::not_found())
        }
    }
}
