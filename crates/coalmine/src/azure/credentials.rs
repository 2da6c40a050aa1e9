//! Who coalmine is in Azure: a service principal or a federated token read from a
//! secret (the functions), or the usual developer chain (the CLI: the environment, then
//! `az login`), and which cloud it signs in to. Tokens come from Microsoft's own
//! `azure_identity` credentials, over the adapter's one HTTP client.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientMethodOptions, ClientOptions, ExponentialRetryOptions, RetryOptions, Transport};
use azure_identity::{
    AzureCliCredential, ClientAssertion, ClientAssertionCredential, ClientAssertionCredentialOptions,
    ClientSecretCredential, ClientSecretCredentialOptions, WorkloadIdentityCredential,
    WorkloadIdentityCredentialOptions,
};
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::domain::error::{Error, Result};

pub const PUBLIC_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
pub const PUBLIC_RESOURCE_MANAGER: &str = "https://management.azure.com";

/// Where an identity signs in, and where Resource Manager (and Azure Monitor's metrics,
/// which it serves) answers: public Azure unless a sovereign cloud names others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cloud {
    pub authority_host: String,
    pub resource_manager: String,
}

impl Default for Cloud {
    fn default() -> Self {
        Cloud { authority_host: PUBLIC_AUTHORITY_HOST.into(), resource_manager: PUBLIC_RESOURCE_MANAGER.into() }
    }
}

impl Cloud {
    /// Both must be HTTPS: a token is never sent in the clear.
    fn checked(authority_host: Option<String>, resource_manager: Option<String>, whence: &str) -> Result<Cloud> {
        let defaults = Cloud::default();
        let cloud = Cloud {
            authority_host: authority_host.unwrap_or(defaults.authority_host).trim_end_matches('/').to_owned(),
            resource_manager: resource_manager.unwrap_or(defaults.resource_manager).trim_end_matches('/').to_owned(),
        };
        for (name, url) in [("authority_host", &cloud.authority_host), ("resource_manager", &cloud.resource_manager)] {
            if !url.starts_with("https://") || url.len() <= "https://".len() {
                return Err(Error::Config(format!("{whence}: {name} {url:?} must be an https:// URL")));
            }
        }
        Ok(cloud)
    }

    /// The scope a Resource Manager token is asked for.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.resource_manager)
    }

    fn client_options(&self, http: &reqwest::Client) -> ClientOptions {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = self.authority_host.clone();
        ClientOptions {
            transport: Some(Transport::new(Arc::new(http.clone()))),
            // A token request waits for Entra ID a little, never for the whole budget
            // of the call it serves.
            retry: RetryOptions::exponential(ExponentialRetryOptions {
                max_retries: 2,
                max_total_elapsed: azure_core::time::Duration::seconds(10),
                ..ExponentialRetryOptions::default()
            }),
            cloud: Some(Arc::new(CloudConfiguration::Custom(custom))),
            ..ClientOptions::default()
        }
    }
}

/// A credential and the cloud it belongs to.
#[derive(Clone, Debug)]
pub struct Identity {
    pub credential: Arc<dyn TokenCredential>,
    pub cloud: Cloud,
}

/// Where an identity comes from. Loaded at first use and again after Azure refuses a
/// token, so a rotated secret or a refreshed federated token is picked up.
pub trait IdentitySource: Send + Sync {
    fn load<'a>(&'a self, http: &'a reqwest::Client) -> BoxFuture<'a, Result<Identity>>;
}

/// The secret's text, read by whoever holds it (the functions: Secrets Manager).
pub type ReadSecret = Box<dyn Fn() -> BoxFuture<'static, Result<String>> + Send + Sync>;

/// A service principal kept in a secret as JSON:
/// `{"tenant_id", "client_id", "client_secret"}`, or `"federated_token"` instead of the
/// secret (workload identity federation), and optionally `"authority_host"` and
/// `"resource_manager"` for a sovereign cloud. What `az ad sp create-for-rbac` prints
/// (`appId`, `password`, `tenant`, `displayName`) is read as it is.
pub struct SecretIdentity {
    pub name: String,
    pub read: ReadSecret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServicePrincipal {
    #[serde(alias = "tenant")]
    tenant_id: String,
    #[serde(alias = "appId")]
    client_id: String,
    #[serde(default, alias = "password")]
    client_secret: Option<String>,
    #[serde(default)]
    federated_token: Option<String>,
    #[serde(default)]
    authority_host: Option<String>,
    #[serde(default)]
    resource_manager: Option<String>,
    #[serde(default, rename = "displayName")]
    _display_name: Option<String>,
}

/// A federated token handed over as it is: the secret holds it, and a refreshed one is
/// read again with the secret.
#[derive(Debug)]
struct FederatedToken(Secret);

#[async_trait::async_trait]
impl ClientAssertion for FederatedToken {
    async fn secret(&self, _: Option<ClientMethodOptions<'_>>) -> azure_core::Result<String> {
        Ok(self.0.secret().to_owned())
    }
}

impl IdentitySource for SecretIdentity {
    fn load<'a>(&'a self, http: &'a reqwest::Client) -> BoxFuture<'a, Result<Identity>> {
        Box::pin(async move {
            let text = (self.read)().await?;
            identity_from_secret(&self.name, &text, http)
        })
    }
}

/// The secret's JSON as an identity. Errors name the secret and the field, never a value.
pub fn identity_from_secret(name: &str, text: &str, http: &reqwest::Client) -> Result<Identity> {
    let whence = format!("the Azure credentials secret {name}");
    let principal: ServicePrincipal = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(text))
        .map_err(|e| {
        let inner = e.inner().to_string();
        let why = if inner.starts_with("unknown field") || inner.starts_with("missing field") {
            inner.split(" at line").next().unwrap_or_default().to_owned()
        } else if e.inner().is_data() {
            format!("`{}` has the wrong type", e.path())
        } else {
            format!("not JSON ({inner})")
        };
        Error::Config(format!(
            "{whence}: {why}; expected {{\"tenant_id\", \"client_id\", \"client_secret\"}} (or \"federated_token\" \
                 instead of the secret)"
        ))
    })?;
    let cloud = Cloud::checked(principal.authority_host, principal.resource_manager, &whence)?;
    let options = cloud.client_options(http);
    let refused = |e: azure_core::Error| Error::Config(format!("{whence}: {e}"));
    let credential: Arc<dyn TokenCredential> = match (principal.client_secret, principal.federated_token) {
        (Some(secret), None) => ClientSecretCredential::new(
            &principal.tenant_id,
            principal.client_id,
            Secret::new(secret),
            Some(ClientSecretCredentialOptions { client_options: options }),
        )
        .map_err(refused)?,
        (None, Some(token)) => ClientAssertionCredential::new(
            principal.tenant_id,
            principal.client_id,
            FederatedToken(Secret::new(token)),
            Some(ClientAssertionCredentialOptions { client_options: options }),
        )
        .map_err(refused)?,
        (Some(_), Some(_)) => {
            return Err(Error::Config(format!("{whence}: give client_secret or federated_token, not both")))
        }
        (None, None) => return Err(Error::Config(format!("{whence}: client_secret (or federated_token) is required"))),
    };
    Ok(Identity { credential, cloud })
}

/// A person's or a pipeline's identity, the way Azure tools find one: a service
/// principal in `AZURE_TENANT_ID`, `AZURE_CLIENT_ID` and `AZURE_CLIENT_SECRET`, a
/// workload identity's `AZURE_FEDERATED_TOKEN_FILE`, else whoever `az login` signed in.
/// `AZURE_AUTHORITY_HOST` and `AZURE_RESOURCE_MANAGER_ENDPOINT` name a sovereign cloud.
pub struct DeveloperIdentity {
    pub lookup: fn(&str) -> Option<String>,
}

impl Default for DeveloperIdentity {
    fn default() -> Self {
        DeveloperIdentity { lookup: |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()) }
    }
}

pub const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
pub const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
pub const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
pub const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
pub const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
pub const AZURE_RESOURCE_MANAGER_ENDPOINT: &str = "AZURE_RESOURCE_MANAGER_ENDPOINT";

impl IdentitySource for DeveloperIdentity {
    fn load<'a>(&'a self, http: &'a reqwest::Client) -> BoxFuture<'a, Result<Identity>> {
        Box::pin(async move {
            let var = self.lookup;
            let cloud = Cloud::checked(
                var(AZURE_AUTHORITY_HOST),
                var(AZURE_RESOURCE_MANAGER_ENDPOINT),
                "the Azure environment",
            )?;
            let options = cloud.client_options(http);
            let refused = |e: azure_core::Error| Error::Config(format!("Azure credentials from the environment: {e}"));
            let credential: Arc<dyn TokenCredential> = match (
                var(AZURE_TENANT_ID),
                var(AZURE_CLIENT_ID),
                var(AZURE_CLIENT_SECRET),
                var(AZURE_FEDERATED_TOKEN_FILE),
            ) {
                (Some(tenant), Some(client), Some(secret), _) => ClientSecretCredential::new(
                    &tenant,
                    client,
                    Secret::new(secret),
                    Some(ClientSecretCredentialOptions { client_options: options }),
                )
                .map_err(refused)?,
                (Some(tenant), Some(client), None, Some(file)) => {
                    WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                        credential_options: ClientAssertionCredentialOptions { client_options: options },
                        client_id: Some(client),
                        tenant_id: Some(tenant),
                        token_file_path: Some(file.into()),
                    }))
                    .map_err(refused)?
                }
                _ => AzureCliCredential::new(None).map_err(refused)?,
            };
            Ok(Identity { credential, cloud })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> reqwest::Client {
        reqwest::Client::new()
    }

    #[test]
    fn a_service_principal_reads_in_either_spelling_and_defaults_to_public_azure() {
        let ours = r#"{"tenant_id": "72f988bf-86f1-41af-91ab-2d7cd011db47", "client_id": "c", "client_secret": "s"}"#;
        let az = r#"{"appId": "c", "displayName": "coalmine", "password": "s", "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db47"}"#;
        for text in [ours, az] {
            let identity = identity_from_secret("coalmine/azure", text, &http()).unwrap();
            assert_eq!(identity.cloud, Cloud::default());
            assert_eq!(identity.cloud.scope(), "https://management.azure.com/.default");
        }
    }

    #[test]
    fn a_sovereign_cloud_is_named_in_the_secret_and_must_be_https() {
        let gov = r#"{"tenant_id": "t", "client_id": "c", "federated_token": "eyJ...",
                      "authority_host": "https://login.microsoftonline.us/",
                      "resource_manager": "https://management.usgovcloudapi.net"}"#;
        let identity = identity_from_secret("s", gov, &http()).unwrap();
        assert_eq!(identity.cloud.authority_host, "https://login.microsoftonline.us");
        assert_eq!(identity.cloud.scope(), "https://management.usgovcloudapi.net/.default");
        let clear = r#"{"tenant_id": "t", "client_id": "c", "client_secret": "s", "resource_manager": "http://rm"}"#;
        let err = identity_from_secret("s", clear, &http()).unwrap_err().to_string();
        assert!(err.contains("resource_manager \"http://rm\" must be an https:// URL"), "{err}");
    }

    #[test]
    fn a_bad_secret_is_refused_naming_the_secret_and_field_and_never_a_value() {
        let cases = [
            (r#"{"tenant_id": "t", "client_id": "c"}"#, "client_secret (or federated_token) is required"),
            (r#"{"tenant_id": "t", "client_id": "c", "client_secret": "hunter2", "federated_token": "x"}"#, "not both"),
            (
                r#"{"tenant_id": "t", "client_id": "c", "client_secret": "hunter2", "colour": 1}"#,
                "unknown field `colour`",
            ),
            (r#"{"tenant_id": 7, "client_id": "c", "client_secret": "hunter2"}"#, "`tenant_id` has the wrong type"),
            (r#"hunter2"#, "not JSON"),
            (r#"{"client_id": "c", "client_secret": "hunter2"}"#, "missing field `tenant_id`"),
        ];
        for (text, expected) in cases {
            let err = identity_from_secret("coalmine/azure", text, &http()).unwrap_err().to_string();
            assert!(err.contains("the Azure credentials secret coalmine/azure"), "{err}");
            assert!(err.contains(expected), "{expected} in {err}");
            assert!(!err.contains("hunter2"), "the secret leaked: {err}");
        }
    }

    #[tokio::test]
    async fn the_developer_chain_prefers_a_service_principal_in_the_environment_then_az_login() {
        fn principal(name: &str) -> Option<String> {
            match name {
                AZURE_TENANT_ID => Some("72f988bf-86f1-41af-91ab-2d7cd011db47".into()),
                AZURE_CLIENT_ID => Some("c".into()),
                AZURE_CLIENT_SECRET => Some("s".into()),
                _ => None,
            }
        }
        let identity = DeveloperIdentity { lookup: principal }.load(&http()).await.unwrap();
        assert!(format!("{:?}", identity.credential).contains("ClientSecretCredential"));
        let identity = DeveloperIdentity { lookup: |_| None }.load(&http()).await.unwrap();
        assert!(format!("{:?}", identity.credential).contains("AzureCliCredential"));
        fn insecure(name: &str) -> Option<String> {
            (name == AZURE_AUTHORITY_HOST).then(|| "http://login.example".into())
        }
        let err = DeveloperIdentity { lookup: insecure }.load(&http()).await.unwrap_err().to_string();
        assert!(err.contains("authority_host \"http://login.example\" must be an https:// URL"), "{err}");
    }
}
