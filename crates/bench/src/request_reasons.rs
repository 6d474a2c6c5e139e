//! Why the function makes each request: the requests the counting proxy (AWS) and the Polar
//! double recorded, merged in the order they arrived, each named by what it does (read from
//! the request itself) and matched to a reason on file. A request the function starts making
//! without a reason here is listed as such, so that the report never explains a request list
//! the function no longer sends.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use polar_double::RecordedRequest;
use serde_json::Value;

/// What one DynamoDB item write does, read from the attributes it sets and removes (the
/// function's attribute names: the orders' by the contract, its own table's by its adapter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    TakesLease,
    ClaimsOrder,
    WritesJournal,
    MarksOrder,
    ClearsJournal,
    ReleasesLease,
}

impl Effect {
    fn of_set(attribute: &str) -> Option<Effect> {
        match attribute {
            "leaseToken" => Some(Effect::TakesLease),
            "polarDiscountSyncClaim" => Some(Effect::ClaimsOrder),
            "journal" => Some(Effect::WritesJournal),
            "polarDiscountSynced" => Some(Effect::MarksOrder),
            _ => None,
        }
    }

    fn of_removed(attribute: &str) -> Option<Effect> {
        match attribute {
            "leaseToken" => Some(Effect::ReleasesLease),
            "journal" => Some(Effect::ClearsJournal),
            _ => None,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Effect::TakesLease => "takes the lease",
            Effect::ClaimsOrder => "claims an order",
            Effect::WritesJournal => "writes the journal",
            Effect::MarksOrder => "marks an order synced",
            Effect::ClearsJournal => "clears the journal",
            Effect::ReleasesLease => "releases the lease",
        }
    }
}

use Effect::*;

/// Why each kind of request is needed: the operation, exactly what its items do, the reason.
const DYNAMODB_REASONS: &[(&str, &[Effect], &str)] = &[
    (
        "TransactWriteItems",
        &[TakesLease, ClaimsOrder],
        "takes the discount's lease and claims the orders in one write (the GET must follow \
         the lease: a read taken before the previous holder's write is stale)",
    ),
    (
        "UpdateItem",
        &[TakesLease],
        "takes the discount's lease alone, the one-write start having been refused (the \
         lease held, a journal pending, or an order to be told apart)",
    ),
    (
        "UpdateItem",
        &[ClaimsOrder],
        "claims one order under the lease; a refusal returns the order, which tells why",
    ),
    (
        "UpdateItem",
        &[WritesJournal],
        "the journal, which must precede the write so a crash between the write and the \
         commit is recovered",
    ),
    (
        "TransactWriteItems",
        &[MarksOrder, ClearsJournal, ReleasesLease],
        "marks the orders synced, clears the journal, releases the lease: one write, so that \
         no order is marked without the journal going, nor the lease freed before",
    ),
    (
        "UpdateItem",
        &[ClearsJournal, ReleasesLease],
        "gives the lease up with its own journal, after a failure",
    ),
    (
        "UpdateItem",
        &[ReleasesLease],
        "gives the lease up, keeping a journal for the next holder",
    ),
];

/// Polar's requests by method (the function asks only about `/v1/discounts/{id}`).
const POLAR_REASONS: &[(&str, &str)] = &[
    (
        "GET",
        "reads `max_redemptions` (and the code, checked against the order's), under the lease",
    ),
    (
        "PATCH",
        "the absolute write: `max_redemptions` less the orders counted",
    ),
    ("DELETE", "the discount's last use: deletes it"),
];

/// One DynamoDB item a request reads or writes, and what it sets and removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ItemTouched {
    pub sets: Vec<String>,
    pub removes: Vec<String>,
}

impl ItemTouched {
    /// The items of one DynamoDB request body: `UpdateItem`'s one, or each of a
    /// transaction's; none for the others.
    pub fn of_request(operation: &str, body: &Value) -> Vec<ItemTouched> {
        match operation {
            "UpdateItem" => vec![ItemTouched::of_update(body)],
            "TransactWriteItems" => body
                .get("TransactItems")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|item| {
                    item.get("Update")
                        .map_or_else(Default::default, ItemTouched::of_update)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// `SET #a = :a, #b = :b REMOVE #c` with `#names` resolved.
    fn of_update(update: &Value) -> ItemTouched {
        let names = update.get("ExpressionAttributeNames");
        let resolve = |name: &str| {
            names
                .and_then(|names| names.get(name))
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned()
        };
        let expression = update
            .get("UpdateExpression")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut touched = ItemTouched::default();
        let mut clause = "";
        let mut text = String::new();
        let mut close_clause = |clause: &str, text: &mut String| {
            for part in text.split(',').filter(|p| !p.trim().is_empty()) {
                let attribute = resolve(part.split('=').next().unwrap_or("").trim());
                match clause {
                    "SET" => touched.sets.push(attribute),
                    "REMOVE" => touched.removes.push(attribute),
                    _ => {}
                }
            }
            text.clear();
        };
        for word in expression.split_whitespace() {
            if ["SET", "REMOVE", "ADD", "DELETE"].contains(&word) {
                close_clause(clause, &mut text);
                clause = word;
            } else {
                text.push_str(word);
                text.push(' ');
            }
        }
        close_clause(clause, &mut text);
        touched
    }

    fn effects(&self) -> impl Iterator<Item = Effect> + '_ {
        let set = self.sets.iter().filter_map(|a| Effect::of_set(a));
        let removed = self.removes.iter().filter_map(|a| Effect::of_removed(a));
        set.chain(removed)
    }
}

/// One AWS request the counting proxy forwarded.
#[derive(Debug, Clone)]
pub struct AwsRequest {
    pub arrived: Instant,
    /// `X-Amz-Target`, e.g. `DynamoDB_20120810.UpdateItem`.
    pub target: String,
    pub items: Vec<ItemTouched>,
}

/// One request, with what it does and why it is needed, if a reason is on file.
#[derive(Debug, Clone)]
pub struct ExplainedRequest {
    pub request: String,
    pub reason: Option<&'static str>,
}

/// The AWS and Polar requests in the order they arrived, explained. `polar_started` is taken
/// just before the double started: its requests' times count from its start.
pub fn in_order(
    aws: &[AwsRequest],
    polar: &[RecordedRequest],
    polar_started: Instant,
) -> Vec<ExplainedRequest> {
    let mut arrived: Vec<(Instant, ExplainedRequest)> = aws
        .iter()
        .map(|request| (request.arrived, explain_aws(request)))
        .collect();
    arrived.extend(polar.iter().map(|request| {
        let at = Duration::from_micros(request.received_at_us);
        (polar_started + at, explain_polar(request))
    }));
    arrived.sort_by_key(|(at, _)| *at);
    arrived.into_iter().map(|(_, request)| request).collect()
}

fn explain_aws(request: &AwsRequest) -> ExplainedRequest {
    let (service, operation) = match request.target.split_once('.') {
        Some((service, operation)) if service.starts_with("DynamoDB") => ("DynamoDB", operation),
        Some((_, operation)) => ("SQS", operation),
        None => ("AWS", request.target.as_str()),
    };
    let effects: BTreeSet<Effect> = request
        .items
        .iter()
        .flat_map(ItemTouched::effects)
        .collect();
    let reason = DYNAMODB_REASONS
        .iter()
        .find(|(op, on_file, _)| {
            service == "DynamoDB"
                && *op == operation
                && on_file.iter().copied().collect::<BTreeSet<_>>() == effects
        })
        .map(|(_, _, reason)| *reason);
    let mut request_words = format!("{service} {operation}");
    if !effects.is_empty() {
        let counted: Vec<String> = effects
            .iter()
            .map(|effect| {
                let items = request
                    .items
                    .iter()
                    .filter(|item| item.effects().any(|e| e == *effect))
                    .count();
                match items {
                    1 => effect.words().to_owned(),
                    n => format!("{} (×{n})", effect.words()),
                }
            })
            .collect();
        let _ = std::fmt::Write::write_fmt(
            &mut request_words,
            format_args!(" [{}]", counted.join(", ")),
        );
    }
    ExplainedRequest {
        request: request_words,
        reason,
    }
}

fn explain_polar(request: &RecordedRequest) -> ExplainedRequest {
    let path = request.path.split('?').next().unwrap_or("");
    let on_discount = path.starts_with("/v1/discounts/") && path.matches('/').count() == 3;
    let shown = if on_discount {
        "/v1/discounts/{id}"
    } else {
        path
    };
    let reason = POLAR_REASONS
        .iter()
        .find(|(method, _)| on_discount && *method == request.method)
        .map(|(_, reason)| *reason);
    ExplainedRequest {
        request: format!("Polar {} {shown}", request.method),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn update(table: &str, expression: &str, names: Value) -> Value {
        json!({"TableName": table, "UpdateExpression": expression, "ExpressionAttributeNames": names})
    }

    fn aws(target: &str, body: Value, after_ms: u64, start: Instant) -> AwsRequest {
        let operation = target.rsplit('.').next().unwrap();
        AwsRequest {
            arrived: start + Duration::from_millis(after_ms),
            target: target.into(),
            items: ItemTouched::of_request(operation, &body),
        }
    }

    fn polar(method: &str, received_at_ms: u64) -> RecordedRequest {
        let received_at_us = received_at_ms * 1000;
        RecordedRequest {
            method: method.into(),
            path: "/v1/discounts/9b1c1f3e-3c1a-4a57-9a43-6f0f3f1d2a10".into(),
            authorization: None,
            polar_version: None,
            body: String::new(),
            status: Some(200),
            received_at_us,
            answered_at_us: Some(received_at_us + 50_000),
        }
    }

    #[test]
    fn an_update_expression_names_the_attributes_it_sets_and_removes() {
        let body = update(
            "sync",
            "SET #owner = :token, #until = :until REMOVE #ttl, #journal",
            json!({"#owner": "leaseToken", "#until": "leaseExpiresAtMs", "#ttl": "expiresAt", "#journal": "journal"}),
        );
        assert_eq!(
            ItemTouched::of_request("UpdateItem", &body),
            [ItemTouched {
                sets: vec!["leaseToken".into(), "leaseExpiresAtMs".into()],
                removes: vec!["expiresAt".into(), "journal".into()],
            }]
        );
    }

    #[test]
    fn the_lone_messages_requests_are_listed_in_arrival_order_with_their_reasons() {
        let start = Instant::now();
        let lease = update(
            "sync",
            "SET #o = :t REMOVE #ttl",
            json!({"#o": "leaseToken", "#ttl": "expiresAt"}),
        );
        let claim = update(
            "orders",
            "SET #claim = :t",
            json!({"#claim": "polarDiscountSyncClaim"}),
        );
        let journal = update("sync", "SET #j = :j", json!({"#j": "journal"}));
        let mark = update(
            "orders",
            "SET #s = :true REMOVE #c",
            json!({"#s": "polarDiscountSynced", "#c": "polarDiscountSyncClaim"}),
        );
        let finish = update(
            "sync",
            "SET #ttl = :ttl REMOVE #j, #o",
            json!({"#ttl": "expiresAt", "#j": "journal", "#o": "leaseToken"}),
        );
        let transaction = |items: Vec<Value>| json!({"TransactItems": items.into_iter().map(|u| json!({"Update": u})).collect::<Vec<_>>()});
        let aws_requests = [
            aws(
                "DynamoDB_20120810.TransactWriteItems",
                transaction(vec![lease, claim]),
                0,
                start,
            ),
            aws("DynamoDB_20120810.UpdateItem", journal, 60, start),
            aws(
                "DynamoDB_20120810.TransactWriteItems",
                transaction(vec![mark, finish]),
                120,
                start,
            ),
        ];
        let polar_requests = [polar("GET", 5), polar("PATCH", 65)];

        let listed = in_order(&aws_requests, &polar_requests, start);

        let requests: Vec<&str> = listed.iter().map(|r| r.request.as_str()).collect();
        assert_eq!(
            requests,
            [
                "DynamoDB TransactWriteItems [takes the lease, claims an order]",
                "Polar GET /v1/discounts/{id}",
                "DynamoDB UpdateItem [writes the journal]",
                "Polar PATCH /v1/discounts/{id}",
                "DynamoDB TransactWriteItems [marks an order synced, clears the journal, releases the lease]",
            ]
        );
        assert!(listed.iter().all(|r| r.reason.is_some()), "{listed:?}");
    }

    #[test]
    fn a_request_with_no_reason_on_file_is_listed_without_one() {
        let start = Instant::now();
        let read = aws(
            "DynamoDB_20120810.GetItem",
            json!({"TableName": "orders"}),
            0,
            start,
        );
        let send = aws("AmazonSQS.SendMessage", json!({}), 1, start);
        let listed = in_order(&[read, send], &[], start);
        assert_eq!(listed[0].request, "DynamoDB GetItem");
        assert_eq!(listed[1].request, "SQS SendMessage");
        assert!(listed.iter().all(|r| r.reason.is_none()));
    }
}
