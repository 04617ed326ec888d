#!/usr/bin/env bash
# One command: build Release (build-bench/), start RabbitMQ + Redis in a private data dir,
# run bench/bench.py (ceiling, celeryc vs Python throughput/CPU/RSS, latency), stop
# everything. Output: a table on stdout and bench/results/latest.json. See bench/README.md.
#   BENCH_N=20000 BENCH_LATENCY_N=2000 BENCH_LATENCY_RATE=200 BENCH_CONCURRENCY=2
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD="${BENCH_BUILD:-$ROOT/build-bench}"
echo "[bench] building Release in $BUILD" >&2
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target celeryc bench_publish bench_ceiling >/dev/null
export BENCH_BUILD="$BUILD"
exec bash scripts/services.sh run -- timeout 600 /usr/bin/python3 bench/bench.py
