"""Redelivered acks_late messages whose result is already SUCCESS are acked without running
again (Celery's worker_deduplicate_successful_tasks, on by default in celeryc), and a
redelivered copy of a task that is running in the worker waits for it instead of running
concurrently.

Redelivered messages are made the way RabbitMQ makes them: a raw consumer takes the message
without acking it and closes its channel, so the broker requeues it with redelivered=true.

celeryc-only: the Python worker's default for the option is off (and pyworker_app does not
set it)."""
import json
import re
import uuid

import pytest

from conftest import TIMEOUT, c_only, queue_depth, unique_queue, wait_for

pytestmark = c_only

T = "t.integration.tasks."


def declare(conn, q):
    """The worker's own declaration (kombu's Queue(q, Exchange(q, 'direct'), q))."""
    ch = conn.channel()
    ch.exchange_declare(q, "direct", durable=True, auto_delete=False)
    ch.queue_declare(q, durable=True, auto_delete=False)
    ch.queue_bind(q, q, q)
    ch.close()


def make_redelivered(conn, q, n):
    """Take n messages without acking, then close the channel: they come back redelivered."""
    ch = conn.channel()
    got = []

    def take():
        m = ch.basic_get(q, no_ack=False)
        if m is not None:
            got.append(m)
        return len(got) >= n
    wait_for(take, 10, "%d messages in %s" % (n, q))
    ch.close()
    return got


def store_success(rds, tid, result=None):
    rds.set("celery-task-meta-" + tid, json.dumps({
        "status": "SUCCESS", "result": result, "traceback": None, "children": [],
        "date_done": "2026-01-01T00:00:00.000000", "task_id": tid}))


@pytest.mark.parametrize("acks_late,extra,deduplicated", [
    (True, [], True),
    (True, ["--no-deduplicate-successful-tasks"], False),
    (False, [], False),  # Celery deduplicates only with acks_late
])
def test_redelivered_success_is_not_rerun(app, worker_factory, amqp_conn, rds, rds7,
                                          acks_late, extra, deduplicated):
    q = unique_queue("dedup")
    declare(amqp_conn, q)
    done_id, new_id = str(uuid.uuid4()), str(uuid.uuid4())
    done_key, new_key = "dedup-" + done_id, "dedup-" + new_id
    store_success(rds, done_id)  # an earlier delivery completed and stored its result
    app.send_task(T + "redis_count", args=[done_key], task_id=done_id, queue=q)
    app.send_task(T + "redis_count", args=[new_key], task_id=new_id, queue=q)
    make_redelivered(amqp_conn, q, 2)

    w = worker_factory(queue=q, acks_late=acks_late, extra=extra)
    # The redelivered message without a stored result runs (at-least-once).
    assert app.AsyncResult(new_id).get(timeout=TIMEOUT) is None
    assert rds7.get(new_key) == b"1"
    wait_for(lambda: queue_depth(amqp_conn, q) == 0, 10, "queue drained")
    line = r"Task %s\[%s\] Task already completed successfully\." % (
        re.escape(T + "redis_count"), done_id)
    if deduplicated:
        w.wait_log(line, 10)
        assert rds7.get(done_key) is None  # never ran
    else:
        wait_for(lambda: rds7.get(done_key) == b"1", 10, "the done task ran again")
        assert not re.search(line, w.log())
    # Acked either way: nothing comes back after a restart.
    w.stop()
    assert queue_depth(amqp_conn, q) == 0


def test_redelivered_twin_waits_for_running_task(app, worker_factory, amqp_conn):
    """-c 2, prefetch 1: the worker holds two unacked acks_late tasks, so a third message goes
    to our raw consumer, which returns it redelivered while the first still runs. The worker
    must park that twin until its original finished, then find SUCCESS and ack it."""
    q = unique_queue("twin")
    w = worker_factory(queue=q, acks_late=True, concurrency=2, prefetch=1)
    tid = str(uuid.uuid4())
    first = app.send_task("demo.sleep", args=[4], task_id=tid, queue=q)
    w.wait_log(r"demo\.sleep\[%s\] received" % tid, 10)
    filler = app.send_task("demo.sleep", args=[1.5], queue=q)
    w.wait_log(r"demo\.sleep\[%s\] received" % filler.id, 10)
    app.send_task("demo.sleep", args=[4], task_id=tid, queue=q)
    make_redelivered(amqp_conn, q, 1)

    w.wait_log(r"Task demo\.sleep\[%s\] is already running in this worker; holding" % tid, 15)
    assert filler.get(timeout=TIMEOUT) == 1.5
    assert first.get(timeout=TIMEOUT) == 4
    w.wait_log(r"Task demo\.sleep\[%s\] Task already completed successfully\." % tid, 10)
    assert len(re.findall(r"demo\.sleep\[%s\] succeeded" % tid, w.log())) == 1
    wait_for(lambda: queue_depth(amqp_conn, q) == 0, 10, "queue drained")


@pytest.mark.parametrize("acks_late", [True, False])
def test_success_redelivered_past_limit_is_acked_not_dead_lettered(app, worker_factory, amqp_conn,
                                                                   rds, rds7, acks_late):
    """A message whose result is already SUCCESS and that comes back past
    --max-redeliveries (it was executing each time its worker died: the hand-off mark and a
    count at the limit are what a third crash leaves in the bookkeeping Redis, and a quorum
    queue would say x-delivery-count 5) is acked as done: never dead-lettered, never run,
    and its SUCCESS is not overwritten with WorkerLostError."""
    q = unique_queue("dedupdl")
    declare(amqp_conn, q)
    tid = str(uuid.uuid4())
    key = "dedupdl-" + tid
    store_success(rds, tid, result=42)
    rds.set("celeryc-handed-" + tid, "0", ex=600)
    rds.set("celeryc-deliveries-" + tid, "2", ex=600)
    ch = amqp_conn.channel()
    import amqp
    h = {"lang": "py", "task": T + "redis_count", "id": tid, "shadow": None, "eta": None,
         "expires": None, "group": None, "group_index": None, "retries": 0,
         "timelimit": [None, None], "root_id": tid, "parent_id": None, "argsrepr": "()",
         "kwargsrepr": "{}", "origin": "it@localhost", "ignore_result": False,
         "x-delivery-count": 5}
    ch.basic_publish(amqp.Message(json.dumps([[key], {}, {"callbacks": None, "errbacks": None,
                                                         "chain": None, "chord": None}]),
                                  content_type="application/json", content_encoding="utf-8",
                                  correlation_id=tid, delivery_mode=2, application_headers=h),
                     exchange=q, routing_key=q)
    ch.close()
    make_redelivered(amqp_conn, q, 1)

    w = worker_factory(queue=q, acks_late=acks_late, extra=["--max-redeliveries", "2"])
    w.wait_log(r"Task %s\[%s\] Task already completed successfully\." % (
        re.escape(T + "redis_count"), tid), 10)
    wait_for(lambda: queue_depth(amqp_conn, q) == 0, 10, "acked")
    meta = json.loads(rds.get("celery-task-meta-" + tid))
    assert meta["status"] == "SUCCESS" and meta["result"] == 42
    assert app.AsyncResult(tid).get(timeout=TIMEOUT) == 42
    assert "dead-lettered" not in w.log()
    assert queue_depth(amqp_conn, q + ".dead") == 0
    assert rds7.get(key) is None  # never ran
    w.stop()
    assert queue_depth(amqp_conn, q) == 0
