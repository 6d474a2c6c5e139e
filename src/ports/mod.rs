//! The outside systems the sync talks to, as small traits shaped by the use case and
//! answering in its terms. One adapter per backend lives in `adapters`, and classifies
//! its own errors into these; in-memory ones back the fast tests.

mod polar;
mod queue;
mod relay;
mod store;

pub use polar::{
    BoxError, DiscountLookup, DiscountView, Discounts, Lookup, PolarFailure, PolarFailureKind,
    WriteOutcome,
};
pub use queue::{
    DeadLetterReason, Delivery, Queue, QueueFailure, FIRST_SENT_AT, ORIGINAL_MESSAGE_ID,
    REQUEUE_COUNT,
};
pub use relay::{Relay, RelayFailure, RelayedMessage, UnreadableRecord};
pub use store::{
    Acquisition, ClaimOutcome, Committed, Coordination, HandOff, HeldLease, JournalIndex, Lease,
    LeaseAfter, OrderLedger, OrderReader, OrderRecord, OrderSnapshot, PendingJournal, QuickStart,
    StoreFailure, MAX_HANDED_OVER,
};
