"""`celeryc beat` reconnects promptly (issue #14): after Postgres (the job store) or RabbitMQ
was away for 20 s, the beat is connected again and sending within 2 s of the service's return.
It probes every second at most while the service is down; only its log lines back off. (Before:
the wait between attempts doubled up to 30 s while the service was down, and the beat came back
16 s after Postgres did.)

The Postgres test runs a private cluster (scripts/services.sh start DIR --only postgres) that
it stops (fast shutdown) and starts again; the RabbitMQ test stops and starts the session's
node application (rabbitmqctl stop_app / start_app), as test_connection.py does."""
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest

from beatutil import beat_factory, pg_query, write_schedule  # noqa: F401 (fixture)
from conftest import ROOT, c_only, queue_depth, scaled, unique_queue, wait_for, _load_env_file
from test_beat import _declare, _delete, _insert_job

pytestmark = c_only

DOWN_S = 20.0
TARGET_S = 2.0


def _log_times(log, needle):
    """Instants (epoch seconds) of the beat's log lines that contain needle."""
    out = []
    for line in log.splitlines():
        if needle in line and line.startswith("["):
            stamp = line[1:24]  # "2026-12-07 20:01:39,144"
            out.append(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return out


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class PrivatePostgres:
    """A Postgres cluster of this test alone (scripts/services.sh --only postgres) that can be
    stopped and started again on the same port and data directory."""

    def __init__(self, d):
        self.dir = Path(d)
        out = subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "start", str(d),
                              "--only", "postgres"], stdout=subprocess.PIPE, check=True,
                             timeout=scaled(120), env=self._env())
        assert out.stdout.decode().strip().splitlines()[-1] == str(self.dir)
        env = _load_env_file(self.dir / "env")
        self.url = env["CELERYC_TEST_PG_URL"]
        self.port = int(env["CELERYC_TEST_PG_PORT"])
        self.pid = int(env["CELERYC_TEST_PG_PID"])
        self.bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))[-1].rsplit("/", 1)[0]
        self.proc = None

    @staticmethod
    def _env():
        # Without the session's CELERYC_TEST_* (services.sh reads the pids to stop from the
        # environment too: a failed start must never stop the session's services).
        keep = ("CELERYC_TEST_TIMEOUT_MULT", "CELERYC_TEST_KEEP")
        return {k: v for k, v in os.environ.items()
                if not k.startswith("CELERYC_TEST_") or k in keep}

    def stop(self):
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGINT)  # fast shutdown: clients are disconnected
            wait_for(lambda: not _alive(self.pid) or (self.proc and self.proc.poll() is not None),
                     30, "postgres stopped", interval=0.05)
        if self.proc is not None:
            self.proc.wait(scaled(10))

    def start(self):
        drop = (["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
                if os.getuid() == 0 else [])
        log = open(self.dir / "postgres" / "postgres-restart.log", "ab")
        self.proc = subprocess.Popen(drop + [self.bindir + "/postgres", "-D",
                                             str(self.dir / "postgres" / "data")],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()
        self.pid = self.proc.pid

    def accepting(self):
        import psycopg2
        try:
            psycopg2.connect(self.url, connect_timeout=2).close()
            return True
        except psycopg2.Error:
            return False

    def close(self):
        self.stop()
        subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "stop", str(self.dir)],
                       timeout=scaled(60), env=self._env())


@pytest.fixture
def private_pg(services):
    if not os.environ.get("CELERYC_TEST_PG_URL"):
        pytest.skip("no Postgres binaries (CELERYC_TEST_PG_URL unset)")
    # Not under pytest's tmp_path: as root the cluster runs as the user postgres, who must be
    # able to pass through every parent directory (pytest's are 0700).
    d = tempfile.mkdtemp(prefix="celeryc-pgback.")
    pg = None
    try:
        pg = PrivatePostgres(d)
        yield pg
    finally:
        if pg is not None:
            pg.close()
        shutil.rmtree(d, ignore_errors=True)


def test_beat_reconnects_to_the_job_store_within_2s_of_its_return(private_pg, beat_factory,
                                                                   amqp_conn):
    pg = private_pg
    q = unique_queue("beat-pgback")
    _declare(amqp_conn, q)
    try:
        beat = beat_factory("--job-store", pg.url, "--db-upgrade", "--lease-ttl", "3",
                            "-l", "info", name="pgback")
        beat.wait_log(r"leader now", 30)
        _insert_job(pg.url, task="app.add", queue=q, args=[1, 2], concurrency="allow",
                    schedule={"type": "interval", "seconds": 1})
        wait_for(lambda: queue_depth(amqp_conn, q) >= 2, 20, "two runs sent")
        pg.stop()
        down_at = time.time()
        time.sleep(scaled(DOWN_S))
        assert beat.proc.poll() is None, beat.log()[-3000:]
        n_before = queue_depth(amqp_conn, q)
        pg.start()
        wait_for(pg.accepting, 30, "postgres accepting connections again", interval=0.02)
        up_at = time.time()
        beat.wait_log(r"job store connected again", 30)
        back = [t for t in _log_times(beat.log(), "job store connected again") if t > down_at]
        wait_for(lambda: queue_depth(amqp_conn, q) > n_before, 30, "a run sent after the return")
        sent_at = time.time()
        delay = back[0] - up_at
        print("postgres down %.1f s; beat connected again %.2f s after postgres accepted "
              "connections, a run in the queue %.2f s after" % (up_at - down_at, delay,
                                                                sent_at - up_at))
        assert delay < scaled(TARGET_S), "reconnected %.2f s after postgres came back" % delay
        # While it was down the beat tried at least once a second, and said so sparingly.
        fails = _log_times(beat.log(), "job store:")
        assert len([t for t in fails if down_at < t < up_at]) <= 8, beat.log()[-4000:]
    finally:
        _delete(amqp_conn, q)


def _ctl(*args):
    d = os.environ.get("CELERYC_TEST_DATA_DIR")
    if not d:
        pytest.skip("needs the RabbitMQ node started by scripts/services.sh")
    subprocess.run(["bash", str(ROOT / "scripts" / "services.sh"), "ctl", d] + list(args),
                   check=True, timeout=scaled(90), stdout=subprocess.DEVNULL)


def _amqp_accepting():
    port = int(os.environ["CELERYC_TEST_AMQP_URL"].rsplit(":", 1)[1].split("/")[0])
    try:
        s = socket.create_connection(("127.0.0.1", port), 1)
        s.sendall(b"AMQP\x00\x00\x09\x01")
        ok = len(s.recv(7)) == 7  # connection.start: the broker is serving
        s.close()
        return ok
    except OSError:
        return False


def test_beat_reconnects_to_the_broker_within_2s_of_its_return(beat_factory, amqp_conn,
                                                               tmp_path):
    q = unique_queue("beat-mqback")
    _declare(amqp_conn, q)
    sched = write_schedule(tmp_path / "s.json", {
        "tick": {"task": "app.add", "schedule": 1, "args": [1, 2], "options": {"queue": q}}})
    try:
        beat = beat_factory("--schedule-file", sched, "-s", str(tmp_path / "state.json"),
                            "-l", "info", name="mqback")
        wait_for(lambda: queue_depth(amqp_conn, q) >= 2, 20, "two messages sent")
        amqp_conn.close()
        _ctl("stop_app")
        down_at = time.time()
        try:
            time.sleep(scaled(DOWN_S))
        finally:
            _ctl("start_app")
        wait_for(_amqp_accepting, 60, "RabbitMQ serving again", interval=0.02)
        up_at = time.time()
        beat.wait_log(r"connected to the broker again", 30)
        back = [t for t in _log_times(beat.log(), "connected to the broker again")
                if t > down_at]
        delay = back[0] - up_at
        print("rabbitmq down %.1f s; beat connected again %.2f s after it served again"
              % (up_at - down_at, delay))
        assert beat.proc.poll() is None, beat.log()[-3000:]
        assert delay < scaled(TARGET_S), "reconnected %.2f s after RabbitMQ came back" % delay
        fails = _log_times(beat.log(), "cannot connect to the broker")
        assert len([t for t in fails if down_at < t < up_at]) <= 8, beat.log()[-4000:]
    finally:
        import amqp
        port = os.environ["CELERYC_TEST_AMQP_URL"].rsplit(":", 1)[1].split("/")[0]
        c = amqp.Connection(host="127.0.0.1:%s" % port, userid="guest", password="guest",
                            virtual_host="/", connect_timeout=5)
        c.connect()
        try:
            _delete(c, q)
        finally:
            c.close()
