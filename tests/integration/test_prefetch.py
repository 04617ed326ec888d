"""QoS: prefetch = multiplier x concurrency; a multiplier of 1 with acks_late gives fair
dispatch for long tasks (issue #3): a worker busy with a long task holds no other message,
so short tasks queued behind it go to a free worker."""
import json
import time
import uuid

from conftest import queue_depth, wait_for


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


def test_multiplier_one_with_acks_late_is_fair_dispatch(app, worker_factory, rds, amqp_conn):
    a = worker_factory(concurrency=1, acks_late=True, prefetch=1, result_extended=True)
    tag = uuid.uuid4().hex[:8]
    long = app.send_task("it.count_sleep", args=["it-fair-%s-long" % tag, 4], queue=a.queue)
    wait_for(lambda: queue_depth(amqp_conn, a.queue) == 0, 10, "the long task taken by A")
    short = [app.send_task("it.count_sleep", args=["it-fair-%s-%d" % (tag, i), 0],
                           queue=a.queue) for i in range(4)]
    time.sleep(0.5)
    # A's window (1 x 1) is full with the unacked long task: the short ones stay queued.
    assert queue_depth(amqp_conn, a.queue) == 4
    b = worker_factory(queue=a.queue, concurrency=1, acks_late=True, prefetch=1,
                       result_extended=True)
    wait_for(lambda: all((_meta(rds, r.id) or {}).get("status") == "SUCCESS" for r in short),
             15, "short tasks done")
    assert {_meta(rds, r.id)["worker"] for r in short} == {b.name}
    assert (_meta(rds, long.id) or {}).get("status") != "SUCCESS", "long task should still run"
    wait_for(lambda: (_meta(rds, long.id) or {}).get("status") == "SUCCESS", 15, "long done")
    assert _meta(rds, long.id)["worker"] == a.name
