"""Flower compatibility (issue #4): the calls Flower makes and the fields its pages read.

Flower itself is not installed here (not packaged in Debian 12, no PyPI access), so this
file replays what Flower 2.x does, as read from its source (mher/flower: inspector.py,
events.py, api/control.py, api/tasks.py, api/workers.py, views/workers.py, views/tasks.py,
templates/worker.html, workers.html, task.html; Flower 1.x makes the same calls), through the
same Celery 5.2 Python API, and asserts every field those pages read, with the type their
templates and JSON handlers need:

- Inspector (worker page, /api/workers): `app.control.inspect(timeout=1.0,
  destination=[node])` then stats, active_queues, registered, scheduled, active, reserved,
  revoked, conf, called concurrently (Flower runs each in its executor), each result kept
  only if it is not None and has no 'error' key.
- Events (dashboard, task list and task page, Prometheus metrics): an EventReceiver on
  `app.connection()` with handlers {"*": ...} and capture(wakeup=True) (a 'heartbeat'
  broadcast), feeding a celery State subclass that counts events per worker and type; the
  enable_events timer (`app.control.enable_events()`, no reply) turns task events on for
  workers started without -E.
- Control API: the exact broadcast / control calls of api/control.py, and the reply shape its
  handlers test (`'ok' in response[0][worker]`, else `response[0][worker].get('error')`).

CELERYC_IT_IMPL=python runs the same assertions against the Python worker, which shows they
encode what Flower really gets from Celery.
"""
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery.events.state import State

from conftest import HERE, IMPL, PY, TIMEOUT, Monitor, scaled, unique_queue, wait_for

# Flower's --inspect_timeout default is 1000 ms; the Inspector passes it in seconds.
FLOWER_INSPECT_TIMEOUT = 1.0
# The methods of flower/inspector.py, in its order.
FLOWER_INSPECT_METHODS = ("stats", "active_queues", "registered", "scheduled", "active",
                          "reserved", "revoked", "conf")
# The columns of the task list (Flower's default --tasks_columns) and the time fields the
# task page formats with humanize(type='time') (float(value) must work).
TASK_COLUMNS = ("name", "uuid", "state", "args", "kwargs", "result", "received", "started",
                "runtime", "worker")
TASK_TIME_FIELDS = ("sent", "received", "started", "succeeded", "retried", "timestamp",
                    "failed")
WORKER_FIELDS = ("hostname", "pid", "freq", "heartbeats", "clock", "active", "processed",
                 "loadavg", "sw_ident", "sw_ver", "sw_sys")


def start_worker(worker_factory, queue, events=True, concurrency=1, heartbeat=None):
    """A worker as an operator runs it under Flower: celeryc with -E, or the Python reference
    with heartbeats on (the fixture's default turns them off) and the same options."""
    hb = ["--heartbeat-interval", str(heartbeat)] if heartbeat else []
    ev = ["-E"] if events else []
    if IMPL == "c":
        return worker_factory(queue=queue, concurrency=concurrency, extra=ev + hb)
    name = "py-%s@localhost" % queue
    argv = [PY, "-m", "celery", "-A", "pyworker_app", "worker", "--pool", "prefork", "-c",
            str(concurrency), "--without-gossip", "--without-mingle", "-Q", queue, "-n", name,
            "-l", "info"] + ev + hb
    return worker_factory(queue=queue, argv=argv, name=name, impl="python",
                          env={"PYTHONPATH": str(HERE)})


def flower_inspect(app, workername=None):
    """flower/inspector.py: one inspect per method, run concurrently; returns the
    `workers` cache Flower builds ({node: {method: response, 'timestamp': t}})."""
    workers = {}
    destination = [workername] if workername else None

    def one(method):
        inspect = app.control.inspect(timeout=scaled(FLOWER_INSPECT_TIMEOUT),
                                      destination=destination)
        return method, getattr(inspect, method)()

    with ThreadPoolExecutor(len(FLOWER_INSPECT_METHODS)) as ex:
        results = list(ex.map(one, FLOWER_INSPECT_METHODS))
    for method, result in results:
        assert result is not None and "error" not in result, (method, result)  # Flower warns
        for worker, response in result.items():
            if response is not None:
                workers.setdefault(worker, {})[method] = response
                workers[worker]["timestamp"] = time.time()
    return workers


def flower_reply(response, workername):
    """What api/control.py's handlers do with a reply=True answer: ('ok', message) or
    ('error', reason)."""
    assert response, "no reply (Flower answers 403 'Unknown reason')"
    r = response[0][workername]
    assert isinstance(r, dict), r
    if "ok" in r:
        return "ok", r["ok"]
    assert "error" in r, r  # error_reason() would say 'Unknown reason'
    assert isinstance(r["error"], str), r
    return "error", r["error"]


def is_time(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and \
        abs(float(v) - time.time()) < 3600


class FlowerEvents(Monitor):
    """flower/events.py: Events thread + EventsState (a State counting events per worker and
    type, then reading what its Prometheus metrics read)."""

    connect = "connection"

    def __init__(self, app, wakeup=True):
        super().__init__(app, wakeup=wakeup)
        self.state = State()
        self.counter = {}

    def _on_event(self, event):
        with self.lock:
            try:
                self._state_event(event)
            except Exception as e:  # noqa: BLE001 (Flower's ioloop would log and go on)
                self.error = self.error or e

    def _state_event(self, event):
        self.events.append(dict(event))
        self.state.event(event)
        worker_name, event_type = event["hostname"], event["type"]
        c = self.counter.setdefault(worker_name, {})
        c[event_type] = c.get(event_type, 0) + 1
        if event_type.startswith("task-"):
            # The metrics path: the task must be in the state after its event, name and
            # runtime read from the event, times subtracted.
            task = self.state.tasks.get(event["uuid"])
            assert task is not None, event
            name = event.get("name", "") or task.name or ""
            assert isinstance(name, str)
            runtime = event.get("runtime", 0)
            assert runtime is None or isinstance(runtime, (int, float)), event
            if event_type == "task-started" and not task.eta and task.started and task.received:
                assert task.started - task.received > -60
        if event_type == "worker-heartbeat":
            active = event.get("active")
            assert active is None or isinstance(active, int), event

    def task_state(self, uuid):
        t = self.state.tasks.get(uuid)
        return t.state if t is not None else None

    def workers_page(self):
        """views/workers.py WorkersView (the dashboard, and its ?json=1 form)."""
        workers = {}
        for name, values in self.counter.items():
            if name not in self.state.workers:
                continue
            worker = self.state.workers[name]
            info = dict(values)
            info.update({k: getattr(worker, k) for k in worker._fields})
            info.update(status=worker.alive)
            workers[name] = info
        return workers


def check_dashboard_worker(info, node, full=False):
    """workers.html / ?json=1: the Worker._fields Flower copies, as their types must be."""
    json.dumps(info)
    assert info["hostname"] == node
    assert isinstance(info["pid"], int)
    assert isinstance(info["freq"], (int, float)) and info["freq"] > 0
    assert all(isinstance(x, float) for x in info["heartbeats"])
    assert isinstance(info["clock"], int)
    for k in ("sw_ident", "sw_ver", "sw_sys"):
        assert isinstance(info[k], str) and info[k], k
    assert isinstance(info.get("active", 0) or 0, int)
    la = info["loadavg"]  # humanize(): a list of numbers is joined with ', '
    assert (la is None and not full) or \
        (len(la) == 3 and all(isinstance(x, (int, float)) for x in la)), la
    assert (info["processed"] is None and not full) or isinstance(info["processed"], int)


# ---- The worker page and /api/workers (the Inspector) ----------------------------------------

def test_flower_worker_page(app, worker_factory):
    q = unique_queue("fl-w")
    w = start_worker(worker_factory, q, events=True, concurrency=1)
    node = w.name
    run = app.send_task("demo.sleep", args=[30], queue=q)
    queued = app.send_task("demo.add", args=[1, 2], kwargs={}, queue=q)
    later = app.send_task("demo.add", args=[3, 4], queue=q, countdown=300)
    gone = app.send_task("demo.add", args=[5, 6], queue=q, countdown=300)

    def running():
        r = app.control.inspect(destination=[node], timeout=scaled(2)).active() or {}
        return [t["id"] for t in r.get(node, [])] == [run.id]
    wait_for(running, 20, "the sleep task running")
    # Task page 'Revoke' button: api/control.py TaskRevoke, no reply asked.
    app.control.revoke(gone.id, terminate=False, signal="SIGTERM")

    workers = flower_inspect(app, node)
    assert set(workers) == {node}, workers
    worker = workers[node]
    assert set(FLOWER_INSPECT_METHODS) <= set(worker), worker.keys()
    json.dumps(workers)  # /api/workers writes the cache as JSON
    # views/workers.py WorkerView: 404 unless 'stats' is there; templates/worker.html:
    stats = worker["stats"]
    assert isinstance(stats["pool"], dict)                      # Pool tab: pool.items()
    assert isinstance(stats["pool"]["max-concurrency"], int) and \
        stats["pool"]["max-concurrency"] == 1
    assert [type(p) for p in stats["pool"]["processes"]] == [int]
    assert stats.get("pid") == w.pid
    assert isinstance(stats.get("prefetch_count"), int)
    assert stats.get("autoscaler") is None or isinstance(stats["autoscaler"], dict)
    broker = (stats.get("consumer", None) or stats)["broker"]    # Broker tab
    assert isinstance(broker, dict) and broker["transport"] == "amqp"
    assert broker["connect_timeout"] == 4 and type(broker["connect_timeout"]) is int
    assert broker["hostname"] == "127.0.0.1" and broker["userid"] == "guest"
    assert stats["total"] == {"demo.sleep": 1}                  # Tasks tab: Processed
    assert isinstance(stats.get("rusage"), dict)                # System tab
    assert all(isinstance(k, str) for k in stats["rusage"])

    aq = worker["active_queues"]                                # Queues tab
    assert [x["name"] for x in aq] == [q]
    for k in ("name", "exclusive", "durable", "routing_key", "no_ack", "alias",
              "queue_arguments", "binding_arguments", "auto_delete"):
        assert k in aq[0], k
    assert aq[0]["routing_key"] == q and aq[0]["durable"] is True

    active = worker["active"]                                   # Tasks tab: Active
    assert [t["id"] for t in active] == [run.id]
    a = active[0]
    assert a["name"] == "demo.sleep" and a["acknowledged"] is True
    assert isinstance(a["worker_pid"], int) and a["worker_pid"] in stats["pool"]["processes"]
    assert a.get("args", "N/A") == [30] and a.get("kwargs", "N/A") == {}

    sched = worker["scheduled"]                                 # Tasks tab: Scheduled
    assert {s["request"]["id"] for s in sched} >= {later.id}
    for s in sched:
        req = s["request"]
        assert req["name"] == "demo.add" and isinstance(req["args"], list) and \
            isinstance(req["kwargs"], dict)

    res = worker["reserved"]                                    # Tasks tab: Reserved
    assert [t["id"] for t in res] == [queued.id]
    assert res[0]["name"] == "demo.add" and res[0]["args"] == [1, 2] and \
        res[0]["kwargs"] == {}

    assert isinstance(worker["revoked"], list)                  # Tasks tab: Revoked
    assert gone.id in worker["revoked"]
    assert all(isinstance(x, str) for x in worker["revoked"])   # reverse_url('task', id)

    reg = worker["registered"]                                  # Limits tab
    assert isinstance(reg, list) and "demo.add" in reg and "demo.sleep" in reg
    assert all(isinstance(x, str) for x in reg)

    conf = worker["conf"]                                       # Config tab
    assert isinstance(conf, dict) and conf
    assert all(isinstance(k, str) for k in conf)                # name.lower() per row
    sorted(conf.items(), key=lambda kv: kv[0])

    # BaseHandler.get_active_queue_names (queue lengths, broker page)
    assert sorted({x["name"] for x in worker["active_queues"]}) == [q]

    # Task page 'Terminate' button on the running task (tidy up for the fixture's stop).
    app.control.revoke(run.id, terminate=True, signal="SIGTERM")
    wait_for(lambda: not running(), 20, "the sleep task terminated")


# ---- Dashboard, task list, task page (the Events thread) ------------------------------------

def test_flower_events_state(app, worker_factory):
    q = unique_queue("fl-ev")
    # Started without -E and with a long heartbeat interval, before Flower: Flower learns of
    # it from the heartbeat its wakeup broadcast asks for, and turns task events on with its
    # enable_events timer.
    w = start_worker(worker_factory, q, events=False, concurrency=2, heartbeat=30)
    node = w.name
    time.sleep(scaled(0.5))
    with FlowerEvents(app, wakeup=True) as fl:
        fl.wait(lambda: fl.of(node, "worker-heartbeat"), 15,
                "a heartbeat answering the wakeup (the interval is 30 s)")
        app.control.enable_events()  # Events.on_enable_events, every 5 s in Flower
        # pidbox requests are handled in order: once ping answers, events are on.
        assert app.control.ping(destination=[node], timeout=scaled(5)) == \
            [{node: {"ok": "pong"}}]

        ok = app.send_task("demo.add", args=[2, 3], kwargs={}, queue=q)
        bad = app.send_task("demo.fail", args=["boom"], queue=q)
        run = app.send_task("demo.sleep", args=[30], queue=q)
        assert ok.get(timeout=TIMEOUT) == 5
        with pytest.raises(ValueError):
            bad.get(timeout=TIMEOUT)
        fl.wait(lambda: fl.task_state(ok.id) == "SUCCESS", 15, "task-succeeded")
        fl.wait(lambda: fl.task_state(bad.id) == "FAILURE", 15, "task-failed")
        # task.html shows 'Terminate' only for STARTED tasks
        fl.wait(lambda: fl.task_state(run.id) == "STARTED", 15, "task-started")
        app.control.revoke(run.id, terminate=True, signal="SIGTERM")  # TaskRevoke handler
        fl.wait(lambda: fl.of(node, "task-revoked"), 15, "task-revoked")

        with fl.lock:
            # Dashboard (workers.html and /workers?json=1)
            page = fl.workers_page()
            assert node in page, page.keys()
            info = page[node]
            json.dumps(list(page.values()))
            assert info["status"] is True and info["pid"] == w.pid
            assert info.get("task-received", 0) == 3
            assert info.get("task-succeeded", 0) == 1 and info.get("task-failed", 0) == 1
            assert info.get("task-retried", 0) == 0
            # Only the wakeup heartbeat has come so far: Celery's carries freq 5 and the
            # software fields, no load average, active or processed counts.
            hb = [e for e in fl.of(node, "worker-heartbeat")]
            assert hb[0]["freq"] == 5 and type(hb[0]["freq"]) is int, hb[0]
            check_dashboard_worker(info, node)
            # /api/workers?status=1
            assert {n: wk.alive for n, wk in fl.state.workers.items()}[node] is True

            # Task list (/api/tasks, the datatable) and task page (task.html, /api/task/info)
            listed = {uuid: t for uuid, t in fl.state.tasks_by_timestamp()}
            for r in (ok, bad, run):
                assert r.id in listed, r.id
            for r in (ok, bad, run):
                t = fl.state.tasks[r.id]
                d = t.as_dict()
                assert set(TASK_COLUMNS) - {"worker"} <= set(d) and "worker" in d
                assert t.worker is not None and t.worker.hostname == node
                d.pop("worker")
                json.dumps(d)  # tornado's write() of the task dict
                assert t.uuid == r.id and isinstance(t.name, str) and t.name.startswith("demo.")
                assert isinstance(t.args, str) and isinstance(t.kwargs, str)
                for k in TASK_TIME_FIELDS:
                    v = getattr(t, k, None)
                    assert v is None or is_time(v), (k, v)
                assert is_time(t.received) and is_time(t.started) and is_time(t.timestamp)
                for k in ("received", "started", "runtime"):  # datatable sort: float(v)
                    v = getattr(t, k)
                    assert v is None or isinstance(float(v), float)
            t = fl.state.tasks[ok.id]
            assert t.name == "demo.add" and t.args == "[2, 3]" and t.kwargs == "{}"
            assert t.state == "SUCCESS" and t.result == "5"
            assert isinstance(t.runtime, float) and t.runtime >= 0 and is_time(t.succeeded)
            f = fl.state.tasks[bad.id]
            assert f.state == "FAILURE" and is_time(f.failed)
            assert f.exception == "ValueError('boom')", f.exception
            # task.html shows it in <pre>; its exact text is the traceback work's concern.
            assert isinstance(f.traceback, str) and f.traceback
            rv = [e for e in fl.of(node, "task-revoked") if e["uuid"] == run.id]
            assert rv and rv[0]["terminated"] is True and rv[0]["signum"] == 15
            assert fl.task_state(run.id) == "REVOKED" and is_time(fl.state.tasks[run.id].revoked)
            assert fl.state.task_types() == sorted({"demo.add", "demo.fail", "demo.sleep"})

        assert w.stop() == 0
        fl.wait(lambda: fl.of(node, "worker-offline"), 15, "worker-offline")
        with fl.lock:
            info = fl.workers_page()[node]
            assert info["status"] is False
            # worker-offline carries the full heartbeat payload (Celery's Heart._send).
            check_dashboard_worker(info, node, full=True)
            assert info["processed"] == 3 and info["active"] == 0


# ---- The control API (api/control.py) --------------------------------------------------------

def test_flower_control_api(app, worker_factory):
    q = unique_queue("fl-ctl")
    w = start_worker(worker_factory, q, events=True, concurrency=1)
    node = w.name
    extra = unique_queue("fl-ctl-extra")
    t = scaled(1.0)  # Flower passes no timeout: Celery's default, 1.0 s

    def bc(command, **arguments):
        return app.control.broadcast(command, arguments=arguments, destination=[node],
                                     reply=True, timeout=t)

    # WorkerPoolRestart: Celery refuses unless worker_pool_restarts (off by default).
    assert flower_reply(bc("pool_restart", reload=False), node) == \
        ("error", "ValueError('Pool restarts not enabled')")
    # WorkerPoolGrow / WorkerPoolShrink: Flower shows 'ok' or the error reason (403); the
    # Pool tab then lists one more / one fewer process.
    for cmd, word, size in (("pool_grow", "grow", 2), ("pool_shrink", "shrink", 1)):
        assert flower_reply(getattr(app.control, cmd)(n=1, reply=True, destination=[node],
                                                      timeout=t), node) == \
            ("ok", "pool will %s" % word)
        wait_for(lambda: len(flower_inspect(app, node)[node]["stats"]["pool"]["processes"])
                 == size, 10, "%d processes on the Pool tab" % size)
    # WorkerPoolAutoscale: no autoscaler configured.
    assert flower_reply(bc("autoscale", min=1, max=3), node) == \
        ("error", "ValueError('Autoscale not enabled')")

    # WorkerQueueAddConsumer / CancelConsumer: the 'ok' text is Flower's message.
    assert flower_reply(bc("add_consumer", queue=extra), node) == \
        ("ok", "add consumer %s" % extra)
    wait_for(lambda: extra in [x["name"] for x in
                               flower_inspect(app, node)[node]["active_queues"]], 10,
             "the added queue on the Queues tab")
    assert flower_reply(bc("cancel_consumer", queue=extra), node) == \
        ("ok", "no longer consuming from %s" % extra)

    # TaskTimout: soft/hard are floats or None (one button sets one of them).
    for soft, hard in ((30.0, None), (None, 100.0), (30.0, 100.0)):
        assert flower_reply(app.control.time_limit("demo.add", reply=True, hard=hard,
                                                   soft=soft, destination=[node], timeout=t),
                            node) == ("ok", "time limits set successfully"), (soft, hard)
    assert flower_reply(app.control.time_limit("no.such.task", reply=True, hard=1.0,
                                               soft=None, destination=[node], timeout=t),
                        node) == ("error", "unknown task")
    # TaskRateLimit: the rate comes from a form field, so always a string.
    for rl in ("200", "10/m"):
        assert flower_reply(app.control.rate_limit("demo.add", rl, reply=True,
                                                   destination=[node], timeout=t),
                            node) == ("ok", "new rate limit set successfully"), rl
    kind, msg = flower_reply(app.control.rate_limit("demo.add", "fast", reply=True,
                                                    destination=[node], timeout=t), node)
    assert kind == "error" and msg.startswith("Invalid rate limit string: "), msg
    assert flower_reply(app.control.rate_limit("no.such.task", "1/s", reply=True,
                                               destination=[node], timeout=t),
                        node) == ("error", "unknown task")
    assert "demo.add [rate_limit=10/m]" in flower_inspect(app, node)[node]["registered"]
    assert app.send_task("demo.add", args=[20, 22], queue=q).get(timeout=TIMEOUT) == 42

    # WorkerShutDown: a broadcast without reply; the worker stops warmly.
    app.control.broadcast("shutdown", destination=[node])
    assert w.wait_exit(20) == 0, w.log()[-3000:]


# ---- Revoke with terminate (api/control.py TaskRevoke) -----------------------------------------

def _wait_active(app, node, tid):
    def active():
        got = app.control.inspect(timeout=scaled(1.0), destination=[node]).active() or {}
        return any(t["id"] == tid for t in got.get(node, []))
    wait_for(active, 20, "task %s active" % tid)


# Flower's TaskRevoke: terminate = self.get_argument('terminate', default=False, type=bool),
# which goes through strtobool: the int 1 (its Terminate button too); then
# app.control.revoke(taskid, terminate=terminate, signal=signal). Other truthy spellings a
# client may send are true as well (Python's `if terminate:`).
@pytest.mark.parametrize("terminate", [1, True, "yes", "false", [1], {"a": 1}, 2.5])
def test_issue_14_flower_revoke_terminate_one(app, worker_factory, terminate):
    w = start_worker(worker_factory, unique_queue("fl-term"), events=True, concurrency=1)
    r = app.send_task("demo.sleep", args=[60], queue=w.queue)
    _wait_active(app, w.name, r.id)
    t0 = time.monotonic()
    app.control.revoke(r.id, terminate=terminate, signal="SIGTERM")
    wait_for(lambda: r.state == "REVOKED", 20, "the running task terminated")
    assert time.monotonic() - t0 < scaled(20)
    assert app.send_task("demo.add", args=[1, 2], queue=w.queue).get(timeout=TIMEOUT) == 3


@pytest.mark.parametrize("terminate", [0, False, "", None, [], {}, 0.0])
def test_issue_14_flower_revoke_falsy_terminate_lets_it_finish(app, worker_factory, terminate):
    # Not terminated: the running task finishes and keeps its result (the id is revoked for
    # any later delivery), as in Celery.
    w = start_worker(worker_factory, unique_queue("fl-noterm"), events=True, concurrency=1)
    r = app.send_task("demo.sleep", args=[2], queue=w.queue)
    _wait_active(app, w.name, r.id)
    app.control.revoke(r.id, terminate=terminate, signal="SIGTERM")
    assert r.get(timeout=TIMEOUT) == 2
    assert r.state == "SUCCESS"


# ---- One Flower over a mixed fleet -----------------------------------------------------------

def test_flower_mixed_fleet(app, worker_factory):
    """Flower's start-up refresh (update_workers() without a name: no destination, the
    whole 1 s timeout) and its dashboard, over a celeryc worker beside a Python one."""
    if IMPL == "python":
        pytest.skip("compares a celeryc worker with a Python one")
    qc, qp = unique_queue("fl-mix-c"), unique_queue("fl-mix-py")
    with FlowerEvents(app, wakeup=True) as fl:
        c = worker_factory(queue=qc, concurrency=1, extra=["-E"])
        py = worker_factory(queue=qp, concurrency=1, impl="python")  # heartbeats off
        nodes = (c.name, py.name)
        assert app.send_task("demo.add", args=[1, 2], queue=qc).get(timeout=TIMEOUT) == 3
        assert app.send_task("demo.add", args=[1, 2], queue=qp).get(timeout=TIMEOUT) == 3

        workers = flower_inspect(app)
        for n in nodes:
            assert n in workers and set(FLOWER_INSPECT_METHODS) <= set(workers[n]), n
        json.dumps(workers)
        wc, wp = workers[c.name], workers[py.name]
        # What the worker page iterates: the same keys from both, with the same types.
        for part in ("pool", "broker", "rusage"):
            assert set(wc["stats"][part]) >= set(wp["stats"][part]) - {"writes"}, part
        assert set(wc["stats"]) >= set(wp["stats"])
        assert wc["stats"]["total"] == wp["stats"]["total"] == {"demo.add": 1}
        assert list(wc["active_queues"][0]) == list(wp["active_queues"][0])
        assert wc["active"] == wp["active"] == [] and wc["reserved"] == wp["reserved"] == []
        assert type(wc["conf"]) is type(wp["conf"]) is dict
        # Flower's queue list (BaseHandler.get_active_queue_names) spans both.
        names = {x["name"] for w in workers.values() for x in w.get("active_queues", [])}
        assert {qc, qp} <= names

        fl.wait(lambda: any(
            e["type"] == "task-succeeded" for e in fl.events if e["hostname"] == c.name),
            15, "celeryc task-succeeded")
        with fl.lock:
            page = fl.workers_page()
            assert page[c.name]["status"] is True
            check_dashboard_worker(page[c.name], c.name, full=True)
            assert page[c.name].get("task-succeeded") == 1
