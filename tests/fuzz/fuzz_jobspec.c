/* Fuzz target for the job and schedule-entry specs an operator or admin hands in: the JSON of
 * `celeryc jobs create/update` (cc_jobstore_job_validate) and of a schedule-file entry or a job
 * row as the beat reads it (cc_beat_sched_entry_from_file / cc_beat_sched_entry_from_job, then the
 * next slot).
 *
 * Input: JSON bytes. Properties checked: every call returns CC_OK or a negative code with a
 * message; an entry that was accepted has a task, args that are an array, kwargs that are an
 * object, and a next slot strictly after the instant asked (or CC_EINVAL for a crontab that
 * can never match). */
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "beat_int.h"
#include "jobstore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_jobspec_check(int rc, const struct cc_err *err)
{
    if (rc != CC_OK && (rc >= 0 || err->msg[0] == '\0'))
        abort();
}

static void fuzz_jobspec_entry(struct beat_entry *e)
{
    static const int64_t pts[] = {0, 1774744200000000LL, 1798761599999999LL};

    json_t *args = NULL, *kwargs = NULL;

    /* File entries keep their arguments as text (interned), jobs as JSON: both read back. */
    if (e->task == NULL || cc_beat_sched_entry_args(e, &args, &kwargs) != CC_OK ||
        !json_is_array(args) || !json_is_object(kwargs))
        abort();
    json_decref(args);
    json_decref(kwargs);
    for (size_t i = 0; i < sizeof(pts) / sizeof(pts[0]); i++) {
        struct cc_err err = {0};
        int64_t next = 0;
        int rc = cc_beat_sched_next_after(e, pts[i], &next, &err);

        fuzz_jobspec_check(rc, &err);
        if (rc == CC_OK && next <= pts[i])
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY, &jerr);
    struct cc_err err = {0};
    struct beat_entry e = {0};
    int rc;

    if (v == NULL)
        return 0;
    fuzz_jobspec_check(cc_jobstore_job_validate(v, true, &err), &err);
    err.msg[0] = '\0';
    fuzz_jobspec_check(cc_jobstore_job_validate(v, false, &err), &err);
    err.msg[0] = '\0';
    rc = cc_beat_sched_entry_from_file(&e, "fuzz", v, "UTC", &err);
    fuzz_jobspec_check(rc, &err);
    if (rc == CC_OK)
        fuzz_jobspec_entry(&e);
    cc_beat_sched_entry_deinit(&e);
    err.msg[0] = '\0';
    e = (struct beat_entry){0};
    rc = cc_beat_sched_entry_from_job(&e, v, &err);
    fuzz_jobspec_check(rc, &err);
    if (rc == CC_OK)
        fuzz_jobspec_entry(&e);
    cc_beat_sched_entry_deinit(&e);
    json_decref(v);
    return 0;
}
