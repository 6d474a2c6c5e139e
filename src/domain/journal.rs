//! The intent journal: what a lease holder is about to write on Polar, and how whoever
//! comes next tells from Polar alone whether that write happened.

use super::{OrderId, SyncAction};

/// Written on the discount's coordination item before any Polar write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// The orders the write counts.
    pub orders: Vec<OrderId>,
    /// `max_redemptions` as read before the write.
    pub read: i64,
    pub intent: Intent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    SetMaxRedemptions(i64),
    Delete,
}

impl Intent {
    pub fn action(self) -> SyncAction {
        match self {
            Self::SetMaxRedemptions(_) => SyncAction::Decremented,
            Self::Delete => SyncAction::Deleted,
        }
    }
}

/// What Polar's current state says about a journaled write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The write happened: the orders are counted with this action.
    Applied(SyncAction),
    /// The write did not happen: it must be made (again).
    NotApplied,
    /// Someone changed the discount outside this function. Policy: their value stands and
    /// is never overwritten; the orders are recorded with this action and the change is
    /// logged as `external_change`.
    ChangedElsewhere(SyncAction),
}

impl Journal {
    /// `current` is the discount's `max_redemptions` now: `None` when Polar answers
    /// `ResourceNotFound`, `Some(None)` when it is unlimited.
    pub fn resolve(&self, current: Option<Option<i64>>) -> Resolution {
        match (self.intent, current) {
            (Intent::Delete, None) => Resolution::Applied(SyncAction::Deleted),
            // A deleted discount never comes back, so the DELETE did not happen.
            (Intent::Delete, Some(_)) => Resolution::NotApplied,
            (Intent::SetMaxRedemptions(target), Some(Some(max))) if max == target => {
                Resolution::Applied(SyncAction::Decremented)
            }
            (Intent::SetMaxRedemptions(_), Some(Some(max))) if max == self.read => {
                Resolution::NotApplied
            }
            (Intent::SetMaxRedemptions(_), None) => {
                Resolution::ChangedElsewhere(SyncAction::AlreadyDeleted)
            }
            (Intent::SetMaxRedemptions(_), Some(_)) => {
                Resolution::ChangedElsewhere(SyncAction::Decremented)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(read: i64, intent: Intent) -> Journal {
        Journal {
            orders: vec![OrderId::parse("o1".into()).unwrap()],
            read,
            intent,
        }
    }

    #[test]
    fn a_decrement_that_shows_on_polar_happened() {
        let j = journal(5, Intent::SetMaxRedemptions(3));
        assert_eq!(
            j.resolve(Some(Some(3))),
            Resolution::Applied(SyncAction::Decremented)
        );
    }

    #[test]
    fn a_decrement_whose_value_is_still_the_one_read_did_not_happen() {
        let j = journal(5, Intent::SetMaxRedemptions(3));
        assert_eq!(j.resolve(Some(Some(5))), Resolution::NotApplied);
    }

    #[test]
    fn a_deletion_that_left_a_404_happened() {
        let j = journal(1, Intent::Delete);
        assert_eq!(j.resolve(None), Resolution::Applied(SyncAction::Deleted));
    }

    #[test]
    fn a_discount_that_still_exists_was_not_deleted_whatever_its_value() {
        let j = journal(1, Intent::Delete);
        assert_eq!(j.resolve(Some(Some(1))), Resolution::NotApplied);
        assert_eq!(j.resolve(Some(Some(40))), Resolution::NotApplied);
        assert_eq!(j.resolve(Some(None)), Resolution::NotApplied);
    }

    #[test]
    fn any_other_value_is_a_change_made_elsewhere_and_is_kept() {
        let j = journal(5, Intent::SetMaxRedemptions(3));
        assert_eq!(
            j.resolve(Some(Some(50))),
            Resolution::ChangedElsewhere(SyncAction::Decremented)
        );
        assert_eq!(
            j.resolve(Some(None)),
            Resolution::ChangedElsewhere(SyncAction::Decremented)
        );
        assert_eq!(
            j.resolve(None),
            Resolution::ChangedElsewhere(SyncAction::AlreadyDeleted)
        );
    }
}
