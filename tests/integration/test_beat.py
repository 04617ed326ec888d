"""`celeryc beat` (issue #6): schedule file and job store entries reach a Python worker and a
celeryc worker; the messages are Celery's (the Python beat's capture, beat-run.json); crontab
slots are Celery's; a restart neither skips nor repeats a slot (state file and job store); the
missed-run policies; job changes and manual runs are picked up at once (NOTIFY).

Slots are read from the beat's debug line "beat: sent NAME slot ISO id TASK_ID", written once
per broker-confirmed message."""
import json
import os
import signal
import subprocess
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from beatutil import beat_factory, pg_query, sent, write_schedule  # noqa: F401 (fixture)
from conftest import c_only, celeryc_bin, queue_depth, scaled, unique_queue, wait_for

pytestmark = c_only  # the beat is celeryc's; both worker implementations are used explicitly

T = "t.integration.tasks."
# Header keys in the order Celery 5.2.6's beat sends them (fixture beat-run.json).
CELERY_HEADER_ORDER = ["lang", "task", "id", "shadow", "eta", "expires", "group", "group_index",
                       "retries", "timelimit", "root_id", "parent_id", "argsrepr", "kwargsrepr",
                       "origin", "ignore_result"]


def _slots(log, name):
    return [s for n, s, _ in sent(log) if n == name]


def _declare(conn, name):
    ch = conn.channel()
    ch.queue_declare(name, durable=True, auto_delete=False)
    ch.close()


def _delete(conn, name):
    ch = conn.channel()
    try:
        ch.queue_delete(name)
    finally:
        ch.close()


def test_file_schedule_runs_on_python_and_c_workers(worker_factory, beat_factory, rds7,
                                                    tmp_path):
    q_c, q_py = unique_queue("beat-c"), unique_queue("beat-py")
    k_c, k_py = "beat-c-" + uuid.uuid4().hex, "beat-py-" + uuid.uuid4().hex
    worker_factory(queue=q_c, concurrency=1, impl="c")
    worker_factory(queue=q_py, concurrency=1, impl="python")
    sched = write_schedule(tmp_path / "s.json", {
        "to-c": {"task": T + "redis_echo", "schedule": 1.0, "args": ["c", k_c],
                 "options": {"queue": q_c}},
        "to-py": {"task": T + "redis_echo", "schedule": {"type": "interval", "seconds": 1},
                  "args": ["py"], "kwargs": {"redis_key": k_py},
                  "options": {"queue": q_py, "priority": 3, "expires": 30}},
    })
    state = tmp_path / "state.json"
    bt = beat_factory("--schedule-file", sched, "-s", str(state))
    wait_for(lambda: rds7.llen(k_c) >= 2 and rds7.llen(k_py) >= 2, 20,
             "both workers ran the beat's tasks twice")
    assert rds7.lrange(k_c, 0, 0) == [b"c"] and rds7.lrange(k_py, 0, 0) == [b"py"]
    bt.signal(signal.SIGUSR1)  # the lateness summary, for the benchmark
    bt.wait_log(r"beat stats: dispatched [1-9]\d*, lateness p50 \d+ ms p99 \d+ ms, "
                r"cpu user\+sys \d+ ms", 10)
    assert bt.stop() == 0
    log = bt.log()
    assert "Scheduler: Sending due task to-c (%sredis_echo)" % T in log
    assert "beat stats: dispatched" in log
    st = json.loads(state.read_text())["entries"]
    assert st["to-c"]["total_run_count"] == len(_slots(log, "to-c")) >= 2
    assert st["to-py"]["total_run_count"] == len(_slots(log, "to-py")) >= 2


def test_message_is_celerys(beat_factory, amqp_conn, tmp_path):
    """Headers in Celery's order and types, properties, body: as the Python beat sends them."""
    q = unique_queue("beat-msg")
    _declare(amqp_conn, q)
    try:
        sched = write_schedule(tmp_path / "s.json", {
            "m": {"task": "app.add", "schedule": 0.5, "args": [1, 2],
                  "options": {"queue": q, "priority": 3, "expires": 30}}})
        bt = beat_factory("--schedule-file", sched, "-s", str(tmp_path / "st.json"))
        wait_for(lambda: queue_depth(amqp_conn, q) >= 2, 15, "two messages in %s" % q)
        assert bt.stop() == 0
        ch = amqp_conn.channel()
        msgs = [ch.basic_get(q, no_ack=True) for _ in range(2)]
        ch.close()
    finally:
        _delete(amqp_conn, q)
    now = datetime.now(timezone.utc)
    ids = set()
    for msg in msgs:
        h = msg.properties["application_headers"]
        p = msg.properties
        assert list(h.keys()) == CELERY_HEADER_ORDER
        assert h["lang"] == "py" and h["task"] == "app.add"
        assert h["id"] == p["correlation_id"] == h["root_id"]
        ids.add(h["id"])
        assert h["shadow"] is None and h["eta"] is None and h["group"] is None
        assert h["group_index"] is None and h["parent_id"] is None
        assert h["retries"] == 0 and h["timelimit"] == [None, None]
        assert h["argsrepr"] == "[1, 2]" and h["kwargsrepr"] == "{}"
        assert h["origin"].startswith("gen") and "@" in h["origin"]
        assert h["ignore_result"] is False
        exp = datetime.fromisoformat(h["expires"])
        assert timedelta(seconds=0) < exp - now < timedelta(seconds=31)
        assert p["content_type"] == "application/json" and p["content_encoding"] == "utf-8"
        assert p["delivery_mode"] == 2 and p["priority"] == 3
        assert p["expiration"] == "30000" and p["reply_to"]
        assert msg.delivery_info["exchange"] == "" and msg.delivery_info["routing_key"] == q
        assert json.loads(msg.body) == [[1, 2], {}, {"callbacks": None, "errbacks": None,
                                                      "chain": None, "chord": None}]
    assert len(ids) == 2


def _celery_slots(spec, tzname, start, n):
    """The first n slots Celery's beat dispatches for a crontab entry new at `start`: its
    is_due(last_run_at) checked with a fake clock at every instant its answer can change
    (tests/unit/data/schedule/gen_beat_dst_cases.py, the unit test's oracle)."""
    import sys
    import pytz
    from celery import Celery
    from celery.schedules import crontab
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "data" / "schedule"))
    import gen_beat_dst_cases as oracle
    app = Celery(set_as_current=False)
    app.conf.timezone = tzname
    app.conf.enable_utc = True
    tz = pytz.timezone(tzname)
    clock = [start]
    sch = crontab(app=app, nowfun=lambda: clock[0].astimezone(tz), **spec)
    end = start + timedelta(days=4 * 366)
    changes = oracle.offset_changes(tz, start - timedelta(days=1), end)
    oracle.MAX_SLOTS = n
    slots, _ = oracle.simulate(sch, clock, tz, changes, start, end)
    return [oracle.from_us(v) for v in slots]


def _print_next(entries, n, now, default_tz="UTC"):
    r = subprocess.run([celeryc_bin(), "beat", "--schedule-file", entries, "--timezone",
                        default_tz, "--print-next", str(n), "--now", now],
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 0, r.stderr
    got = {}
    for line in r.stdout.splitlines():
        name, iso = line.split()
        got.setdefault(name, []).append(datetime.fromisoformat(iso))
    return got


def test_crontab_slots_match_celery(tmp_path):
    """Schedule-file crontabs (zone per entry, or the --timezone default) across the March
    2026 DST change: the beat's slots are Celery's."""
    specs = {
        "oslo": ({"minute": "*/20", "hour": "0-4"}, "Europe/Oslo"),
        "ny": ({"minute": "30", "hour": "2", "day_of_week": "sun,mon"}, "America/New_York"),
        "month-end": ({"minute": "0", "hour": "0", "day_of_month": "31"}, None),
    }
    entries = {}
    for name, (spec, tz) in specs.items():
        e = {"task": "app.echo", "schedule": dict(spec, type="crontab")}
        if tz:
            e["timezone"] = tz
        entries[name] = e
    sched = write_schedule(tmp_path / "s.json", entries)
    start = "2026-03-07T22:10:00+00:00"
    got = _print_next(sched, 12, start, "Asia/Kolkata")
    t0 = datetime.fromisoformat(start)
    for name, (spec, tz) in specs.items():
        assert got[name] == _celery_slots(spec, tz or "Asia/Kolkata", t0, 12), name


def test_crontab_dst_next_slot_uses_the_offset_at_the_check(tmp_path):
    """Issue #14: the next slot of a crontab is taken with the UTC offset in force when
    Celery's beat checks it, not at the previous slot: `0 3 * * *` in Zurich runs once on the
    fall-back day (03:00 CET) and at 03:00 CEST on the spring-forward day; `0 4 * * sun` in
    New York at 04:00 EDT; `0 12 * * *` on Lord Howe (30-minute shift) once."""
    cases = {
        "zurich-fall": ({"minute": "0", "hour": "3"}, "Europe/Zurich", "2026-10-23T12:00:00",
                        ["2026-10-24T01:00", "2026-10-25T02:00", "2026-10-26T02:00"]),
        "zurich-spring": ({"minute": "0", "hour": "3"}, "Europe/Zurich", "2026-03-27T12:00:00",
                          ["2026-03-28T02:00", "2026-03-29T01:00", "2026-03-30T01:00"]),
        "ny-sun": ({"minute": "0", "hour": "4", "day_of_week": "sun"}, "America/New_York",
                   "2024-02-27T12:00:00", ["2024-03-03T09:00", "2024-03-10T08:00",
                                           "2024-03-17T08:00"]),
        "lord-howe": ({"minute": "0", "hour": "12"}, "Australia/Lord_Howe", "2026-04-03T12:00:00",
                      ["2026-04-04T01:00", "2026-04-05T01:30", "2026-04-06T01:30"]),
        # 02:30 does not exist on the spring-forward night: run at the change (03:00 CEST),
        # once; on the fall-back night 02:30 exists twice: run at the first one only.
        "paris-gap": ({"minute": "30", "hour": "2"}, "Europe/Paris", "2026-03-27T12:00:00",
                      ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30"]),
        "paris-overlap": ({"minute": "30", "hour": "2"}, "Europe/Paris", "2026-10-23T12:00:00",
                          ["2026-10-24T00:30", "2026-10-25T00:30", "2026-10-26T01:30"]),
    }
    for name, (spec, tz, now, want) in cases.items():
        sched = write_schedule(tmp_path / (name + ".json"), {
            name: {"task": "app.echo", "schedule": dict(spec, type="crontab"), "timezone": tz}})
        got = _print_next(sched, len(want), now + "+00:00")[name]
        assert got == [datetime.fromisoformat(w + ":00+00:00") for w in want], name
        t0 = datetime.fromisoformat(now + "+00:00")
        assert got == _celery_slots(spec, tz, t0, len(want)), name


def test_bad_schedule_file_names_the_entry(tmp_path):
    sched = write_schedule(tmp_path / "s.json", {
        "ok": {"task": "a", "schedule": 1},
        "broken": {"task": "a", "schedule": {"type": "crontab", "hour": "25"}}})
    r = subprocess.run([celeryc_bin(), "beat", "--schedule-file", sched, "-b",
                        os.environ["CELERYC_TEST_AMQP_URL"]],
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 78
    assert "entry 'broken'" in r.stderr and "hour" in r.stderr


def _consecutive(slots, every):
    slots = sorted(slots)
    assert len(slots) == len(set(slots)), "a slot was sent twice: %s" % slots
    for a, b in zip(slots, slots[1:]):
        assert b - a == timedelta(seconds=every), "gap or overlap between %s and %s" % (a, b)


def test_restart_state_file_neither_skips_nor_doubles(beat_factory, amqp_conn, tmp_path):
    q = unique_queue("beat-rs")
    _declare(amqp_conn, q)
    try:
        sched = write_schedule(tmp_path / "s.json", {
            "e": {"task": "app.add", "schedule": 2, "args": [1, 1], "options": {"queue": q}}})
        state = str(tmp_path / "state.json")
        a = beat_factory("--schedule-file", sched, "-s", state, name="first")
        wait_for(lambda: len(_slots(a.log(), "e")) >= 2, 15, "two sends")
        assert a.stop() == 0
        b = beat_factory("--schedule-file", sched, "-s", state, name="second")
        wait_for(lambda: len(_slots(b.log(), "e")) >= 2, 15, "two sends after the restart")
        assert b.stop() == 0
        slots = _slots(a.log(), "e") + _slots(b.log(), "e")
        _consecutive(slots, 2)
        assert queue_depth(amqp_conn, q) == len(slots)
        st = json.loads(Path(state).read_text())["entries"]["e"]
        assert st["total_run_count"] == len(slots)
        assert datetime.fromisoformat(st["last_run_at"]) == max(slots)
    finally:
        _delete(amqp_conn, q)


def test_missed_run_policies(beat_factory, amqp_conn, tmp_path):
    """Last run 25 s ago, every 10 s: two slots were missed (-15 s, -5 s). run_once sends one
    run for the latest; skip waits for the next slot; run_once past its starting_deadline
    behaves as skip."""
    q = unique_queue("beat-missed")
    _declare(amqp_conn, q)
    try:
        now = datetime.now(timezone.utc)
        last = now - timedelta(seconds=25)
        base = {"task": "app.add", "schedule": 10, "args": [0, 0], "options": {"queue": q}}
        sched = write_schedule(tmp_path / "s.json", {
            "once": dict(base, missed="run_once"),
            "skip": dict(base, missed="skip"),
            "late": dict(base, missed="run_once", starting_deadline=2)})
        state = tmp_path / "state.json"
        state.write_text(json.dumps({"version": 1, "entries": {
            n: {"last_run_at": last.isoformat(), "total_run_count": 7}
            for n in ("once", "skip", "late")}}))
        bt = beat_factory("--schedule-file", sched, "-s", str(state))
        wait_for(lambda: _slots(bt.log(), "once"), 10, "the run_once catch-up")
        wait_for(lambda: _slots(bt.log(), "skip"), 15, "skip's next slot")
        log = bt.log()
        latest_missed = last + timedelta(seconds=20)
        assert _slots(log, "once")[0] == latest_missed
        assert "2 missed run(s) of once: running once" in log
        assert "2 missed run(s) of skip: skipped (missed=skip)" in log
        assert "2 missed run(s) of late: skipped (past starting_deadline)" in log
        assert _slots(log, "skip")[0] == latest_missed + timedelta(seconds=10)
        assert all(s > latest_missed for s in _slots(log, "late"))
        assert bt.stop() == 0
        st = json.loads(state.read_text())["entries"]
        assert st["once"]["total_run_count"] == 7 + len(_slots(bt.log(), "once"))
    finally:
        _delete(amqp_conn, q)


# ---- Job store --------------------------------------------------------------------------------

def _insert_job(url, **f):
    f.setdefault("id", str(uuid.uuid4()))
    f.setdefault("title", "job " + f["id"][:8])
    cols = list(f)
    vals = [json.dumps(v) if isinstance(v, (dict, list)) else v for v in f.values()]
    pg_query(url, "INSERT INTO celeryc.jobs (%s) VALUES (%s)"
             % (", ".join(cols), ", ".join(["%s"] * len(cols))), vals)
    return f["id"]


def test_job_store_jobs_manual_runs_and_changes(pg_url, beat_factory, worker_factory, amqp_conn,
                                                rds7):
    q, q_py = unique_queue("beat-js"), unique_queue("beat-js-py")
    qn = unique_queue("beat-js-idle")
    k_sched, k_man = "beat-js-" + uuid.uuid4().hex, "beat-man-" + uuid.uuid4().hex
    bt = beat_factory("--job-store", pg_url, "--db-upgrade", "--lease-ttl", "2")
    bt.wait_log(r"leader now", 20)
    worker_factory(queue=q, concurrency=1, impl="c")
    worker_factory(queue=q_py, concurrency=1, impl="python")  # ignores header celeryc_run
    _declare(amqp_conn, qn)
    try:
        j1 = _insert_job(pg_url, task=T + "redis_echo", queue=q, since_kwarg=None,
                         concurrency="allow", args=["j", k_sched],
                         schedule={"type": "interval", "seconds": 1})
        wait_for(lambda: rds7.llen(k_sched) >= 2, 15, "the job's scheduled runs executed")
        # A job's message: header celeryc_run, the run's task id, kwarg since (null: never
        # succeeded), the job's options.
        j3 = _insert_job(pg_url, task="app.add", queue=qn, args=[1, 2], options={"priority": 2},
                         concurrency="allow", schedule={"type": "interval", "seconds": 1},
                         since_kwarg="since")
        wait_for(lambda: queue_depth(amqp_conn, qn) >= 1, 15, "a message of job 3")
        ch = amqp_conn.channel()
        msg = ch.basic_get(qn, no_ack=True)
        ch.close()
        h = msg.properties["application_headers"]
        run = pg_query(pg_url, "SELECT id::text, task_id, epoch FROM celeryc.runs WHERE "
                       "task_id = %s AND job_id = %s", (h["id"], j3))
        assert run and h["celeryc_run"] == run[0][0] and run[0][2] >= 1
        assert json.loads(msg.body)[:2] == [[1, 2], {"since": None}]
        assert msg.properties["priority"] == 2
        # A manual run (what `celeryc jobs run` inserts): NOTIFY wakes the leader at once.
        # The Python worker runs it.
        j2 = _insert_job(pg_url, task=T + "redis_echo", queue=q_py, since_kwarg=None,
                         concurrency="allow", args=["m", k_man])
        run_id = str(uuid.uuid4())
        pg_query(pg_url, "INSERT INTO celeryc.runs (id, job_id, started_by, task_id, args) "
                 "VALUES (%s, %s, 'tester', %s, %s)",
                 (run_id, j2, str(uuid.uuid4()), json.dumps(["m", k_man])))
        wait_for(lambda: rds7.llen(k_man) >= 1, 10, "the manual run executed")
        lag = pg_query(pg_url, "SELECT extract(epoch FROM sent_at - created) FROM celeryc.runs "
                       "WHERE id = %s", (run_id,))[0][0]
        assert lag is not None and float(lag) < 1.0 * max(1.0, scaled(1.0))
        # The same through `celeryc jobs run` (the store slice's CLI).
        r = subprocess.run([celeryc_bin(), "jobs", "run", j2, "--user", "tester", "--job-store",
                            pg_url, "--json"], capture_output=True, text=True,
                           timeout=scaled(30))
        assert r.returncode == 0, r.stderr
        run_id2 = json.loads(r.stdout)["run"]["id"]
        wait_for(lambda: rds7.llen(k_man) >= 2, 10, "the second manual run executed")
        lag = pg_query(pg_url, "SELECT extract(epoch FROM sent_at - created) FROM celeryc.runs "
                       "WHERE id = %s", (run_id2,))[0][0]
        assert lag is not None and float(lag) < 1.0 * max(1.0, scaled(1.0))
        # Deactivating a job stops it at once (NOTIFY celeryc_jobs).
        pg_query(pg_url, "UPDATE celeryc.jobs SET active = false WHERE id = %s", (j1,))
        bt.wait_log(r"job %s removed from the schedule" % j1, 10)
        n = rds7.llen(k_sched)
        time.sleep(2.5)
        assert rds7.llen(k_sched) <= n + 1  # at most one already in flight
        rows = pg_query(pg_url, "SELECT scheduled_for, started_by, sent_at IS NOT NULL, epoch "
                        "FROM celeryc.runs WHERE job_id = %s", (j1,))
        assert len(rows) >= 2 and len({r[0] for r in rows}) == len(rows)
        assert all(r[1] is None and r[2] and r[3] >= 1 for r in rows)
        _consecutive([r[0] for r in rows], 1)
    finally:
        _delete(amqp_conn, qn)


def test_restart_job_store_neither_skips_nor_doubles(pg_url, beat_factory, amqp_conn, tmp_path):
    q = unique_queue("beat-rsj")
    _declare(amqp_conn, q)
    try:
        sched = write_schedule(tmp_path / "s.json", {
            "e": {"task": "app.add", "schedule": 2, "args": [1, 1], "options": {"queue": q}}})
        args = ("--schedule-file", sched, "--job-store", pg_url, "--db-upgrade",
                "--lease-ttl", "3")
        a = beat_factory(*args, name="first")
        wait_for(lambda: len(_slots(a.log(), "e")) >= 2, 20, "two sends")
        assert a.stop() == 0
        assert "lease released" in a.log()
        b = beat_factory(*args, name="second")
        wait_for(lambda: len(_slots(b.log(), "e")) >= 2, 20, "two sends after the restart")
        assert b.stop() == 0
        slots = _slots(a.log(), "e") + _slots(b.log(), "e")
        _consecutive(slots, 2)
        rows = pg_query(pg_url, "SELECT slot FROM celeryc.entry_slots WHERE name = 'e'")
        assert sorted(r[0] for r in rows) == sorted(slots)
        assert queue_depth(amqp_conn, q) == len(slots)
    finally:
        _delete(amqp_conn, q)


def test_unroutable_is_retried_not_lost(beat_factory, amqp_conn, tmp_path):
    """No queue bound for the routing key: the broker returns the message (mandatory); the
    beat logs it and retries the same slot until the queue exists."""
    q = unique_queue("beat-unroutable")
    now = datetime.now(timezone.utc)
    last = now - timedelta(seconds=29.5)  # every 30 s: the next slot is in half a second
    sched = write_schedule(tmp_path / "s.json", {
        "u": {"task": "app.add", "schedule": 30, "args": [1, 1], "options": {"queue": q}}})
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"version": 1, "entries": {
        "u": {"last_run_at": last.isoformat(), "total_run_count": 0}}}))
    bt = beat_factory("--schedule-file", sched, "-s", str(state))
    bt.wait_log(r"u: not sent \(attempt 1\): unroutable", 10)
    _declare(amqp_conn, q)
    try:
        wait_for(lambda: queue_depth(amqp_conn, q) == 1, 15, "the retried message")
        assert bt.stop() == 0
        assert _slots(bt.log(), "u") == [last + timedelta(seconds=30)]
        assert json.loads(state.read_text())["entries"]["u"]["total_run_count"] == 1
    finally:
        _delete(amqp_conn, q)


def _pidbox_tap(conn):
    """A queue bound to the celery.pidbox fanout: sees every control broadcast."""
    ch = conn.channel()
    ch.exchange_declare("celery.pidbox", "fanout", durable=False, auto_delete=False)
    name = unique_queue("beat-tap")
    ch.queue_declare(name, durable=False, auto_delete=False, exclusive=False)
    ch.queue_bind(name, "celery.pidbox", "")
    return ch, name


def test_job_concurrency_forbid_and_replace(pg_url, beat_factory, amqp_conn):
    """No worker: runs stay Q. forbid skips the following slots; replace cancels the older run
    and broadcasts its revoke (with terminate when it had started, as `celeryc jobs stop`)."""
    q = unique_queue("beat-cc")
    _declare(amqp_conn, q)
    tap_ch, tap = _pidbox_tap(amqp_conn)
    try:
        bt = beat_factory("--job-store", pg_url, "--db-upgrade", "--lease-ttl", "2")
        bt.wait_log(r"leader now", 20)
        every = {"type": "interval", "seconds": 1}
        jf = _insert_job(pg_url, task="app.add", queue=q, args=[1, 1], schedule=every,
                         concurrency="forbid")
        jr = _insert_job(pg_url, task="app.add", queue=q, args=[2, 2], schedule=every,
                         concurrency="replace")
        bt.wait_log(r"skipping job:%s for this slot: forbid" % jf, 10)
        bt.wait_log(r"job:%s: replace policy: cancelling run" % jr, 10)
        cancelled = wait_for(lambda: pg_query(
            pg_url, "SELECT task_id FROM celeryc.runs WHERE job_id = %s AND status IN "
            "('C', 'X') ORDER BY created", (jr,)), 10, "a cancelled run")
        assert len(pg_query(pg_url, "SELECT 1 FROM celeryc.runs WHERE job_id = %s", (jf,))) == 1
        revokes = []

        def revoked(terminate=False):
            m = tap_ch.basic_get(tap, no_ack=True)
            if m is not None:
                revokes.append(json.loads(m.body))
            return {r["arguments"]["task_id"] for r in revokes if r["method"] == "revoke"
                    and (not terminate or (r["arguments"].get("terminate") is True
                                           and r["arguments"].get("signal") == "SIGTERM"))}
        # A queued run (now X: a worker will not start it) gets a plain revoke, as
        # `celeryc jobs stop` sends for Q.
        wait_for(lambda: cancelled[0][0] in revoked(), 10, "the revoke of the cancelled run")
        # Manual runs of a replace job (`celeryc jobs run` twice, the first one running): the
        # second cancels the first (C, NOTIFY celeryc_runs) and the beat revokes its task.
        jm = _insert_job(pg_url, task="app.add", queue=q, args=[5, 5], concurrency="replace")
        ids = []
        for _ in range(2):
            r = subprocess.run([celeryc_bin(), "jobs", "run", jm, "--job-store", pg_url,
                                "--json"], capture_output=True, text=True, timeout=scaled(30))
            assert r.returncode == 0, r.stderr
            ids.append(json.loads(r.stdout)["run"]["task_id"])
            # What a worker's cc_jobstore_run_start does:
            pg_query(pg_url, "UPDATE celeryc.runs SET status = 'R', started_at = now(), "
                     "heartbeat_at = now(), hostname = 'w@host' WHERE task_id = %s", (ids[-1],))
        wait_for(lambda: ids[0] in revoked(terminate=True), 10,
                 "the revoke (terminate) of the replaced running manual run")
        assert ids[1] not in revoked()
    finally:
        tap_ch.queue_delete(tap)
        tap_ch.close()
        _delete(amqp_conn, q)


def test_leader_sweeps_reaper_and_retries(pg_url, beat_factory, amqp_conn):
    """A running run without a heartbeat is failed by the reaper; a failed run of a job with
    a retry policy is queued again as attempt 2 and sent."""
    q = unique_queue("beat-sweep")
    _declare(amqp_conn, q)
    try:
        bt = beat_factory("--job-store", pg_url, "--db-upgrade", "--lease-ttl", "2",
                          "--run-heartbeat-timeout", "1")
        bt.wait_log(r"leader now", 20)
        j = _insert_job(pg_url, task="app.add", queue=q, args=[3, 4],
                        retry_policy={"max_attempts": 2, "backoff": 0})
        run = str(uuid.uuid4())
        pg_query(pg_url, "INSERT INTO celeryc.runs (id, job_id, task_id, status, started_at, "
                 "heartbeat_at, hostname, sent_at) VALUES (%s, %s, %s, 'R', now() - interval "
                 "'1 minute', now() - interval '1 minute', 'gone@host', now())",
                 (run, j, str(uuid.uuid4())))
        wait_for(lambda: pg_query(pg_url, "SELECT status FROM celeryc.runs WHERE id = %s",
                                  (run,))[0][0] == "F", 15, "the reaper")
        msg = pg_query(pg_url, "SELECT message FROM celeryc.runs WHERE id = %s", (run,))[0][0]
        assert "gone@host" in msg
        wait_for(lambda: pg_query(pg_url, "SELECT count(*) FROM celeryc.runs WHERE retry_of = %s "
                                  "AND attempt = 2 AND sent_at IS NOT NULL", (run,))[0][0] == 1,
                 15, "the retry run sent")
        wait_for(lambda: queue_depth(amqp_conn, q) == 1, 10, "the retry's message")
    finally:
        _delete(amqp_conn, q)
