"""Error texts say what happened, whole (issue #14): a refused connection says "Connection
refused" (not rabbitmq-c's leftover errno "Operation now in progress"), libpq's messages
keep their whole first line (no "accepting TCP/IP connecti"), and a content type holding a
NUL byte is logged escaped with its real length and refused as what it really is."""
import json
import re
import subprocess
import uuid

import amqp
import pytest

from conftest import TIMEOUT, c_only, celeryc_bin, free_port, queue_depth, scaled, wait_for

pytestmark = c_only


def _run(args, timeout=60):
    p = subprocess.run([celeryc_bin()] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, timeout=scaled(timeout))
    return p.returncode, p.stdout.decode(errors="replace")


def _assert_refused(text, port):
    assert "Operation now in progress" not in text, text
    assert re.search(r"127\.0\.0\.1:%d\S*: Connection refused" % port, text), text


def test_refused_broker_port_says_connection_refused(services, tmp_path):
    port = free_port()
    url = "amqp://guest:guest@127.0.0.1:%d//" % port
    rc, out = _run(["worker", "-b", url, "--result-backend", "none", "-l", "info", "-Q",
                    "it-refused"])
    assert rc != 0
    _assert_refused(out, port)
    # The client commands go through the same connect.
    rc, out = _run(["inspect", "ping", "-b", url, "--timeout", "1"])
    assert rc != 0
    _assert_refused(out, port)


def _assert_whole_libpq(text, port):
    """libpq's connection failure, kept whole and on one line."""
    first = r'connection to server at "127\.0\.0\.1", port %d failed: Connection refused' % port
    assert re.search(first, text), text
    assert not re.search(r"^\s*Is the server running", text, re.M), \
        "libpq's hint line was logged as a line of its own:\n" + text
    for m in re.finditer(r"accepting TCP/IP (\w*)", text):
        assert m.group(1) == "connections", "cut mid-word: %r" % m.group(0)


def test_job_store_down_error_keeps_whole_libpq_line(services):
    port = free_port()
    rc, out = _run(["jobs", "list", "--job-store",
                    "postgresql://celeryc:celeryc@127.0.0.1:%d/celeryc" % port])
    assert rc != 0
    _assert_whole_libpq(out, port)


def test_postgres_result_backend_down_error_keeps_whole_libpq_line(app, worker_factory):
    port = free_port()
    w = worker_factory(concurrency=1, extra=[
        "--result-backend", "db+postgresql://celeryc:celeryc@127.0.0.1:%d/celeryc" % port])
    app.send_task("demo.add", args=[1, 2], queue=w.queue)
    w.wait_log(r"result backend: .*connection to server at", 30)
    _assert_whole_libpq(w.log(), port)


def test_worker_job_store_down_error_keeps_whole_libpq_line(app, worker_factory):
    port = free_port()
    w = worker_factory(concurrency=1, extra=[
        "--job-store", "postgresql://celeryc:celeryc@127.0.0.1:%d/celeryc" % port])
    w.wait_log(r"job store.*connection to server at", 30)
    _assert_whole_libpq(w.log(), port)


def _v2(task, tid, args):
    headers = {"lang": "py", "task": task, "id": tid, "shadow": None, "eta": None,
               "expires": None, "group": None, "group_index": None, "retries": 0,
               "timelimit": [None, None], "root_id": tid, "parent_id": None,
               "argsrepr": repr(tuple(args)), "kwargsrepr": "{}", "origin": "it@localhost",
               "ignore_result": False}
    body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None,
                                  "chord": None}]).encode()
    return headers, body


@pytest.mark.parametrize("field,value,shown", [
    ("content_type", "application/json\x00evil", r"application/json\x00evil"),
    ("content_encoding", "utf-8\x00evil", r"utf-8\x00evil"),
])
def test_content_type_with_nul_logged_escaped_and_refused(field, value, shown, app,
                                                          worker_factory, amqp_conn, rds):
    w = worker_factory(concurrency=1)
    tid = str(uuid.uuid4())
    headers, body = _v2("demo.add", tid, [1, 2])
    props = {"content_type": "application/json", "content_encoding": "utf-8",
             "delivery_mode": 2, "correlation_id": tid, "application_headers": headers}
    props[field] = value
    ch = amqp_conn.channel()
    ch.basic_publish(amqp.Message(body, **props), exchange="", routing_key=w.queue)
    ch.close()
    assert app.send_task("demo.add", args=[2, 3], queue=w.queue).get(timeout=TIMEOUT) == 5
    wait_for(lambda: queue_depth(amqp_conn, w.queue) == 0, 5, "queue empty (not requeued)")
    log = w.log()
    # Escaped, with its real length, never shortened to the part before the NUL.
    assert shown in log, log
    assert "(%d bytes)" % len(value.encode()) in log, log
    line = next(ln for ln in log.splitlines() if shown in ln)
    assert "Rejecting" in line or "Refusing" in line, line
    # Refused as what it is: the task never ran.
    assert rds.get("celery-task-meta-" + tid) is None
    assert w.proc.poll() is None
