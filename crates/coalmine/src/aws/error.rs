//! An SDK failure as the library's own error: one line a person can act on, and whether
//! a retry could help.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::domain::error::Error;

/// An SDK failure that survived the SDK's own retries, as one line a person can act on:
/// the operation, the service's error code and message, the HTTP status and the request
/// id (what AWS support asks for), or what kept the request from an answer. Throttling,
/// 5xx, timeouts and connection failures may pass on a later invocation; other service
/// errors will not. A denied call is its own kind: the name is wrong or the stack's
/// parameters do not cover the resource.
pub fn aws_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let Failure { detail, retryable, denied } = failure(&err);
    if denied {
        Error::AccessDenied { operation, detail }
    } else {
        Error::Service { operation, detail, retryable }
    }
}

/// `operation: Code: message (HTTP status, request id ...)`: the detail of a service
/// error an adapter maps to one of the library's own kinds (not found, conflict, ...).
pub(crate) fn call_detail<E>(operation: &'static str, err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    format!("{operation}: {}", failure(err).detail)
}

struct Failure {
    detail: String,
    retryable: bool,
    denied: bool,
}

fn failure<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (detail, retryable, denied) = match err {
        SdkError::ServiceError(service) => {
            let raw = service.raw();
            let status = raw.status().as_u16();
            let code = service.err().code().unwrap_or("UnknownError");
            let message = service.err().message().unwrap_or("no message");
            let request_id = service
                .err()
                .meta()
                .extra("aws_request_id")
                .or_else(|| ["x-amzn-requestid", "x-amz-request-id"].iter().find_map(|h| raw.headers().get(*h)))
                .unwrap_or("none");
            let detail = format!("{code}: {} (HTTP {status}, request id {request_id})", one_line(message));
            let retryable = status >= 500 || status == 429 || is_throttling_code(code);
            (detail, retryable, is_denied_code(code))
        }
        SdkError::TimeoutError(_) => ("no answer before the SDK's timeout".to_owned(), true, false),
        // The SDK resolves credentials while dispatching: "could not reach" would send a
        // person looking at the network.
        SdkError::DispatchFailure(_) if error_chain(err).contains("no credentials found") => {
            (format!("found no AWS credentials: {}", error_chain(err)), false, false)
        }
        SdkError::DispatchFailure(_) => (format!("could not reach the service: {}", error_chain(err)), true, false),
        SdkError::ResponseError(response) => (
            format!("unreadable response (HTTP {}): {}", response.raw().status().as_u16(), error_chain(err)),
            true,
            false,
        ),
        SdkError::ConstructionFailure(_) => {
            (format!("the request could not be built: {}", error_chain(err)), false, false)
        }
        _ => (error_chain(err), true, false),
    };
    Failure { detail, retryable, denied }
}

/// An error and its sources on one line, each said once.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = one_line(&e.to_string());
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn is_denied_code(code: &str) -> bool {
    matches!(code, "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" | "AuthorizationError")
}

fn is_throttling_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
    )
}

/// The service error's code and message, when the call reached the service.
pub(crate) fn service_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<(&str, &str)> {
    err.as_service_error().map(|e| (e.code().unwrap_or_default(), e.message().unwrap_or_default()))
}
