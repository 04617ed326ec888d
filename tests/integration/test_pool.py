"""--pool threads and --pool solo run the demo tasks and store their results like prefork
(and like the Python worker's threads / solo pools, CELERYC_IT_IMPL=python). Soft time limits
work in both (a flag for threads, a timer signal for solo: celeryc-only, Celery's threads and
solo pools have no time limits); hard limits cannot be enforced there and the worker says so.
"""
import json
import re
import time

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from conftest import HERE, IMPL, PY, TIMEOUT, c_only, scaled, unique_queue, wait_for


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


def start(worker_factory, pool, concurrency=2, extra=()):
    if IMPL == "c":
        return worker_factory(concurrency=concurrency, extra=["--pool", pool] + list(extra))
    q = unique_queue()
    argv = [PY, "-m", "celery", "-A", "pyworker_app", "worker", "--pool", pool,
            "-c", str(concurrency), "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-Q", q, "-n", "py-%s@localhost" % q, "-l", "info"]
    w = worker_factory(queue=q, argv=argv, wait_ready=False,
                       env={"PYTHONPATH": str(HERE)})
    w.wait_ready(60)
    return w


POOLS = ["threads", "solo"]


@pytest.mark.parametrize("pool", POOLS)
def test_pool_runs_demo_tasks(app, worker_factory, rds, pool):
    w = start(worker_factory, pool)
    rs = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(20)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [i + 1 for i in range(20)]
    assert app.send_task("demo.wordcount", args=["a b a"], queue=w.queue).get(
        timeout=TIMEOUT) == {"a": 2, "b": 1}
    assert app.send_task("demo.thumbnail", args=[64, 48, 4], queue=w.queue).get(
        timeout=TIMEOUT)["width"] == 16
    f = app.send_task("demo.fail", args=["boom"], queue=w.queue)
    with pytest.raises(ValueError):
        f.get(timeout=TIMEOUT)
    assert _meta(rds, f.id)["result"] == {"exc_type": "ValueError", "exc_message": ["boom"],
                                          "exc_module": "builtins"}
    # Executed inside the worker process itself.
    assert app.send_task("demo.getpid", queue=w.queue).get(timeout=TIMEOUT) == w.pid
    assert w.proc.poll() is None


def test_threads_run_concurrently(app, worker_factory):
    w = start(worker_factory, "threads", concurrency=4)
    t0 = time.monotonic()
    rs = [app.send_task("demo.sleep", args=[1], queue=w.queue) for _ in range(4)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [1, 1, 1, 1]
    # Four 1 s sleeps on four threads: well under the 4 s they take one after another.
    assert time.monotonic() - t0 < scaled(3.5)
    if IMPL == "c":
        names = set(re.findall(r"INFO/(ThreadPoolExecutor-0_\d+)\] Task demo\.sleep", w.log()))
        assert len(names) >= 2, w.log()[-2000:]


@c_only
@pytest.mark.parametrize("pool", POOLS)
def test_pool_soft_time_limit(app, worker_factory, rds, pool):
    w = start(worker_factory, pool)
    t0 = time.monotonic()
    r = app.send_task("demo.soft_guard", args=[30], queue=w.queue, soft_time_limit=0.5)
    assert r.get(timeout=TIMEOUT) == "soft limit"
    s = app.send_task("demo.sleep", args=[30], queue=w.queue, soft_time_limit=0.5)
    with pytest.raises(SoftTimeLimitExceeded):
        s.get(timeout=TIMEOUT)
    assert time.monotonic() - t0 < scaled(15)
    assert _meta(rds, s.id)["result"] == {"exc_type": "SoftTimeLimitExceeded",
                                          "exc_message": [],
                                          "exc_module": "billiard.exceptions"}
    w.wait_log(r"Soft time limit \(0\.5s\) exceeded for demo\.sleep\[%s\]" % s.id, 5)
    assert app.send_task("demo.add", args=[1, 1], queue=w.queue).get(timeout=TIMEOUT) == 2


@c_only
@pytest.mark.parametrize("pool", POOLS)
def test_pool_warns_hard_limit_not_enforced(app, worker_factory, pool):
    w = start(worker_factory, pool, extra=["--time-limit", "1"])
    w.wait_log(r"The %s pool cannot enforce hard time limits" % pool, 5)
    # The task runs to its end (no process to kill), its result is stored.
    assert app.send_task("demo.spin", args=[1.5], queue=w.queue).get(timeout=TIMEOUT) == 1.5


@c_only
def test_threads_warm_shutdown_finishes_running_tasks(app, worker_factory, rds):
    import signal
    w = start(worker_factory, "threads", concurrency=2, extra=["--track-started"])
    rs = [app.send_task("demo.sleep", args=[1.5], queue=w.queue) for _ in range(2)]
    wait_for(lambda: all((_meta(rds, r.id) or {}).get("status") == "STARTED" for r in rs),
             10, "both tasks started")
    w.signal(signal.SIGTERM)
    assert w.wait_exit(20) == 0
    assert [r.get(timeout=TIMEOUT) for r in rs] == [1.5, 1.5]
