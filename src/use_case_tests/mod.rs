//! Use-case tests on the in-memory ports: fast, no network. They sit outside `sync` so
//! that the use case itself never names an adapter.

mod batch;
mod contention;
mod counting;
mod journal;
mod kept_journal;
mod metrics;
mod polar_failures;
mod reconcile;
mod relay;
mod shadow;

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use futures_util::FutureExt;
use uuid::Uuid;

use crate::adapters::in_memory::{
    Call, InMemoryDiscounts, InMemoryQueue, InMemoryStore, On, Scripted, StoredDiscount,
    StoredOrder,
};
use crate::backoff::Backoff;
use crate::deadline::{epoch_ms, Deadline};
use crate::domain::{DiscountId, Intent, Journal, OrderId, SyncAction, SyncRequest};
use crate::failure::FailureClass;
use crate::ports::{Lease, OrderRecord, PolarFailure, PolarFailureKind};
use crate::sync::{
    process_batch, BatchSettings, Outcome, RateLimiter, RetryPolicy, Step, SyncError, Synced,
    Syncer,
};

const DISCOUNT: &str = "9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10";
const OTHER_DISCOUNT: &str = "0e6d1b9c-1f5c-4a59-9c43-2e8f0b3a7d21";

fn id(raw: &str) -> DiscountId {
    DiscountId::parse(raw).unwrap()
}

fn order(raw: &str) -> OrderId {
    OrderId::parse(raw.to_owned()).unwrap()
}

fn request(order: &str, discount: &str, code: &str) -> SyncRequest {
    SyncRequest::parse(&body(order, discount, code)).unwrap()
}

fn body(order: &str, discount: &str, code: &str) -> String {
    serde_json::json!({"orderId": order, "discountId": discount, "discountCode": code}).to_string()
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        backoff: Backoff {
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        },
        reserve: Duration::from_millis(10),
    }
}

type TestSyncer = Syncer<InMemoryStore, InMemoryDiscounts>;

fn syncer(store: InMemoryStore, discounts: InMemoryDiscounts) -> TestSyncer {
    Syncer::new(store, discounts, quick_retries())
}

fn deadline() -> Deadline {
    Deadline::after(Duration::from_secs(60))
}

async fn sync_one(s: &TestSyncer, request: SyncRequest) -> Outcome {
    let discount = request.discount_id;
    s.sync_discount(discount, &[request], deadline())
        .await
        .remove(0)
}

fn orders_of(s: &TestSyncer, n: usize, discount: &str, code: &str) -> Vec<SyncRequest> {
    let mut orders = s.store().orders.lock().unwrap();
    (0..n)
        .map(|i| {
            let name = format!("o{i}");
            orders.insert(
                name.clone(),
                StoredOrder {
                    record: Some(OrderRecord {
                        discount_id: Some(discount.to_owned()),
                        discount_code: Some(code.to_owned()),
                    }),
                    ..Default::default()
                },
            );
            request(&name, discount, code)
        })
        .collect()
}

fn assert_marked_once(s: &TestSyncer) {
    for (name, order) in s.store().orders.lock().unwrap().iter() {
        assert!(
            order.marks <= 1,
            "order {name} marked {} times",
            order.marks
        );
    }
}

/// A journal whose invocation died, its lease `expires_at_ms`.
fn orphaned(s: &TestSyncer, orders: &[&str], read: i64, intent: Intent, expires_at_ms: u64) {
    s.store().discounts.lock().unwrap().insert(
        id(DISCOUNT),
        StoredDiscount {
            lease: Some(Lease {
                token: Uuid::new_v4(),
                expires_at_ms,
                taken_at_ms: 0,
                turn_began_at_ms: 0,
            }),
            journal: Some(Journal {
                orders: orders.iter().map(|o| order(o)).collect(),
                read,
                intent,
            }),
            ..StoredDiscount::default()
        },
    );
}
