//! Reflects discount redemptions made outside Polar on Polar's discount limits,
//! exactly once per order. See docs/design.md for the design.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod backoff;
pub mod config;
pub mod deadline;
pub mod domain;
pub mod failure;
pub mod lambda;
pub mod ports;
pub mod relay;
pub mod sync;
pub mod telemetry;
#[cfg(test)]
mod use_case_tests;

/// `text` cut to at most `max_chars` characters, with an ellipsis when it was cut.
pub(crate) fn truncate_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An error and its sources, outermost first, on one line for logs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
