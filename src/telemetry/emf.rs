//! CloudWatch Embedded Metric Format: metrics as JSON log lines on stdout, which CloudWatch
//! Logs turns into metrics without an API call from the function.
//! <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use serde_json::{json, Map, Value};

use super::metrics::Recorded;

/// The metrics' namespace; their one dimension is the function's name.
pub const NAMESPACE: &str = "PolarDiscountSync";
pub const DIMENSION: &str = "FunctionName";

/// The specification's limit on values of one metric in one document.
const MAX_VALUES: usize = 100;

/// The documents that publish `recorded`: counts in the first, distributions spread over
/// as many as their values need. None when nothing was recorded.
pub fn documents(
    recorded: &Recorded,
    function_name: &str,
    request_id: &str,
    timestamp_ms: u64,
) -> Vec<Value> {
    let chunks = recorded
        .distributions
        .values()
        .map(|values| values.len().div_ceil(MAX_VALUES))
        .max()
        .unwrap_or(0)
        .max(usize::from(!recorded.counts.is_empty()));
    (0..chunks)
        .map(|chunk| {
            let mut definitions = Vec::new();
            let mut document = Map::new();
            document.insert(DIMENSION.into(), function_name.into());
            document.insert("requestId".into(), request_id.into());
            if chunk == 0 {
                for (count, value) in &recorded.counts {
                    definitions.push(json!({"Name": count.name(), "Unit": "Count"}));
                    document.insert(count.name().into(), (*value).into());
                }
            }
            for (distribution, values) in &recorded.distributions {
                let values: Vec<f64> = values
                    .chunks(MAX_VALUES)
                    .nth(chunk)
                    .map(|slice| {
                        slice
                            .iter()
                            .map(|v| (v * 1000.0).round() / 1000.0)
                            .collect()
                    })
                    .unwrap_or_default();
                if !values.is_empty() {
                    definitions
                        .push(json!({"Name": distribution.name(), "Unit": distribution.unit()}));
                    document.insert(distribution.name().into(), values.into());
                }
            }
            document.insert(
                "_aws".into(),
                json!({
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": NAMESPACE,
                        "Dimensions": [[DIMENSION]],
                        "Metrics": definitions,
                    }],
                }),
            );
            Value::Object(document)
        })
        .collect()
}

/// Writes the documents to stdout, one JSON line each, where Lambda hands them to
/// CloudWatch Logs.
pub fn publish(recorded: &Recorded, function_name: &str, request_id: &str) {
    use std::io::Write;
    let now_ms = crate::deadline::epoch_ms(std::time::SystemTime::now());
    let mut stdout = std::io::stdout().lock();
    for document in documents(recorded, function_name, request_id, now_ms) {
        // Nothing sensible to do when stdout is gone: the logs are gone too.
        let _ = writeln!(stdout, "{document}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{Count, Distribution, Metrics};

    #[test]
    fn counts_and_distributions_go_out_as_one_document_with_their_definitions() {
        let metrics = Metrics::default();
        metrics.count(Count::OrdersDecremented, 3);
        metrics.count(Count::DeadLettered, 1);
        metrics.observe(Distribution::PolarLatency, 51.2345);
        metrics.observe(Distribution::PolarLatency, 48.0);
        metrics.observe(Distribution::OrdersPerWrite, 3.0);

        let documents = documents(&metrics.take(), "sync-fn", "req-1", 1_700_000_000_000);

        assert_eq!(
            documents,
            vec![json!({
                "_aws": {
                    "Timestamp": 1_700_000_000_000u64,
                    "CloudWatchMetrics": [{
                        "Namespace": "PolarDiscountSync",
                        "Dimensions": [["FunctionName"]],
                        "Metrics": [
                            {"Name": "OrdersDecremented", "Unit": "Count"},
                            {"Name": "DeadLettered", "Unit": "Count"},
                            {"Name": "PolarLatency", "Unit": "Milliseconds"},
                            {"Name": "OrdersPerWrite", "Unit": "Count"},
                        ],
                    }],
                },
                "FunctionName": "sync-fn",
                "requestId": "req-1",
                "OrdersDecremented": 3,
                "DeadLettered": 1,
                "PolarLatency": [51.235, 48.0],
                "OrdersPerWrite": [3.0],
            })]
        );
    }

    #[test]
    fn more_than_a_hundred_values_spread_over_documents_and_counts_are_published_once() {
        let metrics = Metrics::default();
        metrics.count(Count::OrdersDecremented, 250);
        for i in 0..250 {
            metrics.observe(Distribution::PolarLatency, f64::from(i));
        }

        let documents = documents(&metrics.take(), "sync-fn", "req-1", 0);

        let latencies: Vec<usize> = documents
            .iter()
            .map(|d| d["PolarLatency"].as_array().unwrap().len())
            .collect();
        assert_eq!(latencies, [100, 100, 50]);
        let decremented: Vec<&Value> = documents
            .iter()
            .filter_map(|d| d.get("OrdersDecremented"))
            .collect();
        assert_eq!(decremented, [&json!(250)]);
        for document in &documents {
            let defined: Vec<&str> = document["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["Name"].as_str().unwrap())
                .collect();
            for name in &defined {
                assert!(document.get(*name).is_some(), "{name} defined but absent");
            }
        }
    }

    #[test]
    fn an_invocation_that_recorded_nothing_publishes_nothing() {
        assert!(documents(&Recorded::default(), "sync-fn", "req-1", 0).is_empty());
    }
}
