"""The job store (src/jobs/jobstore.c) through its command-line client: `celeryc db upgrade|version`
and `celeryc jobs ...` (issue #6), against a real Postgres (a fresh database per test, the
`pg_url` fixture) and, for `jobs stop`, RabbitMQ and a celeryc worker.

Store functions that only the beat and the worker call (lease, fenced run creation, entry
claims, run start/finish, run-log batches, the reap and retry sweeps) are driven through the
hidden `celeryc db debug ...` subcommands, which call one store function each and print JSON.
The database is read back with psycopg2; invalid crontab messages are compared with what
Python's celery.schedules.crontab raises for the same fields.
"""
import json
import os
import select
import subprocess
import time
import uuid

import pytest

from conftest import TIMEOUT, c_only, celeryc_bin, scaled, wait_for

pytestmark = c_only


def cc(*args, url=None, timeout=30, env=None, stdin=None):
    """Run `celeryc ARGS` (with --job-store url when given); returns the CompletedProcess."""
    b = celeryc_bin()
    if not b:
        pytest.fail("celeryc binary not found (set CELERYC_BIN)")
    cmd = [b] + list(args)
    if url is not None:
        cmd += ["--job-store", url]
    e = dict(os.environ)
    e.pop("CELERYC_JOB_STORE", None)
    e.pop("CELERY_BROKER_URL", None)
    e.pop("CELERYC_BROKER_URL", None)
    e.pop("CELERYC_CONFIG", None)
    e.update(env or {})
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=scaled(timeout), env=e, input=stdin)


def ok(*args, **kw):
    p = cc(*args, **kw)
    assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return p


def js(*args, **kw):
    """`celeryc ARGS --json`, parsed."""
    return json.loads(ok(*(args + ("--json",)), **kw).stdout)


def sql(url, query, params=()):
    import psycopg2
    c = psycopg2.connect(url, connect_timeout=10)
    c.autocommit = True
    try:
        with c.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description else None
    finally:
        c.close()


@pytest.fixture
def store(pg_url):
    """A migrated job store: its URL."""
    ok("db", "upgrade", url=pg_url)
    return pg_url


def mkjob(url, *flags):
    return js("jobs", "create", "--title", "t-" + uuid.uuid4().hex[:6], "--task", "demo.add",
              *flags, url=url)


# The schema version this celeryc ships (src/jobs/jobstore_schema.c): 3 since issue #14 (no
# default since_kwarg, runs.rerun_of).
LATEST = 3


# ---- db ----------------------------------------------------------------------------------

def test_db_upgrade_idempotent_and_version(pg_url):
    assert js("db", "version", url=pg_url) == {"version": 0, "latest": LATEST}
    p = cc("jobs", "list", url=pg_url)
    assert p.returncode == 70 and "celeryc db upgrade" in p.stderr, p.stderr
    assert f"upgraded from version 0 to {LATEST}" in ok("db", "upgrade", url=pg_url).stdout
    assert f"up to date (version {LATEST})" in ok("db", "upgrade", url=pg_url).stdout
    assert js("db", "upgrade", url=pg_url) == {"from": LATEST, "to": LATEST}
    assert js("db", "version", url=pg_url) == {"version": LATEST, "latest": LATEST}
    assert f"version {LATEST} (this celeryc: {LATEST})" in ok("db", "version", url=pg_url).stdout
    # A database from a newer celeryc is refused, not downgraded or re-migrated.
    sql(pg_url, "INSERT INTO celeryc.schema_version (version) VALUES (7)")
    p = cc("db", "upgrade", url=pg_url)
    assert p.returncode == 70 and f"schema version 7 is newer than this celeryc ({LATEST})" in p.stderr
    p = cc("jobs", "list", url=pg_url)
    assert p.returncode == 70 and "newer" in p.stderr


def test_db_upgrade_concurrent(pg_url):
    b = celeryc_bin()
    procs = [subprocess.Popen([b, "db", "upgrade", "--json", "--job-store", pg_url],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=scaled(30)) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    results = sorted(json.loads(o[0])["from"] for o in outs)
    assert results == [0, LATEST, LATEST]  # exactly one applied the migration
    assert sql(pg_url, "SELECT version FROM celeryc.schema_version") == [(v,) for v in range(1, LATEST + 1)]


def test_store_url_sources(store, tmp_path):
    conf = tmp_path / "celeryc.conf"
    conf.write_text("job_store = %s\n" % store)
    assert js("jobs", "list", env={"CELERYC_JOB_STORE": store}) == []
    assert js("jobs", "list", "--config", str(conf)) == []
    assert js("jobs", "list", env={"CELERYC_CONFIG": str(conf)}) == []
    p = cc("jobs", "list")
    assert p.returncode == 2 and "no job store" in p.stderr
    p = cc("jobs", "list", url="postgresql://celeryc:wrong@127.0.0.1:1/nothere")
    assert p.returncode == 70 and "job store connect" in p.stderr


# ---- jobs CRUD ---------------------------------------------------------------------------

def test_jobs_create_list_show_update_delete(store):
    a = js("jobs", "create", "--title", "Harvest", "--task", "demo.add", "--args", "[1, 2]",
           "--kwargs", '{"k": "v"}', "--queue", "harvest", "--interval", "30",
           "--concurrency", "allow", "--retry", '{"max_attempts": 3, "backoff": 5}',
           "--missed", "skip", "--deadline", "600", "--description", "d", "--options",
           '{"priority": 3}', "--since-kwarg", "after", url=store)
    assert uuid.UUID(a["id"])
    assert {k: a[k] for k in ("title", "task", "args", "kwargs", "queue", "schedule", "active",
                              "concurrency", "retry_policy", "missed", "starting_deadline",
                              "description", "options", "since_kwarg", "timezone")} == {
        "title": "Harvest", "task": "demo.add", "args": [1, 2], "kwargs": {"k": "v"},
        "queue": "harvest", "schedule": {"type": "interval", "seconds": 30}, "active": True,
        "concurrency": "allow", "retry_policy": {"max_attempts": 3, "backoff": 5},
        "missed": "skip", "starting_deadline": 600, "description": "d",
        "options": {"priority": 3}, "since_kwarg": "after", "timezone": "UTC"}
    b = js("jobs", "create", "--title", "Nightly", "--task", "demo.noop", "--crontab", "0 3",
           "--timezone", "Europe/Paris", "--inactive", url=store)
    assert b["schedule"] == {"type": "crontab", "minute": "0", "hour": "3", "day_of_week": "*",
                             "day_of_month": "*", "month_of_year": "*"}
    assert b["active"] is False and b["concurrency"] == "forbid"  # the default policy
    assert b["since_kwarg"] is None and b["retry_policy"] == {"max_attempts": 1}
    # Ordered by title; --active-only drops the inactive one.
    assert [j["title"] for j in js("jobs", "list", url=store)] == ["Harvest", "Nightly"]
    assert [j["title"] for j in js("jobs", "list", "--active-only", url=store)] == ["Harvest"]
    human = ok("jobs", "list", url=store).stdout.splitlines()
    assert human[0].split() == ["ID", "TITLE", "TASK", "SCHEDULE", "TIMEZONE", "ACTIVE",
                                "CONCURRENCY"]
    assert human[1].split() == [a["id"], "Harvest", "demo.add", "every", "30s", "UTC", "yes",
                                "allow"]
    assert human[2].split() == [b["id"], "Nightly", "demo.noop", "crontab(0", "3", "*", "*",
                                "*)", "Europe/Paris", "no", "forbid"]
    # Columns are aligned: TASK starts at the same offset on every line.
    assert len({line.index(w) for line, w in zip(human, ("TASK", "demo.add", "demo.noop"))}) == 1
    assert js("jobs", "show", a["id"], url=store) == a
    kv = dict(line.split(":", 1) for line in ok("jobs", "show", b["id"], url=store)
              .stdout.splitlines())
    assert kv["title"].strip() == "Nightly" and kv["schedule"].strip() == "crontab(0 3 * * *)"
    assert kv["active"].strip() == "false" and kv["id"].strip() == b["id"]

    u = js("jobs", "update", a["id"], "--title", "Harvest 2", "--crontab", "*/5",
           "--active", "--since-kwarg", "", "--queue", "", url=store)
    assert u["title"] == "Harvest 2" and u["schedule"]["minute"] == "*/5"
    assert u["since_kwarg"] is None and u["queue"] is None
    assert u["args"] == [1, 2] and u["created"] == a["created"] and u["updated"] > a["updated"]
    u = js("jobs", "update", a["id"], "--no-schedule", url=store)
    assert u["schedule"] is None
    p = cc("jobs", "update", a["id"], url=store)
    assert p.returncode == 2 and "no field" in p.stderr

    assert ok("jobs", "delete", a["id"], url=store).stdout == "job %s deleted\n" % a["id"]
    p = cc("jobs", "show", a["id"], url=store)
    assert p.returncode == 1 and "no job %s" % a["id"] in p.stderr
    assert js("jobs", "delete", b["id"], url=store) == {"deleted": b["id"]}
    assert "no jobs" in ok("jobs", "list", url=store).stdout


def test_jobs_create_json_file(store, tmp_path):
    f = tmp_path / "job.json"
    f.write_text(json.dumps({"title": "From file", "task": "demo.add", "args": [5],
                             "schedule": {"type": "interval", "seconds": 2.5},
                             "retry_policy": {"max_attempts": 2, "factor": 2}}))
    j = js("jobs", "create", "--json-file", str(f), "--title", "Flag wins", url=store)
    assert j["title"] == "Flag wins" and j["args"] == [5]
    assert j["schedule"] == {"type": "interval", "seconds": 2.5}
    # `show --json` output can be fed back (id/created/updated ignored on update).
    shown = js("jobs", "show", j["id"], url=store)
    shown["description"] = "round trip"
    u = js("jobs", "update", j["id"], "--json-file", "-", stdin=json.dumps(shown), url=store)
    assert u["description"] == "round trip" and u["id"] == j["id"]
    p = cc("jobs", "create", "--json-file", "-", stdin='{"title": "x", "task": "y", "zz": 1}',
           url=store)
    assert p.returncode == 1 and "unknown job field 'zz'" in p.stderr


# ---- validation --------------------------------------------------------------------------

CRONTABS = ["0 24", "60", "*/0", "* * mon-foo", "* * * 32", "* * * 0", "* * * * 13",
            "* * * * 0"]


def test_invalid_crontab_matches_celery(store):
    from celery.schedules import crontab
    for spec in CRONTABS:
        with pytest.raises(ValueError) as ei:
            crontab(*spec.split())
        p = cc("jobs", "create", "--title", "x", "--task", "demo.add", "--crontab", spec,
               url=store)
        assert p.returncode == 1, p.stderr
        assert "invalid schedule" in p.stderr and str(ei.value) in p.stderr, \
            (spec, str(ei.value), p.stderr)
        # The same check on update, and through the JSON of a schedule.
        job = mkjob(store) if spec == CRONTABS[0] else job
        p = cc("jobs", "update", job["id"], "--crontab", spec, url=store)
        assert p.returncode == 1 and str(ei.value) in p.stderr, p.stderr
    assert [j["id"] for j in js("jobs", "list", url=store)] == [job["id"]]
    assert js("jobs", "show", job["id"], url=store)["schedule"] is None
    # A crontab that matches no date: Celery accepts it and raises at run time; refused here
    # with Celery's run-time message. 29 February is fine.
    from datetime import datetime, timezone
    with pytest.raises(RuntimeError) as ei:
        crontab("0", "0", "*", "30", "2").remaining_estimate(datetime.now(timezone.utc))
    p = cc("jobs", "create", "--title", "x", "--task", "demo.add", "--crontab", "0 0 * 30 2",
           url=store)
    assert p.returncode == 1 and str(ei.value) in p.stderr, p.stderr
    ok("jobs", "create", "--title", "x", "--task", "demo.add", "--crontab", "0 0 * 29 2",
       url=store)


INVALID = [
    (["--interval", "0"], "interval seconds must be > 0", 1),
    (["--interval", "x"], "--interval: not a number", 2),
    (["--timezone", "Mars/Base"], "unknown time zone 'Mars/Base'", 1),
    (["--concurrency", "sometimes"], "unknown concurrency policy 'sometimes'", 1),
    (["--missed", "never"], "unknown missed policy 'never'", 1),
    (["--retry", '{"max_attempts": 0}'], "retry_policy.max_attempts must be an integer >= 1", 1),
    (["--retry", '{"factor": 0.5}'], "retry_policy.factor must be a number >= 1", 1),
    (["--args", '{"a": 1}'], "args must be a JSON array", 1),
    (["--kwargs", "[1]"], "kwargs must be a JSON object", 1),
    (["--args", "[1"], "--args: not JSON", 2),
    (["--crontab", "1 2 3 4 5 6"], "at most 5 fields", 2),
    (["--bogus"], "no such option: --bogus", 2),
]


def test_invalid_job_fields(store):
    for flags, message, rc in INVALID:
        p = cc("jobs", "create", "--title", "x", "--task", "demo.add", *flags, url=store)
        assert p.returncode == rc and message in p.stderr, (flags, p.returncode, p.stderr)
    assert js("jobs", "list", url=store) == []


def test_create_requires_title_and_task(store):
    p = cc("jobs", "create", "--task", "demo.add", url=store)
    assert p.returncode == 1 and "needs a title" in p.stderr
    p = cc("jobs", "create", "--title", "x", url=store)
    assert p.returncode == 1 and "needs a task" in p.stderr


def test_unknown_and_malformed_ids(store):
    nope = str(uuid.uuid4())
    for args, what in ((("jobs", "show", nope), "no job"), (("jobs", "update", nope, "--title",
                                                             "x"), "no job"),
                       (("jobs", "delete", nope), "no job"), (("jobs", "run", nope), "no job"),
                       (("jobs", "runs", nope), "no job"), (("jobs", "stop", nope), "no run"),
                       (("jobs", "logs", nope), "no run")):
        p = cc(*args, url=store)
        assert p.returncode == 1 and "%s %s" % (what, nope) in p.stderr, (args, p.stderr)
    for args in (("jobs", "show", "1234"), ("jobs", "run", "zz"), ("jobs", "stop", "x-y"),
                 ("jobs", "logs", "42")):
        p = cc(*args, url=store)
        assert p.returncode == 1 and "malformed" in p.stderr and "expected a uuid" in p.stderr
    p = cc("jobs", "show", url=store)
    assert p.returncode == 2 and "missing argument JOB_ID" in p.stderr
    p = cc("jobs", "frobnicate", url=store)
    assert p.returncode == 2 and "no such command" in p.stderr
    assert ok("jobs", "--help").stdout.startswith("Usage: celeryc jobs")
    assert ok("db", "--help").stdout.startswith("Usage: celeryc db")


# ---- runs --------------------------------------------------------------------------------

def test_run_creates_queued_row(store):
    job = mkjob(store, "--args", "[2, 3]", "--kwargs", '{"x": 1}', "--queue", "q1")
    out = ok("jobs", "run", job["id"], "--user", "alice", url=store).stdout
    assert out.startswith("run ") and "queued (task id " in out
    run_id, task_id = out.split()[1], out.split()[-1].rstrip(")")
    rows = sql(store, "SELECT job_id::text, started_by, status, task_id, args::text, "
                      "kwargs::text, queue, scheduled_for, sent_at, attempt, epoch "
                      "FROM celeryc.runs WHERE id = %s", (run_id,))
    assert rows == [(job["id"], "alice", "Q", task_id, "[2, 3]", '{"x": 1}', "q1", None, None,
                     1, 0)]
    r = js("jobs", "show", run_id, url=store)  # a run id shows the run
    assert r["id"] == run_id and r["status"] == "Q" and r["task_id"] == task_id
    assert "status:" in ok("jobs", "show", run_id, url=store).stdout
    # started_by defaults to $USER.
    js("db", "debug", "finish", task_id, "S", url=store)
    run2 = js("jobs", "run", job["id"], url=store, env={"USER": "bob"})["run"]
    assert run2["started_by"] == "bob"
    runs = js("jobs", "runs", job["id"], url=store)
    assert [x["id"] for x in runs] == [run2["id"], run_id]  # newest first
    assert [x["status"] for x in runs] == ["Q", "S"]
    human = ok("jobs", "runs", url=store).stdout.splitlines()
    assert human[0].split()[:4] == ["ID", "JOB", "STATUS", "BY"]
    assert human[1].split()[:4] == [run2["id"], job["id"], "Q", "bob"]
    assert len(js("jobs", "runs", "-n", "1", url=store)) == 1
    # The unsent sweep sees both Q runs (older than 0 s) until they are marked sent.
    assert [x["id"] for x in js("db", "debug", "unsent", "0", url=store)] == [run2["id"]]
    js("db", "debug", "mark-sent", run2["id"], url=store)
    assert js("db", "debug", "unsent", "0", url=store) == []
    # Deleting the job deletes its runs.
    ok("jobs", "delete", job["id"], url=store)
    assert sql(store, "SELECT count(*) FROM celeryc.runs") == [(0,)]


def test_concurrency_forbid(store):
    job = mkjob(store)  # forbid is the default
    first = js("jobs", "run", job["id"], url=store)["run"]
    p = cc("jobs", "run", job["id"], url=store)
    assert p.returncode == 1 and "forbid: run %s is Q" % first["id"] in p.stderr
    js("db", "debug", "start", first["task_id"], "host-a", url=store)
    p = cc("jobs", "run", job["id"], url=store)
    assert p.returncode == 1 and "forbid: run %s is R" % first["id"] in p.stderr
    js("db", "debug", "finish", first["task_id"], "S", url=store)
    second = js("jobs", "run", job["id"], url=store)["run"]
    assert second["status"] == "Q"
    assert sql(store, "SELECT count(*) FROM celeryc.runs") == [(2,)]


def test_concurrency_replace_and_allow(store):
    job = mkjob(store, "--concurrency", "replace")
    queued = js("jobs", "run", job["id"], url=store)["run"]
    res = js("jobs", "run", job["id"], url=store)
    # A run that had not started is cancelled outright (X), as `jobs stop` does.
    assert [(c["id"], c["status"]) for c in res["cancelled"]] == [(queued["id"], "X")]
    running = res["run"]
    js("db", "debug", "start", running["task_id"], "host-a", url=store)
    res = js("jobs", "run", job["id"], url=store)
    assert [(c["id"], c["status"]) for c in res["cancelled"]] == [(running["id"], "C")]
    out = ok("jobs", "run", job["id"], url=store).stdout
    assert "replaced run %s: now X" % res["run"]["id"] in out
    st = dict(sql(store, "SELECT id::text, status FROM celeryc.runs"))
    assert st[queued["id"]] == "X" and st[running["id"]] == "C" and st[res["run"]["id"]] == "X"
    # A worker finishing a C run with a failure records X; a cancelled run must not start.
    js("db", "debug", "finish", running["task_id"], "F", "killed", url=store)
    p = cc("db", "debug", "start", queued["task_id"], "host-b", url=store)
    assert p.returncode == 1 and "cancelled" in p.stderr
    assert sql(store, "SELECT status FROM celeryc.runs WHERE id = %s", (running["id"],)) == \
        [("X",)]
    job2 = mkjob(store, "--concurrency", "allow")
    for _ in range(3):
        assert js("jobs", "run", job2["id"], url=store)["cancelled"] == []
    assert sql(store, "SELECT count(*) FROM celeryc.runs WHERE job_id = %s AND status = 'Q'",
               (job2["id"],)) == [(3,)]


def test_concurrent_manual_runs_forbid(store):
    """Many `jobs run` at once under forbid: the job row lock lets exactly one through."""
    job = mkjob(store)
    b = celeryc_bin()
    procs = [subprocess.Popen([b, "jobs", "run", job["id"], "--job-store", store],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(6)]
    codes = sorted(p.wait(timeout=scaled(30)) for p in procs)
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert codes == [0, 1, 1, 1, 1, 1]
    assert sql(store, "SELECT count(*) FROM celeryc.runs") == [(1,)]


def test_run_start_finish_semantics(store):
    job = mkjob(store)
    run = js("jobs", "run", job["id"], url=store)["run"]
    tid = run["task_id"]
    js("db", "debug", "start", tid, "host-a", url=store)
    row = js("jobs", "show", run["id"], url=store)
    assert row["status"] == "R" and row["hostname"] == "host-a" and row["started_at"]
    js("db", "debug", "start", tid, "host-b", url=store)  # a redelivery: left as it is
    assert js("jobs", "show", run["id"], url=store)["status"] == "R"
    js("db", "debug", "heartbeat", tid, str(uuid.uuid4()), url=store)
    js("db", "debug", "finish", tid, "P", "3 of 5 records", "5", "2", url=store)
    row = js("jobs", "show", run["id"], url=store)
    assert (row["status"], row["message"], row["processed"], row["errored"]) == \
        ("P", "3 of 5 records", 5, 2)
    js("db", "debug", "finish", tid, "F", "late", url=store)  # already finished: unchanged
    assert js("jobs", "show", run["id"], url=store)["status"] == "P"
    started = js("db", "debug", "last-success", job["id"], url=store)["started_us"]
    assert abs(started / 1e6 - time.time()) < 300
    p = cc("db", "debug", "finish", str(uuid.uuid4()), "S", url=store)
    assert p.returncode == 1 and "no run with task id" in p.stderr
    p = cc("db", "debug", "finish", tid, "Q", url=store)
    assert p.returncode == 1 and "bad status" in p.stderr
    # fail: only Q/R runs.
    run2 = js("jobs", "run", job["id"], url=store)["run"]
    js("db", "debug", "fail", run2["id"], "message never sent: broker down", url=store)
    assert js("jobs", "show", run2["id"], url=store)["message"] == \
        "message never sent: broker down"
    p = cc("db", "debug", "fail", run2["id"], "again", url=store)
    assert p.returncode == 1 and "run is F" in p.stderr


# ---- run arguments, since, rerun (issue #14) ---------------------------------------------

def iso(s):
    from datetime import datetime
    return datetime.fromisoformat(s) if s is not None else None


def finish(url, run, status="S"):
    js("db", "debug", "start", run["task_id"], "host-a", url=url)
    js("db", "debug", "finish", run["task_id"], status, url=url)


def test_run_args_kwargs_queue_override_applied(store):
    """`jobs run --args/--kwargs/--queue` exited 0 and ran with the job's own arguments. An
    override replaces the job's value, as the "args" of an invenio-jobs run replace the job's
    default args (no merge); what is not given comes from the job. The run row records what
    the run is sent with, and its retries keep it."""
    job = mkjob(store, "--args", "[1, 2]", "--kwargs", '{"x": 1, "y": 2}', "--queue", "q1",
                "--concurrency", "allow", "--retry", '{"max_attempts": 2}')
    r = js("jobs", "run", job["id"], "--args", "[40]", "--kwargs", '{"y": 2}', "--queue", "q2",
           url=store)["run"]
    assert (r["args"], r["kwargs"], r["queue"]) == ([40], {"y": 2}, "q2")
    assert sql(store, "SELECT args::text, kwargs::text, queue FROM celeryc.runs WHERE id = %s",
               (r["id"],)) == [("[40]", '{"y": 2}', "q2")]
    shown = js("jobs", "show", r["id"], url=store)
    assert (shown["args"], shown["kwargs"], shown["queue"]) == ([40], {"y": 2}, "q2")
    kv = dict(line.split(":", 1) for line in ok("jobs", "show", r["id"], url=store)
              .stdout.splitlines() if ":" in line)
    assert kv["args"].strip() == "[40]" and kv["kwargs"].strip() == '{"y":2}'
    # Only --kwargs: the args and the queue are the job's; an empty object is an override too.
    r2 = js("jobs", "run", job["id"], "--kwargs", "{}", url=store)["run"]
    assert (r2["args"], r2["kwargs"], r2["queue"]) == ([1, 2], {}, "q1")
    r3 = js("jobs", "run", job["id"], "-a", "[]", url=store)["run"]
    assert (r3["args"], r3["kwargs"], r3["queue"]) == ([], {"x": 1, "y": 2}, "q1")
    # The human output says what was overridden.
    out = ok("jobs", "run", job["id"], "--kwargs", '{"z": 1}', url=store).stdout
    assert out.startswith("run ") and 'kwargs {"z":1}' in out, out
    # A retry of a run started with an override keeps it.
    finish(store, r, "F")
    new = js("db", "debug", "retry", url=store)
    assert [(x["retry_of"], x["args"], x["kwargs"], x["queue"], x["attempt"]) for x in new] == \
        [(r["id"], [40], {"y": 2}, "q2", 2)]


RUN_OVERRIDES_BAD = [
    (["--args", '{"a": 1}'], "--args must be a JSON array"),
    (["--args", '"x"'], "--args must be a JSON array"),
    (["--kwargs", "[1]"], "--kwargs must be a JSON object"),
    (["--kwargs", "null"], "--kwargs must be a JSON object"),
    (["--kwargs", "{"], "--kwargs: not JSON"),
    (["--kwargs", json.dumps({"blob": "x" * 70000})], "--kwargs is 70011 bytes of JSON, "
                                                      "more than 65536"),
    (["--args", json.dumps(["x" * 70000])], "--args is 70004 bytes of JSON, more than 65536"),
    (["--queue", ""], "--queue cannot be empty"),
    (["--queue", "q" * 256], "--queue is longer than 255 bytes"),
    (["--title", "x"], "--title does not apply to `jobs run`"),
    (["--since-kwarg", "since"], "--since-kwarg does not apply to `jobs run`"),
    (["--interval", "5"], "--interval does not apply to `jobs run`"),
]


def test_run_override_invalid_refused_exit_2(store):
    """A bad override is a usage error (exit 2, nothing queued), not a silent run with the
    job's arguments."""
    job = mkjob(store, "--concurrency", "allow")
    done = js("jobs", "run", job["id"], url=store)["run"]
    finish(store, done)
    for cmd, target in (("run", job["id"]), ("rerun", done["id"])):
        for flags, message in RUN_OVERRIDES_BAD:
            message = message.replace("`jobs run`", "`jobs %s`" % cmd)
            p = cc("jobs", cmd, target, *flags, url=store)
            assert p.returncode == 2 and message in p.stderr, (cmd, flags[0], p.returncode,
                                                              p.stderr)
    assert sql(store, "SELECT count(*) FROM celeryc.runs") == [(1,)]
    # At the limit: accepted.
    kw = {"b": "x" * (65536 - 8)}
    assert len(json.dumps(kw, separators=(",", ":"))) == 65536
    r = js("jobs", "run", job["id"], "--kwargs", json.dumps(kw), url=store)["run"]
    assert r["kwargs"] == kw


def test_new_job_has_no_since_kwarg_by_default(store):
    """Every job used to get `since=` (the column's default), so an ordinary task such as
    demo.add(x, y) failed with TypeError. Now a job gets it only with --since-kwarg NAME;
    the run row records the value (the start of the job's last S/P/W run, or null)."""
    job = mkjob(store, "--args", "[1, 2]", "--concurrency", "allow")
    assert job["since_kwarg"] is None
    r = js("jobs", "run", job["id"], url=store)["run"]
    assert r["kwargs"] == {}
    # Opting in, on create ...
    j2 = mkjob(store, "--since-kwarg", "since", "--concurrency", "allow")
    assert j2["since_kwarg"] == "since"
    first = js("jobs", "run", j2["id"], url=store)["run"]
    assert first["kwargs"] == {"since": None}
    finish(store, first)
    started = js("jobs", "show", first["id"], url=store)["started_at"]
    r = js("jobs", "run", j2["id"], url=store)["run"]
    assert list(r["kwargs"]) == ["since"] and iso(r["kwargs"]["since"]) == iso(started)
    # ... an override that names the kwarg wins over the computed value ...
    r = js("jobs", "run", j2["id"], "--kwargs", '{"since": "2020-01-01T00:00:00+00:00", '
           '"n": 1}', url=store)["run"]
    assert r["kwargs"] == {"since": "2020-01-01T00:00:00+00:00", "n": 1}
    # ... and one that does not still gets it (it is the job's, not one of its kwargs).
    r = js("jobs", "run", j2["id"], "--kwargs", '{"n": 2}', url=store)["run"]
    assert r["kwargs"]["n"] == 2 and iso(r["kwargs"]["since"]) == iso(started)
    # ... and on update: another name, then off again.
    assert js("jobs", "update", job["id"], "--since-kwarg", "after", url=store)["since_kwarg"] \
        == "after"
    assert js("jobs", "run", job["id"], url=store)["run"]["kwargs"] == {"after": None}
    assert js("jobs", "update", job["id"], "--since-kwarg", "", url=store)["since_kwarg"] is None
    assert js("jobs", "run", job["id"], url=store)["run"]["kwargs"] == {}
    # A job inserted with SQL without the column gets none either.
    jid = str(uuid.uuid4())
    sql(store, "INSERT INTO celeryc.jobs (id, title, task) VALUES (%s, 'sql', 'demo.add')",
        (jid,))
    assert sql(store, "SELECT since_kwarg FROM celeryc.jobs WHERE id = %s", (jid,)) == [(None,)]


def test_upgrade_keeps_since_for_jobs_created_before_it(pg_url):
    """Up to schema version 2 the column's default was 'since', stored in every job created
    without --since-kwarg; NULL (--since-kwarg "") meant none. The migration changes only
    the default: every existing row keeps its value, so old jobs still get `since`."""
    assert js("db", "debug", "upgrade-to", "2", url=pg_url) == {"from": 0, "to": 2}
    assert js("db", "version", url=pg_url) == {"version": 2, "latest": LATEST}
    old = {k: str(uuid.uuid4()) for k in ("default", "none", "named")}
    # What celeryc 2 stored: `jobs create` leaves the column out (its default applies).
    sql(pg_url, "INSERT INTO celeryc.jobs (id, title, task) VALUES "
                "(%s, 'old', 'jobs.index_events')", (old["default"],))
    sql(pg_url, "INSERT INTO celeryc.jobs (id, title, task, since_kwarg) VALUES "
                "(%s, 'old none', 'demo.add', NULL), (%s, 'old named', 'jobs.index_events', "
                "'after')", (old["none"], old["named"]))
    before = dict(sql(pg_url, "SELECT id::text, since_kwarg FROM celeryc.jobs"))
    assert before == {old["default"]: "since", old["none"]: None, old["named"]: "after"}
    assert js("db", "upgrade", url=pg_url) == {"from": 2, "to": LATEST}
    assert dict(sql(pg_url, "SELECT id::text, since_kwarg FROM celeryc.jobs")) == before
    assert sql(pg_url, "SELECT version FROM celeryc.schema_version ORDER BY 1") == \
        [(v,) for v in range(1, LATEST + 1)]
    # Their runs: as before the upgrade.
    runs = {k: js("jobs", "run", v, url=pg_url)["run"] for k, v in old.items()}
    assert runs["default"]["kwargs"] == {"since": None}
    assert runs["none"]["kwargs"] == {}
    assert runs["named"]["kwargs"] == {"after": None}
    # A job created after the upgrade gets none.
    new = mkjob(pg_url)
    assert new["since_kwarg"] is None
    assert js("jobs", "run", new["id"], url=pg_url)["run"]["kwargs"] == {}


def test_rerun_reproduces_finished_run_arguments(store):
    """`jobs rerun RUN_ID` queues a new run of the job with the args, kwargs and queue of a
    finished run (its `since` included), linked by rerun_of, started_by the user."""
    job = mkjob(store, "--args", "[1, 2]", "--kwargs", '{"x": 1}', "--queue", "q1",
                "--since-kwarg", "since", "--retry", '{"max_attempts": 2}')  # forbid
    r = js("jobs", "run", job["id"], "--args", "[7]", "--kwargs", '{"y": 3}', "--queue", "q2",
           "--user", "alice", url=store)["run"]
    assert r["kwargs"] == {"y": 3, "since": None} and r["rerun_of"] is None
    # Not finished (Q, R, C): refused, exit 1, nothing queued.
    p = cc("jobs", "rerun", r["id"], url=store)
    assert p.returncode == 1, p.stderr
    assert "run %s is Q (queued): only a finished run can be rerun" % r["id"] in p.stderr
    js("db", "debug", "start", r["task_id"], "host-a", url=store)
    p = cc("jobs", "rerun", r["id"], url=store)
    assert p.returncode == 1 and "is R (running): only a finished run" in p.stderr, p.stderr
    js("db", "debug", "finish", r["task_id"], "S", url=store)
    assert js("jobs", "run", job["id"], url=store)["run"]["kwargs"]["since"] is not None
    sql(store, "UPDATE celeryc.runs SET status = 'S', finished_at = now() WHERE job_id = %s "
               "AND status = 'Q'", (job["id"],))
    out = js("jobs", "rerun", r["id"], "--user", "bob", url=store)
    n = out["run"]
    assert out["cancelled"] == []
    assert (n["args"], n["kwargs"], n["queue"]) == ([7], {"y": 3, "since": None}, "q2")
    assert (n["rerun_of"], n["started_by"], n["status"], n["attempt"], n["retry_of"],
            n["scheduled_for"], n["epoch"]) == (r["id"], "bob", "Q", 1, None, None, 0)
    assert n["task_id"] != r["task_id"] and n["id"] != r["id"]
    assert js("jobs", "show", n["id"], url=store)["rerun_of"] == r["id"]
    # The job's concurrency policy applies (forbid: n is queued).
    p = cc("jobs", "rerun", r["id"], url=store)
    assert p.returncode == 1 and "forbid: run %s is Q" % n["id"] in p.stderr, p.stderr
    # A failed run can be rerun; its own retry (retry_of) is still made by the sweep.
    finish(store, n, "F")
    human = ok("jobs", "rerun", n["id"], "--user", "carol", url=store).stdout
    assert human.startswith("run ") and ": a rerun of run %s" % n["id"] in human, human
    m_id = human.split()[1]
    m = js("jobs", "show", m_id, url=store)
    assert (m["rerun_of"], m["started_by"], m["args"], m["kwargs"]) == \
        (n["id"], "carol", [7], {"y": 3, "since": None})
    finish(store, m)
    retry = js("db", "debug", "retry", url=store)
    assert [(x["retry_of"], x["kwargs"]) for x in retry] == [(n["id"], {"y": 3, "since": None})]
    finish(store, retry[0])
    # Overrides apply to a rerun too (they replace the original run's values).
    o = js("jobs", "rerun", r["id"], "--kwargs", '{"z": 1}', url=store)["run"]
    assert (o["args"], o["queue"], o["rerun_of"]) == ([7], "q2", r["id"])
    assert o["kwargs"]["z"] == 1 and sorted(o["kwargs"]) == ["since", "z"]
    assert o["kwargs"]["since"] is not None  # a fresh `since`: the override has none
    # A cancelling run (C) is not finished either; unknown and malformed ids.
    js("db", "debug", "start", o["task_id"], "host-a", url=store)
    js("jobs", "stop", o["id"], url=store)
    p = cc("jobs", "rerun", o["id"], url=store)
    assert p.returncode == 1 and "is C (cancelling): only a finished run" in p.stderr, p.stderr
    nope = str(uuid.uuid4())
    p = cc("jobs", "rerun", nope, url=store)
    assert p.returncode == 1 and "no run %s" % nope in p.stderr
    p = cc("jobs", "rerun", "42", url=store)
    assert p.returncode == 1 and "malformed run id" in p.stderr
    p = cc("jobs", "rerun", url=store)
    assert p.returncode == 2 and "missing argument RUN_ID" in p.stderr
    assert sql(store, "SELECT count(*) FROM celeryc.runs WHERE rerun_of IS NOT NULL") == [(3,)]


# ---- lease and fencing -------------------------------------------------------------------

def test_lease_holders_expiry_epochs(store):
    def lease(holder, ttl=60000):
        return js("db", "debug", "lease", "beat", holder, str(ttl), url=store)

    assert lease("a", 800) == {"is_leader": True, "epoch": 1}
    assert lease("b") == {"is_leader": False, "epoch": 0}
    assert lease("a", 800) == {"is_leader": True, "epoch": 1}  # renewal keeps the epoch
    # Expiry: b takes over with epoch 2, and a is out.
    wait_for(lambda: lease("b")["is_leader"], 10, "lease to expire", interval=0.2)
    assert lease("b") == {"is_leader": True, "epoch": 2}
    assert lease("a") == {"is_leader": False, "epoch": 0}
    # Release: a standby takes it at once, epoch 3.
    js("db", "debug", "lease-release", "beat", "a", url=store)  # not the holder: no-op
    assert lease("a") == {"is_leader": False, "epoch": 0}
    js("db", "debug", "lease-release", "beat", "b", url=store)
    assert lease("a") == {"is_leader": True, "epoch": 3}
    # Leases are per name.
    assert js("db", "debug", "lease", "other", "b", "60000", url=store) == \
        {"is_leader": True, "epoch": 1}
    rows = sql(store, "SELECT name, holder, epoch, expires_at > now() FROM celeryc.leases "
                      "ORDER BY name")
    assert rows == [("beat", "a", 3, True), ("other", "b", 1, True)]


def test_fencing_stale_epoch_cannot_insert(store):
    job = mkjob(store, "--concurrency", "allow")
    assert js("db", "debug", "lease", "beat", "a", "300", url=store)["epoch"] == 1
    slot = str(1_700_000_000_000_000)
    r = js("db", "debug", "run-create", job["id"], "--epoch", "1", "--lease", "beat",
           "--slot", slot, url=store)["run"]
    assert r["epoch"] == 1 and r["scheduled_for"].startswith("2023-11-14T22:13:20")
    assert r["started_by"] is None
    # Unique per (job, slot): a second leader at the same epoch cannot double it either.
    p = cc("db", "debug", "run-create", job["id"], "--epoch", "1", "--lease", "beat", "--slot",
           slot, url=store)
    assert p.returncode == 1 and "exists" in p.stderr
    wait_for(lambda: js("db", "debug", "lease", "beat", "b", "60000", url=store)["is_leader"],
             10, "takeover", interval=0.2)
    for s2 in (str(int(slot) + 60_000_000),):
        p = cc("db", "debug", "run-create", job["id"], "--epoch", "1", "--lease", "beat",
               "--slot", s2, url=store)
        assert p.returncode == 1 and "lease lost" in p.stderr
        r2 = js("db", "debug", "run-create", job["id"], "--epoch", "2", "--lease", "beat",
                "--slot", s2, url=store)["run"]
        assert r2["epoch"] == 2
    # Entry slots: fenced and unique too.
    p = cc("db", "debug", "claim", "every-10s", "t1", "--slot", slot, "--epoch", "1",
           "--lease", "beat", url=store)
    assert p.returncode == 1 and "lease lost" in p.stderr
    js("db", "debug", "claim", "every-10s", "t1", "--slot", slot, "--epoch", "2", "--lease",
       "beat", url=store)
    p = cc("db", "debug", "claim", "every-10s", "t2", "--slot", slot, "--epoch", "2", "--lease",
           "beat", url=store)
    assert p.returncode == 1 and "exists" in p.stderr
    js("db", "debug", "claim", "every-10s", "t3", "--slot", str(int(slot) + 10_000_000),
       "--epoch", "2", "--lease", "beat", url=store)
    assert js("db", "debug", "entries", url=store) == {
        "every-10s": {"last_run_at": int(slot) + 10_000_000, "total_run_count": 2}}
    assert sql(store, "SELECT count(*), min(epoch) FROM celeryc.entry_slots") == [(2, 2)]


# ---- logs --------------------------------------------------------------------------------

def test_run_logs_batch(store):
    job = mkjob(store, "--concurrency", "allow")
    r1 = js("jobs", "run", job["id"], url=store)["run"]
    r2 = js("jobs", "run", job["id"], url=store)["run"]
    # 1000 lines for r1, 1000 for r2, and 1000 for an unknown task id (dropped): one call.
    js("db", "debug", "logs-add", r1["task_id"], r2["task_id"], str(uuid.uuid4()), "--count",
       "1000", url=store)
    assert sql(store, "SELECT run_id::text, count(*) FROM celeryc.run_logs GROUP BY 1 "
                      "ORDER BY 1") == sorted([(r1["id"], 1000), (r2["id"], 1000)])
    lines = js("jobs", "logs", r1["id"], url=store)
    assert len(lines) == 1000
    assert [ln["message"] for ln in lines] == ['line %d "quoted" \\ back' % i
                                               for i in range(1000)]
    assert [ln["level"] for ln in lines[:2]] == ["INFO", "WARNING"]
    assert lines[0]["task_id"] == r1["task_id"]
    ids = [ln["id"] for ln in lines]
    assert ids == sorted(ids)
    ts = [ln["timestamp"] for ln in lines]
    assert ts == sorted(ts)
    human = ok("jobs", "logs", r2["id"], url=store).stdout.splitlines()
    assert len(human) == 1000
    assert human[0].split()[2:] == ["INFO", "line", "0", '"quoted"', "\\", "back"]


def test_logs_follow(store):
    job = mkjob(store)
    run = js("jobs", "run", job["id"], url=store)["run"]
    tid = run["task_id"]
    js("db", "debug", "start", tid, "host-a", url=store)
    js("db", "debug", "logs-add", tid, "--count", "2", url=store)
    b = celeryc_bin()
    p = subprocess.Popen([b, "jobs", "logs", run["id"], "--follow", "--timeout",
                          str(scaled(30)), "--job-store", store],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        assert p.poll() is None  # still following
        js("db", "debug", "logs-add", tid, "--count", "3", url=store)
        js("db", "debug", "finish", tid, "S", url=store)
        out, err = p.communicate(timeout=scaled(20))
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0, err
    assert len(out.splitlines()) == 5
    # --timeout bounds a run that never finishes.
    run2 = js("jobs", "run", mkjob(store)["id"], url=store)["run"]
    p = cc("jobs", "logs", run2["id"], "--follow", "--timeout", "1", url=store)
    assert p.returncode == 1 and "still running after 1 s" in p.stderr


# ---- sweeps ------------------------------------------------------------------------------

def test_reap_lost_worker(store):
    job = mkjob(store, "--concurrency", "allow")
    runs = [js("jobs", "run", job["id"], url=store)["run"] for _ in range(3)]
    for r in runs:
        js("db", "debug", "start", r["task_id"], "host-x", url=store)
    js("jobs", "stop", runs[2]["id"], url=store)  # C, no broker
    sql(store, "UPDATE celeryc.runs SET heartbeat_at = now() - interval '120 seconds' "
               "WHERE id IN (%s, %s)", (runs[0]["id"], runs[2]["id"]))
    assert js("db", "debug", "reap", "60", url=store) == {"reaped": 2}
    st = {r["id"]: r for r in js("jobs", "runs", job["id"], url=store)}
    assert st[runs[0]["id"]]["status"] == "F"
    assert st[runs[0]["id"]]["message"].startswith("worker host-x lost: no heartbeat for 12")
    assert st[runs[1]["id"]]["status"] == "R"  # fresh heartbeat
    assert st[runs[2]["id"]]["status"] == "X"  # was cancelling
    assert js("db", "debug", "reap", "60", url=store) == {"reaped": 0}


def test_retry_sweep_backoff_and_fencing(store):
    job = mkjob(store, "--retry", '{"max_attempts": 3, "backoff": 10, "factor": 3, '
                                  '"max_backoff": 20}')
    assert js("db", "debug", "lease", "beat", "a", "60000", url=store)["epoch"] == 1
    run = js("jobs", "run", job["id"], url=store)["run"]
    js("db", "debug", "start", run["task_id"], "h", url=store)
    js("db", "debug", "finish", run["task_id"], "F", "boom", url=store)
    p = cc("db", "debug", "retry", "--epoch", "7", "--lease", "beat", url=store)
    assert p.returncode == 1 and "lease lost" in p.stderr
    new = js("db", "debug", "retry", "--epoch", "1", "--lease", "beat", url=store)
    assert len(new) == 1
    r2 = new[0]
    assert (r2["attempt"], r2["retry_of"], r2["status"], r2["epoch"], r2["started_by"]) == \
        (2, run["id"], "Q", 1, run["started_by"])
    assert r2["task_id"] != run["task_id"]
    delay = sql(store, "SELECT extract(epoch FROM r2.not_before - r1.finished_at) FROM "
                       "celeryc.runs r1, celeryc.runs r2 WHERE r1.id = %s AND r2.id = %s",
                (run["id"], r2["id"]))[0][0]
    assert float(delay) == pytest.approx(10.0, abs=0.01)  # backoff * factor^0
    assert js("db", "debug", "retry", url=store) == []  # one retry per failure
    assert js("db", "debug", "unsent", "0", url=store) == []  # waits for its not_before
    sql(store, "UPDATE celeryc.runs SET not_before = now() - interval '1 second' WHERE id = %s",
        (r2["id"],))
    assert [x["id"] for x in js("db", "debug", "unsent", "3600", url=store)] == [r2["id"]]
    js("db", "debug", "start", r2["task_id"], "h", url=store)
    js("db", "debug", "finish", r2["task_id"], "F", "boom", url=store)
    r3 = js("db", "debug", "retry", url=store)[0]
    assert r3["attempt"] == 3
    delay = sql(store, "SELECT extract(epoch FROM r3.not_before - r2.finished_at) FROM "
                       "celeryc.runs r2, celeryc.runs r3 WHERE r2.id = %s AND r3.id = %s",
                (r2["id"], r3["id"]))[0][0]
    assert float(delay) == pytest.approx(20.0, abs=0.01)  # 10 * 3 = 30, capped at 20
    js("db", "debug", "start", r3["task_id"], "h", url=store)
    js("db", "debug", "finish", r3["task_id"], "F", "boom", url=store)
    assert js("db", "debug", "retry", url=store) == []  # max_attempts reached
    # Cancelled (X) and successful runs are not retried.
    run4 = js("jobs", "run", job["id"], url=store)["run"]
    js("jobs", "stop", run4["id"], url=store)
    assert js("db", "debug", "retry", url=store) == []


# ---- notifications -----------------------------------------------------------------------

def test_notify_triggers(store):
    import psycopg2
    conn = psycopg2.connect(store, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("LISTEN celeryc_jobs; LISTEN celeryc_runs")

        def drain(n, timeout=10):
            got = []
            end = time.monotonic() + scaled(timeout)
            while len(got) < n and time.monotonic() < end:
                if select.select([conn], [], [], 0.2)[0]:
                    conn.poll()
                    while conn.notifies:
                        nt = conn.notifies.pop(0)
                        got.append((nt.channel, nt.payload))
            return got

        job = mkjob(store, "--concurrency", "allow")
        assert drain(1) == [("celeryc_jobs", job["id"])]
        js("jobs", "update", job["id"], "--title", "renamed", url=store)
        assert drain(1) == [("celeryc_jobs", job["id"])]
        run = js("jobs", "run", job["id"], url=store)["run"]
        assert drain(1) == [("celeryc_runs", run["id"])]  # a manual run
        js("db", "debug", "start", run["task_id"], "h", url=store)  # R: no notification
        js("jobs", "stop", run["id"], url=store)  # C
        assert drain(1) == [("celeryc_runs", run["id"])]
        # Scheduler runs do not notify on insert; a failure does.
        r2 = js("db", "debug", "run-create", job["id"], "--slot", "1000000", url=store)["run"]
        js("db", "debug", "fail", r2["id"], "never sent", url=store)
        assert drain(1) == [("celeryc_runs", r2["id"])]
        # Changes made with SQL notify too.
        sql(store, "UPDATE celeryc.jobs SET active = false WHERE id = %s", (job["id"],))
        assert drain(1) == [("celeryc_jobs", job["id"])]
        ok("jobs", "delete", job["id"], url=store)
        assert drain(1) == [("celeryc_jobs", job["id"])]
        assert drain(1, timeout=0.5) == []
    finally:
        conn.close()


# ---- stop (RabbitMQ + a celeryc worker) --------------------------------------------------

def test_stop_revokes_and_terminates(store, app, worker_factory):
    w = worker_factory(track_started=True)
    broker = os.environ["CELERYC_TEST_AMQP_URL"]
    job = mkjob(store, "--concurrency", "allow")
    js("jobs", "update", job["id"], "--queue", w.queue, url=store)
    # A running run: its message sent by hand here (the beat sends it in production) and
    # marked R as the job-run worker would.
    run = js("jobs", "run", job["id"], url=store)["run"]
    res = app.send_task("demo.sleep", args=[300], queue=w.queue, task_id=run["task_id"])
    wait_for(lambda: res.state == "STARTED", TIMEOUT, "the task to start")
    js("db", "debug", "start", run["task_id"], w.name, url=store)
    out = js("jobs", "stop", run["id"], "-b", broker, "-t", str(scaled(2)), url=store)
    assert (out["status"], out["terminate"], out["revoked"], out["task_id"]) == \
        ("C", True, True, run["task_id"])
    assert {w.name: {"ok": "terminate: %s" % run["task_id"]}} in out["replies"]
    wait_for(lambda: res.state == "REVOKED", TIMEOUT, "the task to be terminated")
    assert js("jobs", "show", run["id"], url=store)["status"] == "C"
    # A queued run (never started): X at once, a plain revoke (no terminate).
    run2 = js("jobs", "run", job["id"], url=store)["run"]
    p = ok("jobs", "stop", run2["id"], url=store, env={"CELERY_BROKER_URL": broker})
    assert "is X (cancelled)" in p.stdout and "revoke sent for task %s" % run2["task_id"] in \
        p.stdout
    res2 = app.send_task("demo.add", args=[1, 2], queue=w.queue, task_id=run2["task_id"])
    wait_for(lambda: res2.state == "REVOKED", TIMEOUT, "the revoked task to be discarded")
    # Stopping a finished run is refused.
    p = cc("jobs", "stop", run2["id"], url=store)
    assert p.returncode == 1 and "run is X" in p.stderr


def test_stop_without_broker(store):
    job = mkjob(store)
    run = js("jobs", "run", job["id"], url=store)["run"]
    js("db", "debug", "start", run["task_id"], "h", url=store)
    p = ok("jobs", "stop", run["id"], url=store)
    assert "is C (cancelling)" in p.stdout
    assert "the run is marked C and nothing was revoked" in p.stdout
    out = js("jobs", "stop", run["id"], url=store)  # again: still C, re-revocable
    assert (out["status"], out["revoked"]) == ("C", False)
    # An unreachable broker: the store change stands, the failure is reported.
    from conftest import free_port
    p = cc("jobs", "stop", run["id"], "-b", "amqp://guest:guest@127.0.0.1:%d//" % free_port(),
           url=store)
    assert p.returncode == 70 and "the run is marked C but the revoke was not sent" in p.stderr


def test_listen_in_c_survives_a_lost_connection(store):
    """cc_jobstore_listen / cc_jobstore_notifications / cc_jobstore_reconnect (what the beat uses):
    notifications arrive, and after the server drops the connection the store reconnects
    and LISTENs again."""
    job = mkjob(store)
    b = celeryc_bin()
    p = subprocess.Popen([b, "db", "debug", "listen", str(scaled(30)), "--count", "2",
                          "--job-store", store], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert json.loads(p.stdout.readline()) == {"listening": True}
        js("jobs", "update", job["id"], "--title", "one", url=store)
        assert json.loads(p.stdout.readline()) == {"channel": "celeryc_jobs",
                                                   "payload": job["id"]}
        killed = sql(store, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                            "application_name = 'celeryc' AND datname = current_database()")
        assert killed == [(True,)]
        assert json.loads(p.stdout.readline()) == {"reconnected": True}
        run = js("jobs", "run", job["id"], url=store)["run"]
        assert json.loads(p.stdout.readline()) == {"channel": "celeryc_runs",
                                                   "payload": run["id"]}
        out, err = p.communicate(timeout=scaled(20))
        assert p.returncode == 0, err
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
