"""The ETA delay store: countdown/ETA messages due later than --eta-horizon leave the broker
(acked once they are in a Redis sorted set) and are republished when due; nothing is lost
when a worker is killed while holding or storing them; workers sharing the store publish
each due message once.

Each test uses its own sorted set (--delay-store-key) and a horizon of a few seconds.
celeryc-only (Celery holds every ETA message unacked)."""
import re
import uuid
from datetime import datetime, timezone

from conftest import TIMEOUT, c_only, free_port, queue_depth, unique_queue, wait_for

pytestmark = c_only

T = "t.integration.tasks."


def opts(key, horizon=2):
    return ["--eta-horizon", str(horizon), "--delay-store-key", key]


def moved(worker, tid):
    return worker.wait_log(r"Task demo\.add\[%s\] due at \S+ moved to the delay store" % tid, 10)


def test_far_eta_goes_to_store_and_runs_when_due(app, worker_factory, amqp_conn, rds):
    q = unique_queue("delay")
    key = "it-delayed-" + uuid.uuid4().hex[:10]
    w1 = worker_factory(queue=q, extra=opts(key))
    near = app.send_task("demo.add", args=[1, 1], countdown=1, queue=q)  # within the horizon
    far = app.send_task("demo.add", args=[2, 3], countdown=6, queue=q)
    moved(w1, far.id)
    assert rds.zcard(key) == 1
    (member, score), = rds.zrange(key, 0, -1, withscores=True)
    assert far.id.encode() in member
    eta_ms = score
    assert near.get(timeout=TIMEOUT) == 2  # held locally and run as before
    assert not re.search(r"demo\.add\[%s\] due at .* moved" % near.id, w1.log())

    # Not held: the message was acked, so a SIGKILL does not return it to the queue.
    w1.kill()
    assert queue_depth(amqp_conn, q) == 0
    assert rds.zcard(key) == 1

    w2 = worker_factory(queue=q, extra=opts(key))
    assert far.get(timeout=TIMEOUT + 6) == 5
    w2.wait_log(r"delay store: republished 1 due message from %s" % key, 5)
    assert rds.zcard(key) == 0
    assert rds.zcard(key + ".claimed") == 0
    done = datetime.fromisoformat(app.AsyncResult(far.id)._get_task_meta()["date_done"])
    done_ms = done.replace(tzinfo=timezone.utc).timestamp() * 1000
    assert done_ms >= eta_ms - 50  # not run before its ETA


def test_worker_killed_while_holding_and_storing_loses_nothing(app, worker_factory, rds):
    q = unique_queue("delaykill")
    key = "it-delayed-" + uuid.uuid4().hex[:10]
    w1 = worker_factory(queue=q, extra=opts(key, horizon=3), concurrency=1)
    held = [app.send_task("demo.add", args=[i, 1], countdown=2.5, queue=q) for i in range(3)]
    stored = [app.send_task("demo.add", args=[i, 2], countdown=5, queue=q) for i in range(3)]
    for r in stored:
        moved(w1, r.id)
    for r in held:
        w1.wait_log(r"demo\.add\[%s\] received" % r.id, 10)
    w1.kill()  # held ones return to the queue (unacked); stored ones are in Redis

    worker_factory(queue=q, extra=opts(key, horizon=3), concurrency=1)
    assert [r.get(timeout=TIMEOUT + 5) for r in held] == [1, 2, 3]
    assert [r.get(timeout=TIMEOUT + 5) for r in stored] == [2, 3, 4]
    wait_for(lambda: rds.zcard(key) == 0 and rds.zcard(key + ".claimed") == 0, 5, "store empty")


def test_two_workers_publish_each_due_message_once(app, worker_factory, rds, rds7):
    q = unique_queue("delay2")
    key = "it-delayed-" + uuid.uuid4().hex[:10]
    ws = [worker_factory(queue=q, extra=opts(key, horizon=1)) for _ in range(2)]
    keys = ["dcount-%s-%d" % (uuid.uuid4().hex[:8], i) for i in range(20)]
    rs = [app.send_task(T + "redis_count", args=[k], countdown=3, queue=q) for k in keys]
    wait_for(lambda: sum(len(re.findall(r"moved to the delay store", w.log())) for w in ws)
             == len(rs), 10, "all moved to the store")
    for r in rs:
        assert r.get(timeout=TIMEOUT + 3) is None
    wait_for(lambda: rds.zcard(key) == 0 and rds.zcard(key + ".claimed") == 0, 5, "store empty")
    published = sum(int(n) for w in ws
                    for n in re.findall(r"delay store: republished (\d+) due", w.log()))
    assert published == len(rs)
    # Each ran exactly once (a second publish would have run it again).
    assert [rds7.get(k) for k in keys] == [b"1"] * len(keys)


def test_horizon_without_redis_warns_and_holds(app, worker_factory, amqp_conn):
    q = unique_queue("delaynoredis")
    w = worker_factory(queue=q, extra=["--result-backend", "none", "--eta-horizon", "1"])
    w.wait_log(r"WARNING.*worker_eta_horizon is set but no Redis is configured", 5)
    r = app.send_task("demo.add", args=[1, 2], countdown=3, queue=q)
    w.wait_log(r"demo\.add\[%s\] received" % r.id, 10)
    w.wait_log(r"demo\.add\[%s\] succeeded" % r.id, 15)
    assert "moved to the delay store" not in w.log()
    assert queue_depth(amqp_conn, q) == 0



def _redis_server(port, tmp_path):
    import subprocess
    p = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save",
                          "", "--appendonly", "no", "--dir", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def up():
        try:
            return r.ping()
        except redis.exceptions.ConnectionError:
            return False
    wait_for(up, 10, "redis-server on %d" % port)
    return p, r


def test_store_down_at_receipt_holds_then_moves(app, worker_factory, tmp_path):
    """worker_redis_url names a separate Redis that is down when the message arrives: the
    message is held (as Celery would), and moved once that Redis is back."""
    port = free_port()
    p, r = _redis_server(port, tmp_path)
    key = "it-delayed-" + uuid.uuid4().hex[:10]
    q = unique_queue("delaydown")
    try:
        w = worker_factory(queue=q, extra=opts(key, horizon=2) +
                           ["--redis-url", "redis://127.0.0.1:%d/0" % port])
        p.terminate()
        p.wait(10)
        res = app.send_task("demo.add", args=[4, 4], countdown=12, queue=q)
        w.wait_log(r"demo\.add\[%s\]: delay store unavailable .*holding it" % res.id, 10)
        p, r = _redis_server(port, tmp_path)
        moved(w, res.id)
        assert r.zcard(key) == 1
        assert res.get(timeout=TIMEOUT + 12) == 8
        assert r.zcard(key) == 0
    finally:
        p.kill()
        p.wait(10)
