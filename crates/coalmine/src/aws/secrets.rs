//! Secrets Manager: the Azure identity's secret and the alert webhook's token, read
//! when first needed (and again when Azure refuses a token, or a token does not match).

use aws_sdk_secretsmanager::Client;

use super::error::aws_error;
use crate::domain::error::{Error, Result};

#[derive(Clone)]
pub struct Secrets {
    client: Client,
}

impl Secrets {
    pub fn new(client: Client) -> Self {
        Secrets { client }
    }

    /// The secret's current text (`SecretString`).
    pub async fn text(&self, secret: &str) -> Result<String> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(secret)
            .send()
            .await
            .map_err(|e| aws_error("secretsmanager:GetSecretValue", e))?;
        out.secret_string.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            Error::Config(format!("secret {secret} holds no text (SecretString); store it as a string, not binary"))
        })
    }
}
