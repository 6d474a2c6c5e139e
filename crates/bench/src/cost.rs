//! Cost per million redemptions, from a run's own counts: Lambda requests and GB-seconds
//! on arm64 (the invocations' measured durations, billed per millisecond rounded up, at
//! the memory size), DynamoDB on-demand request units (`counting_proxy::Capacity`), SQS
//! requests (the function's and the event source mapping's), and CloudWatch Logs ingestion
//! (what the function wrote, EMF included, plus Lambda's own lines per invocation).
//!
//! Not counted: the free tiers, Lambda's tiered duration discount, init (cold start) time
//! (every container is warm in the measurement; cold starts are rare per redemption), the
//! checkout's SendMessage (one per message for either algorithm), the event source's
//! ReceiveMessage requests that found the queue empty (the bench short-polls; Lambda's
//! pollers long-poll, whose idle cost is per hour, not per redemption), Polar, log storage
//! and data transfer.

use crate::container::LogBytes;
use crate::workloads::{Algorithm, Measurement};

// us-east-1 public on-demand prices, as of 2026-12-05, from aws.amazon.com/lambda/pricing,
// /dynamodb/pricing/on-demand (after the 2024-11-01 price cut), /sqs/pricing and
// /cloudwatch/pricing.
/// Lambda on arm64, per GB-second (first 7.5 billion GB-s a month).
pub const LAMBDA_ARM64_PER_GB_SECOND: f64 = 0.000_013_333_4;
/// Lambda, per request (either architecture): $0.20 per million.
pub const LAMBDA_PER_REQUEST: f64 = 0.20 / 1e6;
/// DynamoDB on-demand, per write request unit: $0.625 per million.
pub const DYNAMODB_PER_WRITE_UNIT: f64 = 0.625 / 1e6;
/// DynamoDB on-demand, per read request unit: $0.125 per million.
pub const DYNAMODB_PER_READ_UNIT: f64 = 0.125 / 1e6;
/// SQS standard queue, per request (after the first million a month): $0.40 per million.
pub const SQS_PER_REQUEST: f64 = 0.40 / 1e6;
/// CloudWatch Logs ingestion (standard class; Lambda's logs, first tier), per GB (2^30 bytes).
pub const LOGS_PER_GB: f64 = 0.50;
const GB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The function's `MemorySize` in template.yaml (checked by a test).
pub const FUNCTION_MEMORY_MB: u64 = 128;
/// The original's memory size: not in its reference; taken to be the same 128 MB.
pub const ORIGINAL_MEMORY_MB: u64 = 128;

/// The lines Lambda itself writes to the log group per invocation, with the template's
/// `LogFormat: JSON` (the function): `platform.start` and `platform.report`.
const JSON_PLATFORM_LINES: [&str; 2] = [
    r#"{"time":"2026-12-05T12:00:00.000Z","type":"platform.start","record":{"requestId":"6f7f0961-7a6e-4b3c-9e1f-1d2c3b4a5f60","version":"$LATEST"}}"#,
    r#"{"time":"2026-12-05T12:00:00.250Z","type":"platform.report","record":{"requestId":"6f7f0961-7a6e-4b3c-9e1f-1d2c3b4a5f60","metrics":{"durationMs":250.123,"billedDurationMs":251,"memorySizeMB":128,"maxMemoryUsedMB":18},"status":"success"}}"#,
];
/// The same in Lambda's default text format (the original): START, END and REPORT.
const TEXT_PLATFORM_LINES: [&str; 3] = [
    "START RequestId: 6f7f0961-7a6e-4b3c-9e1f-1d2c3b4a5f60 Version: $LATEST",
    "END RequestId: 6f7f0961-7a6e-4b3c-9e1f-1d2c3b4a5f60",
    "REPORT RequestId: 6f7f0961-7a6e-4b3c-9e1f-1d2c3b4a5f60\tDuration: 1180.12 ms\t\
     Billed Duration: 1181 ms\tMemory Size: 128 MB\tMax Memory Used: 80 MB\t",
];

fn bytes_of(lines: &[&str]) -> u64 {
    lines.iter().map(|line| line.len() as u64 + 1).sum()
}

/// What Lambda writes per invocation for `algorithm`, in bytes.
pub fn platform_log_bytes(algorithm: Algorithm) -> u64 {
    match algorithm {
        Algorithm::Function => bytes_of(&JSON_PLATFORM_LINES),
        Algorithm::Original => bytes_of(&TEXT_PLATFORM_LINES),
    }
}

/// The counts a run's cost is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// Distinct orders: what the cost is per.
    pub redemptions: u64,
    pub invocations: u64,
    /// The invocations' durations, each rounded up to the millisecond, summed.
    pub billed_millis: u64,
    pub memory_mb: u64,
    pub write_units: u64,
    pub read_units: f64,
    pub sqs_requests: u64,
    /// The function's own lines (EMF included) and Lambda's per invocation.
    pub log_bytes: u64,
}

impl Usage {
    pub fn of(m: &Measurement) -> Usage {
        let invocations = m.progress.invocations as u64;
        Usage {
            redemptions: m.orders as u64,
            invocations,
            billed_millis: m.progress.billed_millis,
            memory_mb: match m.algorithm {
                Algorithm::Function => FUNCTION_MEMORY_MB,
                Algorithm::Original => ORIGINAL_MEMORY_MB,
            },
            write_units: m.capacity.write_units,
            read_units: m.capacity.read_units(),
            sqs_requests: sqs_requests(m),
            log_bytes: log_bytes(m.logged, invocations, m.algorithm),
        }
    }

    pub fn gb_seconds(&self) -> f64 {
        self.billed_millis as f64 / 1000.0 * self.memory_mb as f64 / 1024.0
    }
}

/// The function's own SQS requests, and the event source mapping's receives that returned
/// messages and its deletes.
pub fn sqs_requests(m: &Measurement) -> u64 {
    m.aws_requests.sqs() + (m.progress.receive_requests + m.progress.delete_requests) as u64
}

pub fn log_bytes(logged: LogBytes, invocations: u64, algorithm: Algorithm) -> u64 {
    logged.bytes + invocations * platform_log_bytes(algorithm)
}

/// Dollars per million redemptions, by component.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CostPerMillion {
    pub lambda_requests: f64,
    pub lambda_duration: f64,
    pub dynamodb_writes: f64,
    pub dynamodb_reads: f64,
    pub sqs: f64,
    pub logs: f64,
}

impl CostPerMillion {
    /// `None` without a redemption to divide by.
    pub fn of(usage: &Usage) -> Option<CostPerMillion> {
        if usage.redemptions == 0 {
            return None;
        }
        let scale = 1e6 / usage.redemptions as f64;
        Some(CostPerMillion {
            lambda_requests: usage.invocations as f64 * LAMBDA_PER_REQUEST * scale,
            lambda_duration: usage.gb_seconds() * LAMBDA_ARM64_PER_GB_SECOND * scale,
            dynamodb_writes: usage.write_units as f64 * DYNAMODB_PER_WRITE_UNIT * scale,
            dynamodb_reads: usage.read_units * DYNAMODB_PER_READ_UNIT * scale,
            sqs: usage.sqs_requests as f64 * SQS_PER_REQUEST * scale,
            logs: usage.log_bytes as f64 / GB * LOGS_PER_GB * scale,
        })
    }

    pub fn total(&self) -> f64 {
        self.lambda_requests
            + self.lambda_duration
            + self.dynamodb_writes
            + self.dynamodb_reads
            + self.sqs
            + self.logs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(actual: f64, expected: f64) -> bool {
        (actual - expected).abs() < 1e-9
    }

    #[test]
    fn ten_redemptions_in_one_invocation_cost_what_the_hand_computation_says() {
        let usage = Usage {
            redemptions: 10,
            invocations: 1,
            billed_millis: 200,
            memory_mb: 128,
            write_units: 30,
            read_units: 2.5,
            sqs_requests: 2,
            log_bytes: 10_000,
        };
        let cost = CostPerMillion::of(&usage).expect("there are redemptions");
        // × 100,000 to a million redemptions.
        // 1 request × $0.20/1e6 × 1e5
        assert!(close(cost.lambda_requests, 0.02));
        // 0.2 s × 0.125 GB = 0.025 GB-s × $0.0000133334 × 1e5
        assert!(close(cost.lambda_duration, 0.0333335));
        // 30 WRU × $0.625/1e6 × 1e5
        assert!(close(cost.dynamodb_writes, 1.875));
        // 2.5 RRU × $0.125/1e6 × 1e5
        assert!(close(cost.dynamodb_reads, 0.03125));
        // 2 requests × $0.40/1e6 × 1e5
        assert!(close(cost.sqs, 0.08));
        // 1e9 bytes = 0.931322574615… GB × $0.50
        assert!(close(cost.logs, 0.465_661_287_307_739_26));
        assert!(close(
            cost.total(),
            0.02 + 0.0333335 + 1.875 + 0.03125 + 0.08 + 0.465_661_287_307_739_26
        ));
    }

    #[test]
    fn a_run_without_redemptions_has_no_cost_per_redemption() {
        assert_eq!(CostPerMillion::of(&Usage::default()), None);
    }

    #[test]
    fn a_million_redemptions_at_a_gb_second_each_cost_the_gb_second_price_a_million_times() {
        let usage = Usage {
            redemptions: 1,
            invocations: 0,
            billed_millis: 1000,
            memory_mb: 1024,
            ..Usage::default()
        };
        let cost = CostPerMillion::of(&usage).unwrap();
        assert!(close(cost.lambda_duration, 13.3334));
        assert!(close(cost.total(), 13.3334));
    }

    #[test]
    fn lambda_adds_its_own_lines_to_each_invocations_log() {
        let logged = LogBytes {
            bytes: 1000,
            lines: 4,
            emf_bytes: 300,
            ..LogBytes::default()
        };
        let json = platform_log_bytes(Algorithm::Function);
        let text = platform_log_bytes(Algorithm::Original);
        assert!((300..400).contains(&json), "{json}");
        assert!((200..300).contains(&text), "{text}");
        assert_eq!(log_bytes(logged, 3, Algorithm::Function), 1000 + 3 * json);
        assert_eq!(
            log_bytes(LogBytes::default(), 2, Algorithm::Original),
            2 * text
        );
    }

    #[test]
    fn the_function_is_costed_at_the_memory_size_its_template_deploys() {
        let template = include_str!("../../../template.yaml");
        let memory = template
            .lines()
            .find_map(|line| line.trim().strip_prefix("MemorySize:"))
            .expect("template.yaml sets MemorySize");
        assert_eq!(memory.trim(), FUNCTION_MEMORY_MB.to_string());
        assert!(template.contains("Architectures: [arm64]"));
        assert!(template.contains("LogFormat: JSON"));
    }
}
