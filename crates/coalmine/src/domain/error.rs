//! The one error type of the library. Its [`Error::error_type`] is the stable string the
//! Lambda runtime reports and the state machine's `Retry`/`Catch` match on.

use crate::domain::target::{BadTarget, Target};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The function's environment is missing or malforms a variable; fix the deployment.
    #[error("configuration: {0}")]
    Config(String),

    /// The invocation payload is not an event this function handles.
    #[error("unsupported event: {0}")]
    BadEvent(String),

    /// The release (the execution input) is invalid; nothing was changed.
    #[error("invalid release: {0}")]
    InvalidRelease(String),

    /// The release is valid but its target is not ready for it (another canary in
    /// flight, a gate alarm firing); nothing was changed. Say what to wait for.
    #[error("refused: {0}")]
    Refused(String),

    /// This role may not make the call: the name is wrong, or the stack's parameters
    /// do not cover the resource. Nothing was changed by this call.
    #[error("{operation} was denied: {detail}")]
    AccessDenied { operation: &'static str, detail: String },

    /// A target string or object could not be understood.
    #[error(transparent)]
    BadTarget(#[from] BadTarget),

    /// The traffic changed between our read and our conditional write.
    #[error("{target}: traffic changed since it was read ({detail})")]
    Conflict { target: Target, detail: String },

    /// The alias, function, endpoint or variant does not exist.
    #[error("{target}: not found: {detail}")]
    NotFound { target: Target, detail: String },

    /// The live configuration is one coalmine cannot act on safely (e.g. two canaries).
    #[error("{target}: {detail}")]
    Unsupported { target: Target, detail: String },

    /// The SageMaker or Azure ML endpoint stayed busy (Updating, ...) for the whole wait
    /// budget.
    #[error(
        "{target}: endpoint still {status} after waiting {waited_ms} ms; the invocation fails so Lambda retries it"
    )]
    EndpointBusy { target: Target, status: String, waited_ms: u128 },

    /// An AWS or Azure call failed after the client's own retries.
    #[error("{operation} failed: {detail}")]
    Service { operation: &'static str, detail: String, retryable: bool },

    /// Some targets could not be rolled back or some notifications not sent; the rest were.
    #[error("{summary}")]
    Incomplete { summary: String, retryable: bool },
}

impl Error {
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Config(_) | Error::BadEvent(_) | Error::InvalidRelease(_) | Error::BadTarget(_) => false,
            Error::Refused(_) | Error::AccessDenied { .. } => false,
            Error::NotFound { .. } | Error::Unsupported { .. } => false,
            Error::Conflict { .. } | Error::EndpointBusy { .. } => true,
            Error::Service { retryable, .. } | Error::Incomplete { retryable, .. } => *retryable,
        }
    }

    /// What Lambda's error response carries as `errorType`, and the state machine's
    /// `Retry` and `Catch` match: `Retryable`, `InvalidRelease` (nothing moved; fix the
    /// release or wait), or `NonRetryable`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidRelease(_) | Error::Refused(_) => INVALID_RELEASE,
            _ if self.is_retryable() => "Retryable",
            _ => "NonRetryable",
        }
    }
}

/// The `errorType` of a release that never moved traffic.
pub const INVALID_RELEASE: &str = "InvalidRelease";

pub type Result<T, E = Error> = std::result::Result<T, E>;
