//! What the function tells its operators: log lines (`logs`), and counts and distributions
//! (`metrics`) published as CloudWatch Embedded Metric Format documents (`emf`).

pub mod emf;
pub mod logs;
pub mod metrics;

pub use logs::Ids;
pub use metrics::{Count, Distribution, Metrics, Recorded};
