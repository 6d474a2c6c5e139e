//! What happened in a run, counted as it goes (crashes, kills, faults) and read from the
//! event source's log and the dead-letter queue at the end, printed as one report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use polar_discount_sync::sync::Step;

use super::faults::{step_index, FaultKind, FAULT_KINDS, STEPS};
use super::support::event_source::{Answer, EventSource};
use super::support::queues::DeadLetter;
use super::support::World;

#[derive(Default)]
pub struct Stats {
    pub crashes: [AtomicU64; 5],
    /// Step boundaries passed in-process (crashed or not).
    pub passed: [AtomicU64; 5],
    pub kills: AtomicUsize,
    pub kills_mid_invocation: AtomicUsize,
    faults: Mutex<Vec<(FaultKind, u64)>>,
}

impl Stats {
    pub fn count_fault(&self, kind: FaultKind) {
        let mut faults = self.faults.lock().unwrap();
        match faults.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => faults.push((kind, 1)),
        }
    }

    pub fn crashes_at(&self, step: Step) -> u64 {
        self.crashes[step_index(step)].load(Ordering::SeqCst)
    }
}

/// Everything the report shows.
pub struct Run<'a> {
    pub seed: u64,
    pub orders: usize,
    pub messages: usize,
    pub world: &'a World,
    pub source: &'a EventSource,
    pub stats: &'a Stats,
    pub dead_letters: &'a [DeadLetter],
    pub stale_deletes: usize,
    /// Requests the simulated SQS served, by operation (the test's and the function's).
    pub sqs_requests: BTreeMap<String, usize>,
    /// Lines the invariant check adds (e.g. orders left unsynced by dead letters).
    pub notes: &'a [String],
    /// From the start to an empty queue.
    pub settled: Duration,
    /// Including the checks.
    pub elapsed: Duration,
}

impl Run<'_> {
    /// The receive histories of the `n` messages whose last receive came last.
    fn last_to_settle(&self, n: usize) -> String {
        let mut last: Vec<(std::time::Instant, String)> = Vec::new();
        for receipt in self.source.receipts() {
            match last.iter_mut().find(|(_, id)| *id == receipt.message_id) {
                Some(entry) => entry.0 = entry.0.max(receipt.at),
                None => last.push((receipt.at, receipt.message_id)),
            }
        }
        last.sort();
        let labels = last
            .iter()
            .rev()
            .take(n)
            .map(|(_, id)| (id.clone(), "".to_owned()))
            .collect();
        self.source.history(&labels)
    }

    pub fn report(&self) -> String {
        let stats = self.stats;
        let invocations = self.source.invocations();
        let receipts = self.source.receipts();
        let answered = |wanted: fn(&Answer) -> bool| {
            invocations
                .iter()
                .filter(|i| i.answer.as_ref().is_some_and(wanted))
                .count()
        };
        let reported_failed: usize = invocations
            .iter()
            .map(|i| match &i.answer {
                Some(Answer::Failed(ids)) => ids.len(),
                _ => 0,
            })
            .sum();
        let mut most_receives: BTreeMap<&str, u32> = BTreeMap::new();
        for receipt in &receipts {
            let most = most_receives.entry(&receipt.message_id).or_default();
            *most = (*most).max(receipt.receive_count);
        }
        let mut by_count: BTreeMap<u32, usize> = BTreeMap::new();
        for count in most_receives.values() {
            *by_count.entry(*count).or_default() += 1;
        }
        let by_count: Vec<String> = by_count
            .iter()
            .map(|(receives, n)| format!("{receives}: {n}"))
            .collect();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for letter in self.dead_letters.iter().filter(|l| l.sent_by_function()) {
            let kind = format!(
                "{} {}",
                letter.attribute("ErrorClass"),
                letter.attribute("ErrorKind")
            );
            *kinds.entry(kind).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let redriven = self
            .dead_letters
            .iter()
            .filter(|l| !l.sent_by_function())
            .count();

        let requests = self.world.polar.requests();
        let mut by_method: Vec<(String, usize)> = Vec::new();
        for request in &requests {
            match by_method.iter_mut().find(|(m, _)| *m == request.method) {
                Some((_, n)) => *n += 1,
                None => by_method.push((request.method.clone(), 1)),
            }
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "---- exactly-once invariant run (seed {}) ----",
            self.seed
        );
        let _ = writeln!(out, "orders:               {}", self.orders);
        let _ = writeln!(
            out,
            "messages:             {} sent, {} delivered (incl. redeliveries), {reported_failed} reported failed by the function",
            self.messages,
            receipts.len(),
        );
        let _ = writeln!(
            out,
            "receives per message: {} (the most each message had)",
            by_count.join(", ")
        );
        let _ = writeln!(
            out,
            "invocations:          {} ({} crashed or killed, {} timed out, {} errored)",
            invocations.len(),
            answered(|a| matches!(a, Answer::Crashed)),
            answered(|a| matches!(a, Answer::TimedOut)),
            answered(|a| matches!(a, Answer::Errored(_))),
        );
        let _ = writeln!(
            out,
            "dead letters:         {} sent by the function ({}), {redriven} moved by the redrive policy",
            self.dead_letters.len() - redriven,
            if kinds.is_empty() { "-".to_owned() } else { kinds.join(", ") },
        );
        for note in self.notes {
            let _ = writeln!(out, "                      {note}");
        }
        let sqs_requests: Vec<String> = self
            .sqs_requests
            .iter()
            .map(|(operation, n)| format!("{operation} {n}"))
            .collect();
        let _ = writeln!(
            out,
            "SQS requests:         {}; {} deletes named an earlier receive",
            sqs_requests.join(", "),
            self.stale_deletes
        );
        let crashes: Vec<String> = STEPS
            .iter()
            .map(|step| {
                let passed = stats.passed[step_index(*step)].load(Ordering::Relaxed);
                format!("{step:?} {} of {passed}", stats.crashes_at(*step))
            })
            .collect();
        let _ = writeln!(
            out,
            "crashes per step:     {} (crashes of step boundaries passed in-process)",
            crashes.join(", ")
        );
        let _ = writeln!(
            out,
            "process kills:        {} ({} during an invocation)",
            stats.kills.load(Ordering::Relaxed),
            stats.kills_mid_invocation.load(Ordering::Relaxed)
        );
        let faults = stats.faults.lock().unwrap();
        let total: u64 = faults.iter().map(|(_, n)| n).sum();
        let kinds: Vec<String> = FAULT_KINDS
            .iter()
            .map(|kind| {
                let n = faults
                    .iter()
                    .find(|(k, _)| k == kind)
                    .map_or(0, |(_, n)| *n);
                format!("{} {n}", kind.name())
            })
            .collect();
        let _ = writeln!(out, "Polar faults injected: {total}: {}", kinds.join(", "));
        let methods: Vec<String> = by_method.iter().map(|(m, n)| format!("{m} {n}")).collect();
        let _ = writeln!(
            out,
            "Polar requests:       {} ({}), {:.2} per redemption",
            requests.len(),
            methods.join(", "),
            requests.len() as f64 / self.orders as f64
        );
        let _ = writeln!(
            out,
            "last to settle (receive #, seconds since the run's first receive, outcome):\n{}",
            self.last_to_settle(5).trim_end()
        );
        let _ = write!(
            out,
            "wall time:            {:.1} s (settled after {:.1} s)",
            self.elapsed.as_secs_f64(),
            self.settled.as_secs_f64()
        );
        out
    }
}
