#!/usr/bin/python3
"""Statistics indexer benchmark (issue #7): usage events indexed per second end to end, and
the Postgres write amplification, for celeryc's stats.index_events beside the bare broker and a
straightforward Python indexer. Driven by `bench/run.sh --stats` (which builds, starts
RabbitMQ + Redis + Postgres in a project-local dir and exports CELERYC_TEST_*); see
bench/README.md ("Statistics indexer benchmark").

One run, one phase after the other on the same services:
  ceiling  bench_statspub publishes N events of type `ceiling-view`; bench_ceiling (bare
           rabbitmq-c, manual acks, QoS as the indexer sets it: per consumer, prefetch
           2 x commit_every; one multiple-ack per commit_every) drains them: what any consumer gets from this broker.
  celeryc  a fresh database, `celeryc db upgrade`; `celeryc worker --job-store` (prefork -c 1)
           waiting on its queue; bench_statspub publishes N events of type `record-view`
           (publisher confirms: all are in the queue when it returns); a job
           stats.index_events(event_type, batch_size=N) is created and run (`celeryc jobs
           create` + `celeryc jobs run`, then its message sent with the run header, as the
           beat sends it); the clock and counters are read around the run.
  python   the same with bench/stats_py.py (kombu/py-amqp, psycopg2 execute_values, hmac) on
           PY_N events, its own fresh database.
Figures per phase:
  events/s          read / (finished_at - started_at) of the run (the task's whole life:
                    connect, declare, drain, every chunk's commit, the lag peek); for Python
                    its own span from connect to the last commit. `e2e/s`: N / (first publish ..
                    run finished), i.e. publishing included.
  CPU us/event      utime+stime of the worker process tree (master + pool child) over the run
                    / events; Python: the indexer process's own. RabbitMQ's and Postgres's
                    (postmaster + backends) likewise.
  WAL B/event       pg_wal_lsn_diff of pg_current_wal_lsn() around the run / events (the
                    cluster holds nothing else; a CHECKPOINT is taken before each phase, and
                    full_page_writes is switched on for the bench (the test cluster runs with
                    it off), so the first change of each page after it is a full-page image,
                    as in production)
  rows/event        pg_stat_database tup_inserted + tup_updated + tup_deleted of the phase's
                    database around the run (read once they stop changing) / events
  bytes/event       pg_total_relation_size of the celeryc.stats_* tables (with indexes and
                    TOAST) after the run / events (they start empty)
  other%            CPU used by processes outside the benchmark during the run, share of all
                    CPUs (whole-machine busy time from /proc/stat minus ours): the noise figure
Checks: bench_statspub prints what the indexer must find (read, inserted, duplicates, robots,
errors, sum of counts, sum of unique visitors, number of daily rows) for the mix it sent; every
phase is checked against it (a mismatch is printed and in the JSON; the figures are kept).
Writes bench/results/stats-latest.json; logs in bench/results/logs/stats-*.log.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import amqp
import psycopg2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench import (AMQP, AMQP_PORT, BUILD, cpu_us, fresh_logdir, log, machine,  # noqa: E402
                   machine_busy_us, mem_kb, proc_tree, self_cpu_us, stop_on_signals)
from beat import LIVE, Proc  # noqa: E402

PG_URL = os.environ.get("CELERYC_TEST_PG_URL", "")  # unset only for --help
REDIS_URL = os.environ.get("CELERYC_TEST_REDIS_URL", "")
ROBOTS = ROOT / "deploy" / "stats" / "robots.txt"
IMPLS = ("ceiling", "celeryc", "python")
TABLES = ("stats_events", "stats_daily", "stats_daily_visitors", "stats_bookmarks",
          "stats_salts")


# ---- Postgres -----------------------------------------------------------------------------

def db_url(name):
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def superuser():
    """The bench cluster's superuser over its unix socket (services.sh: local trust)."""
    sock = os.environ.get("CELERYC_TEST_PG_SOCKDIR")
    if not sock:
        return None
    try:
        c = psycopg2.connect(host=sock, port=os.environ["CELERYC_TEST_PG_PORT"],
                             user="postgres", dbname="postgres", connect_timeout=10)
    except psycopg2.Error as e:
        log("no superuser connection (%s): no CHECKPOINT, full_page_writes as configured"
            % str(e).strip())
        return None
    c.autocommit = True
    return c


def q1(conn, sql, *args):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()


def fresh_db(name):
    admin = psycopg2.connect(PG_URL, connect_timeout=10)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute('DROP DATABASE IF EXISTS "%s"' % name)
        cur.execute('CREATE DATABASE "%s"' % name)
    admin.close()
    url = db_url(name)
    subprocess.run([str(BUILD / "celeryc"), "db", "upgrade", "--job-store", url], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    return url


def pg_pids():
    return proc_tree(int(os.environ["CELERYC_TEST_PG_PID"]))


def rabbit_pids():
    return proc_tree(int(os.environ["CELERYC_TEST_RABBITMQ_PID"]))


def pg_counters(mon, dbname):
    """Cumulative row counters of a database (pg_stat_database), fresh (not the snapshot)."""
    q1(mon, "SELECT pg_stat_clear_snapshot()")
    r = q1(mon, "SELECT tup_inserted, tup_updated, tup_deleted, xact_commit FROM "
           "pg_stat_database WHERE datname = %s", dbname)
    return {"inserted": r[0], "updated": r[1], "deleted": r[2], "commits": r[3]}


def pg_counters_settled(mon, dbname, timeout=20.0):
    """Backends report their counters to the cumulative statistics every second or so (and
    at exit): read until two reads 1.2 s apart agree."""
    last = pg_counters(mon, dbname)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        time.sleep(1.2)
        cur = pg_counters(mon, dbname)
        if cur == last:
            return cur
        last = cur
    log("pg_stat_database of %s still changing after %.0f s" % (dbname, timeout))
    return last


def table_bytes(url):
    c = psycopg2.connect(url, connect_timeout=10)
    try:
        with c.cursor() as cur:
            cur.execute("SELECT c.relname, pg_total_relation_size(c.oid), c.reltuples::bigint "
                        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = 'celeryc' AND c.relkind = 'r' AND c.relname = ANY(%s)",
                        (list(TABLES),))
            sizes = {r[0]: r[1] for r in cur.fetchall()}
            cur.execute("SELECT (SELECT count(*) FROM celeryc.stats_events), "
                        "(SELECT count(*) FROM celeryc.stats_daily), "
                        "(SELECT count(*) FROM celeryc.stats_daily_visitors), "
                        "(SELECT coalesce(sum(count), 0) FROM celeryc.stats_daily), "
                        "(SELECT coalesce(sum(unique_visitors), 0) FROM celeryc.stats_daily), "
                        "(SELECT count(*) FROM celeryc.stats_events WHERE robot)")
            r = cur.fetchone()
        rows = {"stats_events": r[0], "stats_daily": r[1], "stats_daily_visitors": r[2],
                "agg_events": int(r[3]), "agg_unique_visitors": int(r[4]), "robot_rows": r[5]}
        return sizes, rows
    finally:
        c.close()


class Meter:
    """Everything read before and after a measured span."""

    def __init__(self, mon, su, dbname, worker_pids_fn):
        self.mon, self.su, self.dbname = mon, su, dbname
        self.worker_pids_fn = worker_pids_fn

    def snap(self):
        wp = self.worker_pids_fn() if self.worker_pids_fn else []
        return {"t": time.monotonic(), "wall": time.time(),
                "worker": cpu_us(wp), "rabbit": cpu_us(rabbit_pids()), "pg": cpu_us(pg_pids()),
                "self": self_cpu_us() + children_cpu_us(), "machine": machine_busy_us(),
                "lsn": q1(self.mon, "SELECT pg_current_wal_lsn()::text")[0]}

    def diff(self, a, b, events, extra_self_us=0):
        secs = b["t"] - a["t"]
        wal = int(q1(self.mon, "SELECT pg_wal_lsn_diff(%s, %s)", b["lsn"], a["lsn"])[0])
        ours = sum(b[k] - a[k] for k in ("worker", "rabbit", "pg", "self")) + extra_self_us
        other = (b["machine"] - a["machine"]) - ours
        return {"seconds": round(secs, 3), "wal_bytes": wal,
                "wal_bytes_per_event": round(wal / events, 1),
                "worker_cpu_us": b["worker"] - a["worker"],
                "broker_cpu_us_per_event": round((b["rabbit"] - a["rabbit"]) / events, 2),
                "pg_cpu_us_per_event": round((b["pg"] - a["pg"]) / events, 2),
                "foreign_cpu_pct": round(max(0.0, 100.0 * other /
                                             (secs * 1e6 * (os.cpu_count() or 1))), 1)}


def children_cpu_us():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((r.ru_utime + r.ru_stime) * 1e6)


def waldump(mon, start, end):
    """pg_waldump --stats over [start, end): records, their bytes and the full-page images'
    bytes, and the bytes per resource manager (Heap, Btree, ...). None when the WAL files are
    not readable here (or were recycled by a checkpoint during the run)."""
    data = os.environ.get("CELERYC_TEST_DATA_DIR")
    major = q1(mon, "SELECT current_setting('server_version_num')::int / 10000")[0]
    tool = Path("/usr/lib/postgresql/%d/bin/pg_waldump" % major)
    if not data or not tool.exists():
        return None
    try:
        out = subprocess.run([str(tool), "--stats", "-p", str(Path(data) / "postgres" / "data" /
                                                              "pg_wal"), "-s", start, "-e", end],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             timeout=300)
    except (OSError, subprocess.SubprocessError) as e:
        return {"error": str(e)}
    res = {"by_rmgr": {}}
    for line in out.stdout.splitlines():
        f = line.split()
        if f and f[0] == "Total":  # Total N record [x%] fpi [y%] combined [100%]
            res.update(records=int(f[1]), record_bytes=int(f[2]), fpi_bytes=int(f[4]))
        elif len(f) >= 10 and f[1].isdigit() and f[0] != "Total":
            combined = int(f[-3])
            if combined:
                res["by_rmgr"][f[0]] = combined
    if "records" not in res:
        return {"error": out.stdout.strip()[-300:]}
    return res


def checkpoint(su):
    if su is not None:
        with su.cursor() as cur:
            cur.execute("CHECKPOINT")


def pg_settings(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                    (["fsync", "synchronous_commit", "full_page_writes", "wal_level",
                      "shared_buffers", "max_wal_size", "checkpoint_timeout", "server_version",
                      "wal_compression"],))
        return dict(cur.fetchall())


# ---- tools ----------------------------------------------------------------------------------

def publish(opt, etype, n, logdir):
    """bench_statspub: N events of type etype; returns its JSON line (with `expected`)."""
    cmd = [str(BUILD / "bench_statspub"), AMQP, etype, str(n), "--objects", str(opt.objects),
           "--object-zipf", str(opt.object_zipf), "--visitors", str(opt.visitors),
           "--visitor-zipf", str(opt.visitor_zipf), "--days", str(opt.days),
           "--robots-pct", str(opt.robots_pct), "--dclick-pct", str(opt.dclick_pct),
           "--explicit-pct", str(opt.explicit_pct), "--dup-pct", str(opt.dup_pct),
           "--bad-pct", str(opt.bad_pct), "--window", str(opt.window), "--seed", str(opt.seed)]
    if opt.robots_file:
        cmd += ["--robots-file", opt.robots_file]
    t0 = time.time()
    rp = rabbit_pids()
    r0, c0 = cpu_us(rp), children_cpu_us()
    with open(logdir / ("stats-publish-%s.log" % etype), "ab") as err:
        out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=err, text=True,
                             timeout=opt.deadline)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["started_wall"] = t0
    res["broker_cpu_us_per_event"] = round((cpu_us(rp) - r0) / n, 2)
    res["publisher_cpu_us_per_event"] = round((children_cpu_us() - c0) / n, 2)
    if res["queue_depth"] != n:
        raise RuntimeError("%s: %d messages in the queue after publishing %d (a queue left "
                           "over?)" % (etype, res["queue_depth"], n))
    log("published %d %s events in %.1f s (%.0f/s; RabbitMQ %.1f us/event, publisher %.1f); "
        "expected %s" % (n, etype, res["seconds"], res["per_s"], res["broker_cpu_us_per_event"],
                         res["publisher_cpu_us_per_event"], res["expected"]))
    return res


def purge(queues):
    """Delete the benchmark's queues (they are declared again by the publisher)."""
    u = urlsplit(AMQP)
    c = amqp.Connection("%s:%d" % (u.hostname, u.port), userid=unquote(u.username),
                        password=unquote(u.password), virtual_host="/")
    c.connect()
    ch = c.channel()
    for q in queues:
        ch.queue_delete(q)
    c.close()


def check(name, got, expected):
    """[mismatch lines] of got vs expected (both dicts, the keys of expected)."""
    bad = []
    for k, v in expected.items():
        if k in got and got[k] != v:
            bad.append("%s: %s %s, expected %s" % (name, k, got[k], v))
    return bad


# ---- phases ---------------------------------------------------------------------------------

def run_ceiling(opt, logdir):
    purge(["stats-ceiling-view", "stats-ceiling-view.dead"])
    pub = publish(opt, "ceiling-view", opt.ceiling_n, logdir)
    prefetch = min(opt.commit_every * 2, 65535)
    rp = rabbit_pids()
    r0, m0, s0, t0 = cpu_us(rp), machine_busy_us(), self_cpu_us() + children_cpu_us(), \
        time.monotonic()
    out = subprocess.run([str(BUILD / "bench_ceiling"), "127.0.0.1", AMQP_PORT,
                          "stats-ceiling-view", str(opt.ceiling_n), str(prefetch), "0"],
                         check=True, stdout=subprocess.PIPE, text=True, timeout=opt.deadline)
    r1, m1, s1, t1 = cpu_us(rp), machine_busy_us(), self_cpu_us() + children_cpu_us(), \
        time.monotonic()
    line = out.stdout.strip()
    secs = float(line.split(" in ")[1].split()[0])
    other = (m1 - m0) - (r1 - r0) - (s1 - s0)
    res = {"events": opt.ceiling_n, "events_per_s": round(opt.ceiling_n / secs, 1),
           "seconds": secs, "prefetch": prefetch, "ack_every": prefetch // 2,
           "broker_cpu_us_per_event": round((r1 - r0) / opt.ceiling_n, 2),
           "consumer_cpu_us_per_event": round((s1 - s0) / opt.ceiling_n, 2),
           "foreign_cpu_pct": round(max(0.0, 100.0 * other /
                                        ((t1 - t0) * 1e6 * (os.cpu_count() or 1))), 1),
           "publish": pub, "output": line}
    purge(["stats-ceiling-view", "stats-ceiling-view.dead"])
    log("ceiling:", {k: v for k, v in res.items() if k != "publish"})
    return res


def wait_log(proc, needle, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        proc.check()
        if needle in proc.log_path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise RuntimeError("%s: no %r in its log after %.0f s" % (proc.name, needle, timeout))


def celeryc_cli(*argv):
    out = subprocess.run([str(BUILD / "celeryc")] + list(argv), check=True,
                         stdout=subprocess.PIPE, text=True, timeout=60)
    return json.loads(out.stdout)


def run_celeryc(opt, logdir, mon, su):
    dbname = "sbench_celeryc"
    url = fresh_db(dbname)
    purge(["stats-record-view", "stats-record-view.dead"])
    queue = "bench-stats"
    cmd = [str(BUILD / "celeryc"), "worker", "-b", AMQP, "--job-store", url, "-Q", queue,
           "-c", "1", "-P", "prefork", "-n", "bench-stats@localhost", "-l", "info",
           "--result-backend", REDIS_URL or "none"]
    # e.g. "perf record -g -o /tmp/stats.perf --" to profile the worker (its CPU figure then
    # includes perf's)
    cmd = os.environ.get("BENCH_STATS_WORKER_PREFIX", "").split() + cmd
    w = Proc("celeryc worker", cmd, logdir / "stats-celeryc-worker.log")
    try:
        wait_log(w, " ready.", 60)
        kwargs = {"event_type": "record-view", "batch_size": opt.n,
                  "commit_every": opt.commit_every, "double_click_window": opt.window}
        if opt.robots_file and opt.robots_file != str(ROBOTS):
            kwargs["robots_file"] = opt.robots_file
        job = celeryc_cli("jobs", "create", "--job-store", url, "--title", "bench stats",
                          "--task", "stats.index_events", "--queue", queue, "--kwargs",
                          json.dumps(kwargs), "--since-kwarg", "", "--json")
        run = celeryc_cli("jobs", "run", job["id"], "--job-store", url, "--user", "bench",
                          "--json")["run"]
        pub = publish(opt, "record-view", opt.n, logdir)
        from celery import Celery
        app = Celery("bench", broker=AMQP)
        db = psycopg2.connect(url)
        db.autocommit = True
        wpids = proc_tree(w.p.pid)  # master + pool child (prefork: forked at start)
        checkpoint(su)
        meter = Meter(mon, su, dbname, lambda: wpids)
        c0 = pg_counters(mon, dbname)
        a = meter.snap()
        app.send_task("stats.index_events", args=run["args"], kwargs=run["kwargs"],
                      task_id=run["task_id"], queue=queue, headers={"celeryc_run": run["id"]})
        end = time.monotonic() + opt.deadline
        peak = 0
        while True:
            st = q1(db, "SELECT status FROM celeryc.runs WHERE id = %s", run["id"])[0]
            if st not in ("Q", "R", "C"):
                break
            w.check()
            peak = max(peak, mem_kb(wpids))
            if time.monotonic() > end:
                raise RuntimeError("run %s still %s after %.0f s" % (run["id"], st,
                                                                    opt.deadline))
            time.sleep(0.1)
        b = meter.snap()
        wal = waldump(mon, a["lsn"], b["lsn"])
        c1 = pg_counters_settled(mon, dbname)
        with db.cursor() as cur:
            cur.execute("SELECT status, message, started_at, finished_at, processed, errored, "
                        "summary, extract(epoch FROM finished_at - started_at) "
                        "FROM celeryc.runs WHERE id = %s", (run["id"],))
            status, message, started, finished, processed, errored, summary, secs = \
                cur.fetchone()
            cur.execute("SELECT level, message FROM celeryc.run_logs WHERE run_id = %s "
                        "ORDER BY id", (run["id"],))
            run_logs = ["%s %s" % r for r in cur.fetchall()]
        db.close()
    finally:
        w.stop()
    sizes, rows = table_bytes(url)
    res = finish("celeryc", opt.n, pub, meter.diff(a, b, opt.n), c0, c1, sizes, rows)
    secs = float(secs)
    res.update(run_logs=run_logs, wal_stats=wal, status=status, message=message, summary=summary,
               processed=processed,
               errored=errored, run_seconds=round(secs, 3),
               events_per_s=round(opt.n / secs, 1),
               e2e_seconds=round(finished.timestamp() - pub["started_wall"], 3),
               cpu_us_per_event=round(res["worker_cpu_us"] / opt.n, 2),
               peak_rss_kb=peak, started_at=started.isoformat(), finished_at=finished.isoformat())
    res["e2e_events_per_s"] = round(opt.n / res["e2e_seconds"], 1)
    got = dict(summary or {})
    got.update({k: rows[k] for k in ("agg_events", "agg_unique_visitors")},
               agg_keys=rows["stats_daily"])
    res["check"] = check("celeryc", got, pub["expected"])
    if status not in ("S", "P"):
        res["check"].append("celeryc: run ended %s: %s" % (status, message))
    log("celeryc:", {k: v for k, v in res.items() if k not in ("publish", "summary")})
    return res


def run_python(opt, logdir, mon, su):
    dbname = "sbench_python"
    url = fresh_db(dbname)
    purge(["stats-record-view", "stats-record-view.dead"])
    pub = publish(opt, "record-view", opt.py_n, logdir)
    checkpoint(su)
    cmd = ["/usr/bin/python3", str(HERE / "stats_py.py"), "--amqp", AMQP, "--db", url,
           "--type", "record-view", "--batch-size", str(opt.py_n),
           "--commit-every", str(opt.commit_every), "--window", str(opt.window)]
    if opt.robots_file:
        cmd += ["--robots-file", opt.robots_file]
    meter = Meter(mon, su, dbname, None)
    c0 = pg_counters(mon, dbname)
    a = meter.snap()
    with open(logdir / "stats-python.log", "wb") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            out = p.communicate(timeout=opt.deadline)[0]
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    b = meter.snap()
    wal = waldump(mon, a["lsn"], b["lsn"])
    c1 = pg_counters_settled(mon, dbname)
    if p.returncode != 0:
        raise RuntimeError("stats_py.py exited %s (log %s)" % (p.returncode,
                                                              logdir / "stats-python.log"))
    summary = json.loads(out.strip().splitlines()[-1])
    sizes, rows = table_bytes(url)
    d = meter.diff(a, b, opt.py_n)
    res = finish("python", opt.py_n, pub, d, c0, c1, sizes, rows)
    # The indexer's CPU is its own (user+sys over its run, start-up/imports excluded);
    # the process as a whole is in self (reaped child) for other%.
    res.update(wal_stats=wal, summary=summary, run_seconds=summary["elapsed_s"],
               events_per_s=round(opt.py_n / summary["elapsed_s"], 1),
               cpu_us_per_event=round(summary["cpu_s"] * 1e6 / opt.py_n, 2),
               e2e_seconds=round(b["wall"] - pub["started_wall"], 3))
    res["e2e_events_per_s"] = round(opt.py_n / res["e2e_seconds"], 1)
    got = dict(summary)
    got.update({k: rows[k] for k in ("agg_events", "agg_unique_visitors")},
               agg_keys=rows["stats_daily"])
    res["check"] = check("python", got, pub["expected"])
    log("python:", {k: v for k, v in res.items() if k not in ("publish", "summary")})
    return res


def finish(name, n, pub, d, c0, c1, sizes, rows):
    written = sum(c1[k] - c0[k] for k in ("inserted", "updated", "deleted"))
    total = sum(sizes.values())
    d["wal_bytes_per_body_byte"] = round(d["wal_bytes"] / pub["body_bytes"], 2)
    return dict(events=n, publish=pub, **d,
                rows_written=written, rows_per_event=round(written / n, 3),
                rows_detail={k: c1[k] - c0[k] for k in ("inserted", "updated", "deleted",
                                                        "commits")},
                table_bytes=sizes, table_bytes_total=total,
                table_bytes_per_event=round(total / n, 1), table_rows=rows)


# ---- report ---------------------------------------------------------------------------------

def print_table(res, opt):
    mach = res["machine"]
    print()
    print("celeryc stats bench %s: stats.index_events, %d events (Python %d), commit_every %d; "
          "%d objects (Zipf %.1f), %d visitors, %.0f days, robots %.0f%%, double clicks %.0f%%, "
          "explicit ids %.0f%% (re-sent %.0f%%)"
          % (res["started"][:10], opt.n, opt.py_n, opt.commit_every, opt.objects,
             opt.object_zipf, opt.visitors, opt.days, opt.robots_pct, opt.dclick_pct,
             opt.explicit_pct, opt.dup_pct))
    print("machine: %d CPUs, %s; RabbitMQ %s, Postgres %s (fsync %s, synchronous_commit %s, "
          "full_page_writes %s during the runs), Celery %s; load before: %s"
          % (mach["nproc"], mach["cpu_model"], mach["versions"]["rabbitmq-server"],
             res["pg_settings"].get("server_version"), res["pg_settings"].get("fsync"),
             res["pg_settings"].get("synchronous_commit"), res["pg_settings_run"].get(
                 "full_page_writes"), mach["versions"]["python3-celery"], res["loadavg"]))
    hdr = ("impl", "events", "events/s", "of ceil", "e2e/s", "CPU us/ev", "vs py", "broker us/e",
           "pg us/e", "WAL B/e", "rows/e", "bytes/e", "other%")
    f = "%-8s %8s %9s %7s %8s %9s %6s %11s %8s %8s %7s %8s %6s"
    print(f % hdr)
    c = res["impls"].get("ceiling")
    ceil = c["events_per_s"] if c else None
    if c:
        print(f % ("ceiling", c["events"], "%.0f" % c["events_per_s"], "100%", "-",
                   "%.1f" % c["consumer_cpu_us_per_event"], "", "%.1f" % c[
                       "broker_cpu_us_per_event"], "-", "-", "-", "-",
                   "%.0f" % c["foreign_cpu_pct"]))
    py = res["impls"].get("python")
    for name in ("celeryc", "python"):
        r = res["impls"].get(name)
        if not r:
            continue
        vs = ""
        if name == "celeryc" and py:
            vs = "%.1fx" % (py["cpu_us_per_event"] / r["cpu_us_per_event"])
        print(f % (name, r["events"], "%.0f" % r["events_per_s"],
                   "%.0f%%" % (100 * r["events_per_s"] / ceil) if ceil else "-",
                   "%.0f" % r["e2e_events_per_s"], "%.1f" % r["cpu_us_per_event"], vs,
                   "%.1f" % r["broker_cpu_us_per_event"], "%.1f" % r["pg_cpu_us_per_event"],
                   "%.0f" % r["wal_bytes_per_event"], "%.2f" % r["rows_per_event"],
                   "%.0f" % r["table_bytes_per_event"], "%.0f" % r["foreign_cpu_pct"]))
    print("events/s: events / the run (started_at..finished_at; Python: its own connect..last\n"
          "  commit); e2e/s: events / (first publish .. run finished); CPU us/ev: the indexer's\n"
          "  (celeryc: worker master + pool child; ceiling: the bare consumer); vs py: CPU per\n"
          "  event, times less than Python; WAL B/e: WAL bytes per event (CHECKPOINT before,\n"
          "  full-page images included); rows/e: tuples inserted+updated+deleted per event;\n"
          "  bytes/e: size of the stats_* tables + indexes after the run per event; other%:\n"
          "  CPU of processes outside the benchmark, share of all CPUs")
    for k, v in res.get("ratios", {}).items():
        print("  %s: %s" % (k, v))
    for name in ("celeryc", "python"):
        r = res["impls"].get(name)
        ws = r and r.get("wal_stats")
        if ws and "records" in ws:
            tot = ws["record_bytes"] + ws["fpi_bytes"]
            print("  %s WAL: %.1f records/event, full-page images %.1f%%; %s"
                  % (name, ws["records"] / r["events"], 100.0 * ws["fpi_bytes"] / max(tot, 1),
                     ", ".join("%s %.0f%%" % (k, 100.0 * v / max(tot, 1))
                               for k, v in sorted(ws["by_rmgr"].items(),
                                                  key=lambda kv: -kv[1])[:4])))
    c = res["impls"].get("celeryc")
    if c:
        print("  target >= 50,000 events/s: %.0f %s" % (c["events_per_s"],
                                                         "MET" if c["events_per_s"] >= 50000
                                                         else "NOT MET"))
        if c.get("summary"):
            s = c["summary"]
            print("  celeryc run %s: read %s inserted %s duplicates %s robots %s errors %s "
                  "chunks %s keys %s (task's own events/s %s)"
                  % (c["status"], s.get("read"), s.get("inserted"), s.get("duplicates"),
                     s.get("robots"), s.get("errors"), s.get("chunks"),
                     s.get("aggregated_keys"), s.get("events_per_s")))
        for line in c.get("run_logs", []):
            if "indexed " in line:
                print("  celeryc says: %s" % line.split(" ", 1)[1])
    pubs = ["%s %.0f/s (RabbitMQ %.1f us/event)" % (k, r["publish"]["per_s"],
                                                  r["publish"]["broker_cpu_us_per_event"])
            for k, r in res["impls"].items() if r.get("publish")]
    print("  publishing (bench_statspub, confirms): " + ", ".join(pubs))
    bad = [m for r in res["impls"].values() for m in r.get("check", [])]
    print("checks: " + ("all counts and aggregates as expected" if not bad else
                        "MISMATCH\n  " + "\n  ".join(bad)))


def parse_args():
    ap = argparse.ArgumentParser(description="statistics indexer benchmark: celeryc "
                                 "stats.index_events vs a Python indexer vs the bare broker "
                                 "(see bench/README.md)")
    ap.add_argument("--stats", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true",
                    help="100,000 events (Python 20,000) instead of 1,000,000 (100,000)")
    ap.add_argument("--n", type=int, help="events for celeryc (1000000; quick 100000)")
    ap.add_argument("--py-n", type=int, help="events for the Python indexer (100000; quick "
                    "20000)")
    ap.add_argument("--ceiling-n", type=int, help="events for the bare consumer (= --n)")
    ap.add_argument("--impls", default=",".join(IMPLS),
                    help="which to run, in this order (ceiling,celeryc,python)")
    ap.add_argument("--commit-every", type=int, default=5000)
    ap.add_argument("--objects", type=int, default=10000)
    ap.add_argument("--object-zipf", type=float, default=1.0)
    ap.add_argument("--visitors", type=int, default=50000)
    ap.add_argument("--visitor-zipf", type=float, default=0.6)
    ap.add_argument("--days", type=float, default=3)
    ap.add_argument("--robots-pct", type=float, default=3)
    ap.add_argument("--dclick-pct", type=float, default=3)
    ap.add_argument("--explicit-pct", type=float, default=10)
    ap.add_argument("--dup-pct", type=float, default=2)
    ap.add_argument("--bad-pct", type=float, default=0)
    ap.add_argument("--window", type=int, default=30, help="double-click window, s (30)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--robots-file", help="robots list for the publisher and the indexers "
                    "(default deploy/stats/robots.txt, the list celeryc compiles in)")
    ap.add_argument("--full-page-writes", choices=("on", "keep"), default="on",
                    help="switch full_page_writes on for the runs (on), or leave the "
                    "cluster's setting (keep)")
    ap.add_argument("--deadline", type=float, default=900, help="seconds per phase at most")
    ap.add_argument("--out", default=str(HERE / "results" / "stats-latest.json"))
    opt = ap.parse_args()
    opt.n = opt.n or (100000 if opt.quick else 1000000)
    opt.py_n = opt.py_n or (20000 if opt.quick else 100000)
    opt.ceiling_n = opt.ceiling_n or opt.n
    opt.impls = [x.strip() for x in opt.impls.split(",") if x.strip()]
    for x in opt.impls:
        if x not in IMPLS:
            ap.error("unknown implementation %r (%s)" % (x, ", ".join(IMPLS)))
    if not opt.robots_file and ROBOTS.exists():
        opt.robots_file = str(ROBOTS)
    return opt


def main():
    opt = parse_args()
    stop_on_signals("the indexers")
    logdir = fresh_logdir("stats-*.log")
    t_start = time.monotonic()
    mon = psycopg2.connect(PG_URL, connect_timeout=10)
    mon.autocommit = True
    su = superuser()
    res = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
           "command": os.environ.get("BENCH_COMMAND", " ".join(sys.argv)),
           "options": {k: v for k, v in vars(opt).items() if k != "out"},
           "loadavg": Path("/proc/loadavg").read_text().split()[:3],
           "pg_settings": pg_settings(mon), "impls": {}}
    fpw_set = False
    try:
        if su is not None and opt.full_page_writes == "on" and \
                res["pg_settings"].get("full_page_writes") != "on":
            with su.cursor() as cur:
                cur.execute("ALTER SYSTEM SET full_page_writes = on")
                cur.execute("SELECT pg_reload_conf()")
            fpw_set = True
            time.sleep(0.5)
        res["pg_settings_run"] = pg_settings(mon)
        for impl in opt.impls:
            if impl == "ceiling":
                res["impls"]["ceiling"] = run_ceiling(opt, logdir)
            elif impl == "celeryc":
                res["impls"]["celeryc"] = run_celeryc(opt, logdir, mon, su)
            else:
                res["impls"]["python"] = run_python(opt, logdir, mon, su)
    finally:
        for p in list(LIVE):
            p.stop()
        if fpw_set:
            with su.cursor() as cur:
                cur.execute("ALTER SYSTEM RESET full_page_writes")
                cur.execute("SELECT pg_reload_conf()")
    imp = res["impls"]
    ratios = {}
    if "celeryc" in imp and "python" in imp:
        c, p = imp["celeryc"], imp["python"]
        ratios["celeryc/python events/s"] = round(c["events_per_s"] / p["events_per_s"], 2)
        ratios["python/celeryc CPU per event"] = round(p["cpu_us_per_event"] /
                                                       c["cpu_us_per_event"], 2)
        ratios["python/celeryc Postgres CPU per event"] = round(p["pg_cpu_us_per_event"] /
                                                                c["pg_cpu_us_per_event"], 2)
    if "ceiling" in imp:
        for k in ("celeryc", "python"):
            if k in imp:
                ratios["%s/ceiling events/s" % k] = round(imp[k]["events_per_s"] /
                                                          imp["ceiling"]["events_per_s"], 3)
    res["ratios"] = ratios
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out = Path(opt.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print_table(res, opt)
    print("stats bench: %.0f s; wrote %s" % (res["elapsed_s"], out))


if __name__ == "__main__":
    main()
