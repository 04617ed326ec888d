/* Fuzz target for the statistics event codec (proto/statsevent.c): an event body straight off
 * the queue, then everything the indexer does with an event that parsed.
 *
 * Input: any bytes, used twice: as an event body (cc_statsevent_parse), and as the text of a robots
 * list (cc_statsevent_robots_new). Properties checked:
 * - cc_statsevent_parse (fast path, then jansson) and cc_statsevent_parse_full (jansson only)
 * agree: same status, same reason, same fields;
 * - parse returns CC_OK or CC_EINVAL/CC_ENOMEM with a non-empty, printable-ASCII reason;
 * - an accepted event has a non-empty type and object_id, a visitor field, no string longer
 *   than CC_STATSEVENT_FIELD_MAX, a day that holds its timestamp; its visitor key's length is what
 *   cc_statsevent_visitor_key says; hashes are deterministic; an explicit id ignores window and
 * salt;
 * - the pair-indexed robots matcher agrees with a naive substring search over the same
 *   patterns, for the event's user agent and for the input itself as a user agent;
 * - the shipped list never crashes on the user agent. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "statsevent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned fuzz_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + 32u : c;
}

/* The reference: the list format read line by line, each pattern tried at each position. */
static bool fuzz_naive_match(const char *text, size_t len, const char *ua)
{
    size_t i = 0;

    if (ua == NULL)
        return false;
    while (i < len) {
        size_t start = i, end;

        while (i < len && text[i] != '\n')
            i++;
        end = i++;
        while (start < end && strchr(" \t\r\v\f", text[start]) != NULL && text[start] != '\0')
            start++;
        while (end > start && strchr(" \t\r\v\f", text[end - 1]) != NULL && text[end - 1] != '\0')
            end--;
        if (start == end || text[start] == '#' || memchr(text + start, '\0', end - start))
            continue;
        for (const char *s = ua; *s != '\0'; s++) {
            size_t k = 0;

            while (start + k < end && s[k] != '\0' &&
                   fuzz_lower((unsigned char)s[k]) == fuzz_lower((unsigned char)text[start + k]))
                k++;
            if (start + k == end)
                return true;
        }
    }
    return false;
}

static bool fuzz_same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* The two parse paths give the same outcome. */
static void fuzz_check_paths(const uint8_t *data, size_t size, int rc,
                             const struct cc_statsevent *ev, const char *why)
{
    struct cc_statsevent full = {0};
    char why_full[160];

    if (cc_statsevent_parse_full(&full, (const char *)data, size, why_full, sizeof(why_full)) !=
            rc ||
        strcmp(why, why_full) != 0 || full.ts_us != ev->ts_us || full.day != ev->day ||
        !fuzz_same_str(full.type, ev->type) || !fuzz_same_str(full.object_id, ev->object_id) ||
        !fuzz_same_str(full.unique_id, ev->unique_id) ||
        !fuzz_same_str(full.user_id, ev->user_id) ||
        !fuzz_same_str(full.session_id, ev->session_id) ||
        !fuzz_same_str(full.ip_address, ev->ip_address) ||
        !fuzz_same_str(full.user_agent, ev->user_agent))
        abort();
    cc_statsevent_clear(&full);
}

static void fuzz_check_event(const struct cc_statsevent *ev)
{
    static const uint8_t salt_a[CC_STATSEVENT_SALT_LEN] = {1, 2, 3};
    static const uint8_t salt_b[CC_STATSEVENT_SALT_LEN] = {9, 8, 7};
    const char *strs[] = {ev->type,       ev->object_id,  ev->unique_id, ev->user_id,
                          ev->session_id, ev->ip_address, ev->user_agent};
    uint8_t a[CC_STATSEVENT_ID_LEN], b[CC_STATSEVENT_ID_LEN];
    char key[2 * CC_STATSEVENT_FIELD_MAX + 8];
    size_t klen;
    int64_t day_start_us;

    if (ev->type == NULL || ev->type[0] == '\0' || ev->object_id == NULL ||
        ev->object_id[0] == '\0')
        abort();
    if (ev->user_id == NULL && ev->session_id == NULL && ev->ip_address == NULL)
        abort();
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
        if (strs[i] != NULL && (strlen(strs[i]) > CC_STATSEVENT_FIELD_MAX || strs[i][0] == '\0'))
            abort();
    day_start_us = (int64_t)ev->day * 86400 * 1000000;
    if (ev->ts_us < day_start_us || ev->ts_us >= day_start_us + 86400LL * 1000000)
        abort();
    klen = cc_statsevent_visitor_key(ev, key, sizeof(key));
    if (klen >= sizeof(key) || strlen(key) != klen || klen < 2 || key[1] != ':')
        abort();

    cc_statsevent_visitor_hash(ev, salt_a, a);
    cc_statsevent_visitor_hash(ev, salt_a, b);
    if (memcmp(a, b, sizeof(a)) != 0)
        abort();
    cc_statsevent_event_id(ev, salt_a, 30, a);
    cc_statsevent_event_id(ev, salt_a, 30, b);
    if (memcmp(a, b, sizeof(a)) != 0)
        abort();
    cc_statsevent_event_id(ev, salt_b, 1, b);
    if ((memcmp(a, b, sizeof(a)) == 0) != (ev->unique_id != NULL))
        abort();
    cc_statsevent_event_id(ev, salt_a, INT64_MAX, b);
    cc_statsevent_event_id(ev, salt_a, 0, b);
    cc_statsevent_event_id(ev, salt_a, -5, b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cc_statsevent ev = {0};
    struct cc_statsevent_robots *mine, *shipped;
    char why[160];
    char *ua;
    int rc;

    why[0] = 'X';
    why[1] = '\0';
    rc = cc_statsevent_parse(&ev, (const char *)data, size, why, sizeof(why));
    fuzz_check_paths(data, size, rc, &ev, why);
    if (rc == CC_OK) {
        if (why[0] != '\0')
            abort();
        fuzz_check_event(&ev);
    } else {
        if ((rc != CC_EINVAL && rc != CC_ENOMEM) || why[0] == '\0' || ev.type != NULL)
            abort();
        for (const char *p = why; *p != '\0'; p++)
            if (*p < 0x20 || *p >= 0x7f)
                abort();
    }

    mine = cc_statsevent_robots_new((const char *)data, size);
    shipped = cc_statsevent_robots_builtin();
    if (mine == NULL || shipped == NULL)
        abort();
    if (cc_statsevent_robots_match(mine, ev.user_agent) !=
        fuzz_naive_match((const char *)data, size, ev.user_agent))
        abort();
    (void)cc_statsevent_robots_match(shipped, ev.user_agent);
    ua = malloc(size + 1);
    if (ua == NULL)
        abort();
    memcpy(ua, data, size);
    ua[size] = '\0';
    if (cc_statsevent_robots_match(mine, ua) != fuzz_naive_match((const char *)data, size, ua))
        abort();
    (void)cc_statsevent_robots_match(shipped, ua);
    free(ua);
    cc_statsevent_robots_free(mine);
    cc_statsevent_robots_free(shipped);
    cc_statsevent_clear(&ev);
    return 0;
}
