"""celeryc_jobs: job-run tracking for Python Celery 5.2 workers.

`celeryc beat` sends every job run as a task message with the AMQP header ``celeryc_run`` (the
run id; the message's task id is the run's ``task_id``). celeryc workers started with
``--job-store`` mark such runs R, then S/F/P/W/X. A Python Celery worker ignores the header,
so its runs stay Q and, with the default ``forbid`` concurrency policy, the job never runs
again. Import this module in the worker's app to track them the same way::

    import celeryc_jobs
    celeryc_jobs.install(app, "postgresql://user:pass@db:5432/celeryc")
    # or: celeryc_jobs.install(app)   # reads CELERYC_JOB_STORE; unset: a no-op

What it does, in the process that executes the task (a prefork child, the solo worker,
a threads-pool thread):

- ``task_prerun``: Q -> R (started_at, heartbeat_at, hostname), the SQL of celeryc's
  ``cc_jobstore_run_start``. A run already C (being stopped) becomes X, a run already X stays X,
  and neither is executed: the module's ``before_start`` (Celery 5.2 calls ``Task.before_start``
  inside the trace, where ``Ignore`` is honoured; signal receivers cannot stop a task) stores the
  result REVOKED, as Celery stores a revoked task, and raises ``celery.exceptions.Ignore``.
- while the task runs: a daemon thread refreshes ``heartbeat_at`` of the process's running runs
  in one statement every ``heartbeat_interval`` seconds (10); Python ``logging`` records emitted
  in the task's thread (except Celery's, kombu's and amqp's own loggers; ``print`` output
  redirected by the worker is kept) are buffered and written to ``celeryc.run_logs`` with one
  INSERT per batch: at 200 lines, at the first record 1 s after the oldest unwritten one, at
  once for a record that follows a quiet second (the first one too), and at the end.
- ``task_postrun``: S (P / W when the task called ``partial`` / ``warning``: P wins), F with
  ``traceback.format_exception_only``'s line (``ValueError: kaput``), nothing for RETRY or a
  requeued Reject (the run stays R), S for Ignore. ``task.retry()`` inside a run: the retry
  message gets the ``celeryc_run`` header back (``before_task_publish``; Celery 5.2 drops
  custom headers on retry), so the next attempt goes on with the same run. Between attempts
  nothing heartbeats the run: a countdown longer than the beat's
  ``--run-heartbeat-timeout`` gets it failed by the reaper.
- in the worker's main process: ``task_revoked`` (``revoke(terminate=True)``: F
  ``TaskRevokedError: terminated``, which the store turns into X when the run was C;
  expired: F ``TaskRevokedError: expired``; revoked before it started: X) and ``task_failure``
  for what only the main process sees (``WorkerLostError``, hard ``TimeLimitExceeded``): F.

Task API (no-ops outside a tracked run)::

    celeryc_jobs.progress(processed, errored)   # counters, the last call wins (None/-1: unchanged)
    celeryc_jobs.partial("12 of 40 failed")     # end as P when the task succeeds
    celeryc_jobs.warning("source was slow")     # end as W (P wins over W)
    celeryc_jobs.run_id()                       # the run id, or None

Store errors never fail a task: every statement is retried once on a fresh connection; if that
fails too the store counts as away for 5 s (log records are dropped and counted, one warning
per run), except the outcome, which always gets one attempt. One psycopg2 connection per
process (autocommit, session time zone UTC), opened on the first job run; a forked child never
touches its parent's connection.
"""
import collections
import logging
import os
import socket
import threading
import time
import traceback

__all__ = ["install", "progress", "partial", "warning", "run_id", "HEADER"]

HEADER = "celeryc_run"
LOG_BATCH = 200  # CC_JOBRUN_LOG_BATCH
LOG_QUIET_S = 1.0
AWAY_S = 5.0
_EXCLUDED_LOGGERS = ("celery", "kombu", "amqp", "billiard", "celeryc_jobs", "psycopg2")

log = logging.getLogger("celeryc_jobs")

# ---- SQL: the statements of src/jobs/jobstore.c, unchanged in meaning ----------------------------

SQL_START = (
    "UPDATE celeryc.runs AS r SET "
    "status = CASE WHEN r.status = 'Q' THEN 'R' ELSE 'X' END, "
    "started_at = CASE WHEN r.status = 'Q' THEN now() ELSE r.started_at END, "
    "heartbeat_at = now(), hostname = %(host)s::text, "
    "finished_at = CASE WHEN r.status = 'Q' THEN NULL ELSE now() END, "
    "message = CASE WHEN r.status = 'Q' THEN r.message "
    "ELSE 'cancelled before it started' END "
    "WHERE r.task_id = %(tid)s AND r.status IN ('Q', 'C') RETURNING r.status")
SQL_STATUS = "SELECT status FROM celeryc.runs WHERE task_id = %(tid)s"
SQL_FINISH = (
    "UPDATE celeryc.runs AS r SET "
    "status = CASE WHEN r.status = 'C' AND %(st)s::text NOT IN ('S', 'P', 'W') "
    "THEN 'X' ELSE %(st)s::text END, "
    "message = COALESCE(%(msg)s::text, r.message), "
    "processed = CASE WHEN %(pr)s::bigint < 0 THEN r.processed ELSE %(pr)s::bigint END, "
    "errored = CASE WHEN %(er)s::bigint < 0 THEN r.errored ELSE %(er)s::bigint END, "
    "finished_at = now(), heartbeat_at = now() "
    "WHERE r.task_id = %(tid)s AND r.status IN ('Q', 'R', 'C')")
SQL_HEARTBEAT = ("UPDATE celeryc.runs SET heartbeat_at = now() "
                 "WHERE task_id = ANY(%(tids)s::text[]) AND status IN ('R', 'C')")
SQL_LOGS = (
    "INSERT INTO celeryc.run_logs (run_id, timestamp, level, message, task_id) "
    "SELECT r.id, ('epoch'::timestamptz + (l.ts)::bigint * interval '1 microsecond'), "
    "l.level, l.message, l.task_id "
    "FROM unnest(%(ts)s::bigint[], %(lv)s::text[], %(msg)s::text[], %(tid)s::text[]) "
    "WITH ORDINALITY AS l(ts, level, message, task_id, ord) "
    "JOIN celeryc.runs r ON r.task_id = l.task_id ORDER BY l.ord")


class StoreAway(Exception):
    """The job store failed recently; only outcomes are tried until AWAY_S has passed."""


def _dsn(url):
    if url.startswith("db+"):
        url = url[3:]
    if url.startswith("postgresql+psycopg2://"):
        url = "postgresql://" + url[len("postgresql+psycopg2://"):]
    return url


class _Store:
    """One psycopg2 connection per process, behind a lock (task thread + heartbeat thread)."""

    def __init__(self, url):
        self.dsn = _dsn(url)
        self.lock = threading.RLock()
        self.conn = None
        self.pid = os.getpid()
        self.away_until = 0.0
        self._orphans = []  # connections inherited through fork(): never closed here

    def _connect(self):
        import psycopg2
        conn = psycopg2.connect(self.dsn, connect_timeout=5, application_name="celeryc_jobs",
                                options="-c timezone=UTC", keepalives=1, keepalives_idle=30,
                                keepalives_interval=10, keepalives_count=3)
        conn.autocommit = True
        return conn

    def after_fork(self):
        # The parent's connection must not be used, nor closed (PQfinish would send Terminate
        # on the socket the parent still uses): keep a reference, drop it on os._exit.
        with self.lock:
            if self.conn is not None:
                self._orphans.append(self.conn)
            self.conn = None
            self.pid = os.getpid()
            self.away_until = 0.0

    def _drop(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
        self.conn = None

    def call(self, fn, essential=False):
        """fn(cursor) on this process's connection; one retry on a fresh connection."""
        import psycopg2
        with self.lock:
            if self.pid != os.getpid():
                self.after_fork()
            if not essential and time.monotonic() < self.away_until:
                raise StoreAway("job store unreachable (retrying in a few seconds)")
            for attempt in (1, 2):
                try:
                    if self.conn is None or self.conn.closed:
                        self.conn = self._connect()
                    with self.conn.cursor() as cur:
                        r = fn(cur)
                    self.away_until = 0.0
                    return r
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    self._drop()
                    if attempt == 2:
                        self.away_until = time.monotonic() + AWAY_S
                        raise
                except psycopg2.Error:
                    self._drop()
                    raise

    # -- the worker-side operations of src/jobs/jobstore.h --

    def run_start(self, task_id, hostname):
        """'R' started, 'X' cancelled (do not run), other letter: left as it was (a
        redelivery), None: no run with this task id."""
        def op(cur):
            cur.execute(SQL_START, {"tid": task_id, "host": hostname})
            row = cur.fetchone()
            if row is not None:
                return row[0]
            cur.execute(SQL_STATUS, {"tid": task_id})
            row = cur.fetchone()
            return row[0] if row is not None else None
        return self.call(op)

    def run_finish(self, task_id, status, message, processed=-1, errored=-1):
        def op(cur):
            cur.execute(SQL_FINISH, {"tid": task_id, "st": status, "msg": message,
                                     "pr": -1 if processed is None else int(processed),
                                     "er": -1 if errored is None else int(errored)})
        return self.call(op, essential=True)

    def runs_heartbeat(self, task_ids):
        if task_ids:
            self.call(lambda cur: cur.execute(SQL_HEARTBEAT, {"tids": list(task_ids)}))

    def run_logs_add(self, lines):
        """lines: [(ts_us, level, message, task_id)], one statement."""
        if not lines:
            return

        def op(cur):
            cur.execute(SQL_LOGS, {"ts": [ln[0] for ln in lines], "lv": [ln[1] for ln in lines],
                                   "msg": [ln[2] for ln in lines],
                                   "tid": [ln[3] for ln in lines]})
        self.call(op)


# ---- Per-run state -----------------------------------------------------------------------

class _Run:
    __slots__ = ("run_id", "task_id", "task_name", "cancelled", "processed", "errored",
                 "status", "message", "lines", "oldest", "last_line", "dropped", "flushing",
                 "warned")

    def __init__(self, run_id, task_id, task_name):
        self.run_id = run_id
        self.task_id = task_id
        self.task_name = task_name
        self.cancelled = False
        self.processed = -1
        self.errored = -1
        self.status = None  # 'P' / 'W' from the task API
        self.message = None
        self.lines = []
        self.oldest = 0.0
        self.last_line = 0.0
        self.dropped = 0
        self.flushing = False
        self.warned = False


class _State:
    def __init__(self):
        self.store = None
        self.app = None
        self.heartbeat_interval = 10.0
        self.local = threading.local()
        self.lock = threading.Lock()
        self.running = set()  # task ids of this process's runs R
        self.hb_thread = None
        self.hb_pid = None
        self.hb_wake = threading.Event()
        self.handler = None
        self.received = collections.OrderedDict()  # main process: task id -> run id
        self.hostname = None


_st = _State()


def _current():
    return getattr(_st.local, "run", None)


def _run_id_of(request):
    """The celeryc_run header as it reaches a task: Celery copies a protocol-2 message's
    headers into the request, so custom headers are request attributes (Context.__dict__);
    `request.headers` holds them when the task was sent with apply_async(headers=...) through
    protocol 1 or by eager calls."""
    if request is None:
        return None
    v = getattr(request, HEADER, None)
    if v is None:
        get = getattr(request, "get", None)
        if get is not None:
            try:
                v = get(HEADER)
            except Exception:
                v = None
    if v is None:
        hdrs = getattr(request, "headers", None)
        if isinstance(hdrs, dict):
            v = hdrs.get(HEADER)
    return str(v) if v else None


def _oneline(e):
    return " ".join(str(e).split())


def _exc_line(exc):
    try:
        return traceback.format_exception_only(type(exc), exc)[-1].strip()
    except Exception:
        return type(exc).__name__


def _hostname(task):
    h = getattr(task.request, "hostname", None)
    return h or _st.hostname or socket.gethostname()


# ---- Logs ---------------------------------------------------------------------------------

def _flush(run, essential=False):
    if not run.lines or run.flushing:
        return
    lines, run.lines = run.lines, []
    run.flushing = True
    try:
        if essential:
            # At the end: one attempt even right after a failure (as the outcome).
            _st.store.away_until = 0.0
        _st.store.run_logs_add(lines)
    except Exception as e:
        run.dropped += len(lines)
        if not run.warned:
            run.warned = True
            log.warning("Task %s[%s]: job run %s: log lines dropped: %s", run.task_name,
                        run.task_id, run.run_id, _oneline(e))
    finally:
        run.flushing = False


class _RunLogHandler(logging.Handler):
    """Buffers the records of the thread's current run; attached to the root logger and to
    Celery's `celery.task` logger (which does not propagate)."""

    def __init__(self):
        super().__init__(logging.NOTSET)
        self._last = threading.local()

    def emit(self, record):
        run = _current()
        if run is None or run.flushing or run.cancelled:
            return
        if getattr(self._last, "rec", None) is record:  # seen through two loggers
            return
        self._last.rec = record
        name = record.name or ""
        if name != "celery.redirected" and name.split(".", 1)[0] in _EXCLUDED_LOGGERS:
            return
        try:
            msg = record.getMessage()
            if record.exc_info and record.exc_info[0] is not None:
                msg += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
        except Exception:
            msg = str(record.msg)
        now = time.monotonic()
        if not run.lines:
            run.oldest = now
        run.lines.append((int(record.created * 1e6), record.levelname, msg, run.task_id))
        quiet = now - run.last_line >= LOG_QUIET_S
        run.last_line = now
        if len(run.lines) >= LOG_BATCH or quiet or now - run.oldest >= LOG_QUIET_S:
            _flush(run)


def _attach_handler():
    h = _st.handler
    for lg in (logging.getLogger(), logging.getLogger("celery.task")):
        if h not in lg.handlers:
            lg.addHandler(h)


# ---- Heartbeats -----------------------------------------------------------------------------

def _heartbeat_loop(pid):
    while _st.hb_pid == pid == os.getpid():
        _st.hb_wake.wait(_st.heartbeat_interval)
        _st.hb_wake.clear()
        with _st.lock:
            ids = list(_st.running)
        if not ids:
            continue
        try:
            _st.store.runs_heartbeat(ids)
        except Exception as e:
            log.debug("job run heartbeat failed: %s", e)


def _ensure_process_setup():
    pid = os.getpid()
    if _st.hb_pid != pid:
        with _st.lock:
            if _st.hb_pid != pid:
                _st.running = set()
                _st.hb_pid = pid
                t = threading.Thread(target=_heartbeat_loop, args=(pid,),
                                     name="celeryc-jobs-heartbeat", daemon=True)
                _st.hb_thread = t
                t.start()
    _attach_handler()


# ---- Signal receivers ---------------------------------------------------------------------

def _on_prerun(sender=None, task_id=None, task=None, **_):
    if _st.store is None or task is None:
        return
    rid = _run_id_of(task.request)
    if rid is None:
        return
    _st.local.run = None
    try:
        _ensure_process_setup()
        run = _Run(rid, task_id, task.name)
        try:
            st = _st.store.run_start(task_id, _hostname(task))
        except Exception as e:
            log.error("Task %s[%s]: job run %s: could not mark it running: %s (the task runs; "
                      "its outcome is still tried)", task.name, task_id, rid, _oneline(e))
            st = "R"
        if st is None:
            log.warning("Task %s[%s]: job run %s: no run with this task id in the job store; "
                        "the task runs untracked", task.name, task_id, rid)
            return
        if st == "X":
            run.cancelled = True
            log.info("Task %s[%s]: job run %s was cancelled before it started: not run",
                     task.name, task_id, rid)
        else:
            with _st.lock:
                _st.running.add(task_id)
        _st.local.run = run
    except Exception as e:  # never fail the task
        log.error("celeryc_jobs: task_prerun: %r", e)


def _before_start(self, task_id, args, kwargs):
    """Installed as the app's Task.before_start: skips a run cancelled before it started."""
    run = _current()
    if run is not None and run.cancelled and run.task_id == task_id:
        from celery.exceptions import Ignore
        try:
            self.backend.mark_as_revoked(task_id, "revoked", request=self.request)
        except Exception as e:
            log.error("celeryc_jobs: could not store REVOKED for %s: %r", task_id, e)
        raise Ignore()
    orig = _st.orig_before_start
    if orig is not None:
        return orig(self, task_id, args, kwargs)
    return None


def _outcome(state, retval, run):
    """(status letter or None, message) for Celery's final state of the trace."""
    if state == "SUCCESS":
        if run.status in ("P", "W"):
            return run.status, run.message
        return "S", None
    if state == "IGNORED":
        return "S", None
    if state == "RETRY":
        return None, None
    if state == "REJECTED":
        if getattr(retval, "requeue", False):
            return None, None
        return "F", _exc_line(retval) if isinstance(retval, BaseException) else "Reject"
    if isinstance(retval, BaseException):
        return "F", _exc_line(retval)
    return "F", str(retval) if retval is not None else state


def _on_postrun(sender=None, task_id=None, task=None, retval=None, state=None, **_):
    run = _current()
    if run is None or run.task_id != task_id:
        return
    _st.local.run = None
    with _st.lock:
        _st.running.discard(task_id)
    if run.cancelled:
        return
    try:
        status, message = _outcome(state, retval, run)
        _flush(run, essential=True)
        if status is not None:
            try:
                _st.store.run_finish(task_id, status, message, run.processed, run.errored)
            except Exception as e:
                log.error("Task %s[%s]: job run %s: could not record its outcome %s: %s (the "
                          "run stays R until the beat's reaper fails it)", run.task_name,
                          task_id, run.run_id, status, _oneline(e))
        if run.dropped:
            log.warning("Task %s[%s]: job run %s: %d log line(s) dropped (job store "
                        "unreachable)", run.task_name, task_id, run.run_id, run.dropped)
    except Exception as e:
        log.error("celeryc_jobs: task_postrun: %r", e)


def _on_before_publish(sender=None, headers=None, **_):
    """A retry (task.retry() publishes the same task id from inside the run) keeps the run:
    Celery 5.2 does not copy custom headers into the retry message, so add ours back."""
    run = _current()
    if run is None or not isinstance(headers, dict) or headers.get("id") != run.task_id:
        return
    headers.setdefault(HEADER, run.run_id)


def _finish_quietly(task_id, status, message, what):
    try:
        _st.store.run_finish(task_id, status, message)
    except Exception as e:
        log.error("celeryc_jobs: task %s: could not record %s (%s): %s", task_id, status,
                  what, _oneline(e))


def _on_received(sender=None, request=None, **_):
    """Main process: remember which task ids are job runs (for task_failure below)."""
    try:
        rid = _run_id_of(request) or (request.request_dict or {}).get(HEADER)
    except Exception:
        rid = None
    if rid:
        d = _st.received
        d[request.id] = rid
        while len(d) > 10000:
            d.popitem(last=False)


def _on_revoked(sender=None, request=None, terminated=False, signum=None, expired=False, **_):
    if _st.store is None or request is None:
        return
    rid = _run_id_of(request)
    tid = getattr(request, "id", None)
    if not rid or not tid:
        return
    _st.received.pop(tid, None)
    if terminated:
        _finish_quietly(tid, "F", "TaskRevokedError: terminated", "terminated")
    elif expired:
        _finish_quietly(tid, "F", "TaskRevokedError: expired", "expired")
    else:
        _finish_quietly(tid, "X", "revoked before it started", "revoked")


def _on_failure(sender=None, task_id=None, exception=None, **_):
    # The trace's failures are handled in task_postrun; here only what the main process
    # decides (the child is gone): WorkerLostError, hard time limit.
    if _st.store is None or task_id is None or _current() is not None:
        return
    name = type(exception).__name__
    if name not in ("WorkerLostError", "TimeLimitExceeded"):
        return
    if _st.received.pop(task_id, None) is None:
        return
    _finish_quietly(task_id, "F", "%s: %s" % (name, exception), name)


# ---- Public API -----------------------------------------------------------------------------

def run_id():
    """The current job run's id, or None (not a job run, or not tracked)."""
    run = _current()
    return run.run_id if run is not None else None


def progress(processed=None, errored=None):
    """Set the run's counters (None or negative: unchanged); written with the outcome."""
    run = _current()
    if run is None:
        return
    if processed is not None and processed >= 0:
        run.processed = int(processed)
    if errored is not None and errored >= 0:
        run.errored = int(errored)


def partial(msg):
    """End the run as P (partial success) with msg when the task returns normally."""
    run = _current()
    if run is not None:
        run.status, run.message = "P", str(msg)


def warning(msg):
    """End the run as W (warning) with msg when the task returns normally; P wins."""
    run = _current()
    if run is not None and run.status != "P":
        run.status, run.message = "W", str(msg)


def install(app, job_store_url=None, heartbeat_interval=10.0):
    """Hook the signals for `app`'s worker. job_store_url: else $CELERYC_JOB_STORE; neither:
    nothing is installed (returns False). Call once, at import of the app module."""
    from celery import signals

    url = job_store_url or os.environ.get("CELERYC_JOB_STORE") or None
    if not url:
        return False
    if _st.store is not None:
        return True
    _st.store = _Store(url)
    _st.app = app
    _st.heartbeat_interval = float(heartbeat_interval)
    _st.handler = _RunLogHandler()
    # Task.before_start (Celery >= 5.2) runs inside the trace, where Ignore is honoured.
    base = app.Task
    _st.orig_before_start = base.__dict__.get("before_start")
    base.before_start = _before_start
    signals.task_prerun.connect(_on_prerun, weak=False)
    signals.task_postrun.connect(_on_postrun, weak=False)
    signals.task_revoked.connect(_on_revoked, weak=False)
    signals.task_failure.connect(_on_failure, weak=False)
    signals.task_received.connect(_on_received, weak=False)
    signals.before_task_publish.connect(_on_before_publish, weak=False)

    @signals.celeryd_init.connect(weak=False)
    def _init(sender=None, **_):
        _st.hostname = sender

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_child)
    return True


_State.orig_before_start = None


def _after_fork_child():
    if _st.store is not None:
        _st.store.lock = threading.RLock()  # another thread may have held it at fork()
        _st.store.after_fork()
    _st.hb_pid = None
    _st.local = threading.local()
    _st.running = set()
    _st.lock = threading.Lock()
    _st.hb_wake = threading.Event()
