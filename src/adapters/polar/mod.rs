//! Polar's discount API: the HTTP client, its models and its errors.

mod client;
mod error;
mod model;

pub use client::{HttpTimeouts, PolarClient};
pub use error::{Operation, PolarError};
pub use model::Discount;
