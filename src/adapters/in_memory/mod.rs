//! In-memory ports for fast use-case tests: same semantics as the real adapters,
//! with scripted Polar answers.

mod polar;
mod queue;
mod relay;
mod store;

pub use polar::{Call, InMemoryDiscounts, On, Scripted};
pub use queue::InMemoryQueue;
pub use relay::InMemoryRelay;
pub use store::{InMemoryStore, StoredDiscount, StoredOrder};
