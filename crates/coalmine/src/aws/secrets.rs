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

    /// The text of the secret's version labelled `stage` (`AWSCURRENT`, `AWSPREVIOUS`) and
    /// when it was stored (epoch seconds); `None` when no version has that label.
    pub async fn version(&self, secret: &str, stage: &str) -> Result<Option<(String, i64)>> {
        let out = match self.client.get_secret_value().secret_id(secret).version_stage(stage).send().await {
            Ok(out) => out,
            Err(e)
                if stage != "AWSCURRENT"
                    && matches!(super::error::service_code(&e), Some(("ResourceNotFoundException", _))) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(aws_error("secretsmanager:GetSecretValue", e)),
        };
        let stored = out.created_date.map(|d| d.secs()).unwrap_or_default();
        Ok(out.secret_string.filter(|s| !s.trim().is_empty()).map(|text| (text, stored)))
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

/// The alert webhook's tokens, from its secret: its current value (`AWSCURRENT`) and,
/// for [`TOKEN_OVERLAP`] after the current one was stored, the value it replaced
/// (`AWSPREVIOUS`), so a team rotates the secret and then the action group's URL with
/// neither refused in between. Read at the first request and kept for [`KEEP_FOR`]; read
/// afresh after a mismatch, at most once every [`REREAD_AFTER`] (a stream of bad tokens
/// is at most a read every two seconds); a mismatch in between is answered "try again",
/// never refused, so a new token is never refused for a stale copy.
pub struct WebhookSecret {
    secrets: Secrets,
    secret: Option<String>,
    kept: tokio::sync::Mutex<Option<Kept>>,
}

struct Kept {
    current: String,
    /// The replaced token, and until when (epoch seconds) it is accepted.
    previous: Option<(String, i64)>,
    read_at: std::time::Instant,
}

/// How long the token a rotation replaced is still accepted.
pub const TOKEN_OVERLAP: std::time::Duration = std::time::Duration::from_secs(3600);
/// How long a read is kept without a mismatch: a previous token past its overlap is
/// refused within this of the overlap's end.
pub const KEEP_FOR: std::time::Duration = std::time::Duration::from_secs(300);
/// The shortest time between two reads after mismatches.
pub const REREAD_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

impl WebhookSecret {
    pub fn new(secrets: Secrets, secret: Option<String>) -> Self {
        WebhookSecret { secrets, secret, kept: tokio::sync::Mutex::new(None) }
    }

    async fn read(&self, secret: &str) -> Result<Kept> {
        let current = self.secrets.version(secret, "AWSCURRENT").await?;
        let (current, stored) =
            current.ok_or_else(|| Error::Config(format!("secret {secret} has no current value")))?;
        let previous = self.secrets.version(secret, "AWSPREVIOUS").await?;
        let until = stored.saturating_add(TOKEN_OVERLAP.as_secs() as i64);
        Ok(Kept {
            current: current.trim().to_owned(),
            previous: previous.map(|(token, _)| (token.trim().to_owned(), until)),
            read_at: std::time::Instant::now(),
        })
    }
}

impl crate::ports::WebhookTokens for WebhookSecret {
    async fn tokens(&self, read_since: Option<std::time::Instant>) -> Result<Option<Vec<String>>> {
        let secret = self.secret.as_deref().ok_or_else(|| {
            Error::Config(format!(
                "{} is not set: the webhook has no token to check, so it takes no alert",
                crate::config::WEBHOOK_SECRET_VAR
            ))
        })?;
        let mut kept = self.kept.lock().await;
        let read_at = kept.as_ref().map(|k| k.read_at);
        match (read_at, read_since) {
            (Some(at), Some(since)) if at >= since => {}
            (Some(at), Some(_)) if at.elapsed() < REREAD_AFTER => return Ok(None),
            (Some(at), None) if at.elapsed() < KEEP_FOR => {}
            _ => *kept = Some(self.read(secret).await?),
        }
        let Some(kept) = kept.as_ref() else { return Ok(Some(Vec::new())) };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let previous = kept.previous.iter().filter(|(_, until)| now < *until).map(|(token, _)| token.clone());
        Ok(Some(std::iter::once(kept.current.clone()).chain(previous).collect()))
    }
}
