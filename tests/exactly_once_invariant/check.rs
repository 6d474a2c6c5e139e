//! The invariant checker: once the source queue is empty, Polar, the orders table, the
//! sync table and the dead-letter queue must show what exactly-once demands.
//!
//! - Every message ended: acknowledged (synced, or dead-lettered by the function with its
//!   reason), or moved to the dead-letter queue by the redrive policy after
//!   `maxReceiveCount` receives. With a visibility shorter than an invocation, a message
//!   received again while in flight may end twice; that is reported, not an error.
//! - Every order is synced, unless every message of it was dead-lettered; then Polar
//!   must not have counted it either.
//! - Each discount's `max_redemptions` went down by exactly its synced orders, or the
//!   discount was deleted at its last use; no journal is left behind once the scheduled
//!   reconciliation has run. So no order is counted on Polar but left unmarked.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;

use super::faults::STEPS;
use super::report::Stats;
use super::support::event_source::{Answer, EventSource};
use super::support::queues::DeadLetter;
use super::support::World;
use super::workload::Workload;

/// A message the checkout sent.
pub struct Sent {
    pub id: String,
    pub order: String,
    pub body: String,
}

/// What the queue check leaves for the order check.
struct QueueVerdict {
    /// Orders every message of which was dead-lettered.
    dead_lettered_orders: HashSet<String>,
    notes: Vec<String>,
}

/// Every message's end, from the event source's log and the dead-letter queue.
async fn check_queue(
    sent: &[Sent],
    source: &EventSource,
    dead_letters: &[DeadLetter],
    seed: u64,
    problems: &mut Vec<String>,
) -> QueueVerdict {
    let queues = &source.queues;
    let max = queues.max_receive_count;
    let outstanding = queues.outstanding().await;
    if outstanding != 0 || source.in_flight() != 0 {
        problems.push(format!(
            "seed {seed}: queue not settled: {outstanding} messages left, {} invocations running",
            source.in_flight()
        ));
    }
    let strangers = source.strangers();
    if !strangers.is_empty() {
        problems.push(format!(
            "seed {seed}: batchItemFailures named messages not in the batch: {strangers:?}"
        ));
    }
    for invocation in source.invocations() {
        if let Some(Answer::Errored(error)) = &invocation.answer {
            problems.push(format!(
                "seed {seed}: an invocation failed as a whole: {error}"
            ));
        }
    }

    let mut acknowledged: HashMap<String, usize> = HashMap::new();
    for id in source.acknowledged() {
        *acknowledged.entry(id).or_default() += 1;
    }
    let mut most_receives: HashMap<String, u32> = HashMap::new();
    for receipt in source.receipts() {
        let most = most_receives.entry(receipt.message_id).or_default();
        *most = (*most).max(receipt.receive_count);
    }
    let sent_ids: HashSet<&str> = sent.iter().map(|m| m.id.as_str()).collect();
    let mut letters: HashMap<&str, Vec<&DeadLetter>> = HashMap::new();
    for letter in dead_letters {
        if !sent_ids.contains(letter.original_message_id()) {
            problems.push(format!(
                "seed {seed}: a dead letter for a message never sent: {letter:?}"
            ));
        }
        letters
            .entry(letter.original_message_id())
            .or_default()
            .push(letter);
    }

    let mut dead: HashSet<&str> = HashSet::new();
    let mut twice = 0;
    let mut ended_again = 0;
    for message in sent {
        let id = message.id.as_str();
        let here = |p: String| format!("seed {seed}: message {id} (order {}): {p}", message.order);
        let acks = acknowledged.get(id).copied().unwrap_or(0);
        let its_letters = letters.get(id).map(Vec::as_slice).unwrap_or_default();
        let moved = its_letters.iter().filter(|l| !l.sent_by_function()).count();
        let receives = most_receives.get(id).copied().unwrap_or(0);
        // The queue's visibility is shorter than an invocation: a message may come back,
        // and end, while an earlier receive of it is still being processed. Each message
        // must end; the orders are what must be counted exactly once (checked below).
        if acks + moved == 0 {
            problems.push(here(format!(
                "acknowledged {acks} times and moved by the redrive policy {moved} times; \
                 it never ended"
            )));
        }
        ended_again += usize::from(acks + moved > 1);
        if moved > 0 && receives != max {
            problems.push(here(format!(
                "moved to the dead-letter queue after {receives} receives, not {max}"
            )));
        }
        for letter in its_letters.iter().filter(|l| l.sent_by_function()) {
            let (class, kind) = (
                letter.attribute("ErrorClass"),
                letter.attribute("ErrorKind"),
            );
            // Every body is valid and every order exists and matches: only the retries
            // running out on the last receive may dead-letter a message.
            if class == "permanent" {
                problems.push(here(format!("dead-lettered as permanent: {letter:?}")));
            }
            if letter.attribute("ReceiveCount") != max.to_string() {
                problems.push(here(format!(
                    "dead-lettered ({class} {kind}) on receive {}, not on its last ({max})",
                    letter.attribute("ReceiveCount")
                )));
            }
            if letter.attribute("Reason").trim().is_empty()
                || letter.attribute("SourceQueueArn") != queues.source_arn
                || letter.body != message.body
            {
                problems.push(here(format!(
                    "a dead letter without its reason, source or body: {letter:?}"
                )));
            }
        }
        if !its_letters.is_empty() {
            dead.insert(id);
            twice += usize::from(its_letters.len() > 1);
        }
    }

    let mut orders: HashMap<&str, bool> = HashMap::new();
    for message in sent {
        let all_dead = orders.entry(&message.order).or_insert(true);
        *all_dead &= dead.contains(message.id.as_str());
    }
    let mut notes = Vec::new();
    if ended_again > 0 {
        notes.push(format!(
            "{ended_again} messages ended more than once: received again while still in flight"
        ));
    }
    if twice > 0 {
        notes.push(format!(
            "{twice} messages dead-lettered twice (an invocation that dead-lettered it gave no answer)"
        ));
    }
    QueueVerdict {
        dead_lettered_orders: orders
            .into_iter()
            .filter(|(_, all_dead)| *all_dead)
            .map(|(order, _)| order.to_owned())
            .collect(),
        notes,
    }
}

/// Problems found (empty: the invariant holds), and notes for the report.
#[allow(clippy::too_many_arguments)]
pub async fn check_invariants(
    world: &World,
    workload: &Workload,
    sent: &[Sent],
    source: &EventSource,
    dead_letters: &[DeadLetter],
    stats: &Stats,
    seed: u64,
    started_at: SystemTime,
) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut details = String::new();
    let queue = check_queue(sent, source, dead_letters, seed, &mut problems).await;
    for step in STEPS {
        if stats.crashes_at(step) == 0 {
            problems.push(format!(
                "seed {seed}: no simulated crash at {step:?}: the run did not cover that step"
            ));
        }
    }

    let items = world.orders(&workload.all_orders()).await;
    let mut never_synced = 0;
    let now = SystemTime::now();
    let requests = world.polar.requests();

    for discount in &workload.discounts {
        let mut here = Vec::new();
        let mut actions: HashMap<String, usize> = HashMap::new();
        let mut synced = 0i64;
        for order in &discount.orders {
            let Some(item) = items.get(order) else {
                here.push(format!("order {order} is missing from the orders table"));
                continue;
            };
            let flag = item
                .get("polarDiscountSynced")
                .and_then(|v| v.as_bool().ok());
            if flag != Some(&true) {
                if queue.dead_lettered_orders.contains(order) {
                    // Every message of it was dead-lettered: it must not be counted on
                    // Polar either, which the count below checks.
                    never_synced += 1;
                } else {
                    here.push(format!("order {order} is not synced ({flag:?})"));
                }
                continue;
            }
            synced += 1;
            let action = item
                .get("polarDiscountSyncAction")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_else(|| "(none)".to_owned());
            *actions.entry(action).or_default() += 1;
            match item
                .get("polarDiscountSyncedAt")
                .and_then(|v| v.as_s().ok())
            {
                Some(at) if is_rfc3339_utc_between(at, started_at, now) => {}
                other => here.push(format!(
                    "order {order}: polarDiscountSyncedAt {other:?} is not an RFC 3339 UTC time of this run"
                )),
            }
            if item.contains_key("polarDiscountSyncClaim") {
                here.push(format!("order {order}: synced but still claimed"));
            }
            if item.get("discountCode").and_then(|v| v.as_s().ok()) != Some(&discount.code)
                || item
                    .get("total")
                    .and_then(|v| v.as_n().ok())
                    .map(String::as_str)
                    != Some("1990")
            {
                here.push(format!("order {order}: checkout's attributes were changed"));
            }
        }

        let count = |name: &str| actions.get(name).copied().unwrap_or(0) as i64;
        let (decremented, deleted, already_deleted, skipped) = (
            count("decremented"),
            count("deleted"),
            count("already_deleted"),
            count("skipped_unlimited"),
        );
        let known = decremented + deleted + already_deleted + skipped;
        if known != synced {
            here.push(format!("unknown actions among {actions:?}"));
        }
        let state = world.max_redemptions(discount.id);
        match discount.initial {
            None => {
                if state != Some(None) {
                    here.push(format!("unlimited discount is now {state:?}"));
                }
                if skipped != synced {
                    here.push(format!(
                        "unlimited discount: actions {actions:?}, all should be skipped_unlimited"
                    ));
                }
            }
            Some(initial) => {
                let expected_left = initial - synced;
                if skipped != 0 {
                    here.push(format!(
                        "limited discount with skipped_unlimited orders: {actions:?}"
                    ));
                }
                if expected_left > 0 {
                    if state != Some(Some(expected_left)) {
                        here.push(format!(
                            "max_redemptions is {state:?}, expected {expected_left} (initial {initial} − {synced} orders synced)"
                        ));
                    }
                    if deleted + already_deleted != 0 {
                        here.push(format!(
                            "not deleted, yet orders were recorded as deleted: {actions:?}"
                        ));
                    }
                } else {
                    if state.is_some() {
                        here.push(format!(
                            "should be deleted (initial {initial} − {synced} orders synced = {expected_left}), but Polar has {state:?}"
                        ));
                    }
                    // One write deleted it, counting the orders marked `deleted`; the
                    // decrements before it left at least 1; orders after it found it gone.
                    if deleted == 0 {
                        here.push(format!(
                            "no order was recorded as deleted (the last use deletes): {actions:?}"
                        ));
                    }
                    if decremented > initial - 1 {
                        here.push(format!(
                            "{decremented} orders recorded as decremented, but a limit of {initial} allows at most {}",
                            initial - 1
                        ));
                    }
                    if decremented + deleted < initial {
                        here.push(format!(
                            "deleted after {decremented} decrements and a final write of {deleted} orders: {} uses were never counted",
                            initial - decremented - deleted
                        ));
                    }
                }
            }
        }
        let sync_item = world.sync_item(discount.id).await;
        if sync_item.contains_key("journal") {
            here.push(format!(
                "journal left on the sync item: {:?}",
                sync_item.get("journal")
            ));
        }

        if !here.is_empty() {
            let _ = writeln!(
                details,
                "== discount {} {} ({:?}, initial {:?}, {} orders): {actions:?}, Polar now {state:?}",
                discount.id,
                discount.code,
                discount.kind,
                discount.initial,
                discount.orders.len()
            );
            for order in &discount.orders {
                let item = items.get(order);
                let field = |name: &str| {
                    item.and_then(|i| i.get(name))
                        .map(show)
                        .unwrap_or_else(|| "-".to_owned())
                };
                let _ = writeln!(
                    details,
                    "   {order}: synced={} action={} at={} claim={}",
                    field("polarDiscountSynced"),
                    field("polarDiscountSyncAction"),
                    field("polarDiscountSyncedAt"),
                    field("polarDiscountSyncClaim")
                );
            }
            let path = format!("/v1/discounts/{}", discount.id);
            for request in requests.iter().filter(|r| r.path == path) {
                let _ = writeln!(
                    details,
                    "   polar @{:>7} ms {} {} -> {:?}",
                    request.received_at_us / 1000,
                    request.method,
                    request.body,
                    request.status
                );
            }
            let _ = writeln!(details, "   sync item: {sync_item:?}");
        }
        problems.extend(here.into_iter().map(|p| {
            format!(
                "seed {seed}: discount {} ({:?}, {}): {p}",
                discount.code, discount.kind, discount.id
            )
        }));
    }

    // The Polar request log: only the workload's discounts, and no PATCH below 1.
    let known: HashSet<String> = workload
        .discounts
        .iter()
        .map(|d| format!("/v1/discounts/{}", d.id))
        .collect();
    for request in &requests {
        if !known.contains(&request.path) {
            problems.push(format!(
                "seed {seed}: request to a discount outside the workload: {} {}",
                request.method, request.path
            ));
        }
        if request.method == "PATCH" {
            let max = serde_json::from_str::<Value>(&request.body)
                .ok()
                .and_then(|body| body.get("max_redemptions").cloned());
            if !matches!(max.as_ref().and_then(Value::as_i64), Some(n) if n >= 1) {
                problems.push(format!(
                    "seed {seed}: PATCH {} with max_redemptions {max:?} (Polar rejects < 1)",
                    request.path
                ));
            }
        }
    }

    if !details.is_empty() {
        println!("seed {seed}: failing discounts in detail:\n{details}");
    }
    let mut notes = queue.notes;
    if never_synced > 0 {
        notes.push(format!(
            "{never_synced} orders not synced: all their messages were dead-lettered, \
             and Polar did not count them"
        ));
    }
    (problems, notes)
}

fn is_rfc3339_utc_between(at: &str, from: SystemTime, to: SystemTime) -> bool {
    if !at.ends_with('Z') {
        return false;
    }
    let Ok(parsed) = DateTime::from_str(at, DateTimeFormat::DateTime) else {
        return false;
    };
    let Ok(parsed) = SystemTime::try_from(parsed) else {
        return false;
    };
    // Allow for a coarse clock.
    let slack = Duration::from_secs(1);
    parsed + slack >= from && parsed <= to + slack
}

fn show(value: &AttributeValue) -> String {
    match value {
        AttributeValue::S(s) => s.clone(),
        AttributeValue::N(n) => n.clone(),
        AttributeValue::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}
