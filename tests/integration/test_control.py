"""Remote control (celery.pidbox, celery-wire.md §5): `celery inspect` / `celery control`
against celeryc workers, alone and beside a Python worker, and revokes that survive a
restart (worker_state_db).

Every request names its destination, so the CLI returns as soon as the node answers and
the workers of tests running beside this one never reply.
"""
import json
import os
import subprocess
import time
import uuid

import pytest

from conftest import HERE, IMPL, PY, TIMEOUT, scaled, unique_queue, wait_for

INFO_KEYS = ["id", "name", "args", "kwargs", "type", "hostname", "time_start", "acknowledged",
             "delivery_info", "worker_pid"]


def celery_cli(*args, timeout=20):
    """Run `celery -A capp ARGS` as an operator would; returns (rc, stdout, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(HERE))
    p = subprocess.run([PY, "-m", "celery", "-A", "capp"] + list(args), cwd=str(HERE), env=env,
                       capture_output=True, text=True, timeout=scaled(timeout))
    return p.returncode, p.stdout, p.stderr


def inspect_json(cmd, node, *extra, timeout=5):
    rc, out, err = celery_cli("inspect", cmd, "-d", node, "-j", "-t", str(scaled(timeout)),
                              *extra)
    assert rc == 0, (cmd, rc, out, err)
    return json.loads(out)[node]


def control_json(cmd, node, *extra, timeout=5):
    rc, out, err = celery_cli("control", cmd, "-d", node, "-j", "-t", str(scaled(timeout)),
                              *extra)
    assert rc == 0, (cmd, rc, out, err)
    replies = json.loads(out)  # control -j prints a list of {node: reply}
    return [r[node] for r in replies if node in r][0]


def active_ids(app, node):
    r = app.control.inspect(destination=[node], timeout=scaled(2)).active() or {}
    return [t["id"] for t in r.get(node, [])]


def test_inspect_commands(app, worker_factory, rds):
    w = worker_factory(concurrency=1)
    node = w.name
    run = app.send_task("demo.sleep", args=[300], queue=w.queue)  # terminated below
    queued = app.send_task("demo.add", args=[1, 2], queue=w.queue)
    later = app.send_task("demo.add", args=[3, 4], queue=w.queue, countdown=300)
    wait_for(lambda: run.id in active_ids(app, node), 15, "the sleep task running")

    assert inspect_json("ping", node) == {"ok": "pong"}

    active = inspect_json("active", node)
    assert [t["id"] for t in active] == [run.id]
    a = active[0]
    assert list(a) == INFO_KEYS
    assert a["name"] == a["type"] == "demo.sleep" and a["args"] == [300] and a["kwargs"] == {}
    assert a["hostname"] == node and a["acknowledged"] is True
    assert isinstance(a["time_start"], float) and abs(a["time_start"] - time.time()) < 60
    assert isinstance(a["worker_pid"], int) and a["worker_pid"] > 0
    assert a["delivery_info"] == {"exchange": "", "routing_key": w.queue, "priority": 0,
                                  "redelivered": False}

    reserved = inspect_json("reserved", node)
    assert [t["id"] for t in reserved] == [queued.id]
    assert reserved[0]["time_start"] is None and reserved[0]["worker_pid"] is None
    assert reserved[0]["acknowledged"] is False

    sched = inspect_json("scheduled", node)
    assert len(sched) == 1 and list(sched[0]) == ["eta", "priority", "request"]
    assert sched[0]["priority"] == 6 and sched[0]["request"]["id"] == later.id
    assert sched[0]["eta"].endswith("+00:00")

    q = inspect_json("query_task", node, run.id, queued.id, later.id, str(uuid.uuid4()))
    assert q[run.id][0] == "active" and q[run.id][1]["id"] == run.id
    assert q[queued.id][0] == "reserved"
    assert later.id not in q and len(q) == 2  # ETA-waiting tasks are not found, as Celery

    stats = inspect_json("stats", node)
    for k in ("total", "pid", "clock", "uptime", "pool", "broker", "prefetch_count", "rusage"):
        assert k in stats, k
    assert stats["pid"] == w.pid and isinstance(stats["clock"], str)
    assert stats["total"] == {"demo.sleep": 1}
    assert stats["pool"]["max-concurrency"] == 1 and len(stats["pool"]["processes"]) == 1
    assert stats["broker"]["transport"] == "amqp" and stats["prefetch_count"] >= 4
    assert "maxrss" in stats["rusage"]

    reg = inspect_json("registered", node)
    assert "demo.add" in reg and "demo.sleep" in reg
    assert not [n for n in reg if n.startswith("celery.")]

    aq = inspect_json("active_queues", node)
    assert [x["name"] for x in aq] == [w.queue]
    assert aq[0]["exchange"]["name"] == w.queue and aq[0]["exchange"]["type"] == "direct"

    conf = inspect_json("conf", node)
    assert "********" in conf["broker_url"] and "guest@" not in conf["broker_url"]
    assert isinstance(inspect_json("clock", node)["clock"], int)
    assert inspect_json("report", node)["ok"].startswith("\nsoftware -> ")
    # (celeryc shares revokes through Redis: other tests' ids may be listed here)
    assert queued.id not in inspect_json("revoked", node)

    # revoke: the reserved and the ETA one (one command, many ids), then terminate the
    # running one with a signal.
    out = control_json("revoke", node, queued.id, later.id)
    assert out == {"ok": "tasks %s, %s flagged as revoked" % (queued.id, later.id)} or \
        out == {"ok": "tasks %s, %s flagged as revoked" % (later.id, queued.id)}
    assert {queued.id, later.id} <= set(inspect_json("revoked", node))
    rep = app.control.revoke(run.id, terminate=True, signal="SIGKILL", reply=True,
                             destination=[node], timeout=scaled(5))
    assert rep == [{node: {"ok": "terminate: %s" % run.id}}]
    for r, why in ((run, "terminated"), (queued, "revoked")):
        wait_for(lambda: rds.get("celery-task-meta-" + r.id), TIMEOUT, "%s stored" % why)
        meta = json.loads(rds.get("celery-task-meta-" + r.id))
        assert meta["status"] == "REVOKED", meta
        assert meta["result"]["exc_type"] == "TaskRevokedError", meta
        assert meta["result"]["exc_message"] == [why], meta
    assert w.proc.poll() is None
    # the ETA one is discarded when due; unknown commands answer like Celery
    rep = app.control.broadcast("no_such_command", reply=True, destination=[node],
                                timeout=scaled(5))
    assert rep == [{node: {"error": "KeyError('no_such_command')"}}]


def test_control_commands(app, worker_factory):
    w = worker_factory(concurrency=1)
    node = w.name
    extra = unique_queue("ctl-extra")
    assert control_json("rate_limit", node, "demo.add", "5/m") == \
        {"ok": "new rate limit set successfully"}
    assert "demo.add [rate_limit=5/m]" in inspect_json("registered", node)
    # the CLI sends the string "0", which Python finds truthy; the API's int 0 is not
    assert control_json("rate_limit", node, "demo.add", "0") == \
        {"ok": "new rate limit set successfully"}
    assert app.control.rate_limit("demo.add", 0, reply=True, destination=[node],
                                  timeout=scaled(5)) == \
        [{node: {"ok": "rate limit disabled successfully"}}]
    assert "demo.add [rate_limit=0]" in inspect_json("registered", node)  # str(0), as Celery
    assert control_json("rate_limit", node, "no.such.task", "5/m") == {"error": "unknown task"}
    assert control_json("time_limit", node, "demo.add", "10", "20") == \
        {"ok": "time limits set successfully"}
    assert control_json("time_limit", node, "no.such.task", "10", "20") == \
        {"error": "unknown task"}
    # A hard limit set at run time applies to the next task of that type. (Celery 5.2.6's
    # prefork pool started without limits accepts the command but never enforces it.)
    assert app.control.time_limit("demo.sleep", hard=1, reply=True, destination=[node],
                                  timeout=scaled(5)) == \
        [{node: {"ok": "time limits set successfully"}}]
    if IMPL != "python":
        r = app.send_task("demo.sleep", args=[30], queue=w.queue)
        with pytest.raises(Exception) as ei:
            r.get(timeout=TIMEOUT)
        assert type(ei.value).__name__ == "TimeLimitExceeded", repr(ei.value)

    assert control_json("add_consumer", node, extra) == {"ok": "add consumer %s" % extra}
    wait_for(lambda: extra in [q["name"] for q in inspect_json("active_queues", node)], 10,
             "the added queue listed")
    assert app.send_task("demo.add", args=[20, 22], queue=extra).get(timeout=TIMEOUT) == 42
    assert control_json("cancel_consumer", node, extra) == \
        {"ok": "no longer consuming from %s" % extra}
    assert [q["name"] for q in inspect_json("active_queues", node)] == [w.queue]
    r = app.send_task("demo.add", args=[1, 1], queue=extra)
    time.sleep(scaled(1))
    assert r.state == "PENDING"  # nobody consumes the cancelled queue any more
    assert app.send_task("demo.add", args=[1, 2], queue=w.queue).get(timeout=TIMEOUT) == 3

    # shutdown: no reply (the CLI says so, exit 69), warm shutdown, exit 0
    rc, out, err = celery_cli("control", "shutdown", "-d", node, "-t", "1")
    assert rc == 69 and "No nodes replied" in (out + err), (rc, out, err)
    assert w.wait_exit(20) == 0, w.log()[-3000:]
    assert "Got shutdown from remote" in w.log()


def test_mixed_fleet_replies_match_python(app, worker_factory):
    if IMPL == "python":
        pytest.skip("compares a celeryc worker with a Python one")
    c = worker_factory(concurrency=1)
    py = worker_factory(concurrency=1, impl="python")
    nodes = [c.name, py.name]
    rs = {w.name: app.send_task("demo.sleep", args=[4], queue=w.queue) for w in (c, py)}
    for w in (c, py):
        wait_for(lambda: rs[w.name].id in active_ids(app, w.name), 20, "%s running" % w.name)
    insp = app.control.inspect(destination=nodes, timeout=scaled(5))
    assert insp.ping() == {n: {"ok": "pong"} for n in nodes}
    act = insp.active()
    assert set(act) == set(nodes)
    assert list(act[c.name][0]) == list(act[py.name][0])
    assert list(act[c.name][0]["delivery_info"]) == list(act[py.name][0]["delivery_info"])
    aq = insp.active_queues()
    assert list(aq[c.name][0]) == list(aq[py.name][0])
    assert list(aq[c.name][0]["exchange"]) == list(aq[py.name][0]["exchange"])
    st = insp.stats()
    missing = set(st[py.name]) - set(st[c.name])
    assert not missing, missing
    assert set(st[py.name]["pool"]) >= {"max-concurrency", "processes", "timeouts"}
    assert set(st[c.name]["broker"]) == set(st[py.name]["broker"])
    # a broadcast revoke reaches both
    tid = str(uuid.uuid4())
    rep = app.control.revoke(tid, reply=True, destination=nodes, timeout=scaled(5))
    assert sorted(rep, key=lambda d: list(d)[0]) == sorted(
        [{n: {"ok": "tasks %s flagged as revoked" % tid}} for n in nodes],
        key=lambda d: list(d)[0])
    rv = insp.revoked()
    assert tid in rv[c.name] and tid in rv[py.name]


def test_revoked_survives_restart(app, worker_factory, rds, tmp_path):
    if IMPL == "python":
        pytest.skip("celeryc's state file")
    db = str(tmp_path / "state.db")
    q = unique_queue("revdb")
    w = worker_factory(queue=q, extra=["-S", db])
    tid = str(uuid.uuid4())
    app.control.revoke(tid, destination=[w.name])  # a cast, as app.control.revoke does
    wait_for(lambda: tid in inspect_json("revoked", w.name), 10, "revoked listed")
    assert w.stop() == 0
    w2 = worker_factory(queue=q, extra=["-S", db], name=w.name)
    assert tid in inspect_json("revoked", w2.name)
    r = app.send_task("demo.add", args=[1, 2], queue=q, task_id=tid)
    wait_for(lambda: rds.get("celery-task-meta-" + tid), TIMEOUT, "revoked result stored")
    meta = json.loads(rds.get("celery-task-meta-" + tid))
    assert meta["status"] == "REVOKED" and meta["result"]["exc_message"] == ["revoked"], meta
    assert r.state == "REVOKED"
    w2.wait_log(r"Discarding revoked task: demo\.add\[%s\]" % tid, 10)


def test_revoke_while_down_applies_when_back(app, worker_factory, rds):
    """Shared revokes (celeryc): a revoke another worker received while this one was down is
    in Redis (celeryc-revoked, scored by revoke time, 3 h TTL) and applies when it comes back."""
    if IMPL == "python":
        pytest.skip("celeryc's shared revokes")
    a = worker_factory()
    b = worker_factory()
    assert b.stop() == 0
    tid = str(uuid.uuid4())
    assert app.control.revoke(tid, reply=True, destination=[a.name], timeout=scaled(5)) == \
        [{a.name: {"ok": "tasks %s flagged as revoked" % tid}}]
    score = rds.zscore("celeryc-revoked", tid)
    assert score is not None and abs(score / 1000 - time.time()) < 60
    b2 = worker_factory(queue=b.queue, name=b.name)
    assert tid in inspect_json("revoked", b2.name)
    app.send_task("demo.add", args=[1, 2], queue=b2.queue, task_id=tid)
    wait_for(lambda: rds.get("celery-task-meta-" + tid), TIMEOUT, "revoked result stored")
    assert json.loads(rds.get("celery-task-meta-" + tid))["status"] == "REVOKED"
    # and one revoked after a worker started reaches it on receipt (sync at most 1 s old)
    tid2 = str(uuid.uuid4())
    rds.zadd("celeryc-revoked", {tid2: time.time() * 1000})  # as another worker would
    time.sleep(1.2)
    app.send_task("demo.add", args=[1, 2], queue=b2.queue, task_id=tid2)
    wait_for(lambda: rds.get("celery-task-meta-" + tid2), TIMEOUT, "second revoke stored")
    assert json.loads(rds.get("celery-task-meta-" + tid2))["status"] == "REVOKED"


def test_pidbox_and_added_queue_survive_reconnect(app, worker_factory):
    """After a connection loss the worker redeclares and reconsumes its pidbox queue and
    the queues add_consumer added."""
    if IMPL == "python":
        pytest.skip("celeryc reconnect")
    d = os.environ.get("CELERYC_TEST_DATA_DIR")
    if not d:
        pytest.skip("needs the RabbitMQ node started by scripts/services.sh")
    w = worker_factory(concurrency=1)
    extra = unique_queue("ctl-rc")
    assert control_json("add_consumer", w.name, extra) == {"ok": "add consumer %s" % extra}
    subprocess.run(["bash", str(HERE.parents[1] / "scripts" / "services.sh"), "ctl", d,
                    "close_all_connections", "integration test: pidbox reconnect"],
                   check=True, timeout=scaled(90), stdout=subprocess.DEVNULL)
    w.wait_log(r"Connected to amqp://", 30)

    def ping():
        try:  # the client's pooled connections were closed too: the first use may fail
            return app.control.ping(destination=[w.name], timeout=scaled(1))
        except Exception:
            return None
    wait_for(ping, 20, "ping answered after the reconnect", interval=0.5)
    assert [q["name"] for q in inspect_json("active_queues", w.name)] == [w.queue, extra]
    assert app.send_task("demo.add", args=[2, 3], queue=extra).get(timeout=TIMEOUT) == 5


def test_issue_14_registered_shows_time_limits_set_by_control(app, worker_factory):
    """`inspect registered time_limit soft_time_limit` shows what `control time_limit` set,
    as Celery does (task.soft_time_limit / task.time_limit, str() of what was sent): floats
    from the CLI, ints from the API, None (left out) for a limit not given."""
    w = worker_factory(concurrency=1)
    node = w.name

    def line(task, *items):
        return [x for x in inspect_json("registered", node, *items) if x.split(" ")[0] == task]

    assert line("demo.sleep", "time_limit", "soft_time_limit") == ["demo.sleep"]
    assert control_json("time_limit", node, "demo.sleep", "5", "10") == \
        {"ok": "time limits set successfully"}
    assert line("demo.sleep", "time_limit", "soft_time_limit") == \
        ["demo.sleep [time_limit=10.0 soft_time_limit=5.0]"]
    # the order asked for; an attribute a task does not have is left out
    assert line("demo.sleep", "soft_time_limit", "no_such_attr", "time_limit") == \
        ["demo.sleep [soft_time_limit=5.0 time_limit=10.0]"]
    assert app.control.time_limit("demo.sleep", soft=3, reply=True, destination=[node],
                                  timeout=scaled(5)) == \
        [{node: {"ok": "time limits set successfully"}}]
    assert line("demo.sleep", "time_limit", "soft_time_limit") == \
        ["demo.sleep [soft_time_limit=3]"]
    assert app.control.time_limit("demo.sleep", soft=0, hard=1e300, reply=True,
                                  destination=[node], timeout=scaled(5)) == \
        [{node: {"ok": "time limits set successfully"}}]
    assert line("demo.sleep", "time_limit", "soft_time_limit") == \
        ["demo.sleep [time_limit=1e+300 soft_time_limit=0]"]
    # the default items are untouched by time limits; other tasks too
    assert line("demo.sleep") == ["demo.sleep"]
    assert line("demo.add", "time_limit") == ["demo.add"]
    # builtins: Python's truthiness (the CLI cannot send it; the API can)
    def registered(**arguments):
        return app.control.broadcast("registered", arguments=arguments, reply=True,
                                     destination=[node], timeout=scaled(3))[0][node]
    assert any(x.startswith("celery.") for x in registered(builtins=1))
    assert any(x.startswith("celery.") for x in registered(builtins="yes"))
    for falsy in (0, "", None, []):
        reg = registered(builtins=falsy)
        assert not any(x.startswith("celery.") for x in reg), (falsy, reg)
    assert reg == sorted(reg)
