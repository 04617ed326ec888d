"""The statistics indexer end to end (issue #7, docs/STATS.md): events published from Python
with deploy/python/celeryc_stats.py, indexed by `stats.index_events` runs that one
`celeryc beat --job-store URL` schedules (interval job, concurrency forbid) and one
`celeryc worker --job-store URL` executes; the aggregates in celeryc.stats_daily are checked
exactly against what the test computes from the events it published (class Expect, the
rules of proto/statsevent.h), and the run's counters and summary against the same model.

The beat and the worker are shared by the module (one database); every test uses its own
event type (so its own queue, bookmark and aggregates). celeryc only.

1. a designed set (repeat visitors, double clicks, explicit ids, robots, the three kinds of
   visitor) -> stats_daily exactly, the run's counters and summary;
2. the same bodies published again -> all duplicates, aggregates untouched;
3. 100,000 events, the pool child and then the whole worker killed with SIGKILL mid-batch ->
   after more runs, the aggregates of one clean pass, every event stored once, nothing left
   ready or unacked;
4. malformed events among good ones -> the dead-letter queue (bodies unchanged, reasons in
   headers), run P with the counts; past 20, one "... N more" log line;
5. stats.reaggregate restores damaged aggregates to exactly the incremental numbers;
6. no raw user id, session id or IP in any stats table; expired salts deleted;
7. a batch smaller than the queue: backlog depth and age in the summary.
About 60 s (the kill test about 30 s, mostly publishing)."""
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from beatutil import dump_logs_on_failure, module_database, store_json
from conftest import (ROOT, TIMEOUT, Worker, c_only, celeryc_bin, queue_depth, scaled,
                      unique_queue, wait_for)

sys.path.insert(0, str(ROOT / "deploy" / "python"))
import celeryc_stats  # noqa: E402

pytestmark = c_only

psycopg2 = pytest.importorskip("psycopg2")
import psycopg2.extras  # noqa: E402

UTC = timezone.utc
WINDOW = 30  # double_click_window, the task's default
INTERVAL = 2  # the indexer jobs' schedule (s)
LEASE_TTL = 2
REAP_TIMEOUT = 2  # beat --run-heartbeat-timeout (s)
HEARTBEAT = 0.5

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1")
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
CURL = "curl/8.4.0"
PYREQ = "python-requests/2.31.0"

# Raw visitor identities of the designed set: none of them may be stored (test 6).
RAW_USERS = ["alice-u7731", "4242", "carol-u5510", "robot-user-9"]
RAW_SESSIONS = ["sess-9f1e2d3c", "sess-0a7b6c5d", "sess-robot-1"]
RAW_IPS = ["198.51.100.23", "203.0.113.9", "192.0.2.77", "192.0.2.200"]


# ---- the model: what the indexer must compute ------------------------------------------------

def robot_patterns():
    """The shipped robots list (deploy/stats/robots.txt, compiled into celeryc)."""
    path = ROOT / "deploy" / "stats" / "robots.txt"
    pats = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            pats.append(line.lower())
    return pats


def parse_ts(s):
    """The event's timestamp (ISO-8601, 'Z' or naive = UTC) as an aware datetime."""
    t = datetime.fromisoformat(s[:-1] if s.endswith("Z") else s)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def visitor_key(ev):
    if ev.get("user_id") is not None:
        return "u:%s" % ev["user_id"]  # an integer user id: its decimal text
    if ev.get("session_id") is not None:
        return "s:%s" % ev["session_id"]
    return "a:%s|%s" % (ev["ip_address"], ev.get("user_agent") or "")


class Expect:
    """Events fed in queue order -> the counters and stats_daily rows the indexer must give."""

    def __init__(self, patterns):
        self.patterns = patterns
        self.ids = set()
        self.daily = defaultdict(lambda: [0, set()])
        self.read = self.inserted = self.duplicates = self.robots = 0

    def is_robot(self, ua):
        ua = (ua or "").lower()
        return bool(ua) and any(p in ua for p in self.patterns)

    def add(self, ev):
        ts = parse_ts(ev["timestamp"])
        self.read += 1
        if ev.get("unique_id") is not None:
            eid = ("x", ev["unique_id"])
        else:
            sec = int(ts.timestamp() // 1)
            eid = ("d", ev["object_id"], visitor_key(ev), sec // WINDOW * WINDOW)
        if eid in self.ids:
            self.duplicates += 1
            return
        self.ids.add(eid)
        self.inserted += 1
        if self.is_robot(ev.get("user_agent")):
            self.robots += 1
            return
        row = self.daily[(ev["object_id"], ts.date())]
        row[0] += 1
        row[1].add(visitor_key(ev))

    def rows(self):
        return {k: (c, len(v)) for k, (c, v) in self.daily.items()}


def wire(ev, event_type):
    """The dict emit() publishes for emit()-style keyword arguments."""
    return celeryc_stats.StatsEmitter.event(event_type, **ev)


def designed(today):
    """A hand-made set over four days (today and 1, 2, 5 days ago): repeat visitors, double
    clicks inside and across a window edge, integer and text user ids, visitor precedence
    (user > session > ip+ua), explicit ids retried and explicit ids in one window, robots
    (dropped from the aggregates). emit() keyword dicts, shuffled (fixed seed)."""
    out = []

    def add(obj, day, h, m, s, ms=0, **kw):
        t = datetime(day.year, day.month, day.day, h, m, s, ms * 1000, tzinfo=UTC)
        out.append(dict(object_id=obj, timestamp=t, **kw))

    for k, day in enumerate(today - timedelta(days=d) for d in (0, 1, 2, 5)):
        for j, obj in enumerate(["rec-a", "rec-b", "rec-c"][:3 - k % 2]):
            # alice (user id): view, a double click 14 s later in the same window (its session
            # id does not matter: the user id wins), a repeat an hour later.
            add(obj, day, 9, 0, 3, user_id="alice-u7731", user_agent=FIREFOX)
            add(obj, day, 9, 0, 17, 250, user_id="alice-u7731", user_agent=FIREFOX,
                session_id="sess-9f1e2d3c")
            add(obj, day, 10, 5, j, user_id="alice-u7731")
            if j != 1:
                # bob: integer id, then its text 2 s later across a window edge: two events,
                # one visitor.
                add(obj, day, 11, 0, 29, user_id=4242)
                add(obj, day, 11, 0, 31, user_id="4242")
            # a session (wins over the ip), seen twice on rec-a
            add(obj, day, 12, k, 0, session_id="sess-0a7b6c5d", ip_address="192.0.2.77")
            if j == 0:
                add(obj, day, 12, 30, 0, session_id="sess-0a7b6c5d")
            # ip + user agent: a double click, then the same ip with another browser (another
            # visitor), another ip
            add(obj, day, 13, 0, 0, ip_address="198.51.100.23", user_agent=FIREFOX)
            add(obj, day, 13, 0, 5, ip_address="198.51.100.23", user_agent=FIREFOX)
            add(obj, day, 13, 0, 6, ip_address="198.51.100.23", user_agent=IPHONE)
            add(obj, day, 14, 0, 0, ip_address="203.0.113.9", user_agent=IPHONE)
            # an explicit id, published three times (a client retrying)
            uid = "dl-%s-%s" % (obj, day.isoformat())
            for m, s in ((0, 0), (0, 45), (2, 0)):
                add(obj, day, 15, m, s, user_id="carol-u5510", unique_id=uid)
            # explicit ids make two events of one window two events
            add(obj, day, 16, 0, 1, user_id="carol-u5510", unique_id=uid + "-1")
            add(obj, day, 16, 0, 2, user_id="carol-u5510", unique_id=uid + "-2")
            # robots: stored, never aggregated (one double click among them)
            add(obj, day, 17, 0, 0, ip_address="192.0.2.200", user_agent=GOOGLEBOT)
            add(obj, day, 17, 0, 1, ip_address="192.0.2.200", user_agent=GOOGLEBOT)
            add(obj, day, 17, 5, 0, session_id="sess-robot-1", user_agent=CURL)
            add(obj, day, 18, 0, 0, user_id="robot-user-9", user_agent=PYREQ)
    random.Random(1).shuffle(out)
    return out


# ---- module environment: one database, beat, worker ------------------------------------------

class Env:
    def __init__(self, url, tmp, queue):
        self.url = url
        self.tmp = tmp
        self.queue = queue
        self.beat = None
        self.worker = None
        self.extra = []  # other processes started by tests (stopped at the end)
        self.db = None

    def start_beat(self):
        argv = [celeryc_bin(), "beat", "-b", os.environ["CELERYC_TEST_AMQP_URL"], "-l", "debug",
                "--job-store", self.url, "--db-upgrade", "--lease-ttl", str(LEASE_TTL),
                "--run-heartbeat-timeout", str(REAP_TIMEOUT)]
        self.beat = Worker(argv, dict(os.environ), str(self.tmp / "beat.log"), None, "beat",
                           cwd=str(self.tmp))
        self.beat.wait_log(r"leader now", 20)

    def start_worker(self, queue, concurrency=2, name=None):
        name = name or "stats-%s-%d@localhost" % (queue, len(self.extra))
        argv = [celeryc_bin(), "worker", "-b", os.environ["CELERYC_TEST_AMQP_URL"],
                "--result-backend", os.environ["CELERYC_TEST_REDIS_URL"], "-Q", queue,
                "-n", name, "-c", str(concurrency), "-l", "info", "--job-store", self.url,
                "--job-run-heartbeat-interval", str(HEARTBEAT)]
        w = Worker(argv, dict(os.environ), str(self.tmp / ("%s.log" % name.split("@")[0])),
                   queue, name)
        w.wait_ready()
        return w

    def processes(self):
        return [p for p in [self.beat, self.worker] + self.extra if p is not None]

    def q(self, sql, *args):
        with self.db.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None


@pytest.fixture(scope="module")
def env(services, tmp_path_factory):
    with module_database("it_stats_") as url:
        e = Env(url, tmp_path_factory.mktemp("stats"), unique_queue("stats"))
        try:
            e.start_beat()  # --db-upgrade: the schema exists before the worker checks it
            e.worker = e.start_worker(e.queue)
            e.db = psycopg2.connect(url, connect_timeout=10)
            e.db.autocommit = True
            with e.db.cursor() as cur:
                cur.execute("SET TIME ZONE 'UTC'")
            yield e
        finally:
            if e.db is not None:
                e.db.close()
            for p in e.processes():
                p.stop()


@pytest.fixture(autouse=True)
def _logs_on_failure(request, env):
    yield
    dump_logs_on_failure(request, env.processes())


@pytest.fixture
def emitter(services):
    em = celeryc_stats.StatsEmitter(os.environ["CELERYC_TEST_AMQP_URL"])
    yield em
    em.close()


def new_type(prefix):
    return "%s-%s" % (prefix, os.urandom(4).hex())


def utc_today():
    return datetime.now(UTC).date()


# ---- helpers: jobs, runs, tables, queues -----------------------------------------------------

def mkjob(env, event_type, queue=None, interval=INTERVAL, **kwargs):
    kw = dict(event_type=event_type, **kwargs)
    return store_json(env.url, "jobs", "create", "--title", "index " + event_type,
                      "--task", "stats.index_events", "--queue", queue or env.queue,
                      "--interval", str(interval), "--concurrency", "forbid",
                      "--kwargs", json.dumps(kw))["id"]


def runs(env, job):
    """The job's runs, oldest first."""
    return env.q("SELECT id, task_id, status, message, processed, errored, summary, created, "
                 "started_at, finished_at FROM celeryc.runs WHERE job_id = %s "
                 "ORDER BY created, id", job)


def finished(rs):
    return [r for r in rs if r["status"] in "SFPWX"]


def wait_runs(env, job, pred, timeout, what):
    """Wait until pred(finished runs) is truthy; returns the finished runs."""
    def check():
        done = finished(runs(env, job))
        return done if pred(done) else None
    return wait_for(check, timeout, what, interval=0.2)


def deactivate(env, job):
    store_json(env.url, "jobs", "update", job, "--inactive")
    env.beat.wait_log(r"job %s removed from the schedule" % job, 10)
    wait_for(lambda: all(r["status"] in "SFPWX" for r in runs(env, job)), 30,
             "the job's runs to finish", interval=0.2)


def daily(env, event_type):
    return {(r["object_id"], r["day"]): (r["count"], r["unique_visitors"])
            for r in env.q("SELECT object_id, day, count, unique_visitors "
                           "FROM celeryc.stats_daily WHERE event_type = %s", event_type)}


def n_events(env, event_type, robot=None):
    sql = "SELECT count(*) AS n FROM celeryc.stats_events WHERE event_type = %s"
    if robot is not None:
        sql += " AND robot = %s" % ("true" if robot else "false")
    return env.q(sql, event_type)[0]["n"]


def bookmark(env, event_type):
    r = env.q("SELECT last_seq FROM celeryc.stats_bookmarks WHERE event_type = %s", event_type)
    return r[0]["last_seq"] if r else None


def max_seq(env, event_type):
    return env.q("SELECT max(seq) AS m FROM celeryc.stats_events WHERE event_type = %s",
                 event_type)[0]["m"]


def n_visitor_rows(env, event_type):
    return env.q("SELECT count(*) AS n FROM celeryc.stats_daily_visitors WHERE event_type = %s",
                 event_type)[0]["n"]


def rabbit_queue(name):
    """(ready, unacked, consumers) of a queue from rabbitmqctl, None if it does not exist."""
    p = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "ctl",
                        os.environ["CELERYC_TEST_DATA_DIR"], "list_queues", "-q", "name",
                        "messages_ready", "messages_unacknowledged", "consumers"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=scaled(60))
    assert p.returncode == 0, p.stderr
    for line in p.stdout.splitlines():
        f = line.split()
        if len(f) == 4 and f[0] == name:
            return int(f[1]), int(f[2]), int(f[3])
    return None


def assert_queue_drained(name):
    """Nothing ready, nothing unacked, no consumer left (the indexer's connection is gone)."""
    wait_for(lambda: rabbit_queue(name) == (0, 0, 0), 10, "%s empty with no unacked message "
             "(now %s)" % (name, rabbit_queue(name)), interval=0.5)


def wait_depth(amqp_conn, queue, n):
    wait_for(lambda: queue_depth(amqp_conn, queue) == n, 20, "%d messages in %s" % (n, queue))


def drain_dlq(amqp_conn, name):
    """Every message of the dead-letter queue (consumed): [(body bytes, headers dict)]."""
    ch = amqp_conn.channel()
    out = []
    try:
        while True:
            m = ch.basic_get(name, no_ack=True)
            if m is None:
                return out
            body = m.body  # py-amqp decodes bodies with a content_encoding: undo it
            if isinstance(body, str):
                body = body.encode(m.properties.get("content_encoding") or "utf-8")
            out.append((body, dict(m.headers or {})))
    finally:
        ch.close()


def run_logs(env, rid):
    return [(r["level"], r["message"]) for r in
            env.q("SELECT level, message FROM celeryc.run_logs WHERE run_id = %s ORDER BY id",
                  rid)]


def check_summary(s, event_type, exp, errors=0):
    """The counters of one run's summary against the model."""
    assert s["event_type"] == event_type
    assert s["queue"] == "stats-" + event_type
    assert s["read"] == exp.read + errors
    assert (s["inserted"], s["duplicates"], s["robots"]) == \
        (exp.inserted, exp.duplicates, exp.robots), s
    assert s["errors"] == errors and s["dead_lettered"] == errors, s
    assert s["read"] == s["inserted"] + s["duplicates"] + s["errors"]
    for k in ("chunks", "aggregated_keys", "bookmark", "queue_depth_before", "queue_depth_after",
              "oldest_age_s", "backlog_age_s", "elapsed_s", "events_per_s"):
        assert k in s, (k, s)


# ---- 1. exact aggregates ---------------------------------------------------------------------

def test_index_designed_set_exact(env, emitter, amqp_conn):
    et = new_type("view")
    evs = designed(utc_today())
    exp = Expect(robot_patterns())
    for e in evs:
        exp.add(wire(e, et))
    # The set exercises what it claims to.
    assert exp.duplicates >= 20 and exp.robots >= 10 and len(exp.rows()) == 10
    first_ts = parse_ts(wire(evs[0], et)["timestamp"])
    t0 = time.monotonic()
    assert emitter.emit_many(et, evs) == len(evs)
    wait_depth(amqp_conn, "stats-" + et, len(evs))
    job = mkjob(env, et)
    done = wait_runs(env, job, lambda rs: len(rs) >= 1, 30, "the first run")
    took = time.monotonic() - t0
    deactivate(env, job)
    r = done[0]
    assert (r["status"], r["message"]) == ("S", None), r
    assert (r["processed"], r["errored"]) == (len(evs), 0)
    s = r["summary"]
    check_summary(s, et, exp)
    assert s["queue_depth_before"] == len(evs) and s["queue_depth_after"] == 0
    assert s["backlog_age_s"] is None
    assert s["chunks"] == 1  # fewer events than commit_every (5000)
    assert s["aggregated_keys"] == len(exp.rows())
    age = (r["started_at"] - first_ts).total_seconds()
    assert s["oldest_age_s"] == pytest.approx(age, abs=60), (s["oldest_age_s"], age)
    assert s["elapsed_s"] > 0 and s["events_per_s"] > 0

    assert daily(env, et) == exp.rows()
    assert n_events(env, et) == exp.inserted and n_events(env, et, robot=True) == exp.robots
    assert n_visitor_rows(env, et) == sum(u for _, u in exp.rows().values())
    assert bookmark(env, et) == max_seq(env, et) == s["bookmark"]
    assert_queue_drained("stats-" + et)
    # Later runs found nothing: the bookmark and aggregates did not move.
    for later in runs(env, job)[1:]:
        assert later["status"] == "S" and later["summary"]["read"] == 0, later
    logs = run_logs(env, r["id"])
    assert len(logs) >= 2 and "stats-" + et in logs[0][1], logs
    assert all(lv == "INFO" for lv, _ in logs), logs
    print("designed set: %d events -> %d inserted, %d duplicates, %d robots, %d rows; "
          "published + indexed through beat in %.1f s (run %.3f s)"
          % (len(evs), exp.inserted, exp.duplicates, exp.robots, len(exp.rows()), took,
             s["elapsed_s"]))


# ---- 2. the same events twice ----------------------------------------------------------------

def test_published_twice_same_aggregates(env, emitter, amqp_conn):
    et = new_type("download")
    evs = designed(utc_today())
    exp = Expect(robot_patterns())
    for e in evs:
        exp.add(wire(e, et))
    bodies = [json.dumps(wire(e, et)) for e in evs]  # the very same bodies, twice
    assert emitter.publish_bodies(et, bodies) == len(evs)
    wait_depth(amqp_conn, "stats-" + et, len(evs))
    job = mkjob(env, et)
    first = wait_runs(env, job, lambda rs: len(rs) >= 1, 30, "the first run")[0]
    assert first["status"] == "S", first
    check_summary(first["summary"], et, exp)
    rows = daily(env, et)
    assert rows == exp.rows()
    stamp = env.q("SELECT max(updated) AS u FROM celeryc.stats_daily WHERE event_type = %s",
                  et)[0]["u"]

    assert emitter.publish_bodies(et, bodies) == len(evs)
    wait_runs(env, job, lambda rs: sum((x["summary"] or {}).get("read", 0)
                                       for x in rs) >= 2 * len(evs),
              30, "the second copy to be read")
    deactivate(env, job)
    again = [x for x in finished(runs(env, job)) if x["id"] != first["id"]]
    assert all(x["status"] == "S" for x in again), again
    tot = Counter()
    for x in again:
        tot.update({k: x["summary"][k] for k in ("read", "inserted", "duplicates", "robots",
                                                  "errors")})
    assert tot["read"] == len(evs)
    assert (tot["inserted"], tot["duplicates"], tot["robots"], tot["errors"]) == \
        (0, len(evs), 0, 0), tot
    assert daily(env, et) == rows
    # Nothing was even rewritten: no new raw row, the bookmark did not move.
    assert env.q("SELECT max(updated) AS u FROM celeryc.stats_daily WHERE event_type = %s",
                 et)[0]["u"] == stamp
    assert n_events(env, et) == exp.inserted
    assert bookmark(env, et) == max_seq(env, et) == first["summary"]["bookmark"]
    assert_queue_drained("stats-" + et)
    print("published twice: second copy %d read, %d duplicates in %d run(s)"
          % (tot["read"], tot["duplicates"], len(again)))


# ---- 3. kill -9 mid-batch --------------------------------------------------------------------

KILL_N = 100000


def bulk(event_type, today, n, seed=7):
    """n events (wire dicts) over four days and 25 objects: user ids, sessions, ip+ua visitors
    (robots among the last only, so that a robot never shares an event id with a human),
    explicit ids, double clicks and exact re-publications."""
    rng = random.Random(seed)
    days = [today - timedelta(days=d) for d in range(4)]
    uas = [FIREFOX, IPHONE, FIREFOX, IPHONE, GOOGLEBOT]
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.05 and out:  # the same message again (a producer retry)
            out.append(out[rng.randrange(len(out))])
            continue
        if r < 0.10 and out:  # a double click, 0-3 s after an earlier event
            prev = dict(out[rng.randrange(len(out))])
            if "unique_id" in prev:
                continue
            t = parse_ts(prev["timestamp"]) + timedelta(seconds=rng.randrange(4))
            if t.date() != parse_ts(prev["timestamp"]).date():
                continue
            prev["timestamp"] = t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
            out.append(prev)
            continue
        day = rng.choice(days)
        sec = rng.randrange(86400)
        ev = {"timestamp": "%sT%02d:%02d:%02d.%03dZ" % (day.isoformat(), sec // 3600,
                                                        sec // 60 % 60, sec % 60,
                                                        rng.randrange(1000)),
              "type": event_type, "object_id": "obj-%02d" % rng.randrange(25)}
        v = rng.random()
        if v < 0.4:
            ev["user_id"] = rng.randrange(800)
        elif v < 0.7:
            ev["session_id"] = "s-%d" % rng.randrange(600)
        else:
            ev["ip_address"] = "10.0.%d.%d" % (rng.randrange(4), rng.randrange(100))
            ev["user_agent"] = rng.choice(uas)
        if rng.random() < 0.05:
            ev["unique_id"] = "x-%d" % len(out)
        out.append(ev)
    return out


def test_kill9_mid_batch_loses_nothing(env, emitter, amqp_conn):
    et = new_type("kill")
    qn = "stats-" + et
    evs = bulk(et, utc_today(), KILL_N)
    exp = Expect(robot_patterns())
    for e in evs:
        exp.add(e)
    t0 = time.monotonic()
    assert emitter.publish_bodies(et, [json.dumps(e, separators=(",", ":")) for e in evs],
                                  window=5000) == len(evs)
    wait_depth(amqp_conn, qn, len(evs))
    t_pub = time.monotonic() - t0
    wq = unique_queue("stats-kill")
    w = env.start_worker(wq, concurrency=1)
    env.extra.append(w)
    job = mkjob(env, et, queue=wq, commit_every=2000, batch_size=60000)

    # 1. SIGKILL the pool child (the process running the task) once a few chunks (of 2000)
    #    are committed: the run is in the middle of its batch (60000).
    def mid():
        n = n_events(env, et)
        if n >= exp.inserted:
            raise AssertionError("the run committed every event before it could be killed")
        return n if n >= 5000 else None
    committed1 = wait_for(mid, 60, "a first committed chunk", interval=0.02)
    kids = [int(p) for p in Path("/proc/%d/task/%d/children" % (w.pid, w.pid))
            .read_text().split()]
    assert kids, "the worker has no pool child"
    for k in kids:
        os.kill(k, 9)
    t_kill1 = time.monotonic()
    last_kill = env.q("SELECT now() AS t")[0]["t"]
    print("kill 1: pool child(ren) %s killed with %d of %d events committed"
          % (kids, committed1, exp.inserted))

    # 2. Once the next runs committed more, SIGKILL the whole worker (master + child) and start
    #    a new one on the same queue.
    def more():
        n = n_events(env, et)
        if n >= exp.inserted:
            return -1
        return n if n >= committed1 + 7000 else None
    committed2 = wait_for(more, 60, "more events committed after the first kill", interval=0.02)
    if committed2 == -1:
        print("kill 2: skipped, every event was committed before the worker could be killed")
    else:
        w.kill()
        last_kill = env.q("SELECT now() AS t")[0]["t"]
        print("kill 2: whole worker killed with %d of %d events committed"
              % (committed2, exp.inserted))
        w2 = env.start_worker(wq, concurrency=1, name="stats-kill2-%s@localhost" % wq)
        env.extra.append(w2)

    # 3. The runs go on (interval schedule, forbid; the killed runs are F) until the queue is
    #    empty: then the aggregates are exactly those of one clean pass.
    wait_for(lambda: n_events(env, et) == exp.inserted and
             rabbit_queue(qn) == (0, 0, 0) and
             bookmark(env, et) == max_seq(env, et) and
             all(r["status"] in "SFPWX" for r in runs(env, job)), 120,
             "every event indexed and the queue drained", interval=0.5)
    t_done = time.monotonic() - t_kill1
    deactivate(env, job)
    rs = runs(env, job)
    assert daily(env, et) == exp.rows()
    assert n_events(env, et) == exp.inserted
    assert n_events(env, et, robot=True) == exp.robots
    assert n_visitor_rows(env, et) == sum(u for _, u in exp.rows().values())
    assert env.q("SELECT count(*) AS n FROM celeryc.stats_events WHERE event_type = %s "
                 "GROUP BY event_id HAVING count(*) > 1", et) == []
    assert_queue_drained(qn)
    killed = [r for r in rs if r["status"] == "F"]
    ok = [r for r in rs if r["status"] == "S"]
    after = [r for r in rs if r["started_at"] is not None and r["started_at"] > last_kill]
    # The killed runs are F (worker lost); every run started after the last kill succeeded
    # and, together, they read what was left.
    assert len(killed) >= 1 and all(r["status"] in "SF" for r in rs), \
        [(r["status"], r["message"]) for r in rs]
    assert after and all(r["status"] == "S" for r in after), \
        [(r["status"], r["message"], r["started_at"]) for r in after]
    assert sum(r["summary"]["read"] for r in after) > 0
    # Every run that finished normally accounted for what it read.
    for r in ok:
        s = r["summary"]
        assert s["read"] == s["inserted"] + s["duplicates"] and s["errors"] == 0, s
    ins = sum(r["summary"]["inserted"] for r in ok)
    read = sum(r["summary"]["read"] for r in ok)
    print("runs: %s" % [(r["status"], r["message"], (r["summary"] or {}).get("read"),
                         (r["summary"] or {}).get("events_per_s")) for r in rs])
    print("kill -9: %d events (%d distinct, %d robots), published in %.1f s; %d runs "
          "(%d killed); the successful ones read %d, inserted %d; drained %.1f s after the "
          "first kill" % (len(evs), exp.inserted, exp.robots, t_pub, len(rs), len(killed),
                          read, ins, t_done))


# ---- 4. malformed events ---------------------------------------------------------------------

def malformed(event_type, today):
    """(body, what) of events the indexer must dead-letter."""
    now = datetime.now(UTC)
    ok = {"timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "type": event_type,
          "object_id": "rec-m", "user_id": "mallory-u1"}

    def variant(**kw):
        d = dict(ok)
        for k, v in kw.items():
            if v is None:
                d.pop(k)
            else:
                d[k] = v
        return json.dumps(d).encode()

    old = today - timedelta(days=40)
    return [
        (b'{"timestamp": "2026-12-06T10:00:00Z", "type": ', "bad JSON (truncated)"),
        (b"\xff\xfe{not json", "not UTF-8, not JSON"),
        (b"", "empty body"),
        (b'["record-view", "rec-m"]', "not an object"),
        (variant(object_id=None), "missing object_id"),
        (variant(timestamp=None), "missing timestamp"),
        (variant(timestamp="yesterday"), "bad timestamp"),
        (variant(timestamp="2026-13-45T99:00:00Z"), "impossible date"),
        (variant(user_id=None), "no visitor field"),
        (variant(object_id={"id": 1}), "object_id of the wrong type"),
        (variant(user_id=[1, 2]), "user_id of the wrong type"),
        (variant(type="another-type"), "the type of another queue"),
        (variant(timestamp=old.isoformat() + "T12:00:00Z"), "older than the salt retention"),
        (variant(timestamp=(now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")),
         "in the future"),
    ]


def test_malformed_to_dead_letter_queue_run_partial(env, emitter, amqp_conn):
    et = new_type("mixed")
    qn, dq = "stats-" + et, "stats-%s.dead" % et
    good = designed(utc_today())[:40]
    bad = malformed(et, utc_today())
    exp = Expect(robot_patterns())
    bodies = []
    rng = random.Random(3)
    bad_at = sorted(rng.sample(range(len(good) + len(bad)), len(bad)))
    gi = bi = 0
    for i in range(len(good) + len(bad)):
        if bi < len(bad) and bad_at[bi] == i:
            bodies.append(bad[bi][0])
            bi += 1
        else:
            w = wire(good[gi], et)
            exp.add(w)
            bodies.append(json.dumps(w).encode())
            gi += 1
    n = len(bodies)
    assert emitter.publish_bodies(et, bodies) == n
    wait_depth(amqp_conn, qn, n)
    job = mkjob(env, et)
    r = wait_runs(env, job, lambda rs: len(rs) >= 1, 30, "the first run")[0]
    deactivate(env, job)
    assert r["status"] == "P", r
    assert r["message"] == "%d of %d events malformed, moved to %s" % (len(bad), n, dq), r
    assert (r["processed"], r["errored"]) == (n, len(bad))
    check_summary(r["summary"], et, exp, errors=len(bad))
    assert daily(env, et) == exp.rows()
    assert n_events(env, et) == exp.inserted

    # The dead-letter queue holds each malformed body once, unchanged, with the reason.
    assert rabbit_queue(dq) == (len(bad), 0, 0)
    dead = drain_dlq(amqp_conn, dq)
    assert Counter(b for b, _ in dead) == Counter(b for b, _ in bad)
    for body, h in dead:
        what = next(w for b, w in bad if b == body)
        assert h.get("x-celeryc-error"), (what, h)
        assert h.get("x-celeryc-queue") == qn, (what, h)
        assert h.get("x-celeryc-run-id") == str(r["id"]), (what, h)
    reasons = {next(w for b, w in bad if b == body): h["x-celeryc-error"] for body, h in dead}
    assert "older than the salt retention" in reasons["older than the salt retention"]
    assert "future" in reasons["in the future"]
    assert "another-type" in reasons["the type of another queue"]
    assert "object_id" in reasons["missing object_id"]
    assert "timestamp" in reasons["missing timestamp"]
    # One WARNING per malformed event in the run's log.
    warnings = [m for lv, m in run_logs(env, r["id"]) if lv == "WARNING"]
    assert len(warnings) == len(bad), warnings
    assert_queue_drained(qn)
    print("malformed: %d of %d dead-lettered; reasons:\n  %s"
          % (len(dead), n, "\n  ".join("%s: %s" % kv for kv in sorted(reasons.items()))))


# ---- 5. reaggregate --------------------------------------------------------------------------

def indexed_designed(env, emitter, amqp_conn, prefix, one_by_one=False):
    et = new_type(prefix)
    evs = designed(utc_today())
    exp = Expect(robot_patterns())
    for e in evs:
        exp.add(wire(e, et))
    if one_by_one:
        for e in evs:
            emitter.emit(et, **e)
    else:
        emitter.emit_many(et, evs)
    wait_depth(amqp_conn, "stats-" + et, len(evs))
    job = mkjob(env, et)
    r = wait_runs(env, job, lambda rs: len(rs) >= 1, 30, "the first run")[0]
    deactivate(env, job)
    assert r["status"] == "S", r
    assert daily(env, et) == exp.rows()
    return et, evs, exp


def full_daily(env, et):
    return env.q("SELECT object_id, day, count, unique_visitors FROM celeryc.stats_daily "
                 "WHERE event_type = %s ORDER BY object_id, day", et)


def test_reaggregate_gives_the_same_rows(env, emitter, amqp_conn, app):
    et, evs, exp = indexed_designed(env, emitter, amqp_conn, "reagg")
    before = full_daily(env, et)
    visitors = env.q("SELECT object_id, day, visitor FROM celeryc.stats_daily_visitors "
                     "WHERE event_type = %s ORDER BY 1, 2, 3", et)
    days = sorted({d for _, d in exp.rows()})
    start, end = days[0].isoformat(), days[-1].isoformat()
    # Damage the window's aggregates: reaggregate rebuilds them from the raw events.
    env.q("UPDATE celeryc.stats_daily SET count = count + 100, unique_visitors = 0 "
          "WHERE event_type = %s", et)
    env.q("DELETE FROM celeryc.stats_daily_visitors WHERE event_type = %s AND object_id = "
          "'rec-a'", et)
    env.q("DELETE FROM celeryc.stats_daily WHERE event_type = %s AND object_id = 'rec-b'", et)
    res = app.send_task("stats.reaggregate", kwargs={"event_type": et, "start": start,
                                                     "end": end}, queue=env.queue)
    out = res.get(timeout=TIMEOUT)
    assert out["event_type"] == et and (out["start"], out["end"]) == (start, end)
    assert out["keys"] == len(exp.rows())
    assert out["events"] == sum(c for c, _ in exp.rows().values())
    assert full_daily(env, et) == before
    assert env.q("SELECT object_id, day, visitor FROM celeryc.stats_daily_visitors "
                 "WHERE event_type = %s ORDER BY 1, 2, 3", et) == visitors
    # One day only (end = start): that day's rows, the rest untouched.
    one = days[1]
    env.q("UPDATE celeryc.stats_daily SET count = 0 WHERE event_type = %s AND day = %s",
          et, one)
    out = app.send_task("stats.reaggregate", kwargs={"event_type": et,
                                                     "start": one.isoformat()},
                        queue=env.queue).get(timeout=TIMEOUT)
    assert out["keys"] == sum(1 for _, d in exp.rows() if d == one)
    assert full_daily(env, et) == before
    assert daily(env, et) == exp.rows()


# ---- 6. privacy ------------------------------------------------------------------------------

def test_no_raw_visitor_identity_stored(env, amqp_conn, app):
    # Salts past the retention (30 days) are deleted by the next run: a day 31 days ago goes,
    # the oldest day still accepted stays.
    today = utc_today()
    old, edge = today - timedelta(days=31), today - timedelta(days=30)
    env.q("INSERT INTO celeryc.stats_salts (day, salt) VALUES (%s, %s), (%s, %s) "
          "ON CONFLICT DO NOTHING", old, os.urandom(32), edge, os.urandom(32))
    # (published one by one through the Celery app's connection this time)
    with celeryc_stats.StatsEmitter(app) as em:
        et, evs, exp = indexed_designed(env, em, amqp_conn, "privacy", one_by_one=True)
    days = {r["day"] for r in env.q("SELECT day FROM celeryc.stats_salts")}
    assert old not in days and edge in days, sorted(days)
    raw = RAW_USERS + RAW_SESSIONS + RAW_IPS
    assert {str(e.get(k)) for e in evs for k in ("user_id", "session_id", "ip_address")
            if e.get(k) is not None} == set(raw)
    for table in ("stats_events", "stats_daily_visitors", "stats_daily", "stats_bookmarks"):
        # This type's rows as text (bytea as hex), and each bytea column as raw bytes.
        text = env.q("SELECT string_agg(t::text, E'\\n') AS s FROM celeryc.%s t "
                     "WHERE event_type = %%s" % table, et)[0]["s"]
        assert text
        cols = [r["column_name"] for r in env.q(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'celeryc' AND table_name = %s AND data_type = 'bytea'", table)]
        blobs = b""
        for c in cols:
            for r in env.q("SELECT %s AS b FROM celeryc.%s WHERE event_type = %%s"
                           % (c, table), et):
                blobs += bytes(r["b"]) + b"\n"
        for s in raw:
            # (a short number such as 4242 may appear by chance in hex digits or counts:
            # its bytes and their hex are checked, not its text)
            assert s.isdigit() or s not in text, (table, s)
            assert s.encode().hex() not in text, (table, s)
            assert s.encode() not in blobs, (table, s)
    # Visitor hashes are 16 bytes; visitors of different days differ (daily salt): alice's
    # hash on rec-a is not the same on two days.
    lens = env.q("SELECT DISTINCT length(visitor) AS n FROM celeryc.stats_events "
                 "WHERE event_type = %s", et)
    assert lens == [{"n": 16}]
    per_day = env.q("SELECT day, count(DISTINCT visitor) AS n FROM celeryc.stats_daily_visitors "
                    "WHERE event_type = %s GROUP BY day ORDER BY day", et)
    total = env.q("SELECT count(DISTINCT visitor) AS n FROM celeryc.stats_daily_visitors "
                  "WHERE event_type = %s", et)[0]["n"]
    assert total == sum(r["n"] for r in per_day)  # no visitor hash shared between days
    salts = env.q("SELECT day, length(salt) AS n FROM celeryc.stats_salts ORDER BY day")
    assert {r["day"] for r in salts} >= {d for _, d in exp.rows()}
    assert all(r["n"] == 32 for r in salts)


# ---- 7. lag and backlog ----------------------------------------------------------------------

def test_backlog_visible_in_the_summary(env, emitter, amqp_conn):
    """batch_size below the queue depth: the run leaves a backlog and says how old its head
    is; the next run takes it, starting from that event."""
    et = new_type("lag")
    evs = [wire(e, et) for e in designed(utc_today())]
    exp = Expect(robot_patterns())
    for e in evs:
        exp.add(e)
    assert emitter.publish_bodies(et, [json.dumps(e) for e in evs]) == len(evs)
    wait_depth(amqp_conn, "stats-" + et, len(evs))
    job = mkjob(env, et, batch_size=100, commit_every=40)
    done = wait_runs(env, job, lambda rs: len(rs) >= 2, 30, "two runs")
    deactivate(env, job)
    a, b = done[0]["summary"], done[1]["summary"]
    head = parse_ts(evs[100]["timestamp"])
    assert (a["read"], a["queue_depth_before"], a["queue_depth_after"], a["chunks"]) == \
        (100, len(evs), len(evs) - 100, 3), a
    lag = (done[0]["finished_at"] - head).total_seconds()
    assert a["backlog_age_s"] == pytest.approx(lag, abs=60), (a["backlog_age_s"], lag)
    assert b["read"] == len(evs) - 100 and b["queue_depth_after"] == 0, b
    assert b["backlog_age_s"] is None
    assert b["oldest_age_s"] == pytest.approx((done[1]["started_at"] - head).total_seconds(),
                                              abs=60)
    assert daily(env, et) == exp.rows()
    assert_queue_drained("stats-" + et)


def test_many_malformed_logged_20_then_one_line(env, emitter, amqp_conn):
    et = new_type("junk")
    dq = "stats-%s.dead" % et
    bodies = [b"not json %d" % i for i in range(25)]
    good = wire(designed(utc_today())[0], et)
    assert emitter.publish_bodies(et, bodies + [json.dumps(good)]) == 26
    wait_depth(amqp_conn, "stats-" + et, 26)
    job = mkjob(env, et)
    r = wait_runs(env, job, lambda rs: len(rs) >= 1, 30, "the first run")[0]
    deactivate(env, job)
    assert r["status"] == "P" and r["message"] == \
        "25 of 26 events malformed, moved to %s" % dq, r
    warnings = [m for lv, m in run_logs(env, r["id"]) if lv == "WARNING"]
    assert len(warnings) == 21 and "5 more" in warnings[-1], warnings
    assert sorted(b for b, _ in drain_dlq(amqp_conn, dq)) == sorted(bodies)
    assert n_events(env, et) == 1
