/* Celery's built-in tasks that a drop-in worker must register.
 *
 * celery/app/builtins.py registers celery.ping (returns 'pong') on every app; `celery call
 * celery.ping` and some health checks use it. The other built-ins (celery.backend_cleanup,
 * celery.chord_unlock, celery.group, celery.chain, celery.chord, celery.accumulate,
 * celery.starmap, celery.chunks, celery.map) need canvas support and come with it.
 */
#include "tasks.h"

static int celery_ping(struct cc_task_ctx *ctx, const json_t *args, const json_t *kwargs,
                       json_t **result)
{
    (void)ctx;
    (void)args;
    (void)kwargs;
    *result = json_string("pong");
    return CC_OK;
}

const struct cc_task_entry cc_task_celery_ping = {
    .name = "celery.ping",
    .run = celery_ping,
    .signature = "",
};
