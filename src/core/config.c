/* Worker configuration: one static table row per option, three sources, one set of checks.
 *
 * Design: every option of struct cc_config is one row of cfg_options[]: its name (Celery's
 * setting name where Celery has one, so a Celery user recognises it in the config file), its
 * type and field offset, its default written as text, an extra environment variable (Celery's
 * CELERY_BROKER_URL / CELERY_RESULT_BACKEND), its `celery worker` flags, a range or choice
 * list, the help text and the commands it applies to. Defaults are parsed with the same code
 * as user input, so a bad default fails the unit test that loads them. Loading is:
 *   defaults -> config file (--config or CELERYC_CONFIG) -> environment -> command line
 *   -> derived values (CPU count, default queue list, hostname expansion)
 * Every value goes through cfg_set(), which parses, range-checks and stores it, and on
 * failure names the source and the option: "config file /x:12: worker_concurrency: not an
 * integer: 'abc'", "environment CELERYC_WORKER_CONCURRENCY: ...", "--concurrency: ...".
 *
 * Environment: CELERYC_<UPPERCASE_NAME> for every option; CELERY_BROKER_URL and
 * CELERY_RESULT_BACKEND as Celery reads them (the CELERYC_ name wins when both are set).
 * An empty variable counts as unset (systemd EnvironmentFile lines like "X=" are common).
 *
 * Command line: flags as `celery worker` spells them; "--flag value", "--flag=value", "-c 2"
 * and "-c2" all work. Boolean flags take no value ("--acks-late"), "--no-acks-late" turns
 * one off, and "--acks-late=false" also works. --help/-h anywhere -> CC_EAGAIN.
 *
 * Invariants: after cc_config_load(), whatever it returned, `cfg` may be passed to
 * cc_config_deinit() (also twice). On CC_OK: broker_url parsed as AMQP, result_backend is "none"
 * or a URL of a supported scheme, queues non-empty, concurrency >= 1, hostname expanded,
 * every TLS file set explicitly is a readable regular file, and broker_ssl_ca_certs is
 * resolved (the option, else $SSL_CERT_FILE, else the system bundle; the last two are only
 * checked when the broker is amqps:// with verification on, so a stray SSL_CERT_FILE never
 * stops a plain-AMQP worker).
 *
 * Reference: celery/bin/worker.py (flags, help texts), celery/app/defaults.py (defaults),
 * celery/utils/nodenames.py and celery-wire.md §6.1 (nodenames).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h" /* [pgb] cc_backend_pg_check_url */
#include "config.h"
#include "log.h"
#include "pool.h"
#include "ratelimit.h"
#include "url.h"
#include "util.h"

enum cfg_type {
    CFG_STR,      /* char * */
    CFG_BROKER,   /* char *, checked with cc_url_parse_amqp */
    CFG_BACKEND,  /* char *, "none" or a supported backend URL */
    CFG_HOSTNAME, /* char *, a nodename template (expanded after loading) */
    CFG_QUEUES,   /* char ** + n_queues, comma list */
    CFG_INT,      /* int, min..max */
    CFG_INT64,    /* int64_t, min..max */
    CFG_SIZE,     /* size_t, bytes with optional K/M/G suffix, min..max */
    CFG_DOUBLE,   /* double, min..max */
    CFG_BOOL,     /* bool */
    CFG_LOGLEVEL, /* int, cc_log_level_parse */
    CFG_CHOICE,   /* int/enum, one of choices[] */
    CFG_FILE,     /* char *, a readable regular file; "" = unset (NULL after loading) */
};

struct cfg_choice {
    const char *name;
    int value;
};

struct cfg_opt {
    const char *name; /* config-file name; env CELERYC_<UPPER(name)> */
    enum cfg_type type;
    size_t off;       /* offsetof(struct cc_config, field) */
    const char *dflt; /* default as text, parsed like user input */
    const char *env;  /* extra environment variable (Celery's), or NULL */
    char short_flag;  /* 0 if none */
    const char *long_flag;
    const char *metavar;              /* NULL for booleans */
    double min, max;                  /* numeric types */
    const struct cfg_choice *choices; /* CFG_CHOICE, NULL-name terminated */
    unsigned cmds;                    /* CC_CMD_* bits */
    bool file_ok;                     /* may be set in the config file */
    const char *help;
};

static const struct cfg_choice cfg_pool_choices[] = {
    {"prefork", CC_POOL_PREFORK},
    {"threads", CC_POOL_THREADS},
    {"solo", CC_POOL_SOLO},
    {NULL, 0},
};

static const struct cfg_choice cfg_log_format_choices[] = {
    {"human", CC_LOG_HUMAN},
    {"json", CC_LOG_JSON},
    {NULL, 0},
};

static const struct cfg_choice cfg_queue_type_choices[] = {
    {"classic", CC_QUEUE_CLASSIC},
    {"quorum", CC_QUEUE_QUORUM},
    {NULL, 0},
};

static const struct cfg_choice cfg_ssl_verify_choices[] = {
    {"required", CC_SSL_VERIFY_REQUIRED},
    {"none", CC_SSL_VERIFY_NONE},
    {NULL, 0},
};

static const struct cfg_choice cfg_dead_letter_choices[] = {
    {"queue", CC_DEAD_LETTER_QUEUE},
    {"dlx", CC_DEAD_LETTER_DLX},
    {NULL, 0},
};

#define CFG_OFF(field) offsetof(struct cc_config, field)
#define CFG_W          CC_CMD_WORKER
#define CFG_WB         (CC_CMD_WORKER | CC_CMD_BEAT)

/* clang-format off */
static const struct cfg_opt cfg_options[] = {
    {"config", CFG_STR, CFG_OFF(config_file), "", NULL, 0, "--config", "FILE", 0, 0, NULL,
     CFG_WB, false,
     "Read options from FILE (\"name = value\" lines) before the environment and the "
     "command line."},
    {"broker_url", CFG_BROKER, CFG_OFF(broker_url), "amqp://guest:guest@localhost:5672//",
     "CELERY_BROKER_URL", 'b', "--broker", "URL", 0, 0, NULL, CFG_WB, true,
     "Broker URL (amqp://user:password@host:port/vhost, amqps:// for TLS)."},
    {"result_backend", CFG_BACKEND, CFG_OFF(result_backend), "none", "CELERY_RESULT_BACKEND",
     0, "--result-backend", "URL", 0, 0, NULL, CFG_W, true,
     "Result backend URL (redis://host:port/db, unix:///path?db=N, "
     "db+postgresql://user:password@host:port/db); \"none\" or empty stores no results."},
    {"job_store", CFG_STR, CFG_OFF(job_store), "", "CELERYC_JOB_STORE", 0, "--job-store", "URL",
     0, 0, NULL, CFG_WB, true,
     "Job store (postgresql://user:password@host:port/db): jobs, runs and run logs; the "
     "beat's lease and schedule state. Empty: no job store."},
    {"job_store_upgrade", CFG_BOOL, CFG_OFF(job_store_upgrade), "false", NULL, 0, "--db-upgrade",
     NULL, 0, 0, NULL, CFG_WB, true,
     "Apply pending job store migrations at start (as `celeryc db upgrade`)."},
    /* [jobrun] */
    {"job_run_heartbeat_interval", CFG_DOUBLE, CFG_OFF(job_run_heartbeat_s), "10", NULL, 0,
     "--job-run-heartbeat-interval", "SECONDS", 0.1, 3600, NULL, CFG_W, true,
     "Seconds between heartbeats of the job runs this worker executes (with --job-store); "
     "the beat's reaper fails a run whose heartbeat is older than its timeout."},
    /* [beat] `celeryc beat` (src/beat/beat.c); Celery's beat settings and `celery beat` flags. */
    {"beat_schedule_file", CFG_STR, CFG_OFF(beat_schedule_file), "", NULL, 0,
     "--schedule-file", "FILE", 0, 0, NULL, CC_CMD_BEAT, true,
     "JSON schedule ({\"entries\": {NAME: {\"task\", \"schedule\", ...}}}, see the README); "
     "empty: only the job store's jobs."},
    {"beat_schedule", CFG_STR, CFG_OFF(beat_state_file), "celerybeat-schedule.json", NULL, 's',
     "--schedule", "FILE", 0, 0, NULL, CC_CMD_BEAT, true,
     "Where the last run of each schedule-file entry is kept when there is no job store "
     "(Celery's -s; a celeryc JSON file, not Python's shelve)."},
    {"beat_max_loop_interval", CFG_DOUBLE, CFG_OFF(beat_max_loop_interval_s), "300", NULL, 0,
     "--max-interval", "SECONDS", 0.01, 86400, NULL, CC_CMD_BEAT, true,
     "Longest sleep between two looks at the schedule (Celery's beat_max_loop_interval)."},
    {"beat_lease_ttl", CFG_DOUBLE, CFG_OFF(beat_lease_ttl_s), "10", NULL, 0, "--lease-ttl",
     "SECONDS", 0.3, 3600, NULL, CC_CMD_BEAT, true,
     "With a job store: the leader's lease lasts this long and is renewed every third of it; "
     "a standby takes over within two lease periods of the leader's death."},
    {"beat_run_heartbeat_timeout", CFG_INT, CFG_OFF(beat_run_heartbeat_timeout_s), "60", NULL,
     0, "--run-heartbeat-timeout", "SECONDS", 1, 86400, NULL, CC_CMD_BEAT, true,
     "A running job run whose worker has not sent a heartbeat for this long is failed by the "
     "leader's reaper."},
    {"timezone", CFG_STR, CFG_OFF(timezone), "UTC", NULL, 0, "--timezone", "ZONE", 0, 0, NULL,
     CC_CMD_BEAT, true,
     "Default zone of crontab entries of the schedule file (an IANA name; Celery's timezone)."},
    {"task_queues", CFG_QUEUES, CFG_OFF(queues), "", NULL, 'Q', "--queues", "Q1,Q2", 0, 0,
     NULL, CFG_W, true,
     "Comma-separated list of queues to consume from (default: task_default_queue)."},
    {"worker_hostname", CFG_HOSTNAME, CFG_OFF(hostname), "celery@%h", NULL, 'n', "--hostname",
     "NAME", 0, 0, NULL, CFG_WB, true,
     "Set custom hostname (e.g., 'w1@%h'). Expands: %h (hostname), %n (name) and %d "
     "(domain); a name without '@' gets 'celery@'."},
    {"worker_concurrency", CFG_INT, CFG_OFF(concurrency), "0", NULL, 'c', "--concurrency", "N",
     0, 10000, NULL, CFG_W, true,
     "Number of child processes processing the queue. The default (0) is the number of CPUs "
     "available on your system."},
    {"worker_loglevel", CFG_LOGLEVEL, CFG_OFF(loglevel), "WARNING", NULL, 'l', "--loglevel",
     "LEVEL", 0, 0, NULL, CFG_WB, true,
     "Logging level: DEBUG, INFO, WARNING, ERROR, CRITICAL or FATAL."},
    {"log_format", CFG_CHOICE, CFG_OFF(log_format), "human", NULL, 0, "--log-format", "FORMAT",
     0, 0, cfg_log_format_choices, CFG_WB, true,
     "Log line format: human (Celery's) or json (one object per line)."},
    {"worker_prefetch_multiplier", CFG_INT, CFG_OFF(prefetch_multiplier), "4", NULL, 0,
     "--prefetch-multiplier", "N", 0, 65535, NULL, CFG_W, true,
     "Messages to prefetch per child process (concurrency x N); 0 means no limit."},
    {"worker_pool", CFG_CHOICE, CFG_OFF(pool), "prefork", NULL, 'P', "--pool", "POOL", 0, 0,
     cfg_pool_choices, CFG_W, true,
     "Pool implementation: prefork, threads or solo."},
    {"task_default_queue", CFG_STR, CFG_OFF(default_queue), "celery", NULL, 0,
     "--default-queue", "NAME", 0, 0, NULL, CFG_WB, true,
     "Name of the default queue, used when no queues are given."},
    {"task_create_missing_queues", CFG_BOOL, CFG_OFF(create_missing_queues), "true", NULL, 0,
     "--create-missing-queues", NULL, 0, 0, NULL, CFG_W, true,
     "Declare queues that do not exist yet (durable, direct exchange of the same name)."},
    {"task_default_queue_type", CFG_CHOICE, CFG_OFF(queue_type), "classic", NULL, 0,
     "--queue-type", "TYPE", 0, 0, cfg_queue_type_choices, CFG_W, true,
     "Type of the queues the worker declares: classic, or quorum (x-queue-type, replicated; "
     "per-consumer QoS, and ETA messages go to the delay store at once when Redis is "
     "configured). Celery 5.5's setting name."},
    {"task_queue_max_priority", CFG_INT, CFG_OFF(queue_max_priority), "0", NULL, 0,
     "--max-priority", "N", 0, 255, NULL, CFG_W, true,
     "x-max-priority of declared queues (1..255); 0 declares queues without priorities."},
    {"task_acks_late", CFG_BOOL, CFG_OFF(acks_late), "false", NULL, 0, "--acks-late", NULL, 0,
     0, NULL, CFG_W, true,
     "Acknowledge messages after the task ran instead of just before."},
    {"task_track_started", CFG_BOOL, CFG_OFF(track_started), "false", NULL, 0,
     "--track-started", NULL, 0, 0, NULL, CFG_W, true,
     "Store the STARTED state when a task begins executing."},
    /* [events] */
    {"worker_send_task_events", CFG_BOOL, CFG_OFF(send_task_events), "false", NULL, 'E',
     "--task-events", NULL, 0, 0, NULL, CFG_W, true,
     "Send task events (task-received, -started, -succeeded, ...) on the celeryev exchange, "
     "for celery events and Flower. Worker events (online, heartbeat, offline) are always "
     "sent."},
    {"worker_heartbeat_interval", CFG_DOUBLE, CFG_OFF(event_heartbeat_s), "2.0", NULL, 0,
     "--heartbeat-interval", "SECONDS", 0.1, 3600, NULL, CFG_W, true,
     "Seconds between worker-heartbeat events (Celery's --heartbeat-interval; monitors "
     "consider a worker offline after twice this without one)."},
    {"result_extended", CFG_BOOL, CFG_OFF(result_extended), "false", NULL, 0,
     "--result-extended", NULL, 0, 0, NULL, CFG_W, true,
     "Store extended task metadata (name, args, kwargs, worker, retries, queue) in results."},
    {"result_expires", CFG_INT64, CFG_OFF(result_expires_s), "86400", NULL, 0,
     "--result-expires", "SECONDS", 0, 315360000, NULL, CFG_W, true,
     "Seconds until stored results expire; 0 means never."},
    /* [canvas-chord] Celery: result_backend_transport_options={"result_chord_ordered": ...} */
    {"result_chord_ordered", CFG_BOOL, CFG_OFF(result_chord_ordered), "true", NULL, 0,
     "--result-chord-ordered", NULL, 0, 0, NULL, CFG_W, true,
     "Redis chord join keeps members in a sorted set by group_index (Celery's default); "
     "false: a list in completion order (RPUSH), as Celery's transport option "
     "result_chord_ordered=False. Every worker of the fleet must agree."},
    /* [canvas-exec] Celery's task_inherit_parent_priority */
    {"task_inherit_parent_priority", CFG_BOOL, CFG_OFF(inherit_parent_priority), "false", NULL, 0,
     "--inherit-parent-priority", NULL, 0, 0, NULL, CFG_W, true,
     "Messages a task publishes (callbacks, chain steps, cc_task_send) take its delivery "
     "priority unless they set their own, as Celery's task_inherit_parent_priority."},
    {"task_store_errors_even_if_ignored", CFG_BOOL, CFG_OFF(store_errors_even_if_ignored),
     "false", NULL, 0, "--store-errors-even-if-ignored", NULL, 0, 0, NULL, CFG_W, true,
     "Store errors of tasks whose results are ignored."},
    /* Pools and time limits (issue #3): Celery's settings and `celery worker` flags. */
    {"task_time_limit", CFG_DOUBLE, CFG_OFF(time_limit_s), "0", NULL, 0, "--time-limit",
     "SECONDS", 0, 31536000, NULL, CFG_W, true,
     "Hard time limit in seconds for tasks (0 = none): the child running a task past it is "
     "killed and the task fails with TimeLimitExceeded. Prefork pool only."},
    {"task_soft_time_limit", CFG_DOUBLE, CFG_OFF(soft_time_limit_s), "0", NULL, 0,
     "--soft-time-limit", "SECONDS", 0, 31536000, NULL, CFG_W, true,
     "Soft time limit in seconds for tasks (0 = none): the task is told and may clean up; "
     "if it does not look, it fails with SoftTimeLimitExceeded."},
    {"task_acks_on_failure_or_timeout", CFG_BOOL, CFG_OFF(acks_on_failure_or_timeout), "true",
     NULL, 0, "--acks-on-failure-or-timeout", NULL, 0, 0, NULL, CFG_W, true,
     "With acks_late: ack the message of a failed or timed-out task (off: reject it without "
     "requeue, so it is dead-lettered)."},
    {"task_reject_on_worker_lost", CFG_BOOL, CFG_OFF(reject_on_worker_lost), "false", NULL, 0,
     "--reject-on-worker-lost", NULL, 0, 0, NULL, CFG_W, true,
     "With acks_late: requeue the message of a task whose child died (WorkerLostError) "
     "instead of storing the failure."},
    {"worker_max_tasks_per_child", CFG_INT, CFG_OFF(max_tasks_per_child), "0", NULL, 0,
     "--max-tasks-per-child", "N", 0, 2147483647, NULL, CFG_W, true,
     "Maximum number of tasks a pool process executes before it is replaced (0 = no limit)."},
    {"worker_max_memory_per_child", CFG_INT64, CFG_OFF(max_memory_per_child_kib), "0", NULL,
     0, "--max-memory-per-child", "KIB", 0, 1e12, NULL, CFG_W, true,
     "Maximum resident memory in KiB a pool process may reach, checked after each task; past "
     "it the process is replaced (0 = no limit)."},
    {"worker_max_message_bytes", CFG_SIZE, CFG_OFF(max_message_bytes), "16M", NULL, 0,
     "--max-message-bytes", "BYTES", 1024, CC_POOL_MAX_MESSAGE_BYTES, NULL, CFG_W, true,
     "Largest message body accepted (K, M, G suffixes are powers of 1024; at most 256M, "
     "the largest job the pool hands to a child); larger messages are rejected."},
    {"broker_heartbeat", CFG_DOUBLE, CFG_OFF(heartbeat_s), "120", NULL, 0, "--broker-heartbeat",
     "SECONDS", 0, 65535, NULL, CFG_WB, true,
     "AMQP heartbeat interval in seconds; 0 disables heartbeats."},
    {"broker_connection_timeout", CFG_DOUBLE, CFG_OFF(connect_timeout_s), "4", NULL, 0,
     "--broker-connection-timeout", "SECONDS", 0.001, 3600, NULL, CFG_WB, true,
     "Seconds to wait for the broker connection to be established."},
    {"broker_connection_max_retries", CFG_INT, CFG_OFF(connection_max_retries), "100", NULL,
     0, "--broker-connection-max-retries", "N", 0, 1000000, NULL, CFG_WB, true,
     "Reconnect attempts after the broker connection is lost before the worker gives up "
     "and exits 1; 0 retries forever (Celery's broker_connection_max_retries)."},
    /* Celery's broker_use_ssl = {'ca_certs', 'certfile', 'keyfile', 'cert_reqs'}. */
    {"broker_ssl_ca_certs", CFG_FILE, CFG_OFF(broker_ssl_ca_certs), "", NULL, 0,
     "--broker-ssl-ca", "FILE", 0, 0, NULL, CFG_WB, true,
     "CA certificates (PEM) that sign the broker's certificate, for amqps://. Default: "
     "$SSL_CERT_FILE, else the system bundle " CC_CONFIG_SYSTEM_CA_FILE "."},
    {"broker_ssl_certfile", CFG_FILE, CFG_OFF(broker_ssl_certfile), "", NULL, 0,
     "--broker-ssl-cert", "FILE", 0, 0, NULL, CFG_WB, true,
     "Client certificate (PEM, may include the chain) presented to the broker over amqps://."},
    {"broker_ssl_keyfile", CFG_FILE, CFG_OFF(broker_ssl_keyfile), "", NULL, 0,
     "--broker-ssl-key", "FILE", 0, 0, NULL, CFG_WB, true,
     "Private key (PEM, unencrypted) of the client certificate; default: read it from "
     "broker_ssl_certfile."},
    {"broker_ssl_verify", CFG_CHOICE, CFG_OFF(broker_ssl_verify), "required", NULL, 0,
     "--broker-ssl-verify", "MODE", 0, 0, cfg_ssl_verify_choices, CFG_WB, true,
     "amqps:// certificate checks: required (chain and host name, Celery's CERT_REQUIRED) or "
     "none (encrypted but not authenticated; the worker warns at start)."},
    /* Delivery guarantees (src/worker/redeliver.c, src/worker/delaystore.c). */
    {"worker_deduplicate_successful_tasks", CFG_BOOL, CFG_OFF(dedup_successful), "true", NULL,
     0, "--deduplicate-successful-tasks", NULL, 0, 0, NULL, CFG_W, true,
     "With acks_late: a redelivered message whose result is already SUCCESS in the (Redis) "
     "result backend is acked without running again (Celery's option; on by default here)."},
    {"worker_max_redeliveries", CFG_INT, CFG_OFF(max_redeliveries), "10", NULL, 0,
     "--max-redeliveries", "N", 0, 1000000, NULL, CFG_W, true,
     "Dead-letter a message redelivered more than N times while it was executing (handed to "
     "a pool process, or requeued by the worker) and store FAILURE (WorkerLostError), unless "
     "its result is already SUCCESS; prefetched messages do not count; 0 = unlimited."},
    {"worker_dead_letter", CFG_CHOICE, CFG_OFF(dead_letter), "queue", NULL, 0, "--dead-letter",
     "MODE", 0, 0, cfg_dead_letter_choices, CFG_W, true,
     "Where messages past worker_max_redeliveries go: queue (publish unchanged to the durable "
     "queue <queue>.dead, declared at start) or dlx (reject without requeue: the queue's "
     "dead-letter exchange, or dropped if it has none)."},
    {"worker_redis_url", CFG_STR, CFG_OFF(worker_redis_url), "", NULL, 0, "--redis-url", "URL",
     0, 0, NULL, CFG_W, true,
     "Redis for the worker's bookkeeping (redelivery counters, ETA delay store); default: the "
     "result backend when it is Redis."},
    {"worker_eta_horizon", CFG_DOUBLE, CFG_OFF(eta_horizon_s), "-1", NULL, 0, "--eta-horizon",
     "SECONDS", -1, 315360000, NULL, CFG_W, true,
     "ETA/countdown messages due later than this are moved to a Redis delay store and "
     "republished when due instead of being held unacked; -1 = 600 when Redis is configured, "
     "0 = always hold."},
    {"worker_delay_store_key", CFG_STR, CFG_OFF(delay_store_key), "celeryc-delayed", NULL, 0,
     "--delay-store-key", "KEY", 0, 0, NULL, CFG_W, true,
     "Redis sorted set of the ETA delay store (leases in KEY.claimed); workers sharing it "
     "must share the broker."},
    /* [control] Remote control (src/worker/control.c). */
    {"worker_state_db", CFG_STR, CFG_OFF(state_db), "", NULL, 'S', "--statedb", "FILE", 0, 0,
     NULL, CFG_W, true,
     "File that keeps the revoked task ids across restarts (Celery's --statedb; a celeryc "
     "text format, not Python's shelve)."},
    /* Rate limits (src/worker/ratelimit.c). Celery has no worker flag for these settings. */
    {"worker_disable_rate_limits", CFG_BOOL, CFG_OFF(disable_rate_limits), "false", NULL, 0,
     "--disable-rate-limits", NULL, 0, 0, NULL, CFG_W, true,
     "Ignore every task rate limit (Celery's worker_disable_rate_limits)."},
    {"task_default_rate_limit", CFG_STR, CFG_OFF(default_rate_limit), "", NULL, 0,
     "--default-rate-limit", "RATE", 0, 0, NULL, CFG_W, true,
     "Rate limit of tasks that declare none: N/s, N/m, N/h or N (per second); empty or 0 "
     "means none."},
    {"task_rate_limits", CFG_STR, CFG_OFF(rate_limits), "", NULL, 0, "--rate-limits",
     "NAME=RATE,...", 0, 0, NULL, CFG_W, true,
     "Per-task rate limits overriding the tasks' own, like Celery's task_annotations "
     "rate_limit: \"demo.add=10/s,demo.mul=1/m\"; \"*=RATE\" applies to every task (and, as in "
     "Celery, wins over a named entry); RATE 0 removes a limit."},
    {"worker_fleet_rate_limits", CFG_BOOL, CFG_OFF(fleet_rate_limits), "false", NULL, 0,
     "--fleet-rate-limits", NULL, 0, 0, NULL, CFG_W, true,
     "Share rate limits through Redis so that all workers together respect them (celeryc "
     "only); per worker while Redis is unreachable."},
    {"worker_fleet_rate_limits_url", CFG_STR, CFG_OFF(fleet_rate_limits_url), "", NULL, 0,
     "--fleet-rate-limits-url", "URL", 0, 0, NULL, CFG_W, true,
     "Redis for worker_fleet_rate_limits (redis://, rediss://, unix://); default: the result "
     "backend."},
};
/* clang-format on */

#define CFG_N_OPTIONS (sizeof(cfg_options) / sizeof(cfg_options[0]))

size_t cc_config_option_count(void)
{
    return CFG_N_OPTIONS;
}

const char *cc_config_option_name(size_t i)
{
    return i < CFG_N_OPTIONS ? cfg_options[i].name : NULL;
}

const char *cc_config_option_help(size_t i)
{
    return i < CFG_N_OPTIONS ? cfg_options[i].help : NULL;
}

/* ---- Values ------------------------------------------------------------------------------- */

static void *cfg_field(struct cc_config *cfg, const struct cfg_opt *o)
{
    return (char *)cfg + o->off;
}

static void cfg_free_queues(struct cc_config *cfg)
{
    if (cfg->queues != NULL) {
        for (size_t i = 0; i < cfg->n_queues; i++)
            free(cfg->queues[i]);
        free(cfg->queues);
    }
    cfg->queues = NULL;
    cfg->n_queues = 0;
}

static void cfg_store_str(struct cc_config *cfg, const struct cfg_opt *o, const char *v)
{
    char **slot = cfg_field(cfg, o);

    free(*slot);
    *slot = cc_xstrdup(v);
}

static bool cfg_parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};

    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* A nodename template may only use Celery's %h %n %d %i %I %% (Celery raises ValueError on
 * anything else: "Unknown format %x in string"). */
static bool cfg_hostname_ok(const char *v, char *bad)
{
    for (const char *p = v; *p != '\0'; p++) {
        if (*p != '%')
            continue;
        p++;
        if (*p == '\0' || strchr("hndiI%", *p) == NULL) {
            *bad = *p;
            return false;
        }
    }
    return true;
}

/* Split a comma list into cfg->queues; blanks around names are dropped, as click's
 * COMMA_SEPARATED_LIST does (it strips whitespace). */
static int cfg_set_queues(struct cc_config *cfg, const char *v, char *prob, size_t probsz)
{
    char **names = NULL;
    size_t n = 0;
    const char *p = v;

    while (true) {
        const char *comma = strchr(p, ',');
        const char *end = comma ? comma : p + strlen(p);
        const char *b = p, *e = end;

        while (b < e && isspace((unsigned char)*b))
            b++;
        while (e > b && isspace((unsigned char)e[-1]))
            e--;
        if (e > b) {
            if (e - b > 255) {
                snprintf(prob, probsz, "queue name longer than 255 bytes: '%.30s...'", b);
                for (size_t i = 0; i < n; i++)
                    free(names[i]);
                free(names);
                return CC_ECONFIG;
            }
            names = cc_xrealloc(names, (n + 2) * sizeof(*names));
            names[n] = cc_xmalloc((size_t)(e - b) + 1);
            memcpy(names[n], b, (size_t)(e - b));
            names[n][e - b] = '\0';
            names[++n] = NULL;
        }
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    cfg_free_queues(cfg);
    cfg->queues = names;
    cfg->n_queues = n;
    return CC_OK;
}

/* True for the spellings of "no result backend": "", "none", and Celery's "disabled". */
static bool cfg_backend_is_none(const char *v)
{
    return *v == '\0' || strcasecmp(v, "none") == 0 || strcasecmp(v, "disabled") == 0;
}

/* The backends src/core/backend.c implements: Redis (redis://, rediss://, unix://), [pgb] Postgres
 * (db+postgresql://) and none.
 * Anything else fails here, at start-up, rather than at the first result. */
static int cfg_check_backend(const char *v, char *prob, size_t probsz)
{
    struct cc_redis_url ru;
    struct cc_err uerr = {0};

    if (cfg_backend_is_none(v))
        return CC_OK;
    if (strncmp(v, "db+", 3) == 0) { /* [pgb] Celery's database backend (Postgres) */
        if (cc_backend_pg_check_url(v, &uerr) != CC_OK) {
            snprintf(prob, probsz, "%s", uerr.msg);
            return CC_ECONFIG;
        }
        return CC_OK;
    }
    if (strncmp(v, "redis://", 8) != 0 && strncmp(v, "rediss://", 9) != 0 &&
        strncmp(v, "unix://", 7) != 0) {
        char *m = cc_url_redact(v); /* [issue 14] never a password in an error */

        snprintf(prob, probsz,
                 "unsupported backend '%.60s' (use redis://, unix://, db+postgresql:// or none)",
                 m);
        free(m);
        return CC_ECONFIG;
    }
    if (cc_url_parse_redis(v, &ru, &uerr) != CC_OK) {
        snprintf(prob, probsz, "%s", uerr.msg);
        return CC_ECONFIG;
    }
    cc_url_redis_deinit(&ru);
    return CC_OK;
}

/* A TLS file must be there when the option is read, not at the first connection attempt:
 * a readable regular file. open(2) rather than access(2) so the check is what OpenSSL will
 * meet (effective ids, ACLs). */
static int cfg_check_file(const char *path, char *prob, size_t probsz)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    int rc = CC_OK;

    if (fd < 0) {
        snprintf(prob, probsz, "cannot read '%.100s': %s", path, strerror(errno));
        return CC_ECONFIG;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(prob, probsz, "'%.100s' is not a regular file", path);
        rc = CC_ECONFIG;
    }
    close(fd);
    return rc;
}

/* The rate-limit options that are strings: a rate, a name=rate list, a Redis URL. */
static int cfg_check_rate_option(const struct cfg_opt *o, const char *v, char *prob, size_t probsz)
{
    struct cc_err rerr = {0};
    struct cc_redis_url ru;
    double per_s;
    int rc = CC_OK;

    if (o->off == CFG_OFF(default_rate_limit)) {
        rc = cc_ratelimit_parse(v, &per_s, &rerr);
    } else if (o->off == CFG_OFF(rate_limits)) {
        struct cc_ratelimit *rl = cc_ratelimit_new();

        rc = cc_ratelimit_set_list(rl, v, &rerr);
        cc_ratelimit_free(rl);
    } else if (o->off == CFG_OFF(fleet_rate_limits_url) && *v != '\0') {
        rc = cc_url_parse_redis(v, &ru, &rerr);
        if (rc == CC_OK)
            cc_url_redis_deinit(&ru);
    }
    if (rc != CC_OK)
        snprintf(prob, probsz, "%s", rerr.msg);
    return rc;
}

/* Parse a number: the whole string, finite, within [o->min, o->max]. SIZE takes a K/M/G
 * suffix (powers of 1024). */
static int cfg_parse_number(const struct cfg_opt *o, const char *v, double *out, char *prob,
                            size_t probsz)
{
    char *end;
    double mult = 1;
    double d;

    errno = 0;
    if (o->type == CFG_DOUBLE) {
        d = strtod(v, &end);
    } else {
        long long ll = strtoll(v, &end, 10);

        d = (double)ll;
        if (o->type == CFG_SIZE && end != v && end[0] != '\0' && end[1] == '\0') {
            switch (end[0]) {
            case 'k':
            case 'K':
                mult = 1024.0;
                end++;
                break;
            case 'm':
            case 'M':
                mult = 1024.0 * 1024;
                end++;
                break;
            case 'g':
            case 'G':
                mult = 1024.0 * 1024 * 1024;
                end++;
                break;
            default:
                break;
            }
        }
    }
    while (*end != '\0' && isspace((unsigned char)*end))
        end++;
    if (end == v || *end != '\0' || isspace((unsigned char)*v)) {
        snprintf(prob, probsz, "not %s: '%.40s'", o->type == CFG_DOUBLE ? "a number" : "an integer",
                 v);
        return CC_ECONFIG;
    }
    d *= mult;
    if (errno == ERANGE || !isfinite(d) || d < o->min || d > o->max) {
        /* Sizes in whole bytes: "%g" would print the 256M cap as 2.68435e+08. */
        if (o->type == CFG_SIZE)
            snprintf(prob, probsz, "out of range (%.0f..%.0f bytes): '%.40s'", o->min, o->max, v);
        else
            snprintf(prob, probsz, "out of range (%g..%g): '%.40s'", o->min, o->max, v);
        return CC_ECONFIG;
    }
    *out = d;
    return CC_OK;
}

/* Parse `v` for option `o` and store it. On failure writes the problem (without the option
 * name or source, which the caller adds) to `prob` and returns CC_ECONFIG. */
static int cfg_set(struct cc_config *cfg, const struct cfg_opt *o, const char *v, char *prob,
                   size_t probsz)
{
    struct cc_amqp_url au;
    struct cc_err uerr = {0};
    double d = 0;
    bool b;
    int level;
    char bad;

    switch (o->type) {
    case CFG_STR:
        if (*v == '\0' && o->off == CFG_OFF(default_queue)) {
            snprintf(prob, probsz, "must not be empty");
            return CC_ECONFIG;
        }
        if (cfg_check_rate_option(o, v, prob, probsz) != CC_OK) /* ratelimit.c's options */
            return CC_ECONFIG;
        cfg_store_str(cfg, o, v);
        return CC_OK;
    case CFG_BROKER:
        if (cc_url_parse_amqp(v, &au, &uerr) != CC_OK) {
            snprintf(prob, probsz, "%s", uerr.msg);
            return CC_ECONFIG;
        }
        cc_url_amqp_deinit(&au);
        cfg_store_str(cfg, o, v);
        return CC_OK;
    case CFG_BACKEND:
        if (cfg_check_backend(v, prob, probsz) != CC_OK)
            return CC_ECONFIG;
        /* One spelling for "no backend", so the worker compares against "none" only. */
        cfg_store_str(cfg, o, cfg_backend_is_none(v) ? "none" : v);
        return CC_OK;
    case CFG_HOSTNAME:
        if (!cfg_hostname_ok(v, &bad)) {
            if (bad == '\0')
                snprintf(prob, probsz, "'%%' at the end of '%.40s'", v);
            else
                snprintf(prob, probsz, "unknown format %%%c in '%.40s' (use %%h %%n %%d %%%%)", bad,
                         v);
            return CC_ECONFIG;
        }
        cfg_store_str(cfg, o, v);
        return CC_OK;
    case CFG_QUEUES:
        return cfg_set_queues(cfg, v, prob, probsz);
    case CFG_FILE:
        if (*v != '\0' && cfg_check_file(v, prob, probsz) != CC_OK)
            return CC_ECONFIG;
        cfg_store_str(cfg, o, v);
        return CC_OK;
    case CFG_INT:
    case CFG_INT64:
    case CFG_SIZE:
    case CFG_DOUBLE:
        if (cfg_parse_number(o, v, &d, prob, probsz) != CC_OK)
            return CC_ECONFIG;
        if (o->type == CFG_INT)
            *(int *)cfg_field(cfg, o) = (int)d;
        else if (o->type == CFG_INT64)
            *(int64_t *)cfg_field(cfg, o) = (int64_t)d;
        else if (o->type == CFG_SIZE)
            *(size_t *)cfg_field(cfg, o) = (size_t)d;
        else
            *(double *)cfg_field(cfg, o) = d;
        return CC_OK;
    case CFG_BOOL:
        if (!cfg_parse_bool(v, &b)) {
            snprintf(prob, probsz, "not a boolean (true/false/yes/no/on/off/1/0): '%.40s'", v);
            return CC_ECONFIG;
        }
        *(bool *)cfg_field(cfg, o) = b;
        return CC_OK;
    case CFG_LOGLEVEL:
        level = cc_log_level_parse(v);
        if (level < 0) {
            snprintf(prob, probsz,
                     "not a log level (DEBUG, INFO, WARNING, ERROR, CRITICAL, FATAL): '%.40s'", v);
            return CC_ECONFIG;
        }
        *(int *)cfg_field(cfg, o) = level;
        return CC_OK;
    case CFG_CHOICE:
        for (const struct cfg_choice *c = o->choices; c->name != NULL; c++) {
            if (strcasecmp(v, c->name) == 0) {
                *(int *)cfg_field(cfg, o) = c->value;
                return CC_OK;
            }
        }
        {
            size_t len = (size_t)snprintf(prob, probsz, "'%.40s' is not one of", v);

            for (const struct cfg_choice *c = o->choices; c->name != NULL && len < probsz; c++)
                len += (size_t)snprintf(prob + len, probsz - len, "%s %s",
                                        c == o->choices ? "" : ",", c->name);
        }
        return CC_ECONFIG;
    }
    CC_ASSERT(!"unreachable option type");
    return CC_ECONFIG;
}

/* cfg_set with the source named in the error: "<source>: <name>: <problem>". */
static int cfg_apply(struct cc_config *cfg, const struct cfg_opt *o, const char *v,
                     const char *source, struct cc_err *err)
{
    char prob[256]; /* a whole struct cc_err message */

    prob[0] = '\0';
    if (cfg_set(cfg, o, v, prob, sizeof(prob)) != CC_OK)
        return cc_err_set(err, CC_ECONFIG, "%s: %s: %s", source, o->name, prob);
    return CC_OK;
}

/* ---- Config file -------------------------------------------------------------------------- */

static const struct cfg_opt *cfg_find_name(const char *name, enum cc_config_cmd cmd)
{
    for (size_t i = 0; i < CFG_N_OPTIONS; i++) {
        if ((cfg_options[i].cmds & (unsigned)cmd) && strcmp(cfg_options[i].name, name) == 0)
            return &cfg_options[i];
    }
    return NULL;
}

static char *cfg_trim(char *s)
{
    size_t n;

    while (isspace((unsigned char)*s))
        s++;
    n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Undo "..." quoting in place: \" and \\ are escapes, any other backslash is kept. After the
 * closing quote only blanks and a '#' comment may follow. Unquoted values are taken verbatim
 * (a '#' inside them is part of the value: passwords and URLs may contain one). */
static int cfg_unquote(char *v, char *prob, size_t probsz)
{
    char *r = v + 1, *w = v;

    if (*v != '"')
        return CC_OK;
    while (*r != '\0' && *r != '"') {
        if (r[0] == '\\' && (r[1] == '"' || r[1] == '\\'))
            r++;
        *w++ = *r++;
    }
    if (*r != '"') {
        snprintf(prob, probsz, "missing closing quote");
        return CC_ECONFIG;
    }
    r++;
    while (isspace((unsigned char)*r))
        r++;
    if (*r != '\0' && *r != '#') {
        snprintf(prob, probsz, "text after the closing quote: '%.30s'", r);
        return CC_ECONFIG;
    }
    *w = '\0';
    return CC_OK;
}

static int cfg_load_file(struct cc_config *cfg, enum cc_config_cmd cmd, const char *path,
                         struct cc_err *err)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;
    int rc = CC_OK;

    if (f == NULL)
        return cc_err_set(err, CC_ECONFIG, "config file %s: cannot open: %s", path,
                          strerror(errno));
    while (getline(&line, &cap, f) >= 0) {
        char source[200], prob[256];
        char *s = cfg_trim(line), *eq, *name, *value;
        const struct cfg_opt *o;

        lineno++;
        if (*s == '\0' || *s == '#')
            continue;
        snprintf(source, sizeof(source), "config file %s:%u", path, lineno);
        eq = strchr(s, '=');
        if (eq == NULL) {
            char *m = cc_url_redact(s); /* [issue 14] the line may hold a URL */

            rc = cc_err_set(err, CC_ECONFIG, "%s: expected 'name = value', got '%.40s'", source, m);
            free(m);
            goto out;
        }
        *eq = '\0';
        name = cfg_trim(s);
        value = cfg_trim(eq + 1);
        o = cfg_find_name(name, cmd);
        /* [beat] One file serves `celeryc worker` and `celeryc beat`: an option of the other
         * command is not a typo. */
        if (o == NULL && cfg_find_name(name, (enum cc_config_cmd)(CC_CMD_WORKER | CC_CMD_BEAT)))
            continue;
        if (o == NULL) {
            rc = cc_err_set(err, CC_ECONFIG, "%s: unknown option '%.60s'", source, name);
            goto out;
        }
        if (!o->file_ok) {
            rc = cc_err_set(err, CC_ECONFIG, "%s: %s: cannot be set in a config file", source,
                            o->name);
            goto out;
        }
        if (cfg_unquote(value, prob, sizeof(prob)) != CC_OK) {
            rc = cc_err_set(err, CC_ECONFIG, "%s: %s: %s", source, o->name, prob);
            goto out;
        }
        rc = cfg_apply(cfg, o, value, source, err);
        if (rc != CC_OK)
            goto out;
    }
    if (ferror(f))
        rc = cc_err_set(err, CC_ECONFIG, "config file %s: read error: %s", path, strerror(errno));
out:
    free(line);
    fclose(f);
    return rc;
}

/* ---- Environment -------------------------------------------------------------------------- */

/* Value of `key` in a "K=V" array; NULL if absent or empty (see the file comment). */
static const char *cfg_getenv(char **env, const char *key)
{
    size_t n = strlen(key);

    for (char **e = env; e != NULL && *e != NULL; e++) {
        if (strncmp(*e, key, n) == 0 && (*e)[n] == '=')
            return (*e)[n + 1] != '\0' ? *e + n + 1 : NULL;
    }
    return NULL;
}

/* "CELERYC_" + the option name in upper case. */
static void cfg_env_name(const struct cfg_opt *o, char *out, size_t outsz)
{
    size_t n = (size_t)snprintf(out, outsz, "CELERYC_%s", o->name);

    for (size_t i = 0; i < n && i < outsz; i++)
        out[i] = (char)toupper((unsigned char)out[i]);
}

static int cfg_load_env(struct cc_config *cfg, enum cc_config_cmd cmd, char **env,
                        struct cc_err *err)
{
    for (size_t i = 0; i < CFG_N_OPTIONS; i++) {
        const struct cfg_opt *o = &cfg_options[i];
        char key[96], source[128];
        const char *v;
        int rc;

        if (!(o->cmds & (unsigned)cmd))
            continue;
        /* Celery's own variable first, so the celeryc-specific one wins. */
        if (o->env != NULL && (v = cfg_getenv(env, o->env)) != NULL) {
            snprintf(source, sizeof(source), "environment %s", o->env);
            rc = cfg_apply(cfg, o, v, source, err);
            if (rc != CC_OK)
                return rc;
        }
        cfg_env_name(o, key, sizeof(key));
        if ((v = cfg_getenv(env, key)) != NULL) {
            snprintf(source, sizeof(source), "environment %s", key);
            rc = cfg_apply(cfg, o, v, source, err);
            if (rc != CC_OK)
                return rc;
        }
    }
    return CC_OK;
}

/* ---- Command line ------------------------------------------------------------------------- */

struct cfg_arg {
    const struct cfg_opt *opt;
    const char *value;
    char flag[48]; /* as typed, for messages */
};

static const struct cfg_opt *cfg_find_flag(const char *lflag, size_t len, char sflag,
                                           enum cc_config_cmd cmd)
{
    for (size_t i = 0; i < CFG_N_OPTIONS; i++) {
        const struct cfg_opt *o = &cfg_options[i];

        if (!(o->cmds & (unsigned)cmd))
            continue;
        if (sflag != 0 && o->short_flag == sflag)
            return o;
        if (lflag != NULL && strlen(o->long_flag) == len && strncmp(o->long_flag, lflag, len) == 0)
            return o;
    }
    return NULL;
}

/* Turn argv[1..] into (option, value) pairs without applying them, so the config file named
 * by --config can be read first. Returns CC_EAGAIN for --help. */
static int cfg_parse_argv(enum cc_config_cmd cmd, int argc, char **argv, struct cfg_arg *out,
                          size_t *n_out, struct cc_err *err)
{
    size_t n = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return CC_EAGAIN;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const struct cfg_opt *o;
        struct cfg_arg *pa = &out[n];

        if (a[0] != '-' || a[1] == '\0' || strcmp(a, "--") == 0) {
            const char *extra = strcmp(a, "--") == 0 ? (i + 1 < argc ? argv[i + 1] : NULL) : a;

            if (extra == NULL)
                break;
            return cc_err_set(err, CC_EUSAGE, "unexpected argument '%.60s'", extra);
        }
        if (a[1] == '-') {
            const char *eq = strchr(a, '=');
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            bool negated = false;

            o = cfg_find_flag(a, len, 0, cmd);
            if (o == NULL && strncmp(a, "--no-", 5) == 0) {
                char pos[64];

                snprintf(pos, sizeof(pos), "--%.*s", (int)(len - 5), a + 5);
                o = cfg_find_flag(pos, strlen(pos), 0, cmd);
                if (o != NULL && o->type != CFG_BOOL)
                    o = NULL;
                negated = o != NULL;
            }
            if (o == NULL)
                return cc_err_set(err, CC_EUSAGE, "no such option: %.*s", (int)len, a);
            snprintf(pa->flag, sizeof(pa->flag), "%.*s", (int)len, a);
            if (negated) {
                if (eq != NULL)
                    return cc_err_set(err, CC_EUSAGE, "option %s takes no value", pa->flag);
                pa->value = "false";
            } else if (eq != NULL) {
                pa->value = eq + 1;
            } else if (o->type == CFG_BOOL) {
                pa->value = "true";
            } else if (i + 1 < argc) {
                pa->value = argv[++i];
            } else {
                return cc_err_set(err, CC_EUSAGE, "option %s requires a value", pa->flag);
            }
        } else {
            o = cfg_find_flag(NULL, 0, a[1], cmd);
            if (o == NULL)
                return cc_err_set(err, CC_EUSAGE, "no such option: -%c", a[1]);
            snprintf(pa->flag, sizeof(pa->flag), "-%c", a[1]);
            if (o->type == CFG_BOOL && a[2] == '\0') /* [events] -E takes no value */
                pa->value = "true";
            else if (a[2] != '\0')
                pa->value = a + 2; /* "-c2" */
            else if (i + 1 < argc)
                pa->value = argv[++i];
            else
                return cc_err_set(err, CC_EUSAGE, "option %s requires a value", pa->flag);
        }
        pa->opt = o;
        n++;
    }
    *n_out = n;
    return CC_OK;
}

/* ---- Loading ------------------------------------------------------------------------------ */

static int cfg_defaults(struct cc_config *cfg, enum cc_config_cmd cmd, struct cc_err *err)
{
    for (size_t i = 0; i < CFG_N_OPTIONS; i++) {
        const struct cfg_opt *o = &cfg_options[i];
        int rc;

        if (!(o->cmds & (unsigned)cmd))
            continue;
        rc = cfg_apply(cfg, o, o->dflt, "default", err);
        if (rc != CC_OK)
            return rc;
    }
    return CC_OK;
}

/* "" (the default, or an explicit empty value) means "not set": NULL from here on. */
static void cfg_unset_empty(char **slot)
{
    if (*slot != NULL && (*slot)[0] == '\0') {
        free(*slot);
        *slot = NULL;
    }
}

/* TLS options once every source is read: the CA file falls back to $SSL_CERT_FILE and then
 * the system bundle, as Python's ssl.create_default_context() does. Those implicit files
 * are checked only when they will be used (amqps:// with verification on); the error names
 * where the path came from. A key without a certificate is refused; a certificate without
 * a key means the key is in the certificate file (Python's load_cert_chain(certfile)). */
static int cfg_finish_tls(struct cc_config *cfg, char **env, struct cc_err *err)
{
    struct cc_amqp_url au;
    struct cc_err uerr = {0};
    const char *from = NULL;
    char prob[256];
    bool is_tls = false;

    cfg_unset_empty(&cfg->broker_ssl_certfile);
    cfg_unset_empty(&cfg->broker_ssl_keyfile);
    if (cfg->broker_ssl_keyfile != NULL && cfg->broker_ssl_certfile == NULL)
        return cc_err_set(err, CC_ECONFIG,
                          "broker_ssl_keyfile: set without broker_ssl_certfile (the client "
                          "certificate it belongs to)");
    if (cfg->broker_url != NULL && cc_url_parse_amqp(cfg->broker_url, &au, &uerr) == CC_OK) {
        is_tls = au.tls;
        cc_url_amqp_deinit(&au);
    }
    if (cfg->broker_ssl_ca_certs == NULL || cfg->broker_ssl_ca_certs[0] == '\0') {
        const char *v = cfg_getenv(env, "SSL_CERT_FILE");

        from = v != NULL ? "environment SSL_CERT_FILE" : "default";
        free(cfg->broker_ssl_ca_certs);
        cfg->broker_ssl_ca_certs = cc_xstrdup(v != NULL ? v : CC_CONFIG_SYSTEM_CA_FILE);
    }
    if (from != NULL && is_tls && cfg->broker_ssl_verify == CC_SSL_VERIFY_REQUIRED &&
        cfg_check_file(cfg->broker_ssl_ca_certs, prob, sizeof(prob)) != CC_OK)
        return cc_err_set(err, CC_ECONFIG, "%s: broker_ssl_ca_certs: %s (set --broker-ssl-ca)",
                          from, prob);
    return CC_OK;
}

/* Values that depend on others or on the machine, resolved once every source is read. */
static int cfg_finish(struct cc_config *cfg, char **env, struct cc_err *err)
{
    char host[256];

    cfg_unset_empty(&cfg->config_file);
    cfg_unset_empty(&cfg->job_store);
    if (cfg->concurrency == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        /* Celery: billiard.cpu_count(), which falls back to 1. */
        cfg->concurrency = n > 0 ? (int)(n > 10000 ? 10000 : n) : 1;
    }
    if (cfg->n_queues == 0) {
        cfg_free_queues(cfg);
        cfg->queues = cc_xcalloc(2, sizeof(*cfg->queues));
        cfg->queues[0] = cc_xstrdup(cfg->default_queue);
        cfg->n_queues = 1;
    }
    if (gethostname(host, sizeof(host)) != 0 || host[0] == '\0')
        snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
    {
        char *expanded = cc_config_expand_hostname(cfg->hostname, host);

        free(cfg->hostname);
        cfg->hostname = expanded;
    }
    return cfg_finish_tls(cfg, env, err);
}

int cc_config_load(struct cc_config *cfg, enum cc_config_cmd cmd, int argc, char **argv, char **env,
                   struct cc_err *err)
{
    struct cfg_arg *args = NULL;
    size_t n_args = 0;
    const char *config_path = NULL;
    int rc;

    memset(cfg, 0, sizeof(*cfg));
    rc = cfg_defaults(cfg, cmd, err);
    if (rc != CC_OK)
        goto out;
    if (argc > 1) {
        args = cc_xcalloc((size_t)argc, sizeof(*args));
        rc = cfg_parse_argv(cmd, argc, argv, args, &n_args, err);
        if (rc != CC_OK)
            goto out;
    }

    /* The file named on the command line wins over CELERYC_CONFIG. */
    config_path = cfg_getenv(env, "CELERYC_CONFIG");
    for (size_t i = 0; i < n_args; i++) {
        if (args[i].opt->off == CFG_OFF(config_file) && args[i].opt->type == CFG_STR)
            config_path = args[i].value;
    }
    if (config_path != NULL && *config_path != '\0') {
        rc = cfg_load_file(cfg, cmd, config_path, err);
        if (rc != CC_OK)
            goto out;
    }

    rc = cfg_load_env(cfg, cmd, env, err);
    if (rc != CC_OK)
        goto out;

    for (size_t i = 0; i < n_args; i++) {
        char source[80];

        snprintf(source, sizeof(source), "command line %s", args[i].flag);
        rc = cfg_apply(cfg, args[i].opt, args[i].value, source, err);
        if (rc != CC_OK)
            goto out;
    }
    rc = cfg_finish(cfg, env, err);
out:
    free(args);
    return rc;
}

void cc_config_deinit(struct cc_config *cfg)
{
    if (cfg == NULL)
        return;
    for (size_t i = 0; i < CFG_N_OPTIONS; i++) {
        const struct cfg_opt *o = &cfg_options[i];

        switch (o->type) {
        case CFG_STR:
        case CFG_BROKER:
        case CFG_BACKEND:
        case CFG_HOSTNAME:
        case CFG_FILE: {
            char **slot = cfg_field(cfg, o);

            free(*slot);
            *slot = NULL;
            break;
        }
        case CFG_QUEUES:
            cfg_free_queues(cfg);
            break;
        default:
            break;
        }
    }
}

/* ---- Usage -------------------------------------------------------------------------------- */

/* Write `text` wrapped at `width` columns, every line indented by `indent`. */
static void cfg_wrap(FILE *out, const char *text, int indent, int width)
{
    const char *p = text;
    int col = indent;

    fprintf(out, "%*s", indent, "");
    while (*p != '\0') {
        size_t w = strcspn(p, " ");

        if (col > indent && col + 1 + (int)w > width) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        fprintf(out, "%.*s", (int)w, p);
        col += (int)w;
        p += w;
        while (*p == ' ')
            p++;
    }
    fputc('\n', out);
}

void cc_config_usage(FILE *out, enum cc_config_cmd cmd)
{
    /* [beat] `celeryc beat` prints its own description first. */
    if (cmd == CC_CMD_WORKER)
        fprintf(out, "Usage: celeryc worker [OPTIONS]\n\n"
                     "Start a worker that consumes Celery tasks from the broker.\n\n");
    fprintf(out, "Options are read from the defaults, then the config file (--config or\n"
                 "CELERYC_CONFIG), then the environment, then the command line; later wins.\n\n"
                 "Options:\n");
    for (size_t i = 0; i < CFG_N_OPTIONS; i++) {
        const struct cfg_opt *o = &cfg_options[i];
        char flags[96], env[96], meta[200];
        const char *dflt;
        char *safe;
        int len;

        if (!(o->cmds & (unsigned)cmd))
            continue;
        if (o->short_flag != 0)
            len = snprintf(flags, sizeof(flags), "-%c, %s", o->short_flag, o->long_flag);
        else
            len = snprintf(flags, sizeof(flags), "    %s", o->long_flag);
        if (o->metavar != NULL)
            snprintf(flags + len, sizeof(flags) - (size_t)len, " %s", o->metavar);
        else
            snprintf(flags + len, sizeof(flags) - (size_t)len, " / --no-%s", o->long_flag + 2);
        fprintf(out, "  %s\n", flags);
        cfg_wrap(out, o->help, 8, 92);
        cfg_env_name(o, env, sizeof(env));
        /* The default broker URL carries guest's password: show it as Celery's banner does. */
        safe = cc_url_redact(o->dflt);
        if (o->off == CFG_OFF(concurrency))
            dflt = "number of CPUs";
        else if (o->off == CFG_OFF(queues))
            dflt = "task_default_queue";
        else if (o->off == CFG_OFF(broker_ssl_ca_certs))
            dflt = "$SSL_CERT_FILE, else " CC_CONFIG_SYSTEM_CA_FILE;
        else if (o->off == CFG_OFF(broker_ssl_keyfile))
            dflt = "broker_ssl_certfile";
        else if (o->dflt[0] == '\0')
            dflt = "none";
        else
            dflt = safe;
        snprintf(meta, sizeof(meta), "[%s%s%senv %s%s%s; default: %s]", o->file_ok ? "file: " : "",
                 o->file_ok ? o->name : "", o->file_ok ? "; " : "", env, o->env ? ", " : "",
                 o->env ? o->env : "", dflt);
        free(safe);
        cfg_wrap(out, meta, 8, 92);
    }
    fprintf(out, "  -h, --help\n        Show this message and exit.\n");
}

/* ---- Nodenames ---------------------------------------------------------------------------- */

char *cc_config_expand_hostname(const char *tmpl, const char *host)
{
    const char *at = strchr(tmpl, '@');
    const char *name, *hostpart;
    size_t name_len, hostpart_len, host_len = strlen(host);
    const char *dot = strchr(host, '.');
    size_t short_len = dot ? (size_t)(dot - host) : host_len;
    const char *domain = dot ? dot + 1 : "";
    char *nodename, *out;
    size_t cap, o = 0;

    /* Celery's default_nodename(): "name@host"; no '@' means the whole thing is the host,
     * and an empty name or host takes the default ("celery", the machine's host name). */
    if (at == NULL) {
        name = "celery";
        name_len = 6;
        hostpart = tmpl;
        hostpart_len = strlen(tmpl);
    } else {
        name = tmpl;
        name_len = (size_t)(at - tmpl);
        hostpart = at + 1;
        hostpart_len = strlen(hostpart);
        if (name_len == 0) {
            name = "celery";
            name_len = 6;
        }
    }
    if (hostpart_len == 0) {
        hostpart = host;
        hostpart_len = host_len;
    }
    nodename = cc_xmalloc(name_len + 1 + hostpart_len + 1);
    memcpy(nodename, name, name_len);
    nodename[name_len] = '@';
    memcpy(nodename + name_len + 1, hostpart, hostpart_len);
    nodename[name_len + 1 + hostpart_len] = '\0';

    /* Celery's host_format(): %h host, %n short name, %d domain, %i process index ("0" in
     * the main process), %I the same with a '-' prefix (empty in the main process). Unlike
     * Celery, whose pattern %(\w) never matches "%%", we turn "%%" into "%" as documented. */
    cap = strlen(nodename) + 1;
    for (const char *p = nodename; *p != '\0'; p++) {
        if (*p == '%')
            cap += host_len; /* an upper bound for any expansion */
    }
    out = cc_xmalloc(cap);
    for (const char *p = nodename; *p != '\0'; p++) {
        const char *rep = NULL;
        size_t rep_len = 0;

        if (*p == '%' && p[1] != '\0') {
            switch (p[1]) {
            case 'h':
                rep = host;
                rep_len = host_len;
                break;
            case 'n':
                rep = host;
                rep_len = short_len;
                break;
            case 'd':
                rep = domain;
                rep_len = strlen(domain);
                break;
            case 'i':
                rep = "0";
                rep_len = 1;
                break;
            case 'I':
                rep = "";
                break;
            case '%':
                rep = "%";
                rep_len = 1;
                break;
            default:
                break;
            }
        }
        if (rep != NULL) {
            memcpy(out + o, rep, rep_len);
            o += rep_len;
            p++;
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    free(nodename);
    return out;
}
