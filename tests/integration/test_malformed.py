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
    if tid and len(tid.encode()) <= 255:  # an AMQP short string
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


# ---- Long and oversized fields (issue #14) -------------------------------------------------
#
# Limits (README "Message limits"): ids (id, root_id, parent_id, group) and names (task,
# shadow) up to 1024 bytes, origin 1024, lang 64, eta/expires 64, argsrepr/kwargsrepr 64 KiB.
# AMQP itself caps short strings (routing key, reply_to, correlation_id, content type) at 255
# bytes and the header table at one frame.

ID_MAX = 1024
LIMITS = {"id": ID_MAX, "root_id": ID_MAX, "parent_id": ID_MAX, "group": ID_MAX,
          "task": ID_MAX, "shadow": ID_MAX, "origin": 1024, "lang": 64, "eta": 64,
          "expires": 64, "argsrepr": 65536, "kwargsrepr": 65536}


def _publish_count(conn, queue, tid, key, **headers):
    """it.count_sleep(key, 0) under task id `tid`, as a Celery client would send it (the
    correlation_id property is an AMQP short string: only ids of <= 255 bytes fit there)."""
    h = _headers(task="it.count_sleep", tid=tid)
    h.update(headers)
    ch = conn.channel()
    props = {"content_type": "application/json", "content_encoding": "utf-8",
             "delivery_mode": 2, "application_headers": h}
    if len(tid.encode()) <= 255:
        props["correlation_id"] = tid
    ch.basic_publish(amqp.Message(json.dumps([[key, 0], {}, EMBED]).encode(), **props),
                     exchange="", routing_key=queue)
    ch.close()


@pytest.mark.parametrize("tid", [
    "a" * 239,                 # the first length that overflowed the 256-byte result key
    "b" * 255,                 # the longest a Celery client can send as correlation_id
    "\U0001F600" * 255,        # 255 characters, 1020 bytes of UTF-8
    "c" * ID_MAX,              # the limit itself
], ids=["239", "255", "255-chars-4-bytes", "limit"])
def test_long_task_id_stored_and_run_once(tid, worker_factory, amqp_conn, rds, rds7):
    """A task id of 239+ characters overflowed the result key buffer: the store failed, the
    message was requeued, and the redelivery counter never moved, so the task ran forever.
    Now the result is stored under the whole id and the task runs once."""
    w = worker_factory(queue=unique_queue("longid"), concurrency=1, acks_late=True,
                       extra=["--max-redeliveries", "3"])
    key = "longid-" + uuid.uuid4().hex
    _publish_count(amqp_conn, w.queue, tid, key)
    raw = wait_for(lambda: rds.get("celery-task-meta-" + tid), TIMEOUT, "the stored result")
    meta = json.loads(raw)
    assert meta["status"] == "SUCCESS" and meta["result"] == 1 and meta["task_id"] == tid
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 0, 5, "message acked")
    # Settle: nothing runs it again.
    import time
    time.sleep(1)
    assert rds7.get(key) == b"1"
    assert "could not store" not in w.log() and "requeueing" not in w.log()
    assert w.proc.poll() is None


@pytest.mark.parametrize("field", sorted(LIMITS))
def test_field_over_limit_rejected_once(field, app, worker_factory, amqp_conn, dlx_queue, rds7):
    """Every string field has an explicit limit; one byte past it the message is rejected
    without requeue (dead-lettered), with one ERROR line that names the field, its size and
    the limit, and it never runs."""
    w = _worker(worker_factory)
    n = LIMITS[field] + 1
    tid = str(uuid.uuid4())
    key = "overlimit-" + uuid.uuid4().hex
    value = ("x" * n) if field not in ("eta", "expires") else ("2026-01-01T00:00:00" + "0" * n)[:n]
    h = {field: value} if field != "id" else {}
    if field == "id":
        tid = value
    _publish_count(amqp_conn, w.queue, tid, key, **h)
    assert app.send_task("demo.add", args=[2, 3], queue=w.queue).get(timeout=TIMEOUT) == 5
    ch, dname = dlx_queue
    got = wait_for(lambda: _dead_lettered(ch, dname), 5, "dead-lettered message")
    assert len(got) == 1 and got[0].headers["x-death"][0]["reason"] == "rejected"
    assert queue_depth(amqp_conn, w.queue) == 0
    assert rds7.get(key) is None  # never ran
    lines = [ln for ln in w.log().splitlines() if "Rejecting" in ln]
    assert len(lines) == 1, lines
    assert "%s of %d bytes is over the %d-byte limit" % (
        {"id": "task id", "task": "task name"}.get(field, field), n, LIMITS[field]) in lines[0]
    assert len(lines[0]) < 1024
    assert w.proc.poll() is None


def test_huge_fields_keep_log_lines_bounded(app, worker_factory, amqp_conn, dlx_queue):
    """Task ids and names of 30-120 KB were logged in full on ~5 lines per message. Now every
    message-derived string in a log line is cut (with a marker and its length), so what the
    worker logs per message stays small whatever the publisher sends."""
    w = worker_factory(queue=unique_queue("dlq"), concurrency=1)
    big = 120000
    msgs = []
    # Rejected: each field in turn 120 KB.
    for field in sorted(LIMITS):
        tid = str(uuid.uuid4())
        h = _headers(task="demo.add", tid=tid)
        if field == "id":
            h["id"] = "i" * big
        else:
            h[field] = "f" * big
        msgs.append((h, json.dumps([[1, 2], {}, EMBED]).encode(), "application/json"))
    # Accepted, with every id and name at its limit: an unknown task (NotRegistered), a task
    # that fails binding on a huge keyword name (TypeError from the wire), one that runs.
    long = {"id": "i" * ID_MAX, "root_id": "r" * ID_MAX, "parent_id": "p" * ID_MAX,
            "group": "g" * ID_MAX, "shadow": "s" * ID_MAX, "origin": "o" * 1024}
    msgs.append((_headers(task="n" * ID_MAX, **long), json.dumps([[1], {}, EMBED]).encode(),
                 "application/json"))
    msgs.append((_headers(task="demo.add", **long),
                 json.dumps([[1, 2], {"k" * 60000: 1}, EMBED]).encode(), "application/json"))
    msgs.append((_headers(task="demo.add", **long), json.dumps([[1, 2], {}, EMBED]).encode(),
                 "application/json"))
    # A content type the worker refuses, at AMQP's 255-byte limit.
    msgs.append((_headers(task="demo.add"), b"x", "application/" + "y" * 243))
    before = len(w.log().encode())
    for i, (h, body, ctype) in enumerate(msgs):
        _publish(amqp_conn, w.queue, h, body, ctype, "big-%d" % i)
    assert app.send_task("demo.add", args=[2, 3], queue=w.queue).get(timeout=TIMEOUT) == 5
    logged = w.log().encode()[before:]
    per_msg = len(logged) / len(msgs)
    longest = max(len(ln) for ln in logged.splitlines())
    print("log bytes per message: %.0f, longest line %d" % (per_msg, longest))
    assert per_msg < 3072, logged[:3000]
    assert longest < 4096
    assert b"...[+" in logged  # the cut is marked, with the original length
    assert w.proc.poll() is None


FORGED = "[2026-01-01 00:00:00,000: CRITICAL/MainProcess] forged"


def test_message_fields_cannot_forge_log_lines(app, worker_factory, amqp_conn, dlx_queue):
    """A task id or name with a newline wrote a log line of its own (a fake CRITICAL line;
    the fuzz campaign found 206 in 90 s). Control bytes of message fields are escaped in
    the log: the text shows up, never as a line."""
    w = worker_factory(queue=unique_queue("forge"), concurrency=1)
    evil = "x\n" + FORGED + "\r\x1b[2J"
    msgs = [
        (_headers(task="demo.add", tid=evil), json.dumps([[1, 2], {}, EMBED]).encode()),
        (_headers(task="no.such" + evil), json.dumps([[1], {}, EMBED]).encode()),
        (_headers(task="demo.add", parent_id=evil, root_id=evil),
         json.dumps([[1, "a"], {}, EMBED]).encode()),
    ]
    before = len(w.log())
    for i, (h, body) in enumerate(msgs):
        _publish(amqp_conn, w.queue, h, body, "application/json", "forge-%d" % i)
    assert app.send_task("demo.add", args=[2, 3], queue=w.queue).get(timeout=TIMEOUT) == 5
    logged = w.log()[before:]
    assert "forged" in logged  # the fields were logged...
    lines = [ln for ln in logged.splitlines() if ln.startswith(FORGED)]
    assert not lines, lines  # ...but never as a line of their own
    assert "\x1b" not in logged and "\r" not in logged
    assert w.proc.poll() is None
