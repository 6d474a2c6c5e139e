//! Lambda's SQS event source mapping (`test_kit::event_source`) with the handler as
//! production wires it as the function, in process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use polar_discount_sync::lambda::ProductionHandler;

#[allow(unused_imports)]
pub use test_kit::event_source::{Answer, Batch, EventSource, CLOCK_TOLERANCE};

use super::sqs::{event_of, failed_ids};

/// Receives one batch; if there is one, invokes `handler` with a deadline `timeout` away
/// and deletes what it acknowledged. Returns the invocation's index.
pub async fn poll(
    source: &EventSource,
    handler: &ProductionHandler,
    timeout: Duration,
) -> Option<usize> {
    let batch = source.receive(10).await?;
    let invocation = batch.invocation;
    let ids = batch.ids();
    let response = handler
        .handle(event_of(batch.records.clone(), timeout))
        .await
        .unwrap_or_else(|e| panic!("invocation {invocation} failed as a whole: {e}"));
    let failed = failed_ids(&response);
    for id in &failed {
        assert!(
            ids.contains(id),
            "invocation {invocation} reported {id} failed, which was not in its batch {ids:?}"
        );
    }
    source.finish(batch, Answer::Failed(failed)).await;
    Some(invocation)
}

/// Polls until the source queue holds nothing, visible or in flight.
pub async fn drain(
    source: &EventSource,
    handler: &ProductionHandler,
    timeout: Duration,
    bound: Duration,
    labels: &HashMap<String, String>,
) {
    let start = Instant::now();
    loop {
        if poll(source, handler, timeout).await.is_some() {
            continue;
        }
        if source.queues.outstanding().await == 0 {
            return;
        }
        if start.elapsed() > bound {
            panic!(
                "the source queue did not drain within {bound:?}; {} messages left.\n{}",
                source.queues.outstanding().await,
                source.history(labels)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
