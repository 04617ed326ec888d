"""Worker lifecycle: topology conflicts, result_extended / track_started, warm shutdown with
tasks in flight, acks_late redelivery after kill -9."""
import json
import signal
import time

from conftest import TIMEOUT, c_only, queue_depth, scaled, unique_queue, wait_for


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


@c_only
def test_queue_declared_with_other_arguments_exits_nonzero(worker_factory, amqp_conn):
    q = unique_queue("maxlen")
    ch = amqp_conn.channel()
    ch.queue_declare(q, durable=True, auto_delete=False, arguments={"x-max-length": 10})
    try:
        t0 = time.monotonic()
        w = worker_factory(queue=q, wait_ready=False)
        rc = w.wait_exit(15)
        assert rc is not None, "worker still running 15 s after an inequivalent queue"
        assert rc != 0
        assert time.monotonic() - t0 < scaled(15)
        assert q in w.log()
        assert "PRECONDITION_FAILED" in w.log() or "inequivalent" in w.log()
    finally:
        ch.queue_delete(q)
        ch.close()


def test_result_extended_fields(app, worker_factory, rds):
    w = worker_factory(result_extended=True)
    r = app.send_task("demo.add", args=[2, 3], kwargs={}, queue=w.queue)
    assert r.get(timeout=TIMEOUT) == 5
    meta = _meta(rds, r.id)
    assert meta["name"] == "demo.add"
    assert meta["args"] == [2, 3]
    assert meta["kwargs"] == {}
    assert meta["worker"] == w.name
    assert meta["retries"] == 0
    assert meta["queue"] == w.queue
    assert list(meta)[:5] == ["status", "result", "traceback", "children", "date_done"]
    assert list(meta)[-1] == "task_id"


def test_no_extended_fields_by_default(app, worker, rds):
    r = app.send_task("demo.add", args=[2, 3], queue=worker.queue)
    assert r.get(timeout=TIMEOUT) == 5
    assert "worker" not in _meta(rds, r.id)


def test_track_started_published_before_success(app, worker_factory, rds):
    w = worker_factory(track_started=True)
    import uuid
    tid = str(uuid.uuid4())
    ps = rds.pubsub()
    ps.subscribe("celery-task-meta-" + tid)
    wait_for(lambda: ps.get_message(timeout=0.1), 5, "subscribe confirmation")
    r = app.send_task("demo.sleep", args=[0.3], queue=w.queue, task_id=tid)
    states = []

    def collect():
        m = ps.get_message(timeout=0.1)
        if m and m["type"] == "message":
            states.append(json.loads(m["data"]))
        return states and states[-1]["status"] == "SUCCESS"
    wait_for(collect, TIMEOUT, "SUCCESS published")
    assert [s["status"] for s in states] == ["STARTED", "SUCCESS"]
    started = states[0]
    assert started["result"]["hostname"] == w.name
    assert isinstance(started["result"]["pid"], int)
    assert started["date_done"] is None
    assert r.get(timeout=TIMEOUT) == 0.3
    ps.close()


def test_warm_shutdown_finishes_tasks_in_flight(app, worker_factory, rds, amqp_conn):
    w = worker_factory(concurrency=2, track_started=True)
    rs = [app.send_task("demo.sleep", args=[2], queue=w.queue) for _ in range(2)]
    wait_for(lambda: all((_meta(rds, r.id) or {}).get("status") == "STARTED" for r in rs),
             10, "both tasks started")
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    rc = w.wait_exit(20)
    assert rc == 0, "warm shutdown exit code %r" % rc
    assert time.monotonic() - t0 >= 0.5, "exited before the running tasks could finish"
    assert [_meta(rds, r.id)["status"] for r in rs] == ["SUCCESS", "SUCCESS"]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [2, 2]
    assert queue_depth(amqp_conn, w.queue) == 0


def test_warm_shutdown_returns_prefetched_messages(app, worker_factory, rds, amqp_conn):
    w = worker_factory(concurrency=1, track_started=True)
    first = app.send_task("demo.sleep", args=[1], queue=w.queue)
    rest = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(3)]
    wait_for(lambda: (_meta(rds, first.id) or {}).get("status") == "STARTED", 10, "started")
    w.signal(signal.SIGTERM)
    assert w.wait_exit(20) == 0
    assert first.get(timeout=TIMEOUT) == 1
    # Prefetched, never started: back in the queue (unless the worker ran them before
    # noticing the signal, which is allowed); nothing lost.
    done = sum(1 for r in rest if _meta(rds, r.id))
    assert done + queue_depth(amqp_conn, w.queue) == 3
    worker_factory(queue=w.queue)
    assert [r.get(timeout=TIMEOUT) for r in rest] == [1, 2, 3]


def test_acks_late_redelivered_after_kill9(app, worker_factory, rds):
    w = worker_factory(concurrency=1, acks_late=True, track_started=True)
    r = app.send_task("demo.sleep", args=[1.5], queue=w.queue)
    wait_for(lambda: (_meta(rds, r.id) or {}).get("status") == "STARTED", 10, "started")
    w.kill()  # SIGKILL to the worker's whole process group (master and children)
    assert w.proc.poll() is not None
    worker_factory(queue=w.queue, acks_late=True)
    assert r.get(timeout=TIMEOUT) == 1.5
    assert _meta(rds, r.id)["status"] == "SUCCESS"
