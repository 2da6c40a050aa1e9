use aws_sdk_sns::types::MessageAttributeValue;
use aws_sdk_sns::Client;

use super::error::aws_error;
use crate::domain::error::{Error, Result};
use crate::ports::{Notification, Notifier};

pub struct SnsNotifier {
    client: Client,
    topic_arn: String,
}

impl SnsNotifier {
    pub fn new(client: Client, topic_arn: String) -> Self {
        SnsNotifier { client, topic_arn }
    }
}

impl Notifier for SnsNotifier {
    async fn publish(&self, notification: &Notification) -> Result<()> {
        let mut request =
            self.client.publish().topic_arn(&self.topic_arn).subject(&notification.subject).message(&notification.body);
        for (name, value) in &notification.attributes {
            let value =
                MessageAttributeValue::builder().data_type("String").string_value(value).build().map_err(|e| {
                    Error::Service { operation: "sns:Publish", detail: e.to_string(), retryable: false }
                })?;
            request = request.message_attributes(*name, value);
        }
        request.send().await.map_err(|e| aws_error("sns:Publish", e))?;
        Ok(())
    }
}
