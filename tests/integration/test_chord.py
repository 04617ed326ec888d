"""Chords with the Redis result backend (Celery's native join, src/worker/chord.c) and the
celery.chord_unlock / celery.accumulate built-ins (tasks/celery.c), driven by real Celery
5.2 clients.

- a chord of C members fires its body once with the results in group_index order, and
  deletes its keys;
- a failing member fails the body with celery.exceptions.ChordError("Dependency <tid> raised
  ValueError('boom')") and applies the body's errbacks (as Celery's chord_error_from_stack);
- mixed fleet: Python and C workers complete members of the same chord, whichever is last
  fires the body;
- a member run twice (a redelivery whose re-run returns something else) is counted once and
  the body fires once, with the first run's result (celeryc-only: Celery counts it twice);
- a member dead-lettered past --max-redeliveries fails the chord (celeryc-only);
- celery.chord_unlock joins the header from Redis and applies the body, fails it with
  ChordError on a failed member, and gives up after its retry bound (celeryc-only);
- celery.accumulate.

CELERYC_IT_IMPL=python runs the shared ones against the Python worker."""
import json
import time
import uuid

import amqp
import pytest
from celery import chord, signature
from celery.exceptions import ChordError

from conftest import IMPL, TIMEOUT, c_only, scaled, unique_queue, wait_for

EMBED_NONE = {"callbacks": None, "errbacks": None, "chain": None}


def sig(app, name, args, queue, **options):
    return signature(name, args=args, app=app, queue=queue, **options)


def chord_keys(gid):
    return ["celery-taskset-meta-%s%s" % (gid, s) for s in (".j", ".t", ".s")]


def test_chord_of_members_completes(app, worker, rds):
    q = worker.queue
    header = [sig(app, "demo.add", [i, i], q) for i in range(8)]
    res = chord(header)(sig(app, "demo.xsum", [], q))
    assert res.get(timeout=TIMEOUT) == sum(2 * i for i in range(8))
    # The body's parent is the header task that completed the chord (Celery's callback.delay
    # inside that task), and the chord's keys are gone.
    member_ids = {r.id for r in res.parent.results}
    assert json.loads(rds.get("celery-task-meta-" + res.id))["parent_id"] in member_ids
    wait_for(lambda: not any(rds.exists(k) for k in chord_keys(res.parent.id)), scaled(5),
             "chord keys deleted")


def test_chord_results_ordered_by_group_index(app, worker):
    """The body sees results in header order, whatever the completion order (the first
    members sleep, so they finish last)."""
    q = worker.queue
    header = [sig(app, "demo.sleep", [0.3], q)] + [sig(app, "demo.add", [i, 0], q)
                                                   for i in range(1, 4)]
    res = chord(header)(sig(app, "t.integration.tasks.identity", [], q))
    got = res.get(timeout=TIMEOUT)
    assert got[1:] == [1, 2, 3]


def test_chord_failing_member_chord_error(app, worker, rds):
    q = worker.queue
    eb_id = str(uuid.uuid4())
    errback = sig(app, "t.integration.tasks.identity", [], q, task_id=eb_id)
    body = sig(app, "demo.xsum", [], q)
    body.link_error(errback)
    header = [sig(app, "demo.add", [1, 1], q), sig(app, "demo.fail", ["boom"], q),
              sig(app, "demo.add", [2, 2], q)]
    res = chord(header)(body)
    # res.get() would re-raise the failed header member's ValueError first (Celery's client
    # checks the parents); the body's own result is the ChordError.
    with pytest.raises(ChordError) as ei:
        app.AsyncResult(res.id).get(timeout=TIMEOUT)
    failed_id = res.parent.results[1].id
    assert str(ei.value) == "Dependency %s raised ValueError('boom')" % failed_id
    meta = json.loads(rds.get("celery-task-meta-" + res.id))
    assert meta["status"] == "FAILURE"
    assert meta["result"] == {"exc_type": "ChordError", "exc_module": "celery.exceptions",
                              "exc_message": [str(ei.value)]}
    # The body's (old-style) errback ran with the body's id.
    assert app.AsyncResult(eb_id).get(timeout=TIMEOUT) == res.id


@pytest.mark.skipif(IMPL != "c", reason="mixed fleet: C and Python workers")
@pytest.mark.parametrize("late", ["python", "c"])
def test_mixed_fleet_chord(app, worker_factory, late):
    """Members alternate between a C and a Python worker; the member of the `late` side has a
    countdown, so that side completes the chord and fires the body (on the other side)."""
    wc = worker_factory(impl="c")
    wp = worker_factory(impl="python")
    qs = {"c": wc.queue, "python": wp.queue}
    header = []
    for i in range(6):
        side = "c" if i % 2 == 0 else "python"
        opts = {"countdown": 1} if side == late and i >= 4 else {}
        header.append(sig(app, "demo.add", [i, 1], qs[side], **opts))
    body_side = "python" if late == "c" else "c"
    res = chord(header)(sig(app, "demo.xsum", [], qs[body_side]))
    assert res.get(timeout=TIMEOUT) == sum(i + 1 for i in range(6))
    # The body's parent is the member that completed the chord: the late side's.
    late_ids = {r.id for i, r in enumerate(res.parent.results) if i >= 4 and
                ("c" if i % 2 == 0 else "python") == late}
    assert app.backend.get_task_meta(res.id).get("parent_id") in late_ids


@pytest.mark.skipif(IMPL != "c", reason="mixed fleet: C and Python workers")
def test_many_members_mixed_fleet_fire_once(app, worker_factory, rds):
    """300 members spread over two C workers and a Python worker, completing concurrently:
    the body runs exactly once, with every result in order."""
    ws = [worker_factory(impl="c", concurrency=4), worker_factory(impl="c", concurrency=4),
          worker_factory(impl="python", concurrency=2)]
    n = 300
    header = [sig(app, "demo.add", [i, 0], ws[i % 3].queue) for i in range(n)]
    res = chord(header)(sig(app, "t.integration.tasks.identity", [], ws[0].queue))
    assert res.get(timeout=TIMEOUT * 3) == list(range(n))
    runs = sum(w.log().count("[%s] succeeded" % res.id) for w in ws)
    assert runs == 1
    wait_for(lambda: not any(rds.exists(k) for k in chord_keys(res.parent.id)), scaled(5),
             "chord keys deleted")


# ---- Hand-built header messages (redeliveries, dead letters) ---------------------------------

def declare(conn, q):
    ch = conn.channel()
    ch.exchange_declare(q, "direct", durable=True, auto_delete=False)
    ch.queue_declare(q, durable=True, auto_delete=False)
    ch.queue_bind(q, q, q)
    ch.close()


def publish_member(conn, q, task, args, tid, gid, index, body, **extra_headers):
    """A chord header message as Celery 5.2's client publishes it."""
    h = {"lang": "py", "task": task, "id": tid, "shadow": None, "eta": None, "expires": None,
         "group": gid, "group_index": index, "retries": 0, "timelimit": [None, None],
         "root_id": tid, "parent_id": None, "argsrepr": repr(tuple(args)), "kwargsrepr": "{}",
         "origin": "it@localhost", "ignore_result": False}
    h.update(extra_headers)
    embed = dict(EMBED_NONE, chord=dict(body))
    ch = conn.channel()
    ch.basic_publish(amqp.Message(json.dumps([args, {}, embed]), content_type="application/json",
                                  content_encoding="utf-8", correlation_id=tid,
                                  delivery_mode=2, application_headers=h),
                     exchange=q, routing_key=q)
    ch.close()


@c_only
def test_member_run_twice_counted_once(app, worker, amqp_conn, rds):
    """A member whose message is delivered twice and whose second run returns another value
    (as a redelivered non-deterministic task does) is counted once: the body fires once, when
    the real last member is in, with the first run's result. (Celery's MULTI would count it
    twice and fire the body one member early, with the duplicate's result.)"""
    q = worker.queue
    gid = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(3)]
    body = sig(app, "demo.xsum", [], q, task_id=str(uuid.uuid4()))
    body_d = dict(body)
    rds.set("celery-taskset-meta-%s.s" % gid, 3)
    publish_member(amqp_conn, q, "demo.add", [1, 1], ids[0], gid, 0, body_d)
    wait_for(lambda: app.AsyncResult(ids[0]).ready(), TIMEOUT, "member 0")
    publish_member(amqp_conn, q, "demo.add", [10, 10], ids[0], gid, 0, body_d)  # its twin
    publish_member(amqp_conn, q, "demo.add", [2, 2], ids[1], gid, 1, body_d)
    wait_for(lambda: app.AsyncResult(ids[1]).ready(), TIMEOUT, "member 1")
    worker.wait_log(r"Chord %s: member %s was already counted" % (gid, ids[0]), scaled(10))
    assert rds.zcard("celery-taskset-meta-%s.j" % gid) == 2
    assert not rds.exists("celery-task-meta-" + body.id), "body fired early"
    publish_member(amqp_conn, q, "demo.add", [3, 3], ids[2], gid, 2, body_d)
    assert app.AsyncResult(body.id).get(timeout=TIMEOUT) == 2 + 4 + 6
    # Once: the body ran one time, and a member redelivered after the chord completed does
    # not fire it again.
    publish_member(amqp_conn, q, "demo.add", [3, 3], ids[2], gid, 2, body_d)
    wait_for(lambda: worker.log().count(ids[2] + "] succeeded") >= 2, TIMEOUT, "re-run")
    assert worker.log().count("demo.xsum[%s] succeeded" % body.id) == 1


@c_only
def test_completer_rerun_fires_again_after_crash(app, worker, amqp_conn, rds):
    """The state a crash leaves between the body's publish and the keys' DEL: every member is
    in, the completer key names member 1. A late twin of member 0 does not fire; the
    redelivered member 1 (the completer) fires the body, which is not lost."""
    q = worker.queue
    gid = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(2)]
    body = sig(app, "demo.xsum", [], q, task_id=str(uuid.uuid4()))
    j = "celery-taskset-meta-%s.j" % gid
    rds.zadd(j, {json.dumps([1, ids[0], "SUCCESS", 2]): 0,
                 json.dumps([1, ids[1], "SUCCESS", 4]): 1})
    rds.set("celery-taskset-meta-%s.s" % gid, 2)
    rds.set("celeryc-chord-completer-" + gid, ids[1])
    publish_member(amqp_conn, q, "demo.add", [1, 1], ids[0], gid, 0, dict(body))
    worker.wait_log(r"Chord %s: member %s was already counted" % (gid, ids[0]), TIMEOUT)
    time.sleep(scaled(1))  # room for a (wrong) body to be published and run
    assert not rds.exists("celery-task-meta-" + body.id)
    assert rds.exists(j)
    publish_member(amqp_conn, q, "demo.add", [2, 2], ids[1], gid, 1, dict(body))
    assert app.AsyncResult(body.id).get(timeout=TIMEOUT) == 6
    wait_for(lambda: not any(rds.exists(k) for k in chord_keys(gid) +
                             ["celeryc-chord-completer-" + gid]), scaled(5), "keys deleted")


@c_only
def test_dead_lettered_member_fails_the_chord(app, worker_factory, amqp_conn, rds):
    """A member past --max-redeliveries is dead-lettered by the master, which returns it as
    FAILURE(WorkerLostError): the body fails with ChordError and its errbacks run, instead of
    the chord staying pending forever."""
    q = unique_queue("chordpoison")
    declare(amqp_conn, q)
    w = worker_factory(queue=q, extra=["--max-redeliveries", "3"])
    gid = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(2)]
    eb_id = str(uuid.uuid4())
    body = sig(app, "demo.xsum", [], q, task_id=str(uuid.uuid4()))
    body.link_error(sig(app, "t.integration.tasks.identity", [], q, task_id=eb_id))
    rds.set("celery-taskset-meta-%s.s" % gid, 2)
    publish_member(amqp_conn, q, "demo.add", [1, 1], ids[0], gid, 0, dict(body))
    wait_for(lambda: app.AsyncResult(ids[0]).ready(), TIMEOUT, "member 0")
    # What three crashes while it was executing leave in Redis: its hand-off mark and a count
    # of 3 (only a message that was executing when its worker died counts, redeliver.h); a
    # quorum queue would also say x-delivery-count 4. This receipt is past the limit.
    rds.set("celeryc-handed-" + ids[1], "0", ex=600)
    rds.set("celeryc-deliveries-" + ids[1], "3", ex=600)
    publish_member(amqp_conn, q, "demo.add", [2, 2], ids[1], gid, 1, dict(body),
                   **{"x-delivery-count": 4})
    with pytest.raises(ChordError) as ei:
        app.AsyncResult(body.id).get(timeout=TIMEOUT)
    assert str(ei.value).startswith("Dependency %s raised WorkerLostError('celeryc: message "
                                    "redelivered 4 times" % ids[1])
    assert app.AsyncResult(eb_id).get(timeout=TIMEOUT) == body.id
    wait_for(lambda: not any(rds.exists(k) for k in chord_keys(gid)), scaled(5),
             "chord keys deleted")
    assert w.proc.poll() is None


def test_expired_member_fails_the_chord(app, worker, amqp_conn, rds):
    """A member that expired before it ran is stored REVOKED by the worker, and, as Celery's
    mark_as_revoked does, returned as a chord part: the body fails with ChordError."""
    q = worker.queue
    gid = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(2)]
    body = sig(app, "demo.xsum", [], q, task_id=str(uuid.uuid4()))
    rds.set("celery-taskset-meta-%s.s" % gid, 2)
    publish_member(amqp_conn, q, "demo.add", [1, 1], ids[0], gid, 0, dict(body))
    publish_member(amqp_conn, q, "demo.add", [2, 2], ids[1], gid, 1, dict(body),
                   expires="2000-01-01T00:00:00+00:00")
    with pytest.raises(ChordError) as ei:
        app.AsyncResult(body.id).get(timeout=TIMEOUT)
    assert str(ei.value) == "Dependency %s raised TaskRevokedError('expired')" % ids[1]


def test_member_whose_child_dies_fails_the_chord(app, worker):
    """The pool child running a member dies: the worker stores WorkerLostError and returns
    the part, so the body fails with ChordError (Celery's on_failure -> mark_as_failure)."""
    q = worker.queue
    header = [sig(app, "demo.add", [1, 1], q), sig(app, "demo.crash", ["exit"], q)]
    res = chord(header)(sig(app, "demo.xsum", [], q))
    with pytest.raises(ChordError) as ei:
        app.AsyncResult(res.id).get(timeout=TIMEOUT)
    assert str(ei.value).startswith("Dependency %s raised WorkerLostError('Worker exited "
                                    "prematurely: exitcode 1" % res.parent.results[1].id)


def test_member_past_hard_time_limit_fails_the_chord(app, worker):
    """A member killed at its hard time limit is stored as TimeLimitExceeded by the master
    and returned as a chord part (Celery's on_timeout -> mark_as_failure): ChordError."""
    q = worker.queue
    header = [sig(app, "demo.add", [1, 1], q), sig(app, "demo.sleep", [60], q, time_limit=1)]
    res = chord(header)(sig(app, "demo.xsum", [], q))
    with pytest.raises(ChordError) as ei:
        app.AsyncResult(res.id).get(timeout=TIMEOUT)
    assert str(ei.value) == "Dependency %s raised TimeLimitExceeded(1)" % \
        res.parent.results[1].id


@c_only
def test_unordered_chord_list_mixed_fleet(app, worker_factory, amqp_conn, rds):
    """result_chord_ordered=False on every worker (C: --no-result-chord-ordered, Python: the
    transport option): members go to a list (RPUSH) that both read, in completion order."""
    wc = worker_factory(impl="c", extra=["--no-result-chord-ordered"])
    wp = worker_factory(impl="python", env={"PYW_RESULT_CHORD_ORDERED": "0"})
    gid = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(3)]
    body = sig(app, "t.integration.tasks.identity", [], wc.queue, task_id=str(uuid.uuid4()))
    rds.set("celery-taskset-meta-%s.s" % gid, 3)
    publish_member(amqp_conn, wc.queue, "demo.add", [1, 1], ids[0], gid, 0, dict(body))
    publish_member(amqp_conn, wp.queue, "demo.add", [2, 2], ids[1], gid, 1, dict(body))
    wait_for(lambda: all(app.AsyncResult(i).ready() for i in ids[:2]), TIMEOUT, "2 members")
    wait_for(lambda: rds.llen("celery-taskset-meta-%s.j" % gid) == 2, scaled(5), "2 parts")
    assert rds.type("celery-taskset-meta-%s.j" % gid) == b"list"
    publish_member(amqp_conn, wc.queue, "demo.add", [3, 3], ids[2], gid, 2, dict(body))
    assert sorted(app.AsyncResult(body.id).get(timeout=TIMEOUT)) == [2, 4, 6]


# ---- celery.chord_unlock and celery.accumulate ---------------------------------------------

def send_unlock(app, q, gid, header_ids, body, **kwargs):
    kw = {"interval": kwargs.pop("interval", 0.2), "max_retries": kwargs.pop("max_retries", None),
          "result": [[[i, None], None] for i in header_ids]}
    return app.send_task("celery.chord_unlock", args=[gid, dict(body)], kwargs=kw, queue=q,
                         countdown=0.1)


def test_chord_unlock_applies_body(app, worker):
    q = worker.queue
    header = [app.send_task("demo.add", args=[i, i], queue=q) for i in range(4)]
    body = sig(app, "demo.xsum", [], q, task_id=str(uuid.uuid4()))
    send_unlock(app, q, str(uuid.uuid4()), [h.id for h in header], body)
    assert app.AsyncResult(body.id).get(timeout=TIMEOUT) == 12


def test_chord_unlock_waits_then_fails_on_member(app, worker):
    q = worker.queue
    header = [app.send_task("demo.add", args=[1, 1], queue=q),
              app.send_task("demo.fail", args=["boom"], queue=q, countdown=1)]
    body = sig(app, "demo.xsum", [], q, task_id=str(uuid.uuid4()))
    send_unlock(app, q, str(uuid.uuid4()), [h.id for h in header], body)
    with pytest.raises(ChordError) as ei:
        app.AsyncResult(body.id).get(timeout=TIMEOUT)
    # Celery 5.2's unlock means f"Dependency {id} raised {exc!r}" but only finds the culprit
    # in its SUCCESS-only cache, so the text is repr(exc) alone.
    assert str(ei.value) == "ValueError('boom')"


@c_only
def test_chord_unlock_bounded_retries(app, worker):
    """A header task that never runs: Celery's unlock would retry forever; ours gives up
    after max_retries and fails the body with a ChordError saying so."""
    q = worker.queue
    never = str(uuid.uuid4())
    body = sig(app, "demo.xsum", [], q, task_id=str(uuid.uuid4()))
    gid = str(uuid.uuid4())
    send_unlock(app, q, gid, [never], body, interval=0.1, max_retries=3)
    with pytest.raises(ChordError) as ei:
        app.AsyncResult(body.id).get(timeout=TIMEOUT)
    assert str(ei.value) == "celery.chord_unlock: group %s not ready after 3 retries" % gid


def test_accumulate(app, worker):
    q = worker.queue
    assert app.send_task("celery.accumulate", args=[1, 2, 3], queue=q).get(
        timeout=TIMEOUT) == [1, 2, 3]
    assert app.send_task("celery.accumulate", args=[1, 2, 3], kwargs={"index": 1},
                         queue=q).get(timeout=TIMEOUT) == 2


# ---- A client whose backend has no native join (sends celery.chord_unlock) -----------------

from celery.backends.redis import RedisBackend  # noqa: E402


class UnlockRedisBackend(RedisBackend):
    """Stores results in Redis like RedisBackend, but joins chords the way backends without a
    native join do (database, ...): apply_chord sends celery.chord_unlock and the chord size
    is never written, so workers' native join (members still carry the chord) never fires."""

    def set_chord_size(self, group_id, chord_size):
        pass

    def apply_chord(self, header_result_args, body, **kwargs):
        self.ensure_chords_allowed()
        self.fallback_chord_unlock(self.app.GroupResult(*header_result_args), body, **kwargs)


@pytest.fixture
def unlock_app(capp):
    import os
    a = capp.make_app("capp_unlock")
    a.conf.result_backend = "test_chord:UnlockRedisBackend+" + os.environ[
        "CELERYC_TEST_REDIS_URL"]
    a.conf.result_chord_retry_interval = 0.2
    yield a
    a.close()


def test_chord_unlock_client_without_native_join(unlock_app, worker, rds):
    q = worker.queue
    app = unlock_app
    assert isinstance(app.backend, UnlockRedisBackend)
    header = [sig(app, "demo.add", [i, i], q) for i in range(5)]
    res = chord(header, sig(app, "demo.xsum", [], q)).apply_async(queue=q)
    assert res.get(timeout=TIMEOUT) == 20
    gid = res.parent.id
    assert not rds.exists("celery-taskset-meta-%s.s" % gid)
    # The body was applied by celery.chord_unlock (its parent), not by a header member.
    parent = json.loads(rds.get("celery-task-meta-" + res.id))["parent_id"]
    assert parent not in {r.id for r in res.parent.results}
