"""Poison-message protection Celery lacks: redeliveries of a message that was executing are
counted and past --max-redeliveries the message is dead-lettered (to <queue>.dead, or to the
queue's DLX), FAILURE (WorkerLostError) is stored so AsyncResult.get() raises, and the
worker carries on.

What counts (redeliver.h): a redelivery of a message that was handed to an executor and not
settled (its hand-off mark, in the bookkeeping Redis as celeryc-handed-<task id> and in the
worker's memory), counted in celeryc-deliveries-<task id>: the worker killed in the middle of
an acks_late task, or the worker's own requeue after a failed store. A message only
prefetched when its worker died is not counted. Without a reachable bookkeeping Redis a
quorum queue's x-delivery-count decides alone (simulated here by publishing the header on a
classic queue).

celeryc-only (Celery has no such limit)."""
import json
import os
import re
import signal
import subprocess
import time
import uuid

import amqp
import pytest
from billiard.exceptions import WorkerLostError

from conftest import TIMEOUT, c_only, free_port, queue_depth, scaled, unique_queue, wait_for

pytestmark = c_only

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@pytest.fixture
def dead_redis_url():
    """A Redis URL nothing listens on: the worker's bookkeeping Redis is unreachable."""
    return "redis://127.0.0.1:%d/0" % free_port()


@pytest.fixture
def oom_redis_url(tmp_path):
    """A private Redis that refuses every write (maxmemory 1 byte, noeviction): each result
    store fails at once with an OOM error reply, as a full or read-only Redis would."""
    port = free_port()
    p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                          "--save", "", "--appendonly", "no", "--maxmemory", "1",
                          "--maxmemory-policy", "noeviction", "--dir", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    import redis
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        wait_for(lambda: _ping(r), 10, "the OOM redis")
        yield "redis://127.0.0.1:%d/0" % port
    finally:
        r.close()
        p.terminate()
        try:
            p.wait(scaled(10))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _ping(r):
    try:
        return r.ping()
    except Exception:  # noqa: BLE001 (not up yet)
        return False


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
    props = dict(content_type="application/json", content_encoding="utf-8",
                 delivery_mode=2, application_headers=h)
    if len(tid.encode()) <= 255:  # an AMQP short string
        props["correlation_id"] = tid
    ch.basic_publish(amqp.Message(body, **props), exchange=q, routing_key=q)
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


def test_delivery_count_header_dead_letters_to_queue(app, worker_factory, amqp_conn, rds,
                                                    dead_redis_url):
    """Without a reachable bookkeeping Redis (--redis-url down) the worker cannot know whether
    a redelivered message was executing when its worker died, so a quorum queue's
    x-delivery-count decides alone (every return counts there, prefetched ones too)."""
    q = unique_queue("poison")
    declare(amqp_conn, q)
    ok_id, bad_id = str(uuid.uuid4()), str(uuid.uuid4())
    publish_raw(amqp_conn, q, "demo.add", [1, 2], ok_id, **{"x-delivery-count": 3})
    body = publish_raw(amqp_conn, q, "demo.add", [2, 2], bad_id, **{"x-delivery-count": 4})
    w = worker_factory(queue=q, extra=["--max-redeliveries", "3", "--redis-url", dead_redis_url])

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


def test_dead_letter_mode_dlx(app, worker_factory, amqp_conn, dlx_collector, dead_redis_url):
    q = unique_queue("dlq")
    declare(amqp_conn, q)
    tid = str(uuid.uuid4())
    body = publish_raw(amqp_conn, q, "demo.add", [1, 1], tid, **{"x-delivery-count": 2})
    w = worker_factory(queue=q, extra=["--max-redeliveries", "1", "--dead-letter", "dlx",
                                       "--redis-url", dead_redis_url])
    w.wait_log(r"Task demo\.add\[%s\] dead-lettered: .* moved to the dead-letter exchange of "
               r"queue '%s'" % (tid, q), 10)
    with pytest.raises(WorkerLostError):
        app.AsyncResult(tid).get(timeout=TIMEOUT)
    m = get_one(amqp_conn, dlx_collector)
    assert raw_body(m) == body
    assert m.headers["x-death"][0]["reason"] == "rejected"
    assert queue_depth(amqp_conn, q) == 0


def test_worker_killed_repeatedly_dead_letters_via_redis_counter(app, worker_factory,
                                                                amqp_conn, rds, rds7):
    """A task that takes its worker down every time (SIGKILL of the whole worker while it runs,
    acks_late): delivery 1 and redelivery 1 run, redelivery 2 is past --max-redeliveries 1 and
    is dead-lettered instead of taking a third worker down."""
    q = unique_queue("kill")
    tid = str(uuid.uuid4())
    key = "celeryc-deliveries-" + tid
    runs = "kill-runs-" + tid
    args = dict(acks_late=True, concurrency=1, extra=["--max-redeliveries", "1"])
    w1 = worker_factory(queue=q, **args)
    r = app.send_task("it.count_sleep", args=[runs, 60], task_id=tid, queue=q)
    wait_for(lambda: rds7.get(runs) == b"1", 10, "the task running")
    # Its hand-off mark is written within 10 ms of the hand-off (pipelined, redeliver.h).
    wait_for(lambda: rds.exists("celeryc-handed-" + tid), 5, "the hand-off mark")
    w1.kill()  # SIGKILL to the worker's process group

    w2 = worker_factory(queue=q, **args)
    w2.wait_log(r"Task it\.count_sleep\[%s\] redelivered \(1 of at most 1 redeliveries, "
                r"counted by redis\)" % tid, 15)
    assert rds.get(key) == b"1"
    assert 0 < rds.ttl(key) <= 86400
    wait_for(lambda: rds7.get(runs) == b"2", 10, "the task running again")
    wait_for(lambda: rds.exists("celeryc-handed-" + tid), 5, "the hand-off mark")
    w2.kill()

    w3 = worker_factory(queue=q, **args)
    w3.wait_log(r"ERROR.*Task it\.count_sleep\[%s\] dead-lettered: redelivered 2 times, more "
                r"than worker_max_redeliveries=1 \(counted by redis\); moved to queue "
                r"'%s\.dead'" % (tid, q), 15)
    with pytest.raises(WorkerLostError):
        r.get(timeout=TIMEOUT)
    # reset, so a message shovelled back starts from zero
    wait_for(lambda: rds.get(key) is None, 10, "the counter deleted")
    wait_for(lambda: queue_depth(amqp_conn, q + ".dead") == 1, 10, "message in .dead")
    assert queue_depth(amqp_conn, q) == 0
    assert app.send_task("demo.add", args=[2, 3], queue=q).get(timeout=TIMEOUT) == 5
    assert rds7.get(runs) == b"2"
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
    w.wait_log(r"dead-lettered.*counted by redis", 60, "poison dead-lettered")
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


# ---- Issue #14: requeues after a failed store count; prefetched messages do not ------------

@pytest.mark.parametrize("counter,queue_type", [
    ("redis", "classic"), ("local", "classic"), ("redis", "quorum"), ("local", "quorum")])
def test_store_failure_requeues_count_towards_max_redeliveries(counter, queue_type, app,
                                                               worker_factory, amqp_conn, rds7,
                                                               oom_redis_url, dead_redis_url):
    """An acks_late task whose result cannot be stored is requeued to run again; each requeue
    must count towards --max-redeliveries whatever counts them: the Redis counter (a working
    --redis-url) or the in-memory table (no bookkeeping Redis reachable), on a classic queue
    or a quorum queue (whose x-delivery-count rises with each requeue too: the worker's own
    count, which knows the message was executing, is the one compared). A long task id (past
    the old 256-byte key buffers) used to keep the count at "1 of at most N" forever."""
    q = unique_queue("storefail")
    tid = "t" * 300
    runs = "storefail-" + uuid.uuid4().hex
    redis_url = {"redis": os.environ["CELERYC_TEST_REDIS_URL"]}.get(counter, dead_redis_url)
    extra = ["--max-redeliveries", "2", "--result-backend", oom_redis_url,
             "--redis-url", redis_url]
    if queue_type == "quorum":
        extra += ["--queue-type", "quorum"]
    w = worker_factory(queue=q, acks_late=True, concurrency=1, extra=extra)
    publish_raw(amqp_conn, q, "it.count_sleep", [runs, 0], tid)
    w.wait_log(r"ERROR.*Task it\.count_sleep\[t{50}.*\] dead-lettered: redelivered 3 times, "
               r"more than worker_max_redeliveries=2 \(counted by %s\)" % re.escape(counter),
               scaled(30))
    wait_for(lambda: queue_depth(amqp_conn, q + ".dead") == 1, 10, "message in .dead")
    assert queue_depth(amqp_conn, q) == 0
    assert rds7.get(runs) == b"3"  # the first run and two redeliveries, then no more
    time.sleep(1)
    assert rds7.get(runs) == b"3"
    assert w.proc.poll() is None
    ch = amqp_conn.channel()
    try:
        ch.queue_delete(q + ".dead")
        ch.queue_delete(q)
    finally:
        ch.close()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_prefetched_messages_not_counted_when_worker_killed(queue_type, app, worker_factory,
                                                            amqp_conn, rds, rds7):
    """The worker is SIGKILLed again and again while one poison task runs and N ordinary
    messages wait in its prefetch window. Only the poison one was executing: it is
    dead-lettered past the limit; the prefetched ones were never handed to an executor, are
    not counted, all run once afterwards, and none reaches the dead-letter queue."""
    q = unique_queue("prefetch")
    n = 3
    extra = ["--max-redeliveries", "2"]
    if queue_type == "quorum":
        extra += ["--queue-type", "quorum"]
    args = dict(queue=q, acks_late=True, concurrency=1, prefetch=n + 1, extra=extra)
    tag = uuid.uuid4().hex
    poison_runs = "poison-" + tag
    w = worker_factory(**args)
    from kombu import Exchange, Queue
    qq = Queue(q, Exchange(q, "direct"), routing_key=q,
               queue_arguments={"x-queue-type": "quorum"} if queue_type == "quorum" else None)
    poison = app.send_task("it.count_sleep", args=[poison_runs, 120], queue=qq)
    mark = "celeryc-handed-" + poison.id
    wait_for(lambda: rds7.get(poison_runs) == b"1", 10, "the poison task running")
    wait_for(lambda: rds.exists(mark), 5, "the poison's hand-off mark")
    others = [app.send_task("it.count_sleep", args=["neighbour-%s-%d" % (tag, i), 0], queue=qq)
              for i in range(n)]
    for r in others:
        w.wait_log(r"it\.count_sleep\[%s\] received" % r.id, 10)
    for kill in range(2, 4):  # the poison runs 3 times: the first delivery, 2 redeliveries
        w.kill()
        w = worker_factory(**args)
        wait_for(lambda: rds7.get(poison_runs) == str(kill).encode(), 15, "poison run %d" % kill)
        wait_for(lambda: rds.exists(mark), 5, "the poison's hand-off mark")
        for r in others:
            w.wait_log(r"it\.count_sleep\[%s\] received" % r.id, 10)
    w.kill()
    w = worker_factory(**args)
    w.wait_log(r"Task it\.count_sleep\[%s\] dead-lettered" % poison.id, 15)
    assert [r.get(timeout=TIMEOUT) for r in others] == [1] * n
    wait_for(lambda: queue_depth(amqp_conn, q + ".dead") == 1, 10, "the poison in .dead")
    dead = get_one(amqp_conn, q + ".dead")
    assert dead.headers["id"] == poison.id
    assert queue_depth(amqp_conn, q) == 0
    assert rds7.get(poison_runs) == b"3"
    for r in others:
        assert "dead-lettered" not in "".join(
            ln for ln in w.log().splitlines() if r.id in ln)
    if queue_type == "quorum":
        ch = amqp_conn.channel()
        try:
            ch.queue_delete(q + ".dead")
            ch.queue_delete(q)
        finally:
            ch.close()
