#!/usr/bin/env bash
# README command #1: build celeryc, start RabbitMQ + Redis + Postgres in ./.data (reused if
# already running), create the job store (celeryc db upgrade) with two jobs (a demo job and
# the record-view statistics indexer), run
# `celeryc beat` (scripts/demo-schedule.json + the job store) in the background and
# `celeryc worker` in the foreground with the demo tasks, show a Python client calling it.
# Ctrl+C stops the worker, the beat and the services.
#
#   scripts/demo.sh           run the demo
#   scripts/demo.sh --stop    stop services left running in ./.data
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DATA="$ROOT/.data"
PY=/usr/bin/python3

if [ "${1:-}" = "--stop" ]; then
    bash scripts/services.sh stop "$DATA"
    echo "stopped services in $DATA"
    exit 0
fi

bash scripts/deps.sh
echo "[demo] building (Release) in build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target celeryc >/dev/null

if bash scripts/services.sh status "$DATA" 2>/dev/null; then
    echo "[demo] reusing services in $DATA"
else
    bash scripts/services.sh stop "$DATA" 2>/dev/null || true # stale env from a crash
    bash scripts/services.sh start "$DATA" >/dev/null
fi
set -a
# shellcheck disable=SC1091
. "$DATA/env"
set +a
export CELERY_BROKER_URL="$CELERYC_TEST_AMQP_URL" CELERY_RESULT_BACKEND="$CELERYC_TEST_REDIS_URL"
export CELERYC_JOB_STORE="$CELERYC_TEST_PG_URL"

WORKER_PID=""
BEAT_PID=""
stop_pid() # PID: TERM, wait up to 10 s, KILL
{
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 0
    kill -TERM "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null || true
}
cleanup()
{
    trap - EXIT INT TERM
    stop_pid "$WORKER_PID"
    stop_pid "$BEAT_PID"
    bash scripts/services.sh stop "$DATA"
    echo "[demo] worker, beat and services stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The job store, and two jobs the beat runs every 30 s (created once; kept in ./.data): a
# demo job, and the statistics indexer of "record-view" events (docs/STATS.md), which
# scripts/example_app.py feeds.
./build/celeryc db upgrade
jobs_now=$(./build/celeryc jobs list --json)
if ! printf '%s' "$jobs_now" | grep -q '"jobs.index_events"'; then
    ./build/celeryc jobs create --title "demo indexer" --task jobs.index_events \
        --interval 30 --kwargs '{"n": 5, "errors": 1, "partial": true}' \
        --since-kwarg since >/dev/null
fi
if ! printf '%s' "$jobs_now" | grep -q '"stats.index_events"'; then
    ./build/celeryc jobs create --title "record-view statistics" --task stats.index_events \
        --interval 30 --kwargs '{"event_type": "record-view"}' >/dev/null
fi
./build/celeryc beat -l info --schedule-file scripts/demo-schedule.json \
    -b "$CELERY_BROKER_URL" >"$DATA/beat.log" 2>&1 &
BEAT_PID=$!

./build/celeryc worker -l info -c 2 -Q celery -n demo@%h \
    -b "$CELERY_BROKER_URL" --result-backend "$CELERY_RESULT_BACKEND" &
WORKER_PID=$!

# Wait (bounded) until the worker consumes, then make one example call.
sleep 1
cat <<EOM

[demo] celeryc worker running (pid $WORKER_PID); broker $CELERY_BROKER_URL, results $CELERY_RESULT_BACKEND
[demo] celeryc beat running (pid $BEAT_PID, log $DATA/beat.log): demo.add every 10 s from
       scripts/demo-schedule.json, and the jobs "demo indexer" and "record-view statistics"
       every 30 s from the job store
[demo] the job store (another shell):
    CELERYC_JOB_STORE=$CELERYC_JOB_STORE ./build/celeryc jobs runs
    CELERYC_JOB_STORE=$CELERYC_JOB_STORE ./build/celeryc jobs run <JOB_ID>     # a manual run
    CELERYC_JOB_STORE=$CELERYC_JOB_STORE ./build/celeryc jobs logs <RUN_ID>
[demo] usage statistics (docs/STATS.md), after the next "record-view statistics" run:
    psql "$CELERYC_JOB_STORE" -c 'SELECT * FROM celeryc.stats_daily ORDER BY day, object_id'
[demo] enqueue from Python (another shell):
    cd $ROOT/scripts
    CELERY_BROKER_URL=$CELERY_BROKER_URL CELERY_RESULT_BACKEND=$CELERY_RESULT_BACKEND \\
        $PY -c 'from example_app import app; print(app.send_task("demo.add", args=[2, 3]).get(timeout=10))'
[demo] running scripts/example_app.py once:
EOM
(cd scripts && timeout 60 "$PY" example_app.py) || echo "[demo] example call failed"
echo "[demo] worker in the foreground; Ctrl+C to stop it and the services"
wait "$WORKER_PID" || true
