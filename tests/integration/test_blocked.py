"""RabbitMQ flow control (issue #4: "if the broker blocks or events can't be sent, the worker
keeps working with bounded memory"): a real memory alarm on the test node
(`rabbitmqctl set_vm_memory_high_watermark 0.000001`, always restored) while a worker runs
with -E.

RabbitMQ 3.10 blocks a connection (stops reading its socket, sends connection.blocked to a
client that advertised the capability) once it publishes during the alarm; a connection
that only consumes is never blocked. So the test client publishes everything before raising
the alarm, and the EventReceiver (a consumer) keeps working through it. The worker's
consuming connection must not publish either: it keeps consuming through the alarm (which
is what frees the broker's memory when the alarm comes from a backlog), as Celery's does.

CELERYC_IT_IMPL=python runs the same scenario against the Python worker; only the log lines
are celeryc's, the behaviour checks are shared.
"""
import os
import re
import subprocess
import time

import pytest

from conftest import HERE, IMPL, PY, ROOT, TIMEOUT, scaled, unique_queue, wait_for
from test_events import Monitor


def _ctl(*args):
    d = os.environ.get("CELERYC_TEST_DATA_DIR")
    if not d:
        pytest.skip("needs the RabbitMQ node started by scripts/services.sh")
    return subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "ctl", d] + list(args),
                          check=True, timeout=scaled(90), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL).stdout.decode(errors="replace")


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _connections():
    """[(client pid or '', state, capabilities text)] of the node's AMQP connections."""
    out = _ctl("list_connections", "-q", "--no-table-headers", "state", "client_properties")
    return [line for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("acks_late", [False, True], ids=["early-ack", "acks-late"])
def test_memory_alarm_worker_keeps_working(worker_factory, app, capp, rds7, acks_late):
    """Early acks: the retry message is kept in memory. acks_late: the original stays
    unacked until the retry is published (not requeued: it would run again at once)."""
    queue = unique_queue("blk")
    go = "blk-go-" + queue
    name = "blk-%s@localhost" % queue
    if IMPL == "c":
        w = worker_factory(queue=queue, concurrency=2, name=name, prefetch=1,
                           acks_late=acks_late, extra=["-E", "--broker-heartbeat", "4"])
    else:  # the Python reference with -E and worker heartbeats (AMQP heartbeat 120 s)
        argv = [PY, "-m", "celery", "-A", "pyworker_app", "worker", "--pool", "prefork", "-c",
                "2", "--without-gossip", "--without-mingle", "-Q", queue, "-n", name, "-l",
                "info", "-E"]
        w = worker_factory(queue=queue, argv=argv, name=name, impl="python",
                           env={"PYTHONPATH": str(HERE), "PYW_PREFETCH": "1",
                                "PYW_ACKS_LATE": "1" if acks_late else "0"})
    with Monitor(app) as mon:
        mon.wait(lambda: mon.of(name, "worker-heartbeat") or mon.of(name, "worker-online"),
                 20, "first worker event")
        if IMPL == "c":
            # The capability is advertised (py-amqp's client properties have it too).
            assert any("connection.blocked" in c and "rabbitmq-c" in c
                       for c in _connections()), _connections()
        # Everything is published before the alarm: a publishing client is blocked too.
        # Two tasks occupy both children (delivered, acked at start) until the test sets a
        # Redis key, after the block; behind them two tasks that retry once (run while
        # blocked: the retry message must wait, not be lost) and two short ones, which stay
        # in the queue until then (prefetch window 2): they are consumed during the alarm.
        long_ = [app.send_task("it.wait_key", args=[go, scaled(120)], queue=queue)
                 for _ in range(2)]
        mon.wait(lambda: len([e for e in mon.events if e["type"] == "task-started"
                              and e.get("uuid") in {r.id for r in long_}]) == 2,
                 TIMEOUT, "both long tasks started")
        retried = [app.send_task("t.integration.tasks.retry_once", queue=queue)
                   for _ in range(2)]
        short = [app.send_task("demo.add", args=[i, i], queue=queue) for i in range(2)]
        time.sleep(0.5)
        rss0 = _rss_kib(w.pid)
        try:
            _ctl("set_vm_memory_high_watermark", "0.000001")
            t_alarm = time.monotonic()
            if IMPL == "c":
                # The next worker-heartbeat (2 s) hits the alarm: one WARNING with the reason.
                w.wait_log(r"WARNING.*broker blocked the connection: low on memory", 20,
                           "the block warning")
            else:
                time.sleep(3)  # the Python worker logs nothing: give its heartbeat time
            assert not any(r.ready() for r in long_ + retried + short)
            rds7.set(go, "1")
            # Tasks already delivered complete and store their results while blocked.
            for r in long_:
                assert r.get(timeout=TIMEOUT) is True
                assert r.state == "SUCCESS"
            # Tasks still queued at the broker are consumed and run during the alarm.
            for i, r in enumerate(short):
                assert r.get(timeout=TIMEOUT) == 2 * i
            if IMPL == "c":  # the retry messages wait for the unblock
                w.wait_log(r"retry message waits for the broker to unblock publishing(.|\n)*"
                           r"retry message waits for the broker to unblock publishing",
                           TIMEOUT, "two retries kept")
            # Stay blocked well past 2 x the AMQP heartbeat (4 s): the connection survives
            # (once is enough: the acks_late run only checks its retries).
            if not acks_late:
                wait_for(lambda: time.monotonic() - t_alarm > 12, 30, "alarm time")
            else:
                time.sleep(2)  # a requeued original would have run again by now
                if IMPL == "c":
                    log = w.log()
                    for r in retried:
                        assert log.count("retry_once[%s] retry:" % r.id) == 1, log[-3000:]
            assert w.proc.poll() is None, w.log()[-3000:]
            rss1 = _rss_kib(w.pid)
            assert rss1 - rss0 < 16 * 1024, (rss0, rss1)
            if IMPL == "c":
                assert any(re.search(r"\bblocked\b", c) and "rabbitmq-c" in c
                           for c in _connections()), _connections()
            n_events_blocked = len(mon.of(name))
        finally:
            _ctl("set_vm_memory_high_watermark", "0.4")
            rds7.delete(go)
        # Unblocked: retry messages go out and run, events flow again.
        for r in retried:  # retried once, the retry published after the alarm
            assert r.get(timeout=scaled(40)) == 1
        if IMPL == "c":
            w.wait_log(r"INFO.*broker unblocked the connection", 30, "the unblock info")
        mon.wait(lambda: len(mon.of(name, "worker-heartbeat")) > 0 and
                 any(e["type"] == "worker-heartbeat" for e in mon.of(name)[n_events_blocked:]),
                 30, "a worker-heartbeat after the alarm")
        assert w.proc.poll() is None
        log = w.log()
        assert "Connection to broker lost" not in log, log[-3000:]
        if IMPL == "c":
            assert len(re.findall(r"broker blocked the connection", log)) == 1, log[-3000:]
        assert w.stop() == 0
