//! The seeded workload: a dozen and more discounts of every kind, 1 000+ orders written as
//! checkout writes them, and their messages (some twice), shuffled.

use fastrand::Rng;
use uuid::Uuid;

use super::support::{body, World};

const DISCOUNTS_PER_KIND: usize = 4;
const MIN_ORDERS: usize = 1_000;
const ORDERS_PER_DISCOUNT: std::ops::RangeInclusive<usize> = 45..=75;
/// Share of orders whose message is delivered twice by the checkout side (SQS duplicates).
const DUPLICATE_SHARE: f64 = 0.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unlimited,
    Large,
    ExactlyEnough,
    Oversold,
}

pub struct DiscountPlan {
    pub id: Uuid,
    pub code: String,
    pub kind: Kind,
    pub initial: Option<i64>,
    pub orders: Vec<String>,
}

pub struct Workload {
    pub discounts: Vec<DiscountPlan>,
    /// (order id, body), in the order checkout sends them.
    pub messages: Vec<(String, String)>,
}

impl Workload {
    pub fn order_count(&self) -> usize {
        self.discounts.iter().map(|d| d.orders.len()).sum()
    }

    pub fn all_orders(&self) -> Vec<String> {
        self.discounts
            .iter()
            .flat_map(|d| d.orders.iter().cloned())
            .collect()
    }
}

/// Creates the discounts in the Polar double and the orders in the orders table.
pub async fn build_workload(world: &World, rng: &mut Rng) -> Workload {
    let kinds = [
        Kind::Unlimited,
        Kind::Large,
        Kind::ExactlyEnough,
        Kind::Oversold,
    ];
    let mut discounts = Vec::new();
    let mut total = 0;
    for round in 0..DISCOUNTS_PER_KIND {
        for kind in kinds {
            let index = discounts.len();
            let mut count = rng.usize(ORDERS_PER_DISCOUNT);
            // The last discount tops the workload up to the minimum.
            if round + 1 == DISCOUNTS_PER_KIND && kind == Kind::Oversold {
                count = count.max(MIN_ORDERS.saturating_sub(total));
            }
            total += count;
            let count_i64 = count as i64;
            let initial = match kind {
                Kind::Unlimited => None,
                Kind::Large => Some(count_i64 * rng.i64(3..=10) + rng.i64(0..=500)),
                Kind::ExactlyEnough => Some(count_i64),
                Kind::Oversold => Some(rng.i64(1..=count_i64 / 2)),
            };
            let letters: String = (0..4).map(|_| rng.uppercase()).collect();
            let code = format!("INV{index:02}{letters}");
            let id = world.discount(&code, initial);
            let orders = (0..count)
                .map(|n| format!("ord_{index:02}_{n:04}"))
                .collect();
            discounts.push(DiscountPlan {
                id,
                code,
                kind,
                initial,
                orders,
            });
        }
    }

    let rows: Vec<(String, Uuid, String)> = discounts
        .iter()
        .flat_map(|d| d.orders.iter().map(|o| (o.clone(), d.id, d.code.clone())))
        .collect();
    world.put_orders(&rows).await;

    let mut messages = Vec::new();
    for discount in &discounts {
        for order in &discount.orders {
            let copies = if rng.f64() < DUPLICATE_SHARE { 2 } else { 1 };
            for _ in 0..copies {
                let code = random_case(rng, &discount.code);
                messages.push((order.clone(), body(order, discount.id, &code)));
            }
        }
    }
    rng.shuffle(&mut messages);
    Workload {
        discounts,
        messages,
    }
}

fn random_case(rng: &mut Rng, code: &str) -> String {
    code.chars()
        .map(|c| {
            if rng.bool() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}
