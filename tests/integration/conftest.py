"""Integration-test fixtures: real RabbitMQ + Redis, real `celeryc worker` processes, real
Python Celery clients.

Services: if CELERYC_TEST_AMQP_URL and CELERYC_TEST_REDIS_URL are set (scripts/test.sh starts
them once) they are reused; otherwise the session starts its own with scripts/services.sh
and stops them at the end.

Worker under test: CELERYC_BIN (default: the first of build-it/, build/ that has `celeryc`).
CELERYC_IT_IMPL=python runs the same tests against the Python Celery worker
(tests/integration/pyworker_app.py) to check the tests themselves; C-only tests skip then.

Every process a test starts is stopped by the fixture (SIGTERM, wait, SIGKILL on timeout).
Deadlines scale with CELERYC_TEST_TIMEOUT_MULT.
"""
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = "/usr/bin/python3"
MULT = float(os.environ.get("CELERYC_TEST_TIMEOUT_MULT", "1"))
IMPL = os.environ.get("CELERYC_IT_IMPL", "c")
TIMEOUT = 20 * MULT  # default deadline for one result

sys.path.insert(0, str(HERE))


def scaled(seconds):
    return seconds * MULT


def wait_for(pred, timeout, what, interval=0.05):
    """Poll pred() until truthy or the deadline; return its value or raise AssertionError."""
    end = time.monotonic() + scaled(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out after %.1fs waiting for %s" % (scaled(timeout), what))
        time.sleep(interval)


def celeryc_bin():
    b = os.environ.get("CELERYC_BIN")
    if b:
        return b
    for d in ("build-it", "build"):
        p = ROOT / d / "celeryc"
        if p.exists():
            return str(p)
    return None


c_only = pytest.mark.skipif(IMPL != "c", reason="celeryc-specific behaviour")


# ---- Services --------------------------------------------------------------------------------

def _load_env_file(path):
    env = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = shlex.split(v)[0] if v else ""
    return env


@pytest.fixture(scope="session")
def services():
    started = None
    if not (os.environ.get("CELERYC_TEST_AMQP_URL") and os.environ.get("CELERYC_TEST_REDIS_URL")):
        out = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "start"],
                             stdout=subprocess.PIPE, check=True, timeout=scaled(150))
        started = out.stdout.decode().strip().splitlines()[-1]
        os.environ.update(_load_env_file(Path(started) / "env"))
    # db 7 is where the integration tasks redis_echo/redis_count write.
    base = os.environ["CELERYC_TEST_REDIS_URL"].rsplit("/", 1)[0]
    os.environ.setdefault("TEST_REDIS_URL", base + "/7")
    # Queues named dlq-* dead-letter into the fanout exchange it.dlx (a policy, so that the
    # worker's own queue declaration stays equivalent).
    if os.environ.get("CELERYC_TEST_DATA_DIR"):
        subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "ctl",
                        os.environ["CELERYC_TEST_DATA_DIR"], "set_policy", "--apply-to",
                        "queues", "itdlx", "^dlq-", '{"dead-letter-exchange":"it.dlx"}'],
                       check=True, timeout=scaled(60), stdout=subprocess.DEVNULL)
    try:
        yield dict(os.environ)
    finally:
        if started:
            subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "stop", started],
                           timeout=scaled(120))


@pytest.fixture(scope="session")
def capp(services):
    import capp as m
    return m


@pytest.fixture(scope="session")
def app(capp):
    return capp.app


@pytest.fixture
def rds(services):
    import redis
    r = redis.Redis.from_url(os.environ["CELERYC_TEST_REDIS_URL"], socket_timeout=10)
    yield r
    r.close()


@pytest.fixture
def rds7(services):
    import redis
    r = redis.Redis.from_url(os.environ["TEST_REDIS_URL"], socket_timeout=10)
    yield r
    r.close()


def _pg_admin_exec(sql, attempts=1):
    """Run `sql` as the cluster's superuser (over its unix socket, trusted): DROP DATABASE
    ... WITH (FORCE) may have to end an autovacuum worker, which only a superuser can."""
    import psycopg2
    for i in range(attempts):
        c = psycopg2.connect(host=os.environ["CELERYC_TEST_PG_SOCKDIR"],
                             port=os.environ["CELERYC_TEST_PG_PORT"], user="postgres",
                             dbname="postgres", connect_timeout=10)
        c.autocommit = True
        try:
            with c.cursor() as cur:
                cur.execute(sql)
            return
        except psycopg2.Error:
            if i + 1 == attempts:
                raise
            time.sleep(0.5)
        finally:
            c.close()


@pytest.fixture
def pg_url(services):
    """A fresh, empty Postgres database for this test (dropped afterwards): its URL,
    postgresql://celeryc:celeryc@127.0.0.1:PORT/<name>. Needs CELERYC_TEST_PG_URL."""
    if not os.environ.get("CELERYC_TEST_PG_URL"):
        pytest.skip("no Postgres (CELERYC_TEST_PG_URL unset)")
    name = "it_" + uuid.uuid4().hex[:12]
    _pg_admin_exec("CREATE DATABASE %s OWNER celeryc" % name)
    base = os.environ["CELERYC_TEST_PG_URL"].rsplit("/", 1)[0]
    try:
        yield "%s/%s" % (base, name)
    finally:
        # WITH (FORCE): processes a test left connected do not keep the database alive.
        _pg_admin_exec("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, attempts=20)


@pytest.fixture
def amqp_conn(services):
    """A raw py-amqp connection for publishing hand-made messages and inspecting queues."""
    import amqp
    port = os.environ["CELERYC_TEST_AMQP_URL"].rsplit(":", 1)[1].split("/")[0]
    c = amqp.Connection(host="127.0.0.1:%s" % port, userid="guest", password="guest",
                        virtual_host="/", connect_timeout=5)
    c.connect()
    yield c
    try:
        c.close()
    except Exception:
        pass


def queue_depth(conn, name):
    ch = conn.channel()
    try:
        _, count, _ = ch.queue_declare(name, passive=True)
        return count
    finally:
        ch.close()


# ---- Workers ---------------------------------------------------------------------------------

class Worker:
    def __init__(self, argv, env, log_path, queue, name, cwd=None):
        self.argv = argv
        self.queue = queue
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
        self.pid = self.proc.pid

    def log(self):
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=15, what=None):
        rx = re.compile(pattern, re.I | re.M)

        def check():
            m = rx.search(self.log())
            if m:
                return m
            if self.proc.poll() is not None:
                m = rx.search(self.log())
                if m:
                    return m
                raise AssertionError("worker exited (rc=%s) before %r; log:\n%s"
                                     % (self.proc.returncode, pattern, self.log()[-4000:]))
            return None
        return wait_for(check, timeout, what or pattern)

    def wait_ready(self, timeout=30):
        return self.wait_log(r"\bready\b", timeout, "worker ready")

    def signal(self, sig):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout=30):
        try:
            return self.proc.wait(scaled(timeout))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=20):
        """SIGTERM (warm shutdown), wait; SIGKILL the whole group on timeout. Returns rc."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            if self.wait_exit(timeout) is None:
                self.kill()
        self._kill_group()
        self._log.close()
        return self.proc.returncode

    def kill(self):
        self._kill_group()
        try:
            self.proc.wait(scaled(10))
        except subprocess.TimeoutExpired:
            pass

    def _kill_group(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def free_port():
    """A TCP port on 127.0.0.1 that is free right now (for a private server a test starts)."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def unique_queue(prefix="it"):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:10])


@pytest.fixture
def worker_factory(services, tmp_path, request):
    """worker_factory(queue=..., concurrency=2, acks_late=False, track_started=False,
    result_extended=False, extra=[...], env={...}, impl='c'|'python', wait_ready=True)."""
    started = []
    counter = [0]

    def make(queue=None, concurrency=2, acks_late=False, track_started=False,
             result_extended=False, extra=(), env=None, impl=None, wait_ready=True,
             argv=None, name=None, prefetch=None):
        impl = impl or IMPL
        queue = queue or unique_queue()
        counter[0] += 1
        name = name or "w%d-%s@localhost" % (counter[0], queue)
        e = dict(os.environ)
        e.update({"CELERY_BROKER_URL": os.environ["CELERYC_TEST_AMQP_URL"],
                  "CELERY_RESULT_BACKEND": os.environ["CELERYC_TEST_REDIS_URL"],
                  "PYTHONUNBUFFERED": "1"})
        e.update(env or {})
        log_path = tmp_path / ("worker-%d-%s.log" % (counter[0], impl))
        cwd = None
        if argv is not None:
            cmd = list(argv)
        elif impl == "c":
            b = celeryc_bin()
            if not b:
                pytest.fail("celeryc binary not found (set CELERYC_BIN or build build-it/)")
            cmd = [b, "worker", "-b", os.environ["CELERYC_TEST_AMQP_URL"],
                   "--result-backend", os.environ["CELERYC_TEST_REDIS_URL"],
                   "-Q", queue, "-n", name, "-c", str(concurrency), "-l", "info"]
            if acks_late:
                cmd.append("--acks-late")
            if track_started:
                cmd.append("--track-started")
            if result_extended:
                cmd.append("--result-extended")
            if prefetch is not None:
                cmd += ["--prefetch-multiplier", str(prefetch)]
            cmd += list(extra)
        else:
            cmd = [PY, "-m", "celery", "-A", "pyworker_app", "worker", "--pool", "prefork",
                   "-c", str(concurrency), "--without-gossip", "--without-mingle",
                   "--without-heartbeat", "-Q", queue, "-n", name, "-l", "info"]
            e["PYW_ACKS_LATE"] = "1" if acks_late else "0"
            e["PYW_TRACK_STARTED"] = "1" if track_started else "0"
            e["PYW_RESULT_EXTENDED"] = "1" if result_extended else "0"
            if prefetch is not None:
                e["PYW_PREFETCH"] = str(prefetch)
            e["PYTHONPATH"] = str(HERE)
            cwd = str(HERE)
        w = Worker(cmd, e, str(log_path), queue, name, cwd=cwd)
        started.append(w)
        if wait_ready:
            w.wait_ready()
        return w

    yield make
    failed = getattr(request.node, "rep_call", None)
    for w in started:
        w.stop()
        if failed is not None and failed.failed:
            sys.stderr.write("\n---- log of %s (%s)\n%s\n" % (w.name, " ".join(w.argv),
                                                             w.log()[-6000:]))


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def worker(worker_factory):
    """One worker (-c 2) on a fresh queue."""
    return worker_factory()


class Monitor:
    """EventReceiver in a thread; every event also goes into a celery State."""

    # How the receiver connects: Celery's `celery events` reads with connection_for_read();
    # Flower (test_flower_compat) uses connection() and wakeup=True (the 'heartbeat' broadcast).
    connect = "connection_for_read"

    def __init__(self, app, wakeup=False):
        self.app = app
        self.wakeup = wakeup
        self.state = app.events.State()
        self.events = []
        self.lock = threading.RLock()
        self.ready = threading.Event()
        self.recv = None
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_event(self, ev):
        with self.lock:
            self.events.append(dict(ev))
            self.state.event(ev)

    def _run(self):
        try:
            with getattr(self.app, self.connect)() as conn:
                self.recv = self.app.events.Receiver(conn, handlers={"*": self._on_event})
                orig = self.recv.on_consume_ready

                def ready(*a, **kw):
                    orig(*a, **kw)
                    self.ready.set()

                self.recv.on_consume_ready = ready
                self.recv.capture(limit=None, timeout=None, wakeup=self.wakeup)
        except Exception as e:  # noqa: BLE001 (reported by the test)
            self.error = e
            self.ready.set()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(scaled(20)), "event receiver did not start"
        assert self.error is None, self.error
        return self

    def __exit__(self, *exc):
        if self.recv is not None:
            self.recv.should_stop = True
        self.thread.join(scaled(10))

    def of(self, hostname, type_=None):
        with self.lock:
            return [e for e in self.events
                    if e.get("hostname") == hostname and (type_ is None or e["type"] == type_)]

    def task_events(self, uuid):
        with self.lock:
            return [e["type"] for e in self.events if e.get("uuid") == uuid]

    def wait(self, pred, timeout, what):
        def check():
            with self.lock:
                assert self.error is None, self.error
                return pred()
        wait_for(check, timeout, what)
