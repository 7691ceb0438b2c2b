//! The typed error of every RPC handler, mapped once to a gRPC status.

use tonic::{Code, Status};

/// Why a request failed. Each variant maps to one gRPC code; the message is
/// meant for the caller and says what to change.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller is not allowed to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The caller could not be identified.
    #[error("{0}")]
    Unauthenticated(String),
    /// The named key or session does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already (key id, replayed request id).
    #[error("{0}")]
    AlreadyExists(String),
    /// Not enough parties reachable to do it.
    #[error("{0}")]
    Unavailable(String),
    /// Too many sessions at once.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A phase timed out.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The node's state does not allow it now.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A bug or a storage failure; details are in the node's log.
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::InvalidArgument(_) => Code::InvalidArgument,
            ApiError::PermissionDenied(_) => Code::PermissionDenied,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::AlreadyExists(_) => Code::AlreadyExists,
            ApiError::Unavailable(_) => Code::Unavailable,
            ApiError::ResourceExhausted(_) => Code::ResourceExhausted,
            ApiError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            ApiError::FailedPrecondition(_) => Code::FailedPrecondition,
            ApiError::Internal(_) => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

impl From<tss_core::store::StoreError> for ApiError {
    fn from(e: tss_core::store::StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ApiError::Internal(format!("storage failure: {e}"))
    }
}

/// Runs blocking work (store access, CPU-heavy steps) off the reactor.
pub async fn blocking<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("worker failed: {e}")))?
}
