//! Typed configuration read from the environment once per container.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use thiserror::Error;

use crate::sync::{RateShares, POLAR_LIMIT_PER_MINUTE, POLAR_SANDBOX_LIMIT_PER_MINUTE};

pub const DEFAULT_POLAR_API_URL: &str = "https://api.polar.sh/v1";
/// Polar's sandbox, whose organizations have a lower rate limit.
pub const SANDBOX_POLAR_HOST: &str = "sandbox-api.polar.sh";
pub const DEFAULT_MAXIMUM_CONCURRENCY: u32 = 2;
pub const DEFAULT_STREAM_RELAY_DELAY_SECONDS: u64 = 60;
/// SQS caps a message's delay at 15 minutes.
pub const MAX_STREAM_RELAY_DELAY_SECONDS: u64 = 900;

#[derive(Debug, Clone)]
pub struct Config {
    pub orders_table: String,
    pub sync_table: String,
    pub polar_api_url: PolarApiUrl,
    pub token_source: TokenSource,
    /// `DEAD_LETTER_QUEUE_URL`: where permanent failures go, with their reason.
    pub dead_letter_queue_url: Option<String>,
    /// `REDEMPTION_QUEUE_URL`: the queue the function is subscribed to, where records of
    /// the orders table's stream are relayed. Required only when the stream is connected.
    pub redemption_queue_url: Option<String>,
    /// `STREAM_RELAY_DELAY_SECONDS`: how long a relayed message waits in the queue, so that
    /// checkout's own message, usually on its way, comes first (0-900, default 60).
    pub stream_relay_delay: Duration,
    /// `MAX_RECEIVE_COUNT`: the source queue's redrive limit, when it should not be read
    /// from the queue's redrive policy.
    pub max_receive_count: Option<u32>,
    /// `POLAR_RATE_LIMIT_PER_MINUTE`: Polar requests per minute for all containers together;
    /// at most the organization's limit, 4/5 of it by default.
    pub polar_rate_limit_per_minute: u32,
    /// `MAXIMUM_CONCURRENCY`: the most containers the queue runs at once (the event source's
    /// `ScalingConfig.MaximumConcurrency`); each spends 1/N of the rate limit.
    pub maximum_concurrency: u32,
    /// Discounts synced at the same time within one invocation: every discount of a
    /// batch up to the template's batch size (100); a larger batch, possible only with
    /// another event source configuration, is worked through 100 at a time.
    pub max_concurrent_discounts: usize,
    pub polar_connect_timeout: Duration,
    pub polar_request_timeout: Duration,
    /// `SHADOW_MODE`: read, plan and log what would be written, but write nothing and
    /// acknowledge every message (for running beside another implementation).
    pub shadow_mode: bool,
}

/// Where the Polar organization access token comes from.
#[derive(Debug, Clone)]
pub enum TokenSource {
    /// `POLAR_ACCESS_TOKEN`, for local runs.
    Inline(AccessToken),
    /// `POLAR_ACCESS_TOKEN_PARAMETER`: an SSM SecureString, for deployments.
    SsmParameter(String),
}

/// A Polar access token. Never printed: `Debug` is redacted and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(token: String) -> Self {
        Self(token)
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// The Polar API base URL. Plain http is only allowed to loopback (local doubles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolarApiUrl(Url);

impl PolarApiUrl {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let url = Url::parse(raw).map_err(|e| e.to_string())?;
        let loopback = match url.host() {
            Some(url::Host::Domain(host)) => host == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => return Err("must use https (http is only allowed for loopback)".into()),
            other => return Err(format!("unsupported scheme {other:?}")),
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials".into());
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// Polar's requests per minute per organization at this URL: 100 in the sandbox, 500
    /// in production (and for local doubles, which play production).
    pub fn organization_limit_per_minute(&self) -> u32 {
        match self.0.host_str() {
            Some(SANDBOX_POLAR_HOST) => POLAR_SANDBOX_LIMIT_PER_MINUTE,
            _ => POLAR_LIMIT_PER_MINUTE,
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("environment variable {name} is required but not set")]
    Missing { name: &'static str },
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("no Polar token configured: set POLAR_ACCESS_TOKEN_PARAMETER (an SSM SecureString name) or, for local runs, POLAR_ACCESS_TOKEN")]
    NoToken,
}

impl Config {
    /// This container's share of the rate limit: R/N a minute, plus a burst that keeps
    /// all N containers together within the organization's limit in any minute.
    pub fn polar_rate_shares(&self) -> RateShares {
        RateShares::of(
            self.polar_api_url.organization_limit_per_minute(),
            self.polar_rate_limit_per_minute,
            self.maximum_concurrency,
        )
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| lookup(name).filter(|v| !v.trim().is_empty());
        let required = |name: &'static str| get(name).ok_or(ConfigError::Missing { name });

        let polar_api_url = match get("POLAR_API_URL") {
            Some(raw) => PolarApiUrl::parse(&raw).map_err(|reason| ConfigError::Invalid {
                name: "POLAR_API_URL",
                reason,
            })?,
            None => PolarApiUrl::parse(DEFAULT_POLAR_API_URL).expect("the default URL is valid"),
        };
        let token_source = match (
            get("POLAR_ACCESS_TOKEN_PARAMETER"),
            get("POLAR_ACCESS_TOKEN"),
        ) {
            (Some(parameter), _) => TokenSource::SsmParameter(parameter),
            (None, Some(token)) => TokenSource::Inline(AccessToken::new(token.trim().to_owned())),
            (None, None) => return Err(ConfigError::NoToken),
        };
        let positive =
            |name: &'static str, default: Option<u32>| -> Result<Option<u32>, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(raw) => match raw.trim().parse::<u32>() {
                        Ok(n) if n > 0 => Ok(Some(n)),
                        _ => Err(ConfigError::Invalid {
                            name,
                            reason: format!("{raw:?} is not a whole number above 0"),
                        }),
                    },
                }
            };
        let organization_limit = polar_api_url.organization_limit_per_minute();
        // Room for the shop's other tools, which share the organization's limit.
        let default_budget = organization_limit / 5 * 4;
        let polar_rate_limit_per_minute =
            positive("POLAR_RATE_LIMIT_PER_MINUTE", None)?.unwrap_or(default_budget);
        if polar_rate_limit_per_minute > organization_limit {
            return Err(ConfigError::Invalid {
                name: "POLAR_RATE_LIMIT_PER_MINUTE",
                reason: format!(
                    "{polar_rate_limit_per_minute} is above the {organization_limit} requests a \
                     minute Polar allows an organization at {}; {default_budget} leaves room \
                     for other tools",
                    polar_api_url.as_str(),
                ),
            });
        }
        let queue_url = |name: &'static str| {
            get(name)
                .map(|raw| {
                    Url::parse(raw.trim())
                        .map(|_| raw.trim().to_owned())
                        .map_err(|e| ConfigError::Invalid {
                            name,
                            reason: e.to_string(),
                        })
                })
                .transpose()
        };
        let dead_letter_queue_url = queue_url("DEAD_LETTER_QUEUE_URL")?;
        let redemption_queue_url = queue_url("REDEMPTION_QUEUE_URL")?;
        let stream_relay_delay_seconds = match get("STREAM_RELAY_DELAY_SECONDS") {
            None => DEFAULT_STREAM_RELAY_DELAY_SECONDS,
            Some(raw) => match raw.trim().parse::<u64>() {
                Ok(seconds) if seconds <= MAX_STREAM_RELAY_DELAY_SECONDS => seconds,
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "STREAM_RELAY_DELAY_SECONDS",
                        reason: format!(
                            "{raw:?} is not a whole number of seconds from 0 to {MAX_STREAM_RELAY_DELAY_SECONDS} (SQS's longest delay)"
                        ),
                    })
                }
            },
        };
        let shadow_mode = match get("SHADOW_MODE").as_deref().map(str::trim) {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "SHADOW_MODE",
                    reason: format!("{other:?} is neither \"true\" nor \"false\""),
                })
            }
        };
        Ok(Self {
            orders_table: required("ORDERS_TABLE")?,
            sync_table: required("SYNC_TABLE")?,
            polar_api_url,
            token_source,
            dead_letter_queue_url,
            redemption_queue_url,
            stream_relay_delay: Duration::from_secs(stream_relay_delay_seconds),
            max_receive_count: positive("MAX_RECEIVE_COUNT", None)?,
            polar_rate_limit_per_minute,
            maximum_concurrency: positive(
                "MAXIMUM_CONCURRENCY",
                Some(DEFAULT_MAXIMUM_CONCURRENCY),
            )?
            .unwrap_or(DEFAULT_MAXIMUM_CONCURRENCY),
            max_concurrent_discounts: 100,
            polar_connect_timeout: Duration::from_secs(2),
            polar_request_timeout: Duration::from_secs(5),
            shadow_mode,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::sync::RateShare;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("ORDERS_TABLE", "orders"),
        ("SYNC_TABLE", "sync"),
        ("POLAR_ACCESS_TOKEN", "polar_oat_secret"),
    ];

    #[test]
    fn a_minimal_local_environment_is_accepted_with_the_production_api_as_default() {
        let config = config(BASE).unwrap();
        assert_eq!(config.orders_table, "orders");
        assert_eq!(config.sync_table, "sync");
        assert_eq!(config.polar_api_url.as_str(), "https://api.polar.sh/v1");
        assert!(matches!(config.token_source, TokenSource::Inline(_)));
    }

    #[test]
    fn a_missing_table_is_reported_by_name() {
        let err = config(&BASE[1..]).unwrap_err();
        assert!(err.to_string().contains("ORDERS_TABLE"), "{err}");
        let err = config(&[BASE[0], BASE[2]]).unwrap_err();
        assert!(err.to_string().contains("SYNC_TABLE"), "{err}");
    }

    #[test]
    fn without_any_token_source_the_error_names_both_variables() {
        let err = config(&BASE[..2]).unwrap_err().to_string();
        assert!(err.contains("POLAR_ACCESS_TOKEN_PARAMETER") && err.contains("POLAR_ACCESS_TOKEN"));
    }

    #[test]
    fn the_ssm_parameter_is_preferred_over_an_inline_token() {
        let mut vars = BASE.to_vec();
        vars.push(("POLAR_ACCESS_TOKEN_PARAMETER", "/polar/token"));
        let config = config(&vars).unwrap();
        assert!(
            matches!(config.token_source, TokenSource::SsmParameter(ref p) if p == "/polar/token")
        );
    }

    #[test]
    fn plain_http_is_refused_except_for_loopback() {
        for ok in [
            "https://sandbox-api.polar.sh/v1",
            "http://127.0.0.1:8080/v1",
            "http://localhost:9/v1",
            "http://[::1]:9/v1",
        ] {
            assert!(PolarApiUrl::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.polar.sh/v1",
            "ftp://api.polar.sh/v1",
            "not a url",
            "https://user:pw@api.polar.sh/v1",
            "https://api.polar.sh/v1?x=1",
        ] {
            assert!(PolarApiUrl::parse(bad).is_err(), "{bad}");
        }
        let mut vars = BASE.to_vec();
        vars.push(("POLAR_API_URL", "http://api.polar.sh/v1"));
        let err = config(&vars).unwrap_err().to_string();
        assert!(err.contains("POLAR_API_URL"), "{err}");
    }

    #[test]
    fn the_rate_budget_is_shared_between_the_reconciliation_and_the_queues_containers() {
        let config = config(BASE).unwrap();
        assert_eq!(config.polar_rate_limit_per_minute, 400);
        assert_eq!(config.maximum_concurrency, 2);
        assert_eq!(
            config.polar_rate_shares(),
            RateShares {
                batches: RateShare {
                    per_minute: 190,
                    burst: 24
                },
                reconciliation: RateShare {
                    per_minute: 20,
                    burst: 1
                }
            }
        );
        let mut vars = BASE.to_vec();
        vars.extend([
            ("POLAR_RATE_LIMIT_PER_MINUTE", "90"),
            ("MAXIMUM_CONCURRENCY", "5"),
        ]);
        assert_eq!(config_of(&vars).polar_rate_shares().batches.per_minute, 17);
    }

    #[test]
    fn in_the_sandbox_the_budget_follows_its_lower_limit() {
        let mut vars = BASE.to_vec();
        vars.push(("POLAR_API_URL", "https://sandbox-api.polar.sh/v1"));
        let sandbox = config_of(&vars);
        assert_eq!(sandbox.polar_rate_limit_per_minute, 80);
        assert_eq!(
            sandbox.polar_rate_shares().batches,
            RateShare {
                per_minute: 38,
                burst: 4
            }
        );
        vars.push(("POLAR_RATE_LIMIT_PER_MINUTE", "400"));
        let err = config(&vars).unwrap_err().to_string();
        assert!(
            err.contains("POLAR_RATE_LIMIT_PER_MINUTE") && err.contains("100"),
            "{err}"
        );
    }

    #[test]
    fn queue_settings_are_optional_and_checked_when_set() {
        let minimal = config(BASE).unwrap();
        assert_eq!(minimal.dead_letter_queue_url, None);
        assert_eq!(minimal.max_receive_count, None);
        let mut vars = BASE.to_vec();
        vars.extend([
            (
                "DEAD_LETTER_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
            ),
            ("MAX_RECEIVE_COUNT", "5"),
        ]);
        let configured = config_of(&vars);
        assert_eq!(configured.max_receive_count, Some(5));
        assert!(configured.dead_letter_queue_url.is_some());
        for (name, bad) in [
            ("MAX_RECEIVE_COUNT", "0"),
            ("MAXIMUM_CONCURRENCY", "two"),
            ("DEAD_LETTER_QUEUE_URL", "not a url"),
        ] {
            let mut vars = BASE.to_vec();
            vars.push((name, bad));
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn the_stream_relay_needs_no_settings_and_checks_them_when_set() {
        let minimal = config(BASE).unwrap();
        assert_eq!(minimal.redemption_queue_url, None);
        assert_eq!(minimal.stream_relay_delay, Duration::from_secs(60));
        let mut vars = BASE.to_vec();
        vars.extend([
            (
                "REDEMPTION_QUEUE_URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/redemptions",
            ),
            ("STREAM_RELAY_DELAY_SECONDS", "0"),
        ]);
        let configured = config_of(&vars);
        assert_eq!(
            configured.redemption_queue_url.as_deref(),
            Some("https://sqs.us-east-1.amazonaws.com/123456789012/redemptions")
        );
        assert_eq!(configured.stream_relay_delay, Duration::ZERO);
        vars[4].1 = "900";
        assert_eq!(
            config_of(&vars).stream_relay_delay,
            Duration::from_secs(900)
        );
        for (name, bad) in [
            ("STREAM_RELAY_DELAY_SECONDS", "901"),
            ("STREAM_RELAY_DELAY_SECONDS", "-1"),
            ("STREAM_RELAY_DELAY_SECONDS", "1m"),
            ("REDEMPTION_QUEUE_URL", "redemptions"),
        ] {
            let mut vars = BASE.to_vec();
            vars.push((name, bad));
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn shadow_mode_is_off_unless_set_to_true_and_anything_but_true_or_false_is_refused_by_name() {
        assert!(!config(BASE).unwrap().shadow_mode);
        for (raw, on) in [
            ("true", true),
            ("false", false),
            (" true ", true),
            ("", false),
        ] {
            let mut vars = BASE.to_vec();
            vars.push(("SHADOW_MODE", raw));
            assert_eq!(config_of(&vars).shadow_mode, on, "{raw:?}");
        }
        for bad in ["yes", "1", "TRUE", "on"] {
            let mut vars = BASE.to_vec();
            vars.push(("SHADOW_MODE", bad));
            let err = config(&vars).unwrap_err().to_string();
            assert!(err.contains("SHADOW_MODE") && err.contains(bad), "{err}");
        }
    }

    fn config_of(vars: &[(&str, &str)]) -> Config {
        config(vars).unwrap()
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let config = config(BASE).unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("polar_oat_secret"), "{printed}");
        assert!(printed.contains("redacted"));
    }
}
