/* Fuzz target for cc_message_decode (and, on success, cc_message_encode + decode again).
 *
 * Input layout: the bytes up to the first '\n' are a JSON object used as the header table
 * (anything else: no header table); the rest is the body. A leading '!' on the first line
 * marks the body as zlib-compressed (compression header application/x-gzip). Properties are
 * fixed (application/json, utf-8). Small limits keep each run cheap.
 * Property checked: a message that decodes re-encodes to one that decodes to the same
 * task, id, args and kwargs.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t hlen = nl ? (size_t)(nl - data) : 0;
    int compressed = hlen > 0 && data[0] == '!';
    json_t *hdr = NULL;
    struct cc_msg_limits lim = {1u << 20, 1u << 20};
    struct cc_msg_raw raw = {.content_type = cc_bytes_str("application/json"),
                             .content_encoding = cc_bytes_str("utf-8"),
                             .priority = -1};
    struct cc_msg m, m2;
    struct cc_msg_out o;
    struct cc_err err;

    if (nl != NULL) {
        hdr = json_loadb((const char *)data + compressed, hlen - (size_t)compressed, 0, NULL);
        if (hdr != NULL && compressed)
            json_object_set_new(hdr, "compression", json_string("application/x-gzip"));
        raw.body.p = nl + 1;
        raw.body.len = size - hlen - 1;
    } else {
        raw.body.p = data;
        raw.body.len = size;
    }
    raw.headers = hdr;
    if (cc_message_decode(&raw, &lim, &m, &err) == CC_OK) {
        if (cc_message_encode(&m, 0, &o, &err) != CC_OK) {
            fprintf(stderr, "cc_message_encode: %s: %s\n", cc_strerror(err.code), err.msg);
            abort();
        }
        raw.headers = o.headers;
        raw.body.p = (const uint8_t *)o.body;
        raw.body.len = o.body_len;
        if (cc_message_decode(&raw, NULL, &m2, &err) != CC_OK || strcmp(m.id, m2.id) != 0 ||
            strcmp(m.task, m2.task) != 0 || !json_equal(m.args, m2.args) ||
            !json_equal(m.kwargs, m2.kwargs))
            abort();
        cc_message_deinit(&m2);
        cc_message_out_deinit(&o);
    }
    cc_message_deinit(&m);
    json_decref(hdr);
    return 0;
}
