/* Fuzz target for proto/amqptab.c (and the Python-style JSON writer).
 *
 * Input: any bytes; when they parse as JSON, the value goes JSON -> AMQP field table ->
 * JSON and must come back equal (unless the encoder refuses it: too deep, key too long),
 * and cc_result_json_dumps() output must parse back to an equal value. cc_pyrepr() runs for
 * crash detection. rabbitmq-c's wire-level table decoder is private API, so the wire bytes
 * themselves are not fuzzed here.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqptab.h"
#include "pyrepr.h"
#include "result.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *v = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    amqp_pool_t pool;
    amqp_table_t t;
    json_t *back = NULL;
    char *s;
    int rc;

    if (v == NULL)
        return 0;
    init_amqp_pool(&pool, 4096);
    rc = cc_amqptab_from_json(v, &pool, &t, NULL);
    if (rc == CC_OK) {
        if (cc_amqptab_to_json(&t, &back, NULL) != CC_OK || !json_equal(back, v))
            abort();
        json_decref(back);
    } else if (rc != CC_EINVAL && rc != CC_EBADTABLE) {
        fprintf(stderr, "cc_amqptab_from_json: %s\n", cc_strerror(rc));
        abort();
    }
    empty_amqp_pool(&pool);

    s = cc_result_json_dumps(v);
    if (s == NULL)
        abort();
    back = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    if (back == NULL || !json_equal(back, v))
        abort();
    json_decref(back);
    free(s);
    free(cc_pyrepr(v, 1, 256));
    json_decref(v);
    return 0;
}
