"""Poison-message protection Celery lacks: deliveries of the same task are counted and past
--max-redeliveries the message is dead-lettered (to <queue>.dead, or to the queue's DLX),
FAILURE (WorkerLostError) is stored so AsyncResult.get() raises, and the worker carries on.

Counting sources: a quorum queue's x-delivery-count header (simulated here by publishing it
on a classic queue: the worker cannot declare a quorum queue yet), and the Redis counter
celeryc-deliveries-<task id> for redelivered messages (real redeliveries: the worker is
killed with SIGKILL in the middle of an acks_late task, so the message comes back).

celeryc-only (Celery has no such limit)."""
import json
import re
import signal
import uuid

import amqp
import pytest
from billiard.exceptions import WorkerLostError

from conftest import TIMEOUT, c_only, queue_depth, unique_queue, wait_for

pytestmark = c_only

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def declare(conn, q):
    ch = conn.channel()
    ch.exchange_declare(q, "direct", durable=True, auto_delete=False)
    ch.queue_declare(q, durable=True, auto_delete=False)
    ch.queue_bind(q, q, q)
    ch.close()


def publish_raw(conn, q, task, args, tid, **extra_headers):
    """A protocol-2 message as Celery 5.2 publishes it, plus extra headers."""
    h = {"lang": "py", "task": task, "id": tid, "shadow": None, "eta": None, "expires": None,
         "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
         "root_id": tid, "parent_id": None, "argsrepr": repr(tuple(args)), "kwargsrepr": "{}",
         "origin": "it@localhost", "ignore_result": False}
    h.update(extra_headers)
    body = json.dumps([args, {}, EMBED]).encode()
    ch = conn.channel()
    ch.basic_publish(amqp.Message(body, content_type="application/json",
                                  content_encoding="utf-8", correlation_id=tid,
                                  delivery_mode=2, application_headers=h),
                     exchange=q, routing_key=q)
    ch.close()
    return body


def get_one(conn, q, timeout=10):
    ch = conn.channel()
    box = []

    def take():
        m = ch.basic_get(q, no_ack=True)
        if m is not None:
            box.append(m)
        return bool(box)
    wait_for(take, timeout, "a message in %s" % q)
    ch.close()
    return box[0]


def raw_body(m):
    """py-amqp decodes utf-8 bodies to str."""
    return m.body if isinstance(m.body, bytes) else m.body.encode()


def test_delivery_count_header_dead_letters_to_queue(app, worker_factory, amqp_conn, rds):
    q = unique_queue("poison")
    declare(amqp_conn, q)
    ok_id, bad_id = str(uuid.uuid4()), str(uuid.uuid4())
    publish_raw(amqp_conn, q, "demo.add", [1, 2], ok_id, **{"x-delivery-count": 3})
    body = publish_raw(amqp_conn, q, "demo.add", [2, 2], bad_id, **{"x-delivery-count": 4})
    w = worker_factory(queue=q, extra=["--max-redeliveries", "3"])

    # At the limit it still runs; past it, it is dead-lettered with a clear ERROR line.
    assert app.AsyncResult(ok_id).get(timeout=TIMEOUT) == 3
    w.wait_log(r"ERROR.*Task demo\.add\[%s\] dead-lettered: redelivered 4 times, more than "
               r"worker_max_redeliveries=3 \(counted by x-delivery-count\); moved to queue "
               r"'%s\.dead'" % (bad_id, q), 10)
    with pytest.raises(WorkerLostError) as ei:
        app.AsyncResult(bad_id).get(timeout=TIMEOUT)
    assert "dead-lettered to %s.dead" % q in str(ei.value)
    meta = json.loads(rds.get("celery-task-meta-" + bad_id))
    assert meta["status"] == "FAILURE"
    assert meta["result"]["exc_module"] == "billiard.exceptions"

    # The original message, unchanged, is in <queue>.dead (durable, declared by the worker).
    dead = get_one(amqp_conn, q + ".dead")
    assert raw_body(dead) == body
    assert dead.headers["id"] == bad_id and dead.headers["task"] == "demo.add"
    assert dead.properties["correlation_id"] == bad_id
    assert dead.properties["delivery_mode"] == 2
    # Acked on the original queue; the worker keeps consuming.
    assert queue_depth(amqp_conn, q) == 0
    assert app.send_task("demo.add", args=[5, 5], queue=q).get(timeout=TIMEOUT) == 10
    assert w.proc.poll() is None


@pytest.fixture
def dlx_collector(amqp_conn):
    """A queue bound to the it.dlx fanout exchange (queues named dlq-* dead-letter there by a
    policy that conftest sets)."""
    ch = amqp_conn.channel()
    ch.exchange_declare("it.dlx", "fanout", durable=True, auto_delete=False)
    name = "dlx-collect-" + uuid.uuid4().hex[:8]
    ch.queue_declare(name, durable=False, auto_delete=False)
    ch.queue_bind(name, "it.dlx", "")
    yield name
    ch.queue_delete(name)
    ch.close()


def test_dead_letter_mode_dlx(app, worker_factory, amqp_conn, dlx_collector):
    q = unique_queue("dlq")
    declare(amqp_conn, q)
    tid = str(uuid.uuid4())
    body = publish_raw(amqp_conn, q, "demo.add", [1, 1], tid, **{"x-delivery-count": 2})
    w = worker_factory(queue=q, extra=["--max-redeliveries", "1", "--dead-letter", "dlx"])
    w.wait_log(r"Task demo\.add\[%s\] dead-lettered: .* moved to the dead-letter exchange of "
               r"queue '%s'" % (tid, q), 10)
    with pytest.raises(WorkerLostError):
        app.AsyncResult(tid).get(timeout=TIMEOUT)
    m = get_one(amqp_conn, dlx_collector)
    assert raw_body(m) == body
    assert m.headers["x-death"][0]["reason"] == "rejected"
    assert queue_depth(amqp_conn, q) == 0


def test_worker_killed_repeatedly_dead_letters_via_redis_counter(app, worker_factory,
                                                                amqp_conn, rds):
    """A task that takes its worker down every time (SIGKILL of the whole worker while it runs,
    acks_late): delivery 1 and redelivery 1 run, redelivery 2 is past --max-redeliveries 1 and
    is dead-lettered instead of taking a third worker down."""
    q = unique_queue("kill")
    tid = str(uuid.uuid4())
    key = "celeryc-deliveries-" + tid
    args = dict(acks_late=True, concurrency=1, extra=["--max-redeliveries", "1"])
    w1 = worker_factory(queue=q, **args)
    r = app.send_task("demo.sleep", args=[60], task_id=tid, queue=q)
    w1.wait_log(r"demo\.sleep\[%s\] received" % tid, 10)
    w1.kill()  # SIGKILL to the worker's process group

    w2 = worker_factory(queue=q, **args)
    w2.wait_log(r"Task demo\.sleep\[%s\] redelivered \(1 of at most 1 redeliveries, counted "
                r"by redis\)" % tid, 15)
    assert rds.get(key) == b"1"
    assert 0 < rds.ttl(key) <= 86400
    w2.kill()

    w3 = worker_factory(queue=q, **args)
    w3.wait_log(r"ERROR.*Task demo\.sleep\[%s\] dead-lettered: redelivered 2 times, more than "
                r"worker_max_redeliveries=1 \(counted by redis\); moved to queue '%s\.dead'"
                % (tid, q), 15)
    with pytest.raises(WorkerLostError):
        r.get(timeout=TIMEOUT)
    assert rds.get(key) is None  # reset, so a message shovelled back starts from zero
    wait_for(lambda: queue_depth(amqp_conn, q + ".dead") == 1, 10, "message in .dead")
    assert queue_depth(amqp_conn, q) == 0
    assert app.send_task("demo.add", args=[2, 3], queue=q).get(timeout=TIMEOUT) == 5
    assert not re.search(r"demo\.sleep\[%s\] succeeded" % tid, w3.log())
    assert w3.proc.poll() is None
    w3.signal(signal.SIGTERM)
    assert w3.wait_exit(20) == 0


# ---- Quorum queues ------------------------------------------------------------------------

@c_only
def test_quorum_queue_consumed_and_poison_counted_by_x_delivery_count(app, worker_factory, rds,
                                                                     amqp_conn):
    """--queue-type quorum: the worker declares and consumes a quorum queue (Celery 5.2.6
    cannot: global QoS, 540 NOT_IMPLEMENTED; celery-wire.md §1.5). A task that kills its pool
    child is requeued by reject_on_worker_lost; the quorum queue counts the redeliveries in
    x-delivery-count, and past --max-redeliveries the message goes to <queue>.dead instead of
    crashing children forever. The worker keeps consuming."""
    q = unique_queue("qq")
    w = worker_factory(queue=q, acks_late=True,
                       extra=["--queue-type", "quorum", "--reject-on-worker-lost",
                              "--max-redeliveries", "2"])
    from kombu import Exchange, Queue
    # What a Celery app declares for a quorum queue (the same arguments, or RabbitMQ refuses).
    qq = Queue(q, Exchange(q, "direct"), routing_key=q,
               queue_arguments={"x-queue-type": "quorum"})
    assert app.send_task("demo.add", args=[2, 3], queue=qq).get(timeout=TIMEOUT) == 5
    poison = app.send_task("demo.crash", args=["segv"], queue=qq)
    w.wait_log(r"dead-lettered.*x-delivery-count", 60, "poison dead-lettered")
    wait_for(lambda: queue_depth(amqp_conn, q + ".dead") == 1, 10, "message in %s.dead" % q)
    assert w.log().count("WorkerLostError") >= 3 or w.log().count("requeued") >= 2
    meta = json.loads(rds.get("celery-task-meta-" + poison.id))
    assert meta["status"] == "FAILURE"
    assert app.send_task("demo.add", args=[1, 1], queue=qq).get(timeout=TIMEOUT) == 2
    ch = amqp_conn.channel()
    try:
        ch.queue_delete(q + ".dead")
        ch.queue_delete(q)
    finally:
        ch.close()


@c_only
def test_quorum_queue_countdown_goes_to_the_delay_store(app, worker_factory, rds):
    """Per-consumer QoS on a quorum queue cannot be raised for a held ETA message, so every
    countdown beyond a second goes to the Redis delay store and comes back when due."""
    from kombu import Exchange, Queue
    q = unique_queue("qqeta")
    qq = Queue(q, Exchange(q, "direct"), routing_key=q,
               queue_arguments={"x-queue-type": "quorum"})
    w = worker_factory(queue=q, extra=["--queue-type", "quorum"])
    r = app.send_task("demo.add", args=[4, 4], queue=qq, countdown=3)
    w.wait_log(r"moved to the delay store", 10)
    assert r.get(timeout=TIMEOUT) == 8
