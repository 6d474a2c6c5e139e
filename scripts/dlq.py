"""Operator commands for the dead-letter queue.

  list     every message in the DLQ with the reason the function gave for each, and the
           queue's total
  redrive  move them back to the queue they came from after a fix: filtered by error
           class and message id, after a confirmation that names the destination

Runs in the project's .venv (boto3 comes with moto) with your usual AWS credentials,
for example through `make dlq-list STACK=...` and `make dlq-redrive STACK=...` (the queue
from the stack's DeadLetterQueueUrl output; DLQ_URL=... or --queue-url for another). The
SQS client is made in the queue URL's region. AWS errors are one line (scripts/stack.py).

Listing. The DLQ's total is its ApproximateNumberOfMessages. Each message received is held
(hidden) for HOLD_SECONDS, extended while the run lasts, so that one receive never returns
a message another already did; the listing receives until it has seen the total (or the
queue stops answering), then makes every message visible again at once.

How redrive works. The function dead-letters messages itself (SendMessageBatch to the DLQ with
the reason as message attributes), so SQS does not know where they came from, and
StartMessageMoveTask without a destination cannot move them; it would also carry the
failure attributes along. So redrive receives the messages (held, as for the listing,
until the run ends), picks those the filters select, asks for a confirmation that names
each destination queue (--yes skips it), then sends each body to its source queue and
deletes it from the DLQ, only once that send succeeded:
  - the destination is `--to QUEUE_URL` if given, else the message's SourceQueueArn
    attribute, else (a message the redrive policy moved, which has no such attribute) the
    one queue whose redrive policy names this DLQ (ListDeadLetterSourceQueues);
  - --class selects error classes (transient, configuration, permanent, none = moved by
    the redrive policy, with no class); --ids selects message ids (the DLQ's, or the
    OriginalMessageId the function logged). Permanent messages (a malformed message, an
    order that does not match) fail again unless something was fixed: they are left in the
    DLQ unless --include-permanent;
  - the body is sent unchanged, with OriginalMessageId (the first message's id, which
    the function logs and names in a later dead letter) and any attribute that is not a
    failure attribute; ErrorClass, ErrorKind, Reason, ReceiveCount, SourceQueueArn and
    RequeueCount are dropped, so the message starts over with fresh receives;
  - to a FIFO queue it is sent in its message group, deduplicated by the DLQ message's id
    (a second redrive within SQS's 5-minute window does not send it twice);
  - messages it does not move are left in the DLQ, visible again at the end of the run.
Permissions: the source queue's policy (template.yaml) denies SendMessage to every
principal but the checkout role, the function's role and the stack's OperatorRoleArn, so
run it as that role. The redrive reads each destination's policy before it moves anything
and stops, naming the OperatorRoleArn to set, when the policy denies the caller (the
caller's role from sts:GetCallerIdentity); a send refused anyway stops the run the same way.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stack import OperatorError, Resources, client, run  # noqa: E402

REASON_ATTRIBUTES = ["OriginalMessageId", "SourceQueueArn", "ErrorClass", "ErrorKind", "Reason", "ReceiveCount"]
# What the function writes when it dead-letters or requeues a message, and that a
# redriven message must not carry: it is a new attempt.
FAILURE_ATTRIBUTES = {"ErrorClass", "ErrorKind", "Reason", "ReceiveCount", "SourceQueueArn", "RequeueCount"}
ORIGINAL_MESSAGE_ID = "OriginalMessageId"
# The function's failure classes (src/failure.rs), and "none" for a message the queue's
# redrive policy moved (it carries no class).
CLASSES = ("transient", "configuration", "permanent", "none")
PERMANENT = "permanent"
# How long a received message stays hidden; extended by as much whenever less than
# EXTEND_MARGIN_SECONDS is left, for as long as the run holds it.
HOLD_SECONDS = 120
EXTEND_MARGIN_SECONDS = 40
IDLE_ROUNDS = 3
# How long the messages stay held while the confirmation waits for an answer.
CONFIRM_HOLD_SECONDS = 900


class Held:
    """Messages received and hidden from other consumers until this run releases them."""

    def __init__(self, sqs, queue_url, hold_seconds=HOLD_SECONDS, clock=time.monotonic):
        self.sqs, self.queue_url, self.hold_seconds, self.clock = sqs, queue_url, hold_seconds, clock
        self.until = {}  # receipt handle -> when its hold ends (clock)
        self.messages = {}  # message id -> message, in the order received

    def receive(self, wait_seconds, want=10):
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=max(1, min(10, want)), MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId"], VisibilityTimeout=self.hold_seconds,
            WaitTimeSeconds=wait_seconds)
        now = self.clock()
        new = []
        for message in response.get("Messages", []):
            self.until[message["ReceiptHandle"]] = now + self.hold_seconds
            if message["MessageId"] not in self.messages:
                self.messages[message["MessageId"]] = message
                new.append(message)
        self.extend()
        return new

    def extend(self):
        """Holds every message whose hold ends within the margin for another HOLD_SECONDS."""
        now = self.clock()
        due = [r for r, until in self.until.items() if until - now < EXTEND_MARGIN_SECONDS]
        self._change(due, self.hold_seconds)
        for receipt in due:
            self.until[receipt] = now + self.hold_seconds

    def hold_all(self, seconds):
        """Holds every message for `seconds` from now (while an operator answers)."""
        now = self.clock()
        self._change(list(self.until), seconds)
        for receipt in self.until:
            self.until[receipt] = now + seconds

    def forget(self, receipt):
        self.until.pop(receipt, None)

    def release(self):
        """Every message still held becomes visible again (best effort: else at its hold's end)."""
        try:
            self._change(list(self.until), 0)
        except Exception:  # noqa: BLE001 - they become visible when their hold ends anyway
            pass
        self.until.clear()

    def _change(self, receipts, seconds):
        for i in range(0, len(receipts), 10):
            self.sqs.change_message_visibility_batch(QueueUrl=self.queue_url, Entries=[
                {"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": seconds}
                for n, r in enumerate(receipts[i:i + 10])])


def queue_total(sqs, queue_url):
    """(visible, in flight) as SQS counts them (approximate)."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes.get("ApproximateNumberOfMessages", 0)), int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0))


def receive_all(held, total, limit=None, wait_seconds=1):
    """Receives until every message is held: the queue's total is reached and a receive
    brings nothing new (the total is approximate), or IDLE_ROUNDS receives in a row bring
    nothing new (the rest is in flight elsewhere), or `limit` messages are held."""
    idle = 0
    while limit is None or len(held.messages) < limit:
        want = 10 if limit is None else limit - len(held.messages)
        new = held.receive(wait_seconds, want=want)
        idle = 0 if new else idle + 1
        if (not new and len(held.messages) >= total) or idle >= IDLE_ROUNDS:
            break
    messages = list(held.messages.values())
    return messages if limit is None else messages[:limit]


def summary_of(message):
    attributes = message.get("MessageAttributes", {})
    return {
        "messageId": message["MessageId"],
        **{name: attributes.get(name, {}).get("StringValue") for name in REASON_ATTRIBUTES},
        "body": message["Body"],
    }


def list_messages(sqs, queue_url, limit=None, wait_seconds=1):
    """({"total": n, "inFlight": n, "messages": [...]}): every message, each released at the end."""
    total, in_flight = queue_total(sqs, queue_url)
    held = Held(sqs, queue_url)
    try:
        messages = receive_all(held, total, limit, wait_seconds)
    finally:
        held.release()
    return {"total": total, "inFlight": in_flight, "messages": [summary_of(m) for m in messages]}


def parse_queue_arn(arn):
    """`arn:aws:sqs:REGION:ACCOUNT:NAME` → (region, account, name), or None."""
    parts = arn.split(":") if isinstance(arn, str) else []
    if len(parts) == 6 and parts[0] == "arn" and parts[2] == "sqs" and all(parts[3:]):
        return parts[3], parts[4], parts[5]
    return None


class Destinations:
    """Queue URLs for the messages' SourceQueueArn, looked up once each."""

    def __init__(self, sqs, dlq_url, to_url):
        self.sqs = sqs
        self.dlq_url = dlq_url
        self.to_url = to_url
        self.urls = {}
        self._policy_source = None

    def for_message(self, message):
        """(url, how) or (None, why not)."""
        if self.to_url:
            return self.to_url, "--to"
        arn = message.get("MessageAttributes", {}).get("SourceQueueArn", {}).get("StringValue")
        if arn:
            return self.url_of(arn)
        return self.policy_source()

    def url_of(self, arn):
        if arn in self.urls:
            return self.urls[arn]
        parsed = parse_queue_arn(arn)
        if parsed is None:
            found = (None, f"SourceQueueArn {arn!r} is not an SQS queue ARN")
        else:
            region, account, name = parsed
            source = client("sqs", arn)
            try:
                url = source.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
                found = (url, "SourceQueueArn")
            except source.exceptions.ClientError as err:
                found = (None, f"source queue {arn} not found: {err}")
        self.urls[arn] = found
        return found

    def policy_source(self):
        if self._policy_source is None:
            urls = self.sqs.list_dead_letter_source_queues(QueueUrl=self.dlq_url).get("queueUrls", [])
            if len(urls) == 1:
                self._policy_source = (urls[0], "redrive policy")
            else:
                self._policy_source = (None, "no SourceQueueArn attribute, and "
                                       f"{len(urls)} queues name this DLQ in their redrive policy: use --to")
        return self._policy_source


def redriven_attributes(message):
    """The message attributes a redriven copy carries: everything but the failure's."""
    kept = {}
    for name, value in message.get("MessageAttributes", {}).items():
        if name in FAILURE_ATTRIBUTES:
            continue
        value = {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        kept[name] = value
    kept.setdefault(ORIGINAL_MESSAGE_ID, {"DataType": "String", "StringValue": message["MessageId"]})
    return kept


def error_class(message):
    return message.get("MessageAttributes", {}).get("ErrorClass", {}).get("StringValue") or "none"


def selection(message, classes, ids, include_permanent):
    """None if the filters select the message, else why not."""
    klass = error_class(message)
    if classes and klass not in classes:
        return f"class {klass}, not {','.join(sorted(classes))}"
    if ids:
        original = message.get("MessageAttributes", {}).get(ORIGINAL_MESSAGE_ID, {}).get("StringValue")
        if message["MessageId"] not in ids and original not in ids:
            return "not among --ids"
    if klass == PERMANENT and not include_permanent:
        return "permanent failure: it fails again unless its cause was fixed (--include-permanent to move it)"
    return None


def ask(question, answer=None):
    """True if the operator answers yes. Reads stdin; no answer (EOF) is no."""
    sys.stdout.flush()  # the plan's lines first
    print(question, end=" ", flush=True, file=sys.stderr)
    try:
        reply = answer() if answer else input()
    except EOFError:
        print("(no answer)", file=sys.stderr)
        return False
    return reply.strip().lower() in ("y", "yes")


def access_denied(err):
    code = getattr(err, "response", {}).get("Error", {}).get("Code", "")
    return code in ("AccessDenied", "AccessDeniedException", "AWS.SimpleQueueService.AccessDenied") or \
        "not authorized" in str(err)


def who_am_i():
    """The role ARN to give OperatorRoleArn, from the caller's identity (best effort)."""
    try:
        arn = client("sts").get_caller_identity()["Arn"]
    except Exception:  # noqa: BLE001
        return None
    parts = arn.split(":")
    if len(parts) == 6 and parts[5].startswith("assumed-role/"):
        return f"arn:{parts[1]}:iam::{parts[4]}:role/{parts[5].split('/')[1]}"
    return arn


def same_principal(allowed, caller):
    """Whether a policy's principal ARN is the caller's. A role ARN derived from an STS
    assumed-role ARN has no path, so a role matches by account and name."""
    if allowed == caller:
        return True
    a, c = allowed.split(":"), caller.split(":")
    return (len(a) == 6 and len(c) == 6 and a[2] == c[2] == "iam" and a[4] == c[4]
            and a[5].startswith("role/") and c[5].startswith("role/")
            and a[5].rsplit("/", 1)[1] == c[5].rsplit("/", 1)[1])


def policy_refusal(destination_url, role_arn):
    """Why the destination queue's policy denies SendMessage to `role_arn`, or None: the
    template's "NobodyElseSends" shape, a Deny to "*" unless aws:PrincipalArn is listed
    (ArnNotEquals / ArnNotLike / StringNotEquals). None when the policy cannot be read
    (the send itself then says)."""
    if not role_arn:
        return None
    try:
        policy = client("sqs", destination_url).get_queue_attributes(
            QueueUrl=destination_url, AttributeNames=["Policy"]).get("Attributes", {}).get("Policy")
    except Exception:  # noqa: BLE001 - not allowed to read it: the send will tell
        return None
    if not policy:
        return None
    found = json.loads(policy).get("Statement", [])
    for statement in found if isinstance(found, list) else [found]:
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if statement.get("Effect") != "Deny" or statement.get("Principal") not in ("*", {"AWS": "*"}):
            continue
        if not any(a.lower() in ("sqs:sendmessage", "sqs:*", "*") for a in actions):
            continue
        for operator in ("ArnNotEquals", "ArnNotLike", "StringNotEquals"):
            allowed = statement.get("Condition", {}).get(operator, {}).get("aws:PrincipalArn")
            if allowed is None:
                continue
            allowed = [allowed] if isinstance(allowed, str) else allowed
            if not any(same_principal(a, role_arn) for a in allowed):
                return (f"{destination_url}'s queue policy ({statement.get('Sid', 'a Deny')}) refuses SendMessage "
                        f"to {role_arn}: only {', '.join(allowed)} may send")
    return None


def refusal_hint(role):
    return (f"deploy with OperatorRoleArn={role or 'arn:aws:iam::ACCOUNT:role/NAME'} (the role you run this as), "
            "or run it as the stack's OperatorRoleArn (docs/deploy.md)")


def redrive(sqs, dlq_url, to_url=None, limit=None, dry_run=False, max_per_second=5, wait_seconds=1, out=print,
            classes=(), ids=(), include_permanent=False, confirm=None, check_policy=True):
    """Moves the selected messages (up to `limit`) from the DLQ to their source queues.
    `confirm(plan)` is asked before anything moves (None: no question); before that, each
    destination's queue policy is read, and a policy that denies this caller SendMessage
    stops the run with the OperatorRoleArn to set. Returns a summary."""
    classes, ids = set(classes), set(ids)
    destinations = Destinations(sqs, dlq_url, to_url)
    total, _ = queue_total(sqs, dlq_url)
    held = Held(sqs, dlq_url)
    summary = {"moved": 0, "left": 0, "failed": 0, "dryRun": dry_run, "total": total}
    pace = 1.0 / max_per_second if max_per_second else 0
    # A FIFO queue returns no message of a group while an earlier one of that group is held:
    # messages behind the moved ones are received in later rounds, under the same filters
    # and the one confirmation. A message left behind holds its group back (FIFO order).
    fifo = dlq_url.endswith(".fifo")
    seen, planned, confirmed, first_round = set(), 0, confirm is None, True
    try:
        while True:
            plan = []  # (message, url, how)
            for message in receive_all(held, total, None, wait_seconds):
                if message["MessageId"] in seen:
                    continue
                seen.add(message["MessageId"])
                why_not = selection(message, classes, ids, include_permanent)
                url, how = (None, why_not) if why_not else destinations.for_message(message)
                if url is None or (limit is not None and planned + len(plan) >= limit):
                    out(f"left     {message['MessageId']}: {how if url is None else f'beyond --limit {limit}'}")
                    summary["left"] += 1
                    continue
                plan.append((message, url, how))
            planned += len(plan)
            if plan and not dry_run and check_policy and first_round:
                role = who_am_i()
                for url in dict.fromkeys(url for _, url, _ in plan):
                    refused = policy_refusal(url, role)
                    if refused:
                        raise OperatorError(f"{refused}: {refusal_hint(role)}. Nothing moved.")
            first_round = False
            if dry_run:
                for message, url, how in plan:
                    out(f"would move {message['MessageId']} ({error_class(message)}) -> {url} ({how})")
                summary["moved"] = len(plan)
                if fifo and len(seen) < total:
                    out(f"note: FIFO: {total - len(seen)} more behind these in their message groups, "
                        "received only once these are moved")
                return summary
            if plan and not confirmed:
                targets = {}
                for _, url, _ in plan:
                    targets[url] = targets.get(url, 0) + 1
                more = (" (FIFO: the ones behind them in their message groups that the same filters select "
                        "follow without another question)") if fifo and len(seen) < total else ""
                question = (f"Move {len(plan)} of {total} message(s) from {dlq_url} to "
                            + ", ".join(f"{url} ({n})" for url, n in targets.items()) + f"{more}? [y/N]")
                held.hold_all(CONFIRM_HOLD_SECONDS)
                if not confirm(question):
                    summary["left"] += len(plan)
                    summary["declined"] = True
                    out(f"not confirmed: moved nothing, {len(plan)} left in the DLQ")
                    return summary
                confirmed = True
            moved_before = summary["moved"]
            for message, url, how in plan:
                move(sqs, dlq_url, held, message, url, how, summary, out)
                if pace:
                    time.sleep(pace)
            if not fifo or summary["moved"] == moved_before or (limit is not None and planned >= limit):
                return summary
    finally:
        held.release()


def move(sqs, dlq_url, held, message, url, how, summary, out):
    """Sends one message to its destination, then deletes it from the DLQ."""
    held.extend()
    send = {"QueueUrl": url, "MessageBody": message["Body"], "MessageAttributes": redriven_attributes(message)}
    if url.endswith(".fifo"):
        send["MessageGroupId"] = message.get("Attributes", {}).get("MessageGroupId", "redriven")
        send["MessageDeduplicationId"] = message["MessageId"]
    try:
        sent = sqs.send_message(**send)
    except Exception as err:  # noqa: BLE001 - reported, the message stays in the DLQ
        if access_denied(err):
            role = who_am_i()
            raise OperatorError(
                f"{url} refused SendMessage ({err}). Its queue policy lets only the checkout role, "
                f"the function and the stack's OperatorRoleArn send: {refusal_hint(role)}. "
                f"Moved {summary['moved']} before; the rest stay in the DLQ.") from None
        out(f"failed   {message['MessageId']} -> {url}: {err} (left in the DLQ)")
        summary["failed"] += 1
        return
    try:
        sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
        held.forget(message["ReceiptHandle"])
    except Exception as err:  # noqa: BLE001
        # Sent, not deleted: it comes back in the DLQ after its hold; a second
        # redrive is harmless (a synced order is acknowledged without Polar).
        out(f"sent     {message['MessageId']} -> {url} as {sent['MessageId']}, "
            f"but not deleted from the DLQ: {err}")
        summary["failed"] += 1
        return
    out(f"moved    {message['MessageId']} -> {url} as {sent['MessageId']} ({how})")
    summary["moved"] += 1


def comma_list(value):
    return [v.strip() for v in value.split(",") if v.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("list", help="print the DLQ's messages and their reasons")
    moving = commands.add_parser("redrive", help="move the DLQ's messages back to their source queue")
    for command in (listing, moving):
        command.add_argument("--stack", help="the stack whose DeadLetterQueueUrl output names the DLQ (or STACK)")
        command.add_argument("--queue-url", help="the dead-letter queue's URL (or DLQ_URL; wins over the stack's)")
        command.add_argument("--wait-seconds", type=int, default=1, help="long-poll time per receive")
        command.add_argument("--json", action="store_true", help="JSON output")
    listing.add_argument("--limit", type=int, help="list at most this many messages (default: all)")
    moving.add_argument("--to", help="destination queue URL (default: each message's source queue)")
    moving.add_argument("--limit", type=int, help="move at most this many messages")
    moving.add_argument("--class", dest="classes", type=comma_list, default=[],
                        help=f"only these error classes, comma-separated: {', '.join(CLASSES)}")
    moving.add_argument("--ids", type=comma_list, default=[],
                        help="only these message ids (the DLQ's or the OriginalMessageId), comma-separated")
    moving.add_argument("--include-permanent", action="store_true",
                        help="move permanent failures too (they fail again unless their cause was fixed)")
    moving.add_argument("--yes", action="store_true", help="do not ask for a confirmation")
    moving.add_argument("--dry-run", action="store_true", help="print what would move; move nothing")
    moving.add_argument("--max-per-second", type=float, default=5,
                        help="keeps the retried redemptions inside Polar's rate limit (default 5)")
    args = parser.parse_args()
    if args.command == "redrive":
        unknown = [c for c in args.classes if c not in CLASSES]
        if unknown:
            parser.error(f"--class {','.join(unknown)}: the classes are {', '.join(CLASSES)}")
        if PERMANENT in args.classes and not args.include_permanent:
            parser.error("--class permanent: permanent failures fail again unless their cause was fixed; "
                         "add --include-permanent (INCLUDE_PERMANENT=1) to move them")
    explicit = {"dlq_url": (args.queue_url or os.environ.get("DLQ_URL", "")).strip()}
    resources = Resources(stack=args.stack or os.environ.get("STACK", "").strip(), explicit=explicit, needs=["dlq_url"])
    dlq_url = resources.dlq_url
    if args.command == "redrive" and args.to and args.to.rstrip("/") == dlq_url.rstrip("/"):
        parser.error("--to is the dead-letter queue itself")
    sqs = client("sqs", dlq_url, region=resources.region)

    if args.command == "list":
        listed = list_messages(sqs, dlq_url, args.limit, args.wait_seconds)
        messages = listed["messages"]
        for message in messages:
            if args.json:
                print(json.dumps(message))
            else:
                print(f"{message['messageId']}  original={message['OriginalMessageId']}  "
                      f"class={message['ErrorClass']}  kind={message['ErrorKind']}  "
                      f"receives={message['ReceiveCount']}\n    source: {message['SourceQueueArn']}\n"
                      f"    reason: {message['Reason']}\n    body:   {message['body']}")
        sys.stdout.flush()
        line = f"{len(messages)} message(s) listed; the queue holds {listed['total']} (ApproximateNumberOfMessages)"
        if dlq_url.endswith(".fifo") and len(messages) < listed["total"]:
            line += ("; FIFO: a message group shows only its first messages while they are held, the rest once "
                     "they are moved (make dlq-redrive)")
        if listed["inFlight"]:
            line += f", {listed['inFlight']} more in flight (received by someone else, not listed)"
        print(f"{line}: {dlq_url}", file=sys.stderr)
        return 0
    out = (lambda line: print(line, file=sys.stderr)) if args.json else print
    summary = redrive(sqs, dlq_url, to_url=args.to, limit=args.limit, dry_run=args.dry_run,
                      max_per_second=args.max_per_second, wait_seconds=args.wait_seconds, out=out,
                      classes=args.classes, ids=args.ids, include_permanent=args.include_permanent,
                      confirm=None if args.yes else ask)
    if args.json:
        print(json.dumps(summary))
    else:
        verb = "would move" if args.dry_run else "moved"
        print(f"{verb} {summary['moved']}, left {summary['left']} in the DLQ, {summary['failed']} failed "
              f"(of {summary['total']} in the queue)")
    if summary.get("declined"):
        return 1
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    run(main)
