/* Result backend "none": Celery's default when no result_backend is configured. Every store
 * succeeds and writes nothing (results stay PENDING for any client that asks). */
#include <stdlib.h>

#include "backend.h"

static int none_store(struct cc_backend *b, const char *task_id, const char *meta, size_t len,
                      struct cc_err *err)
{
    (void)b;
    (void)task_id;
    (void)meta;
    (void)len;
    (void)err;
    return CC_OK;
}

static void none_after_fork(struct cc_backend *b)
{
    (void)b;
}

static void none_destroy(struct cc_backend *b)
{
    free(b);
}

static const struct cc_backend_ops none_ops = {
    .name = "none",
    .store = none_store,
    .after_fork = none_after_fork,
    .destroy = none_destroy,
};

struct cc_backend *cc_backend_none_new(void)
{
    struct cc_backend *b = calloc(1, sizeof(*b));

    if (b != NULL) {
        b->ops = &none_ops;
        b->is_none = true;
    }
    return b;
}
