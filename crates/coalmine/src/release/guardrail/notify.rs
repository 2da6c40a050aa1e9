//! What the team reads on SNS about a guardrail release.

use crate::ports::{Notification, ATTR_EVENT, ATTR_RELEASE, ATTR_TARGET};
use crate::release::guardrail::spec::GuardrailRelease;
use crate::text::{execution_link, field, subject};

pub(super) fn message(
    release: &GuardrailRelease,
    execution: &str,
    headline: &str,
    why: &str,
    next: &str,
    event: &str,
) -> Notification {
    let endpoint = &release.guardrail.endpoint;
    let mut body = format!(
        "Release {} (a guardrail deployment of {} to {endpoint}) {headline}.\n\n",
        release.release, release.guardrail.endpoint_config
    );
    field(&mut body, "Release", &release.release);
    field(&mut body, "Endpoint", endpoint);
    field(&mut body, "Config", &release.guardrail.endpoint_config);
    field(&mut body, "Why", why);
    if let Some(link) = execution_link(execution, execution) {
        field(&mut body, "Execution", &link);
    }
    body.push('\n');
    field(&mut body, "Next", next);
    Notification {
        subject: subject(&format!("coalmine: {} on {endpoint} {headline}", release.release)),
        body,
        attributes: vec![
            (ATTR_EVENT, event.to_owned()),
            (ATTR_TARGET, format!("sagemaker:{endpoint}")),
            (ATTR_RELEASE, release.release.clone()),
        ],
    }
}
