"""`celeryc` client commands (issue #4) against a Python Celery worker: inspect, control,
status, call, result, purge, events --dump. The oracle is the `celery` CLI itself (run
against the same worker) and the worker's observable behaviour.

Every remote-control request is sent with -d <worker name> so that workers of other tests
sharing the broker cannot answer.
"""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import (HERE, PY, TIMEOUT, c_only, celeryc_bin, queue_depth, scaled, unique_queue,
                      wait_for)


def _env():
    e = dict(os.environ)
    e["CELERY_BROKER_URL"] = os.environ["CELERYC_TEST_AMQP_URL"]
    e["CELERY_RESULT_BACKEND"] = os.environ["CELERYC_TEST_REDIS_URL"]
    e["PYTHONPATH"] = str(HERE)
    return e


def cc(*args, timeout=30, stdin=None):
    """Run `celeryc ARGS`; returns the CompletedProcess (text)."""
    b = celeryc_bin()
    if not b:
        pytest.fail("celeryc binary not found (set CELERYC_BIN)")
    return subprocess.run([b] + list(args), env=_env(), capture_output=True, text=True,
                          timeout=scaled(timeout), input=stdin)


def celery(*args, timeout=60):
    """Run the real `celery -A pyworker_app ARGS` (the oracle)."""
    return subprocess.run([PY, "-m", "celery", "-A", "pyworker_app"] + list(args), env=_env(),
                          capture_output=True, text=True, timeout=scaled(timeout), cwd=str(HERE))


def _t():
    return "%.1f" % scaled(2.0)


@pytest.fixture
def pyw(worker_factory):
    return worker_factory(concurrency=1, impl="python")


def test_inspect_matches_celery(pyw):
    d = ["-d", pyw.name, "-t", _t()]
    for cmd in ("ping", "registered", "active_queues", "active", "revoked"):
        ours = cc("inspect", cmd, "--json", *d)
        assert ours.returncode == 0, ours.stderr
        theirs = celery("inspect", cmd, "--json", *d)
        assert theirs.returncode == 0, theirs.stderr
        assert json.loads(ours.stdout) == json.loads(theirs.stdout), cmd
        # Text output too (no colour when stdout is not a terminal).
        ours_txt = cc("inspect", cmd, *d)
        theirs_txt = celery("inspect", cmd, *d)
        assert ours_txt.stdout == theirs_txt.stdout, cmd
    # stats changes between calls (clock, rusage, uptime): same nodes, same structure.
    ours = json.loads(cc("inspect", "stats", "--json", *d).stdout)
    theirs = json.loads(celery("inspect", "stats", "--json", *d).stdout)
    assert list(ours) == list(theirs) == [pyw.name]
    assert sorted(ours[pyw.name]) == sorted(theirs[pyw.name])
    assert ours[pyw.name]["pid"] == theirs[pyw.name]["pid"]
    assert ours[pyw.name]["pool"]["processes"] == theirs[pyw.name]["pool"]["processes"]
    # A running task: `active` is the same document whoever asks.
    r = cc("call", "demo.sleep", "--args", "[%s]" % scaled(4), "-Q", pyw.queue)
    assert r.returncode == 0, r.stderr

    def active():
        out = json.loads(cc("inspect", "active", "--json", *d).stdout)
        return out if out.get(pyw.name) else None
    ours = wait_for(active, 10, "the task to be active")
    assert ours[pyw.name][0]["id"] == r.stdout.strip()
    theirs = json.loads(celery("inspect", "active", "--json", *d).stdout)
    assert ours == theirs


def test_control_takes_effect(pyw):
    d = ["-d", pyw.name, "-t", _t()]
    r = cc("control", "rate_limit", "demo.add", "7/m", *d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "->  %s: OK\n        new rate limit set successfully\n" % pyw.name
    reg = json.loads(cc("inspect", "registered", "--json", *d).stdout)
    assert "demo.add [rate_limit=7/m]" in reg[pyw.name]
    r = cc("control", "rate_limit", "no.such.task", "1/s", *d)
    assert r.returncode == 0
    assert r.stdout == "->  %s: ERROR\n        unknown task\n" % pyw.name
    # revoke: the id is in `inspect revoked` and a task sent with it never runs.
    tid = "00000000-0000-4000-8000-00000000cafe"
    r = cc("control", "revoke", tid, "--json", *d)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [{pyw.name: {"ok": "tasks %s flagged as revoked" % tid}}]
    revoked = json.loads(cc("inspect", "revoked", "--json", *d).stdout)
    assert tid in revoked[pyw.name]
    from capp import app
    res = app.send_task("demo.add", args=[1, 2], queue=pyw.queue, task_id=tid)
    with pytest.raises(Exception) as ei:
        res.get(timeout=TIMEOUT)
    assert "Revoked" in type(ei.value).__name__ or res.state == "REVOKED"


def test_call_then_result(pyw):
    r = cc("call", "demo.add", "--args", "[2,3]", "-Q", pyw.queue)
    assert r.returncode == 0, r.stderr
    tid = r.stdout.strip()
    assert len(tid) == 36
    r = cc("result", tid, "--timeout", "%d" % TIMEOUT)
    assert (r.returncode, r.stdout) == (0, "5\n"), r.stderr
    # kwargs and a countdown (ETA) go through too; the real `celery result` agrees.
    r = cc("call", "demo.add", "--kwargs", '{"x": 4, "y": 5}', "--countdown", "1",
           "-Q", pyw.queue)
    tid = r.stdout.strip()
    assert cc("result", tid, "--timeout", "%d" % TIMEOUT).stdout == "9\n"
    assert celery("result", tid).stdout == "9\n"
    # A failing task: non-zero exit, the exception named.
    r = cc("call", "demo.fail", "--args", '["boom"]', "-Q", pyw.queue)
    r = cc("result", r.stdout.strip(), "--timeout", "%d" % TIMEOUT)
    assert r.returncode == 1 and r.stderr == "ValueError: boom\n", r
    # Not ready within --timeout.
    r = cc("result", "00000000-0000-4000-8000-000000000000", "--timeout", "0.3")
    assert r.returncode == 75


def test_no_reply_is_an_error(services):
    for args in (("inspect", "ping"), ("control", "rate_limit", "demo.add", "1/s"),
                 ("status",)):
        r = cc(*args, "-d", "nobody@nowhere", "-t", "0.5")
        theirs = celery(*args, "-d", "nobody@nowhere", "-t", "0.5")
        assert r.returncode == theirs.returncode == 69, (r, theirs)
        assert r.stderr == "Error: No nodes replied within time constraint\n"
        assert theirs.stderr.endswith(r.stderr)
    r = cc("inspect", "no_such_command")
    assert r.returncode == 2


def test_status(pyw):
    r = cc("status", "-d", pyw.name, "-t", _t())
    assert r.returncode == 0, r.stderr
    assert r.stdout == "->  %s: OK\n\n1 node online.\n" % pyw.name
    assert r.stdout == celery("status", "-d", pyw.name, "-t", _t()).stdout


def test_purge(services, amqp_conn):
    q = unique_queue("purge")
    for i in range(3):
        assert cc("call", "demo.add", "--args", "[1,1]", "-Q", q).returncode == 0
    assert queue_depth(amqp_conn, q) == 3
    # Without -f it asks; "n" aborts and keeps the messages.
    r = cc("purge", "-Q", q, stdin="n\n")
    assert r.returncode == 1 and "Aborted!" in r.stderr
    assert "Are you sure you want to delete all tasks?" in r.stdout
    assert queue_depth(amqp_conn, q) == 3
    r = cc("purge", "-f", "-Q", q + ",missing-" + q)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Purged 3 messages from 2 known task queues.\n"
    assert queue_depth(amqp_conn, q) == 0
    r = cc("purge", "-f", "-Q", q)
    assert r.stdout == "No messages purged from 1 queue.\n"


def test_events_dump(worker_factory):
    # The Python worker with -E (the fixture's default --without-heartbeat etc. leave it
    # without an event dispatcher).
    q = unique_queue("ev")
    name = "wev-%s@localhost" % q
    pyw = worker_factory(queue=q, name=name, impl="python", env={"PYTHONPATH": str(HERE)},
                         argv=[PY, "-m", "celery", "-A", "pyworker_app", "worker", "--pool",
                               "prefork", "-c", "1", "--without-gossip", "--without-mingle",
                               "-E", "-Q", q, "-n", name, "-l", "info"])
    b = celeryc_bin()
    p = subprocess.Popen([b, "events", "--dump", "--duration", "%.0f" % scaled(8)], env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(scaled(1.0))
        r = cc("control", "enable_events", "-d", pyw.name, "-t", _t())
        assert r.returncode == 0 and "task events already enabled" in r.stdout, r
        # `control heartbeat` makes the worker send a worker-heartbeat right away.
        r = cc("control", "heartbeat", "-d", pyw.name, "-t", _t(), "--json")
        assert json.loads(r.stdout) == [{pyw.name: None}], r
        tid = cc("call", "demo.add", "--args", "[2,3]", "-Q", pyw.queue).stdout.strip()
        assert cc("result", tid, "-t", "%d" % TIMEOUT).stdout == "5\n"
        time.sleep(scaled(0.5))
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=scaled(10))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    lines = out.splitlines()
    assert lines[0] == "-> evdump: starting capture..."
    mine = [ln for ln in lines if tid in ln]
    assert any(" task received: demo.add(%s) args=(2, 3) kwargs={} " % tid in ln for ln in mine)
    assert any(ln.startswith(pyw.name + " [") and " task started: " in ln for ln in mine)
    assert any(" task succeeded: " in ln and "result=5," in ln for ln in mine), mine
    # Worker events are dumped too.
    assert any(ln.startswith(pyw.name + " [") and "] heartbeat: " in ln for ln in lines), lines


def test_status_over_tls(pyw):
    """amqps:// with the worker's TLS options (flags and CELERYC_BROKER_SSL_* variables)."""
    url = os.environ.get("CELERYC_TEST_AMQPS_URL")
    if not url:
        pytest.skip("no TLS listener")
    r = cc("status", "-b", url, "-d", pyw.name, "-t", _t(),
           "--broker-ssl-ca", os.environ["CELERYC_TEST_CA_FILE"],
           "--broker-ssl-cert", os.environ["CELERYC_TEST_CLIENT_CERT"],
           "--broker-ssl-key", os.environ["CELERYC_TEST_CLIENT_KEY"])
    assert r.returncode == 0, r.stderr
    assert r.stdout == "->  %s: OK\n\n1 node online.\n" % pyw.name
    os.environ["CELERYC_BROKER_SSL_CA_CERTS"] = os.environ["CELERYC_TEST_CA_FILE"]
    os.environ["CELERYC_BROKER_SSL_CERTFILE"] = os.environ["CELERYC_TEST_CLIENT_CERT"]
    os.environ["CELERYC_BROKER_SSL_KEYFILE"] = os.environ["CELERYC_TEST_CLIENT_KEY"]
    try:
        r = cc("inspect", "ping", "-b", url, "-d", pyw.name, "-t", _t(), "--json")
    finally:
        for k in ("CA_CERTS", "CERTFILE", "KEYFILE"):
            del os.environ["CELERYC_BROKER_SSL_" + k]
    assert json.loads(r.stdout) == {pyw.name: {"ok": "pong"}}, r.stderr
    # Without the CA: the connection is refused, exit 70.
    r = cc("status", "-b", url, "-t", "0.5")
    assert r.returncode == 70 and "cannot connect" in r.stderr


def test_c_worker_answers_celeryc_and_celery_alike(worker_factory):
    """The whole loop in C: `celeryc inspect/control/status` against a celeryc worker, and
    the same answers the `celery` CLI gets from it."""
    w = worker_factory(concurrency=1, impl="c")
    d = ["-d", w.name, "-t", _t()]
    for cmd in ("ping", "registered", "active_queues", "revoked"):
        ours = cc("inspect", cmd, "--json", *d)
        assert ours.returncode == 0, ours.stderr
        theirs = celery("inspect", cmd, "--json", *d)
        assert theirs.returncode == 0, theirs.stderr
        assert json.loads(ours.stdout) == json.loads(theirs.stdout), cmd
    assert json.loads(cc("inspect", "ping", "--json", *d).stdout) == {w.name: {"ok": "pong"}}
    st = cc("status", *d)
    assert st.returncode == 0 and w.name in st.stdout, st
    r = cc("control", "rate_limit", "demo.add", "5/s", *d)
    assert r.returncode == 0, r.stderr
    reg = json.loads(cc("inspect", "registered", "--json", *d).stdout)[w.name]
    assert "demo.add [rate_limit=5/s]" in reg
    call = cc("call", "demo.add", "--args", "[20, 22]", "-Q", w.queue)
    assert call.returncode == 0, call.stderr
    res = cc("result", call.stdout.strip(), "-t", "%d" % scaled(20))
    assert res.returncode == 0 and res.stdout.strip() == "42", res


def test_events_live_view(worker_factory):
    """`celeryc events` (no --dump): the workers and latest tasks, redrawn; not a terminal
    here, so frames follow one another and the last one is the final state."""
    w = worker_factory(concurrency=1, impl="c", extra=["-E"])
    b = celeryc_bin()
    view = subprocess.Popen([b, "events", "--duration", "%d" % scaled(5)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(scaled(1.5))  # bound and consuming
        ok = cc("call", "demo.add", "--args", "[1, 2]", "-Q", w.queue).stdout.strip()
        bad = cc("call", "demo.fail", "--args", '["x"]', "-Q", w.queue).stdout.strip()
        out, errs = view.communicate(timeout=scaled(30))
    finally:
        if view.poll() is None:
            view.kill()
            view.wait()
    assert view.returncode == 0, errs
    last = out.strip().split("celeryc events:")[-1]
    assert re.search(r"%s\s+ONLINE" % re.escape(w.name), last), last
    assert re.search(r"%s\s+demo\.add\s+SUCCESS" % ok, last), last
    assert re.search(r"%s\s+demo\.fail\s+FAILURE" % bad, last), last


# ---- celeryc result vs celery result -------------------------------------------------------

def celery_noapp(*args, timeout=60):
    """`celery ARGS` without -A, as `celery result` is usually run: no app module imported,
    so exceptions of app modules are rebuilt as celery.exceptions.<Type> (celeryc has no app
    either)."""
    e = _env()
    e.pop("PYTHONPATH", None)
    return subprocess.run([PY, "-m", "celery"] + list(args), env=e, capture_output=True,
                          text=True, timeout=scaled(timeout), cwd="/")


def _meta(rds, tid):
    raw = rds.get("celery-task-meta-" + tid)
    return json.loads(raw) if raw else None


def _same_as_celery(tid, *flags):
    """`celeryc result` and `celery result` for one ready id: same stdout and exit status;
    for an exception, celery's stderr (a traceback of the CLI itself) ends with ours, the
    exception line. Returns ours."""
    ours = cc("result", tid, *flags)
    theirs = celery_noapp("result", tid, *flags)
    assert (ours.stdout, ours.returncode) == (theirs.stdout, theirs.returncode), \
        (flags, ours, theirs)
    if ours.returncode:
        assert ours.stderr.count("\n") == 1 and theirs.stderr.endswith(ours.stderr), \
            (ours.stderr, theirs.stderr)
    else:
        assert ours.stderr == "", ours.stderr
    return ours


def test_result_matches_celery(worker_factory, rds):
    """SUCCESS, FAILURE (builtins and an app exception), REVOKED, RETRY and PENDING, stored
    by a celeryc worker and by a Python worker: `celeryc result` prints what `celery result`
    prints, with and without --traceback; --json is the stored meta."""
    workers = [worker_factory(concurrency=1, impl="c"),
               worker_factory(concurrency=1, impl="python")]
    for w in workers:
        def call(task, args="[]", *extra):
            r = cc("call", task, "--args", args, "-Q", w.queue, *extra)
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()
        ok, none, fail, custom = (call("demo.add", "[2, 3]"), call("demo.noop"),
                                  call("demo.fail", '["boom"]'),
                                  call("t.integration.tasks.fail", "[1]"))
        # RETRY (for 5 s, 3 times): not ready, get() waits (we give up after --timeout); the
        # traceback is the Retry's.
        retry = call("t.integration.tasks.retry")
        wait_for(lambda: (_meta(rds, retry) or {}).get("status") == "RETRY", TIMEOUT,
                 "the RETRY state")
        tb = _same_as_celery(retry, "--traceback")
        assert tb.stdout.endswith(
            "\ncelery.exceptions.Retry: Retry in 5s: ExpectedException()\n\n"), tb.stdout
        assert cc("result", retry, "--timeout", "0.3").returncode == 75
        revoked = call("demo.add", "[1, 1]", "--countdown", "2")
        r = cc("control", "revoke", revoked, "-d", w.name, "-t", _t())
        assert r.returncode == 0, r.stderr
        for tid in (ok, none, fail, custom, revoked):
            r = cc("result", tid, "--timeout", "%d" % TIMEOUT)
            assert r.returncode in (0, 1), (w.name, r)
        want = {ok: ("5\n", ""), none: ("\n", ""), fail: ("", "ValueError: boom\n"),
                custom: ("", "celery.exceptions.ExpectedException: "
                             "('Task expected to fail', 1)\n"),
                revoked: ("", "celery.exceptions.TaskRevokedError: revoked\n")}
        for tid, (out, err) in want.items():
            ours = _same_as_celery(tid)
            assert (ours.stdout, ours.stderr) == (out, err), (w.name, ours)
            tb = _same_as_celery(tid, "--traceback")
            stored = _meta(rds, tid)
            assert tb.stdout == (stored["traceback"] or "") + "\n"
            # --json: the stored meta; -t/--task is accepted as Celery's (custom backends).
            j = cc("result", tid, "--json")
            assert json.loads(j.stdout) == stored and j.returncode == ours.returncode
            assert cc("result", "-t", "demo.add", tid).stdout == ours.stdout
    # PENDING (unknown id): get() waits; the traceback is None, an empty line.
    unknown = "00000000-0000-4000-8000-0000000000aa"
    assert _same_as_celery(unknown, "--traceback").stdout == "\n"
    assert json.loads(cc("result", unknown, "--json", "--traceback").stdout) == \
        {"status": "PENDING", "result": None}


C_TB = re.compile(r'Traceback \(most recent call last\):\n'
                  r'  File "tasks/demo\.c", line [1-9][0-9]*, in demo_fail\n'
                  r'ValueError: boom\n\Z')


@c_only
def test_c_traceback_is_python_shaped(worker_factory):
    """A C task's failure: the stored traceback, AsyncResult.traceback, `celery result
    --traceback` and the task-failed event (what `celery events` and Flower show) all carry
    the same Python-shaped traceback with the raise site in the C source. A hard time limit's
    task-failed event has one too (Celery sends billiard's), while the stored one is None."""
    from capp import app
    from test_events import Monitor
    w = worker_factory(concurrency=1, impl="c", extra=["-E"])
    with Monitor(app) as mon:
        res = app.send_task("demo.fail", args=["boom"], queue=w.queue)
        spin = app.send_task("demo.spin", args=[30], queue=w.queue, time_limit=1)
        big = app.send_task("demo.fail", args=["x" * 5000], queue=w.queue)
        with pytest.raises(ValueError):
            res.get(timeout=TIMEOUT)
        assert C_TB.match(res.traceback), res.traceback
        assert celery_noapp("result", res.id, "--traceback").stdout == res.traceback + "\n"
        with pytest.raises(Exception) as ei:
            spin.get(timeout=TIMEOUT)
        assert type(ei.value).__name__ == "TimeLimitExceeded" and spin.traceback is None

        def failed(tid):
            with mon.lock:
                return [e for e in mon.events if e.get("uuid") == tid and
                        e["type"] == "task-failed"]
        mon.wait(lambda: failed(res.id) and failed(spin.id) and failed(big.id), scaled(15),
                 "three task-failed")
        # Too long for the event (the stored one is whole): cut, still Python-shaped.
        tb = failed(big.id)[0]["traceback"]
        assert tb.startswith("Traceback (most recent call last):\n  File \"tasks/demo.c\"")
        assert "\nValueError: xxx" in tb and tb.endswith("xxx...\n") and len(tb) < 4000, tb
        assert big.traceback.endswith("x" * 5000 + "\n")
        ev = failed(res.id)[0]
        assert ev["traceback"] == res.traceback and ev["exception"] == "ValueError('boom')"
        assert failed(spin.id)[0]["traceback"] == (
            'Traceback (most recent call last):\n  File "<celeryc>", line 0, in demo.spin\n'
            "billiard.exceptions.TimeLimitExceeded: TimeLimitExceeded(1,)\n")
