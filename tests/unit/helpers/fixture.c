/* Fixture loading for the unit tests (tests/unit/helpers/fixture.h).
 *
 * Fixture records hold the body either as text (body_raw, exactly as sent) or base64
 * (body_b64: msgpack, pickle, compressed); hand-made cases (task-v2-minimal-accepted.json)
 * hold the body as JSON (body_sent), serialised here with cc_result_json_dumps() as py-amqp's
 * client did with json.dumps(). Header tables are used as the JSON view the broker layer
 * would produce from the AMQP table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "helpers/fixture.h"
#include "result.h"

char *fixture_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t cap = 0, n = 0;

    if (f == NULL)
        return NULL;
    for (;;) {
        size_t got;

        if (cap - n < 4096) {
            char *nb = realloc(buf, cap ? cap * 2 : 8192);

            if (nb == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap = cap ? cap * 2 : 8192;
        }
        got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

json_t *fixture_load(const char *name)
{
    char path[1024];
    json_error_t jerr;
    json_t *root;

    snprintf(path, sizeof(path), "%s/%s", CC_FIXTURES_DIR, name);
    root = json_load_file(path, JSON_ALLOW_NUL, &jerr);
    if (root == NULL)
        fprintf(stderr, "fixture %s: %s\n", path, jerr.text);
    return root;
}

static int b64_val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int fixture_b64_decode(const char *in, uint8_t **out, size_t *len)
{
    size_t n = strlen(in);
    uint8_t *buf = malloc(n / 4 * 3 + 4);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;

    if (buf == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v;

        if (in[i] == '=' || in[i] == '\n' || in[i] == '\r' || in[i] == ' ')
            continue;
        v = b64_val((unsigned char)in[i]);
        if (v < 0) {
            free(buf);
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            buf[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out = buf;
    *len = o;
    return 0;
}

json_t *fixture_records(const json_t *root)
{
    static const char *const lists[] = {"messages", "published", "cases"};
    json_t *recs = json_array();

    if (recs == NULL)
        return NULL;
    for (size_t i = 0; i < 3; i++) {
        json_t *l = json_object_get(root, lists[i]);

        if (json_is_array(l)) {
            json_array_extend(recs, l);
            return recs;
        }
    }
    if (json_object_get(root, "headers") != NULL)
        json_array_append(recs, (json_t *)root);
    return recs;
}

const char *fixture_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

static cc_bytes_t prop_str(const json_t *props, const char *key)
{
    const json_t *v = json_object_get(props, key);
    cc_bytes_t b = {NULL, 0};

    if (json_is_string(v)) {
        b.p = (const uint8_t *)json_string_value(v);
        b.len = json_string_length(v);
    }
    return b;
}

int fixture_msg_init(const json_t *rec, struct fixture_msg *out)
{
    const json_t *props = json_object_get(rec, "properties");
    const char *s;

    memset(out, 0, sizeof(*out));
    out->rec = rec;
    out->raw.priority = -1;
    if (json_object_get(rec, "headers_sent") != NULL) { /* hand-made case */
        static const char ct[] = "application/json";
        static const char ce[] = "utf-8";

        out->headers = json_incref(json_object_get(rec, "headers_sent"));
        out->expect_body = json_object_get(rec, "body_sent");
        out->body = (uint8_t *)cc_result_json_dumps(out->expect_body);
        if (out->body == NULL)
            return -1;
        out->body_len = strlen((char *)out->body);
        out->raw.content_type = (cc_bytes_t){(const uint8_t *)ct, sizeof(ct) - 1};
        out->raw.content_encoding = (cc_bytes_t){(const uint8_t *)ce, sizeof(ce) - 1};
        out->raw.delivery_mode = 2;
    } else {
        if (!json_is_object(props))
            return -1;
        out->headers = json_incref(json_object_get(rec, "headers"));
        out->expect_body = json_object_get(rec, "body_decoded");
        if ((s = fixture_str(rec, "body_raw")) != NULL) {
            size_t n = json_string_length(json_object_get(rec, "body_raw"));

            out->body = malloc(n + 1);
            if (out->body == NULL)
                return -1;
            memcpy(out->body, s, n + 1);
            out->body_len = n;
        } else if ((s = fixture_str(rec, "body_b64")) != NULL) {
            if (fixture_b64_decode(s, &out->body, &out->body_len) != 0)
                return -1;
        } else {
            return -1;
        }
        out->raw.content_type = prop_str(props, "content_type");
        out->raw.content_encoding = prop_str(props, "content_encoding");
        out->raw.correlation_id = prop_str(props, "correlation_id");
        out->raw.reply_to = prop_str(props, "reply_to");
        out->raw.expiration = prop_str(props, "expiration");
        if (json_is_integer(json_object_get(props, "delivery_mode")))
            out->raw.delivery_mode =
                (int)json_integer_value(json_object_get(props, "delivery_mode"));
        if (json_is_integer(json_object_get(props, "priority")))
            out->raw.priority = (int)json_integer_value(json_object_get(props, "priority"));
    }
    out->raw.headers = out->headers;
    out->raw.body.p = out->body;
    out->raw.body.len = out->body_len;
    return 0;
}

void fixture_msg_deinit(struct fixture_msg *m)
{
    json_decref(m->headers);
    free(m->body);
    memset(m, 0, sizeof(*m));
}

const char *fixture_status_name(int rc)
{
    return cc_strerror(rc);
}

json_t *fixture_json(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);

    if (v == NULL)
        fail_msg("bad JSON in test: %s: %s", text, jerr.text);
    return v;
}
