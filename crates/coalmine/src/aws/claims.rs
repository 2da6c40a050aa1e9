//! One release per target, in a DynamoDB table of claims: an item per target naming the
//! execution that holds it, written only if no item is there, or if the item still names
//! the holder just found to have ended (a compare-and-swap two racing first ticks cannot
//! both win). A claim is never released: the next release finds its holder ended (Step
//! Functions' `DescribeExecution`) and takes it over, so a crashed execution blocks
//! nothing and no ending needs a write of its own.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_sfn::types::ExecutionStatus;

use super::error::{aws_error, service_code};
use crate::domain::error::{Error, Result};
use crate::ports::Claims;

const KEY: &str = "target";
const HOLDER: &str = "execution";
/// Takeovers lost to another release in one tick before it gives up (retryable).
const MAX_RACES: usize = 5;

pub struct DynamoClaims {
    dynamodb: aws_sdk_dynamodb::Client,
    sfn: aws_sdk_sfn::Client,
    table: String,
}

impl DynamoClaims {
    pub fn new(dynamodb: aws_sdk_dynamodb::Client, sfn: aws_sdk_sfn::Client, table: String) -> Self {
        DynamoClaims { dynamodb, sfn, table }
    }

    /// Writes the claim if the item's holder is still `expected` (`None`: no item).
    async fn put_if(&self, key: &str, execution: &str, expected: Option<&str>) -> Result<bool> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let mut request = self
            .dynamodb
            .put_item()
            .table_name(&self.table)
            .item(KEY, AttributeValue::S(key.to_owned()))
            .item(HOLDER, AttributeValue::S(execution.to_owned()))
            .item("claimed_at", AttributeValue::N(now.to_string()));
        request = match expected {
            None => request
                .condition_expression("attribute_not_exists(#key) OR #holder = :me")
                .expression_attribute_names("#key", KEY)
                .expression_attribute_names("#holder", HOLDER)
                .expression_attribute_values(":me", AttributeValue::S(execution.to_owned())),
            Some(holder) => request
                .condition_expression("#holder = :was")
                .expression_attribute_names("#holder", HOLDER)
                .expression_attribute_values(":was", AttributeValue::S(holder.to_owned())),
        };
        match request.send().await {
            Ok(_) => Ok(true),
            Err(e) if matches!(service_code(&e), Some(("ConditionalCheckFailedException", _))) => Ok(false),
            Err(e) => Err(aws_error("dynamodb:PutItem", e)),
        }
    }

    async fn holder(&self, key: &str) -> Result<Option<String>> {
        let out = self
            .dynamodb
            .get_item()
            .table_name(&self.table)
            .key(KEY, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_error("dynamodb:GetItem", e))?;
        Ok(holder_of(out.item.as_ref()))
    }

    /// Whether the execution is still running; one that does not exist is not.
    async fn running(&self, execution: &str) -> Result<bool> {
        match self.sfn.describe_execution().execution_arn(execution).send().await {
            Ok(out) => Ok(out.status == ExecutionStatus::Running),
            Err(e) if matches!(service_code(&e), Some(("ExecutionDoesNotExist", _))) => Ok(false),
            Err(e) => Err(aws_error("states:DescribeExecution", e)),
        }
    }
}

fn holder_of(item: Option<&HashMap<String, AttributeValue>>) -> Option<String> {
    item?.get(HOLDER)?.as_s().ok().cloned()
}

impl Claims for DynamoClaims {
    async fn claim(&self, key: &str, execution: &str) -> Result<Option<String>> {
        if self.put_if(key, execution, None).await? {
            return Ok(None);
        }
        for _ in 0..MAX_RACES {
            let Some(holder) = self.holder(key).await? else {
                // Gone between the two calls (a table someone emptied): claim afresh.
                if self.put_if(key, execution, None).await? {
                    return Ok(None);
                }
                continue;
            };
            if holder == execution {
                return Ok(None);
            }
            if self.running(&holder).await? {
                return Ok(Some(holder));
            }
            if self.put_if(key, execution, Some(&holder)).await? {
                return Ok(None);
            }
        }
        Err(Error::Service {
            operation: "dynamodb:PutItem",
            detail: format!("the claim on {key} kept changing hands; another release is starting there"),
            retryable: true,
        })
    }
}
