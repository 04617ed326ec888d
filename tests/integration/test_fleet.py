"""Mixed fleet: celeryc workers and a Python Celery worker share one queue."""
import json
from collections import Counter

from conftest import TIMEOUT, queue_depth, unique_queue


def test_mixed_fleet_200_adds(app, worker_factory, rds, amqp_conn):
    q = unique_queue("fleet")
    c1 = worker_factory(queue=q, concurrency=2, result_extended=True)
    c2 = worker_factory(queue=q, concurrency=2, result_extended=True)
    py = worker_factory(queue=q, concurrency=1, result_extended=True, impl="python")
    rs = [app.send_task("demo.add", args=[i, i], queue=q) for i in range(200)]
    assert [r.get(timeout=TIMEOUT * 2) for r in rs] == [2 * i for i in range(200)]
    by = Counter(json.loads(rds.get("celery-task-meta-" + r.id))["worker"] for r in rs)
    assert sum(by.values()) == 200
    assert set(by) <= {c1.name, c2.name, py.name}, by
    assert by[c1.name] > 0 and by[c2.name] > 0, by
    assert queue_depth(amqp_conn, q) == 0
    for w in (c1, c2, py):
        assert w.proc.poll() is None
