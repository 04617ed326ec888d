"""Canvas (issue #5): callbacks, errbacks, chains, groups and chords, run by a real Python
Celery 5.2 client against three fleets that must give the same results:

  c       two celeryc workers on one queue
  python  two Python Celery workers (pyworker_app.py) on one queue
  mixed   one celeryc + one Python worker on one queue; each also consumes a queue of its own
          (<q>.c / <q>.py) so a test can pin a step to an implementation

The expected values in the shape table are Celery's (checked with the python fleet): final
results, AsyncResult.parent / .children, root_id / parent_id seen by the conformance tasks
`ids` / `collect_ids`, errbacks called with the failed task's id, ChordError in the body.

Fleets are module-scoped (started once per fleet, stopped before the next starts). By
default (and in CI) the c and mixed fleets run; CELERYC_IT_IMPL=python runs the python fleet
alone (checks the file against real Celery, ~60 s); CELERYC_CANVAS_FLEETS=c,python,mixed
picks fleets explicitly.
"""
import json
import os
import re
import time
import uuid

import pytest
from celery import chord, group
from celery.exceptions import ChordError
from celery.result import AsyncResult, GroupResult

from conftest import (HERE, IMPL, PY, TIMEOUT, Worker, celeryc_bin, scaled, unique_queue,
                      wait_for)

WAIT = 20  # seconds for one result; wait_for() and _get() scale it (TIMEOUT is scaled already)

T = "t.integration.tasks."

_default_fleets = "python" if IMPL == "python" else "c,mixed"
FLEETS = [f.strip() for f in os.environ.get("CELERYC_CANVAS_FLEETS", _default_fleets).split(",")
          if f.strip()]

# Shapes that cannot pass against celeryc workers yet: {(shape, fleet): reason}. Filled in
# as the canvas branches land; xfail(strict=False) so a pass shows as XPASS.
XFAIL = {}


# ---- Fleets ----------------------------------------------------------------------------------

def _start(impl, queues, name, log_dir, concurrency=2, acks_late=False, extra_env=None):
    env = dict(os.environ)
    env.update({"CELERY_BROKER_URL": os.environ["CELERYC_TEST_AMQP_URL"],
                "CELERY_RESULT_BACKEND": os.environ["CELERYC_TEST_REDIS_URL"],
                "PYTHONUNBUFFERED": "1"})
    env.update(extra_env or {})
    log = os.path.join(log_dir, "%s.log" % name.split("@")[0])
    cwd = None
    if impl == "c":
        b = celeryc_bin()
        if not b:
            pytest.skip("celeryc binary not found (set CELERYC_BIN)")
        argv = [b, "worker", "-b", os.environ["CELERYC_TEST_AMQP_URL"],
                "--result-backend", os.environ["CELERYC_TEST_REDIS_URL"], "-Q", queues,
                "-n", name, "-c", str(concurrency), "-l", "info", "--result-extended",
                "--default-queue", queues.split(",")[0]]
        if acks_late:
            argv.append("--acks-late")
    else:
        argv = [PY, "-m", "celery", "-A", "pyworker_app", "worker", "--pool", "prefork",
                "-c", str(concurrency), "--without-gossip", "--without-mingle",
                "--without-heartbeat", "-Q", queues, "-n", name, "-l", "info"]
        env.update({"PYW_ACKS_LATE": "1" if acks_late else "0", "PYW_RESULT_EXTENDED": "1",
                    "PYW_DEFAULT_QUEUE": queues.split(",")[0], "PYTHONPATH": str(HERE)})
        cwd = str(HERE)
    return Worker(argv, env, log, queues, name, cwd=cwd)


class Fleet:
    def __init__(self, kind, workers, queue):
        self.kind = kind
        self.workers = workers
        self.queue = queue
        self.qc = queue + ".c"      # only the C worker (mixed fleet)
        self.qpy = queue + ".py"    # only the Python worker (mixed fleet)

    def logs(self):
        return "".join("\n---- log of %s\n%s\n" % (w.name, w.log()[-5000:])
                       for w in self.workers)


@pytest.fixture(scope="module", params=FLEETS)
def fleet(request, services, tmp_path_factory):
    kind = request.param
    q = unique_queue("canvas")
    log_dir = str(tmp_path_factory.mktemp("canvas-" + kind))
    plan = {"c": [("c", q), ("c", q)],
            "python": [("python", q), ("python", q)],
            "mixed": [("c", "%s,%s.c" % (q, q)), ("python", "%s,%s.py" % (q, q))]}[kind]
    workers = []
    try:
        for i, (impl, queues) in enumerate(plan):
            workers.append(_start(impl, queues, "%s%d-%s@localhost" % (impl, i, q), log_dir))
        for w in workers:
            w.wait_ready(timeout=60)
        yield Fleet(kind, workers, q)
    finally:
        for w in workers:
            w.stop()


@pytest.fixture
def cv(fleet, app, rds, rds7, request):
    """Per-test helper bound to the fleet; dumps the fleet's logs when the test fails."""
    h = Canvas(app, fleet, rds, rds7)
    yield h
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        import sys
        sys.stderr.write(fleet.logs())


class Canvas:
    def __init__(self, app, fleet, rds, rds7):
        self.app = app
        self.fleet = fleet
        self.rds = rds
        self.rds7 = rds7
        self.key = "canvas-" + uuid.uuid4().hex[:10]

    def s(self, name, *args, queue=None, **kwargs):
        return self.app.signature(name, args=args, kwargs=kwargs,
                                  queue=queue or self.fleet.queue)

    def si(self, name, *args, queue=None, **kwargs):
        return self.s(name, *args, queue=queue, **kwargs).set(immutable=True)

    def meta(self, task_id):
        raw = self.rds.get("celery-task-meta-" + task_id)
        return json.loads(raw) if raw else None

    def wait_meta(self, task_id, timeout=WAIT):
        return wait_for(lambda: self.meta(task_id), timeout, "result of %s" % task_id)

    def children_ids(self, task_id):
        """Ids in the stored `children` of a result, nested groups as lists."""
        return [_ids_of(c) for c in AsyncResult(task_id, app=self.app).children or []]

    def counter(self, key):
        v = self.rds7.get(key)
        return int(v) if v is not None else 0


def _ids_of(r):
    if isinstance(r, GroupResult):
        return [_ids_of(c) for c in r.results]
    return r.id


def _get(res, timeout=WAIT):
    return res.get(timeout=scaled(timeout), propagate=True, disable_sync_subtasks=False)


# ---- The shape table -------------------------------------------------------------------------
# Each shape builds its workflow with signatures routed to the fleet's queue, applies it, and
# asserts what Celery does (values checked against the python fleet).

def shape_chain3(cv):
    res = (cv.s("demo.add", 2, 2) | cv.s("demo.mul", 4) | cv.s("demo.add", 1)).apply_async()
    assert _get(res) == 17
    p1 = res.parent
    p0 = p1.parent
    assert p0.parent is None
    assert (_get(p0), _get(p1)) == (4, 16)
    # children recorded in the parent's result meta: each step's next step.
    assert cv.children_ids(p0.id) == [p1.id]
    assert cv.children_ids(p1.id) == [res.id]
    assert cv.children_ids(res.id) == []


def shape_chain_ids(cv):
    """root_id / parent_id along a chain, from inside the tasks (conformance ids/collect_ids)."""
    res = (cv.si(T + "ids", 1) | cv.s(T + "collect_ids", 2) | cv.s(T + "collect_ids", 3)
           ).apply_async()
    out = _get(res)
    s2 = res.parent
    s1 = s2.parent
    root = s1.id
    assert out == [[[root, None, 1], [root, s1.id, 2]], [root, s2.id, 3]]


def shape_chain_group_middle(cv):
    """add | group(add, add) | xsum: the group followed by a task is a chord (Celery upgrades
    it), fired by a worker."""
    res = (cv.s("demo.add", 1, 1)
           | group(cv.s("demo.add", 1), cv.s("demo.add", 2), cv.s("demo.mul", 10))
           | cv.s("demo.xsum")).apply_async()
    assert _get(res) == 3 + 4 + 20
    first = res.parent
    while first.parent is not None:
        first = first.parent
    assert _get(first) == 2
    kids = cv.children_ids(first.id)
    assert len(kids) == 1 and isinstance(kids[0], list) and len(kids[0]) == 3, kids
    assert [_get(AsyncResult(i, app=cv.app)) for i in kids[0]] == [3, 4, 20]


def shape_chain_ending_group_ids(cv):
    """ids | group(ids, ids): group members get the chain's root and the step before as
    parent; the chain's result is the GroupResult."""
    res = (cv.si(T + "ids", 1) | group(cv.si(T + "ids", 2), cv.si(T + "ids", 3))).apply_async()
    assert isinstance(res, GroupResult)
    out = _get(res)
    first = res.parent
    root = first.id
    assert _get(first) == [root, None, 1]
    assert out == [[root, root, 2], [root, root, 3]]
    kids = cv.children_ids(first.id)
    assert kids == [[r.id for r in res.results]], kids


def shape_chord_of_chains(cv):
    res = chord([cv.s("demo.add", 1, 1) | cv.s("demo.mul", 2),
                 cv.s("demo.add", 2, 2) | cv.s("demo.mul", 3),
                 cv.s("demo.add", 3, 3) | cv.s("demo.mul", 4) | cv.s("demo.add", 1)],
                cv.s("demo.xsum")).apply_async()
    assert _get(res) == 4 + 12 + 25


def shape_chord_order(cv):
    """The body gets the header results ordered by group_index, not by completion."""
    res = chord([cv.s("demo.sleep", 0.6), cv.s("demo.sleep", 0.01), cv.s("demo.sleep", 0.3),
                 cv.s("demo.sleep", 0)], cv.s(T + "identity")).apply_async()
    assert _get(res) == [0.6, 0.01, 0.3, 0]


def shape_chord_ids(cv):
    """Header members sent by the client are their own roots; the body is sent by the worker
    that completed the last member, from inside it: root and parent = that member's ids."""
    res = chord([cv.si(T + "ids", 1), cv.si(T + "ids", 2)],
                cv.s(T + "collect_ids", 3)).apply_async()
    header, (root, parent, i) = _get(res)
    assert [m[2] for m in header] == [1, 2]
    member_ids = [r.id for r in res.parent.results]
    assert [(m[0], m[1]) for m in header] == [(mid, None) for mid in member_ids]
    assert i == 3
    assert root == parent and parent in member_ids, (root, parent, member_ids)


def shape_chain_ending_chord(cv):
    res = (cv.s("demo.add", 1, 1) | cv.s("demo.mul", 3)
           | chord([cv.s("demo.add", 1), cv.s("demo.mul", 2)], cv.s("demo.xsum"))).apply_async()
    assert _get(res) == 7 + 12


def shape_chain_ending_chord_ids(cv):
    res = (cv.si(T + "ids", 1)
           | chord([cv.si(T + "ids", 2), cv.si(T + "ids", 3)], cv.s(T + "collect_ids", 4))
           ).apply_async()
    out = _get(res)
    first = res
    while first.parent is not None:
        first = first.parent
    root = first.id
    assert _get(first) == [root, None, 1]
    header, (broot, bparent, i) = out
    assert header == [[root, root, 2], [root, root, 3]]
    assert (broot, i) == (root, 4)
    assert bparent is not None


def shape_nested_groups(cv):
    """group(group(a, b), group(c, chain)) from the client, and a nested group as a chain
    step (published by a worker)."""
    g = group(group(cv.s("demo.add", 1, 1), cv.s("demo.add", 2, 2)),
              group(cv.s("demo.add", 3, 3), cv.s("demo.add", 4, 4) | cv.s("demo.mul", 2)))
    assert _get(g.apply_async()) == [2, 4, 6, 16]
    res = (cv.s("demo.add", 1, 1)
           | group(group(cv.s("demo.add", 1), cv.s("demo.add", 2)), cv.s("demo.mul", 5))
           ).apply_async()
    # Celery 5.2 flattens a nested group when it freezes the chain (_freeze_unroll, which
    # reverses the inner group: extendleft): the client's GroupResult lists 4 before 3.
    assert _get(res) == [4, 3, 10]


def shape_chord_nested_group_header(cv):
    """A chord sent by a worker whose header holds a group: flattened as above, the body
    gets the member results in that (group_index) order."""
    res = (cv.s("demo.add", 1, 1)
           | chord([group(cv.s("demo.add", 1), cv.s("demo.add", 2)), cv.s("demo.mul", 5)],
                   cv.s(T + "identity"))).apply_async()
    assert _get(res) == [4, 3, 10]


def shape_links_each_step(cv):
    """link= on each step of a chain: each callback gets that step's result prepended;
    link_error= on each step: only the failing step's errbacks run, with its id."""
    k = cv.key
    echo = cv.s(T + "redis_echo", redis_key=k)
    s1 = cv.s("demo.add", 1, 1)
    s1.link(echo)
    s2 = cv.s("demo.mul", 10)
    s2.link(echo)
    s3 = cv.s("demo.add", 5)
    s3.link(echo)
    res = (s1 | s2 | s3).apply_async()
    assert _get(res) == 25
    wait_for(lambda: cv.rds7.llen(k) >= 3, WAIT, "3 callbacks")
    time.sleep(0.3)
    assert sorted(int(x) for x in cv.rds7.lrange(k, 0, -1)) == [2, 20, 25]

    ok = cv.s("demo.add", 1, 1)
    ok.link_error(cv.s(T + "errback_old_style"))
    bad = cv.s(T + "fail")
    bad.link_error(cv.s(T + "errback_old_style"))
    bad.link_error(cv.s(T + "errback_new_style"))
    never = cv.s("demo.add", 3)
    never.link_error(cv.s(T + "errback_old_style"))
    res = (ok | bad | never).apply_async()
    with pytest.raises(Exception) as ei:
        _get(res)
    assert type(ei.value).__name__ == "ExpectedException", repr(ei.value)
    failed = res.parent
    first = failed.parent
    assert failed.state == "FAILURE"
    wait_for(lambda: cv.counter(failed.id) >= 2, WAIT, "old + new style errbacks")
    time.sleep(0.3)
    assert cv.counter(failed.id) == 2   # errback_old_style + errback_new_style, once each
    assert cv.counter(first.id) == 0 and cv.counter(res.id) == 0


def shape_chain_failure_marks_rest(cv):
    """Celery 5.2 stores a failed step's error as the result of every later step of its
    chain too (backends/base.py mark_as_failure walks request.chain), so get() on the chain
    raises instead of waiting forever, and a later step that is a chord member is counted."""
    res = (cv.s("demo.add", 1, 1) | cv.s(T + "fail") | cv.s("demo.add", 3)
           | cv.s("demo.mul", 2)).apply_async()
    m = cv.wait_meta(res.id, timeout=10)
    assert m["status"] == "FAILURE"
    assert m["result"]["exc_type"] == "ExpectedException"
    assert cv.meta(res.parent.id)["status"] == "FAILURE"
    failed = res.parent.parent
    assert cv.meta(failed.id)["status"] == "FAILURE"
    assert cv.meta(failed.parent.id)["status"] == "SUCCESS"
    # the same inside a chord: a chain member failing at its first step fails the chord
    res = chord([cv.s("demo.add", 1, 1), cv.s(T + "fail") | cv.s("demo.add", 3)],
                cv.s("demo.xsum")).apply_async()
    m = cv.wait_meta(res.id)
    assert m["status"] == "FAILURE" and m["result"]["exc_type"] == "ChordError", m


def shape_chain_link_error(cv):
    """chain.on_error(eb): Celery adds the errback to every step; it runs once, for the
    step that failed, with that step's id."""
    c = cv.s("demo.add", 1, 1) | cv.s(T + "fail") | cv.s("demo.add", 3)
    c.on_error(cv.s(T + "errback_old_style"))
    res = c.apply_async()
    with pytest.raises(Exception):
        _get(res)
    failed = res.parent
    wait_for(lambda: cv.counter(failed.id) >= 1, WAIT, "errback")
    time.sleep(0.3)
    assert cv.counter(failed.id) == 1
    assert cv.counter(failed.parent.id) == 0


def shape_immutable(cv):
    res = (cv.s("demo.add", 1, 1) | cv.si("demo.add", 10, 10) | cv.s("demo.mul", 2)
           | cv.si(T + "identity", "done")).apply_async()
    assert _get(res) == "done"
    assert _get(res.parent) == 40
    assert _get(res.parent.parent) == 20
    cb = cv.si(T + "redis_echo", "immutable", redis_key=cv.key)
    s = cv.s("demo.add", 2, 2)
    s.link(cb)
    assert _get(s.apply_async()) == 4
    wait_for(lambda: cv.rds7.llen(cv.key) >= 1, WAIT, "immutable callback")
    assert cv.rds7.lrange(cv.key, 0, -1) == [b"immutable"]


def shape_chord_error(cv):
    """A failing member: the body is not run, its result is ChordError, its errback runs."""
    body = cv.s("demo.xsum")
    body.link_error(cv.s(T + "errback_old_style"))
    res = chord([cv.s("demo.add", 1, 1), cv.s(T + "fail"), cv.s("demo.add", 2, 2)],
                body).apply_async()
    # get() on `res` re-raises the member's error first (it walks the parents); the body's
    # own result is the ChordError.
    with pytest.raises(Exception) as ei:
        _get(res)
    assert type(ei.value).__name__ == "ExpectedException", repr(ei.value)
    m = cv.wait_meta(res.id)
    assert m["status"] == "FAILURE"
    exc = cv.app.backend.exception_to_python(m["result"])
    assert isinstance(exc, ChordError), repr(exc)
    assert "ExpectedException" in str(exc), str(exc)
    wait_for(lambda: cv.counter(res.id) >= 1, WAIT, "body errback")
    time.sleep(0.3)
    assert cv.counter(res.id) == 1


def shape_group_save_restore(cv):
    g = group(cv.s("demo.add", i, i) for i in range(5)).apply_async()
    g.save()
    raw = cv.rds.get("celery-taskset-meta-" + g.id)
    assert raw is not None
    r = GroupResult.restore(g.id, app=cv.app)
    assert [x.id for x in r.results] == [x.id for x in g.results]
    # (get() on a restored GroupResult waits on the pub/sub consumer, which already holds
    # these ids for `g`: poll the stored results instead, as a second client would.)
    wait_for(r.ready, WAIT, "restored group ready")
    assert [x.result for x in r.results] == [0, 2, 4, 6, 8]
    assert r.completed_count() == 5 and r.successful()
    r.delete()
    assert cv.rds.get("celery-taskset-meta-" + g.id) is None


def shape_task_sends_canvas(cv):
    """Conformance tasks that build and send a chain / chord from inside the task (to the
    task_default_queue, the fleet's queue here): what they sent is their child, runs, and has
    the sending task as parent."""
    res = cv.s(T + "chain_add", 3, 4).apply_async()
    assert _get(res) is None
    # Celery records the chain's first task as the child (its apply_async adds the trail)
    kids = cv.children_ids(res.id)
    assert len(kids) == 1, kids
    assert _get(AsyncResult(kids[0], app=cv.app)) == 6
    nxt = wait_for(lambda: cv.children_ids(kids[0]), WAIT, "second step")
    assert _get(AsyncResult(nxt[0], app=cv.app)) == 10
    res = cv.s(T + "build_chain_inside_task").apply_async()
    out = _get(res)
    # an AsyncResult returned by a task is stored as its tuple: [[id, parent tuple], None]
    assert isinstance(out, list) and isinstance(out[0], list), out
    kids = cv.children_ids(res.id)
    assert len(kids) == 1, kids
    # (add(1, 1) | add(2) | group(add(3), add(4)) | add(5)): the steps run (the last one
    # gets [7, 8] + 5 and fails with TypeError in Python and C alike)
    assert _get(AsyncResult(kids[0], app=cv.app)) == 2
    nxt = wait_for(lambda: cv.children_ids(kids[0]), WAIT, "second step")
    assert _get(AsyncResult(nxt[0], app=cv.app)) == 4


def shape_update_state(cv):
    """A task reporting progress with a custom state: the client reads AsyncResult.state
    "PROGRESS" and .info == the meta while it runs, then SUCCESS."""
    res = cv.s("demo.progress", 6, 0.4).apply_async()
    seen = []

    def progressing():
        r = AsyncResult(res.id, app=cv.app)
        if r.state == "PROGRESS":
            seen.append(r.info)
            return r.info.get("current", 0) >= 1
        return False
    wait_for(progressing, WAIT, "PROGRESS state", interval=0.05)
    assert all(i["total"] == 6 and 0 <= i["current"] < 6 for i in seen), seen
    assert _get(res) == {"current": 6, "total": 6}
    assert res.state == "SUCCESS"


SHAPES = {f.__name__[len("shape_"):]: f for f in [
    shape_chain3, shape_chain_ids, shape_chain_group_middle, shape_chain_ending_group_ids,
    shape_chord_of_chains, shape_chord_order, shape_chord_ids, shape_chain_ending_chord,
    shape_chain_ending_chord_ids, shape_nested_groups, shape_chord_nested_group_header,
    shape_links_each_step, shape_chain_failure_marks_rest, shape_chain_link_error, shape_immutable, shape_chord_error,
    shape_group_save_restore, shape_task_sends_canvas, shape_update_state]}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_shape(cv, shape, request):
    reason = XFAIL.get((shape, cv.fleet.kind)) or XFAIL.get((shape, "*"))
    if reason and cv.fleet.kind != "python":
        request.applymarker(pytest.mark.xfail(reason=reason, strict=False))
    SHAPES[shape](cv)


# ---- Mixed fleet: pinned steps cross implementations -----------------------------------------

def _worker_of(cv, task_id):
    return cv.wait_meta(task_id)["worker"]


def test_mixed_pinned_chain_and_chord(cv):
    """Python step -> C step -> Python step (per-queue routing), and a chord whose members and
    body alternate between the two implementations: `worker` in each result (result_extended)
    proves where each ran."""
    f = cv.fleet
    if f.kind != "mixed":
        pytest.skip("mixed fleet only")
    cw, pw = f.workers[0].name, f.workers[1].name
    res = (cv.si(T + "ids", 1, queue=f.qpy) | cv.s(T + "collect_ids", 2, queue=f.qc)
           | cv.s(T + "collect_ids", 3, queue=f.qpy)).apply_async()
    out = _get(res)
    s2 = res.parent
    s1 = s2.parent
    root = s1.id
    assert out == [[[root, None, 1], [root, s1.id, 2]], [root, s2.id, 3]]
    assert [_worker_of(cv, r.id) for r in (s1, s2, res)] == [pw, cw, pw]
    assert cv.children_ids(s1.id) == [s2.id] and cv.children_ids(s2.id) == [res.id]

    members = [cv.s("demo.add", i, i, queue=(f.qc if i % 2 else f.qpy)) for i in range(6)]
    for body_q, body_w in ((f.qc, cw), (f.qpy, pw)):
        res = chord(members, cv.s(T + "identity", queue=body_q)).apply_async()
        assert _get(res) == [0, 2, 4, 6, 8, 10]
        assert [_worker_of(cv, r.id) for r in res.parent.results] == [pw, cw] * 3
        assert _worker_of(cv, res.id) == body_w


# ---- Big chords: exactly once ----------------------------------------------------------------

def _chord_keys_gone(cv, gid):
    return not any(cv.rds.exists("celery-taskset-meta-%s%s" % (gid, sfx))
                   for sfx in (".j", ".t", ".s"))


def test_chord_1000_exactly_once(cv):
    """1,000 members across the fleet: the body runs once (its link INCRs a counter), gets the
    results in header order, and the join keys are deleted."""
    n = 1000
    body = cv.s(T + "identity")
    body.link(cv.si("it.count_sleep", cv.key))
    res = chord([cv.s("demo.add", i, i) for i in range(n)], body).apply_async()
    out = _get(res, timeout=120)
    assert out == [2 * i for i in range(n)]
    wait_for(lambda: cv.counter(cv.key) >= 1, WAIT, "body link")
    gid = res.parent.id
    wait_for(lambda: _chord_keys_gone(cv, gid), WAIT, "chord join keys deleted")
    time.sleep(1.0)
    assert cv.counter(cv.key) == 1


# ---- A member killed mid-run (kill -9), acks_late, a second worker ----------------------------

KILL_PAIRS = {"c": ("c", "c"), "python": ("python", "python"), "mixed": ("c", "python")}


@pytest.mark.parametrize("pair", [KILL_PAIRS[f] for f in FLEETS],
                         ids=["%s-%s" % KILL_PAIRS[f] for f in FLEETS])
def test_chord_member_killed_redelivered(pair, app, rds, rds7, worker_factory):
    """Worker A (-c 1, acks_late) is SIGKILLed (its whole process group) while it runs a chord
    member; the message comes back, worker B runs it again, the chord completes and the body
    runs exactly once."""
    impl_a, impl_b = pair
    q = unique_queue("ckill")
    a = worker_factory(queue=q, concurrency=1, acks_late=True, prefetch=1, impl=impl_a)
    b = worker_factory(queue=q, concurrency=1, acks_late=True, prefetch=1, impl=impl_b)
    key = "ckill-" + uuid.uuid4().hex[:10]
    n = 6
    members = [app.signature("it.count_sleep", args=("%s:%d" % (key, i), 0.6), queue=q)
               for i in range(n)]
    body = app.signature(T + "identity", queue=q)
    body.link(app.signature("it.count_sleep", args=(key + ":body",), queue=q, immutable=True))
    res = chord(members, body).apply_async()
    ids = [r.id for r in res.parent.results]
    def running_on_a():
        for m in re.finditer(r"it\.count_sleep\[([0-9a-f-]+)\] received", a.log()):
            if m.group(1) in ids:
                i = ids.index(m.group(1))
                if rds7.get("%s:%d" % (key, i)) is not None and \
                        rds.exists("celery-task-meta-" + m.group(1)) == 0:
                    return i + 1
        return None
    killed = wait_for(running_on_a, 30, "a member running on worker A") - 1
    a.kill()
    out = _get(res, timeout=60)
    assert len(out) == n
    assert out[killed] == 2, (killed, out)          # ran twice: killed, then redelivered
    assert sorted(out) == [1] * (n - 1) + [2], out
    wait_for(lambda: rds7.get(key + ":body") is not None, WAIT, "body link")
    time.sleep(1.0)
    assert int(rds7.get(key + ":body")) == 1
    assert b.proc.poll() is None


# ---- A member lost for good fails the chord (celeryc: --max-redeliveries) --------------------

@pytest.mark.skipif(IMPL != "c" or "c" not in FLEETS, reason="celeryc-specific behaviour")
def test_chord_member_dead_lettered_fails_chord(app, rds, rds7, worker_factory):
    """A member that takes its worker down every time (SIGKILL while it runs, acks_late) is
    dead-lettered past --max-redeliveries 1: the chord fails (ChordError in the body's result,
    the body's errback runs) instead of staying pending forever. Celery has no such bound."""
    q = unique_queue("cdead")
    args = dict(acks_late=True, concurrency=1, prefetch=1, extra=["--max-redeliveries", "1"])
    body = app.signature("demo.xsum", queue=q)
    body.link_error(app.signature(T + "errback_old_style", queue=q))
    res = chord([app.signature("demo.add", args=(1, 1), queue=q),
                 app.signature("demo.sleep", args=(60,), queue=q, immutable=True),
                 app.signature("demo.add", args=(2, 2), queue=q)], body).apply_async()
    lost = res.parent.results[1].id
    for _ in range(2):
        w = worker_factory(queue=q, **args)
        w.wait_log(r"demo\.sleep\[%s\] received" % lost, 20)
        time.sleep(0.3)
        w.kill()
    w = worker_factory(queue=q, **args)
    w.wait_log(r"Task demo\.sleep\[%s\] dead-lettered" % lost, 20)
    meta = wait_for(lambda: json.loads(rds.get("celery-task-meta-" + res.id) or "null"),
                    WAIT, "chord body result")
    assert meta["status"] == "FAILURE", meta
    exc = app.backend.exception_to_python(meta["result"])
    assert isinstance(exc, ChordError), repr(exc)
    assert lost in str(exc), str(exc)
    wait_for(lambda: rds7.get(res.id) is not None, WAIT, "body errback")
    assert [r.get(timeout=TIMEOUT) for r in (res.parent.results[0], res.parent.results[2])] \
        == [2, 4]
