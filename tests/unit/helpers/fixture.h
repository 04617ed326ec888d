/* Shared unit-test helper: load captured Celery fixtures (tests/fixtures, see its README)
 * and turn one AMQP message record into the struct cc_msg_raw the broker layer would build.
 */
#ifndef CELERYC_TEST_FIXTURE_H
#define CELERYC_TEST_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "message.h"

/* One message record made decodable. `raw` views point into `rec` (borrowed from the loaded
 * file) and into `body` (owned). Release with fixture_msg_deinit(). */
struct fixture_msg {
    const json_t *rec;
    json_t *headers; /* owned reference (NULL: no header table) */
    uint8_t *body;   /* owned body bytes */
    size_t body_len;
    const json_t *expect_body; /* body_decoded / body_sent (borrowed), may be NULL */
    struct cc_msg_raw raw;
};

/* Read a whole file; owned, NUL-terminated, NULL on error. */
char *fixture_read_file(const char *path, size_t *len);

/* Parse CC_FIXTURES_DIR/<name> (order-preserving). Owned, NULL on error. */
json_t *fixture_load(const char *name);

/* Standard base64 (padding optional, whitespace skipped). 0 on success; *out owned. */
int fixture_b64_decode(const char *in, uint8_t **out, size_t *len);

/* The message records of a fixture file: its "messages", "published" or "cases" list, or
 * the file itself when it is a single record. Returns a new array of borrowed records
 * (owned array; NULL on error). */
json_t *fixture_records(const json_t *root);

/* Build `out` from a record: properties + headers + body_raw / body_b64, or a hand-made
 * case (headers_sent + body_sent, sent as application/json utf-8, delivery_mode 2).
 * Returns 0, or -1 if the record is not a message. */
int fixture_msg_init(const json_t *rec, struct fixture_msg *out);
void fixture_msg_deinit(struct fixture_msg *m);

/* JSON text parsed (JSON_DECODE_ANY); a bad text fails the running test. Owned. */
json_t *fixture_json(const char *text);

/* Borrowed string at rec[key] (NULL when absent or not a string). */
const char *fixture_str(const json_t *obj, const char *key);

/* cc_strerror(rc) for failure messages. (Also keeps proto/status.c on every test's link line:
 * cc_proto needs cc_err_set, which lives in cc_core, linked before cc_proto.) */
const char *fixture_status_name(int rc);

#endif
