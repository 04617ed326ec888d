"""Rate limits per task type (Celery's Task.rate_limit, a token bucket of capacity 1 per task
type and worker), and celeryc's opt-in fleet-wide limits through Redis.

Start times are read from the stored results' date_done: the tasks are no-ops, so it is
the start time plus a few milliseconds. Only generous lower bounds on the spacing are
asserted (a limit must never be exceeded); upper bounds only where a limit would make the
difference several seconds.

Limits are given as celeryc's task_rate_limits (env CELERYC_TASK_RATE_LIMITS) and, for the
Python worker (CELERYC_IT_IMPL=python), as Celery's task_annotations (pyworker_app.py reads
PYW_RATE_LIMITS).
"""
import json
import socket
import subprocess
import time
from datetime import datetime

import pytest

from conftest import IMPL, TIMEOUT, c_only, scaled, unique_queue, wait_for


def limits_env(limits):
    return {"CELERYC_TASK_RATE_LIMITS": limits, "PYW_RATE_LIMITS": limits}


def done_at(rds, r):
    """date_done of a stored result, as seconds (UTC epoch)."""
    meta = json.loads(rds.get("celery-task-meta-" + r.id))
    assert meta["status"] == "SUCCESS", meta
    return datetime.fromisoformat(meta["date_done"]).timestamp()


def assert_spaced(times, per_s, what, strict=None):
    """Starts no faster than per_s on average: every three consecutive starts at least one
    interval apart, the whole run at least 3/4 of (n-1) intervals long. A worker that
    ignores the limit runs these no-ops within milliseconds of each other. Python Celery
    spaces them only on average (its timer releases them in pairs, 2/rate apart), so the
    per-start bound, half an interval between any two consecutive starts, is celeryc's
    (strict=None: when testing celeryc)."""
    times = sorted(times)
    iv = 1.0 / per_s
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(c - a >= iv for a, c in zip(times, times[2:])), \
        "%s: gaps %s (interval %.3f s)" % (what, gaps, iv)
    assert times[-1] - times[0] >= 0.75 * iv * (len(times) - 1), (what, gaps)
    if strict or (strict is None and IMPL == "c"):
        assert min(gaps) >= 0.5 * iv, "%s: gaps %s (interval %.3f s)" % (what, gaps, iv)


def test_rate_limited_type_is_spaced_others_are_not(app, worker_factory, rds):
    # A prefetch window larger than the backlog, so this holds for Celery as well (whose
    # rate-limited messages occupy the window: see the c_only test below).
    w = worker_factory(concurrency=2, prefetch=20, env=limits_env("demo.add=5/s"))
    adds = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(8)]
    muls = [app.send_task("demo.mul", args=[i, 2], queue=w.queue) for i in range(8)]
    assert [r.get(timeout=TIMEOUT) for r in muls] == [2 * i for i in range(8)]
    assert [r.get(timeout=TIMEOUT) for r in adds] == [i + 1 for i in range(8)]
    add_t = [done_at(rds, r) for r in adds]
    mul_t = [done_at(rds, r) for r in muls]
    assert_spaced(add_t, 5, "demo.add at 5/s")
    # FIFO within the type: the adds ran in the order they were sent (celeryc; Celery
    # releases pairs at once to two children, which may finish in either order).
    if IMPL == "c":
        assert add_t == sorted(add_t)
    # The unlimited type did not wait for the limited backlog (~1.4 s long).
    assert max(mul_t) < max(add_t) - 0.5, (mul_t, add_t)


@c_only
def test_rate_limited_messages_do_not_hold_the_prefetch_window(app, worker_factory, rds):
    # -c 1, prefetch 1: a window of one message. celeryc raises the QoS by one per message
    # waiting for its rate-limit slot (as for ETA messages), so the unlimited tasks sent
    # after the limited backlog are received and run at once. Celery does not raise it, so
    # there the muls would trickle in one per add start (5/s).
    w = worker_factory(concurrency=1, prefetch=1, env=limits_env("demo.add=5/s"))
    adds = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(8)]
    muls = [app.send_task("demo.mul", args=[i, 2], queue=w.queue) for i in range(6)]
    assert [r.get(timeout=TIMEOUT) for r in muls] == [2 * i for i in range(6)]
    assert [r.get(timeout=TIMEOUT) for r in adds] == [i + 1 for i in range(8)]
    add_t = [done_at(rds, r) for r in adds]
    mul_t = [done_at(rds, r) for r in muls]
    assert_spaced(add_t, 5, "demo.add at 5/s")
    assert max(mul_t) < max(add_t) - 0.5, (mul_t, add_t)
    assert "rate limit: demo.add at most 5/s (per worker)" in w.log()


@c_only
def test_disable_rate_limits(app, worker_factory, rds):
    w = worker_factory(concurrency=1, env=limits_env("demo.add=1/s"),
                       extra=["--disable-rate-limits"])
    rs = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(6)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [i + 1 for i in range(6)]
    t = sorted(done_at(rds, r) for r in rs)
    assert t[-1] - t[0] < 3.0, t  # limited, this takes 5 s


@c_only
def test_fleet_wide_limit_shared_by_two_workers(app, worker_factory, rds):
    rds.delete("celeryc:ratelimit:demo.add")
    q = unique_queue("rl-fleet")
    env = limits_env("demo.add=5/s")
    ws = [worker_factory(queue=q, concurrency=2, result_extended=True, env=env,
                         extra=["--fleet-rate-limits"]) for _ in range(2)]
    rs = [app.send_task("demo.add", args=[i, 1], queue=q) for i in range(12)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [i + 1 for i in range(12)]
    by = {}
    for r in rs:
        meta = json.loads(rds.get("celery-task-meta-" + r.id))
        by.setdefault(meta["worker"], []).append(done_at(rds, r))
    assert set(by) == {ws[0].name, ws[1].name}, "both workers must take part: %s" % by
    # Together at most 5/s: 12 starts span >= 2.2 s; per worker each would run its ~6 in
    # ~1 s.
    assert_spaced([t for ts in by.values() for t in ts], 5, "fleet-wide demo.add at 5/s")
    for w in ws:
        assert "rate limit: demo.add at most 5/s (fleet-wide)" in w.log()
        assert "unavailable" not in w.log()


@c_only
def test_fleet_redis_unreachable_falls_back_per_worker(app, worker_factory, rds):
    w = worker_factory(concurrency=2, env=limits_env("demo.add=5/s"),
                       extra=["--fleet-rate-limits", "--fleet-rate-limits-url",
                              "redis://127.0.0.1:1/0"])
    rs = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(5)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [i + 1 for i in range(5)]
    assert_spaced([done_at(rds, r) for r in rs], 5, "fallback demo.add at 5/s")
    log = w.log()
    assert log.count("fleet Redis redis://127.0.0.1:1/0 unavailable") == 1, log[-3000:]
    assert w.proc.poll() is None


@c_only
def test_bad_rate_limit_option_is_a_config_error(worker_factory):
    w = worker_factory(env={"CELERYC_TASK_RATE_LIMITS": "demo.add=10/d"}, wait_ready=False)
    assert w.wait_exit(15) == 78
    assert "task_rate_limits" in w.log() and "/s, /m or /h" in w.log()


@c_only
def test_fleet_without_redis_is_a_config_error(worker_factory):
    w = worker_factory(env={"CELERYC_TASK_RATE_LIMITS": "demo.add=1/s",
                            "CELERY_RESULT_BACKEND": "none"},
                       argv=None, extra=["--fleet-rate-limits", "--result-backend", "none"],
                       wait_ready=False)
    assert w.wait_exit(15) == 78
    assert "worker_fleet_rate_limits needs a Redis" in w.log()


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test's own on a free loopback port: start() / stop() at will."""
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    import redis
    procs = []

    def start():
        procs.append(subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--dir", str(tmp_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        c = redis.Redis(port=port, socket_timeout=2)

        def up():
            try:
                return c.ping()
            except redis.ConnectionError:
                return False
        wait_for(up, 10, "private redis on port %d" % port)
        return c

    def stop():
        p = procs[-1]
        p.kill()
        p.wait(scaled(10))

    yield port, start, stop
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(scaled(10))


@c_only
def test_fleet_redis_outage_falls_back_and_recovers(app, worker_factory, rds, private_redis):
    port, start, stop = private_redis
    url = "redis://127.0.0.1:%d/0" % port
    fleet = start()
    w = worker_factory(concurrency=2, env=limits_env("demo.add=5/s"),
                       extra=["--fleet-rate-limits", "--fleet-rate-limits-url", url])

    def batch(n):
        rs = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(n)]
        assert [r.get(timeout=TIMEOUT) for r in rs] == [i + 1 for i in range(n)]
        assert_spaced([done_at(rds, r) for r in rs], 5, "demo.add at 5/s")

    batch(4)
    assert fleet.get("celeryc:ratelimit:demo.add") is not None, "the slot is not in Redis"
    assert "unavailable" not in w.log()
    stop()
    batch(4)  # per worker now
    assert w.log().count("fleet Redis %s unavailable" % url) == 1
    fleet = start()
    # The worker tries Redis again 5 s after the failure; keep a task coming meanwhile.
    end = time.monotonic() + scaled(20)
    while "is back; limits are fleet-wide again" not in w.log():
        assert time.monotonic() < end, w.log()[-3000:]
        assert app.send_task("demo.add", args=[1, 1], queue=w.queue).get(timeout=TIMEOUT) == 2
        time.sleep(0.5)
    batch(3)
    log = w.log()
    assert log.count("unavailable") == 1 and log.count("is back;") == 1, \
        [ln for ln in log.splitlines() if "fleet" in ln]
    assert fleet.get("celeryc:ratelimit:demo.add") is not None
