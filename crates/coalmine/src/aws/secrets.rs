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

/// The alert webhook's token, from its secret: read at the first request, kept, and read
/// afresh after a mismatch (a rotated secret) at most once a minute, so a stream of bad
/// tokens cannot turn into a stream of Secrets Manager calls.
pub struct WebhookSecret {
    secrets: Secrets,
    secret: Option<String>,
    kept: tokio::sync::Mutex<Option<(String, tokio::time::Instant)>>,
}

/// How often a mismatch may read the secret again.
pub const REREAD_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

impl WebhookSecret {
    pub fn new(secrets: Secrets, secret: Option<String>) -> Self {
        WebhookSecret { secrets, secret, kept: tokio::sync::Mutex::new(None) }
    }
}

impl crate::ports::WebhookTokens for WebhookSecret {
    async fn token(&self, fresh: bool) -> Result<String> {
        let secret = self.secret.as_deref().ok_or_else(|| {
            Error::Config(format!(
                "{} is not set: the webhook has no token to check, so it takes no alert",
                crate::config::WEBHOOK_SECRET_VAR
            ))
        })?;
        let mut kept = self.kept.lock().await;
        if let Some((token, read_at)) = kept.as_ref() {
            if !fresh || read_at.elapsed() < REREAD_AFTER {
                return Ok(token.clone());
            }
        }
        let token = self.secrets.text(secret).await?.trim().to_owned();
        *kept = Some((token.clone(), tokio::time::Instant::now()));
        Ok(token)
    }
}
