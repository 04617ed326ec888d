"""Review tests for the worker daemon (worker.c, pool.c, broker.c, consumer.c, backend*.c).

Plain tests pin properties that hold today; `xfail(strict=True, reason="review: ...")` tests
demonstrate bugs found in review (they fail today, and will XPASS -> fail the suite once the
bug is fixed, so the marker must then be removed).
"""
import datetime as dt
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import TIMEOUT, c_only, free_port, queue_depth, scaled, wait_for

UTC = dt.timezone.utc


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


def _children(pid):
    try:
        out = Path("/proc/%d/task/%d/children" % (pid, pid)).read_text().split()
    except FileNotFoundError:
        return []
    return [int(p) for p in out]


def _fd_targets(pid):
    d = Path("/proc/%d/fd" % pid)
    res = {}
    for fd in d.iterdir():
        try:
            res[int(fd.name)] = os.readlink(str(fd))
        except OSError:
            pass
    return res


def _rss_kb(pid):
    for line in Path("/proc/%d/status" % pid).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---- Acks: coalesced basic.ack(multiple=true) must never cover a held delivery ----------------

def test_eta_held_message_survives_coalesced_acks(app, worker_factory, amqp_conn):
    """An ETA message is held unacked; later deliveries acked (possibly with multiple=true)
    must not ack it: after kill -9 it is back in the queue."""
    w = worker_factory(concurrency=1)
    held = app.send_task("demo.add", args=[0, 0], queue=w.queue, countdown=120)
    w.wait_log(r"demo\.add\[%s\] received" % held.id, 10)
    rs = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(40)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [i + 1 for i in range(40)]
    w.kill()
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 1, 10, "ETA message requeued")


def test_acks_late_running_survives_coalesced_acks(app, worker_factory, amqp_conn, rds):
    """acks_late: a long task still running must stay unacked while later short tasks are
    acked in batches."""
    w = worker_factory(concurrency=2, acks_late=True, track_started=True)
    long = app.send_task("demo.sleep", args=[60], queue=w.queue)
    wait_for(lambda: (_meta(rds, long.id) or {}).get("status") == "STARTED", 10, "started")
    rs = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(40)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [i + 1 for i in range(40)]
    w.kill()
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 1, 10, "running message requeued")


@c_only
def test_eta_raises_prefetch_window(app, worker_factory, amqp_conn, rds):
    """-c 1 --prefetch-multiplier 1: QoS 1, +1 per held ETA message (Celery §6.1). With 3
    ETA messages held and one task running (acked early), the worker holds 3 ETA + 1 ready
    message: 10 - 1 - 1 = 8 stay ready in the queue."""
    w = worker_factory(concurrency=1, prefetch=1, track_started=True)
    etas = [app.send_task("demo.add", args=[i, 0], queue=w.queue, countdown=120)
            for i in range(3)]
    for r in etas:
        w.wait_log(r"demo\.add\[%s\] received" % r.id, 10)
    rs = [app.send_task("demo.sleep", args=[2], queue=w.queue) for _ in range(10)]
    wait_for(lambda: (_meta(rds, rs[0].id) or {}).get("status") == "STARTED", 10, "started")
    time.sleep(0.5)
    assert queue_depth(amqp_conn, w.queue) == 8


# ---- Payloads ---------------------------------------------------------------------------------

def test_huge_unicode_args_round_trip_and_meta_bytes(app, worker, rds):
    """5 MB of non-ASCII args (job record >> PIPE_BUF, several short writes/reads), and a
    stored meta byte-identical to what kombu's json.dumps writes (ensure_ascii, ', ')."""
    big = ("h\u00e9llo \u2603 \U0001F600 \u2028 \"q\" \\ \t" * 400000)[: 5 * 1024 * 1024 // 3]
    r = app.send_task("t.integration.tasks.identity", args=[big], queue=worker.queue)
    assert r.get(timeout=TIMEOUT * 2) == big
    raw = rds.get("celery-task-meta-" + r.id)
    assert json.dumps(json.loads(raw)).encode() == raw
    # The worker is still fine afterwards.
    assert app.send_task("demo.add", args=[1, 2], queue=worker.queue).get(timeout=TIMEOUT) == 3


def test_nul_char_in_string_arg(app, worker, amqp_conn):
    s = "a\x00b"
    r = app.send_task("t.integration.tasks.identity", args=[s], queue=worker.queue)
    try:
        assert r.get(timeout=scaled(8)) == s
    finally:
        wait_for(lambda: queue_depth(amqp_conn, worker.queue) == 0, 5, "queue empty")


# ---- Time handling ----------------------------------------------------------------------------

def test_eta_with_positive_offset_is_absolute(app, worker):
    """eta 2 s from now written in +05:30: runs in ~2 s, not 5.5 h later nor at once."""
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    eta = dt.datetime.now(UTC).astimezone(tz) + dt.timedelta(seconds=2)
    t0 = time.monotonic()
    r = app.send_task("demo.add", args=[1, 1], queue=worker.queue, eta=eta)
    assert r.get(timeout=TIMEOUT) == 2
    assert 1.5 <= time.monotonic() - t0 < scaled(10)


def test_expires_with_negative_offset_not_expired(app, worker):
    """expires 60 s ahead written in -08:00 (its wall time is 8 h 'in the past' if the offset
    were ignored): must run."""
    tz = dt.timezone(dt.timedelta(hours=-8))
    exp = dt.datetime.now(UTC).astimezone(tz) + dt.timedelta(seconds=60)
    r = app.send_task("demo.add", args=[2, 2], queue=worker.queue, expires=exp)
    assert r.get(timeout=TIMEOUT) == 4


def test_expires_past_with_offset_revoked_and_acked(app, worker, rds, amqp_conn):
    from celery.exceptions import TaskRevokedError
    tz = dt.timezone(dt.timedelta(hours=5, minutes=30))
    # Past expiry via a raw header (a client would also set a 0 ms AMQP expiration).
    past = (dt.datetime.now(UTC) - dt.timedelta(seconds=30)).astimezone(tz).isoformat()
    tid = str(uuid.uuid4())
    import amqp
    ch = amqp_conn.channel()
    hdr = {"lang": "py", "task": "demo.add", "id": tid, "shadow": None, "eta": None,
           "expires": past, "group": None, "group_index": None, "retries": 0,
           "timelimit": [None, None], "root_id": tid, "parent_id": None,
           "argsrepr": "(1, 1)", "kwargsrepr": "{}", "origin": "gen1@review",
           "ignore_result": False}
    body = json.dumps([[1, 1], {}, {"callbacks": None, "errbacks": None, "chain": None,
                                    "chord": None}])
    ch.basic_publish(amqp.Message(body, content_type="application/json",
                                  content_encoding="utf-8", application_headers=hdr,
                                  correlation_id=tid, delivery_mode=2),
                     exchange="", routing_key=worker.queue)
    ch.close()
    res = app.AsyncResult(tid)
    with pytest.raises(TaskRevokedError):
        res.get(timeout=TIMEOUT)
    assert _meta(rds, tid)["result"]["exc_message"] == ["expired"]
    wait_for(lambda: queue_depth(amqp_conn, worker.queue) == 0, 5, "acked")


# ---- Children: death, fds ---------------------------------------------------------------------

@c_only
def test_child_killed_mid_task_worker_lost_and_acked(app, worker_factory, rds, amqp_conn):
    from billiard.exceptions import WorkerLostError
    w = worker_factory(concurrency=1, track_started=True)
    r = app.send_task("demo.sleep", args=[30], queue=w.queue)
    wait_for(lambda: (_meta(rds, r.id) or {}).get("status") == "STARTED", 10, "started")
    pid = _meta(rds, r.id)["result"]["pid"]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(WorkerLostError):
        r.get(timeout=TIMEOUT)
    w.wait_log(r"WorkerLostError\('Worker exited prematurely: signal 9 \(SIGKILL\)", 5)
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 0, 5, "acked (no requeue)")
    # The replacement child runs the next task; a 1 MB job also goes through (no SIGPIPE).
    assert app.send_task("demo.add", args=[1, 2], queue=w.queue).get(timeout=TIMEOUT) == 3
    s = "x" * (1 << 20)
    assert app.send_task("t.integration.tasks.identity", args=[s],
                         queue=w.queue).get(timeout=TIMEOUT) == s
    assert w.proc.poll() is None


@c_only
def test_children_hold_no_master_descriptors_after_respawn(app, worker_factory):
    """No connection crosses fork(): a child (first or respawned) holds stdio, its job pipe,
    the report pipe and at most its own Redis socket: no broker socket, no signal pipe, no
    other child's job pipe."""
    w = worker_factory(concurrency=3)
    assert app.send_task("demo.add", args=[1, 1], queue=w.queue).get(timeout=TIMEOUT) == 2
    kids = wait_for(lambda: len(_children(w.pid)) == 3 and _children(w.pid), 10, "3 children")
    os.kill(kids[0], signal.SIGKILL)
    wait_for(lambda: len(_children(w.pid)) == 3 and kids[0] not in _children(w.pid), 10,
             "respawn")
    rs = [app.send_task("demo.add", args=[i, 1], queue=w.queue) for i in range(20)]
    assert [r.get(timeout=TIMEOUT) for r in rs] == [i + 1 for i in range(20)]
    for k in _children(w.pid):
        fds = _fd_targets(k)
        extra = {fd: t for fd, t in fds.items() if fd > 2}
        pipes = [t for t in extra.values() if t.startswith("pipe:")]
        socks = [t for t in extra.values() if t.startswith("socket:")]
        assert len(pipes) == 2, (k, extra)
        assert len(socks) <= 1, (k, extra)
        assert len(extra) == len(pipes) + len(socks), (k, extra)


# ---- Memory -----------------------------------------------------------------------------------

@c_only
@pytest.mark.skipif("ASAN_OPTIONS" in os.environ,
                    reason="ASan's quarantine and shadow memory make RSS meaningless")
def test_master_and_child_rss_flat_over_many_tasks(app, worker_factory):
    w = worker_factory(concurrency=1)

    def burst(n):
        with app.producer_or_acquire() as prod:
            rs = [app.send_task("demo.add", args=[i, 1], queue=w.queue, producer=prod)
                  for i in range(n)]
            rs.append(app.send_task("demo.fail", args=["boom"], queue=w.queue, producer=prod))
            rs.append(app.send_task("no.such.task", args=[1], queue=w.queue, producer=prod))
            last = app.send_task("demo.add", args=[0, 0], queue=w.queue, producer=prod)
        assert last.get(timeout=TIMEOUT * 6) == 0

    burst(1500)
    kid = _children(w.pid)[0]
    before = (_rss_kb(w.pid), _rss_kb(kid))
    for _ in range(3):
        burst(2000)
    after = (_rss_kb(w.pid), _rss_kb(kid))
    assert after[0] - before[0] < 2048, (before, after)
    assert after[1] - before[1] < 2048, (before, after)


# ---- Redis down -------------------------------------------------------------------------------

@c_only
def test_result_stored_when_redis_returns_within_seconds(app, worker_factory, amqp_conn):
    import redis
    port = free_port()
    url = "redis://127.0.0.1:%d/0" % port
    w = worker_factory(concurrency=1, acks_late=True,
                       extra=["--result-backend", url])
    r = app.send_task("demo.add", args=[20, 22], queue=w.queue)
    w.wait_log(r"demo\.add\[%s\] received" % r.id, 10)
    time.sleep(1.0)
    srv = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                            "--save", "", "--appendonly", "no"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    try:
        cli = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        wait_for(lambda: _ping(cli), 10, "private redis up")
        try:
            wait_for(lambda: cli.get("celery-task-meta-" + r.id), 20, "result stored")
        finally:
            # Whatever happened to the result, the message must not sit unacked forever.
            wait_for(lambda: queue_depth(amqp_conn, w.queue) == 0, 5, "queue empty")
    finally:
        srv.terminate()
        srv.wait(10)


@c_only
def test_acks_late_result_not_stored_is_requeued(app, worker_factory, amqp_conn):
    """Redis stays down past the child's ~20 s retry (Celery's retry_policy): with acks_late
    the message is rejected with requeue=true (at-least-once), never acked with nothing
    stored."""
    port = free_port()
    w = worker_factory(concurrency=1, acks_late=True,
                       extra=["--result-backend", "redis://127.0.0.1:%d/0" % port])
    r = app.send_task("demo.add", args=[1, 2], queue=w.queue)
    w.wait_log(r"retrying for up to 20 s", 10)
    w.wait_log(r"demo\.add\[%s\]: result not stored; requeueing" % r.id, 40)
    w.kill()
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 1, 10, "message back in the queue")


def _ping(cli):
    try:
        return cli.ping()
    except Exception:
        return False


# ---- Exit codes -------------------------------------------------------------------------------

def _exit_codes(worker_factory, sig):
    codes = {}
    for impl in ("python", "c"):
        w = worker_factory(impl=impl, concurrency=1)
        time.sleep(1.0)
        w.signal(sig)
        codes[impl] = w.wait_exit(30)
    return codes


@c_only
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_warm_shutdown_exit_code_matches_celery(worker_factory, sig):
    codes = _exit_codes(worker_factory, sig)
    assert codes["c"] == codes["python"] == 0, codes


@c_only
def test_sigquit_exit_code_matches_celery(worker_factory):
    codes = _exit_codes(worker_factory, signal.SIGQUIT)
    assert codes["c"] == codes["python"], codes
