#!/usr/bin/python3
"""celeryc vs Python Celery, one run (driven by bench/run.sh; needs CELERYC_TEST_* env).

Phases, each on a fresh queue and an empty Redis db:
  ceiling     bench_ceiling drains N pre-filled messages: consume + batched multiple-acks only, QoS 8 global
  throughput  N demo.noop pre-filled with bench_publish, then the worker starts; the clock
              runs from the first result in Redis to the N-th (DBSIZE), so start-up and the
              publish phase are not measured. CPU = utime+stime of the worker and all its
              descendants (/proc) over the same window / tasks; RSS = peak of the sum.
  latency     L tasks published with apply_async at a steady rate; latency = time the
              result's PUBLISH arrives on a Redis pattern subscription - publish time.
Prints a table and writes bench/results/latest.json.
"""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import redis

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N = int(os.environ.get("BENCH_N", "20000"))
L = int(os.environ.get("BENCH_LATENCY_N", "2000"))
RATE = float(os.environ.get("BENCH_LATENCY_RATE", "200"))
CONC = int(os.environ.get("BENCH_CONCURRENCY", "2"))
BUILD = Path(os.environ.get("BENCH_BUILD", ROOT / "build-bench"))
AMQP = os.environ["CELERYC_TEST_AMQP_URL"]
AMQP_PORT = os.environ["CELERYC_TEST_AMQP_PORT"]
REDIS_URL = os.environ["CELERYC_TEST_REDIS_URL"]
TICK = os.sysconf("SC_CLK_TCK")
DEADLINE = float(os.environ.get("BENCH_DEADLINE_S", "240"))


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


def proc_tree(pid):
    """pid and all its descendants (from /proc/*/stat ppid)."""
    parents = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                st = Path("/proc/%s/stat" % d).read_text()
            except OSError:
                continue
            fields = st[st.rindex(")") + 2:].split()
            parents.setdefault(int(fields[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_us(pids):
    total = 0
    for p in pids:
        try:
            st = Path("/proc/%d/stat" % p).read_text()
        except OSError:
            continue
        f = st[st.rindex(")") + 2:].split()
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)
    return total * 1_000_000 // TICK


def rss_kb(pids):
    total = 0
    for p in pids:
        try:
            for line in Path("/proc/%d/status" % p).read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def worker_cmd(impl, queue):
    if impl == "celeryc":
        return [str(BUILD / "celeryc"), "worker", "-b", AMQP, "--result-backend", REDIS_URL,
                "-Q", queue, "-c", str(CONC), "-n", "bench-c-%s@localhost" % queue,
                "-l", "warning"], None
    return (["/usr/bin/python3", "-m", "celery", "-A", "pyworker_app", "worker", "--pool",
             "prefork", "-c", str(CONC), "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-Q", queue, "-n", "bench-py-%s@localhost" % queue,
             "-l", "warning"], str(ROOT / "tests" / "integration"))


class Worker:
    def __init__(self, impl, queue, logdir):
        cmd, cwd = worker_cmd(impl, queue)
        env = dict(os.environ, CELERY_BROKER_URL=AMQP, CELERY_RESULT_BACKEND=REDIS_URL,
                   PYTHONPATH=str(ROOT / "tests" / "integration"))
        self.log = open(Path(logdir) / ("%s-%s.log" % (impl, queue)), "wb")
        self.p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=self.log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(10)
        self.log.close()


def publish(queue, n, task="demo.noop"):
    out = subprocess.run([str(BUILD / "bench_publish"), "127.0.0.1", AMQP_PORT, queue, task,
                          str(n)], check=True, stdout=subprocess.PIPE, timeout=DEADLINE)
    log(out.stdout.decode().strip(), "->", queue)


def ceiling():
    q = "bench-ceiling-" + uuid.uuid4().hex[:6]
    publish(q, N)
    out = subprocess.run([str(BUILD / "bench_ceiling"), "127.0.0.1", AMQP_PORT, q, str(N),
                          str(CONC * 4)], check=True, stdout=subprocess.PIPE, timeout=DEADLINE)
    line = out.stdout.decode().strip()
    log("ceiling:", line)
    secs = float(line.split(" in ")[1].split()[0])
    return {"tasks_per_s": round(N / secs, 1), "seconds": secs}


def throughput(impl, r, logdir):
    q = "bench-%s-%s" % (impl, uuid.uuid4().hex[:6])
    r.flushdb()
    publish(q, N)
    w = Worker(impl, q, logdir)
    try:
        end = time.monotonic() + DEADLINE
        peak = 0
        first_t = first_cpu = first_n = None
        n = 0
        while time.monotonic() < end:
            pids = proc_tree(w.p.pid)
            peak = max(peak, rss_kb(pids))
            n = r.dbsize()
            if first_t is None and n > 0:
                first_t, first_cpu, first_n = time.monotonic(), cpu_us(pids), n
            if n >= N:
                break
            if w.p.poll() is not None:
                raise RuntimeError("%s worker exited rc=%s" % (impl, w.p.returncode))
            time.sleep(0.05)
        t_all = time.monotonic()
        cpu = cpu_us(proc_tree(w.p.pid))
        if n < N:
            raise RuntimeError("%s: only %d/%d results after %ss" % (impl, n, N, DEADLINE))
    finally:
        w.stop()
    done = N - first_n
    secs = t_all - first_t
    res = {"tasks_per_s": round(done / secs, 1) if secs > 0 else None,
           "seconds": round(secs, 3), "peak_rss_kb": peak,
           "cpu_us_per_task": round((cpu - first_cpu) / done, 1) if done else None}
    log(impl, "throughput:", res)
    return res


def latency(impl, r, logdir):
    sys.path.insert(0, str(ROOT / "tests" / "integration"))
    import capp
    q = "bench-lat-%s-%s" % (impl, uuid.uuid4().hex[:6])
    r.flushdb()
    w = Worker(impl, q, logdir)
    arrived = {}
    ps = r.pubsub()
    ps.psubscribe("celery-task-meta-*")
    stop = threading.Event()

    def listen():
        while not stop.is_set():
            m = ps.get_message(timeout=0.2)
            if m and m["type"] == "pmessage":
                arrived.setdefault(m["channel"].decode()[len("celery-task-meta-"):],
                                   time.time())
    th = threading.Thread(target=listen, daemon=True)
    th.start()
    try:
        # Warm up: wait until the worker answers.
        capp.app.send_task("demo.noop", queue=q).get(timeout=60)
        sent = {}
        t0 = time.monotonic()
        for i in range(L):
            due = t0 + i / RATE
            d = due - time.monotonic()
            if d > 0:
                time.sleep(d)
            tid = str(uuid.uuid4())
            sent[tid] = time.time()
            capp.app.send_task("demo.noop", queue=q, task_id=tid)
        end = time.monotonic() + 60
        while time.monotonic() < end and not all(t in arrived for t in sent):
            time.sleep(0.05)
    finally:
        stop.set()
        th.join(5)
        ps.close()
        w.stop()
    lat = sorted((arrived[t] - s) * 1000 for t, s in sent.items() if t in arrived)
    if len(lat) < L:
        raise RuntimeError("%s latency: %d/%d results" % (impl, len(lat), L))
    res = {"p50_ms": round(lat[len(lat) // 2], 2), "p99_ms": round(lat[int(len(lat) * 0.99)], 2),
           "max_ms": round(lat[-1], 2), "n": L, "rate_per_s": RATE}
    log(impl, "latency:", res)
    return res


def main():
    logdir = Path(os.environ.get("BENCH_LOGDIR", HERE / "results" / "logs"))
    logdir.mkdir(parents=True, exist_ok=True)
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=30)
    results = {"n": N, "concurrency": CONC, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "host_cpus": os.cpu_count()}
    results["ceiling"] = ceiling()
    for impl in ("celeryc", "python"):
        results[impl] = throughput(impl, r, logdir)
    for impl in ("celeryc", "python"):
        results[impl].update(latency(impl, r, logdir))
    c, p = results["celeryc"], results["python"]
    results["ratio_c_over_python"] = round(c["tasks_per_s"] / p["tasks_per_s"], 2)
    out = HERE / "results" / "latest.json"
    out.write_text(json.dumps(results, indent=2) + "\n")

    print()
    print("celeryc bench: %d x demo.noop, -c %d, RabbitMQ + Redis results (%d CPUs)"
          % (N, CONC, os.cpu_count()))
    print("%-22s %12s %12s" % ("", "celeryc", "python"))
    rows = [("tasks/s", "tasks_per_s", "%.0f"), ("p50 latency ms", "p50_ms", "%.2f"),
            ("p99 latency ms", "p99_ms", "%.2f"), ("peak RSS MiB", "peak_rss_kb", None),
            ("CPU us/task", "cpu_us_per_task", "%.1f")]
    for label, key, fmt in rows:
        if fmt is None:
            print("%-22s %12.1f %12.1f" % (label, c[key] / 1024, p[key] / 1024))
        else:
            print("%-22s %12s %12s" % (label, fmt % c[key], fmt % p[key]))
    print("%-22s %12.1fx" % ("ratio C/Python", results["ratio_c_over_python"]))
    print("%-22s %12.0f   (bare rabbitmq-c consume+ack, QoS %d)"
          % ("broker ceiling msg/s", results["ceiling"]["tasks_per_s"], CONC * 4))
    print("wrote", out)


if __name__ == "__main__":
    main()
