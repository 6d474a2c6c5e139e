//! Domain types: parsed at the edge, free of I/O.

mod journal;
mod message;
mod plan;

pub use journal::{Intent, Journal, Resolution};
pub use message::{
    DiscountCode, DiscountId, MessageError, OrderField, OrderId, SyncRequest, MAX_BODY_BYTES,
    MAX_ORDER_ID_LEN,
};
pub use plan::{Plan, SyncAction};
