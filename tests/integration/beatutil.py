"""Helpers for the `celeryc beat` tests (test_beat.py, test_beat_ha.py): start beats as the
worker fixture starts workers, parse the beat's per-message debug lines, talk to Postgres."""
import json
import os
import re
import sys
from datetime import datetime

import pytest

from conftest import Worker, celeryc_bin

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

