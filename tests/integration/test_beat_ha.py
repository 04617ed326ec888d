"""`celeryc beat` high availability (issue #6): three beats on one job store, an interval job
every second. Exactly one beat dispatches (the lease holder); after the leader is killed with
-9 a standby takes over within two lease periods; over the whole test there is exactly one
run per slot, and the slots have no gap longer than the takeover."""
import re
import signal
import time
from datetime import timedelta

from beatutil import beat_factory, pg_query  # noqa: F401 (fixture)
from conftest import c_only, queue_depth, scaled, unique_queue, wait_for
from test_beat import _declare, _delete, _insert_job

pytestmark = c_only

TTL = 2.0
LEADER_RX = re.compile(r"leader now \(lease 'beat', epoch (\d+)")


def _leaders(beats):
    return [b for b in beats if b.proc.poll() is None and LEADER_RX.search(b.log())
            and "no longer the leader" not in b.log()[b.log().rfind("leader now"):]]


def test_three_beats_one_dispatcher_takeover_after_kill9(pg_url, beat_factory, amqp_conn):
    q = unique_queue("beat-ha")
    _declare(amqp_conn, q)
    try:
        beats = [beat_factory("--job-store", pg_url, "--db-upgrade", "--lease-ttl", str(TTL),
                              name="ha%d" % i) for i in range(3)]
        first = wait_for(lambda: _leaders(beats), 20, "a leader")
        assert len(first) == 1
        leader = first[0]
        job = _insert_job(pg_url, task="app.add", queue=q, args=[1, 2], concurrency="allow",
                          schedule={"type": "interval", "seconds": 1})
        wait_for(lambda: pg_query(pg_url, "SELECT count(*) FROM celeryc.runs WHERE job_id = %s "
                                  "AND sent_at IS NOT NULL", (job,))[0][0] >= 3,
                 15, "three runs sent by the first leader")
        # Only the leader sends.
        for b in beats:
            if b is not leader:
                assert "Sending due task" not in b.log()
        leader.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        leader.wait_exit(10)
        rest = [b for b in beats if b is not leader]
        second = wait_for(lambda: _leaders(rest), 2 * TTL + 10, "a new leader")
        took = time.monotonic() - killed_at
        assert len(second) == 1
        assert took <= scaled(2 * TTL) + 1.0, "takeover took %.2f s" % took
        new = second[0]
        e1 = int(LEADER_RX.search(leader.log()).group(1))
        e2 = int(LEADER_RX.search(new.log()).group(1))
        assert e2 > e1
        n = pg_query(pg_url, "SELECT count(*) FROM celeryc.runs WHERE job_id = %s", (job,))[0][0]
        wait_for(lambda: pg_query(pg_url, "SELECT count(*) FROM celeryc.runs WHERE job_id = %s "
                                  "AND epoch = %s AND sent_at IS NOT NULL", (job, e2))[0][0] >= 3,
                 15, "three runs sent by the new leader")
        for b in rest:
            assert b.stop() == 0
        rows = pg_query(pg_url, "SELECT scheduled_for, epoch, sent_at IS NOT NULL, attempt "
                        "FROM celeryc.runs WHERE job_id = %s ORDER BY scheduled_for", (job,))
        assert len(rows) > n >= 3
        slots = [r[0] for r in rows]
        assert len(set(slots)) == len(slots), "two runs for one slot"
        assert all(r[3] == 1 and r[2] for r in rows), "a run was not sent"
        assert {r[1] for r in rows} <= {e1, e2}
        # Slots are a whole number of seconds apart; the only gap is the takeover.
        gaps = [b - a for a, b in zip(slots, slots[1:])]
        assert all(g.total_seconds() == int(g.total_seconds()) for g in gaps)
        long_gaps = [g for g in gaps if g > timedelta(seconds=1)]
        print("takeover %.2f s, %d runs, long gaps %s" % (took, len(rows), long_gaps))
        assert len(long_gaps) <= 1
        assert all(g <= timedelta(seconds=scaled(2 * TTL) + 2) for g in long_gaps)
        # Every run's message reached the queue exactly once.
        assert queue_depth(amqp_conn, q) == len(rows)
        slots_tab = pg_query(pg_url, "SELECT count(*), count(DISTINCT slot) FROM "
                             "celeryc.entry_slots WHERE name = %s", ("job:" + job,))[0]
        assert slots_tab[0] == slots_tab[1] >= len(rows) - 1
    finally:
        _delete(amqp_conn, q)
