/* Rate limits per task type: Celery's Task.rate_limit ("10/s", "100/m", "1000/h").
 *
 * Celery gives each limited task type a kombu TokenBucket of capacity 1 filled at `rate`
 * tokens per second: a request of that type starts only when it can take a token, so
 * starts are spaced at least 1/rate apart and idle time never banks a burst. Here that
 * bucket is its equivalent "next free slot" form (GCRA with a burst of one): admitting a
 * request reserves the slot max(now, tat) and moves tat one interval on. Admission order is
 * slot order, so requests of one type start in the order they were admitted.
 *
 * The module also keeps the requests that wait for their slot (a min-heap on the slot,
 * FIFO among equal slots), so the worker can hold them outside its ready FIFO and other
 * task types are never stuck behind a limited one.
 *
 * Fleet-wide limits (celeryc only, opt-in): with a Redis URL, the slot comes from one EVAL
 * of a small Lua GCRA script per admitted request, keyed by task name and run against
 * Redis' own clock (TIME), so every worker sharing that Redis together respects the rate
 * whatever their clocks say. When Redis cannot be reached the per-worker slot is used
 * instead (logged once, and once when Redis is back).
 *
 * Clock: callers pass one monotonic clock (cc_mono_us) in microseconds. The scheduler part
 * (parse, set, admit without Redis, hold, pop) is pure: no clock reads, no I/O. Not
 * thread-safe; master process only (no connection crosses fork()).
 *
 * Redis key: "celeryc:ratelimit:<task name>", a number (the next free slot, microseconds on
 * Redis' clock) that expires once it is in the past.
 */
#ifndef CELERYC_RATELIMIT_H
#define CELERYC_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "celeryc/status.h"

struct cc_ratelimit;

/* Redis key prefix of the fleet-wide slots (the task name follows). */
#define CC_RATELIMIT_REDIS_PREFIX "celeryc:ratelimit:"

/* Celery's celery.utils.time.rate(): "N/s", "N/m", "N/h", or a bare "N" (per second); N may
 * be fractional ("0.5/s") or huge ("1e300/s"). NULL, "" and any N of 0 mean no limit
 * (*per_s = 0); "inf" too (*per_s = inf: Python's TokenBucket(inf) never empties). Surrounding
 * blanks are ignored. Returns CC_OK, or CC_ECONFIG for anything else (Celery raises
 * ValueError or KeyError there) including a negative or NaN N (which Python accepts and then
 * never runs the task). Pure. */
int cc_ratelimit_parse(const char *text, double *per_s, struct cc_err *err) CC_MUST_USE;

/* Returns: owned, free with cc_ratelimit_free(). No limits, no Redis. */
struct cc_ratelimit *cc_ratelimit_new(void);

/* Takes NULL. Held items are forgotten (drain them first with cc_ratelimit_pop_any). */
void cc_ratelimit_free(struct cc_ratelimit *rl);

/* Limit `name` to `per_s` starts per second (0, inf, NaN or negative removes the limit).
 * The interval is rounded up to whole microseconds, at least 1 us and at most 1e15 us
 * (31.7 years) for the tiniest rates. Keeps an existing bucket's reservations. */
void cc_ratelimit_set(struct cc_ratelimit *rl, const char *name, double per_s);

/* Apply a "name=rate,name=rate" list (blanks around items ignored, empty items skipped);
 * "*=rate" limits every task (set_list records it; see cc_ratelimit_star). Returns CC_OK or
 * CC_ECONFIG naming the bad item, with nothing applied. */
int cc_ratelimit_set_list(struct cc_ratelimit *rl, const char *list,
                          struct cc_err *err) CC_MUST_USE;

/* The "*" rate given to cc_ratelimit_set_list (0 when none). */
double cc_ratelimit_star(const struct cc_ratelimit *rl);

/* Starts per second allowed for `name`, 0 when unlimited. */
double cc_ratelimit_get(const struct cc_ratelimit *rl, const char *name);

/* Number of limited task types (0 for NULL). */
size_t cc_ratelimit_count(const struct cc_ratelimit *rl);

/* Share the limits through Redis at `url` (redis://, rediss://, unix://), replacing any
 * earlier one. Nothing is contacted yet. Returns CC_OK, or CC_EURL (then per worker). */
int cc_ratelimit_fleet_open(struct cc_ratelimit *rl, const char *url,
                            struct cc_err *err) CC_MUST_USE;

/* Reserve the next start slot for a request of `name`; returns the time it may start
 * (>= now_us, same clock). An unlimited name returns now_us and reserves nothing. With a
 * fleet Redis the slot is the fleet's (one EVAL; on failure the local one, logged once). */
int64_t cc_ratelimit_admit(struct cc_ratelimit *rl, const char *name, int64_t now_us);

/* Hold `item` (borrowed; the caller keeps ownership) until `due_us`. */
void cc_ratelimit_hold(struct cc_ratelimit *rl, void *item, int64_t due_us);

/* The held item with the earliest slot if due_us <= now_us (removing it), else NULL.
 * Equal slots come out in the order they were held. */
void *cc_ratelimit_pop_due(struct cc_ratelimit *rl, int64_t now_us);

/* Any held item (removing it), NULL when none: for freeing at exit. */
void *cc_ratelimit_pop_any(struct cc_ratelimit *rl);

/* Earliest slot among held items, INT64_MAX when none. */
int64_t cc_ratelimit_next_due_us(const struct cc_ratelimit *rl);

/* Number of held items (0 for NULL), and the i-th (any order; i < cc_ratelimit_n_held) for
 * inspection. */
size_t cc_ratelimit_n_held(const struct cc_ratelimit *rl);
void *cc_ratelimit_held_get(const struct cc_ratelimit *rl, size_t i);

/* The worker's limits from its configuration: nothing when worker_disable_rate_limits;
 * otherwise, for every task of cc_task_table: its entry's rate_limit, or
 * task_default_rate_limit when it has none; then task_rate_limits on top, the task's own
 * item first and "*" after it (so "*" wins, as Celery applies task_annotations). With
 * worker_fleet_rate_limits the limits are shared through Redis (the URL option, else the
 * result backend). Logs each limit at INFO and names in task_rate_limits that no task has
 * at WARNING. Returns CC_OK and *out (free with cc_ratelimit_free), or CC_ECONFIG (a task entry's
 * rate_limit does not parse; options are checked when loaded). */
struct cc_config;
int cc_ratelimit_from_config(const struct cc_config *cfg, struct cc_ratelimit **out,
                             struct cc_err *err) CC_MUST_USE;

/* True while the fleet Redis is configured but unreachable (per-worker fallback). */
bool cc_ratelimit_is_fleet_down(const struct cc_ratelimit *rl);

#endif
