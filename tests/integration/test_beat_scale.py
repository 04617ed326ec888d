"""`celeryc beat` with 100,000 schedule-file entries (issue #14): it holds them in < 60 MiB
(it held 294 MiB: a whole-document jansson tree of the file left behind as fragmented heap,
and ~1 KB of strings and JSON objects per entry), and entries due every second next to them
go out on time. The full measurement, side by side with Python's beat, is
`bench/run.sh --beat [--mix second]` (bench/README.md)."""
import json
import os
import re
import signal
import time

from beatutil import beat_factory, sent, write_schedule  # noqa: F401 (fixture)
from conftest import c_only, celeryc_bin, queue_depth, scaled, unique_queue, wait_for
from test_beat import _declare, _delete

pytestmark = c_only

N_ENTRIES = 100000
N_EVERY_SECOND = 10
RSS_LIMIT_MIB = 60.0
STATS_RX = re.compile(r"beat stats: dispatched (\d+), lateness p50 (\d+) ms p99 (\d+) ms")


def _sanitized():
    """An ASan build: its memory is the sanitizer's (redzones, quarantine), not the beat's."""
    with open(celeryc_bin(), "rb") as f:
        return b"AddressSanitizer" in f.read()


def _vm_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_beat_holds_100k_entries_in_60_mib(beat_factory, amqp_conn, tmp_path):
    q = unique_queue("beat-scale")
    _declare(amqp_conn, q)
    entries = {}
    # Yearly crontabs (never due during the test) with distinct args, as the benchmark's.
    for i in range(N_ENTRIES - N_EVERY_SECOND):
        entries["e%06d" % i] = {"task": "app.noop", "args": [i], "kwargs": {},
                                "schedule": {"type": "crontab", "minute": str(i % 60),
                                             "hour": "0", "day_of_month": "1",
                                             "month_of_year": "1"},
                                "options": {"queue": q}}
    for i in range(N_EVERY_SECOND):
        entries["tick%d" % i] = {"task": "app.noop", "args": [i], "schedule": 1,
                                 "options": {"queue": q}}
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"entries": entries}, separators=(",", ":")))
    try:
        beat = beat_factory("--schedule-file", str(path), "-s", str(tmp_path / "state.json"),
                            name="scale")
        beat.wait_log(r"beat: Starting", 60)
        # Start-up done: its CPU time stops growing (the ticks cost next to nothing).
        last, still = -1.0, 0
        deadline = time.monotonic() + scaled(60)
        while still < 5 and time.monotonic() < deadline:
            c = _cpu_s(beat.pid)
            still = still + 1 if c - last < 0.02 else 0
            last = c
            time.sleep(0.2)
        rss = _vm_kib(beat.pid, "VmRSS") / 1024
        hwm = _vm_kib(beat.pid, "VmHWM") / 1024
        wait_for(lambda: queue_depth(amqp_conn, q) >= 5 * N_EVERY_SECOND, 30,
                 "five seconds of ticks")
        time.sleep(5)
        rss_later = _vm_kib(beat.pid, "VmRSS") / 1024
        beat.signal(signal.SIGUSR1)
        m = wait_for(lambda: STATS_RX.search(beat.log()), 10, "beat stats")
        print("100,000 entries: RSS %.1f MiB after start-up (peak %.1f), %.1f MiB after 10 s of "
              "ticks; %s messages, lateness at the confirm p50 %s ms p99 %s ms"
              % (rss, hwm, rss_later, m.group(1), m.group(2), m.group(3)))
        assert beat.proc.poll() is None, beat.log()[-3000:]
        if not _sanitized():
            assert rss < RSS_LIMIT_MIB, "RSS %.1f MiB for %d entries" % (rss, N_ENTRIES)
            assert rss_later < RSS_LIMIT_MIB, "RSS %.1f MiB for %d entries" % (rss_later,
                                                                             N_ENTRIES)
        # Every tick slot is sent once, one second apart.
        for i in range(N_EVERY_SECOND):
            slots = sorted(s for n, s, _ in sent(beat.log()) if n == "tick%d" % i)
            assert len(slots) >= 5 and len(set(slots)) == len(slots)
            assert all((b - a).total_seconds() == 1.0 for a, b in zip(slots, slots[1:])), slots
        assert int(m.group(3)) < scaled(500), "p99 lateness %s ms" % m.group(3)
    finally:
        _delete(amqp_conn, q)
