"""No password in any output (issue #14): `inspect conf` showed the result backend's password
in clear (`redis://:S3cretPW@...`) while the broker's was masked.

A known password goes into every URL option a celeryc process takes (broker, result backend,
worker_redis_url, worker_fleet_rate_limits_url, job store), against real services that
require it (a private Redis with requirepass, a RabbitMQ user, a Postgres role), and every
output is searched for it: inspect conf / stats / report / registered (Python API and
`celeryc inspect`), the events a Python EventReceiver gets, the worker's and the beat's
logs, the client commands (`celeryc jobs`, `db`, `result`, `call`, `inspect`), and the
error texts when each service is unreachable or a URL is refused. Celery's forms:
`redis://:********@host/0` in inspect conf, `amqp://user:**@host//` in the banner and logs.
"""
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest
from celery import Celery

from conftest import (ROOT, TIMEOUT, Monitor, _pg_admin_exec, c_only, celeryc_bin, free_port,
                      scaled, unique_queue, wait_for)

PW = "Zq7S3cretPW"  # URL-safe, unlikely anywhere else

pytestmark = c_only


@pytest.fixture
def redis_pw(services, tmp_path):
    """A private redis-server that requires PW (default user); yields its port."""
    port = free_port()
    p = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1",
                          "--port", str(port), "--save", "", "--appendonly", "no",
                          "--requirepass", PW, "--dir", str(tmp_path)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    try:
        import redis
        r = redis.Redis(host="127.0.0.1", port=port, password=PW, socket_timeout=5)
        wait_for(lambda: _ping(r), 20, "redis with requirepass")
        yield port
    finally:
        p.terminate()
        try:
            p.wait(scaled(10))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _ping(r):
    try:
        return r.ping()
    except Exception:  # noqa: BLE001 (not up yet)
        return False


def _rabbitmqctl(*args):
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "ctl",
                    os.environ["CELERYC_TEST_DATA_DIR"]] + list(args), check=True,
                   timeout=scaled(60), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def amqp_pw(services):
    """A RabbitMQ user with password PW on vhost /; yields the URL."""
    if not os.environ.get("CELERYC_TEST_DATA_DIR"):
        pytest.skip("needs the test RabbitMQ (scripts/services.sh) to add a user")
    user = "mask%s" % uuid.uuid4().hex[:8]
    _rabbitmqctl("add_user", user, PW)
    _rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
    port = os.environ["CELERYC_TEST_AMQP_PORT"]
    try:
        yield "amqp://%s:%s@127.0.0.1:%s//" % (user, PW, port)
    finally:
        _rabbitmqctl("delete_user", user)


@pytest.fixture
def pg_pw(services):
    """A Postgres role with password PW owning a fresh database; yields the URL."""
    name = "mask%s" % uuid.uuid4().hex[:8]
    _pg_admin_exec("CREATE ROLE %s LOGIN PASSWORD '%s'" % (name, PW))
    _pg_admin_exec("CREATE DATABASE %s OWNER %s" % (name, name))
    try:
        yield "postgresql://%s:%s@127.0.0.1:%s/%s" % (name, PW, os.environ["CELERYC_TEST_PG_PORT"],
                                                      name)
    finally:
        _pg_admin_exec("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, attempts=20)
        _pg_admin_exec("DROP ROLE IF EXISTS %s" % name)


def run(*argv, timeout=30, env=None):
    """A celeryc client command; returns stdout + stderr (whatever it exits with)."""
    e = dict(os.environ)
    for k in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "CELERYC_JOB_STORE"):
        e.pop(k, None)
    e.update(env or {})
    try:
        p = subprocess.run([celeryc_bin()] + list(argv), capture_output=True, text=True,
                           timeout=scaled(timeout), env=e)
        return _label(argv, p.returncode), p.stdout + p.stderr
    except subprocess.TimeoutExpired as ex:
        return _label(argv, "timeout"), "%s%s" % (ex.stdout or "", ex.stderr or "")


def _label(argv, how=""):
    """The command line for the failure report, without the password (the test's own text
    must not count as a leak)."""
    return "$ celeryc %s -> %s" % (" ".join(argv).replace(PW, "<PW>"), how)


def run_for(argv, seconds, log_path):
    """A long-running celeryc (beat, a worker that cannot connect) for `seconds`, then TERM
    (KILL after a grace); returns its output."""
    with open(log_path, "wb") as log:
        p = subprocess.Popen([celeryc_bin()] + argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            p.wait(scaled(seconds))
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(scaled(15))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    with open(log_path, errors="replace") as f:
        return _label(argv, "stopped"), f.read()


def closed_port():
    return free_port()  # nothing listens there


def test_issue_14_no_password_in_any_output(worker_factory, redis_pw, amqp_pw, pg_pw,
                                            tmp_path):
    broker = amqp_pw
    backend = "redis://:%s@127.0.0.1:%d/0" % (PW, redis_pw)
    state_redis = "redis://:%s@127.0.0.1:%d/1" % (PW, redis_pw)
    fleet_redis = "redis://:%s@127.0.0.1:%d/2" % (PW, redis_pw)
    store = pg_pw
    outputs = []

    outputs.append(run("db", "upgrade", "--job-store", store))
    q = unique_queue("mask")
    w = worker_factory(queue=q, argv=[
        celeryc_bin(), "worker", "-b", broker, "--result-backend", backend, "--redis-url",
        state_redis, "--fleet-rate-limits", "--fleet-rate-limits-url", fleet_redis,
        "--rate-limits", "demo.mul=100/s", "--job-store", store, "-Q", q, "-n",
        "mask-%s@localhost" % q, "-c", "1", "-l", "debug", "-E"], name="mask-%s@localhost" % q)
    node = w.name

    app = Celery("mask", broker=broker, backend=backend)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"])
    try:
        with Monitor(app) as mon:
            assert app.send_task("demo.add", args=[1, 2], queue=q).get(timeout=TIMEOUT) == 3
            assert app.send_task("demo.mul", args=[2, 3], queue=q).get(timeout=TIMEOUT) == 6
            r = app.send_task("t.integration.tasks.retry_once", kwargs={"countdown": 0.1},
                              queue=q)
            assert r.get(timeout=TIMEOUT) == 1
            mon.wait(lambda: len(mon.of(node, "worker-heartbeat")) >= 1, 20, "a heartbeat")
            ins = app.control.inspect(destination=[node], timeout=scaled(3))
            replies = {m: getattr(ins, m)() for m in ("conf", "stats", "report", "registered",
                                                     "active_queues", "scheduled", "active")}
            conf = replies["conf"][node]
            # Celery's forms (filter_hidden_settings, mask '********')
            assert conf["result_backend"] == "redis://:********@127.0.0.1:%d/0" % redis_pw, conf
            assert conf["broker_url"].startswith(broker.split(":" + PW)[0] + ":********@"), conf
            outputs.append(("inspect replies (Python API)", json.dumps(replies)))
            with mon.lock:
                outputs.append(("events", json.dumps(mon.events)))
        for m in ("conf", "stats", "report", "registered", "ping"):
            outputs.append(run("inspect", m, "-b", broker, "-d", node, "-j"))
        outputs.append(run("status", "-b", broker))
        outputs.append(run("result", r.id, "--result-backend", backend, "-j"))
        outputs.append(run("call", "demo.add", "--args", "[4, 5]", "-Q", q, "-b", broker,
                           "--result-backend", backend))
        outputs.append(run("jobs", "list", "--job-store", store))
        outputs.append(run("jobs", "create", "--title", "mask", "--task", "demo.add",
                           "--args", "[1, 1]", "--no-schedule", "--job-store", store))
        outputs.append(run("db", "version", "--job-store", store))
        # beat with the same URLs, a few seconds
        outputs.append(run_for(["beat", "-b", broker, "--job-store", store, "-l", "debug",
                                "--schedule-file", str(tmp_path / "none.json")], 4,
                               tmp_path / "beat.log"))
    finally:
        w.stop()
    outputs.append(("the worker's log", w.log()))

    # The database result backend (Celery's db+postgresql://) the same way.
    q2 = unique_queue("mask-db")
    db_backend = "db+" + store
    w2 = worker_factory(queue=q2, argv=[
        celeryc_bin(), "worker", "-b", broker, "--result-backend", db_backend, "-Q", q2, "-n",
        "mask-%s@localhost" % q2, "-c", "1", "-l", "debug"], name="mask-%s@localhost" % q2)
    try:
        conf = app.control.inspect(destination=[w2.name], timeout=scaled(3)).conf()[w2.name]
        assert conf["result_backend"] == db_backend.replace(":" + PW + "@", ":********@"), conf
        outputs.append(("inspect conf, database backend", json.dumps(conf)))
    finally:
        w2.stop()
    outputs.append(("the database-backend worker's log", w2.log()))

    # Every service unreachable: the error texts.
    cp = closed_port()
    dead_broker = "amqp://maskuser:%s@127.0.0.1:%d//" % (PW, cp)
    dead_redis = "redis://:%s@127.0.0.1:%d/0" % (PW, cp)
    dead_store = "postgresql://maskrole:%s@127.0.0.1:%d/db" % (PW, cp)
    outputs.append(run("inspect", "ping", "-b", dead_broker, "-t", "1", timeout=60))
    outputs.append(run("result", "00000000-0000-4000-8000-000000000000", "--result-backend",
                       dead_redis, "--timeout", "1", timeout=60))
    outputs.append(run("call", "demo.add", "-b", dead_broker, timeout=60))
    outputs.append(run("jobs", "list", "--job-store", dead_store, timeout=60))
    outputs.append(run("db", "version", "--job-store", dead_store, timeout=60))
    outputs.append(run_for(["worker", "-b", broker, "--result-backend", dead_redis,
                            "--redis-url", dead_redis, "--fleet-rate-limits",
                            "--fleet-rate-limits-url", dead_redis, "--job-store", dead_store,
                            "-Q", unique_queue("mask-dead"), "-l", "debug"], 8,
                           tmp_path / "dead-services.log"))
    outputs.append(run_for(["worker", "-b", dead_broker, "--result-backend", backend,
                            "--broker-connection-max-retries", "1", "-l", "debug"], 8,
                           tmp_path / "dead-broker.log"))
    outputs.append(run_for(["beat", "-b", dead_broker, "--job-store", dead_store, "-l",
                            "debug"], 5, tmp_path / "dead-beat.log"))
    # URLs refused at start-up
    for bad in (["--result-backend", "mysql://u:%s@h/db" % PW],
                ["--result-backend", "db+mysql://u:%s@h/db" % PW],
                ["--redis-url", "http://u:%s@h/" % PW],
                ["--fleet-rate-limits-url", "redis://:%s@h:notaport/0" % PW],
                ["-b", "amqp://u:%s@h1//;amqp://u:%s@h2//" % (PW, PW)],
                ["-b", "ftp://u:%s@h//" % PW]):
        outputs.append(run("worker", *bad, timeout=30))
    cfg = tmp_path / "bad.conf"
    cfg.write_text("broker_url amqp://u:%s@h//\n" % PW)
    outputs.append(run("worker", "--config", str(cfg), timeout=30))

    for label, o in outputs:  # under ASan+UBSan: nothing reported on any of these paths
        for marker in ("runtime error:", "AddressSanitizer", "LeakSanitizer"):
            assert marker not in o, (label, o[-4000:])
    leaks = [(label, o) for label, o in outputs if PW in o]
    assert not leaks, "password in output:\n" + "\n-----\n".join(
        label + "\n" + "\n".join(line for line in o.splitlines() if PW in line)
        for label, o in leaks)
    # and the outputs did say something about these URLs (the test is not vacuous)
    everything = "\n".join(o for _, o in outputs)
    assert ":**@127.0.0.1" in everything or ":********@127.0.0.1" in everything
