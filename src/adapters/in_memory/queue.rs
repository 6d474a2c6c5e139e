//! The SQS side in memory.

use std::sync::Mutex;
use std::time::Duration;

use crate::ports::{DeadLetterReason, Delivery, Queue, QueueFailure};

/// The SQS side in memory: records delays, requeued messages and dead letters.
#[derive(Default)]
pub struct InMemoryQueue {
    pub has_dead_letter_queue: bool,
    pub max_receive_count: Option<u32>,
    pub delayed: Mutex<Vec<(String, Duration)>>,
    pub requeued: Mutex<Vec<(String, Duration)>>,
    pub dead_letters: Mutex<Vec<(String, DeadLetterReason)>>,
    /// Every call hangs, as a call to an SQS that does not answer.
    pub hangs: bool,
}

impl InMemoryQueue {
    pub fn with_dead_letter_queue(max_receive_count: Option<u32>) -> Self {
        Self {
            has_dead_letter_queue: true,
            max_receive_count,
            ..Self::default()
        }
    }

    async fn answer(&self) {
        if self.hangs {
            std::future::pending::<()>().await;
        }
    }

    pub fn dead_lettered(&self) -> Vec<String> {
        self.dead_letters
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

impl Queue for InMemoryQueue {
    async fn retry_later(&self, delivery: &Delivery, after: Duration) -> Result<(), QueueFailure> {
        self.answer().await;
        self.delayed
            .lock()
            .unwrap()
            .push((delivery.message_id.clone(), after));
        Ok(())
    }

    async fn requeue(&self, delivery: &Delivery, after: Duration) -> Result<(), QueueFailure> {
        self.answer().await;
        self.requeued
            .lock()
            .unwrap()
            .push((delivery.message_id.clone(), after));
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        reason: &DeadLetterReason,
    ) -> Result<(), QueueFailure> {
        self.answer().await;
        if !self.has_dead_letter_queue {
            return Err(QueueFailure::NoDeadLetterQueue);
        }
        self.dead_letters
            .lock()
            .unwrap()
            .push((delivery.message_id.clone(), reason.clone()));
        Ok(())
    }

    async fn max_receive_count(&self, _delivery: &Delivery) -> Result<Option<u32>, QueueFailure> {
        Ok(self.max_receive_count)
    }
}
