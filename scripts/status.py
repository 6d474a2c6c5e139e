"""Where an order or a discount stands, for operators.

  status.py --order ID      the order's sync attributes, its claim, and the journal that
                            holds it, if any (with its discount's lease)
  status.py --discount ID   the discount's lease (holder, expiry, live or expired), its
                            intent journal (orders, value read, intent) and Polar's
                            current discount

The tables come from the stack's outputs (`--stack`/STACK: OrdersTableName, SyncTableName),
or ORDERS_TABLE and SYNC_TABLE, which win (DynamoDB, with your usual AWS credentials, in
the stack's region; AWS_ENDPOINT_URL for moto). For the discount it GETs
{POLAR_API_URL}/discounts/{id} (POLAR_API_URL, else the stack's PolarApiUrl parameter, else
production) with, in this order: POLAR_READ_TOKEN (a read-only token: discounts:read is
all it needs), POLAR_ACCESS_TOKEN, or the function's own token read from its SSM
parameter (the stack's TokenParameterName output, or TOKEN_PARAMETER); it says which it
used. Read-only: it never writes anything. `--json` prints one JSON document instead.
Exit status 1 if the order or discount is found nowhere; AWS errors are one line.
Run it through `make status STACK=... ORDER=...` or `make status STACK=... DISCOUNT=...`.
"""

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from polar_http import DEFAULT_API_URL, Polar  # noqa: E402
from stack import Resources, run  # noqa: E402

# The item layouts the function writes (src/adapters/dynamo/mod.rs).
SYNCED, ACTION, SYNCED_AT, CLAIM = (
    "polarDiscountSynced", "polarDiscountSyncAction", "polarDiscountSyncedAt", "polarDiscountSyncClaim")
DISCOUNT_KEY_PREFIX = "discount#"
LEASE_TOKEN, LEASE_EXPIRES_AT_MS, JOURNAL, TTL = "leaseToken", "leaseExpiresAtMs", "journal", "expiresAt"


def plain(value):
    """A DynamoDB attribute value as plain JSON."""
    (kind, inner), = value.items()
    if kind == "S":
        return inner
    if kind == "N":
        return int(inner) if inner.lstrip("-").isdigit() else float(inner)
    if kind == "BOOL":
        return inner
    if kind == "NULL":
        return None
    if kind == "L":
        return [plain(v) for v in inner]
    if kind == "M":
        return {k: plain(v) for k, v in inner.items()}
    if kind in ("SS", "NS"):
        return sorted(inner)
    return str(inner)


def iso_ms(ms):
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ago(seconds):
    seconds = abs(seconds)
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def get(dynamodb, table, key):
    item = dynamodb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
    return {k: plain(v) for k, v in item.items()} if item else None


def order_state(dynamodb, orders_table, order_id):
    item = get(dynamodb, orders_table, {"id": {"S": order_id}})
    if item is None:
        return {"orderId": order_id, "found": False}
    return {
        "orderId": order_id,
        "found": True,
        "discountId": item.get("discountId"),
        "discountCode": item.get("discountCode"),
        "synced": item.get(SYNCED) is True,
        "action": item.get(ACTION),
        "syncedAt": item.get(SYNCED_AT),
        "claim": item.get(CLAIM),
    }


def discount_item(dynamodb, sync_table, discount_id, now_ms):
    item = get(dynamodb, sync_table, {"pk": {"S": f"{DISCOUNT_KEY_PREFIX}{discount_id}"}})
    if item is None:
        return {"found": False, "lease": None, "journal": None}
    lease = None
    if item.get(LEASE_TOKEN):
        expires = int(item.get(LEASE_EXPIRES_AT_MS) or 0)
        lease = {
            "holder": item[LEASE_TOKEN],
            "expiresAt": iso_ms(expires),
            "expiresAtMs": expires,
            "live": expires > now_ms,
            "secondsLeft": round((expires - now_ms) / 1000, 1),
        }
    journal = item.get(JOURNAL)
    if isinstance(journal, dict):
        journal = {
            "orders": journal.get("orders", []),
            "read": journal.get("read"),
            "intent": journal.get("intent"),
            "target": journal.get("target"),
        }
    ttl = item.get(TTL)
    return {
        "found": True,
        "lease": lease,
        "journal": journal,
        "idleExpiresAt": iso_ms(int(ttl) * 1000) if ttl is not None else None,
    }


def intent_text(journal):
    if journal["intent"] == "set_max_redemptions":
        return f"set max_redemptions {journal['read']} -> {journal['target']}"
    if journal["intent"] == "delete":
        return f"delete the discount (read max_redemptions {journal['read']})"
    return f"unknown intent {journal['intent']!r} (read {journal['read']})"


def lease_text(lease):
    if lease is None:
        return "free"
    if lease["live"]:
        return f"held by {lease['holder']} until {lease['expiresAt']} (live, {ago(lease['secondsLeft'])} left)"
    return (f"held by {lease['holder']} until {lease['expiresAt']} "
            f"(expired {ago(lease['secondsLeft'])} ago: the next sync or the reconciliation takes it over)")


def status_of_order(dynamodb, env, order_id, now_ms):
    order = order_state(dynamodb, env["ORDERS_TABLE"], order_id)
    report = {"order": order, "discount": None, "inJournal": False}
    if order["found"] and order["discountId"] and env.get("SYNC_TABLE"):
        item = discount_item(dynamodb, env["SYNC_TABLE"], order["discountId"], now_ms)
        report["discount"] = item
        report["inJournal"] = bool(item["journal"]) and order_id in item["journal"]["orders"]
    return report


def print_order(report):
    order = report["order"]
    if not order["found"]:
        print(f"order {order['orderId']}: not in the orders table")
        return
    print(f"order {order['orderId']}")
    print(f"  discount: {order['discountId']} (code {order['discountCode']})")
    if order["synced"]:
        print(f"  synced:   yes: {order['action']} at {order['syncedAt']}")
    else:
        print("  synced:   no")
    item = report["discount"]
    lease = item["lease"] if item else None
    if order["claim"]:
        if lease and lease["holder"] == order["claim"]:
            whose = "the discount's current lease: " + ("live" if lease["live"] else "expired")
        else:
            whose = "an earlier lease, no longer held: the claim alone counts nothing on Polar"
        print(f"  claim:    {order['claim']} ({whose})")
    else:
        print("  claim:    none")
    if report["inJournal"]:
        journal = item["journal"]
        print(f"  journal:  held by the discount's journal: {intent_text(journal)}, "
              f"orders {', '.join(journal['orders'])}")
        print("            the write may have landed on Polar: the next sync of the discount or the "
              "scheduled reconciliation marks the order")
        print(f"  lease:    {lease_text(lease)}")
    else:
        print("  journal:  no journal holds it")


def status_of_discount(dynamodb, env, discount_id, now_ms, polar):
    item = discount_item(dynamodb, env["SYNC_TABLE"], discount_id, now_ms)
    report = {"discountId": discount_id, "syncItem": item, "journalOrders": [], "polar": None}
    if item["journal"] and env.get("ORDERS_TABLE"):
        report["journalOrders"] = [order_state(dynamodb, env["ORDERS_TABLE"], o) for o in item["journal"]["orders"]]
    report["polar"] = polar
    return report


def print_discount(report):
    item = report["syncItem"]
    print(f"discount {report['discountId']}")
    if not item["found"]:
        print("  sync item: none (not synced within the last 7 days, or never)")
    else:
        print(f"  lease:    {lease_text(item['lease'])}")
        journal = item["journal"]
        if journal:
            print(f"  journal:  {intent_text(journal)}; orders {', '.join(journal['orders'])}")
            for order in report["journalOrders"]:
                state = (f"synced ({order['action']})" if order.get("synced")
                         else "not synced" if order["found"] else "not in the orders table")
                print(f"            {order['orderId']}: {state}")
        else:
            print("  journal:  none")
        if item.get("idleExpiresAt"):
            print(f"  idle item expires (TTL) {item['idleExpiresAt']}")
    polar = report["polar"]
    for note in polar.get("notes", []):
        print(f"  note:     {note}")
    state = polar.get("state")
    if state == "found":
        d = polar["discount"]
        limit = d.get("max_redemptions")
        print(f"  polar:    {d.get('code')} ({d.get('name')}): max_redemptions="
              f"{'unlimited' if limit is None else limit}, redemptions_count={d.get('redemptions_count')} "
              f"[{polar['url']}]")
    elif state == "deleted":
        print(f"  polar:    deleted (404 ResourceNotFound) [{polar['url']}]")
    elif state == "not_asked":
        print("  polar:    not asked (no token: POLAR_READ_TOKEN, or STACK=/TOKEN_PARAMETER for the SSM parameter)")
    else:
        print(f"  polar:    could not read it: {polar.get('error')} [{polar['url']}]")


def polar_client(resources, environ=os.environ):
    """(Polar or None, url, notes): the token and the URL, and which were used."""
    notes = []
    url = environ.get("POLAR_API_URL", "").strip()
    if not url and resources.description:
        parameters = {p["ParameterKey"]: p.get("ParameterValue") for p in resources.description.get("Parameters", [])}
        url = (parameters.get("PolarApiUrl") or "").strip()
        if url:
            notes.append(f"Polar API: {url} (the stack's PolarApiUrl)")
    if not url:
        notes.append(f"POLAR_API_URL is not set: using {DEFAULT_API_URL}")
        url = DEFAULT_API_URL
    for variable, what in (("POLAR_READ_TOKEN", "a read-only token"), ("POLAR_ACCESS_TOKEN", "the token in your shell")):
        token = environ.get(variable, "").strip()
        if token:
            notes.append(f"token: {variable} ({what})")
            return Polar(url, token), url, notes
    if resources.token_parameter:
        ssm = resources.client("ssm")
        token = ssm.get_parameter(Name=resources.token_parameter, WithDecryption=True)["Parameter"]["Value"]
        notes.append(f"token: SSM parameter {resources.token_parameter} (the function's own; "
                     "POLAR_READ_TOKEN=… to use a read-only one)")
        return Polar(url, token), url, notes
    notes.append("no token (POLAR_READ_TOKEN, POLAR_ACCESS_TOKEN, or STACK=/TOKEN_PARAMETER for the SSM "
                 "parameter): Polar was not asked")
    return None, url, notes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--order", help="an order id")
    which.add_argument("--discount", help="a Polar discount id")
    parser.add_argument("--stack", help="the stack whose outputs name the tables and the token parameter (or STACK)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)
    target = args.order if args.order is not None else args.discount
    if not target.strip():
        parser.error("the order or discount id is empty")
    needs = ["orders_table", "sync_table"] if args.order is not None else ["sync_table"]
    resources = Resources.from_env(needs=needs, stack=args.stack)
    env = {"ORDERS_TABLE": resources.orders_table or "", "SYNC_TABLE": resources.sync_table}
    dynamodb = resources.client("dynamodb")
    now_ms = int(time.time() * 1000)

    if args.order is not None:
        report = status_of_order(dynamodb, env, args.order, now_ms)
        found = report["order"]["found"]
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_order(report)
        return 0 if found else 1

    client, url, notes = polar_client(resources)
    if client is None:
        polar = {"state": "not_asked", "url": url}
    else:
        polar = {**client.get_discount(args.discount), "url": url}
    polar["notes"] = notes
    report = status_of_discount(dynamodb, env, args.discount, now_ms, polar)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_discount(report)
    return 0 if report["syncItem"]["found"] or polar.get("state") == "found" else 1


if __name__ == "__main__":
    run(main)
