"""Events (celeryev, issue #4): a Python EventReceiver feeding celery.events.state.State,
`celery events --dump`, and a mixed fleet, against celeryc workers (and, with
CELERYC_IT_IMPL=python, the Python worker started with heartbeats on, to check the tests)."""
import os
import signal
import subprocess
import time

import pytest

from conftest import HERE, IMPL, PY, ROOT, TIMEOUT, Monitor, c_only, scaled, unique_queue, wait_for


def start_worker(worker_factory, queue, events, impl=None, name=None):
    impl = impl or IMPL
    if impl == "c":
        return worker_factory(queue=queue, concurrency=2, name=name, impl="c",
                              extra=["-E"] if events else [])
    # The Python reference, with heartbeats (the fixture's default turns them off).
    name = name or "py-%s@localhost" % queue
    argv = [PY, "-m", "celery", "-A", "pyworker_app", "worker", "--pool", "prefork", "-c",
            "2", "--without-gossip", "--without-mingle", "-Q", queue, "-n", name, "-l", "info"]
    if events:
        argv.append("-E")
    return worker_factory(queue=queue, argv=argv, name=name, impl="python",
                          env={"PYTHONPATH": str(HERE)})


def test_worker_and_task_lifecycle(app, worker_factory):
    q = unique_queue("ev")
    with Monitor(app) as mon:
        w = start_worker(worker_factory, q, events=True)
        mon.wait(lambda: mon.of(w.name, "worker-online"), scaled(20), "worker-online")
        mon.wait(lambda: len(mon.of(w.name, "worker-heartbeat")) >= 2, scaled(20),
                 "two heartbeats")
        with mon.lock:
            assert mon.state.workers[w.name].alive
            hb = mon.of(w.name, "worker-heartbeat")[-1]
        for k in ("hostname", "utcoffset", "pid", "clock", "freq", "active", "processed",
                  "loadavg", "sw_ident", "sw_ver", "sw_sys", "timestamp", "type"):
            assert k in hb, (k, hb)
        assert hb["freq"] == 2.0 and hb["sw_sys"] == "Linux" and len(hb["loadavg"]) == 3

        ok = app.send_task("demo.add", args=[2, 3], queue=q)
        bad = app.send_task("demo.fail", args=["boom"], queue=q)
        assert ok.get(timeout=TIMEOUT) == 5
        with pytest.raises(ValueError):
            bad.get(timeout=TIMEOUT)
        mon.wait(lambda: ok.id in mon.state.tasks and mon.state.tasks[ok.id].state == "SUCCESS",
                 scaled(15), "task-succeeded")
        mon.wait(lambda: bad.id in mon.state.tasks and
                 mon.state.tasks[bad.id].state == "FAILURE", scaled(15), "task-failed")
        with mon.lock:
            t = mon.state.tasks[ok.id]
            assert t.name == "demo.add" and t.args == "[2, 3]" and t.kwargs == "{}"
            assert t.result == "5" and t.runtime > 0 and t.received and t.started
            assert t.worker.hostname == w.name
            f = mon.state.tasks[bad.id]
            assert f.exception == "ValueError('boom')", f.exception
            # Python-shaped for both (celeryc: the frame is the C raise site).
            assert f.traceback.startswith("Traceback (most recent call last):\n  File ")
            assert f.traceback.endswith("\nValueError: boom\n"), f.traceback
            assert mon.task_events(ok.id)[:2] in (["task-received", "task-started"],
                                                  ["task-started", "task-received"])
            clocks = [e["clock"] for e in mon.of(w.name)]
            assert len(set(clocks)) == len(clocks)  # Lamport clock moves per event
            processed = mon.state.workers[w.name].processed
        mon.wait(lambda: mon.of(w.name, "worker-heartbeat")[-1]["processed"] >= 2,
                 scaled(10), "processed counted in heartbeats")

        assert w.stop() == 0
        mon.wait(lambda: mon.of(w.name, "worker-offline"), scaled(10), "worker-offline")
        with mon.lock:
            assert not mon.state.workers[w.name].alive
        del processed


def test_no_task_events_without_E(app, worker_factory):
    q = unique_queue("ev-off")
    with Monitor(app) as mon:
        w = start_worker(worker_factory, q, events=False)
        r = app.send_task("demo.add", args=[1, 1], queue=q)
        assert r.get(timeout=TIMEOUT) == 2
        # Worker events still flow (Celery's 'worker' group is on without -E).
        mon.wait(lambda: len(mon.of(w.name, "worker-heartbeat")) >= 1, scaled(15), "heartbeat")
        time.sleep(scaled(1))
        assert mon.task_events(r.id) == []
        assert not [e for e in mon.of(w.name) if e["type"].startswith("task-")]


def test_events_dump(app, worker_factory, tmp_path):
    q = unique_queue("ev-dump")
    out = tmp_path / "dump.txt"
    env = dict(os.environ, PYTHONPATH=str(HERE), PYTHONUNBUFFERED="1")
    with open(out, "w") as f:
        dump = subprocess.Popen([PY, "-m", "celery", "-A", "capp", "events", "--dump"],
                                stdout=f, stderr=subprocess.STDOUT, cwd=str(HERE), env=env,
                                start_new_session=True)
    try:
        wait_for(lambda: "starting capture" in out.read_text(), scaled(20), "dumper started")
        time.sleep(scaled(1))  # its queue is declared just after the banner
        w = start_worker(worker_factory, q, events=True)
        r = app.send_task("demo.add", args=[20, 22], queue=q)
        assert r.get(timeout=TIMEOUT) == 42
        wait_for(lambda: "task succeeded" in out.read_text() and
                 "heartbeat" in out.read_text(), scaled(20), "events in the dump")
        w.stop()
        wait_for(lambda: "shutdown" in out.read_text(), scaled(10), "worker-offline in the dump")
    finally:
        os.killpg(dump.pid, signal.SIGTERM)
        try:
            dump.wait(scaled(10))
        except subprocess.TimeoutExpired:
            os.killpg(dump.pid, signal.SIGKILL)
            dump.wait()
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if ln.startswith(w.name)]
    assert any(" started:" in ln for ln in lines), text[-3000:]
    assert any("task received: demo.add(%s) args=[20, 22]" % r.id in ln for ln in lines), text
    assert any("task succeeded:" in ln and "result=42" in ln and "runtime=" in ln
               for ln in lines), text[-3000:]


def test_mixed_fleet_one_receiver(app, worker_factory):
    q = unique_queue("ev-mix")
    with Monitor(app) as mon:
        c = start_worker(worker_factory, q, events=True, impl="c")
        py = start_worker(worker_factory, q, events=True, impl="python")
        rs = [app.send_task("demo.add", args=[i, i], queue=q) for i in range(20)]
        assert [r.get(timeout=TIMEOUT) for r in rs] == [2 * i for i in range(20)]
        try:
            mon.wait(lambda: all(r.id in mon.state.tasks and mon.state.tasks[r.id].state ==
                                 "SUCCESS" for r in rs), scaled(20), "all tasks succeeded")
        except AssertionError:
            with mon.lock:
                missing = [(r.id, mon.task_events(r.id)) for r in rs
                           if r.id not in mon.state.tasks or
                           mon.state.tasks[r.id].state != "SUCCESS"]
            raise AssertionError("tasks without SUCCESS: %s" % missing)
        mon.wait(lambda: mon.of(c.name, "worker-heartbeat") and
                 mon.of(py.name, "worker-heartbeat"), scaled(20), "both heartbeats")
        with mon.lock:
            assert mon.state.workers[c.name].alive and mon.state.workers[py.name].alive
            by = {mon.state.tasks[r.id].worker.hostname for r in rs}
            assert by <= {c.name, py.name}
            alive = {h for h, wk in mon.state.workers.items() if wk.alive}
            assert {c.name, py.name} <= alive


@c_only
def test_events_resume_after_reconnect(app, worker_factory):
    """The event channel is reopened after a connection loss, with a new worker-online as
    Celery's Heart step restarts with the consumer; task events flow again."""
    q = unique_queue("ev-rc")
    w = start_worker(worker_factory, q, events=True)
    d = os.environ.get("CELERYC_TEST_DATA_DIR")
    if not d:
        pytest.skip("needs the RabbitMQ node started by scripts/services.sh")
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "ctl", d,
                    "close_all_connections", "integration test: events reconnect"],
                   check=True, timeout=scaled(90), stdout=subprocess.DEVNULL)
    with Monitor(app) as mon:
        w.wait_log(r"Connected to amqp://", scaled(30))
        mon.wait(lambda: mon.of(w.name, "worker-online") or mon.of(w.name, "worker-heartbeat"),
                 scaled(20), "events after the reconnect")
        r = app.send_task("demo.add", args=[4, 4], queue=q)
        assert r.get(timeout=TIMEOUT) == 8
        mon.wait(lambda: r.id in mon.state.tasks and mon.state.tasks[r.id].state == "SUCCESS",
                 scaled(15), "task-succeeded after the reconnect")
        with mon.lock:
            assert mon.state.workers[w.name].alive
    assert w.proc.poll() is None


def test_heartbeat_command_sends_one_now(app, worker_factory):
    """`control heartbeat`: one worker-heartbeat at once, freq 5 and the software info only
    (celery/worker/control.py heartbeat), between the regular ones."""
    q = unique_queue("evhb")
    with Monitor(app) as mon:
        w = start_worker(worker_factory, q, events=False)
        mon.wait(lambda: mon.of(w.name, "worker-online"), scaled(20), "worker-online")
        app.control.heartbeat(destination=[w.name])
        mon.wait(lambda: [e for e in mon.of(w.name, "worker-heartbeat") if e.get("freq") == 5],
                 scaled(10), "the requested heartbeat")
        with mon.lock:
            hb = [e for e in mon.of(w.name, "worker-heartbeat") if e.get("freq") == 5][0]
        assert {"sw_ident", "sw_ver", "sw_sys", "hostname", "clock", "timestamp"} <= set(hb)


def test_issue_14_retry_events_in_pythons_order(app, worker_factory):
    """A retried task: the copy's task-received comes before task-retried, so a monitor
    (Flower: celery.events.state) shows RETRY while the retry waits for its countdown. Checked
    against a celeryc worker and the Python worker side by side, with one EventReceiver."""
    qc, qp = unique_queue("evr-c"), unique_queue("evr-py")
    with Monitor(app) as mon:
        workers = [start_worker(worker_factory, qc, events=True, impl="c")]
        if IMPL == "c":
            workers.append(start_worker(worker_factory, qp, events=True, impl="python"))
        for w in workers:
            mon.wait(lambda: mon.of(w.name, "worker-online"), scaled(20), "worker-online")
        # retry_once retries itself once with this countdown (in both implementations).
        rs = [app.send_task("t.integration.tasks.retry_once", kwargs={"countdown": 3},
                            queue=w.queue) for w in workers]

        def seen_retry(r):
            return lambda: {"task-retried", "task-received"} <= set(mon.task_events(r.id)) and \
                mon.task_events(r.id).count("task-received") == 2
        for r in rs:
            mon.wait(seen_retry(r), scaled(15), "task-retried and the copy's task-received")
        time.sleep(scaled(0.5))  # anything late would arrive now; the countdown runs on
        for w, r in zip(workers, rs):
            with mon.lock:
                evs = [e for e in mon.events if e.get("uuid") == r.id]
                state = mon.state.tasks[r.id].state
            types = [e["type"] for e in evs]
            assert types[:4] == ["task-received", "task-started", "task-received",
                                 "task-retried"], (w.name, types)
            assert [e.get("retries") for e in evs if e["type"] == "task-received"] == [0, 1]
            assert evs[3]["clock"] > evs[2]["clock"], evs
            # What Flower shows while the retry waits for its countdown.
            assert state == "RETRY", (w.name, state, types)
        for r in rs:
            assert r.get(timeout=TIMEOUT) == 1
