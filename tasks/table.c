/* The task table: every task this binary can run, in one NULL-terminated array.
 *
 * Adding a task is adding its entry to its family's file (declared in tasks/tasks.h) and one
 * line here. src/worker/taskrun.c indexes the table by name on first lookup and checks every entry
 * at start-up (cc_taskrun_table_check): names unique, signatures valid.
 */
#include <stddef.h>

#include "tasks.h"

const struct cc_task_entry *const cc_task_table[] = {
    &cc_task_celery_ping,
    &cc_task_celery_backend_cleanup,
    &cc_task_celery_accumulate,   /* [canvas-chord] */
    &cc_task_celery_chord_unlock, /* [canvas-chord] */
    &cc_task_demo_add,
    &cc_task_demo_mul,
    &cc_task_demo_xsum,
    &cc_task_demo_noop,
    &cc_task_demo_wordcount,
    &cc_task_demo_fib,
    &cc_task_demo_thumbnail,
    &cc_task_demo_fail,
    &cc_task_demo_sleep,
    &cc_task_demo_soft_guard,
    &cc_task_demo_spin,
    &cc_task_demo_crash,
    &cc_task_demo_crash_once,
    &cc_task_demo_getpid,
    &cc_task_demo_progress, /* [canvas] */
    &cc_task_conformance_identity,
    &cc_task_conformance_add,
    &cc_task_conformance_add_not_typed,
    &cc_task_conformance_add_ignore_result,
    &cc_task_conformance_raise_error,
    &cc_task_conformance_fail,
    &cc_task_conformance_delayed_sum,
    &cc_task_conformance_delayed_sum_with_soft_guard,
    &cc_task_conformance_tsum,
    &cc_task_conformance_sleeping,
    &cc_task_conformance_print_unicode,
    &cc_task_conformance_return_exception,
    &cc_task_conformance_write_to_file_and_return_int,
    &cc_task_conformance_redis_echo,
    &cc_task_conformance_redis_count,
    &cc_task_conformance_errback_old_style,
    &cc_task_conformance_errback_new_style,
    &cc_task_conformance_retry,
    &cc_task_conformance_retry_once,
    &cc_task_conformance_retry_once_priority,
    &cc_task_conformance_auto_retry_class_task,
    &cc_task_conformance_auto_retry_class_task_qualified,
    &cc_task_conformance_ids,
    &cc_task_conformance_collect_ids,
    &cc_task_conformance_return_priority,
    &cc_task_conformance_return_properties,
    &cc_task_conformance_chord_error,
    &cc_task_conformance_build_chain_inside_task,
    &cc_task_conformance_chain_add,
    &cc_task_conformance_chord_add,
    &cc_task_it_count_sleep,
    &cc_task_it_wait_key,       /* [blocked] */
    &cc_task_jobs_index_events, /* [jobrun] */
    &cc_task_jobs_sleep,
    &cc_task_jobs_fail,
    &cc_task_stats_index_events, /* [stats] */
    &cc_task_stats_reaggregate,
    NULL,
};
