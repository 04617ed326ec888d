"""`celeryc beat` at rest (issue #14): two beats on one job store with one job a minute; the
standby and the leader each use well under 1 % of a core (utime + stime from /proc over a
10 s window). A standby once polled with a zero timeout ~5,700 times a second because the
`want_sweep` flag that store_ensure sets is only ever cleared by the leader's sweep."""
import os
import re
import time

from beatutil import beat_factory, pg_query  # noqa: F401 (fixture)
from conftest import c_only, unique_queue, wait_for
from test_beat import _declare, _delete, _insert_job

pytestmark = c_only

LEADER_RX = re.compile(r"leader now \(lease 'beat'")
WINDOW_S = 10.0


def _cpu_s(pid):
    """utime + stime of a process, seconds (/proc/<pid>/stat fields 14 and 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_share(pids, seconds):
    c0 = {p: _cpu_s(p) for p in pids}
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    return {p: (_cpu_s(p) - c0[p]) / (t1 - t0) for p in pids}


def test_standby_beat_sleeps(pg_url, beat_factory, amqp_conn):
    q = unique_queue("beat-idle")
    _declare(amqp_conn, q)
    try:
        beats = [beat_factory("--job-store", pg_url, "--db-upgrade", "--lease-ttl", "3",
                              "-l", "info", name="idle%d" % i) for i in range(2)]
        wait_for(lambda: sum(1 for b in beats if LEADER_RX.search(b.log())) == 1, 30,
                 "one leader")
        _insert_job(pg_url, task="app.add", queue=q, args=[1, 2], concurrency="allow",
                    schedule={"type": "interval", "seconds": 60})
        # Both beats have seen the job (NOTIFY) and settled.
        wait_for(lambda: all("job " in b.log() and "scheduled" in b.log() for b in beats), 15,
                 "the job scheduled on both beats")
        time.sleep(1.0)
        leader = next(b for b in beats if LEADER_RX.search(b.log()))
        standby = next(b for b in beats if b is not leader)
        share = _cpu_share([standby.pid, leader.pid], WINDOW_S)
        print("idle CPU over %.0f s: standby %.3f %%, leader %.3f %% of a core"
              % (WINDOW_S, 100 * share[standby.pid], 100 * share[leader.pid]))
        for b in beats:
            assert b.proc.poll() is None, b.log()[-3000:]
        assert "leader now" not in standby.log()
        assert share[standby.pid] < 0.01, "standby used %.1f %% of a core" % (
            100 * share[standby.pid])
        assert share[leader.pid] < 0.01, "leader used %.1f %% of a core" % (
            100 * share[leader.pid])
    finally:
        _delete(amqp_conn, q)
