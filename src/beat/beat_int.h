/* `celeryc beat` internals shared by src/beat/beat.c (the daemon: loop, broker, job store, lease)
 * and src/beat/beat_sched.c (entries, slots, the heap, the schedule and state files).
 *
 * Vocabulary: an *entry* is one periodic thing to send (a schedule-file entry "NAME" or a job
 * of the job store "job:<uuid>"); a *slot* is one instant at which the entry is due (interval:
 * last slot + every; crontab: the next matching minute in the entry's zone). Slots, not "the
 * time we happened to send", are what is persisted and claimed, so every beat computes the
 * same slots and a restart or a takeover neither skips nor repeats one. */
#ifndef CELERYC_BEAT_INT_H
#define CELERYC_BEAT_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "celeryc/status.h"
#include "schedule.h"

enum beat_missed {
    BEAT_MISSED_RUN_ONCE = 0, /* one run for the missed slots (the latest), within the deadline */
    BEAT_MISSED_SKIP = 1,     /* no run for missed slots: the next slot after now */
};

/* Memory: the beat holds one per entry (100,000 schedule-file entries in < 60 MiB): what many
 * entries share is interned (cc_beat_sched_intern: task, queue, exchange, routing key, zone name,
 * and a file entry's args/kwargs as compact JSON text, parsed at each send by
 * cc_beat_sched_entry_args). */
struct beat_entry {
    char *name;              /* "NAME" (file) or "job:<uuid>" (job store); the key everywhere */
    bool is_job;             /* from the job store */
    char *job_id;            /* is_job: the uuid */
    const char *task;        /* interned */
    json_t *args;            /* jobs: array, owned (file entries: NULL, see args_json) */
    json_t *kwargs;          /* jobs: object, owned (file entries: NULL) */
    const char *args_json;   /* file entries: args as compact JSON, interned */
    const char *kwargs_json; /* file entries: kwargs as compact JSON, interned */
    const char *queue;       /* interned; NULL: the default queue */
    const char *exchange;    /* interned; NULL: "" (default exchange, routing key = queue) */
    const char *routing_key; /* interned */
    int priority;            /* -1: none (AMQP priority 0) */
    double expires_s;
    struct cc_schedule sched;
    const char *tz_name;    /* interned */
    const struct cc_tz *tz; /* borrowed from the zone cache */
    enum beat_missed missed;
    int64_t deadline_us; /* starting_deadline; 0 = none */
    char *since_kwarg;   /* jobs: kwarg for the last success ("since"); NULL: none */
    char *fingerprint;   /* jobs: schedule + zone as text: a change resets the slot anchor */

    /* State. */
    int64_t last_us; /* last slot handled (sent, or skipped by policy); 0 = never */
    int64_t total;   /* total_run_count */
    int64_t slot_us; /* the slot to dispatch when woken */
    int64_t wake_us; /* heap key: when to look at the entry again (== slot_us unless retrying) */
    bool is_catchup; /* slot_us is a missed slot run once (not counted in lateness) */
    int attempts;    /* failed dispatch attempts of slot_us */
    char claimed_task_id[37]; /* store mode: slot_us was claimed with this task id */
    int64_t claimed_slot_us;
    size_t heap_i;            /* position in the heap; SIZE_MAX when not in it */
    struct beat_entry *hnext; /* hash chain */
};

/* ---- Entries (beat_sched.c) -------------------------------------------------------------- */

/* Zone cache: cc_tzload_zone once per name, shared by entries. NULL/"" = UTC. */
const struct cc_tz *cc_beat_sched_tz_get(const char *name, struct cc_err *err);
/* One shared copy of `s` (NULL: NULL), valid until cc_beat_sched_caches_free(). */
const char *cc_beat_sched_intern(const char *s);
/* Free the zone cache and the interned strings (at exit, after every entry). */
void cc_beat_sched_caches_free(void);

/* Fill `e` from a schedule-file entry (name, JSON object) or a job row. default_tz: the beat's
 * `timezone` option. Errors name the entry: "entry 'x': schedule: ...". */
int cc_beat_sched_entry_from_file(struct beat_entry *e, const char *name, const json_t *spec,
                                  const char *default_tz, struct cc_err *err) CC_MUST_USE;
int cc_beat_sched_entry_from_job(struct beat_entry *e, const json_t *job,
                                 struct cc_err *err) CC_MUST_USE;
void cc_beat_sched_entry_deinit(struct beat_entry *e);
/* The entry's args and kwargs as new references (file entries: parsed from their text). */
int cc_beat_sched_entry_args(const struct beat_entry *e, json_t **args,
                             json_t **kwargs) CC_MUST_USE;
void cc_beat_sched_entry_free(struct beat_entry *e);

/* Read a schedule file: {"entries": {NAME: {...}}}. *out: array of owned entries. */
int cc_beat_sched_file_load(const char *path, const char *default_tz, struct beat_entry ***out,
                            size_t *n, struct cc_err *err) CC_MUST_USE;

/* The first slot strictly after instant t_us. */
int cc_beat_sched_next_after(const struct beat_entry *e, int64_t t_us, int64_t *out_us,
                             struct cc_err *err) CC_MUST_USE;

/* (Re)compute the entry's next slot at `now_us` from last_us, applying the missed-run policy
 * to slots that came due while no beat dispatched them (at start, takeover, reload). Sets
 * slot_us, wake_us, is_catchup; may advance last_us over skipped slots. *n_missed: how many
 * slots were missed (0: none). Logs the decision at info level. */
int cc_beat_sched_entry_plan(struct beat_entry *e, int64_t now_us, int64_t *n_missed,
                             struct cc_err *err) CC_MUST_USE;

/* The entry's slot_us was dispatched (`is_sent`) or given up (skipped, or sent by another
 * beat): last_us = slot_us (total_run_count + 1 when sent), and slot_us = wake_us = the next
 * slot after it (cc_beat_sched_next_after). On an error (a crontab that can never fire again)
 * slot_us is left as it was and the caller disables the entry. */
int cc_beat_sched_entry_step(struct beat_entry *e, bool is_sent, struct cc_err *err) CC_MUST_USE;

/* When the loop finds the entry due (slot_us <= now): move slot_us forward to the latest slot
 * <= now (a stalled loop sends one run, not a burst). Returns how many slots were merged. */
int64_t cc_beat_sched_entry_coalesce(struct beat_entry *e, int64_t now_us);

/* ---- Heap of entries by wake_us ---------------------------------------------------------- */

/* The key is kept beside the pointer: sifting compares keys in one array instead of reading
 * 100,000 entries scattered over the heap (cache misses were 7 % of a burst's CPU). */
struct beat_heap_node {
    int64_t wake_us; /* == a[i].e->wake_us */
    struct beat_entry *e;
};
struct beat_heap {
    struct beat_heap_node *a;
    size_t n, cap;
};
void cc_beat_sched_heap_push(struct beat_heap *h, struct beat_entry *e);
void cc_beat_sched_heap_remove(struct beat_heap *h, struct beat_entry *e);
void cc_beat_sched_heap_fix(struct beat_heap *h, struct beat_entry *e); /* after wake_us changed */
struct beat_entry *cc_beat_sched_heap_top(const struct beat_heap *h);
void cc_beat_sched_heap_deinit(struct beat_heap *h);

/* ---- Name index -------------------------------------------------------------------------- */

struct beat_index {
    struct beat_entry **b;
    size_t nb, n;
};
struct beat_entry *cc_beat_sched_index_get(const struct beat_index *ix, const char *name);
void cc_beat_sched_index_put(struct beat_index *ix,
                             struct beat_entry *e); /* name not yet present */
void cc_beat_sched_index_del(struct beat_index *ix, struct beat_entry *e);
void cc_beat_sched_index_deinit(struct beat_index *ix);

/* ---- Local state file (no job store) ----------------------------------------------------- */

/* A snapshot FILE, {"version": 1, "entries": {NAME: {"last_run_at": ISO, "total_run_count":
 * n}}}, plus a journal FILE.journal of one JSON line {"n": NAME, "l": slot_us, "t": total}
 * per dispatched slot, appended (and fdatasync'ed) after every batch: O(batch), not
 * O(entries), per batch. Load: `fn` is called for every entry of the snapshot (read member by
 * member), then for every journal line in order: the caller keeps the latest slot of each
 * name (nothing when neither file exists). Save: the snapshot (tmp + fsync + rename), then
 * the journal is emptied; replaying a journal over a newer snapshot is harmless (the latest
 * slot wins). */
typedef void (*beat_state_fn)(const char *name, int64_t last_us, int64_t total, void *arg);
int cc_beat_sched_state_load(const char *path, beat_state_fn fn, void *arg,
                             struct cc_err *err) CC_MUST_USE;
int cc_beat_sched_state_append(const char *path, struct beat_entry *const *entries, size_t n,
                               struct cc_err *err) CC_MUST_USE;
int cc_beat_sched_state_save(const char *path, struct beat_entry *const *entries, size_t n,
                             struct cc_err *err) CC_MUST_USE;

/* The same writes off the dispatch loop: a thread that appends journal lines and writes
 * snapshots in the order they were queued (so a snapshot empties the journal only of the lines
 * queued before it), and logs its own failures. The loop formats the lines (or copies the
 * snapshot's rows: names are borrowed, so file entries must outlive the writer) and never
 * waits for the disk: an fdatasync or a 100,000-entry snapshot (~8 MB + fsync) delayed every
 * due entry behind it. Crash: lines still queued are lost like lines not yet appended (those
 * slots are sent again after the restart). */
struct beat_state_writer;
int cc_beat_sched_state_writer_start(struct beat_state_writer **w, const char *path,
                                     struct cc_err *err) CC_MUST_USE;
void cc_beat_sched_state_writer_append(struct beat_state_writer *w,
                                       struct beat_entry *const *entries, size_t n);
/* false: a snapshot is still queued (nothing done). */
bool cc_beat_sched_state_writer_snapshot(struct beat_state_writer *w,
                                         struct beat_entry *const *entries, size_t n);
/* Whether an append failed since the last call (the caller then asks for a snapshot). */
bool cc_beat_sched_state_writer_take_failed(struct beat_state_writer *w);
/* Finish every queued write, then stop the thread and free `w` (NULL: nothing). */
void cc_beat_sched_state_writer_stop(struct beat_state_writer *w);

#endif
