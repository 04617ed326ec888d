"""Helpers for the `celeryc beat` tests (test_beat.py, test_beat_ha.py): start beats as the
worker fixture starts workers, parse the beat's per-message debug lines, talk to Postgres."""
import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime

import pytest

from conftest import Worker, _pg_admin_exec, celeryc_bin, scaled

SENT_RX = re.compile(r"beat: sent (\S+) slot (\S+) id (\S+)")


def parse_iso(s):
    return datetime.fromisoformat(s)


def sent(log):
    """[(entry, slot datetime or None, task id)] from a beat log (debug level)."""
    out = []
    for m in SENT_RX.finditer(log):
        slot = None if m.group(2) == "-" else parse_iso(m.group(2))
        out.append((m.group(1), slot, m.group(3)))
    return out


def write_schedule(path, entries):
    path.write_text(json.dumps({"entries": entries}))
    return str(path)


@pytest.fixture
def beat_factory(services, tmp_path, request):
    """beat_factory(*args, name=...) starts `celeryc beat -b AMQP -l debug ARGS` in tmp_path;
    every beat is stopped (SIGTERM, then SIGKILL) at the end, logs printed on failure."""
    started = []

    def make(*args, name=None, env=None):
        b = celeryc_bin()
        if not b:
            pytest.fail("celeryc binary not found (set CELERYC_BIN)")
        name = name or "beat%d" % (len(started) + 1)
        e = dict(os.environ)
        e.update(env or {})
        argv = [b, "beat", "-b", os.environ["CELERYC_TEST_AMQP_URL"], "-l", "debug"] + list(args)
        bt = Worker(argv, e, str(tmp_path / ("%s-%d.log" % (name, len(started)))), None, name,
                    cwd=str(tmp_path))
        started.append(bt)
        return bt

    yield make
    failed = getattr(request.node, "rep_call", None)
    for bt in started:
        bt.stop()
        if failed is not None and failed.failed:
            sys.stderr.write("\n---- log of %s (%s)\n%s\n" % (bt.name, " ".join(bt.argv),
                                                             bt.log()[-8000:]))


def pg(url):
    import psycopg2
    c = psycopg2.connect(url, connect_timeout=10)
    c.autocommit = True
    return c


def pg_query(url, sql, args=()):
    c = pg(url)
    try:
        with c.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
    finally:
        c.close()



# ---- Job store tests with one beat and one worker per module (test_jobs_e2e.py,
# test_jobs_python.py) ------------------------------------------------------------------------

@contextlib.contextmanager
def module_database(prefix):
    """A fresh database owned by celeryc for a whole module: its URL; dropped at the end."""
    if not os.environ.get("CELERYC_TEST_PG_URL"):
        pytest.skip("no Postgres (CELERYC_TEST_PG_URL unset)")
    if not celeryc_bin():
        pytest.fail("celeryc binary not found (set CELERYC_BIN)")
    name = prefix + uuid.uuid4().hex[:10]
    _pg_admin_exec("CREATE DATABASE %s OWNER celeryc" % name)
    try:
        yield "%s/%s" % (os.environ["CELERYC_TEST_PG_URL"].rsplit("/", 1)[0], name)
    finally:
        _pg_admin_exec("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name, attempts=20)


def dump_logs_on_failure(request, processes):
    """After a failed test, print the tail of each process's log."""
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for p in processes:
            sys.stderr.write("\n---- log of %s (%s)\n%s\n" % (p.name, " ".join(p.argv),
                                                             p.log()[-6000:]))


def store_cmd(url, *args, timeout=30):
    """`celeryc ARGS --job-store URL` with no job store, broker or config from the
    environment: the CompletedProcess (text)."""
    env = dict(os.environ)
    for k in ("CELERYC_JOB_STORE", "CELERY_BROKER_URL", "CELERYC_BROKER_URL", "CELERYC_CONFIG"):
        env.pop(k, None)
    return subprocess.run([celeryc_bin()] + list(args) + ["--job-store", url],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          timeout=scaled(timeout), env=env)


def store_json(url, *args):
    """store_cmd(url, ARGS, --json), which must succeed: the parsed output."""
    p = store_cmd(url, *(args + ("--json",)))
    assert p.returncode == 0, (args, p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)
