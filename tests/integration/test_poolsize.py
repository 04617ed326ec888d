"""Resizing a running worker's pool by remote control: `pool_grow N` / `pool_shrink N`
(celery/worker/control.py, billiard's Pool.grow / Pool.shrink), the QoS window that follows
the size (Consumer._update_prefetch_count), and `inspect stats` afterwards.

Where celeryc differs from Celery 5.2.6, on purpose:
- `stats.pool.max-concurrency` is the current size (Celery keeps its start value);
- shrinking when every process is busy succeeds: busy processes finish their task, then
  exit (billiard answers "Can't shrink pool. All processes busy!" and shrinks nothing);
- the threads pool resizes too (Celery's has no grow/shrink: AttributeError);
- shrinking to 0 processes, or past a maximum, is refused (Celery leaves a dead worker).

Every request names its destination, so workers of other tests never answer.
"""
import json
import os
import subprocess

import pytest

from conftest import HERE, IMPL, PY, TIMEOUT, c_only, celeryc_bin, scaled, wait_for

GROW = {"ok": "pool will grow"}
SHRINK = {"ok": "pool will shrink"}


def celery_cli(*args, timeout=20):
    """`celery -A capp ARGS`, as an operator runs it; returns (rc, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(HERE))
    p = subprocess.run([PY, "-m", "celery", "-A", "capp"] + list(args), cwd=str(HERE), env=env,
                       capture_output=True, text=True, timeout=scaled(timeout))
    return p.returncode, p.stdout, p.stderr


def control_json(node, *args):
    rc, out, err = celery_cli("control", *args, "-d", node, "-j", "-t", str(scaled(5)))
    assert rc == 0, (args, rc, out, err)
    return [r[node] for r in json.loads(out) if node in r][0]


def stats(app, node):
    return app.control.inspect(destination=[node], timeout=scaled(5)).stats()[node]


def active(app, node):
    return (app.control.inspect(destination=[node], timeout=scaled(3)).active() or {}).get(node, [])


def wait_processes(app, node, n):
    """Wait until `inspect stats` lists n pool processes (billiard starts them shortly after
    the reply; a retired one may take a moment to go). Returns the stats."""
    got = {}

    def check():
        got["s"] = stats(app, node)
        return len(got["s"]["pool"]["processes"]) == n
    wait_for(check, 15, "%d pool processes (last: %s)" % (n, got.get("s", {}).get("pool")),
             interval=0.3)
    return got["s"]


def is_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_grow_then_shrink(app, worker_factory):
    """`celery control pool_grow 2` then `pool_shrink 1` against a -c 1 worker: Celery's
    replies, the process list and prefetch count in `inspect stats`, and tasks running on
    every process at once after the grow."""
    w = worker_factory(concurrency=1)
    node = w.name
    before = stats(app, node)
    assert len(before["pool"]["processes"]) == 1 and before["prefetch_count"] == 4

    assert control_json(node, "pool_grow", "2") == GROW
    st = wait_processes(app, node, 3)
    procs = st["pool"]["processes"]
    assert before["pool"]["processes"][0] in procs and len(set(procs)) == 3
    assert st["pool"]["max-concurrency"] == (3 if IMPL == "c" else 1)
    wait_for(lambda: stats(app, node)["prefetch_count"] == 12, 10, "prefetch 3 x 4")

    # Three sleeps run at once, one in each process.
    rs = [app.send_task("demo.sleep", args=[2], queue=w.queue) for _ in range(3)]
    pids = set()

    def three_active():
        a = active(app, node)
        pids.update(t["worker_pid"] for t in a)
        return len(a) == 3
    wait_for(three_active, 15, "three tasks active at once", interval=0.2)
    assert pids == set(procs), (pids, procs)
    for r in rs:
        r.get(timeout=TIMEOUT)
    got = {app.send_task("demo.getpid", queue=w.queue).get(timeout=TIMEOUT) for _ in range(6)}
    assert got <= set(procs)

    assert control_json(node, "pool_shrink", "1") == SHRINK
    st = wait_processes(app, node, 2)
    assert set(st["pool"]["processes"]) < set(procs)
    assert st["pool"]["max-concurrency"] == (2 if IMPL == "c" else 1)
    wait_for(lambda: stats(app, node)["prefetch_count"] == 8, 10, "prefetch 2 x 4")
    gone = (set(procs) - set(st["pool"]["processes"])).pop()
    wait_for(lambda: not is_alive(gone), 10, "the retired process exited")
    assert app.send_task("demo.add", args=[2, 3], queue=w.queue).get(timeout=TIMEOUT) == 5


def test_shrink_while_busy_loses_nothing(app, worker_factory):
    """Shrink a -c 3 worker by 2 while all three run a task and more wait: nothing is lost.
    celeryc retires two busy processes after their task; Celery refuses (all busy)."""
    w = worker_factory(concurrency=3)
    node = w.name
    procs = stats(app, node)["pool"]["processes"]
    sleeps = [app.send_task("demo.sleep", args=[2], queue=w.queue) for _ in range(3)]
    adds = [app.send_task("demo.add", args=[i, i], queue=w.queue) for i in range(10)]
    wait_for(lambda: len(active(app, node)) == 3, 15, "three tasks running", interval=0.2)

    reply = control_json(node, "pool_shrink", "2")
    if IMPL == "c":
        assert reply == SHRINK
    else:
        assert reply == {"error": "ValueError(\"Can't shrink pool. All processes busy!\")"}
    for r in sleeps:
        r.get(timeout=TIMEOUT)
    assert [r.get(timeout=TIMEOUT) for r in adds] == [2 * i for i in range(10)]
    if IMPL == "c":
        st = wait_processes(app, node, 1)
        assert st["pool"]["max-concurrency"] == 1 and st["prefetch_count"] == 4
        left = st["pool"]["processes"][0]
        assert left in procs
        for pid in set(procs) - {left}:
            wait_for(lambda: not is_alive(pid), 10, "retired process %d exited" % pid)
        assert "exited prematurely" not in w.log() and "WorkerLostError" not in w.log()
        # and the pool grows back into the freed slots
        assert control_json(node, "pool_grow", "2") == GROW
        wait_processes(app, node, 3)


def test_mixed_fleet_replies_match_python(app, worker_factory):
    """One broadcast to a celeryc and a Python worker: the same replies."""
    if IMPL == "python":
        pytest.skip("compares a celeryc worker with a Python one")
    c = worker_factory(concurrency=1)
    py = worker_factory(concurrency=1, impl="python")
    nodes = [c.name, py.name]
    ctl = app.control

    def both(reply):
        return sorted(reply, key=lambda d: list(d)[0])

    def expect(value):
        return both([{n: value} for n in nodes])

    assert both(ctl.pool_grow(1, reply=True, destination=nodes, timeout=scaled(5))) == \
        expect(GROW)
    assert both(ctl.pool_shrink(1, reply=True, destination=nodes, timeout=scaled(5))) == \
        expect(SHRINK)
    assert both(ctl.autoscale(4, 1, reply=True, destination=nodes, timeout=scaled(5))) == \
        expect({"error": "ValueError('Autoscale not enabled')"})
    for n in nodes:
        assert wait_processes(app, n, 1)["prefetch_count"] == 4


@c_only
def test_celeryc_control_and_bounds(app, worker_factory):
    """`celeryc control pool_grow/pool_shrink` (text and --json) and the size bounds."""
    w = worker_factory(concurrency=1)
    node = w.name
    d = ["-d", node, "-t", "%.1f" % scaled(3)]
    env = dict(os.environ, CELERY_BROKER_URL=os.environ["CELERYC_TEST_AMQP_URL"])

    def cc(*args):
        p = subprocess.run([celeryc_bin()] + list(args), env=env, capture_output=True, text=True,
                           timeout=scaled(30))
        assert p.returncode == 0, p
        return p.stdout

    assert cc("control", "pool_grow", "1", *d) == "->  %s: OK\n        pool will grow\n" % node
    assert json.loads(cc("control", "pool_grow", "--json", *d)) == [{node: GROW}]  # N=1
    wait_processes(app, node, 3)
    assert json.loads(cc("control", "pool_shrink", "2", "--json", *d)) == [{node: SHRINK}]
    wait_processes(app, node, 1)
    # bounds: at least one process, at most 1024; nothing changes
    out = json.loads(cc("control", "pool_shrink", "1", "--json", *d))[0][node]
    assert "error" in out and "one process must stay" in out["error"], out
    out = json.loads(cc("control", "pool_grow", "5000", "--json", *d))[0][node]
    assert "error" in out and "ValueError" in out["error"], out
    st = stats(app, node)
    assert len(st["pool"]["processes"]) == 1 and st["pool"]["max-concurrency"] == 1
    assert app.send_task("demo.add", args=[1, 2], queue=w.queue).get(timeout=TIMEOUT) == 3


@c_only
def test_threads_and_solo(app, worker_factory):
    """--pool threads grows and shrinks (two tasks at once after a grow); --pool solo answers
    Celery's error."""
    t = worker_factory(concurrency=1, extra=["--pool", "threads"])
    assert control_json(t.name, "pool_grow", "1") == GROW
    st = stats(app, t.name)
    assert st["pool"]["max-concurrency"] == 2 and st["prefetch_count"] == 8
    rs = [app.send_task("demo.sleep", args=[1.5], queue=t.queue) for _ in range(2)]
    wait_for(lambda: len(active(app, t.name)) == 2, 15, "two tasks in two threads",
             interval=0.2)
    assert control_json(t.name, "pool_shrink", "1") == SHRINK  # one busy thread retires
    for r in rs:
        r.get(timeout=TIMEOUT)
    assert stats(app, t.name)["pool"]["max-concurrency"] == 1
    assert control_json(t.name, "pool_grow", "1") == GROW  # reuses the retired slot
    assert app.send_task("demo.add", args=[4, 4], queue=t.queue).get(timeout=TIMEOUT) == 8

    s = worker_factory(concurrency=1, extra=["--pool", "solo"])
    for verb in ("grow", "shrink"):
        assert control_json(s.name, "pool_" + verb, "1") == \
            {"error": "AttributeError(\"'TaskPool' object has no attribute '%s'\")" % verb}
    assert app.send_task("demo.add", args=[1, 1], queue=s.queue).get(timeout=TIMEOUT) == 2
