/* Fuzz target for proto/url.c: cc_url_parse_amqp(), cc_url_parse_redis() and cc_url_redact().
 *
 * cc_url_mask() too (issue 14).
 * Input: any bytes, copied and NUL-terminated (an embedded NUL ends the string, as it would
 * for a URL read from a config file, the environment or argv). Every parser runs on it.
 * Properties checked: on success every string the struct documents as set is non-NULL, ports
 * are 1..65535 and the Redis db is >= 0; on failure the struct is zeroed (safe to _deinit)
 * and the error says why; _deinit twice is harmless; redaction never returns NULL.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_url_check_err(int rc, const struct cc_err *err)
{
    if (rc != CC_EURL || err->code != CC_EURL || err->msg[0] == '\0') {
        fprintf(stderr, "url parser failed with rc %d, err %d '%s'\n", rc, err->code, err->msg);
        abort();
    }
}

static void fuzz_url_amqp(const char *s)
{
    static const struct cc_amqp_url zero;
    struct cc_amqp_url u;
    struct cc_err err = {0};
    int rc = cc_url_parse_amqp(s, &u, &err);

    if (rc == CC_OK) {
        if (u.host == NULL || u.user == NULL || u.password == NULL || u.vhost == NULL ||
            u.port < 1 || u.port > 65535)
            abort();
    } else {
        fuzz_url_check_err(rc, &err);
        if (memcmp(&u, &zero, sizeof(u)) != 0)
            abort();
    }
    cc_url_amqp_deinit(&u);
    cc_url_amqp_deinit(&u);
}

static void fuzz_url_redis(const char *s)
{
    static const struct cc_redis_url zero;
    struct cc_redis_url u;
    struct cc_err err = {0};
    int rc = cc_url_parse_redis(s, &u, &err);

    if (rc == CC_OK) {
        /* Exactly one of host (TCP) and socket_path (unix://). */
        if ((u.host == NULL) == (u.socket_path == NULL) || u.db < 0)
            abort();
        if (u.host != NULL && (u.port < 1 || u.port > 65535))
            abort();
        if (u.socket_path != NULL && u.socket_path[0] != '/')
            abort();
    } else {
        fuzz_url_check_err(rc, &err);
        if (memcmp(&u, &zero, sizeof(u)) != 0)
            abort();
    }
    cc_url_redis_deinit(&u);
    cc_url_redis_deinit(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    char *r;

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    fuzz_url_amqp(s);
    fuzz_url_redis(s);
    r = cc_url_redact(s);
    if (r == NULL)
        abort();
    free(r);
    r = cc_url_mask(s, CC_URL_MASK_CONF); /* issue 14: every shape, any bytes */
    if (r == NULL)
        abort();
    free(r);
    free(s);
    return 0;
}
