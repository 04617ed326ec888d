/* Fuzz target for cc_amqptab_to_json() on header tables straight off the wire.
 *
 * This is the untrusted direction: a publisher controls the AMQP header table of every
 * delivery, rabbitmq-c decodes it (any field kind, any nesting its decoder accepts) and
 * proto/amqptab.c turns it into JSON. fuzz_amqptab only reaches tables our own encoder
 * built; this target feeds arbitrary wire bytes.
 *
 * Input: the body of an AMQP field table (entries: shortstr key, kind octet, value), without
 * its 4-byte length, which the target prepends. It is decoded with rabbitmq-c's
 * amqp_decode_table(), the function the library runs on every content header. That function
 * is exported by librabbitmq but declared only in its private amqp_table.h, so it is declared
 * here with the signature rabbitmq-c has had since 0.5 (offset as size_t *).
 * Properties checked: a table that converts to JSON converts back (cc_amqptab_from_json),
 * encodes (amqp_encode_table), decodes again and converts to equal JSON; so what we forward
 * (retries, chords) survives the trip. Conversion failures must be CC_EBADTABLE.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "amqptab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int amqp_decode_table(amqp_bytes_t encoded, amqp_pool_t *pool, amqp_table_t *output,
                      size_t *offset);
int amqp_encode_table(amqp_bytes_t encoded, amqp_table_t *input, size_t *offset);

/* Wire bytes -> JSON. Returns CC_OK, CC_EBADTABLE for a table rabbitmq-c refuses, or what
 * cc_amqptab_to_json() returned. */
static int amqpwire_to_json(const uint8_t *body, size_t len, amqp_pool_t *pool, json_t **out)
{
    uint8_t *buf = malloc(len + 4);
    amqp_bytes_t enc = {len + 4, buf};
    amqp_table_t t;
    size_t off = 0;
    struct cc_err err = {0};
    int rc;

    *out = NULL;
    if (buf == NULL)
        abort();
    buf[0] = (uint8_t)(len >> 24);
    buf[1] = (uint8_t)(len >> 16);
    buf[2] = (uint8_t)(len >> 8);
    buf[3] = (uint8_t)len;
    if (len > 0)
        memcpy(buf + 4, body, len);
    if (amqp_decode_table(enc, pool, &t, &off) != AMQP_STATUS_OK) {
        rc = CC_EBADTABLE;
    } else {
        rc = cc_amqptab_to_json(&t, out, &err);
        if (rc != CC_OK && rc != CC_EBADTABLE) {
            fprintf(stderr, "cc_amqptab_to_json: %s: %s\n", cc_strerror(rc), err.msg);
            abort();
        }
    }
    /* Decoded byte strings point into buf: the JSON copied them, so it can go. */
    free(buf);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    amqp_pool_t pool;
    amqp_table_t t2;
    json_t *j = NULL, *j2 = NULL;
    struct cc_err err = {0};
    /* Our encoder may widen values (an 'b' octet becomes an 'I' long), never past 5x. */
    size_t cap = 5 * size + 64, off = 4;
    uint8_t *buf;

    if (size > (1u << 20))
        return 0;
    init_amqp_pool(&pool, 4096);
    if (amqpwire_to_json(data, size, &pool, &j) != CC_OK)
        goto out;
    if (cc_amqptab_from_json(j, &pool, &t2, &err) != CC_OK) {
        fprintf(stderr, "cc_amqptab_from_json: %s: %s\n", cc_strerror(err.code), err.msg);
        abort();
    }
    buf = malloc(cap);
    if (buf == NULL)
        abort();
    /* amqp_encode_table writes its own 4-byte length; skip it so the body can be re-fed. */
    off = 0;
    if (amqp_encode_table((amqp_bytes_t){cap, buf}, &t2, &off) != AMQP_STATUS_OK || off < 4)
        abort();
    if (amqpwire_to_json(buf + 4, off - 4, &pool, &j2) != CC_OK || !json_equal(j, j2)) {
        char *a = json_dumps(j, JSON_ENCODE_ANY), *b = j2 ? json_dumps(j2, JSON_ENCODE_ANY) : NULL;

        fprintf(stderr, "round trip changed the table:\n  %s\n  %s\n", a ? a : "?",
                b ? b : "(not decoded)");
        abort();
    }
    free(buf);
out:
    json_decref(j);
    json_decref(j2);
    empty_amqp_pool(&pool);
    return 0;
}
