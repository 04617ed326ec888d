#!/usr/bin/env bash
# Everything CI runs (README command #2; .ci/run calls this):
#   1. dependencies (scripts/deps.sh; apt-get only for what is missing)
#   2. -Werror build (build-ci/) and the unit tests (ctest -L unit: cmocka + fuzz corpora)
#   3. ASan+UBSan build (build-asan/, clang when available) and the unit tests again
#   4. clang-format --dry-run -Werror on the C sources (when clang-format is installed)
#   5. RabbitMQ + Redis on free loopback ports (scripts/services.sh), the integration tests
#      (pytest tests/integration) against build-ci/celeryc, services stopped
# Every step runs even if an earlier one failed (except what needs a missing build); the
# last line is exactly "N passed, M failed" (ctest + pytest + format), exit 1 if M > 0.
#
# Environment:
#   CELERYC_SKIP_DEPS=1        do not run scripts/deps.sh
#   CELERYC_SKIP_ASAN=1        skip step 3
#   CELERYC_IT_SANITIZED=0     skip the second integration run against the ASan worker
#   CELERYC_TEST_TIMEOUT_MULT  deadline multiplier for the integration tests (default 1)
#   CELERYC_TEST_KEEP=1        keep service data/logs on failure
#   PYTEST_ARGS                extra pytest arguments (e.g. "-k malformed")
#   CELERYC_FUZZ_SECONDS       length of the message fuzz campaign (test_fuzz_messages.py):
#                              default 90 s in the ASan+UBSan pass (CELERYC_FUZZ_LONG=1 there),
#                              10 s against the plain build; CELERYC_FUZZ_SEED to reproduce
#   CELERYC_PYTEST_TIMEOUT     bound on each integration run, seconds (default 1800: the
#                              fuzz campaign and the reconnect outages add ~3-6 min a run)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=/usr/bin/python3
JOBS=$(nproc 2>/dev/null || echo 2)
PASSED=0
FAILED=0
SUMMARY=()
T_START=$(date +%s)

say() { printf '\n==== %s\n' "$*"; }
add_result() { # step passed failed seconds
    # Only test counts (ctest, pytest) add to "passed"; a failed build/format/services
    # step adds one failure.
    case "$1" in build* | clang-format* | deps | services*) ;; *) PASSED=$((PASSED + $2)) ;; esac
    FAILED=$((FAILED + $3))
    SUMMARY+=("$(printf '%-34s %5d passed %4d failed %5ss' "$1" "$2" "$3" "$4")")
}

# run_ctest STEP BUILD_DIR: unit tests, counted from ctest's own summary line.
run_ctest()
{
    local step="$1" dir="$2" t0 out total failed
    t0=$(date +%s)
    out=$(ctest --test-dir "$dir" -L unit --output-on-failure -j "$JOBS" --timeout 300 2>&1)
    printf '%s\n' "$out" | tail -n 60
    if [[ "$out" =~ ([0-9]+)\ tests\ failed\ out\ of\ ([0-9]+) ]]; then
        failed=${BASH_REMATCH[1]}
        total=${BASH_REMATCH[2]}
    elif grep -q "No tests were found" <<<"$out"; then
        failed=1 total=1
        echo "no unit tests found in $dir"
    else
        failed=1 total=1
    fi
    add_result "$step" $((total - failed)) "$failed" $(($(date +%s) - t0))
}

# build STEP DIR CMAKE_ARGS...: configure + build; a failed build counts as one failure.
build()
{
    local step="$1" dir="$2" t0
    shift 2
    t0=$(date +%s)
    mkdir -p "$dir"
    if cmake -S "$ROOT" -B "$dir" "$@" >"$dir/configure.log" 2>&1 &&
        cmake --build "$dir" -j "$JOBS" >"$dir/build.log" 2>&1; then
        add_result "$step" 1 0 $(($(date +%s) - t0))
        return 0
    fi
    tail -n 60 "$dir/configure.log" "$dir/build.log" 2>/dev/null
    add_result "$step" 0 1 $(($(date +%s) - t0))
    return 1
}

# ---- 1. dependencies ------------------------------------------------------------------------
if [ "${CELERYC_SKIP_DEPS:-0}" != 1 ]; then
    say "dependencies"
    bash scripts/deps.sh || {
        echo "scripts/deps.sh failed"
        add_result "deps" 0 1 0
    }
fi

# ---- 2. -Werror build + unit tests ----------------------------------------------------------
say "build (-Werror, RelWithDebInfo) in build-ci/"
if build "build -Werror" "$ROOT/build-ci" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCELERYC_WERROR=ON; then
    say "unit tests"
    run_ctest "unit tests" "$ROOT/build-ci"
fi

# ---- 3. sanitizers --------------------------------------------------------------------------
if [ "${CELERYC_SKIP_ASAN:-0}" != 1 ]; then
    say "build (ASan+UBSan) in build-asan/"
    cc=gcc
    command -v clang >/dev/null 2>&1 && cc=clang
    if CC=$cc build "build asan+ubsan ($cc)" "$ROOT/build-asan" -DCMAKE_BUILD_TYPE=Debug \
        -DCELERYC_SANITIZE=address,undefined -DCELERYC_WERROR=ON; then
        say "unit tests under ASan+UBSan"
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
            run_ctest "unit tests asan+ubsan" "$ROOT/build-asan"
    fi
fi

# ---- 4. format ------------------------------------------------------------------------------
if command -v clang-format >/dev/null 2>&1; then
    say "clang-format --dry-run -Werror"
    t0=$(date +%s)
    mapfile -t srcs < <(find include proto src tasks tests/unit tests/fuzz bench \
        -path tests/fuzz/corpus -prune -o \( -name '*.c' -o -name '*.h' \) -print 2>/dev/null | sort)
    fmt_out=$(clang-format --dry-run -Werror "${srcs[@]}" 2>&1)
    if [ -z "$fmt_out" ]; then
        add_result "clang-format (${#srcs[@]} files)" 1 0 $(($(date +%s) - t0))
    else
        echo "not clang-formatted (violations per file; fix with clang-format -i):"
        grep -o '^[^ :]*\.[ch]:' <<<"$fmt_out" | sort | uniq -c
        add_result "clang-format (${#srcs[@]} files)" 0 1 $(($(date +%s) - t0))
    fi
else
    echo "clang-format not installed: format check skipped"
fi

# ---- 5. integration -------------------------------------------------------------------------
run_pytest()
{
    local step="$1" bin="$2" t0 xml counts
    t0=$(date +%s)
    xml="$SVC_DIR/pytest-$(basename "$(dirname "$bin")").xml"
    # shellcheck disable=SC2086
    CELERYC_BIN="$bin" timeout "${CELERYC_PYTEST_TIMEOUT:-1800}" "$PY" -m pytest tests/integration -q -rfE \
        -p no:cacheprovider -W ignore::DeprecationWarning --junitxml="$xml" ${PYTEST_ARGS:-}
    counts=$("$PY" - "$xml" <<'EOF' 2>/dev/null
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
t = f = s = 0
for su in suites:
    t += int(su.get("tests", 0)); s += int(su.get("skipped", 0))
    f += int(su.get("failures", 0)) + int(su.get("errors", 0))
print(t - f - s, f)
EOF
    ) || counts="0 1"
    read -r p f <<<"$counts"
    add_result "$step" "$p" "$f" $(($(date +%s) - t0))
}

if [ -x build-ci/celeryc ]; then
    say "services"
    t0=$(date +%s)
    if SVC_DIR=$(bash scripts/services.sh start); then
        trap 'bash scripts/services.sh stop "$SVC_DIR"' EXIT
        trap 'exit 130' INT TERM
        set -a
        # shellcheck disable=SC1091
        . "$SVC_DIR/env"
        set +a
        echo "services up in $(($(date +%s) - t0))s ($SVC_DIR)"
        say "integration tests (pytest) against build-ci/celeryc"
        run_pytest "integration (pytest)" "$ROOT/build-ci/celeryc"
        if [ "${CELERYC_IT_SANITIZED:-1}" = 1 ] && [ -x build-asan/celeryc ]; then
            say "integration tests against build-asan/celeryc"
            # CELERYC_FUZZ_LONG: the message fuzz campaign runs its long form only here.
            ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
                UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                CELERYC_TEST_TIMEOUT_MULT="${CELERYC_TEST_TIMEOUT_MULT:-3}" \
                CELERYC_FUZZ_LONG=1 \
                run_pytest "integration asan+ubsan" "$ROOT/build-asan/celeryc"
        fi
        t0=$(date +%s)
        bash scripts/services.sh stop "$SVC_DIR"
        trap - EXIT
        echo "services stopped in $(($(date +%s) - t0))s"
    else
        add_result "services start" 0 1 $(($(date +%s) - t0))
    fi
else
    echo "no build-ci/celeryc: integration tests not run"
    add_result "integration (no binary)" 0 1 0
fi

say "summary ($(($(date +%s) - T_START))s)"
printf '%s\n' "${SUMMARY[@]}"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
