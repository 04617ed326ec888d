"""Malformed and unacceptable messages: the worker survives, rejects them without requeue
(RabbitMQ dead-letters them: queues named dlq-* get the it.dlx exchange by policy), and
processes the next normal task.

Python Celery crashes on some of these (2-element body, 1-element timelimit; reference
§2.3a), so this module is celeryc-only."""
import json
import pickle
import uuid

import amqp
import pytest

from conftest import TIMEOUT, c_only, queue_depth, unique_queue, wait_for

pytestmark = c_only

MAX_BYTES = 4096


def _headers(task="demo.add", tid=None, **extra):
    h = {"lang": "py", "task": task, "id": tid or str(uuid.uuid4()), "shadow": None,
         "eta": None, "expires": None, "group": None, "group_index": None, "retries": 0,
         "timelimit": [None, None], "root_id": None, "parent_id": None,
         "argsrepr": "()", "kwargsrepr": "{}", "origin": "it@localhost",
         "ignore_result": False}
    h.update(extra)
    return {k: v for k, v in h.items() if v is not _DROP}


_DROP = object()
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

# case -> (headers, body bytes, content_type)
CASES = {
    "not-json": (_headers(), b"{not json", "application/json"),
    "body-2-elements": (_headers(), json.dumps([[1, 2], {}]).encode(), "application/json"),
    "timelimit-1-element": (_headers(timelimit=[None]),
                            json.dumps([[1, 2], {}, EMBED]).encode(), "application/json"),
    "no-task-header": (_headers(task=_DROP), json.dumps([[1, 2], {}, EMBED]).encode(),
                       "application/json"),
    "no-id-header": (_headers(tid=None, id=_DROP), json.dumps([[1, 2], {}, EMBED]).encode(),
                     "application/json"),
    "v1-dict-without-task": ({}, json.dumps({"id": str(uuid.uuid4()), "args": [1, 2],
                                             "kwargs": {}}).encode(), "application/json"),
    "args-not-list": (_headers(), json.dumps([{"x": 1}, {}, EMBED]).encode(), "application/json"),
    "kwargs-not-dict": (_headers(), json.dumps([[1, 2], [3], EMBED]).encode(),
                        "application/json"),
    "oversized": (_headers(task="t.integration.tasks.identity"),
                  json.dumps([["x" * (MAX_BYTES * 3)], {}, EMBED]).encode(), "application/json"),
    "pickle": (_headers(), pickle.dumps(((1, 2), {}, EMBED), protocol=4),
               "application/x-python-serialize"),
    "yaml": (_headers(), b"- [1, 2]\n- {}\n- {callbacks: null}\n", "application/x-yaml"),
}


@pytest.fixture
def dlx_queue(amqp_conn):
    """A queue bound to the it.dlx fanout exchange that collects dead-lettered messages."""
    ch = amqp_conn.channel()
    ch.exchange_declare("it.dlx", "fanout", durable=True, auto_delete=False)
    name = unique_queue("dead")
    ch.queue_declare(name, durable=False, auto_delete=False, exclusive=False)
    ch.queue_bind(name, "it.dlx", "")
    yield ch, name
    try:
        ch.queue_delete(name)
        ch.close()
    except Exception:
        pass


def _publish(conn, queue, headers, body, content_type, case):
    ch = conn.channel()
    props = {"content_type": content_type,
             "content_encoding": "binary" if "pickle" in content_type else "utf-8",
             "delivery_mode": 2, "priority": 0, "message_id": case,
             "application_headers": headers}
    tid = headers.get("id") if isinstance(headers, dict) else None
    if tid:
        props["correlation_id"] = tid
    ch.basic_publish(amqp.Message(body, **props), exchange="", routing_key=queue)
    ch.close()


def _dead_lettered(ch, name):
    got = []
    while True:
        m = ch.basic_get(name, no_ack=True)
        if m is None:
            return got
        got.append(m)


def _worker(worker_factory):
    return worker_factory(queue=unique_queue("dlq"), concurrency=1,
                          extra=["--max-message-bytes", str(MAX_BYTES)])


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_rejected_dead_lettered_worker_survives(case, app, worker_factory, amqp_conn,
                                                          dlx_queue):
    w = _worker(worker_factory)
    headers, body, ctype = CASES[case]
    _publish(amqp_conn, w.queue, headers, body, ctype, case)
    # The next normal task still runs.
    assert app.send_task("demo.add", args=[2, 3], queue=w.queue).get(timeout=TIMEOUT) == 5
    assert w.proc.poll() is None, "worker died"
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 0, 5, "queue empty (not requeued)")
    ch, dname = dlx_queue
    got = wait_for(lambda: _dead_lettered(ch, dname), 5, "dead-lettered message")
    assert [m.properties.get("message_id") for m in got] == [case]
    death = got[0].headers["x-death"][0]
    assert death["queue"] == w.queue and death["reason"] == "rejected"
    if "id" in headers and ctype == "application/json" and case != "oversized":
        # No result for a message that never became a task (Python stores none either).
        pass


def test_all_malformed_in_a_burst(app, worker_factory, amqp_conn, dlx_queue, rds):
    w = _worker(worker_factory)
    for case in sorted(CASES):
        headers, body, ctype = CASES[case]
        _publish(amqp_conn, w.queue, headers, body, ctype, case)
    rs = [app.send_task("demo.add", args=[i, i], queue=w.queue) for i in range(5)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [0, 2, 4, 6, 8]
    ch, dname = dlx_queue
    seen = []
    wait_for(lambda: seen.extend(_dead_lettered(ch, dname)) or len(seen) >= len(CASES), 10,
             "all dead-lettered")
    assert sorted(m.properties.get("message_id") for m in seen) == sorted(CASES)
    assert queue_depth(amqp_conn, w.queue) == 0
    assert w.proc.poll() is None
    # The pickle message must never have been executed: no result under its id.
    assert rds.get("celery-task-meta-" + CASES["pickle"][0]["id"]) is None
