/* Zone files: read /usr/share/zoneinfo/<name>, parse with cc_schedule_tz_parse (proto/schedule.c).
 */
#include "tzload.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TZLOAD_MAX (1024 * 1024)

int cc_tzload_zone(const char *name, const char *dir, struct cc_tz *tz, struct cc_err *err)
{
    char path[4096];
    uint8_t *buf;
    size_t n = 0;
    FILE *f;
    int rc;

    cc_schedule_tz_utc(tz);
    if (name == NULL || name[0] == '\0' || strcmp(name, "UTC") == 0 || strcmp(name, "Etc/UTC") == 0)
        return CC_OK;
    if (name[0] == '/' || strstr(name, "..") != NULL || strlen(name) > 255 ||
        strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_+-") !=
            strlen(name))
        return cc_err_set(err, CC_EINVAL, "invalid time zone name '%.64s'", name);
    snprintf(path, sizeof(path), "%s/%s", dir ? dir : "/usr/share/zoneinfo", name);
    f = fopen(path, "rb");
    if (f == NULL)
        return cc_err_set(err, CC_EINVAL, "unknown time zone '%s' (%s: %s)", name, path,
                          strerror(errno));
    buf = malloc(TZLOAD_MAX);
    if (buf == NULL) {
        fclose(f);
        return cc_err_set(err, CC_ENOMEM, "out of memory");
    }
    n = fread(buf, 1, TZLOAD_MAX, f);
    fclose(f);
    rc = cc_schedule_tz_parse(buf, n, tz, err);
    free(buf);
    if (rc == CC_EINVAL) {
        char msg[sizeof(err->msg)];

        memcpy(msg, err->msg, sizeof(msg));
        return cc_err_set(err, CC_EINVAL, "time zone '%s': %s", name, msg);
    }
    return rc;
}
