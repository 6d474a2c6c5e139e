//! The Polar token from an SSM SecureString, fetched once per container.

use aws_sdk_ssm::Client;
use thiserror::Error;

use crate::config::AccessToken;

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("could not read SSM parameter {name}")]
    Request {
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("SSM parameter {name} has no value")]
    Empty { name: String },
}

pub async fn fetch_token(client: &Client, name: &str) -> Result<AccessToken, TokenError> {
    let output = client
        .get_parameter()
        .name(name)
        .with_decryption(true)
        .send()
        .await
        .map_err(|err| TokenError::Request {
            name: name.to_owned(),
            source: Box::new(err),
        })?;
    output
        .parameter
        .and_then(|p| p.value)
        .map(|value| value.trim().to_owned())
        .filter(|value| !value.is_empty())
        .map(AccessToken::new)
        .ok_or_else(|| TokenError::Empty {
            name: name.to_owned(),
        })
}
