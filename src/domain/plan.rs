//! What to do on Polar, decided from the discount's current limit alone.

use std::fmt;

use super::Intent;

/// What happened to Polar for an order; stored on the order as `polarDiscountSyncAction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncAction {
    SkippedUnlimited,
    Decremented,
    Deleted,
    AlreadyDeleted,
}

impl SyncAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SkippedUnlimited => "skipped_unlimited",
            Self::Decremented => "decremented",
            Self::Deleted => "deleted",
            Self::AlreadyDeleted => "already_deleted",
        }
    }
}

impl fmt::Display for SyncAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The write to make on Polar for `redemptions` orders applied in one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Unlimited discount: nothing to count.
    Skip,
    /// Lower `max_redemptions` to this value (always at least 1).
    SetMaxRedemptions(i64),
    /// This was the last use, or past it. Polar rejects `max_redemptions` < 1, so the
    /// discount is deleted; `oversold_by` counts the redemptions beyond the limit.
    Delete { oversold_by: u64 },
}

impl Plan {
    pub fn for_discount(max_redemptions: Option<i64>, redemptions: u32) -> Self {
        let redemptions = i64::from(redemptions);
        match max_redemptions {
            None => Self::Skip,
            Some(max) if max > redemptions => Self::SetMaxRedemptions(max - redemptions),
            Some(max) => Self::Delete {
                oversold_by: redemptions.saturating_sub(max.max(0)) as u64,
            },
        }
    }

    /// The Polar write this plan needs, if any.
    pub fn intent(self) -> Option<Intent> {
        match self {
            Self::Skip => None,
            Self::SetMaxRedemptions(target) => Some(Intent::SetMaxRedemptions(target)),
            Self::Delete { .. } => Some(Intent::Delete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_discount_is_left_alone() {
        assert_eq!(Plan::for_discount(None, 1), Plan::Skip);
        assert_eq!(Plan::for_discount(None, 1).intent(), None);
    }

    #[test]
    fn a_discount_with_uses_left_is_decremented_by_one_per_redemption() {
        assert_eq!(Plan::for_discount(Some(3), 1), Plan::SetMaxRedemptions(2));
        assert_eq!(Plan::for_discount(Some(10), 4), Plan::SetMaxRedemptions(6));
        assert_eq!(
            Plan::for_discount(Some(2), 1).intent(),
            Some(Intent::SetMaxRedemptions(1))
        );
    }

    #[test]
    fn the_last_use_deletes_the_discount() {
        assert_eq!(
            Plan::for_discount(Some(1), 1),
            Plan::Delete { oversold_by: 0 }
        );
        assert_eq!(
            Plan::for_discount(Some(3), 3),
            Plan::Delete { oversold_by: 0 }
        );
        assert_eq!(
            Plan::for_discount(Some(1), 1).intent(),
            Some(Intent::Delete)
        );
    }

    #[test]
    fn more_redemptions_than_the_limit_delete_and_count_the_oversell() {
        assert_eq!(
            Plan::for_discount(Some(2), 5),
            Plan::Delete { oversold_by: 3 }
        );
        assert_eq!(
            Plan::for_discount(Some(0), 1),
            Plan::Delete { oversold_by: 1 }
        );
    }

    #[test]
    fn actions_use_the_contract_names() {
        let names: Vec<_> = [
            SyncAction::SkippedUnlimited,
            SyncAction::Decremented,
            SyncAction::Deleted,
            SyncAction::AlreadyDeleted,
        ]
        .iter()
        .map(|a| a.as_str())
        .collect();
        assert_eq!(
            names,
            [
                "skipped_unlimited",
                "decremented",
                "deleted",
                "already_deleted"
            ]
        );
    }
}
