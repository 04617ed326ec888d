"""Postgres result backend (db+postgresql://, Celery's database backend): a Python Celery 5.2.6
client configured with result_backend='db+postgresql://...' (Debian's SQLAlchemy 1.4 and
psycopg2) reads results, failures and states a worker wrote into celery_taskmeta; a Python
worker and a C worker share the tables (whichever creates them first); a Postgres outage
(connections killed, new ones refused) is survived without losing results (acks_late).

Rows are also read directly (psycopg2): the `result` column is a pickle (the C worker writes
protocol 2, Python protocol 5), so rows are compared unpickled, and byte for byte with
pickle.dumps(value, protocol=2) where Python shares no object.

CELERYC_IT_IMPL=python runs the single-implementation tests against the Python worker.
"""
import datetime
import glob
import os
import pickle
import re
import shutil
import subprocess
import tempfile
import time

import psycopg2
import pytest
from celery import Celery
from celery.exceptions import ChordError, TimeoutError as CeleryTimeout

from conftest import IMPL, TIMEOUT, c_only, free_port, scaled, wait_for

T = "t.integration.tasks."

# information_schema.columns of celery_taskmeta / celery_tasksetmeta as Celery 5.2.6
# (SQLAlchemy 1.4) creates them: tests/fixtures/db-backend-postgres.json schema_psql.
TASKMETA_COLUMNS = [
    ("id", "integer", None, "NO", None),
    ("task_id", "character varying", 155, "YES", None),
    ("status", "character varying", 50, "YES", None),
    ("result", "bytea", None, "YES", None),
    ("date_done", "timestamp without time zone", None, "YES", None),
    ("traceback", "text", None, "YES", None),
    ("name", "character varying", 155, "YES", None),
    ("args", "bytea", None, "YES", None),
    ("kwargs", "bytea", None, "YES", None),
    ("worker", "character varying", 155, "YES", None),
    ("retries", "integer", None, "YES", None),
    ("queue", "character varying", 155, "YES", None),
]
TASKSETMETA_COLUMNS = [
    ("id", "integer", None, "NO", None),
    ("taskset_id", "character varying", 155, "YES", None),
    ("result", "bytea", None, "YES", None),
    ("date_done", "timestamp without time zone", None, "YES", None),
]
INDEXES = [
    ("celery_taskmeta", "CREATE UNIQUE INDEX celery_taskmeta_pkey ON public.celery_taskmeta "
                        "USING btree (id)"),
    ("celery_taskmeta", "CREATE UNIQUE INDEX celery_taskmeta_task_id_key ON "
                        "public.celery_taskmeta USING btree (task_id)"),
    ("celery_tasksetmeta", "CREATE UNIQUE INDEX celery_tasksetmeta_pkey ON "
                           "public.celery_tasksetmeta USING btree (id)"),
    ("celery_tasksetmeta", "CREATE UNIQUE INDEX celery_tasksetmeta_taskset_id_key ON "
                           "public.celery_tasksetmeta USING btree (taskset_id)"),
]
SEQUENCES = [("task_id_sequence", "bigint", 1, 1), ("taskset_id_sequence", "bigint", 1, 1)]

READY = ("SUCCESS", "FAILURE", "REVOKED")
ROW_COLS = ("id", "task_id", "status", "result", "date_done", "traceback", "name", "args",
            "kwargs", "worker", "retries", "queue")


# ---- Helpers ---------------------------------------------------------------------------------

def db_url(pg_url):
    return "db+" + pg_url


def client(pg_url, extended=False):
    a = Celery("dbclient", broker=os.environ["CELERYC_TEST_AMQP_URL"],
               backend=db_url(pg_url))
    a.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                  result_extended=extended, broker_connection_timeout=5,
                  broker_connection_max_retries=3)
    return a


def start_worker(worker_factory, pg_url, impl=None, **kw):
    """A worker (C or Python) whose result backend is the test's database."""
    impl = impl or IMPL
    extra = list(kw.pop("extra", ()))
    if impl == "c":
        extra += ["--result-backend", db_url(pg_url)]
    return worker_factory(impl=impl, extra=extra,
                          env={"CELERY_RESULT_BACKEND": db_url(pg_url)}, **kw)


class DB:
    def __init__(self, url):
        self.url = url
        self.conn = None
        self._connect()

    def _connect(self):
        self.conn = psycopg2.connect(self.url, connect_timeout=10)
        self.conn.autocommit = True

    def query(self, sql, *args):
        try:
            return self._query(sql, args)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            # our own session was among those an outage test killed: once more, anew
            self.conn.close()
            self._connect()
            return self._query(sql, args)

    def _query(self, sql, args):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None

    def has_tables(self):
        return self.query("SELECT to_regclass('celery_taskmeta') IS NOT NULL AND "
                          "to_regclass('celery_tasksetmeta') IS NOT NULL")[0][0]

    def row(self, task_id):
        if not self.has_tables():
            return None
        rows = self.query("SELECT %s FROM celery_taskmeta WHERE task_id = %%s"
                          % ", ".join(ROW_COLS), task_id)
        if not rows:
            return None
        r = dict(zip(ROW_COLS, rows[0]))
        for k in ("result", "args", "kwargs"):
            if r[k] is not None:
                r[k] = bytes(r[k])
        return r

    def wait_row(self, task_id, statuses, timeout=TIMEOUT):
        return wait_for(lambda: (lambda r: r if r and r["status"] in statuses else None)(
            self.row(task_id)), timeout, "row %s in %s" % (task_id, statuses))

    def schema(self):
        cols = {}
        for t in ("celery_taskmeta", "celery_tasksetmeta"):
            cols[t] = [tuple(r) for r in self.query(
                "SELECT column_name, data_type, character_maximum_length, is_nullable, "
                "column_default FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position", t)]
        idx = sorted(tuple(r) for r in self.query(
            "SELECT tablename, indexdef FROM pg_indexes WHERE tablename IN "
            "('celery_taskmeta', 'celery_tasksetmeta')"))
        seqs = sorted(tuple(r) for r in self.query(
            "SELECT sequencename, data_type::text, start_value, increment_by FROM pg_sequences "
            "WHERE sequencename IN ('task_id_sequence', 'taskset_id_sequence')"))
        return cols, idx, seqs

    def close(self):
        self.conn.close()


@pytest.fixture
def db(pg_url):
    d = DB(pg_url)
    yield d
    d.close()


def check_schema(db):
    cols, idx, seqs = db.schema()
    assert cols["celery_taskmeta"] == TASKMETA_COLUMNS
    assert cols["celery_tasksetmeta"] == TASKSETMETA_COLUMNS
    assert idx == sorted(INDEXES)
    assert seqs == SEQUENCES


def naive_recent(dt):
    assert isinstance(dt, datetime.datetime) and dt.tzinfo is None
    # naive UTC (datetime.utcnow()), not local time
    assert abs((datetime.datetime.utcnow() - dt).total_seconds()) < scaled(120)


# ---- Results, failures, states from one worker ----------------------------------------------

VALUES = [
    5, 0, -1, 255, 65536, 2 ** 31, 2 ** 40, -2 ** 62, 2 ** 63 - 1, -2 ** 63,
    2.5, 0.1, -0.0, 1e300,
    "x", "", "café 日本 😀", None, True, False,
    [1, 2.5, None, True, "x"], [], {}, {"a": [1, 2.5, None, True, "x"]},
    {"nested": {"list": [[], {}, ["deep"]], "n": -7}},
]
# Python shares no object in these, so pickle.dumps(v, protocol=2) is what the C worker writes.
BYTE_EXACT = [5, 2 ** 40, -2 ** 62, 2.5, "café 日本 😀", True, [1, 2.5, None, True, "x"],
              {"a": [1, 2.5, None, True, "x"]}]


def test_results_roundtrip(worker_factory, pg_url, db):
    w = start_worker(worker_factory, pg_url)
    app = client(pg_url)
    rs = [(v, app.send_task(T + "identity", args=[v], queue=w.queue)) for v in VALUES]
    for v, r in rs:
        db.wait_row(r.id, READY)  # a Python worker creates the tables at its first store
        got = r.get(timeout=TIMEOUT)
        assert got == v and type(got) is type(v), (v, got)
        assert r.state == "SUCCESS"
        row = db.row(r.id)
        assert row["status"] == "SUCCESS"
        if v is None:
            assert row["result"] is None  # PickleType stores None as NULL
        else:
            assert pickle.loads(row["result"]) == v
        assert row["traceback"] is None
        naive_recent(row["date_done"])
        # result_extended off: the extended columns stay NULL
        assert [row[k] for k in ("name", "args", "kwargs", "worker", "retries", "queue")] == \
            [None] * 6
        if IMPL == "c" and any(v == b and type(v) is type(b) for b in BYTE_EXACT):
            assert row["result"] == pickle.dumps(v, protocol=2), v
    check_schema(db)
    if IMPL == "c":
        # One session per child plus the main process's: a child dropping the connection it
        # inherited through fork() must not end the main process's session.
        sessions = db.query("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                            "current_database() AND application_name = 'celeryc'")[0][0]
        assert sessions == 3
        assert "result backend" not in w.log()


def test_failures(worker_factory, pg_url, db):
    w = start_worker(worker_factory, pg_url)
    app = client(pg_url)
    r = app.send_task("demo.fail", args=["boom"], queue=w.queue)
    db.wait_row(r.id, READY)  # a Python worker creates the tables at its first store
    with pytest.raises(ValueError) as ei:
        r.get(timeout=TIMEOUT)
    assert type(ei.value) is ValueError and ei.value.args == ("boom",)
    assert r.state == "FAILURE"
    assert "ValueError: boom" in r.traceback
    row = db.row(r.id)
    assert pickle.loads(row["result"]) == {"exc_type": "ValueError", "exc_message": ("boom",),
                                           "exc_module": "builtins"}
    assert row["traceback"] == r.traceback and row["traceback"].startswith("Traceback")
    naive_recent(row["date_done"])
    if IMPL == "c":
        # the exact bytes pickle.dumps writes for Celery's exception dict (protocol 2)
        assert row["result"] == pickle.dumps(
            {"exc_type": "ValueError", "exc_message": ("boom",), "exc_module": "builtins"},
            protocol=2)
    # An exception with several arguments of other types, from a module the client lacks.
    r = app.send_task(T + "fail", args=[42, "two"], queue=w.queue)
    with pytest.raises(Exception) as ei:
        r.get(timeout=TIMEOUT)
    assert type(ei.value).__name__ == "ExpectedException"
    assert ei.value.args == ("Task expected to fail", 42, "two")
    assert pickle.loads(db.row(r.id)["result"]) == {
        "exc_type": "ExpectedException", "exc_message": ("Task expected to fail", 42, "two"),
        "exc_module": "t.integration.tasks"}
    # Unknown task: NotRegistered stored by the worker's main process.
    r = app.send_task("app.nope", queue=w.queue)
    with pytest.raises(Exception) as ei:
        r.get(timeout=TIMEOUT)
    assert type(ei.value).__name__ == "NotRegistered"


def test_started_then_success_extended(worker_factory, pg_url, db):
    """track_started + result_extended: STARTED (date_done NULL, {'pid', 'hostname'}) then
    SUCCESS in place (same id), extended columns as Celery writes them."""
    w = start_worker(worker_factory, pg_url, track_started=True, result_extended=True)
    app = client(pg_url, extended=True)
    r = app.send_task("demo.sleep", args=[scaled(2)], kwargs={}, queue=w.queue)
    started = db.wait_row(r.id, ("STARTED",))
    assert started["date_done"] is None
    info = pickle.loads(started["result"])
    assert set(info) == {"pid", "hostname"} and info["hostname"] == w.name
    assert r.state == "STARTED" and r.info == info
    assert r.get(timeout=TIMEOUT) == scaled(2)
    done = db.row(r.id)
    assert done["id"] == started["id"]  # updated in place
    assert done["status"] == "SUCCESS"
    naive_recent(done["date_done"])
    assert done["name"] == "demo.sleep"
    # result_serializer bytes, json.dumps spelling
    assert done["args"] == ("[%s]" % (scaled(2),)).encode() or \
        done["args"] == ("[%r]" % (scaled(2),)).encode()
    assert done["kwargs"] == b"{}"
    assert done["worker"] == w.name and done["retries"] == 0 and done["queue"] == w.queue
    # The client reads the extended fields back.
    assert (r.name, r.args, r.kwargs, r.worker, r.retries, r.queue) == \
        ("demo.sleep", [scaled(2)], {}, w.name, 0, w.queue)
    assert db.query("SELECT count(*) FROM celery_taskmeta")[0][0] == 1


def test_retry_state(worker_factory, pg_url, db):
    w = start_worker(worker_factory, pg_url, result_extended=True)
    app = client(pg_url, extended=True)
    r = app.send_task(T + "retry_once", kwargs={"countdown": scaled(3)}, queue=w.queue)
    retry = db.wait_row(r.id, ("RETRY",))
    assert retry["date_done"] is None and retry["retries"] == 0
    assert r.state == "RETRY"
    # self.retry() without exc: result None (NULL), the Retry's traceback as text
    assert retry["result"] is None and "Retry" in retry["traceback"]
    assert r.get(timeout=TIMEOUT) == 1
    done = db.row(r.id)
    assert done["id"] == retry["id"] and done["status"] == "SUCCESS" and done["retries"] == 1


@c_only
def test_task_id_too_long_is_not_requeued_forever(worker_factory, pg_url, db):
    """celery_taskmeta.task_id is varchar(155): a longer id can never be stored. The worker
    says so and carries on (acks_late: no endless requeue), like any lost result."""
    w = start_worker(worker_factory, pg_url, acks_late=True)
    app = client(pg_url)
    long_id = "x" * 200
    app.send_task("demo.add", args=[1, 2], queue=w.queue, task_id=long_id)
    w.wait_log(r"result not stored in Postgres: task id longer than 155", TIMEOUT)
    r = app.send_task("demo.add", args=[2, 3], queue=w.queue)
    assert r.get(timeout=TIMEOUT) == 5
    assert w.log().count("demo.add[%s] succeeded" % long_id) == 1
    assert "requeueing" not in w.log()


# ---- Python and C workers on the same tables --------------------------------------------------

def test_backend_cleanup_deletes_expired_rows(worker_factory, pg_url, db):
    """celery.backend_cleanup (what Celery's beat runs daily for this backend) deletes the
    task and group rows whose date_done is older than result_expires (one day by default),
    as Celery's DatabaseBackend.cleanup() does, and keeps the others."""
    w = start_worker(worker_factory, pg_url)
    app = client(pg_url)
    old, new = [app.send_task(T + "identity", args=[i], queue=w.queue) for i in (1, 2)]
    for r in (old, new):
        db.wait_row(r.id, READY)
    db.query("UPDATE celery_taskmeta SET date_done = date_done - interval '2 days' "
             "WHERE task_id = %s", old.id)
    db.query("INSERT INTO celery_tasksetmeta (id, taskset_id, result, date_done) VALUES "
             "(nextval('taskset_id_sequence'), 'old-set', '\\x80'::bytea, "
             " (now() AT TIME ZONE 'UTC') - interval '25 hours'), "
             "(nextval('taskset_id_sequence'), 'new-set', '\\x80'::bytea, "
             " (now() AT TIME ZONE 'UTC') - interval '23 hours')")
    cleanup = app.send_task("celery.backend_cleanup", queue=w.queue)
    assert cleanup.get(timeout=TIMEOUT) is None
    assert db.row(old.id) is None
    assert db.row(new.id)["status"] == "SUCCESS"
    assert db.row(cleanup.id)["status"] == "SUCCESS"
    assert [r[0] for r in db.query("SELECT taskset_id FROM celery_tasksetmeta")] == ["new-set"]


def _run_set(app, queue):
    """The same tasks on one worker: [(AsyncResult, expect)]."""
    out = []
    for v in (5, {"a": [1, 2.5, None, True, "x"]}, "café", 2 ** 40, [0.1, -3]):
        out.append(app.send_task(T + "identity", args=[v], queue=queue))
    out.append(app.send_task("demo.add", args=[2, 3], queue=queue))
    out.append(app.send_task("demo.fail", args=["boom"], queue=queue))
    return out


@pytest.mark.parametrize("first", ["python", "c"])
def test_python_and_c_workers_share_tables(worker_factory, pg_url, db, first):
    """Whichever worker creates the tables first, both write the same rows for the same
    tasks (compared unpickled), and one client reads both."""
    second = "c" if first == "python" else "python"
    app = client(pg_url, extended=True)
    wa = start_worker(worker_factory, pg_url, impl=first, result_extended=True,
                      track_started=True)
    ra = _run_set(app, wa.queue)
    wait_for(lambda: all(db.row(r.id) and db.row(r.id)["status"] in ("SUCCESS", "FAILURE")
                         for r in ra), TIMEOUT, "first worker's rows")
    check_schema(db)  # as the first worker created them
    wb = start_worker(worker_factory, pg_url, impl=second, result_extended=True,
                      track_started=True)
    rb = _run_set(app, wb.queue)
    for a, b in zip(ra, rb):
        for r in (a, b):
            try:
                r.get(timeout=TIMEOUT)
            except ValueError:
                pass
        x, y = db.row(a.id), db.row(b.id)
        assert x["status"] == y["status"]
        assert pickle.loads(x["result"]) == pickle.loads(y["result"])
        for k in ("name", "args", "kwargs", "retries"):
            assert x[k] == y[k], (k, x[k], y[k])
        assert (x["worker"], y["worker"]) == (wa.name, wb.name)
        assert x["queue"] == wa.queue and y["queue"] == wb.queue
        assert (x["traceback"] is None) == (y["traceback"] is None)
        assert x["date_done"] is not None and y["date_done"] is not None
    check_schema(db)
    assert db.query("SELECT count(*) FROM celery_taskmeta")[0][0] == 2 * len(ra)


# ---- Outages --------------------------------------------------------------------------------

def _block(admin, dbname, on):
    """Refuse new connections to the test database and end the current ones (what a Postgres
    restart looks like to its clients), or allow them again. `admin`: a connection to another
    database (a database cannot refuse connections to itself)."""
    admin.query("ALTER DATABASE %s ALLOW_CONNECTIONS %s" % (dbname, "false" if on else "true"))
    if on:
        _kill_sessions(admin, dbname)


def _kill_sessions(admin, dbname):
    admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()", dbname)


@pytest.fixture
def admin(pg_url):
    """A connection to the services' own database, and the test database's name."""
    a = DB(os.environ["CELERYC_TEST_PG_URL"])
    name = pg_url.rsplit("/", 1)[1]
    yield a, name
    a.query("ALTER DATABASE %s ALLOW_CONNECTIONS true" % name)
    a.close()


@c_only
def test_connections_killed_mid_run(worker_factory, pg_url, db, admin):
    """Sessions killed (pg_terminate_backend) and connections refused for a few seconds
    while tasks finish: no crash, every result lands (the stores retry)."""
    w = start_worker(worker_factory, pg_url, acks_late=True, concurrency=2)
    app = client(pg_url)
    rs = [app.send_task("demo.sleep", args=[0.2], queue=w.queue) for _ in range(20)]
    db.wait_row(rs[2].id, ("SUCCESS",))
    adm, dbname = admin
    # Kill every session twice (the children's and the main process's), then an outage.
    for _ in range(2):
        _kill_sessions(adm, dbname)
        time.sleep(0.3)
    _block(adm, dbname, True)
    time.sleep(scaled(4))
    _block(adm, dbname, False)
    for r in rs:
        assert r.get(timeout=TIMEOUT) == 0.2
    assert db.query("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")[0][0] == 20
    assert w.proc.poll() is None
    assert "retrying" in w.log()
    # The main process's connection was killed too: its next store (NotRegistered) works.
    r = app.send_task("app.nope", queue=w.queue)
    with pytest.raises(Exception):
        r.get(timeout=TIMEOUT)
    assert db.row(r.id)["status"] == "FAILURE"


@c_only
def test_outage_longer_than_retries_acks_late(worker_factory, pg_url, db, admin):
    """Postgres away for longer than the store retries (~20 s): with acks_late the message is
    requeued, not acked, and the task's result lands once Postgres is back."""
    w = start_worker(worker_factory, pg_url, acks_late=True, concurrency=1)
    app = client(pg_url)
    r = app.send_task("demo.sleep", args=[1], queue=w.queue)
    w.wait_log(r"demo.sleep\[%s\] received" % r.id, TIMEOUT)
    adm, dbname = admin
    _block(adm, dbname, True)
    try:
        w.wait_log(r"result not stored; requeueing", 60)
    finally:
        _block(adm, dbname, False)
    assert r.get(timeout=TIMEOUT) == 1
    assert db.row(r.id)["status"] == "SUCCESS"
    assert w.proc.poll() is None
    assert len(re.findall(r"demo.sleep\[%s\] succeeded" % r.id, w.log())) == 2


class PrivatePostgres:
    """A throw-away Postgres cluster on a free loopback port that a test may stop and start
    (the services' own server is shared by the whole session). Trust auth, loopback only; as
    root it runs as the system user postgres, as scripts/services.sh does."""

    def __init__(self):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            pytest.skip("no initdb")
        self.bin = os.path.dirname(bins[-1])
        self.dir = tempfile.mkdtemp(prefix="ccit-pg-")
        self.data = os.path.join(self.dir, "data")
        self.port = free_port()
        self.drop = []
        os.makedirs(self.data)
        if os.geteuid() == 0:
            self.drop = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(self.data, "postgres", "postgres")
        os.chmod(self.dir, 0o755)
        os.chmod(self.data, 0o700)
        self._run("initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("listen_addresses = '127.0.0.1'\nport = %d\nunix_socket_directories = '%s'\n"
                    "fsync = off\nlog_min_messages = warning\n" % (self.port, self.dir))
        self.start()
        self.url = "postgresql://postgres@127.0.0.1:%d/postgres" % self.port

    def _run(self, tool, *args):
        subprocess.run(self.drop + [os.path.join(self.bin, tool)] + list(args), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=scaled(60), cwd=self.dir)

    def start(self):
        self._run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-w",
                  "-t", str(int(scaled(30))), "start")

    def stop(self, mode="fast"):
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", str(int(scaled(30))),
                  "stop")

    def close(self):
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def private_pg(services):
    p = PrivatePostgres()
    yield p
    p.close()


@c_only
def test_postgres_restart_mid_run(worker_factory, private_pg):
    """The server stopped (sessions closed), down for a few seconds, started again, while
    tasks finish: no crash, every result lands (acks_late)."""
    w = start_worker(worker_factory, private_pg.url, acks_late=True, concurrency=2)
    db = DB(private_pg.url)
    app = client(private_pg.url)
    rs = [app.send_task("demo.sleep", args=[0.2], queue=w.queue) for _ in range(20)]
    db.wait_row(rs[2].id, ("SUCCESS",))
    db.close()
    private_pg.stop()
    time.sleep(scaled(3))
    private_pg.start()
    db = DB(private_pg.url)
    try:
        for r in rs:
            assert r.get(timeout=TIMEOUT) == 0.2
        assert db.query("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")[0][0] \
            == 20
    finally:
        db.close()
    assert w.proc.poll() is None
    assert "stores succeed again" in w.log()


# ---- Chords ---------------------------------------------------------------------------------

@c_only
def test_chord_fails_clearly(worker_factory, pg_url, db):
    """The database backend joins chords with celery.chord_unlock, which reads the header's
    results; this worker reads them from Redis only: the chord body fails with ChordError
    instead of waiting forever."""
    from celery import chord, signature
    w = start_worker(worker_factory, pg_url)
    app = client(pg_url)
    header = [signature(T + "identity", args=[i], app=app).set(queue=w.queue) for i in (1, 2)]
    body = signature(T + "tsum", app=app).set(queue=w.queue)
    res = chord(header)(body)
    with pytest.raises(ChordError) as ei:
        res.get(timeout=TIMEOUT)
    assert "Redis" in str(ei.value)
