"""Canvas in the executor (issue #5, canvas-exec): what a worker does after running a task
that carries callbacks, a chain, errbacks, or that applies canvas or reports progress itself.

Python Celery clients against C workers (CELERYC_IT_IMPL=python runs the same tests, except
the celeryc-only ones, against the Python worker of pyworker_app.py). Every worker consumes
its own queue and has it as its default queue, so the conformance tasks that apply canvas
without naming a queue (chain_add) stay on it.

Errback executions are counted in db 7 (TEST_REDIS_URL): errback_old_style /
errback_new_style INCR the failed task's id.
"""
import json
import time

from conftest import IMPL, MULT, TIMEOUT, c_only, wait_for

T = "t.integration.tasks."


def _worker(worker_factory, **kw):
    from conftest import unique_queue
    q = unique_queue("cx")
    if IMPL == "c":
        kw["extra"] = list(kw.get("extra", ())) + ["--default-queue", q]
    else:
        kw["env"] = dict(kw.get("env") or {}, PYW_DEFAULT_QUEUE=q)
    return worker_factory(queue=q, **kw)


def _sig(app, q, name, *args, **opts):
    return app.signature(name, args=args, queue=q, **opts)


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


def _stored(rds, tid, timeout=20):
    """The stored result of `tid` once it is SUCCESS (read from Redis: AsyncResult.get() on
    a chord header member subscribes after the fact and can miss it)."""
    wait_for(lambda: (_meta(rds, tid) or {}).get("status") == "SUCCESS", timeout,
             "task %s stored" % tid)
    return _meta(rds, tid)["result"]


def test_link_callback_from_c_task_result(app, worker_factory, rds):
    w = _worker(worker_factory)
    cb = _sig(app, w.queue, "demo.mul", 4)
    cb_id = cb.freeze().id
    r = _sig(app, w.queue, "demo.add", 2, 2).apply_async(link=cb)
    assert r.get(timeout=TIMEOUT) == 4
    assert app.AsyncResult(cb_id).get(timeout=TIMEOUT) == 16
    # Celery applies callbacks before storing the result: children lists the callback.
    assert [c.id for c in r.children] == [cb_id]
    m = _meta(rds, cb_id)
    assert m["parent_id"] == r.id
    assert _meta(rds, r.id)["children"] == [[[cb_id, None], None]]


def test_immutable_callback_gets_no_result(app, worker_factory):
    w = _worker(worker_factory)
    cb = app.signature("demo.add", args=(10, 20), queue=w.queue, immutable=True)
    cb_id = cb.freeze().id
    r = _sig(app, w.queue, "demo.add", 1, 1).apply_async(link=cb)
    assert r.get(timeout=TIMEOUT) == 2
    assert app.AsyncResult(cb_id).get(timeout=TIMEOUT) == 30


def test_chain_of_three(app, worker_factory, rds):
    from celery import chain
    w = _worker(worker_factory)
    q = w.queue
    res = chain(_sig(app, q, "demo.add", 2, 2), _sig(app, q, "demo.mul", 4),
                _sig(app, q, "demo.add", 1)).apply_async()
    assert res.get(timeout=TIMEOUT) == 17
    p1 = res.parent
    p0 = p1.parent
    assert p1.get(timeout=TIMEOUT) == 16 and p0.get(timeout=TIMEOUT) == 4
    m0, m1, m2 = _meta(rds, p0.id), _meta(rds, p1.id), _meta(rds, res.id)
    assert m0["children"] == [[[p1.id, None], None]]
    assert m1["children"] == [[[res.id, None], None]]
    assert m2["children"] == []
    assert m1["parent_id"] == p0.id and m2["parent_id"] == p1.id
    assert [c.id for c in app.AsyncResult(p0.id).children] == [p1.id]


def test_errback_old_style_published_with_task_id(app, worker_factory, rds, rds7):
    w = _worker(worker_factory)
    eb = _sig(app, w.queue, T + "errback_old_style")
    eb_id = eb.freeze().id
    r = _sig(app, w.queue, "demo.fail", "boom").apply_async(link_error=eb)
    wait_for(lambda: rds7.get(r.id) == b"1", 20, "old-style errback ran once")
    assert r.state == "FAILURE"
    # Published as a task: it has a result of its own, parented by the failed task.
    assert app.AsyncResult(eb_id).get(timeout=TIMEOUT) == r.id
    assert _meta(rds, eb_id)["parent_id"] == r.id


def test_errback_new_style_called_in_process(app, worker_factory, rds, amqp_conn, rds7):
    from conftest import queue_depth
    w = _worker(worker_factory)
    eb = _sig(app, w.queue, T + "errback_new_style")
    eb_id = eb.freeze().id
    r = _sig(app, w.queue, "demo.fail", "boom").apply_async(link_error=eb)
    wait_for(lambda: rds7.get(r.id) == b"1", 20, "new-style errback ran once")
    assert r.state == "FAILURE"
    time.sleep(0.5)
    # Called as a function by the failing task's worker: never published, nothing stored.
    assert _meta(rds, eb_id) is None
    assert queue_depth(amqp_conn, w.queue) == 0
    assert rds7.get(r.id) == b"1"


def test_no_callbacks_on_failure_no_errbacks_on_success(app, worker_factory, rds7):
    w = _worker(worker_factory)
    cb = _sig(app, w.queue, T + "errback_old_style")
    eb = _sig(app, w.queue, T + "errback_old_style")
    ok = _sig(app, w.queue, "demo.add", 1, 2).apply_async(link_error=eb)
    bad = _sig(app, w.queue, "demo.fail", "x").apply_async(link=cb)
    assert ok.get(timeout=TIMEOUT) == 3
    wait_for(lambda: bad.state == "FAILURE", 20, "the failing task stored")
    time.sleep(1.0)
    assert rds7.get(ok.id) is None and rds7.get(bad.id) is None


def test_update_state_progress_read_by_python(app, worker_factory):
    w = _worker(worker_factory)
    r = _sig(app, w.queue, "demo.progress", 8, 0.25).apply_async()
    seen = []

    def progressing():
        if r.state == "PROGRESS":
            seen.append(dict(r.info))
        return len(seen) >= 2
    wait_for(progressing, 20, "PROGRESS states", interval=0.05)
    assert all(set(i) == {"current", "total"} and i["total"] == 8 for i in seen)
    assert seen[-1]["current"] >= seen[0]["current"]
    assert r.get(timeout=TIMEOUT) == {"current": 8, "total": 8}
    assert r.state == "SUCCESS"


def test_task_sends_chain_itself(app, worker_factory):
    w = _worker(worker_factory)
    r = app.signature(T + "chain_add", args=(3, 4), queue=w.queue).apply_async()
    assert r.get(timeout=TIMEOUT) is None
    # apply_async inside a task: the result is recorded in the task's children.
    wait_for(lambda: r.children, 10, "children stored")
    first = r.children[0]
    assert first.get(timeout=TIMEOUT) == 6
    wait_for(lambda: first.children, 10, "chain step recorded")
    assert first.children[0].get(timeout=TIMEOUT) == 10
    m = app.backend.get_task_meta(first.id)
    assert m.get("parent_id", r.id) == r.id


@c_only
def test_acks_late_broker_outage_during_chain_step_loses_nothing(app, worker_factory, rds):
    """The chain's next step cannot be published (RabbitMQ is down when the task ends): the
    executor gives up after a bounded time, stores nothing, and the master requeues the
    acks_late message, which runs again once the broker is back and publishes the step.
    celeryc-only: Python Celery's trace turns the publish error into the task's failure
    (celery/app/trace.py), and the message is then acked."""
    from celery import chain
    from test_connection import _ctl, _wait_amqp_port
    w = _worker(worker_factory, acks_late=True, track_started=True, concurrency=1)
    q = w.queue
    step2 = _sig(app, q, "demo.mul", 2)
    res = chain(_sig(app, q, "demo.sleep", 5), step2).apply_async()
    first = res.parent
    wait_for(lambda: (_meta(rds, first.id) or {}).get("status") == "STARTED", 20,
             "first step started")
    _ctl("stop_app")
    try:
        w.wait_log(r"publish failed", 30)
    finally:
        _ctl("start_app")
    _wait_amqp_port(60)
    assert res.get(timeout=90 * MULT) == 10
    assert first.get(timeout=TIMEOUT) == 5
    assert w.proc.poll() is None


@c_only
def test_other_pools_publish_and_call_errbacks(app, worker_factory, rds7):
    """--pool threads (an outbox per thread) and --pool solo (the master's own)."""
    from celery import chain
    for pool in ("threads", "solo"):
        w = _worker(worker_factory, extra=["--pool", pool])
        q = w.queue
        res = chain(_sig(app, q, "demo.add", 1, 2), _sig(app, q, "demo.mul", 3)).apply_async()
        assert res.get(timeout=TIMEOUT) == 9, pool
        r = app.signature(T + "chain_add", args=(1, 1), queue=q).apply_async()
        assert r.get(timeout=TIMEOUT) is None
        wait_for(lambda: r.children, 10, "children stored")
        wait_for(lambda: r.children[0].children, 10, "chain step recorded")
        assert r.children[0].children[0].get(timeout=TIMEOUT) == 3, pool
        bad = _sig(app, q, "demo.fail", "x").apply_async(
            link_error=[_sig(app, q, T + "errback_new_style"),
                        _sig(app, q, T + "errback_old_style")])
        wait_for(lambda: rds7.get(bad.id) == b"2", 20, "both errbacks ran (%s)" % pool)
        w.stop()


def test_task_sends_chord_itself(app, worker_factory, rds):
    """chord_add(x, y): chord(add.s(x, x), add.s(y)) applied inside the task (its body, which
    gets [2x] prepended, fails with TypeError in Python too)."""
    w = _worker(worker_factory)
    r = app.signature(T + "chord_add", args=(3, 4), queue=w.queue).apply_async()
    assert r.get(timeout=TIMEOUT) is None
    wait_for(lambda: (_meta(rds, r.id) or {}).get("children"), 10, "children stored")
    kids = _meta(rds, r.id)["children"]
    # The header group is what the task applied (add_trail of the GroupResult).
    assert len(kids) == 1 and kids[0][1] is not None and len(kids[0][1]) == 1, kids
    assert _stored(rds, kids[0][1][0][0][0]) == 6


def test_build_chain_inside_task_returns_result_tuple(app, worker_factory, rds):
    w = _worker(worker_factory)
    r = app.signature(T + "build_chain_inside_task", queue=w.queue).apply_async()
    tup = r.get(timeout=TIMEOUT)
    # ((id5, ((gid, ((id2, ((id1, None), None)), None)), [member tuples])), None)
    (id5, (gparent, members)), none = tup
    assert none is None
    gid, p2 = gparent
    (id2, (p1, _)), _ = p2
    id1, _ = p1
    assert _stored(rds, id1) == 2
    assert _stored(rds, id2) == 4
    assert [_stored(rds, m[0][0]) for m in members] == [7, 8]
    assert gid and id5


@c_only
def test_early_ack_publish_failure_fails_the_task(app, worker_factory, rds):
    """Without acks_late the message is gone once the task started: a callback that cannot
    be published makes the task fail with the publish error (Celery's trace does the same
    with the exception apply_async raises), instead of a SUCCESS whose callback never runs."""
    from test_connection import _ctl, _wait_amqp_port
    w = _worker(worker_factory, track_started=True, concurrency=1)
    q = w.queue
    r = _sig(app, q, "demo.sleep", 5).apply_async(link=_sig(app, q, "demo.mul", 2))
    wait_for(lambda: (_meta(rds, r.id) or {}).get("status") == "STARTED", 20,
             "task started")
    _ctl("stop_app")
    try:
        wait_for(lambda: (_meta(rds, r.id) or {}).get("status") == "FAILURE", 40,
                 "FAILURE stored")
    finally:
        _ctl("start_app")
    _wait_amqp_port(60)
    m = _meta(rds, r.id)
    assert m["result"]["exc_type"] == "OperationalError"
    assert m["result"]["exc_module"] == "kombu.exceptions"
    assert "publish demo.mul[" in m["result"]["exc_message"][0]
    w.wait_log(r"continuation of this task is lost", 10)


def test_errbacks_on_worker_lost_and_time_limit(app, worker_factory, rds7):
    """Failures the master stores (WorkerLostError, TimeLimitExceeded) call the errbacks too,
    as Celery's Request.on_failure / on_timeout -> mark_as_failure do: new-style in the
    master, old-style published."""
    w = _worker(worker_factory, concurrency=1)
    q = w.queue

    def ebs():
        return [_sig(app, q, T + "errback_new_style"), _sig(app, q, T + "errback_old_style")]
    lost = _sig(app, q, "demo.crash", "segv").apply_async(link_error=ebs())
    wait_for(lambda: rds7.get(lost.id) == b"2", 30, "both errbacks after WorkerLostError")
    assert lost.state == "FAILURE"
    slow = _sig(app, q, "demo.spin", 30, time_limit=1).apply_async(link_error=ebs())
    wait_for(lambda: rds7.get(slow.id) == b"2", 30, "both errbacks after TimeLimitExceeded")
    assert slow.state == "FAILURE"


def test_chain_step_lost_or_timed_out_fails_the_rest(app, worker_factory, rds):
    """A chain step the master fails (its child dies: WorkerLostError; hard time limit:
    TimeLimitExceeded) stores that failure for the later steps too (Celery 5.2's
    mark_as_failure walks request.chain), so a waiter on the last step's id alone is not
    left with PENDING."""
    w = _worker(worker_factory, concurrency=1)
    q = w.queue
    for first, exc_type in ((_sig(app, q, "demo.crash", "segv"), "WorkerLostError"),
                            (_sig(app, q, "demo.spin", 30, time_limit=1), "TimeLimitExceeded")):
        res = (first | _sig(app, q, "demo.add", 1) | _sig(app, q, "demo.mul", 2)).apply_async()
        wait_for(lambda: (_meta(rds, res.id) or {}).get("status") == "FAILURE", 30,
                 "the last step failed with the chain (%s)" % exc_type)
        for r in (res, res.parent, res.parent.parent):
            m = _meta(rds, r.id)
            assert m["status"] == "FAILURE" and m["result"]["exc_type"] == exc_type, m


def test_inherit_parent_priority(app, worker_factory):
    """task_inherit_parent_priority: a callback takes the parent's delivery priority."""
    for inherit in (False, True):
        kw = {}
        if inherit:
            kw = {"extra": ["--inherit-parent-priority"]} if IMPL == "c" else \
                {"env": {"PYW_INHERIT_PARENT_PRIORITY": "1"}}
        w = _worker(worker_factory, **kw)
        cb = _sig(app, w.queue, T + "return_priority")
        cb_id = cb.freeze().id
        r = _sig(app, w.queue, "demo.add", 1, 2).apply_async(priority=5, link=cb)
        assert r.get(timeout=TIMEOUT) == 3
        got = app.AsyncResult(cb_id).get(timeout=TIMEOUT)
        # Not inherited: Python reports None; a C worker reports an absent priority as 0.
        assert got == "Priority: 5" if inherit else got in ("Priority: None", "Priority: 0")
        w.stop()
