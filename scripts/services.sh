#!/usr/bin/env bash
# Start/stop the services the integration tests, the demo and the benchmark need, on free
# loopback ports in one data directory, isolated from any system instance.
#
#   scripts/services.sh start  [DIR] [--only redis,rabbitmq]   start, write DIR/env, print DIR
#   scripts/services.sh stop   DIR                              stop everything DIR/env lists
#   scripts/services.sh status DIR                              exit 0 iff all are alive
#   scripts/services.sh ctl    DIR ARGS...                      rabbitmqctl on our node
#   scripts/services.sh logs   DIR                              tail every service log
#   scripts/services.sh run    [DIR] -- CMD ARGS...             start, run CMD with the env
#                                                              exported, always stop after
#
# DIR defaults to a fresh mktemp dir (removed on stop unless CELERYC_TEST_KEEP=1). DIR/env is
# a sourceable file: CELERYC_TEST_AMQP_URL, CELERYC_TEST_REDIS_URL, CELERYC_TEST_PG_URL,
# ports and pids.
#
# Postgres (Debian's binaries) gets a cluster in DIR/postgres listening on 127.0.0.1 only
# (its unix socket in DIR/postgres/sock), a role celeryc with password celeryc (scram) that
# owns database celeryc and may create databases (tests make one database each):
# CELERYC_TEST_PG_URL = postgresql://celeryc:celeryc@127.0.0.1:PORT/celeryc. initdb refuses
# to run as root: as root, the cluster belongs to (and runs as) the system user postgres.
#
# RabbitMQ also gets a TLS listener (when the openssl CLI is there): a throwaway CA and a
# server certificate for DNS:localhost + IP:127.0.0.1 are made in DIR/tls at start, and the
# env file adds CELERYC_TEST_AMQPS_URL (amqps://...@localhost:PORT//: rabbitmq-c checks DNS
# names only), CELERYC_TEST_CA_FILE and a client certificate, CELERYC_TEST_CLIENT_CERT /
# CELERYC_TEST_CLIENT_KEY. The broker requires a client certificate signed by that CA on the
# TLS port (verify_peer, fail_if_no_peer_cert). The plain listener is unchanged.
#
# Redis gets a TLS port too, with the same CA and server certificate (client certificates
# not required): CELERYC_TEST_REDISS_PORT and CELERYC_TEST_REDISS_URL
# (rediss://127.0.0.1:PORT/0?ssl_cert_reqs=required&ssl_ca_certs=DIR/tls/ca.pem; the server
# certificate has an IP:127.0.0.1 SAN). Whichever service starts first makes the certificates.
#
# Environment:
#   CELERYC_TEST_TIMEOUT_MULT  multiply every deadline (sanitizer/slow machines), default 1
#   CELERYC_TEST_KEEP=1        keep DIR and print the service logs on failure
#   CELERYC_TEST_TLS=0         no TLS listener (default: on if openssl is installed)
#
# Adding a service: list it in ALL_SERVICES and write svc_<name>_start
# (sets and records its env vars with env_put, starts it, waits with a deadline) and
# svc_<name>_stop (reads its pid from the env file). Start order is the list order; stop is
# reverse order. Every process is started in its own process group (setsid) so stop can kill
# the whole group, with a TERM -> deadline -> KILL sequence.
set -euo pipefail

PY=/usr/bin/python3
ALL_SERVICES="redis rabbitmq postgres"
MULT="${CELERYC_TEST_TIMEOUT_MULT:-1}"

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# Seconds scaled by the multiplier (integer result, at least 1).
scaled() { awk -v s="$1" -v m="$MULT" 'BEGIN { v = int(s * m + 0.5); if (v < 1) v = 1; print v }'; }

now_ms() { date +%s%3N; }

# free_ports N: print N distinct free TCP ports on 127.0.0.1 (all held open while choosing).
free_ports()
{
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# env_put KEY VALUE: record in the env file and export to this shell.
env_put()
{
    printf 'export %s=%q\n' "$1" "$2" >>"$ENV_FILE"
    export "$1=$2"
}

# wait_until DEADLINE_S DESCRIPTION CMD...: run CMD every 0.2 s until it succeeds.
wait_until()
{
    local secs="$1" what="$2"
    shift 2
    local end=$(($(now_ms) + secs * 1000))
    while (($(now_ms) < end)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.2
    done
    log "timed out after ${secs}s waiting for $what"
    return 1
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# kill_group PID GRACE_S: TERM the process group led by PID, KILL it after GRACE_S.
kill_group()
{
    local pid="$1" grace="$2"
    [ -n "$pid" ] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
    local end=$(($(now_ms) + grace * 1000))
    while (($(now_ms) < end)); do
        # The group is gone when no process has it as pgid.
        if ! pgrep -g "$pid" >/dev/null 2>&1 && ! alive "$pid"; then
            return 0
        fi
        sleep 0.1
    done
    log "process group $pid did not stop in ${grace}s: KILL"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

# ---- Redis ----------------------------------------------------------------------------------

redis_ping() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

redis_tls_ping()
{
    redis-cli --tls --cacert "$2/ca.pem" -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG
}

svc_redis_start()
{
    local port tls_port tdir="$DIR/tls" tls_args=()
    read -r port tls_port <<<"$(free_ports 2)"
    mkdir -p "$DIR/redis"
    if tls_enabled; then
        tls_make_certs "$tdir" || return 1
        tls_args=(--tls-port "$tls_port" --tls-cert-file "$tdir/server.pem"
            --tls-key-file "$tdir/server.key" --tls-ca-cert-file "$tdir/ca.pem"
            --tls-auth-clients no)
    else
        tls_port=""
    fi
    setsid redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
        --dir "$DIR/redis" --daemonize no --logfile "$DIR/redis/redis.log" \
        --protected-mode yes --databases 16 "${tls_args[@]}" </dev/null >/dev/null 2>&1 &
    local pid=$!
    env_put CELERYC_TEST_REDIS_PID "$pid"
    env_put CELERYC_TEST_REDIS_PORT "$port"
    env_put CELERYC_TEST_REDIS_URL "redis://127.0.0.1:$port/0"
    wait_until "$(scaled 15)" "redis on 127.0.0.1:$port" redis_ping "$port"
    if [ -n "$tls_port" ]; then
        env_put CELERYC_TEST_REDISS_PORT "$tls_port"
        env_put CELERYC_TEST_REDISS_URL \
            "rediss://127.0.0.1:$tls_port/0?ssl_cert_reqs=required&ssl_ca_certs=$tdir/ca.pem"
        env_put CELERYC_TEST_CA_FILE "$tdir/ca.pem"
        wait_until "$(scaled 15)" "redis TLS on 127.0.0.1:$tls_port" \
            redis_tls_ping "$tls_port" "$tdir"
    fi
}

svc_redis_stop()
{
    kill_group "${CELERYC_TEST_REDIS_PID:-}" "$(scaled 10)"
}

svc_redis_alive() { alive "${CELERYC_TEST_REDIS_PID:-}" && redis_ping "$CELERYC_TEST_REDIS_PORT"; }

svc_redis_logs() { tail -n 40 "$DIR/redis/redis.log" 2>/dev/null || true; }

# ---- RabbitMQ (and its own epmd) -----------------------------------------------------------

amqp_ready()
{
    "$PY" - "$1" <<'EOF'
import sys, amqp
c = amqp.Connection(host="127.0.0.1:%s" % sys.argv[1], userid="guest", password="guest",
                    virtual_host="/", connect_timeout=2)
c.connect()
c.close()
EOF
}

# tls_make_certs DIR: a throwaway CA (ca.pem), a server certificate for DNS:localhost and
# IP:127.0.0.1 (server.pem/.key) and a client certificate (client.pem/.key), RSA 2048, valid
# for 2 days, keys unencrypted. Nothing outside DIR is read or written. Made once per DIR
# (Redis and RabbitMQ share them).
tls_make_certs()
{
    local d="$1" who
    [ -s "$d/ca.pem" ] && [ -s "$d/server.pem" ] && [ -s "$d/client.pem" ] && return 0
    mkdir -p "$d"
    (
        cd "$d"
        umask 077
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=celeryc test CA $$" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" -keyout ca.key -out ca.pem
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
            >server.ext
        printf '%s\n' "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=clientAuth" \
            >client.ext
        for who in server client; do
            openssl req -newkey rsa:2048 -nodes -subj "/CN=celeryc-test-$who" \
                -keyout "$who.key" -out "$who.csr"
            openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key \
                -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$who.ext" -out "$who.pem"
        done
        chmod 644 ca.pem server.pem client.pem
    ) >"$d/openssl.log" 2>&1 || {
        cat "$d/openssl.log" >&2
        return 1
    }
}

tls_enabled() { [ "${CELERYC_TEST_TLS:-1}" != 0 ] && command -v openssl >/dev/null 2>&1; }

# A full TLS handshake on the amqps port with the test CA and the client certificate,
# checking the server certificate for "localhost" (what the worker does).
amqps_ready()
{
    "$PY" - "$1" "$2" <<'EOF'
import socket, ssl, sys
port, d = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=d + "/ca.pem")
ctx.load_cert_chain(d + "/client.pem", d + "/client.key")
with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
    with ctx.wrap_socket(s, server_hostname="localhost") as t:
        t.sendall(b"AMQP\x00\x00\x09\x01")
        assert t.recv(1)  # connection.start
EOF
}

svc_rabbitmq_start()
{
    local ports amqp_port dist_port epmd_port tls_port node rdir tdir
    ports=$(free_ports 4)
    read -r amqp_port dist_port epmd_port tls_port <<<"$ports"
    node="ccit$$x$RANDOM@localhost"
    rdir="$DIR/rabbitmq"
    tdir="$DIR/tls"
    mkdir -p "$rdir/mnesia" "$rdir/log" "$rdir/schema" "$rdir/generated" "$rdir/home"

    cat >"$rdir/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$amqp_port
loopback_users = none
log.file.level = info
log.console = false
disk_free_limit.absolute = 10MB
vm_memory_high_watermark.relative = 0.6
EOF
    if tls_enabled; then
        tls_make_certs "$tdir" || return 1
        cat >>"$rdir/rabbitmq.conf" <<EOF
listeners.ssl.1 = 127.0.0.1:$tls_port
ssl_options.cacertfile = $tdir/ca.pem
ssl_options.certfile = $tdir/server.pem
ssl_options.keyfile = $tdir/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
EOF
    else
        tls_port=""
        log "no TLS listener (CELERYC_TEST_TLS=0 or no openssl)"
    fi
    echo '[].' >"$rdir/enabled_plugins"
    : >"$rdir/rabbitmq-env.conf"
    echo '[].' >"$rdir/advanced.config"
    # A fixed cookie in the data dir's HOME: no dependence on the invoking user's ~.
    printf 'celeryctestcookie%s' "$RANDOM" >"$rdir/home/.erlang.cookie"
    chmod 400 "$rdir/home/.erlang.cookie"

    export HOME="$rdir/home"
    export ERL_EPMD_PORT="$epmd_port" ERL_EPMD_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$amqp_port"
    export RABBITMQ_DIST_PORT="$dist_port" RABBITMQ_NODENAME="$node"
    export RABBITMQ_MNESIA_BASE="$rdir/mnesia" RABBITMQ_LOG_BASE="$rdir/log"
    export RABBITMQ_PID_FILE="$rdir/rabbitmq.pid" RABBITMQ_CONFIG_FILE="$rdir/rabbitmq.conf"
    export RABBITMQ_ADVANCED_CONFIG_FILE="$rdir/advanced.config"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$rdir/enabled_plugins" RABBITMQ_ENABLED_PLUGINS=""
    export RABBITMQ_CONF_ENV_FILE="$rdir/rabbitmq-env.conf"
    export RABBITMQ_SCHEMA_DIR="$rdir/schema" RABBITMQ_GENERATED_CONFIG_DIR="$rdir/generated"
    export RABBITMQ_PLUGINS_EXPAND_DIR="$rdir/plugins-expand"
    export RABBITMQ_LOGS="$rdir/log/rabbit.log"
    export RABBITMQ_CTL_ERL_ARGS="" RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

    env_put CELERYC_TEST_EPMD_PORT "$epmd_port"
    setsid epmd -address 127.0.0.1 -port "$epmd_port" </dev/null >"$rdir/log/epmd.log" 2>&1 &
    env_put CELERYC_TEST_EPMD_PID "$!"
    wait_until "$(scaled 10)" "epmd on 127.0.0.1:$epmd_port" \
        epmd -port "$epmd_port" -names

    # The wrapper in /usr/sbin would su to the rabbitmq user and use /var/lib/rabbitmq: run
    # the server script directly, as the invoking user, on our data dir.
    setsid /usr/lib/rabbitmq/bin/rabbitmq-server </dev/null >"$rdir/log/stdout.log" 2>&1 &
    env_put CELERYC_TEST_RABBITMQ_PID "$!"
    env_put CELERYC_TEST_RABBITMQ_NODENAME "$node"
    env_put CELERYC_TEST_RABBITMQ_HOME "$rdir/home"
    env_put CELERYC_TEST_AMQP_PORT "$amqp_port"
    env_put CELERYC_TEST_DIST_PORT "$dist_port"
    env_put CELERYC_TEST_AMQP_URL "amqp://guest:guest@127.0.0.1:$amqp_port//"
    wait_until "$(scaled 90)" "RabbitMQ on 127.0.0.1:$amqp_port" amqp_ready "$amqp_port"
    if [ -n "$tls_port" ]; then
        env_put CELERYC_TEST_AMQPS_PORT "$tls_port"
        env_put CELERYC_TEST_AMQPS_URL "amqps://guest:guest@localhost:$tls_port//"
        env_put CELERYC_TEST_CA_FILE "$tdir/ca.pem"
        env_put CELERYC_TEST_CLIENT_CERT "$tdir/client.pem"
        env_put CELERYC_TEST_CLIENT_KEY "$tdir/client.key"
        wait_until "$(scaled 30)" "RabbitMQ TLS on 127.0.0.1:$tls_port" \
            amqps_ready "$tls_port" "$tdir"
    fi
}

svc_rabbitmq_stop()
{
    kill_group "${CELERYC_TEST_RABBITMQ_PID:-}" "$(scaled 30)"
    kill_group "${CELERYC_TEST_EPMD_PID:-}" "$(scaled 5)"
}

svc_rabbitmq_alive()
{
    alive "${CELERYC_TEST_RABBITMQ_PID:-}" && amqp_ready "$CELERYC_TEST_AMQP_PORT"
}

# rabbitmqctl against our node (policies for the tests, diagnostics): services.sh ctl DIR ARGS
rabbitmq_ctl()
{
    HOME="$CELERYC_TEST_RABBITMQ_HOME" ERL_EPMD_PORT="$CELERYC_TEST_EPMD_PORT" \
        RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/rabbitmq/enabled_plugins" \
        timeout "$(scaled 60)" /usr/lib/rabbitmq/bin/rabbitmqctl -n "$CELERYC_TEST_RABBITMQ_NODENAME" "$@"
}

svc_rabbitmq_logs()
{
    local f
    for f in "$DIR"/rabbitmq/log/stdout.log "$DIR"/rabbitmq/log/rabbit.log; do
        [ -f "$f" ] && {
            echo "---- $f"
            tail -n 40 "$f"
        }
    done
    return 0
}

# ---- PostgreSQL -----------------------------------------------------------------------------

pg_bindir()
{
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && {
            echo "$d"
            return 0
        }
    done
    return 1
}

# as_pg CMD...: exec CMD as the cluster's owner (the system user postgres when we are root).
as_pg()
{
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
    else
        "$@"
    fi
}

pg_ready() { "$1/pg_isready" -q -h 127.0.0.1 -p "$2" -d postgres; }

svc_postgres_start()
{
    local bin port pdir="$DIR/postgres"
    bin=$(pg_bindir) || die "no initdb found (install postgresql)"
    read -r port <<<"$(free_ports 1)"
    mkdir -p "$pdir/data" "$pdir/sock"
    printf 'celeryc\n' >"$pdir/pwfile"
    if [ "$(id -u)" = 0 ]; then
        chown -R postgres: "$pdir"
        # DIR may be a mktemp dir (0700): the postgres user must be able to pass through it.
        chmod o+x "$DIR"
        as_pg test -r "$pdir/pwfile" ||
            die "user postgres cannot reach $pdir (a parent directory is not o+x)"
    fi
    chmod 700 "$pdir/data"
    as_pg "$bin/initdb" -D "$pdir/data" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$pdir/pwfile" -E UTF8 --locale=C.UTF-8 \
        >"$pdir/initdb.log" 2>&1 || {
        cat "$pdir/initdb.log" >&2
        return 1
    }
    cat >>"$pdir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pdir/sock'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
    local drop=()
    [ "$(id -u)" = 0 ] && drop=(setpriv --reuid=postgres --regid=postgres --init-groups --)
    setsid "${drop[@]}" "$bin/postgres" -D "$pdir/data" </dev/null >"$pdir/postgres.log" 2>&1 &
    env_put CELERYC_TEST_PG_PID "$!"
    env_put CELERYC_TEST_PG_PORT "$port"
    env_put CELERYC_TEST_PG_SOCKDIR "$pdir/sock"
    wait_until "$(scaled 30)" "postgres on 127.0.0.1:$port" pg_ready "$bin" "$port"
    as_pg "$bin/psql" -q -h "$pdir/sock" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 \
        -c "CREATE ROLE celeryc LOGIN CREATEDB PASSWORD 'celeryc'" \
        -c "CREATE DATABASE celeryc OWNER celeryc" >/dev/null || return 1
    env_put CELERYC_TEST_PG_URL "postgresql://celeryc:celeryc@127.0.0.1:$port/celeryc"
}

svc_postgres_stop()
{
    # SIGINT is postgres' fast shutdown (clients disconnected, clean checkpoint); the group
    # TERM -> KILL sequence is the fallback.
    [ -n "${CELERYC_TEST_PG_PID:-}" ] && kill -INT "$CELERYC_TEST_PG_PID" 2>/dev/null
    kill_group "${CELERYC_TEST_PG_PID:-}" "$(scaled 15)"
}

svc_postgres_alive()
{
    local bin
    bin=$(pg_bindir) || return 1
    alive "${CELERYC_TEST_PG_PID:-}" && pg_ready "$bin" "$CELERYC_TEST_PG_PORT"
}

svc_postgres_logs() { tail -n 40 "$DIR/postgres/postgres.log" 2>/dev/null || true; }

# ---- Commands -------------------------------------------------------------------------------

load_env()
{
    [ -f "$DIR/env" ] || return 1
    # shellcheck disable=SC1091
    . "$DIR/env"
}

print_logs()
{
    local s
    for s in $ALL_SERVICES; do
        log "---- logs of $s ($DIR)"
        "svc_${s}_logs" >&2
    done
}

do_stop()
{
    load_env || return 0
    local s rev=""
    for s in ${CELERYC_TEST_SERVICES:-$ALL_SERVICES}; do rev="$s $rev"; done
    for s in $rev; do
        "svc_${s}_stop" || true
    done
    if [ "${CELERYC_TEST_OWN_DIR:-0}" = 1 ] && [ "${CELERYC_TEST_KEEP:-0}" != 1 ]; then
        rm -rf "$DIR"
    else
        rm -f "$DIR/env"
    fi
}

do_start()
{
    local own=0 only="$ALL_SERVICES"
    DIR=""
    while [ $# -gt 0 ]; do
        case "$1" in
        --only)
            only="${2//,/ }"
            shift 2
            ;;
        *)
            DIR="$1"
            shift
            ;;
        esac
    done
    if [ -z "$DIR" ]; then
        DIR=$(mktemp -d "${TMPDIR:-/tmp}/celeryc-it.XXXXXX")
        own=1
    fi
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd)
    ENV_FILE="$DIR/env"
    if [ -f "$ENV_FILE" ]; then
        die "$ENV_FILE exists: services already running? ($0 stop $DIR)"
    fi
    : >"$ENV_FILE"
    env_put CELERYC_TEST_DATA_DIR "$DIR"
    env_put CELERYC_TEST_OWN_DIR "$own"
    env_put CELERYC_TEST_SERVICES "$only"
    # If anything below fails (or we are interrupted), stop what was started.
    trap 'rc=$?; if [ $rc -ne 0 ]; then print_logs; do_stop; fi' EXIT
    trap 'exit 130' INT TERM
    local s t0 t1
    for s in $only; do
        t0=$(now_ms)
        ( "svc_${s}_start" ) || die "$s failed to start"
        t1=$(now_ms)
        # The subshell's exports are lost; the env file has them.
        load_env
        log "$s ready in $(((t1 - t0) / 1000)).$(((t1 - t0) % 1000 / 100))s"
    done
    trap - EXIT INT TERM
    echo "$DIR"
}

cmd="${1:-}"
[ -n "$cmd" ] || die "usage: $0 start [DIR] [--only a,b] | stop DIR | status DIR | run [DIR] -- CMD..."
shift
case "$cmd" in
start)
    do_start "$@"
    ;;
stop)
    DIR="${1:?stop needs DIR}"
    do_stop
    ;;
status)
    DIR="${1:?status needs DIR}"
    load_env || exit 1
    for s in $CELERYC_TEST_SERVICES; do
        "svc_${s}_alive" || exit 1
    done
    ;;
ctl)
    DIR="${1:?ctl needs DIR}"
    shift
    load_env || die "no env in $DIR"
    rabbitmq_ctl "$@"
    ;;
logs)
    DIR="${1:?logs needs DIR}"
    print_logs
    ;;
run)
    dir_arg=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        dir_arg+=("$1")
        shift
    done
    [ "${1:-}" = "--" ] || die "run needs -- CMD"
    shift
    DIR=$(do_start "${dir_arg[@]}") || exit 1
    trap 'do_stop' EXIT
    trap 'exit 130' INT TERM
    load_env
    rc=0
    "$@" || rc=$?
    if [ $rc -ne 0 ] && [ "${CELERYC_TEST_KEEP:-0}" = 1 ]; then
        print_logs
    fi
    exit $rc
    ;;
*)
    die "unknown command $cmd"
    ;;
esac
