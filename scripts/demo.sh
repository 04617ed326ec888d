#!/usr/bin/env bash
# README command #1: build celeryc, start RabbitMQ + Redis in ./.data (reused if already
# running), run `celeryc worker` in the foreground with the demo tasks, show a Python client
# calling it. Ctrl+C stops the worker and the services.
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

WORKER_PID=""
cleanup()
{
    trap - EXIT INT TERM
    if [ -n "$WORKER_PID" ] && kill -0 "$WORKER_PID" 2>/dev/null; then
        kill -TERM "$WORKER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$WORKER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$WORKER_PID" 2>/dev/null || true
    fi
    bash scripts/services.sh stop "$DATA"
    echo "[demo] worker and services stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

./build/celeryc worker -l info -c 2 -Q celery -n demo@%h \
    -b "$CELERY_BROKER_URL" --result-backend "$CELERY_RESULT_BACKEND" &
WORKER_PID=$!

# Wait (bounded) until the worker consumes, then make one example call.
sleep 1
cat <<EOM

[demo] celeryc worker running (pid $WORKER_PID); broker $CELERY_BROKER_URL, results $CELERY_RESULT_BACKEND
[demo] enqueue from Python (another shell):
    cd $ROOT/scripts
    CELERY_BROKER_URL=$CELERY_BROKER_URL CELERY_RESULT_BACKEND=$CELERY_RESULT_BACKEND \\
        $PY -c 'from example_app import app; print(app.send_task("demo.add", args=[2, 3]).get(timeout=10))'
[demo] running scripts/example_app.py once:
EOM
(cd scripts && timeout 60 "$PY" example_app.py) || echo "[demo] example call failed"
echo "[demo] worker in the foreground; Ctrl+C to stop it and the services"
wait "$WORKER_PID" || true
