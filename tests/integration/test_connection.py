"""Connections and shutdown (issue #3): the worker survives broker connection loss and a
broker restart without a restart of its own, keeps heartbeats going while every child is
busy, survives a Redis outage, loses nothing to kill -9 with acks_late, and gives unstarted
messages back at once on a warm shutdown.

Executions are counted with it.count_sleep(key, seconds), which INCRs `key` in db 7 before
sleeping: a count of 2 is a task body that ran twice.
"""
import json
import os
import signal
import socket
import subprocess
import time
import uuid

import pytest

from conftest import IMPL, ROOT, TIMEOUT, c_only, free_port, queue_depth, scaled, wait_for


def _ctl(*args):
    d = os.environ.get("CELERYC_TEST_DATA_DIR")
    if not d:
        pytest.skip("needs the RabbitMQ node started by scripts/services.sh")
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "ctl", d] + list(args),
                   check=True, timeout=scaled(90), stdout=subprocess.DEVNULL)


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


def _batch(app, queue, n, seconds):
    """Publish n it.count_sleep tasks; returns [(key, AsyncResult)]."""
    tag = uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        key = "it-conn-%s-%d" % (tag, i)
        out.append((key, app.send_task("it.count_sleep", args=[key, seconds], queue=queue)))
    return out


def _all_done(rds, batch):
    return all((_meta(rds, r.id) or {}).get("status") == "SUCCESS" for _, r in batch)


def _counts(rds7, batch):
    return [int(rds7.get(k) or 0) for k, _ in batch]


def _wait_amqp_port(timeout):
    port = int(os.environ["CELERYC_TEST_AMQP_URL"].rsplit(":", 1)[1].split("/")[0])

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return True
        except OSError:
            return False
    wait_for(up, timeout, "RabbitMQ listening again", interval=0.2)


def test_reconnects_after_connection_closed(app, worker_factory, rds, rds7):
    w = worker_factory(concurrency=2, acks_late=True)
    batch = _batch(app, w.queue, 30, 0.1)
    wait_for(lambda: sum(1 for _, r in batch if _meta(rds, r.id)) >= 5, 20, "5 tasks done")
    _ctl("close_all_connections", "integration test: connection lost")
    wait_for(lambda: _all_done(rds, batch), 60, "every task done after the reconnect")
    assert w.proc.poll() is None, "the worker exited instead of reconnecting"
    counts = _counts(rds7, batch)
    assert min(counts) >= 1
    # Only what was in flight (or finished but not yet acked) when the connection dropped
    # may run again.
    assert sum(c - 1 for c in counts) <= 4, counts
    if IMPL == "c":
        w.wait_log(r"Connected to amqp://", 10)


def test_broker_restart_mid_batch(app, worker_factory, rds, rds7):
    w = worker_factory(concurrency=2, acks_late=True)
    batch = _batch(app, w.queue, 30, 0.1)
    wait_for(lambda: sum(1 for _, r in batch if _meta(rds, r.id)) >= 5, 20, "5 tasks done")
    _ctl("stop_app")
    try:
        time.sleep(2)  # the worker's reconnect attempts fail meanwhile
    finally:
        _ctl("start_app")
    _wait_amqp_port(60)
    wait_for(lambda: _all_done(rds, batch), 90, "every task done after the broker restart")
    assert w.proc.poll() is None, "the worker exited instead of reconnecting"
    counts = _counts(rds7, batch)
    assert min(counts) >= 1
    assert sum(c - 1 for c in counts) <= 4, counts
    if IMPL == "c":
        w.wait_log(r"Cannot connect to amqp://", 5)
        w.wait_log(r"Trying again in", 5)
        w.wait_log(r"Connected to amqp://", 10)


def test_kill9_mid_batch_acks_late_only_inflight_repeat(app, worker_factory, rds, rds7):
    w = worker_factory(concurrency=2, acks_late=True)
    batch = _batch(app, w.queue, 24, 0.2)
    wait_for(lambda: sum(1 for _, r in batch if _meta(rds, r.id)) >= 6, 30, "6 tasks done")
    w.kill()  # SIGKILL to the whole process group: master and children
    w2 = worker_factory(queue=w.queue, concurrency=2, acks_late=True)
    wait_for(lambda: _all_done(rds, batch), 60, "every task done on the second worker")
    counts = _counts(rds7, batch)
    assert min(counts) >= 1, counts
    # -c 2: at most the two running tasks repeat (plus, rarely, one whose ack was still in
    # the worker's 1 ms coalescing window).
    assert sum(c - 1 for c in counts) <= 3, counts
    w2.stop()


def test_heartbeats_flow_while_every_child_is_busy(app, worker_factory, rds, rds7):
    # Heartbeat 2 s: RabbitMQ drops a peer it has not heard from in ~2 intervals. The task
    # keeps the only child busy for 7 s; the master must keep the connection alive.
    extra = ["--broker-heartbeat", "2"] if IMPL == "c" else []
    env = {} if IMPL == "c" else {"CELERY_BROKER_HEARTBEAT": "2"}
    w = worker_factory(concurrency=1, acks_late=True, extra=extra, env=env)
    batch = _batch(app, w.queue, 1, 7)
    wait_for(lambda: _all_done(rds, batch), 30, "the long task done")
    assert _counts(rds7, batch) == [1]
    assert "Connection to broker lost" not in w.log()
    assert "missed heartbeats" not in w.log()


@c_only
def test_warm_shutdown_returns_unstarted_messages_at_once(app, worker_factory, rds, amqp_conn):
    w = worker_factory(concurrency=1, prefetch=4)
    long = _batch(app, w.queue, 1, 4)
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 0, 10, "the long task taken")
    time.sleep(0.3)  # and started
    rest = _batch(app, w.queue, 6, 0)
    # Up to 4 of the 6 are prefetched by the worker, the others wait in the queue.
    wait_for(lambda: queue_depth(amqp_conn, w.queue) <= 2, 10, "messages prefetched")
    t0 = time.monotonic()
    w.signal(signal.SIGTERM)
    # Back in the queue while the long task still runs (Celery keeps them until it exits).
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 6, 3, "unstarted messages returned")
    assert w.proc.poll() is None, "the worker should still be finishing the long task"
    assert time.monotonic() - t0 < scaled(3.5)
    w2 = worker_factory(queue=w.queue, concurrency=2)
    wait_for(lambda: _all_done(rds, rest), 20, "returned tasks done on another worker")
    assert w.wait_exit(20) == 0
    assert long[0][1].get(timeout=TIMEOUT) == 1
    w2.stop()



class _Redis:
    """A private redis-server (append-only, fsync always) that a test can stop and restart
    on the same port."""

    def __init__(self, tmp_path):
        self.port = free_port()
        self.dir = tmp_path / "redis-outage"
        self.dir.mkdir()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir",
             str(self.dir), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import redis
        r = redis.Redis(port=self.port, socket_timeout=2)
        wait_for(lambda: self._ping(r), 20, "private redis up", interval=0.1)
        r.close()

    @staticmethod
    def _ping(r):
        try:
            return r.ping()
        except Exception:
            return False

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(scaled(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(scaled(10))


@c_only
def test_redis_outage_results_still_stored(app, worker_factory, rds7, tmp_path):
    """Better than Celery: Python Celery 5.2.6's prefork worker loses these results ("Pool
    callback raised exception: ConnectionError", measured with CELERYC_IT_IMPL=python);
    celeryc's pool children retry the store (Celery's own retry_policy, ~20 s) so a short
    outage loses nothing."""
    import redis
    srv = _Redis(tmp_path)
    srv.start()
    url = "redis://127.0.0.1:%d/0" % srv.port
    try:
        if IMPL == "c":
            w = worker_factory(concurrency=2, acks_late=True,
                               extra=["--result-backend", url])
        else:
            w = worker_factory(concurrency=2, acks_late=True,
                               env={"CELERY_RESULT_BACKEND": url})
        batch = _batch(app, w.queue, 16, 0.3)
        r = redis.Redis(port=srv.port, socket_timeout=5)
        wait_for(lambda: sum(1 for _, a in batch if r.get("celery-task-meta-" + a.id)) >= 2,
                 20, "two results stored")
        r.close()
        srv.stop()
        time.sleep(3)  # tasks finish meanwhile; their stores fail and are retried
        assert w.proc.poll() is None, "the worker exited during the Redis outage"
        srv.start()
        r = redis.Redis(port=srv.port, socket_timeout=5)

        def stored():
            return all((json.loads(r.get("celery-task-meta-" + a.id) or "{}")).get("status")
                       == "SUCCESS" for _, a in batch)
        wait_for(stored, 60, "every result stored once Redis is back")
        r.close()
        assert w.proc.poll() is None
        if IMPL == "c":
            assert "result backend" in w.log().lower() or "redis" in w.log().lower()
    finally:
        srv.stop()
