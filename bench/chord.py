#!/usr/bin/python3
"""Chord benchmark (issue #5): chord of N no-op members (demo.noop, 10,000 by default) whose
body is t.integration.tasks.identity (it gets the N results, in order), C fleet vs Python
fleet in one run. Driven by `bench/run.sh --chord` (which builds, starts the services and
exports CELERYC_TEST_*); see bench/README.md.

Fleets: WORKERS workers x -c CONC on one queue (2 x 1 by default: the chord's join crosses
workers), celeryc prefork vs Celery 5.2.6 prefork (tests/integration/pyworker_app.py), acks
early. A Python Celery client (tests/integration/capp.py) sends the chord.

Per fleet and round, two figures:
  prefilled  the chord is applied while no worker runs (its N member messages wait in the
             queue), then the fleet starts; clock from the first member result in Redis to the
             body's result: the workers' time to run N members, join them and fire the body
  live       the fleet is up (one noop run through it first); clock from just before
             chord.apply_async() to the body's result: what a client sees (includes the
             Python client publishing N messages, the same for both fleets)
CPU us/member = utime+stime of the fleet's processes (+ reaped children) over the window / N
(prefilled run). Ceiling: bench_ceiling consuming N noop messages (bare rabbitmq-c, batched
acks, no task, no result, no join): the time no worker can beat on this machine.
Writes bench/results/chord-latest.json.
"""
import argparse
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import bench  # noqa: E402  (helpers: Worker, cpu_us, proc_tree, ceiling_run, machine, ...)
from bench import (LIVE, REDIS_URL, cpu_us, foreign_pct, log, proc_tree,  # noqa: E402
                   services_trees, svc_cpu)

BODY = "t.integration.tasks.identity"


def fleet_modes(impl, n):
    tag = "c" if impl == "celeryc" else "py"
    return [("chord-%s-%d" % (tag, i + 1), impl, "prefork", False) for i in range(n)]


def body_result(r, body_id):
    raw = r.get("celery-task-meta-" + body_id)
    return json.loads(raw) if raw else None


def apply_chord(app, q, n):
    from celery import chord
    members = [app.signature("demo.noop", queue=q, immutable=True) for _ in range(n)]
    return chord(members, app.signature(BODY, queue=q)).apply_async()


def fleet_cpu(workers):
    return cpu_us([p for w in workers for p in proc_tree(w.p.pid)])


def wait_body(r, res, n, workers, deadline):
    """Poll the body's result every 10 ms; returns (meta or None, time it appeared)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        meta = body_result(r, res.id)
        if meta is not None:
            t = time.monotonic()
            if meta.get("status") != "SUCCESS" or len(meta.get("result") or []) != n:
                raise RuntimeError("bad chord body result: %s" % str(meta)[:300])
            return meta, t
        for w in workers:
            w.check_alive()
        time.sleep(0.01)
    return None, None


def run_fleet(impl, app, r, opt, logdir, live):
    q = "bench-chord-%s-%s" % ("c" if impl == "celeryc" else "py", uuid.uuid4().hex[:6])
    r.flushdb()
    n = opt.members
    workers = []
    out = {"impl": impl, "members": n, "workers": opt.workers, "conc": opt.conc,
           "live": live}
    try:
        if live:
            workers = [bench.Worker(m, q, logdir, opt.conc) for m in fleet_modes(impl, opt.workers)]
            warm = app.signature("demo.noop", queue=q).apply_async()
            warm.get(timeout=120)
            r.flushdb()
            trees = services_trees()
            s0 = svc_cpu(trees)
            c0 = fleet_cpu(workers)
            t0 = time.monotonic()
            res = apply_chord(app, q, n)
            out["publish_s"] = round(time.monotonic() - t0, 3)
        else:
            t_pub = time.monotonic()
            res = apply_chord(app, q, n)
            out["publish_s"] = round(time.monotonic() - t_pub, 3)
            base = r.dbsize()
            workers = [bench.Worker(m, q, logdir, opt.conc) for m in fleet_modes(impl, opt.workers)]
            end = time.monotonic() + opt.deadline
            while r.dbsize() <= base:
                if time.monotonic() > end:
                    raise RuntimeError("%s: no member result in %.0f s" % (impl, opt.deadline))
                for w in workers:
                    w.check_alive()
                time.sleep(0.01)
            t0 = time.monotonic()
            trees = services_trees()
            s0 = svc_cpu(trees)
            c0 = fleet_cpu(workers)
        meta, t1 = wait_body(r, res, n, workers, opt.deadline)
        if meta is None:
            out["error"] = "no body result within %.0f s" % opt.deadline
            log("%s (%s): %s" % (impl, "live" if live else "prefilled", out["error"]))
            return out
        c1 = fleet_cpu(workers)
        s1 = svc_cpu(trees)
        out["broker_cpu_us_per_member"] = round((s1["rabbitmq"] - s0["rabbitmq"]) / n, 1)
        out["redis_cpu_us_per_member"] = round((s1["redis"] - s0["redis"]) / n, 1)
        out["foreign_cpu_pct"] = foreign_pct(s0, s1, c1 - c0, t1 - t0)
        out["seconds"] = round(t1 - t0, 3)
        out["members_per_s"] = round(n / (t1 - t0), 1)
        out["cpu_us_per_member"] = round((c1 - c0) / n, 1)
        # exactly once: the body's result was stored once and the join keys are gone
        gid = res.parent.id
        out["join_keys_left"] = sum(r.exists("celery-taskset-meta-%s%s" % (gid, s))
                                    for s in (".j", ".t", ".s"))
        log("%s (%s): %s" % (impl, "live" if live else "prefilled", out))
        return out
    finally:
        for w in workers:
            w.stop()


def med(runs, key):
    vals = [x[key] for x in runs if key in x]
    return round(statistics.median(vals), 3) if vals else None


def main():
    ap = argparse.ArgumentParser(description="chord of N no-op members: C vs Python fleet")
    ap.add_argument("--chord", action="store_true", help="(run.sh's switch to this script)")
    ap.add_argument("--quick", action="store_true", help="2000 members, 1 round")
    ap.add_argument("--members", type=int, help="chord header size (10000; quick 2000)")
    ap.add_argument("--rounds", type=int, help="rounds, each C then Python or the reverse (1)")
    ap.add_argument("--workers", type=int, default=2, help="workers per fleet (2)")
    ap.add_argument("--conc", type=int, default=1, help="-c of each worker (1)")
    ap.add_argument("--deadline", type=float, default=300, help="seconds per run at most")
    ap.add_argument("--out", default=str(HERE / "results" / "chord-latest.json"))
    opt = ap.parse_args()
    opt.members = opt.members or (2000 if opt.quick else 10000)
    opt.rounds = opt.rounds or 1
    logdir = Path(os.environ.get("BENCH_LOGDIR", HERE / "results" / "logs"))
    logdir.mkdir(parents=True, exist_ok=True)
    import capp
    app = capp.make_app("bench_chord")
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=30)
    t_start = time.monotonic()
    res = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": bench.machine(),
           "command": os.environ.get("BENCH_COMMAND", " ".join(sys.argv)),
           "options": {k: v for k, v in vars(opt).items() if k != "out"}}
    runs = {"celeryc": [], "python": []}
    live = {"celeryc": [], "python": []}
    ceil = []
    try:
        for rnd in range(opt.rounds):
            copt = argparse.Namespace(n=opt.members, task="demo.noop", args="[]",
                                      conc=opt.workers * opt.conc)
            ceil.append(bench.ceiling_run(copt))
            order = ["celeryc", "python"] if rnd % 2 == 0 else ["python", "celeryc"]
            for impl in order:
                runs[impl].append(run_fleet(impl, app, r, opt, logdir, live=False))
                live[impl].append(run_fleet(impl, app, r, opt, logdir, live=True))
    finally:
        for w in list(LIVE):
            w.stop()
    ceil_s = opt.members / statistics.median(c["tasks_per_s"] for c in ceil)
    res["ceiling"] = {"seconds": round(ceil_s, 3), "runs": ceil}
    res["fleets"] = {}
    for impl in ("celeryc", "python"):
        res["fleets"][impl] = {
            "seconds": med(runs[impl], "seconds"),
            "members_per_s": med(runs[impl], "members_per_s"),
            "cpu_us_per_member": med(runs[impl], "cpu_us_per_member"),
            "redis_cpu_us_per_member": med(runs[impl], "redis_cpu_us_per_member"),
            "broker_cpu_us_per_member": med(runs[impl], "broker_cpu_us_per_member"),
            "foreign_cpu_pct": med(runs[impl], "foreign_cpu_pct"),
            "live_seconds": med(live[impl], "seconds"),
            "live_publish_s": med(live[impl], "publish_s"),
            "errors": [x["error"] for x in runs[impl] + live[impl] if "error" in x],
            "runs": runs[impl], "live_runs": live[impl]}
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out = Path(opt.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print_table(res, opt)
    print("bench chord: %.0f s; wrote %s" % (res["elapsed_s"], out))


def _x(a, b):
    return "%.1fx" % (a / b) if a and b else "-"


def print_table(res, opt):
    m = res["machine"]
    print("celeryc chord bench %s: chord of %d x demo.noop -> %s, %d workers x -c %d per "
          "fleet, Redis results; %d round(s)" % (res["started"][:10], opt.members, BODY,
                                                 opt.workers, opt.conc, opt.rounds))
    print("machine: %s CPUs, %s" % (m.get("nproc"), m.get("cpu_model")))
    print("%-8s %12s %10s %6s %13s %6s %8s %8s %7s %6s" % (
        "fleet", "prefilled s", "members/s", "vs py", "CPU us/member", "vs py", "live s",
        "of ceil", "redis/m", "other%"))
    py = res["fleets"]["python"]
    for impl in ("celeryc", "python"):
        f = res["fleets"][impl]
        print("%-8s %12s %10s %6s %13s %6s %8s %8s %7s %6s" % (
            impl, f["seconds"] or "FAILED", f["members_per_s"] or "-",
            _x(py["seconds"], f["seconds"]), f["cpu_us_per_member"] or "-",
            _x(py["cpu_us_per_member"], f["cpu_us_per_member"]), f["live_seconds"] or "-",
            "%.0f%%" % (100 * res["ceiling"]["seconds"] / f["seconds"]) if f["seconds"] else "-",
            f["redis_cpu_us_per_member"] or "-", f["foreign_cpu_pct"] if f["seconds"] else "-"))
        for e in f["errors"]:
            print("  %s: %s" % (impl, e))
    print("ceiling   %.3f s (bare consumer, %d messages, no task/result/join)"
          % (res["ceiling"]["seconds"], opt.members))
    print("prefilled: first member result -> body result, members queued before the fleet "
          "starts;\n  live: apply_async() -> body result with the fleet up (includes the "
          "Python client\n  publishing the members: %s s C, %s s Python); of ceil: ceiling "
          "time / prefilled time;\n  redis/m: Redis CPU us per member; other%%: CPU of processes outside the bench "
          "(share of all CPUs)" % (res["fleets"]["celeryc"]["live_publish_s"],
                                     py["live_publish_s"]))


if __name__ == "__main__":
    main()
