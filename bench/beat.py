#!/usr/bin/python3
"""Beat benchmark (issue #6): a beat with 100,000 entries, celeryc beat vs Python `celery beat`
(5.2.6, default PersistentScheduler) vs a bare publisher (the ceiling), one after the other in
one run, same broker. Driven by `bench/run.sh --beat` (which builds, starts the services and
exports CELERYC_TEST_*); see bench/README.md.

Schedule: ENTRIES crontab entries whose due times are minute boundaries (UTC), in a mix of
minute specs: "*" 1 %, "O-59/2" 2 %, "O-59/5" 2 %, "O-59/15" 5 % (each step spread over its
offsets O) and hourly "M" 90 % (M = entry % 60), so the same number of entries is due every
minute (4,233 +- 2 at the default 100,000; 70.6 a second) whichever minutes a beat's window
falls on. Every entry
sends task TASK with args [ENTRY] to its own benchmark queue. The same schedule file feeds both
beats: celeryc reads it with --schedule-file, Python gets it as beat_schedule
(bench/beat_pyapp.py).

Per implementation:
  1. bench_beatsink (C, bare consumer, no_ack) declares a fresh queue and records the arrival
     time (CLOCK_REALTIME) and entry of every message;
  2. the beat starts 1 s after a minute boundary; startup = until its CPU time stops growing
     (no increase for 1 s; /proc/<pid>/stat utime+stime), RSS then;
  3. measured window: from 1 s before the first minute boundary at least 2 s after the startup,
     MINUTES minutes long; CPU = utime+stime of the beat's process tree over the window,
     reported as ms per minute and us per message it dispatched in the window; RabbitMQ's CPU
     over the window too; peak RSS;
  4. GRACE s more for the last minute's stragglers, then the beat and the sink stop.
Lateness, per due slot (entry x minute boundary in the window): arrival of the first message of
that entry at or after the boundary - the boundary (each message covers every slot of its entry
due up to its arrival: a beat that falls behind sends one message for several missed slots, as
Celery does; those slots are counted as `coalesced`). A slot with no message by the end is
`missing` and counts as infinitely late in the percentiles (so p99 shows "> run" when more than
1 % were never sent). Nothing is instrumented inside either beat.
Ceiling: bench_beatpub (C) knows the schedule, sleeps until each boundary and encodes +
publishes the due messages as fast as it can: the lateness and CPU floor of broker + consumer.
Writes bench/results/beat-latest.json; logs in bench/results/logs/beat-*.log.
"""
import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench import (AMQP, AMQP_PORT, BUILD, cpu_us, fresh_logdir, log, machine,  # noqa: E402
                   machine_busy_us, mem_kb, proc_tree, pss_kb, self_cpu_us, stop_on_signals)

IMPLS = ("ceiling", "before", "celeryc", "python")  # before: --celeryc-before BINARY
MIXES = ("minute", "second", "spread")
# (spec, step, share of the entries); hourly "M" entries take the rest (minute = entry % 60).
MIX = [("*", 1, 0.01), ("*/2", 2, 0.02), ("*/5", 5, 0.02), ("*/15", 15, 0.05)]
SEED_AHEAD_S = 20  # --mix second: the first slot of every entry is at least this after spawn
LIVE = []  # Popen objects to stop on the way out


def now():
    return time.time()


def sleep_until(t):
    while True:
        d = t - now()
        if d <= 0:
            return
        time.sleep(min(d, 0.5))


def pct(vals, q):
    """Nearest-rank percentile of sorted vals (math.inf allowed)."""
    return vals[max(0, math.ceil(q * len(vals)) - 1)] if vals else None


# ---- the schedule -------------------------------------------------------------------------

def make_schedule(n, mix="minute", period_s=None):
    """[(entry, schedule, period_ms, phase_ms)]: entry i is due at the instants t (epoch
    milliseconds) with t % period_ms == phase_ms; `schedule` is its schedule-file value.

    minute: crontab minute specs, due on minute boundaries ("*/S" spread over its S offsets
    "O-59/S": the same count is due every minute, so implementations measured in different
    minutes see the same load). second: interval schedules of the same periods (60, 120, 300,
    900 s, hourly for the rest), each entry's phase a whole second spread over its period, so
    70.6 entries are due every second on average (the same rate), at the same instant. spread:
    the same intervals with phases spread evenly over the period to the millisecond: one entry
    due every ~14 ms. period_s (second, spread): every entry that period instead (60: 1,667
    due a second)."""
    rows = []
    i = 0

    def interval(k, count, period_s):
        period = period_s * 1000
        if mix == "second":
            return (i, period_s, period, (k % period_s) * 1000)
        return (i, period_s, period, (k * period) // count)

    for spec, step, share in MIX:
        count = int(n * share)
        for k in range(count):
            off = k % step
            if mix == "minute":
                rows.append((i, {"type": "crontab",
                                 "minute": spec if step == 1 else "%d-59/%d" % (off, step)},
                             step * 60000, off * 60000))
            else:
                rows.append(interval(k, count, step * 60))
            i += 1
    k, count = 0, n - i
    while i < n and period_s is None:
        if mix == "minute":
            rows.append((i, {"type": "crontab", "minute": str(i % 60)}, 3600000,
                         (i % 60) * 60000))
        else:
            rows.append(interval(k, count, 3600))
        i += 1
        k += 1
    if period_s is not None and mix != "minute":
        rows = []
        for i in range(n):
            rows.append(interval(i, n, period_s))
    return rows


def write_schedule(rows, task, queue, path):
    entries = {}
    for i, sched, _, _ in rows:
        entries["e%06d" % i] = {"task": task, "schedule": sched,
                                "args": [i], "kwargs": {}, "options": {"queue": queue}}
    path.write_text(json.dumps({"entries": entries}, separators=(",", ":")))


def first_slot_at_or_after(t, period, phase):
    return t + (phase - t) % period


def write_seeds(rows, t0_s, celeryc_state, py_seeds):
    """--mix second/spread: each entry's last run, so that its next slot is its first
    phase-aligned instant >= t0 (an interval's next run is last + every, in both beats):
    celeryc's state file and, for Python, {name: epoch_s} (beat_pyapp passes them as
    last_run_at)."""
    st, py = {}, {}
    for i, _, period, phase in rows:
        last = first_slot_at_or_after(t0_s * 1000, period, phase) - period
        st["e%06d" % i] = {"last_run_at": last * 1000, "total_run_count": 0}
        py["e%06d" % i] = last / 1000.0
    celeryc_state.write_text(json.dumps({"version": 1, "entries": st}, separators=(",", ":")))
    py_seeds.write_text(json.dumps(py, separators=(",", ":")))


_GROUPS = {}


def _groups(rows):
    """{(period, phase): entries} of a schedule (cached; the rows are kept with it)."""
    hit = _GROUPS.get(id(rows))
    if hit is None or hit[0] is not rows:
        cnt = {}
        for _, _, period, phase in rows:
            cnt[(period, phase)] = cnt.get((period, phase), 0) + 1
        hit = _GROUPS[id(rows)] = (rows, cnt)
    return hit[1]


def due_in(rows, a_s, b_s):
    """How many slots fall in [a_s, b_s) (seconds)."""
    a, b, n = int(a_s * 1000), int(b_s * 1000), 0
    for (period, phase), c in _groups(rows).items():
        first = first_slot_at_or_after(a, period, phase)
        if first < b:
            n += c * ((b - 1 - first) // period + 1)
    return n


def slots_by_group(rows, first_s, last_s):
    """{(period, phase): [slot_s ...]} for due instants in [first_s, last_s] (seconds, float)."""
    out = {}
    a, b = int(first_s * 1000), int(last_s * 1000)
    for period, phase in _groups(rows):
        out[(period, phase)] = [t / 1000.0 for t in
                                range(first_slot_at_or_after(a, period, phase), b + 1, period)]
    return out


# ---- processes ----------------------------------------------------------------------------

class Proc:
    def __init__(self, name, cmd, logpath, env=None, cwd=None, stdout_pipe=False):
        self.name = name
        self.log_path = logpath
        self.log = open(logpath, "wb")
        self.p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE if stdout_pipe else self.log,
                                  stderr=self.log, start_new_session=True,
                                  text=stdout_pipe or None)
        LIVE.append(self)

    def alive(self):
        return self.p.poll() is None

    def check(self):
        if not self.alive():
            raise RuntimeError("%s exited rc=%s (log %s)" % (self.name, self.p.returncode,
                                                              self.log_path))

    def stop(self, timeout=30):
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                log("%s did not stop in %d s: KILL" % (self.name, timeout))
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(10)
        out = self.p.stdout.read() if self.p.stdout else ""
        self.log.close()
        if self in LIVE:
            LIVE.remove(self)
        return out


def rabbit_pids():
    return proc_tree(int(os.environ["CELERYC_TEST_RABBITMQ_PID"]))


def beat_cmd(impl, rundir, sched_path, queue, task, entries_path, opt=None):
    if impl in ("celeryc", "before"):
        extra = os.environ.get("BENCH_CBEAT_ARGS", "").split()
        binary = opt.celeryc_before if impl == "before" else str(BUILD / "celeryc")
        return [binary, "beat", "-b", AMQP, "--schedule-file", str(sched_path),
                "-s", str(rundir / "celeryc-beat.state"), "-l", "warning"] + extra, None, None
    if impl == "python":
        env = dict(os.environ, CELERY_BROKER_URL=AMQP, BENCH_BEAT_SCHEDULE=str(sched_path),
                   PYTHONPATH=str(HERE))
        seeds = rundir / "python-seeds.json"
        if seeds.exists():
            env["BENCH_BEAT_LAST_RUN"] = str(seeds)
        return (["/usr/bin/python3", "-m", "celery", "-A", "beat_pyapp", "beat",
                 "-s", str(rundir / "celerybeat-schedule"), "--pidfile",
                 str(rundir / "celerybeat.pid"), "-l", "warning"], env, str(rundir))
    return ([str(BUILD / "bench_beatpub"), "127.0.0.1", AMQP_PORT, queue, task,
             str(entries_path), str(int(now()) + 7200)], None, None)


def wait_startup(proc, limit_s, t_spawn):
    """Seconds until the process's CPU time stops growing (1 s without increase)."""
    last_cpu, last_change, still = -1, t_spawn, 0
    while now() - t_spawn < limit_s:
        proc.check()
        c = cpu_us(proc_tree(proc.p.pid))
        t = now()
        if c != last_cpu:
            last_cpu, last_change, still = c, t, 0
        else:
            still += 1
            if still >= 10:
                return round(last_change - t_spawn, 2)
        time.sleep(0.1)
    return None


# ---- one implementation -------------------------------------------------------------------

def run_impl(impl, rows, opt, rundir, logdir):
    queue = "bench-beat-%s-%s" % (impl, uuid.uuid4().hex[:6])
    sched_path = rundir / ("schedule-%s.json" % impl)
    entries_path = rundir / "entries.txt"
    write_schedule(rows, opt.task, queue, sched_path)
    sink_out = rundir / ("sink-%s.txt" % impl)
    for f in rundir.glob("celerybeat-schedule*"):
        f.unlink()
    for f in rundir.glob("celeryc-beat.state*"):
        f.unlink()
    for f in rundir.glob("python-seeds.json"):
        f.unlink()
    sink = Proc("sink", [str(BUILD / "bench_beatsink"), "127.0.0.1", AMQP_PORT, queue,
                         str(sink_out)], logdir / ("beat-sink-%s.log" % impl), stdout_pipe=True)
    if sink.p.stdout.readline().strip() != "ready":
        sink.check()
        raise RuntimeError("bench_beatsink did not get ready")
    # Beats start 1 s after a boundary (a whole minute to start up before anything is due); the
    # ceiling, which needs no start-up, 3 s before one.
    t = now()
    b = (int(t) // 60 + 1) * 60
    if impl == "ceiling":
        start_at = b - 3 if b - 3 > t + 0.5 else b + 57
    else:
        start_at = b + 1 if b - t < 59 else b - 59
    log("%s: queue %s, starting at %s (in %.0f s)"
        % (impl, queue, time.strftime("%H:%M:%S", time.gmtime(start_at)), start_at - t))
    first_slot_s = None
    if opt.mix != "minute" and impl != "ceiling":
        first_slot_s = int(start_at) + SEED_AHEAD_S
        write_seeds(rows, first_slot_s, rundir / "celeryc-beat.state",
                    rundir / "python-seeds.json")
    sleep_until(start_at)
    cmd, env, cwd = beat_cmd(impl, rundir, sched_path, queue, opt.task, entries_path, opt)
    t_spawn = now()
    beat = Proc(impl, cmd, logdir / ("beat-%s.log" % impl), env=env, cwd=cwd)
    res = {"queue": queue, "command": " ".join(cmd), "spawned": t_spawn}
    try:
        # Up to the first due boundary: a beat still busy then is dispatching (or still
        # starting up: its first message tells, see first_message_s).
        first_due = first_slot_s or (int(t_spawn) // 60 + 1) * 60
        startup = wait_startup(beat, min(opt.startup_limit, first_due + 2 - t_spawn), t_spawn)
        t_ready = now()
        pids = proc_tree(beat.p.pid)
        res["startup_s"] = startup
        res["rss_after_startup_kb"] = mem_kb(pids)
        res["startup_cpu_ms"] = round(cpu_us(pids) / 1000, 1)
        res["first_due_s"] = round(first_due - t_spawn, 2)
        if startup is None:
            log("%s: still busy at the first due time (+%.0f s): measuring anyway"
                % (impl, first_due - t_spawn))
        elif t_spawn + startup > first_due:
            log("%s: start-up crossed a minute boundary (dispatching already)" % impl)
        B0 = (int(t_ready + 2) + 59) // 60 * 60
        w0, w1 = B0 - 1, B0 + opt.minutes * 60 - 1
        log("%s: started in %s s (RSS %.1f MiB); window %s .. %s UTC"
            % (impl, startup, res["rss_after_startup_kb"] / 1024,
               time.strftime("%H:%M:%S", time.gmtime(w0)),
               time.strftime("%H:%M:%S", time.gmtime(w1))))
        sleep_until(w0)
        beat.check()
        rp = rabbit_pids()
        pids = proc_tree(beat.p.pid)
        c0, r0, m0, s0, t0 = cpu_us(pids), cpu_us(rp), machine_busy_us(), self_cpu_us(), now()
        peak = mem_kb(pids)
        while now() < w1:
            time.sleep(min(1.0, max(0.0, w1 - now())))
            beat.check()
            pids = proc_tree(beat.p.pid)
            peak = max(peak, mem_kb(pids))
        c1, r1, m1, s1, t1 = cpu_us(pids), cpu_us(rp), machine_busy_us(), self_cpu_us(), now()
        res["pss_kb"] = pss_kb(pids)
        res["peak_rss_kb"] = peak
        sleep_until(w1 + opt.grace)
        beat.check()
    finally:
        beat.stop()
        sink_stdout = sink.stop()
    text = beat.log_path.read_text(errors="replace")
    m = re.search(r"beat stats:.*", text)
    res["beat_stats_line"] = m.group(0).strip() if m else None
    res["sink"] = sink_stdout.strip()
    secs = t1 - t0
    win_cpu = c1 - c0
    other = (m1 - m0) - win_cpu - (r1 - r0) - (s1 - s0)
    res.update(window_start=w0, window_end=w1, window_s=round(secs, 1),
               cpu_us=win_cpu, broker_cpu_us=r1 - r0,
               foreign_cpu_pct=round(max(0.0, 100.0 * other / (secs * 1e6 * (os.cpu_count() or 1))), 1))
    res.update(analyze(rows, sink_out, max(int(t_spawn) + 1, first_slot_s or 0), B0, opt, w0,
                       w1))
    res["first_message_s"] = (round(res.pop("first_message_at") - t_spawn, 2)
                              if res.get("first_message_at") else None)
    n = res["messages_in_window"]
    res["cpu_ms_per_min"] = round(win_cpu / 1000 / opt.minutes, 1)
    res["cpu_us_per_entry"] = round(win_cpu / n, 1) if n else None
    res["broker_cpu_us_per_entry"] = round((r1 - r0) / n, 1) if n else None
    log(impl, {k: v for k, v in res.items() if k not in ("per_minute", "command")})
    return res


def analyze(rows, sink_out, first_s, B0, opt, w0, w1):
    """first_s: the first instant whose slots the beat owes (1 s after spawn; --mix second:
    the first slot the seeded state asks for, SEED_AHEAD_S after the start)."""
    B_last = B0 + (opt.minutes - 1) * 60
    # Slots up to the end of the collection (so that the grace period's messages for the next
    # boundary are not taken for duplicates); statistics only for [B0, B_last].
    groups = slots_by_group(rows, first_s, int(w1 + opt.grace))
    group_of = {i: (period, phase) for i, _, period, phase in rows}
    msgs = {}
    first_at = None
    total = 0
    in_window = 0
    bad = 0
    with open(sink_out) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 2:
                continue
            t = int(parts[0]) / 1e6
            e = int(parts[1])
            total += 1
            first_at = t if first_at is None else min(first_at, t)
            if w0 <= t < w1:
                in_window += 1
            if e not in group_of:
                bad += 1
                continue
            msgs.setdefault(e, []).append(t)
    late = []            # seconds, per due slot in [B0, B_last]
    per_min = {}         # boundary -> [lateness...]
    coalesced = dupes = 0
    sent_late = []       # seconds, per message received in the window: arrival - its slot
    for i, _, period, phase in rows:
        slots = groups[(period, phase)]
        j = 0
        for r in msgs.get(i, ()):
            if j < len(slots) and slots[j] <= r:
                if w0 <= r < w1:
                    sent_late.append(r - slots[j])
                first = True
                while j < len(slots) and slots[j] <= r:
                    s = slots[j]
                    if B0 <= s < B_last + 60:
                        late.append(r - s)
                        per_min.setdefault(int(s // 60 * 60), []).append(r - s)
                        if not first:
                            coalesced += 1
                    first = False
                    j += 1
            else:
                dupes += 1
        for s in slots[j:]:
            if B0 <= s < B_last + 60:
                late.append(math.inf)
                per_min.setdefault(int(s // 60 * 60), []).append(math.inf)
    late.sort()
    sent_late.sort()
    due = len(late)
    missing = sum(1 for x in late if x == math.inf)

    def ms(x):
        return None if x is None or x == math.inf else round(x * 1000, 2)

    minutes = []
    for s in sorted(per_min):
        v = sorted(per_min[s])
        minutes.append({"boundary": time.strftime("%H:%M", time.gmtime(s)), "due": len(v),
                        "due_expected": due_in(rows, s, s + 60),
                        "missing": sum(1 for x in v if x == math.inf),
                        "p50_ms": ms(pct(v, 0.5)), "p99_ms": ms(pct(v, 0.99)),
                        "last_ms": ms(v[-1])})
    return {"messages_total": total, "messages_in_window": in_window, "unknown_entry": bad,
            "due_slots": due, "due_expected": due_in(rows, B0, B_last + 60),
            "missing": missing, "coalesced": coalesced, "duplicates": dupes,
            "lateness_p50_ms": ms(pct(late, 0.5)), "lateness_p90_ms": ms(pct(late, 0.9)),
            "lateness_p99_ms": ms(pct(late, 0.99)),
            "lateness_max_ms": ms(late[-1]) if late else None,
            "sent_lateness_p50_ms": ms(pct(sent_late, 0.5)),
            "sent_lateness_p99_ms": ms(pct(sent_late, 0.99)),
            "first_message_at": first_at,
            "per_minute": minutes}


# ---- report -------------------------------------------------------------------------------

def fmt_ms(v, missing_frac):
    if v is None:
        return ">run" if missing_frac > 0 else "-"
    return "%.1f" % v if v < 10000 else "%.0f" % v


def print_table(res, opt):
    print()
    if opt.mix == "minute":
        what = "crontab entries (%s)" % (
            ", ".join("%s %.0f%%" % (s if st == 1 else "O-59/%d" % st, 100 * f)
                      for s, st, f in MIX) +
            ", hourly M %.0f%%" % (100 * (1 - sum(f for _, _, f in MIX))))
    else:
        what = "interval entries (%s; %s)" % (
            "every %d s" % opt.period if opt.period else
            ", ".join("%d s %.0f%%" % (st * 60, 100 * f) for _, st, f in MIX) +
            ", 3600 s %.0f%%" % (100 * (1 - sum(f for _, _, f in MIX))),
            "whole-second phases, %.1f due at once every second" % (opt.entries / (
                opt.period or 1416.4)) if opt.mix == "second" else
            "phases spread to the millisecond, %.1f due a second" % (opt.entries / (
                opt.period or 1416.4)))
    print("celeryc beat bench %s: %d %s, %d-minute window per beat, task %s"
          % (res["started"][:10], opt.entries, what, opt.minutes, opt.task))
    mach = res["machine"]
    print("machine: %d CPUs, %s; RabbitMQ %s, Celery %s"
          % (mach["nproc"], mach["cpu_model"], mach["versions"]["rabbitmq-server"],
             mach["versions"]["python3-celery"]))
    hdr = ("impl", "start s", "RSS MiB", "due", "sent", "missing", "p50 ms", "p99 ms",
           "max ms", "CPU ms/min", "CPU us/entry", "vs py", "broker us/e", "other%")
    f = "%-8s %7s %7s %7s %7s %7s %8s %8s %8s %10s %12s %6s %11s %6s"
    print(f % hdr)
    py = res["impls"].get("python")
    for impl in opt.impls:
        r = res["impls"].get(impl)
        if r is None:
            continue
        mf = r["missing"] / r["due_slots"] if r["due_slots"] else 0
        vs = ""
        if py and impl in ("celeryc", "before") and r["cpu_us_per_entry"] and \
                py["cpu_us_per_entry"]:
            vs = "%.0fx" % (py["cpu_us_per_entry"] / r["cpu_us_per_entry"])
        if impl == "ceiling":
            start = "-"
        elif r["startup_s"] is not None:
            start = "%.2f" % r["startup_s"]
        else:  # never idle before the first due time: at most the first message's arrival
            start = "<=%.0f" % r["first_message_s"] if r["first_message_s"] else "?"
        print(f % (impl, start,
                   "%.1f" % (r["peak_rss_kb"] / 1024), r["due_slots"], r["messages_in_window"],
                   r["missing"], fmt_ms(r["lateness_p50_ms"], mf),
                   fmt_ms(r["lateness_p99_ms"], mf), fmt_ms(r["lateness_max_ms"], mf),
                   "%.0f" % r["cpu_ms_per_min"],
                   "%.1f" % r["cpu_us_per_entry"] if r["cpu_us_per_entry"] else "-", vs,
                   "%.1f" % r["broker_cpu_us_per_entry"] if r["broker_cpu_us_per_entry"]
                   else "-", "%.0f" % r["foreign_cpu_pct"]))
    print("due: entry x due-instant slots in the window; sent: messages received in the window;\n"
          "  missing: due slots with no message by the end (counted as infinitely late);\n"
          "  p50/p99/max: arrival at the consumer - the due instant; CPU: utime+stime of\n"
          "  the beat (ceiling: the bare publisher) over the window, per minute and per sent\n"
          "  message; vs py: CPU per entry, times less than Python; start s: spawn -> CPU idle")
    for impl in opt.impls:
        r = res["impls"].get(impl)
        if r and r["missing"]:
            print("  %s: %d of %d due slots never sent; the %d messages it sent in the window "
                  "were p50 %s / p99 %s ms late (first message %s s after start, first due "
                  "%s s)" % (impl, r["missing"], r["due_slots"], r["messages_in_window"],
                             fmt_ms(r["sent_lateness_p50_ms"], 0),
                             fmt_ms(r["sent_lateness_p99_ms"], 0), r["first_message_s"],
                             r["first_due_s"]))
        if r and (r["coalesced"] or r["duplicates"] or r["unknown_entry"]):
            print("  %s: %d slots coalesced into a later message, %d duplicate messages, "
                  "%d unknown" % (impl, r["coalesced"], r["duplicates"], r["unknown_entry"]))
        if r and r.get("beat_stats_line"):
            print("  %s says: %s" % (impl, r["beat_stats_line"]))


def parse_args():
    ap = argparse.ArgumentParser(description="beat benchmark: celeryc beat vs Python celery "
                                 "beat vs a bare publisher (see bench/README.md)")
    ap.add_argument("--beat", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="1-minute windows (else 2)")
    ap.add_argument("--entries", type=int, default=100000, help="schedule entries (100000)")
    ap.add_argument("--mix", choices=MIXES, default="minute",
                    help="minute: crontab entries due on minute boundaries (4,233 at once every "
                    "minute); second: interval entries of the same periods, phases spread over "
                    "whole seconds (70.6 due at once every second); spread: the same, phases "
                    "spread to the millisecond (one due every ~14 ms)")
    ap.add_argument("--minutes", type=int, help="measured minutes per implementation (2; "
                    "quick 1)")
    ap.add_argument("--period", type=int, metavar="S",
                    help="--mix second/spread: every entry every S seconds instead of the "
                    "minute mix's periods (60: 1,667 due a second)")
    ap.add_argument("--impls", default="ceiling,celeryc,python",
                    help="which to run, in order (ceiling,celeryc,python; with --celeryc-before "
                    "also `before`, by default just before celeryc)")
    ap.add_argument("--celeryc-before", metavar="BINARY",
                    help="another celeryc binary (e.g. main's) measured as impl `before` in the "
                    "same run, for before/after figures")
    ap.add_argument("--task", default="bench.beat.noop", help="task name the entries send")
    ap.add_argument("--grace", type=float, default=10.0,
                    help="seconds after the window for the last minute's messages (10)")
    ap.add_argument("--startup-limit", type=float, default=240.0,
                    help="seconds to wait for a beat's CPU to go idle after start (240)")
    ap.add_argument("--out", default=str(HERE / "results" / "beat-latest.json"))
    opt = ap.parse_args()
    opt.minutes = opt.minutes or (1 if opt.quick else 2)
    opt.impls = [x.strip() for x in opt.impls.split(",") if x.strip()]
    if opt.celeryc_before and "before" not in opt.impls:
        opt.impls.insert(opt.impls.index("celeryc") if "celeryc" in opt.impls
                         else len(opt.impls), "before")
    if "before" in opt.impls and not opt.celeryc_before:
        ap.error("impl `before` needs --celeryc-before BINARY")
    for x in opt.impls:
        if x not in IMPLS:
            ap.error("unknown implementation %r (%s)" % (x, ", ".join(IMPLS)))
    return opt


def main():
    opt = parse_args()
    stop_on_signals("the beats")
    logdir = fresh_logdir("beat-*.log")
    rundir = BUILD / "beat-bench"
    rundir.mkdir(parents=True, exist_ok=True)
    rows = make_schedule(opt.entries, opt.mix, opt.period)
    (rundir / "entries.txt").write_text("".join("%d %d %d\n" % (i, period, phase)
                                                for i, _, period, phase in rows))
    t_start = time.monotonic()
    res = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
           "command": os.environ.get("BENCH_COMMAND", " ".join(sys.argv)),
           "options": {k: v for k, v in vars(opt).items() if k != "out"},
           "mix": [{"spec": s, "share": f} for s, _, f in MIX] +
                  [{"spec": "M (entry % 60)", "share": round(1 - sum(f for *_, f in MIX), 4)}],
           "due_per_minute_of_hour": [due_in(rows, m * 60, m * 60 + 60) for m in range(60)],
           "impls": {}}
    log("%d entries; due per minute %d .. %d (mean %.0f)%s"
        % (opt.entries, min(res["due_per_minute_of_hour"]), max(res["due_per_minute_of_hour"]),
           sum(res["due_per_minute_of_hour"]) / 60,
           "" if opt.mix == "minute" else "; per second %d .. %d" % (
               min(due_in(rows, t, t + 1) for t in range(3600)),
               max(due_in(rows, t, t + 1) for t in range(3600)))))
    try:
        for impl in opt.impls:
            res["impls"][impl] = run_impl(impl, rows, opt, rundir, logdir)
    finally:
        for p in list(LIVE):
            p.stop()
    py, c = res["impls"].get("python"), res["impls"].get("celeryc")
    if py and c and py["cpu_us_per_entry"] and c["cpu_us_per_entry"]:
        res["ratio_cpu_per_entry_py_over_c"] = round(py["cpu_us_per_entry"] /
                                                     c["cpu_us_per_entry"], 1)
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    out = Path(opt.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print_table(res, opt)
    print("beat bench: %.0f s; wrote %s" % (res["elapsed_s"], out))


if __name__ == "__main__":
    main()
