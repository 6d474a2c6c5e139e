"""moto's server, applying one request at a time, with transactions that cost what they touch.

DynamoDB applies a conditional write atomically. moto's threaded server checks a condition
and writes in separate Python steps, so two concurrent conditional writes can both pass.
The lease and the journal rely on that atomicity, so the tests serialize moto's requests.

moto backs every TransactWriteItems up by deep-copying each whole table it names, so a
transaction's cost grows with the table (146 ms for an 11-item transaction next to 500
orders, against 7 ms for an UpdateItem), where DynamoDB's does not. The function commits
with transactions, so the exactly-once test and the benchmarks measured moto's copying more
than the function. Here a transaction backs up only the items it names, and puts exactly
those back when it is cancelled; moto's own checks and writes are unchanged.

moto's ReceiveMessage reads the clock through a datetime round trip several times per
message in the queue, and re-derives the queue's attribute names per message it returns:
about 250 ms per receive next to 100 messages, all of it holding the one-at-a-time lock
the function's requests wait behind. Here SQS reads the clock with `time.time()` (the same
value) and remembers each name's conversion: about 40 ms.

moto also redoes, for every request, work that depends only on text the function sends
again and again: it lexes each condition expression and parses each update expression
(twice: to validate the request, then to apply it), matches the Host header against every
service's URL patterns after listing its own package directory, lists its handler's
methods to find the action's, rebuilds each validator's node types at every node it
visits, and logs the request line. moto was busy about 77% of the exactly-once test, so
every request queued behind others. Here the lexed condition, the parsed update
expression, a host's service, a handler's methods and a validator's node types are
remembered, and request lines are not logged. Sharing them is safe: moto builds new nodes
from the lexed ones, and copies an update expression's tree before it fills in a request's
names and values. A 2-item TransactWriteItems in the 10-discount bench went from 16 to
7 ms, and moto was busy about 58% of the exactly-once test.
Usage: same flags as moto_server.
"""

import collections
import copy
import functools
import threading
import time
import types

import moto.core.responses as core_responses
import moto.dynamodb.models as dynamodb_models
import moto.server
import moto.sqs.models as sqs_models
from moto.core import utils as moto_utils
from moto.dynamodb.comparisons import ConditionExpressionParser
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.parsing.ast_nodes import DepthFirstTraverser
from moto.dynamodb.parsing.expressions import UpdateExpressionParser
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from werkzeug.serving import run_simple

_one_at_a_time = threading.Lock()


class Serialized:
    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        with _one_at_a_time:
            return list(self.app(environ, start_response))


def run_serialized(host, port, app, request_handler, **kwargs):
    class Quiet(request_handler):
        def log_request(self, *args, **kwargs):
            pass

    run_simple(host, port, Serialized(app), request_handler=Quiet, **kwargs)


def _keys_of(table, op):
    attributes = op.get("Item") if "Item" in op else op.get("Key", {})
    hash_key = DynamoType(attributes[table.hash_key_attr])
    range_key = (
        DynamoType(attributes[table.range_key_attr]) if table.has_range_key else None
    )
    return hash_key, range_key


def _restore(table, hash_key, range_key, before):
    if before is None:
        if table.get_item(hash_key, range_key) is not None:
            if range_key is None:
                table.items.pop(hash_key)
            else:
                table.items[hash_key].pop(range_key)
    elif range_key is None:
        table.items[hash_key] = before
    else:
        table.items[hash_key][range_key] = before


# moto's `copy`, except that a table's "copy" is the table itself: the whole-table backup
# becomes free, and its restore (putting the table back in place) a no-op.
# Swapped in for one transaction at a time: requests are serialized (above), so no other
# request sees it.
_tables_by_reference = types.SimpleNamespace(
    deepcopy=lambda value, *a: value if isinstance(value, Table) else copy.deepcopy(value, *a)
)


_moto_transact_write_items = DynamoDBBackend.transact_write_items


def transact_write_items(self, transact_items):
    backups = []
    for item in transact_items:
        try:
            _, op = next(iter(item.items()))
            table = self.tables.get(op.get("TableName"))
            hash_key, range_key = _keys_of(table, op)
        except (AttributeError, KeyError, StopIteration, TypeError, ValueError):
            continue  # malformed: moto writes nothing for it, so nothing to put back
        before = copy.deepcopy(table.get_item(hash_key, range_key))
        backups.append((table, hash_key, range_key, before))
    moto_copy = dynamodb_models.copy
    dynamodb_models.copy = _tables_by_reference
    try:
        return _moto_transact_write_items(self, transact_items)
    except Exception:
        for table, hash_key, range_key, before in reversed(backups):
            _restore(table, hash_key, range_key, before)
        raise
    finally:
        dynamodb_models.copy = moto_copy


def unix_time(dt=None):
    return time.time() if dt is None else moto_utils.unix_time(dt)


def unix_time_millis(dt=None):
    return time.time() * 1000.0 if dt is None else moto_utils.unix_time_millis(dt)


_moto_lex = ConditionExpressionParser._lex_condition_expression


@functools.lru_cache(maxsize=1024)
def _lexed(condition_expression):
    return tuple(_moto_lex(ConditionExpressionParser(condition_expression, None, None)))


def lex_condition_expression(self):
    return collections.deque(_lexed(self.condition_expression))


_moto_parse_update_expression = UpdateExpressionParser.make


@functools.lru_cache(maxsize=1024)
def parse_update_expression(update_expression):
    return _moto_parse_update_expression(update_expression)


_moto_node_types = DepthFirstTraverser.nodes_to_be_processed
_node_types_by_traverser = {}


def nodes_to_be_processed(self):
    kind = type(self)
    if kind not in _node_types_by_traverser:
        _node_types_by_traverser[kind] = _moto_node_types(self)
    return _node_types_by_traverser[kind]


_moto_backend_for_host = DomainDispatcherApplication.get_backend_for_host


@functools.lru_cache(maxsize=256)
def backend_for_host(self, host):
    return _moto_backend_for_host(self, host)


if __name__ == "__main__":
    DynamoDBBackend.transact_write_items = transact_write_items
    ConditionExpressionParser._lex_condition_expression = lex_condition_expression
    UpdateExpressionParser.make = staticmethod(parse_update_expression)
    DepthFirstTraverser.nodes_to_be_processed = nodes_to_be_processed
    DomainDispatcherApplication.get_backend_for_host = backend_for_host
    core_responses.method_names_from_class = functools.lru_cache(maxsize=None)(
        moto_utils.method_names_from_class
    )
    sqs_models.unix_time = unix_time
    sqs_models.unix_time_millis = unix_time_millis
    sqs_models.camelcase_to_underscores = functools.lru_cache(maxsize=None)(
        moto_utils.camelcase_to_underscores
    )
    moto.server.run_simple = run_serialized
    moto.server.main()
