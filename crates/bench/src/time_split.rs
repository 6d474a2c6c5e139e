//! Where a run's wall time went: waiting on Polar, waiting on moto, or neither.
//!
//! moto serves one request at a time and its cost grows with the items a request names,
//! where DynamoDB's latency barely does: a batch's 20-item transaction takes moto about as
//! long as ten lone ones. A batch and a lone message wait on Polar alike (the same two
//! round trips), so the split shows how much of the batch's extra time is moto's, and how
//! much the function's own.

use std::time::{Duration, Instant};

/// A time span, `from` before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub from: Instant,
    pub to: Instant,
}

impl Span {
    pub fn new(from: Instant, to: Instant) -> Span {
        Span {
            from,
            to: to.max(from),
        }
    }
}

/// A wall time, split three ways; the parts add up to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeSplit {
    /// At least one Polar request in flight.
    pub polar: Duration,
    /// moto busy with an AWS request (the function's, or the event source's deletes), and
    /// no Polar request in flight.
    pub moto: Duration,
    /// Neither: the function's own work, the Lambda runtime API, the event source.
    pub neither: Duration,
}

impl TimeSplit {
    /// The split of `window`, given when Polar requests and moto were in flight.
    pub fn of(window: Span, polar: &[Span], moto: &[Span]) -> TimeSplit {
        let polar = union_within(window, polar);
        let moto = union_within(window, moto);
        let polar_time = total(&polar);
        let moto_alone = total(&moto) - overlap(&moto, &polar);
        TimeSplit {
            polar: polar_time,
            moto: moto_alone,
            neither: (window.to - window.from).saturating_sub(polar_time + moto_alone),
        }
    }

    /// moto's share of the time not spent waiting on Polar.
    pub fn moto_share_outside_polar(&self) -> f64 {
        let outside = self.moto + self.neither;
        self.moto.as_secs_f64() / outside.as_secs_f64().max(f64::EPSILON)
    }

    /// The wall time less moto's part: what the run would take if moto answered at once.
    pub fn without_moto(&self) -> Duration {
        self.polar + self.neither
    }
}

/// moto's busy time for a run over its time for the critical path, against what `ratio` ×
/// the critical path leaves room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MotoOverPath {
    pub extra: Duration,
    pub allowance: Duration,
}

impl MotoOverPath {
    pub fn new(
        ratio: f64,
        run_moto_busy: Duration,
        path_moto_busy: Duration,
        path_wall: Duration,
    ) -> MotoOverPath {
        MotoOverPath {
            extra: run_moto_busy.saturating_sub(path_moto_busy),
            allowance: path_wall.mul_f64(ratio - 1.0),
        }
    }

    /// Whether moto's busy time alone keeps the run from the ratio: its extra time is more
    /// than the allowance. A batch's steps each wait for all its discounts (one request per
    /// step), so that time adds to its wall time whole.
    pub fn rules_out(&self) -> bool {
        self.extra > self.allowance
    }
}

/// The spans clipped to `window`, merged where they overlap, in order.
fn union_within(window: Span, spans: &[Span]) -> Vec<Span> {
    let mut clipped: Vec<Span> = spans
        .iter()
        .filter(|s| s.to > window.from && s.from < window.to)
        .map(|s| Span::new(s.from.max(window.from), s.to.min(window.to)))
        .collect();
    clipped.sort_by_key(|s| s.from);
    let mut merged: Vec<Span> = Vec::new();
    for span in clipped {
        match merged.last_mut() {
            Some(last) if span.from <= last.to => last.to = last.to.max(span.to),
            _ => merged.push(span),
        }
    }
    merged
}

fn total(spans: &[Span]) -> Duration {
    spans.iter().map(|s| s.to - s.from).sum()
}

/// The time both sets of merged spans cover.
fn overlap(a: &[Span], b: &[Span]) -> Duration {
    a.iter()
        .flat_map(|x| {
            b.iter()
                .map(move |y| x.to.min(y.to).saturating_duration_since(x.from.max(y.from)))
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(origin: Instant, from: u64, to: u64) -> Span {
        Span::new(
            origin + Duration::from_millis(from),
            origin + Duration::from_millis(to),
        )
    }

    #[test]
    fn a_chain_of_moto_then_polar_then_moto_splits_into_its_parts() {
        let t = Instant::now();
        let split = TimeSplit::of(
            ms(t, 0, 100),
            &[ms(t, 20, 70)],
            &[ms(t, 5, 20), ms(t, 70, 90)],
        );

        assert_eq!(split.polar, Duration::from_millis(50));
        assert_eq!(split.moto, Duration::from_millis(35));
        assert_eq!(split.neither, Duration::from_millis(15));
        assert_eq!(split.without_moto(), Duration::from_millis(65));
        assert!((split.moto_share_outside_polar() - 0.7).abs() < 1e-9);
    }

    #[test]
    fn moto_busy_while_polar_is_in_flight_counts_as_waiting_on_polar() {
        let t = Instant::now();
        let split = TimeSplit::of(
            ms(t, 0, 100),
            &[ms(t, 10, 60), ms(t, 30, 80)],
            &[ms(t, 50, 90)],
        );

        assert_eq!(
            split.polar,
            Duration::from_millis(70),
            "overlapping: one span"
        );
        assert_eq!(split.moto, Duration::from_millis(10), "80 to 90 only");
        assert_eq!(split.neither, Duration::from_millis(20));
    }

    #[test]
    fn spans_outside_the_window_are_clipped_to_it() {
        let t = Instant::now();
        let split = TimeSplit::of(ms(t, 100, 200), &[ms(t, 0, 150)], &[ms(t, 180, 400)]);

        assert_eq!(split.polar, Duration::from_millis(50));
        assert_eq!(split.moto, Duration::from_millis(20));
        assert_eq!(split.neither, Duration::from_millis(30));
    }

    #[test]
    fn moto_rules_out_a_ratio_when_its_extra_time_alone_is_over_the_allowance() {
        let ms = Duration::from_millis;

        assert!(MotoOverPath::new(1.3, ms(70), ms(16), ms(127)).rules_out());
        assert!(!MotoOverPath::new(1.3, ms(50), ms(16), ms(127)).rules_out());
        assert!(!MotoOverPath::new(1.3, ms(10), ms(16), ms(127)).rules_out());
    }
}
