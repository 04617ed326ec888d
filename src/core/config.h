/* Worker configuration: one table row per option (name, type, default, env var, CLI flags,
 * check, help), loaded with precedence  file < environment < command line.
 *
 * Option names are Celery's setting names (broker_url, worker_concurrency, task_acks_late,
 * ...) so a Celery user recognises them in the config file; the command-line flags are the
 * ones `celery worker` takes (-b, -Q, -n, -c, -l, --prefetch-multiplier, ...).
 *
 * Config file format: one `name = value` per line, `#` comments, blank lines ignored; values
 * may be quoted with "..." (backslash escapes \" and \\). Booleans: true/false/yes/no/on/off/1/0.
 * Unknown names are an error (names the line), so a typo never silently does nothing.
 */
#ifndef CELERYC_CONFIG_H
#define CELERYC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "celeryc/status.h"

enum cc_pool_kind {
    CC_POOL_PREFORK = 0,
    CC_POOL_THREADS = 1,
    CC_POOL_SOLO = 2,
};

/* task_default_queue_type (Celery 5.5): the x-queue-type of the queues the worker declares. */
enum cc_queue_type {
    CC_QUEUE_CLASSIC = 0,
    CC_QUEUE_QUORUM = 1,
};

/* broker_ssl_verify: Celery's broker_use_ssl['cert_reqs'] (ssl.CERT_REQUIRED / CERT_NONE). */
enum cc_ssl_verify {
    CC_SSL_VERIFY_REQUIRED = 0, /* the broker's certificate chain and its host name */
    CC_SSL_VERIFY_NONE = 1,     /* encrypted but not authenticated: the worker warns */
};

/* worker_dead_letter: where a message past worker_max_redeliveries goes. */
enum cc_dead_letter {
    CC_DEAD_LETTER_QUEUE = 0, /* publish unchanged to the durable queue "<queue>.dead", then ack */
    CC_DEAD_LETTER_DLX = 1,   /* basic.reject(requeue=false): the queue's own DLX, if any */
};

/* The system CA bundle, used when neither broker_ssl_ca_certs nor SSL_CERT_FILE is set. */
#define CC_CONFIG_SYSTEM_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* All worker options, resolved. Strings are owned (free with cc_config_deinit). */
struct cc_config {
    char *config_file; /* --config FILE (also CELERYC_CONFIG) */
    char *broker_url; /* -b/--broker, CELERY_BROKER_URL; default amqp://guest:guest@localhost:5672//
                       */
    char *result_backend; /* --result-backend, CELERY_RESULT_BACKEND; default "none" */
    char **queues;        /* -Q/--queues a,b (NULL-terminated); default {task_default_queue} */
    size_t n_queues;
    char *hostname;          /* -n/--hostname, expanded; default celery@%h */
    int concurrency;         /* -c/--concurrency; default: number of CPUs */
    int loglevel;            /* -l/--loglevel; CC_LOG_*; default WARNING as Celery */
    int log_format;          /* --log-format human|json */
    int prefetch_multiplier; /* --prefetch-multiplier; default 4; 0 = unlimited */
    enum cc_pool_kind pool;  /* --pool prefork|threads|solo */

    char *default_queue;           /* task_default_queue; default "celery" */
    bool create_missing_queues;    /* task_create_missing_queues; default true */
    enum cc_queue_type queue_type; /* task_default_queue_type; default classic */
    int queue_max_priority;        /* task_queue_max_priority; 0 = none (no x-max-priority) */

    bool acks_late;                    /* task_acks_late; default false */
    bool track_started;                /* task_track_started; default false */
    bool result_extended;              /* result_extended; default false */
    bool send_task_events;             /* [events] worker_send_task_events, -E; default false */
    double event_heartbeat_s;          /* [events] --heartbeat-interval; default 2.0 */
    int64_t result_expires_s;          /* result_expires; default 86400; 0 = never */
    bool result_chord_ordered;         /* [canvas-chord] Redis chord members: ZSET (true) or list */
    bool inherit_parent_priority;      /* [canvas-exec] task_inherit_parent_priority; false */
    bool store_errors_even_if_ignored; /* task_store_errors_even_if_ignored; default false */

    /* Pools and time limits (issue #3). */
    double time_limit_s;              /* task_time_limit, --time-limit; 0 = none */
    double soft_time_limit_s;         /* task_soft_time_limit, --soft-time-limit; 0 = none */
    bool acks_on_failure_or_timeout;  /* task_acks_on_failure_or_timeout; default true */
    bool reject_on_worker_lost;       /* task_reject_on_worker_lost; default false */
    int max_tasks_per_child;          /* worker_max_tasks_per_child; 0 = no limit */
    int64_t max_memory_per_child_kib; /* worker_max_memory_per_child (KiB RSS); 0 = none */

    size_t max_message_bytes;   /* worker_max_message_bytes; default 16 MiB */
    double heartbeat_s;         /* broker_heartbeat; default 120 (AMQP heartbeat) */
    double connect_timeout_s;   /* broker_connection_timeout; default 4 */
    int connection_max_retries; /* broker_connection_max_retries; default 100; 0 = forever */

    /* TLS for amqps:// (Celery's broker_use_ssl keys); ignored for amqp://. Paths are
     * readable regular files when set (checked at load). */
    char *broker_ssl_ca_certs; /* --broker-ssl-ca; never NULL after load: the option, else
                                  $SSL_CERT_FILE, else CC_CONFIG_SYSTEM_CA_FILE */
    char *broker_ssl_certfile; /* --broker-ssl-cert; NULL = no client certificate */
    char *broker_ssl_keyfile;  /* --broker-ssl-key; NULL = key is in broker_ssl_certfile */
    enum cc_ssl_verify broker_ssl_verify; /* --broker-ssl-verify required|none */

    /* Delivery guarantees (src/worker/redeliver.c, src/worker/delaystore.c; docs/ARCHITECTURE.md).
     */
    bool dedup_successful;  /* worker_deduplicate_successful_tasks; default true (with acks_late) */
    int max_redeliveries;   /* worker_max_redeliveries; default 10; 0 = unlimited */
    int dead_letter;        /* worker_dead_letter: CC_DEAD_LETTER_QUEUE (default) or _DLX */
    char *worker_redis_url; /* worker_redis_url; "" = the result backend when it is Redis */
    double eta_horizon_s;   /* worker_eta_horizon; -1 = auto (600 s with Redis), 0 = off */
    char *delay_store_key;  /* worker_delay_store_key; default "celeryc-delayed" */
    char *state_db;         /* [control] worker_state_db (-S/--statedb); NULL = none */
    /* Rate limits (src/worker/ratelimit.c). Rates are Celery's "10/s", "100/m", "1000/h", "5". */
    bool disable_rate_limits;    /* worker_disable_rate_limits; default false */
    char *default_rate_limit;    /* task_default_rate_limit; "" = none */
    char *rate_limits;           /* task_rate_limits "name=rate,..." ("*" = every task) */
    bool fleet_rate_limits;      /* worker_fleet_rate_limits: share them through Redis */
    char *fleet_rate_limits_url; /* worker_fleet_rate_limits_url; "" = the result backend */
    /* Job store (issue #6, src/jobs/jobstore.h). */
    char *job_store;        /* job_store, --job-store URL; NULL/"" = none */
    bool job_store_upgrade; /* job_store_upgrade, --db-upgrade: migrate at start */
    /* [jobrun] job_run_heartbeat_interval: seconds between heartbeats of running job runs */
    double job_run_heartbeat_s;
    /* [beat] `celeryc beat` (src/beat/beat.c). */
    char *beat_schedule_file;         /* beat_schedule_file, --schedule-file; NULL = none */
    char *beat_state_file;            /* beat_schedule, -s/--schedule (state without a store) */
    double beat_max_loop_interval_s;  /* beat_max_loop_interval, --max-interval; 300 */
    double beat_lease_ttl_s;          /* beat_lease_ttl, --lease-ttl; 10 */
    int beat_run_heartbeat_timeout_s; /* beat_run_heartbeat_timeout; 60 */
    char *timezone;                   /* timezone, --timezone; "UTC" */
};

/* Which command the options are for: the table marks options per command. */
enum cc_config_cmd {
    CC_CMD_WORKER = 1,
    CC_CMD_BEAT = 2,
};

/* Fill `cfg` from defaults, then the config file (--config / CELERYC_CONFIG), then the
 * environment (CELERY_BROKER_URL, CELERY_RESULT_BACKEND, and CELERYC_<NAME> for every
 * option), then argv (argv[0] is the subcommand name, e.g. "worker").
 * Returns CC_OK; CC_EUSAGE (bad/unknown flag, missing value), CC_ECONFIG (bad value or file
 * line; the message names the option and the source) or CC_ENOMEM. `--help` is reported as
 * CC_EAGAIN with cfg untouched beyond defaults so the caller prints cc_config_usage() and
 * exits 0. `env` is the environment to read (NULL-terminated "K=V" strings), usually
 * `environ`; tests pass their own. */
int cc_config_load(struct cc_config *cfg, enum cc_config_cmd cmd, int argc, char **argv, char **env,
                   struct cc_err *err) CC_MUST_USE;

void cc_config_deinit(struct cc_config *cfg);

/* Print `celeryc <cmd> --help`: every option with its flags, env var, default and help. */
void cc_config_usage(FILE *out, enum cc_config_cmd cmd);

/* Expand Celery's nodename templates: "%h" full host name, "%n" name before the first dot,
 * "%d" domain after it, "%%" a percent sign; a name without '@' gets "celery@" prepended.
 * `host` is the machine's host name (passed in for testability). Returns an owned string. */
char *cc_config_expand_hostname(const char *tmpl, const char *host);

/* Introspection for tests and `inspect conf`: number of options and the i-th one's names. */
size_t cc_config_option_count(void);
const char *cc_config_option_name(size_t i);
const char *cc_config_option_help(size_t i);

#endif
