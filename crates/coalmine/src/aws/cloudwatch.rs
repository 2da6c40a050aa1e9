use aws_sdk_cloudwatch::Client;

use super::{aws_error, service_code};
use crate::error::Result;
use crate::ports::AlarmSource;
use crate::resolve::TARGET_TAG;

pub struct CloudWatchAlarms {
    client: Client,
}

impl CloudWatchAlarms {
    pub fn new(client: Client) -> Self {
        CloudWatchAlarms { client }
    }
}

impl AlarmSource for CloudWatchAlarms {
    async fn target_tag(&self, alarm_arn: &str) -> Result<Option<String>> {
        let out = match self.client.list_tags_for_resource().resource_arn(alarm_arn).send().await {
            Ok(out) => out,
            // An alarm deleted since it fired has no tags to honour.
            Err(e) if matches!(service_code(&e), Some(("ResourceNotFoundException", _))) => return Ok(None),
            Err(e) => return Err(aws_error("cloudwatch:ListTagsForResource", e)),
        };
        Ok(out.tags.unwrap_or_default().into_iter().find(|t| t.key() == Some(TARGET_TAG)).and_then(|t| t.value))
    }
}
