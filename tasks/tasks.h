/* Every task entry this binary registers, declared once for tasks/table.c and the unit tests.
 * Each family's file defines its entries; table.c lists them in cc_task_table[]. */
#ifndef CELERYC_TASKS_TASKS_H
#define CELERYC_TASKS_TASKS_H

#include "celeryc/task.h"

/* tasks/celery.c: Celery's own built-in tasks. */
extern const struct cc_task_entry cc_task_celery_ping;
extern const struct cc_task_entry cc_task_celery_backend_cleanup;
extern const struct cc_task_entry cc_task_celery_accumulate;   /* [canvas-chord] */
extern const struct cc_task_entry cc_task_celery_chord_unlock; /* [canvas-chord] */

/* tasks/demo.c: the README's demo family. */
extern const struct cc_task_entry cc_task_demo_add;
extern const struct cc_task_entry cc_task_demo_mul;
extern const struct cc_task_entry cc_task_demo_xsum;
extern const struct cc_task_entry cc_task_demo_noop;
extern const struct cc_task_entry cc_task_demo_wordcount;
extern const struct cc_task_entry cc_task_demo_fib;
extern const struct cc_task_entry cc_task_demo_thumbnail;
extern const struct cc_task_entry cc_task_demo_fail;
extern const struct cc_task_entry cc_task_demo_sleep;
extern const struct cc_task_entry cc_task_demo_soft_guard;
extern const struct cc_task_entry cc_task_demo_spin;
extern const struct cc_task_entry cc_task_demo_crash;
extern const struct cc_task_entry cc_task_demo_crash_once;
extern const struct cc_task_entry cc_task_demo_getpid;
extern const struct cc_task_entry cc_task_demo_progress; /* [canvas] */

/* tasks/it.c: test-only tasks for the delivery-guarantee integration tests. */
extern const struct cc_task_entry cc_task_it_count_sleep;
extern const struct cc_task_entry cc_task_it_wait_key; /* [blocked] */

/* tasks/jobs.c: job run examples and the job run tests' tasks. [jobrun] */
extern const struct cc_task_entry cc_task_jobs_index_events;
extern const struct cc_task_entry cc_task_jobs_sleep;
extern const struct cc_task_entry cc_task_jobs_fail;

/* tasks/stats.c: the statistics indexers (issue #7, docs/STATS.md). [stats] */
extern const struct cc_task_entry cc_task_stats_index_events;
extern const struct cc_task_entry cc_task_stats_reaggregate;

/* tasks/conformance.c: Celery's t/integration/tasks.py. */
extern const struct cc_task_entry cc_task_conformance_identity;
extern const struct cc_task_entry cc_task_conformance_add;
extern const struct cc_task_entry cc_task_conformance_add_not_typed;
extern const struct cc_task_entry cc_task_conformance_add_ignore_result;
extern const struct cc_task_entry cc_task_conformance_raise_error;
extern const struct cc_task_entry cc_task_conformance_fail;
extern const struct cc_task_entry cc_task_conformance_delayed_sum;
extern const struct cc_task_entry cc_task_conformance_delayed_sum_with_soft_guard;
extern const struct cc_task_entry cc_task_conformance_tsum;
extern const struct cc_task_entry cc_task_conformance_sleeping;
extern const struct cc_task_entry cc_task_conformance_print_unicode;
extern const struct cc_task_entry cc_task_conformance_return_exception;
extern const struct cc_task_entry cc_task_conformance_write_to_file_and_return_int;
extern const struct cc_task_entry cc_task_conformance_redis_echo;
extern const struct cc_task_entry cc_task_conformance_redis_count;
extern const struct cc_task_entry cc_task_conformance_errback_old_style;
extern const struct cc_task_entry cc_task_conformance_errback_new_style;
extern const struct cc_task_entry cc_task_conformance_retry;
extern const struct cc_task_entry cc_task_conformance_retry_once;
extern const struct cc_task_entry cc_task_conformance_retry_once_priority;
extern const struct cc_task_entry cc_task_conformance_auto_retry_class_task;
extern const struct cc_task_entry cc_task_conformance_auto_retry_class_task_qualified;
extern const struct cc_task_entry cc_task_conformance_ids;
extern const struct cc_task_entry cc_task_conformance_collect_ids;
extern const struct cc_task_entry cc_task_conformance_return_priority;
extern const struct cc_task_entry cc_task_conformance_return_properties;
extern const struct cc_task_entry cc_task_conformance_chord_error;
extern const struct cc_task_entry cc_task_conformance_build_chain_inside_task;
extern const struct cc_task_entry cc_task_conformance_chain_add;
extern const struct cc_task_entry cc_task_conformance_chord_add;

#endif
