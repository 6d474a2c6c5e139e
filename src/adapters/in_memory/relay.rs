//! The relay's queues in memory, with scripted failures.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::ports::{Relay, RelayFailure, RelayedMessage, UnreadableRecord};

/// Records what was relayed and dead-lettered; orders in `refuse` are refused by "SQS".
#[derive(Default)]
pub struct InMemoryRelay {
    pub has_redemption_queue: bool,
    pub has_dead_letter_queue: bool,
    pub refuse: HashSet<String>,
    pub sent: Mutex<Vec<RelayedMessage>>,
    /// The number of messages of each `send` call.
    pub calls: Mutex<Vec<usize>>,
    pub dead_letters: Mutex<Vec<UnreadableRecord>>,
}

impl InMemoryRelay {
    pub fn with_queues() -> Self {
        Self {
            has_redemption_queue: true,
            has_dead_letter_queue: true,
            ..Self::default()
        }
    }

    pub fn sent(&self) -> Vec<RelayedMessage> {
        self.sent.lock().unwrap().clone()
    }

    pub fn dead_letters(&self) -> Vec<UnreadableRecord> {
        self.dead_letters.lock().unwrap().clone()
    }
}

impl Relay for InMemoryRelay {
    async fn send(&self, messages: &[RelayedMessage]) -> Vec<Result<(), RelayFailure>> {
        self.calls.lock().unwrap().push(messages.len());
        messages
            .iter()
            .map(|message| {
                if !self.has_redemption_queue {
                    return Err(RelayFailure::NoRedemptionQueue);
                }
                if self.refuse.contains(&message.order_id) {
                    return Err(RelayFailure::Refused {
                        code: "InternalError".into(),
                        message: "scripted".into(),
                    });
                }
                self.sent.lock().unwrap().push(message.clone());
                Ok(())
            })
            .collect()
    }

    async fn dead_letter(&self, record: &UnreadableRecord) -> Result<(), RelayFailure> {
        if !self.has_dead_letter_queue {
            return Err(RelayFailure::NoDeadLetterQueue);
        }
        self.dead_letters.lock().unwrap().push(record.clone());
        Ok(())
    }
}
