//! The DynamoDB adapter at its edges, against moto: a claim that names another discount
//! writes nothing, a code typed in another case still claims, an acquire whose answer
//! was lost finds its own lease when the SDK retries it, and a release keeps or drops the
//! journal as its name says.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use polar_discount_sync::adapters::DynamoStore;
use polar_discount_sync::domain::{DiscountId, Intent, Journal, OrderId, SyncAction, SyncRequest};
use polar_discount_sync::ports::{
    Acquisition, ClaimOutcome, Committed, Coordination, HandOff, Lease, LeaseAfter, OrderLedger,
    QuickStart,
};
use support::{body, World};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

fn lease() -> Lease {
    Lease {
        token: Uuid::new_v4(),
        expires_at_ms: now_ms() + 60_000,
        taken_at_ms: now_ms(),
        turn_began_at_ms: now_ms(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn request(order: &str, discount: Uuid, code: &str) -> SyncRequest {
    SyncRequest::parse(&body(order, discount, code)).unwrap()
}

fn store(world: &World, dynamo: aws_sdk_dynamodb::Client) -> DynamoStore {
    DynamoStore::new(dynamo, &world.tables.orders, &world.tables.sync)
}

#[tokio::test]
async fn a_message_naming_another_discount_leaves_the_order_untouched() {
    let world = World::start().await;
    let (ours, theirs) = (Uuid::new_v4(), Uuid::new_v4());
    world.put_order("ord_1", ours, "SPRING").await;
    let store = store(&world, world.dynamo.clone());

    for wrong in [
        request("ord_1", theirs, "SPRING"),
        request("ord_1", ours, "AUTUMN"),
    ] {
        let outcome = store.claim(&wrong, &lease()).await.unwrap();
        assert!(
            matches!(outcome, ClaimOutcome::Mismatched(_)),
            "{outcome:?}"
        );
    }
    let order = world.order("ord_1").await;
    assert!(
        !order.contains_key("polarDiscountSyncClaim"),
        "no lease token on an order the message does not match: {order:?}"
    );
}

#[tokio::test]
async fn a_code_typed_in_another_case_still_claims_the_order() {
    let world = World::start().await;
    let discount = Uuid::new_v4();
    world.put_order("ord_1", discount, "Spring25").await;
    let store = store(&world, world.dynamo.clone());

    let outcome = store
        .claim(&request("ord_1", discount, "SPRING25"), &lease())
        .await
        .unwrap();

    assert_eq!(outcome, ClaimOutcome::Claimed);
    assert!(world
        .order("ord_1")
        .await
        .contains_key("polarDiscountSyncClaim"));
}

#[tokio::test]
async fn a_release_keeping_the_journal_hands_it_to_the_next_holder_and_never_to_ttl() {
    let world = World::start().await;
    let discount = Uuid::new_v4();
    let id = DiscountId::parse(&discount.to_string()).unwrap();
    let store = store(&world, world.dynamo.clone());
    let journal = Journal {
        orders: vec![OrderId::parse("ord_1".into()).unwrap()],
        read: 5,
        intent: Intent::SetMaxRedemptions(4),
    };
    let (first, second, third) = (lease(), lease(), lease());

    store.acquire(id, &first, now_ms()).await.unwrap();
    store.record_intent(id, &first, &journal).await.unwrap();
    store.release_keeping_journal(id, &first).await.unwrap();
    let item = world.sync_item(discount).await;
    assert!(
        !item.contains_key("expiresAt"),
        "an item with a journal has no TTL: {item:?}"
    );
    assert_eq!(
        store.acquire(id, &second, now_ms()).await.unwrap(),
        Acquisition::Acquired {
            pending: Some(journal.clone())
        },
        "the lease is free at once, and the journal is handed on"
    );

    store.release_dropping_journal(id, &second).await.unwrap();
    assert!(world.sync_item(discount).await.contains_key("expiresAt"));
    assert_eq!(
        store.acquire(id, &third, now_ms()).await.unwrap(),
        Acquisition::Acquired { pending: None }
    );
}

#[tokio::test]
async fn an_acquire_whose_answer_was_lost_finds_its_own_lease_on_the_sdks_retry() {
    let world = World::start().await;
    let proxy = AnswerDroppingProxy::start(&support::moto_endpoint(), "UpdateItem").await;
    let config = aws_sdk_dynamodb::config::Builder::from(&world.aws)
        .endpoint_url(proxy.url())
        .build();
    let store = store(&world, aws_sdk_dynamodb::Client::from_conf(config));
    let discount = DiscountId::parse(&Uuid::new_v4().to_string()).unwrap();

    let acquisition = store.acquire(discount, &lease(), now_ms()).await.unwrap();

    assert_eq!(proxy.dropped(), 1, "the first answer was lost");
    assert_eq!(acquisition, Acquisition::Acquired { pending: None });
}

/// Forwards HTTP requests to moto, one connection per request, and drops the answer to
/// the first request whose `X-Amz-Target` ends with `operation` after moto applied it.
struct AnswerDroppingProxy {
    addr: std::net::SocketAddr,
    dropped: Arc<AtomicUsize>,
}

impl AnswerDroppingProxy {
    async fn start(upstream: &str, operation: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let target = format!(
            "x-amz-target: dynamodb_20120810.{}",
            operation.to_lowercase()
        );
        let dropped = Arc::new(AtomicUsize::new(0));
        let counter = dropped.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let (upstream, target, counter) =
                    (upstream.clone(), target.clone(), counter.clone());
                tokio::spawn(async move {
                    let _ = relay(client, &upstream, &target, &counter).await;
                });
            }
        });
        Self { addr, dropped }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn dropped(&self) -> usize {
        self.dropped.load(Ordering::SeqCst)
    }
}

async fn relay(
    mut client: TcpStream,
    upstream: &str,
    target: &str,
    dropped: &AtomicUsize,
) -> std::io::Result<()> {
    loop {
        let Some(request) = read_request(&mut client).await? else {
            return Ok(());
        };
        let head = String::from_utf8_lossy(&request).to_lowercase();
        // One upstream connection per request, told to close, so its answer ends at EOF.
        let request = String::from_utf8_lossy(&request)
            .replacen("\r\n", "\r\nConnection: close\r\n", 1)
            .into_bytes();
        let mut moto = TcpStream::connect(upstream).await?;
        moto.write_all(&request).await?;
        let mut answer = Vec::new();
        moto.read_to_end(&mut answer).await?;
        let drop_it = head.contains(target)
            && dropped
                .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok();
        if drop_it {
            return Ok(());
        }
        client.write_all(&answer).await?;
        if String::from_utf8_lossy(&answer)
            .to_lowercase()
            .contains("connection: close")
        {
            return Ok(());
        }
    }
}

/// One HTTP request with a `Content-Length` body, or `None` at a clean end of stream.
async fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Ok(Some(buffer))
}

// The container's transactions go out together while one is in flight (group commit).

/// Ten steps on ten discounts starting at once, as a batch starts them: one after another
/// in one task, in the same tick.
async fn start_together(store: &DynamoStore, steps: &[(SyncRequest, Lease)]) -> Vec<QuickStart> {
    start_together_slowly(store, steps, Duration::ZERO).await
}

/// As [`start_together`], with the thread busy for `between` after the first step has begun
/// (a batch builds each step's requests before it begins it; here long enough for the first
/// step's request to go out, were it sent at once).
async fn start_together_slowly(
    store: &DynamoStore,
    steps: &[(SyncRequest, Lease)],
    between: Duration,
) -> Vec<QuickStart> {
    let now = now_ms();
    let claims: Vec<[&SyncRequest; 1]> = steps.iter().map(|(request, _)| [request]).collect();
    let starts =
        steps
            .iter()
            .zip(&claims)
            .enumerate()
            .map(|(n, ((request, lease), claims))| async move {
                if n == 1 {
                    std::thread::sleep(between);
                }
                store
                    .acquire_with_claims(request.discount_id, lease, now, claims)
                    .await
            });
    futures_util::future::join_all(starts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

async fn ten_steps(world: &World) -> Vec<(SyncRequest, Lease)> {
    let mut steps = Vec::new();
    for n in 0..10 {
        let discount = Uuid::new_v4();
        let order = format!("ord_{n}");
        world.put_order(&order, discount, "SPRING").await;
        steps.push((request(&order, discount, "SPRING"), lease()));
    }
    steps
}

// On several threads, as in the function: the task that sends a group may start on another
// thread at once, before the other nine starts are begun (the batch's own thread is busy
// beginning them), and would then send the first alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_that_start_together_share_one_transaction_and_each_still_holds_its_lease_and_claim()
{
    let world = World::start().await;
    let steps = ten_steps(&world).await;
    let (dynamo, requests) = support::counting_dynamo(&world.aws);
    let store = store(&world, dynamo);

    let started = start_together_slowly(&store, &steps, Duration::from_millis(50)).await;

    assert!(
        started.iter().all(|s| *s == QuickStart::Started),
        "{started:?}"
    );
    let sent = requests.load(Ordering::SeqCst);
    assert_eq!(
        sent, 1,
        "ten starts begun together in {sent} requests: the first must not go out alone"
    );
    for (request, lease) in &steps {
        let order = world.order(request.order_id.as_str()).await;
        assert_eq!(
            order["polarDiscountSyncClaim"].as_s().unwrap(),
            &lease.token.to_string()
        );
        let again = store
            .acquire(request.discount_id, &self::lease(), now_ms())
            .await
            .unwrap();
        assert!(matches!(again, Acquisition::Held(_)), "{again:?}");
    }
}

#[tokio::test]
async fn a_step_refused_the_lease_does_not_cancel_the_steps_sent_with_it() {
    let world = World::start().await;
    let steps = ten_steps(&world).await;
    let store = store(&world, world.dynamo.clone());
    let held = [1, 4, 7];
    for &n in &held {
        let acquired = store
            .acquire(steps[n].0.discount_id, &lease(), now_ms())
            .await
            .unwrap();
        assert!(matches!(acquired, Acquisition::Acquired { pending: None }));
    }

    let started = start_together(&store, &steps).await;

    for (n, start) in started.iter().enumerate() {
        if held.contains(&n) {
            assert!(
                matches!(start, QuickStart::Held { .. }),
                "step {n}: {start:?}"
            );
        } else {
            assert_eq!(*start, QuickStart::Started, "step {n}");
        }
    }
}

#[tokio::test]
async fn steps_that_touch_the_same_order_are_never_sent_in_one_request() {
    let world = World::start().await;
    let (ours, theirs) = (Uuid::new_v4(), Uuid::new_v4());
    world.put_order("ord_1", ours, "SPRING").await;
    let store = store(&world, world.dynamo.clone());
    let steps = [
        (request("ord_1", ours, "SPRING"), lease()),
        (request("ord_1", theirs, "SPRING"), lease()),
    ];

    let started = start_together(&store, &steps).await;

    assert_eq!(started[0], QuickStart::Started);
    assert!(
        matches!(&started[1], QuickStart::ClaimsRefused(refused)
            if matches!(refused[..], [(0, ClaimOutcome::Mismatched(_))])),
        "the order names another discount: refused for it, not failed with the first: {:?}",
        started[1]
    );
}

#[tokio::test]
async fn a_release_that_finds_orders_handed_over_marks_its_own_keeps_the_lease_and_hands_the_others_over_once(
) {
    let world = World::start().await;
    let discount = Uuid::new_v4();
    for order in ["own", "w1", "w2"] {
        world.put_order(order, discount, "HOT").await;
    }
    let store = store(&world, world.dynamo.clone());
    let id = DiscountId::parse(&discount.to_string()).unwrap();
    let (own, w1, w2) = (
        request("own", discount, "HOT"),
        request("w1", discount, "HOT"),
        request("w2", discount, "HOT"),
    );
    let holder = lease();
    assert_eq!(
        store
            .acquire_with_claims(id, &holder, now_ms(), &[&own])
            .await
            .unwrap(),
        QuickStart::Started
    );

    // A waiter, refused the lease, hands its orders over (and, from a copy, the holder's).
    let QuickStart::Held { held, refused } = store
        .acquire_with_claims(id, &lease(), now_ms(), &[&w1, &w2])
        .await
        .unwrap()
    else {
        panic!("the holder's lease is live")
    };
    assert_eq!(held.holder, Some(holder.token));
    assert!(refused.is_empty(), "their claims would pass: {refused:?}");
    assert_eq!(
        store
            .hand_off(id, &held, now_ms(), &[&w1, &w2, &own])
            .await
            .unwrap(),
        HandOff::Handed
    );

    let at = SystemTime::now();
    let committed = store
        .commit(
            id,
            &holder,
            std::slice::from_ref(&own.order_id),
            SyncAction::Decremented,
            at,
            LeaseAfter::ReleasedOrHandedOver,
        )
        .await
        .unwrap();
    let Committed::HandedOver(mut taken) = committed else {
        panic!("{committed:?}")
    };
    taken.sort_by(|a, b| a.order_id.as_str().cmp(b.order_id.as_str()));
    assert_eq!(taken, [w1.clone(), w2.clone()]);
    assert_eq!(world.action("own").await.as_deref(), Some("decremented"));
    let item = world.sync_item(discount).await;
    assert!(
        !item.contains_key("handedOff"),
        "taken off the list: {item:?}"
    );
    assert_eq!(
        item.get("leaseToken").and_then(|t| t.as_s().ok()),
        Some(&holder.token.to_string()),
        "kept for the orders handed over"
    );

    // The step for them: its release finds nothing handed over, and releases.
    let next = holder.for_next_step();
    assert_eq!(
        store
            .acquire_with_claims(id, &next, now_ms(), &[&w1, &w2])
            .await
            .unwrap(),
        QuickStart::Started
    );
    let counted = [w1.order_id.clone(), w2.order_id.clone()];
    assert_eq!(
        store
            .commit(
                id,
                &next,
                &counted,
                SyncAction::Decremented,
                at,
                LeaseAfter::ReleasedOrHandedOver,
            )
            .await
            .unwrap(),
        Committed::AsAsked
    );
    assert!(!world.sync_item(discount).await.contains_key("leaseToken"));

    // While another holder is at work, the waiter's start again learns its orders are synced.
    let other_holder = lease();
    let started = store.acquire_with_claims(id, &other_holder, now_ms(), &[]);
    assert_eq!(started.await.unwrap(), QuickStart::Started);
    let QuickStart::Held { refused, .. } = store
        .acquire_with_claims(id, &lease(), now_ms(), &[&w1, &w2])
        .await
        .unwrap()
    else {
        panic!("the other holder's lease is live")
    };
    assert!(
        refused.len() == 2
            && refused
                .iter()
                .all(|(_, outcome)| matches!(outcome, ClaimOutcome::AlreadySynced(_))),
        "{refused:?}"
    );
    store
        .release_keeping_journal(id, &other_holder)
        .await
        .unwrap();

    // A hand-off to a holder that has let the lease go writes nothing.
    assert_eq!(
        store.hand_off(id, &held, now_ms(), &[&w1]).await.unwrap(),
        HandOff::NotHeld
    );
    assert!(!world.sync_item(discount).await.contains_key("handedOff"));
}
