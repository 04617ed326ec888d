"""`celeryc beat` under a frozen leader (issue #14): a leader stopped with SIGSTOP (a VM pause,
a partition with the TCP connections still open) must neither block the failover nor, once
resumed, publish what the new leader publishes.

- A lease operation never waits on a lock held by another session for more than a fraction of
  the lease, and a session left idle in a transaction by a frozen beat is ended by the server
  (idle_in_transaction_session_timeout, a quarter of the lease).
- Every message of a run or a schedule-file slot is published once: a run is sent only by the
  leader that won its send claim, a deposed leader does not publish once its lease is no
  longer valid on its own clock (docs/ARCHITECTURE.md, "Beat", HA invariants).

The random-point test freezes the leader CELERYC_BEAT_FREEZE_ITERATIONS times (6 by default,
so CI stays short; the issue's figure is 20) for 3 lease periods each and counts the task ids
of every message the beats published, with a consumer bound to the queue."""
import collections
import json
import os
import random
import signal
import statistics
import subprocess
import threading
import time
import uuid

import pytest

from beatutil import beat_factory, pg, pg_query, write_schedule  # noqa: F401 (fixture)
from conftest import c_only, celeryc_bin, scaled, unique_queue, wait_for
from test_beat import _declare, _delete, _insert_job

pytestmark = c_only

TTL = 2.0
ITERATIONS = int(os.environ.get("CELERYC_BEAT_FREEZE_ITERATIONS", "6"))


def _lease(url):
    """(holder, epoch, acquired_at as a Unix time) of lease 'beat', or None."""
    import psycopg2
    try:
        rows = pg_query(url, "SELECT holder, epoch, extract(epoch FROM acquired_at)::float8 "
                        "FROM celeryc.leases WHERE name = 'beat'")
    except psycopg2.errors.UndefinedTable:  # before the first beat's --db-upgrade
        return None
    return rows[0] if rows else None


def _leader(url, beats):
    """(beat, epoch) of the lease holder among `beats`, or None."""
    lease = _lease(url)
    if lease is None or not lease[0]:
        return None
    pid = int(lease[0].rsplit(":", 1)[1])
    for b in beats:
        if b.proc.pid == pid and b.proc.poll() is None:
            return b, lease[1]
    return None


def _wait_takeover(url, epoch, stopped_at, limit):
    """Poll the lease until its epoch is past `epoch`: seconds from `stopped_at` (Unix time)
    to the new holder's acquired_at (the server's clock; same host), or None by `limit`."""
    c = pg(url)
    try:
        with c.cursor() as cur:
            while time.time() < limit:
                cur.execute("SELECT epoch, extract(epoch FROM acquired_at)::float8 "
                            "FROM celeryc.leases WHERE name = 'beat'")
                row = cur.fetchone()
                if row and row[0] > epoch:
                    return row[1] - stopped_at
                time.sleep(0.02)
    finally:
        c.close()
    return None


def _drain(amqp_conn, q):
    """Every message in queue q, consumed (acked): [(task id, task name, celeryc_run)]."""
    out = []
    ch = amqp_conn.channel()
    try:
        while True:
            m = ch.basic_get(q, no_ack=True)
            if m is None:
                break
            h = m.headers or m.properties.get("application_headers") or {}
            out.append((h.get("id"), h.get("task"), h.get("celeryc_run")))
    finally:
        ch.close()
    return out


def _check_once(url, messages, file_entries):
    """Each task id once; each file-entry message is a claimed slot; each run message is its
    run's; every run sent has exactly one message."""
    ids = collections.Counter(m[0] for m in messages)
    dups = {i: n for i, n in ids.items() if n > 1}
    assert not dups, "task ids published more than once: %s" % dups
    slots = {r[0]: r[1] for r in pg_query(url, "SELECT task_id, name FROM celeryc.entry_slots "
                                          "WHERE task_id IS NOT NULL")}
    runs = {r[0]: r for r in pg_query(url, "SELECT id::text, task_id, sent_at IS NOT NULL, "
                                      "status FROM celeryc.runs")}
    by_run = collections.Counter()
    for tid, task, run in messages:
        if run is None:
            assert slots.get(tid) in file_entries, "a file-entry message without its claim"
        else:
            assert run in runs and runs[run][1] == tid, "run %s: message task id %s" % (run, tid)
            by_run[run] += 1
    return runs, by_run


# ---- A lease operation never waits on a frozen session's lock ------------------------------

def _cli(url, *args, timeout=30):
    return subprocess.run([celeryc_bin(), "db"] + list(args) + ["--job-store", url],
                          capture_output=True, text=True, timeout=scaled(timeout))


def test_lease_does_not_wait_for_a_lock_held_by_a_frozen_session(pg_url):
    assert _cli(pg_url, "upgrade").returncode == 0
    r = _cli(pg_url, "debug", "lease", "beat", "frozen:1", "2000", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["is_leader"], r.stderr
    # A leader stopped inside a fenced write: its transaction holds the lease row FOR SHARE.
    frozen = pg(pg_url)
    frozen.autocommit = False
    try:
        with frozen.cursor() as cur:
            cur.execute("SELECT epoch FROM celeryc.leases WHERE name = 'beat' FOR SHARE")
        time.sleep(2.2)  # the lease expires
        t0 = time.monotonic()
        try:
            r = _cli(pg_url, "debug", "lease", "beat", "standby:2", "2000", "--json", timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail("the lease operation waited for the frozen session's lock")
        took = time.monotonic() - t0
        print("lease operation against a frozen session's lock: %.2f s: %s" % (took, r.stderr))
        assert r.returncode != 0 and "locked" in (r.stdout + r.stderr), (r.stdout, r.stderr)
        # Bounded by a tenth of the ttl (200 ms) plus the CLI's start-up.
        assert took < scaled(2.0), took
    finally:
        frozen.rollback()
        frozen.close()
    r = _cli(pg_url, "debug", "lease", "beat", "standby:2", "2000", "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == {"is_leader": True, "epoch": 2}


def test_run_send_claim_has_one_winner_and_only_its_owner_gives_it_back(pg_url):
    """The send claim fences a run's message: the leader of epoch 1 wins it; after a takeover
    the new leader neither wins nor undoes it; the deposed leader gives it back (NOTIFY), and
    only the current leader can claim it then."""
    assert _cli(pg_url, "upgrade").returncode == 0
    job = _insert_job(pg_url, task="app.add", args=[1, 2], concurrency="allow")

    def js(*args):
        r = _cli(pg_url, "debug", *(args + ("--json",)))
        out = json.loads(r.stdout) if r.stdout.strip() else {}
        return r.returncode, out, r.stderr

    assert js("lease", "beat", "a:1", "60000")[1] == {"is_leader": True, "epoch": 1}
    rc, out, _ = js("run-create", job, "--epoch", "1", "--lease", "beat", "--slot", "1000000")
    assert rc == 0
    run = out["run"]["id"]
    assert js("send-claim", run, "--epoch", "1", "--lease", "beat")[0] == 0
    claimed = pg_query(pg_url, "SELECT sent_at IS NOT NULL, epoch FROM celeryc.runs "
                       "WHERE id = %s", (run,))[0]
    assert claimed == (True, 1)
    rc, out, err = js("send-claim", run, "--epoch", "1", "--lease", "beat")
    assert rc != 0 and "send claimed by epoch 1" in out.get("error", "") + err, (out, err)
    # A takeover: epoch 2 can neither claim nor give back epoch 1's claim.
    pg_query(pg_url, "UPDATE celeryc.leases SET expires_at = now() - interval '1 s'")
    assert js("lease", "beat", "b:2", "60000")[1] == {"is_leader": True, "epoch": 2}
    rc, out, err = js("send-claim", run, "--epoch", "2", "--lease", "beat")
    assert rc != 0 and "send claimed by epoch 1" in out.get("error", "") + err, (out, err)
    assert js("send-undo", run, "--epoch", "2")[0] == 0
    assert pg_query(pg_url, "SELECT sent_at IS NOT NULL FROM celeryc.runs WHERE id = %s",
                    (run,))[0][0]
    # The deposed leader gives its claim back: epoch 1 can no longer claim, epoch 2 can.
    assert js("send-undo", run, "--epoch", "1")[0] == 0
    assert pg_query(pg_url, "SELECT sent_at FROM celeryc.runs WHERE id = %s", (run,))[0][0] \
        is None
    rc, out, err = js("send-claim", run, "--epoch", "1", "--lease", "beat")
    assert rc != 0 and "lease lost" in out.get("error", "") + err, (out, err)
    assert js("send-claim", run, "--epoch", "2", "--lease", "beat")[0] == 0
    assert pg_query(pg_url, "SELECT sent_at IS NOT NULL, epoch FROM celeryc.runs "
                    "WHERE id = %s", (run,))[0] == (True, 2)


# ---- A leader frozen inside a transaction ---------------------------------------------------

def _lock_waiter(url, limit):
    """pid of a celeryc session waiting for a row lock, polled until `limit` (Unix time)."""
    c = pg(url)
    try:
        with c.cursor() as cur:
            while time.time() < limit:
                cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'celeryc' "
                            "AND wait_event_type = 'Lock' AND datname = current_database()")
                row = cur.fetchone()
                if row:
                    return row[0]
                time.sleep(0.003)
    finally:
        c.close()
    return None


@pytest.mark.parametrize("what", ["job", "entry"])
def test_frozen_leader_in_a_transaction_does_not_block_takeover_or_double_a_run(
        pg_url, beat_factory, amqp_conn, what):
    """The leader is stopped while one of its statements waits for a row lock the test holds
    (the job row: run creation; the entry row: the slot claim after the run was created), then
    the lock is released: its statement completes on the server and its session is left idle,
    as a beat frozen between two statements leaves it. A standby takes over within two lease
    periods, and the run of that slot is published once, whoever sends it."""
    q = unique_queue("beat-frz")
    _declare(amqp_conn, q)
    beats = []
    stopped = None
    try:
        beats = [beat_factory("--job-store", pg_url, "--db-upgrade", "--lease-ttl", str(TTL),
                              name="frz%d" % i) for i in range(2)]
        wait_for(lambda: _leader(pg_url, beats), 20, "a leader")
        job = _insert_job(pg_url, task="app.add", queue=q, args=[1, 2], concurrency="allow",
                          schedule={"type": "interval", "seconds": 1})
        wait_for(lambda: pg_query(pg_url, "SELECT count(*) FROM celeryc.runs WHERE job_id = %s "
                                  "AND sent_at IS NOT NULL", (job,))[0][0] >= 2,
                 15, "two runs sent")
        leader, epoch = _leader(pg_url, beats)
        locker = pg(pg_url)
        locker.autocommit = False
        with locker.cursor() as cur:
            if what == "job":
                cur.execute("SELECT 1 FROM celeryc.jobs WHERE id = %s FOR UPDATE", (job,))
            else:
                cur.execute("SELECT 1 FROM celeryc.entries WHERE name = %s FOR UPDATE",
                            ("job:" + job,))
        waiter = _lock_waiter(pg_url, time.time() + scaled(10))
        leader.signal(signal.SIGSTOP)
        stopped, stopped_at = leader, time.time()
        locker.rollback()
        locker.close()
        assert waiter is not None, "the leader never waited for the lock"
        took = _wait_takeover(pg_url, epoch, stopped_at, stopped_at + 3 * TTL)
        # The server ends the frozen session's idle transaction (a quarter of the lease).
        idle = pg_query(pg_url, "SELECT state FROM pg_stat_activity WHERE pid = %s", (waiter,))
        time.sleep(max(0.0, stopped_at + 3 * TTL - time.time()))
        leader.signal(signal.SIGCONT)
        stopped = None
        print("%s lock: takeover %s s, frozen session now %s" % (what, took, idle))
        assert took is not None, "no takeover within %.0f s of the freeze" % (3 * TTL)
        assert took <= 2 * TTL + 0.1 * scaled(1), "takeover took %.2f s" % took
        assert not idle or idle[0][0] != "idle in transaction", idle
        # Both beats run on; then every run of the job has been published once.
        wait_for(lambda: pg_query(pg_url, "SELECT count(*) FROM celeryc.runs WHERE job_id = %s "
                                  "AND sent_at IS NOT NULL AND created > to_timestamp(%s)",
                                  (job, stopped_at + 3 * TTL))[0][0] >= 2,
                 15, "runs sent after the resume")
        for b in beats:
            assert b.stop() == 0
        runs, by_run = _check_once(pg_url, _drain(amqp_conn, q), set())
        unsent = [r for r in runs.values() if r[3] == "Q" and not r[2]]
        assert not unsent, unsent
        assert all(by_run[r] == 1 for r, row in runs.items() if row[2]), by_run
    finally:
        if stopped is not None:
            stopped.signal(signal.SIGCONT)
        _delete(amqp_conn, q)


# ---- The leader frozen at random points -----------------------------------------------------

def test_frozen_leader_at_random_points_takeover_and_no_double_publish(
        pg_url, beat_factory, amqp_conn, tmp_path):
    q = unique_queue("beat-frzr")
    _declare(amqp_conn, q)
    files = {"f%d" % i: {"task": "app.add", "schedule": 0.2, "args": [i, 0],
                         "options": {"queue": q}} for i in range(6)}
    sched = write_schedule(tmp_path / "s.json", files)
    rng = random.Random(os.environ.get("CELERYC_BEAT_FREEZE_SEED") or None)
    beats = []
    stopped = None
    manual_stop = threading.Event()
    manual_errors = []

    def manual_runs(job):
        # What `celeryc jobs run` inserts, five times a second: the leader's unsent sweep
        # (NOTIFY celeryc_runs) sends them.
        c = pg(pg_url)
        try:
            with c.cursor() as cur:
                while not manual_stop.wait(0.2):
                    cur.execute("INSERT INTO celeryc.runs (id, job_id, started_by, task_id) "
                                "VALUES (%s, %s, 'tester', %s)",
                                (str(uuid.uuid4()), job, str(uuid.uuid4())))
        except Exception as e:  # noqa: BLE001 (reported by the test)
            manual_errors.append(e)
        finally:
            c.close()

    th = None
    try:
        beats = [beat_factory("--job-store", pg_url, "--db-upgrade", "--lease-ttl", str(TTL),
                              "--schedule-file", sched, name="frzr%d" % i) for i in range(3)]
        wait_for(lambda: _leader(pg_url, beats), 20, "a leader")
        for i in range(3):
            _insert_job(pg_url, task="app.add", queue=q, args=[100 + i, 0], concurrency="allow",
                        schedule={"type": "interval", "seconds": 1})
        manual = _insert_job(pg_url, task="app.add", queue=q, args=[200, 0], concurrency="allow")
        th = threading.Thread(target=manual_runs, args=(manual,), daemon=True)
        th.start()
        takeovers = []
        for it in range(ITERATIONS):
            leader, epoch = wait_for(lambda: _leader(pg_url, beats), 10, "a leader")
            time.sleep(rng.uniform(0.0, TTL))  # a random point of its work
            leader.signal(signal.SIGSTOP)
            stopped, stopped_at = leader, time.time()
            took = _wait_takeover(pg_url, epoch, stopped_at, stopped_at + 3 * TTL)
            time.sleep(max(0.0, stopped_at + 3 * TTL - time.time()))
            leader.signal(signal.SIGCONT)
            stopped = None
            takeovers.append(took)
            assert took is not None, "iteration %d: no takeover within %.0f s" % (it, 3 * TTL)
        manual_stop.set()
        th.join(10)
        assert not manual_errors, manual_errors
        # Every run is sent in the end (a run claimed by a frozen leader is given back when it
        # resumes), then the beats stop and the queue is counted.
        wait_for(lambda: pg_query(pg_url, "SELECT count(*) FROM celeryc.runs WHERE status = 'Q' "
                                  "AND sent_at IS NULL")[0][0] == 0, 20, "every run sent")
        for b in beats:
            assert b.stop() == 0
        messages = _drain(amqp_conn, q)
        runs, by_run = _check_once(pg_url, messages, set(files))
        t = sorted(takeovers)
        print("freeze x%d (ttl %.1f s): takeover min %.2f median %.2f max %.2f s; %d messages, "
              "%d runs" % (len(t), TTL, t[0], statistics.median(t), t[-1], len(messages),
                           len(runs)))
        assert t[-1] <= 2 * TTL + 0.1 * scaled(1), "takeover took %.2f s" % t[-1]
        assert all(by_run[r] == 1 for r, row in runs.items() if row[2]), \
            [(r, by_run[r]) for r, row in runs.items() if row[2] and by_run[r] != 1]
    finally:
        manual_stop.set()
        if stopped is not None:
            stopped.signal(signal.SIGCONT)
        _delete(amqp_conn, q)
