#![forbid(unsafe_code)]

use lambda_runtime::service_fn;
use polar_discount_sync::lambda::{handler_from_env, report_init_error};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    polar_discount_sync::telemetry::logs::init();
    let handler = match handler_from_env().await {
        Ok(handler) => handler,
        Err(err) => {
            report_init_error(&err).await;
            return Err(err.into());
        }
    };
    lambda_runtime::run(service_fn(|event| handler.handle_event(event))).await
}
