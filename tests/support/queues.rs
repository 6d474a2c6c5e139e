//! The kit's source queue and dead-letter queue (`test_kit::queues`), unique per test, in
//! moto or in the simulated SQS, and the function's configuration that dead-letters into
//! them.

use std::ops::Deref;

use polar_discount_sync::config::Config;
use test_kit::event_source::EventSource;

#[allow(unused_imports)]
pub use test_kit::queues::{DeadLetter, QueueSettings};

use super::world::{SqsBackend, World};

#[derive(Clone)]
pub struct Queues {
    pub backend: SqsBackend,
    queues: test_kit::queues::Queues,
}

impl Deref for Queues {
    type Target = test_kit::queues::Queues;

    fn deref(&self) -> &Self::Target {
        &self.queues
    }
}

impl Queues {
    pub async fn create(world: &World, backend: &SqsBackend, settings: QueueSettings) -> Queues {
        let sqs = backend.client(&world.aws);
        Queues {
            backend: backend.clone(),
            queues: test_kit::queues::Queues::create(sqs, settings).await,
        }
    }

    /// Lambda's SQS event source mapping on the source queue.
    pub fn event_source(&self) -> EventSource {
        EventSource::new(self.queues.clone())
    }

    /// The function's configuration: the world's, dead-lettering into this DLQ. The redrive
    /// limit is left for the function to read from the source queue's redrive policy.
    pub fn config(&self, world: &World) -> Config {
        let mut config = world.config();
        config.dead_letter_queue_url = Some(self.dead_letter_url.clone());
        config
    }

    /// The same as environment variables, for a function process.
    pub fn env(&self, world: &World) -> Vec<(String, String)> {
        let mut env = world.env_on(&self.backend);
        env.push(("DEAD_LETTER_QUEUE_URL".into(), self.dead_letter_url.clone()));
        env
    }
}
