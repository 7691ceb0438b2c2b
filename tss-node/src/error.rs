//! The typed error of every RPC handler, by cause, mapped once (here) to a
//! gRPC status. Domain code says *why* a request failed; only this file says
//! which gRPC code a cause gets. The messages are meant for the caller and
//! say what to change.

use tonic::{Code, Status};
use tss_core::store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed or out of range (`INVALID_ARGUMENT`).
    #[error("{0}")]
    Invalid(String),
    /// The caller may not do this: not a party, wrong role
    /// (`PERMISSION_DENIED`).
    #[error("{0}")]
    Denied(String),
    /// This node's policy refused the request by the named rule
    /// (`PERMISSION_DENIED`).
    #[error("{message}")]
    Policy {
        /// The rule that decided (as in the audit log).
        rule: String,
        /// The whole message, rule and reason included.
        message: String,
    },
    /// The caller could not be identified (`UNAUTHENTICATED`).
    #[error("{0}")]
    Unauthenticated(String),
    /// The named key, session or record does not exist (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// It exists already, differently: a key id, a request id used for
    /// another request (`ALREADY_EXISTS`).
    #[error("{0}")]
    Conflict(String),
    /// Not enough parties could be reached to do it (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
    /// A party sent something invalid and the run was abandoned
    /// (`UNAVAILABLE`: retrying with other parties may work).
    #[error("{message}")]
    Misbehaved {
        /// The party that sent it.
        culprit: String,
        /// The whole message.
        message: String,
    },
    /// Too many sessions at once; retry later (`RESOURCE_EXHAUSTED`).
    #[error("{0}")]
    Busy(String),
    /// A phase did not finish in time (`DEADLINE_EXCEEDED`).
    #[error("{0}")]
    Timeout(String),
    /// The node's state does not allow it now: a key not ready, no primes
    /// yet, a run in progress (`FAILED_PRECONDITION`).
    #[error("{0}")]
    NotReady(String),
    /// The node's store failed (`INTERNAL`).
    #[error("storage failure: {0}")]
    Storage(StoreError),
    /// A bug; details are in the node's log (`INTERNAL`).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The gRPC code of this cause: the one mapping of the node.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Invalid(_) => Code::InvalidArgument,
            ApiError::Denied(_) | ApiError::Policy { .. } => Code::PermissionDenied,
            ApiError::Unauthenticated(_) => Code::Unauthenticated,
            ApiError::NotFound(_) => Code::NotFound,
            ApiError::Conflict(_) => Code::AlreadyExists,
            ApiError::Unavailable(_) | ApiError::Misbehaved { .. } => Code::Unavailable,
            ApiError::Busy(_) => Code::ResourceExhausted,
            ApiError::Timeout(_) => Code::DeadlineExceeded,
            ApiError::NotReady(_) => Code::FailedPrecondition,
            ApiError::Storage(_) | ApiError::Internal(_) => Code::Internal,
        }
    }

    /// The same cause with `prefix: ` before its message.
    pub fn prefixed(self, prefix: &str) -> ApiError {
        let m = |s: String| format!("{prefix}: {s}");
        match self {
            ApiError::Invalid(s) => ApiError::Invalid(m(s)),
            ApiError::Denied(s) => ApiError::Denied(m(s)),
            ApiError::Policy { rule, message } => ApiError::Policy {
                rule,
                message: m(message),
            },
            ApiError::Unauthenticated(s) => ApiError::Unauthenticated(m(s)),
            ApiError::NotFound(s) => ApiError::NotFound(m(s)),
            ApiError::Conflict(s) => ApiError::Conflict(m(s)),
            ApiError::Unavailable(s) => ApiError::Unavailable(m(s)),
            ApiError::Misbehaved { culprit, message } => ApiError::Misbehaved {
                culprit,
                message: m(message),
            },
            ApiError::Busy(s) => ApiError::Busy(m(s)),
            ApiError::Timeout(s) => ApiError::Timeout(m(s)),
            ApiError::NotReady(s) => ApiError::NotReady(m(s)),
            e @ ApiError::Storage(_) => ApiError::Internal(m(e.to_string())),
            ApiError::Internal(s) => ApiError::Internal(m(s)),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store failure");
        ApiError::Storage(e)
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

/// Runs short blocking work (a few store reads and writes, a signature
/// check) on the calling worker thread, after tokio hands that worker's
/// other tasks to another thread (`block_in_place`): the reactor still
/// never waits on it, and a request on the signing path saves the two
/// thread wake-ups of a [`blocking`] hand-off. Only for a task that awaits
/// nothing else meanwhile: a future joined with this one would wait too
/// (use [`blocking`] there). On a current-thread runtime (some tests),
/// [`blocking`].
pub async fn in_place<T, F>(f: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi_thread {
        // A panic in `f` fails the request, as it does on a blocking thread.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tokio::task::block_in_place(f)
        }))
        .unwrap_or_else(|_| Err(ApiError::Internal("worker failed: a step panicked".into())))
    } else {
        blocking(f).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(non_snake_case)]
    use super::*;

    #[test]
    fn status__should_keep_the_code_and_message_of_each_cause() {
        let cases = [
            (ApiError::Invalid("i".into()), Code::InvalidArgument, "i"),
            (
                ApiError::Policy {
                    rule: "limit".into(),
                    message: "denied by limit".into(),
                },
                Code::PermissionDenied,
                "denied by limit",
            ),
            (
                ApiError::Misbehaved {
                    culprit: "bob".into(),
                    message: "bob sent junk".into(),
                },
                Code::Unavailable,
                "bob sent junk",
            ),
            (ApiError::Busy("b".into()), Code::ResourceExhausted, "b"),
            (
                ApiError::NotReady("n".into()),
                Code::FailedPrecondition,
                "n",
            ),
            (ApiError::Conflict("c".into()), Code::AlreadyExists, "c"),
        ];
        for (e, code, message) in cases {
            let s = Status::from(e.prefixed("at alice"));
            assert_eq!(s.code(), code);
            assert_eq!(s.message(), format!("at alice: {message}"));
        }
    }
}
