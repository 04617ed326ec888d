#!/usr/bin/env bash
# One command: build Release (build-bench/), start RabbitMQ + Redis in a project-local data
# dir (build-bench/services), run bench/bench.py (ceiling; celeryc prefork/threads x acks
# early/late; Python Celery prefork x acks early/late: throughput, CPU, RSS, latency), stop
# every process. Output: a table on stdout and bench/results/latest.json. See bench/README.md.
#
#   bench/run.sh            ~5-9 min: 4 rounds of 20000 tasks per mode, 2000 latency samples
#   bench/run.sh --quick    ~1-2 min: 1 round of 5000, 500 latency samples
#   bench/run.sh --help     every option (--n, --rounds, --latency-n, --task, ...)
#   bench/run.sh --chord    chord of 10000 no-op members, C fleet vs Python fleet
#                           (bench/chord.py; --chord --quick: 2000 members; --chord --help)
#   bench/run.sh --beat     beat with 100,000 crontab entries: celeryc beat vs Python celery
#                           beat vs a bare publisher; lateness, CPU, RSS, start-up
#                           (bench/beat.py; ~12 min; --beat --quick: 1-minute windows, ~8 min)
#   bench/run.sh --stats    statistics indexer: 1,000,000 usage events through celeryc's
#                           stats.index_events vs a Python indexer (100,000) vs a bare consumer;
#                           events/s, CPU, Postgres WAL/rows/bytes per event (bench/stats.py;
#                           ~6-10 min; --stats --quick: 100,000 / 20,000 events)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SCRIPT=bench/bench.py
case " $* " in *" --chord "*) SCRIPT=bench/chord.py ;; esac
case " $* " in *" --beat "*) SCRIPT=bench/beat.py ;; esac
case " $* " in *" --stats "*) SCRIPT=bench/stats.py ;; esac
for a in "$@"; do
    if [ "$SCRIPT" != bench/bench.py ] && { [ "$a" = -h ] || [ "$a" = --help ]; }; then
        export CELERYC_TEST_AMQP_URL=0 CELERYC_TEST_AMQP_PORT=0 CELERYC_TEST_REDIS_URL=0 \
            CELERYC_TEST_REDIS_PORT=0
        exec /usr/bin/python3 "$SCRIPT" "$@"
    fi
    if [ "$a" = -h ] || [ "$a" = --help ]; then
        exec /usr/bin/python3 - "$@" <<'EOF'
import os, sys
os.environ.update({k: "0" for k in ("CELERYC_TEST_AMQP_URL", "CELERYC_TEST_AMQP_PORT",
                                    "CELERYC_TEST_REDIS_URL", "CELERYC_TEST_REDIS_PORT")})
sys.argv[0] = "bench/run.sh"
sys.path.insert(0, "bench")
import bench
bench.parse_args()
EOF
    fi
done
LIMIT=1200
case " $* " in *" --quick "*) LIMIT=420 ;; esac
if [ "$SCRIPT" = bench/beat.py ]; then # waits for minute boundaries: longer
    LIMIT=1800
    case " $* " in *" --quick "*) LIMIT=1200 ;; esac
fi
if [ "$SCRIPT" = bench/stats.py ]; then # publishes 2 x 1,000,000 persistent messages
    LIMIT=2400
    case " $* " in *" --quick "*) LIMIT=600 ;; esac
fi

BUILD="${BENCH_BUILD:-$ROOT/build-bench}"
echo "[bench] building Release in $BUILD" >&2
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target celeryc bench_publish bench_ceiling bench_latency \
    bench_beatsink bench_beatpub bench_statspub >/dev/null

# Services in a project-local dir. A previous run that was killed may have left its env file:
# stop those services if they still answer on their recorded ports, else just clear the dir.
SVC="$BUILD/services"
if [ -f "$SVC/env" ]; then
    if bash scripts/services.sh status "$SVC" 2>/dev/null; then
        echo "[bench] stopping services left running by an earlier run in $SVC" >&2
        bash scripts/services.sh stop "$SVC"
    fi
fi
rm -rf "$SVC"
export BENCH_BUILD="$BUILD" BENCH_COMMAND="bench/run.sh $*"
export CELERYC_TEST_TLS=0 # no TLS listeners: not benchmarked, and they cost start-up time
# --foreground: Ctrl+C reaches bench.py too, which stops its workers before the services stop.
exec bash scripts/services.sh run "$SVC" -- timeout --foreground -k 60 "$LIMIT" \
    /usr/bin/python3 "$SCRIPT" "$@"
