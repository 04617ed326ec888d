/* Load an IANA time zone by name from the system zoneinfo into a struct cc_tz
 * (proto/schedule.h). */
#ifndef CELERYC_TZLOAD_H
#define CELERYC_TZLOAD_H

#include "schedule.h"

/* `name` like "Europe/Paris" or "UTC" ("UTC", "Etc/UTC" and "" need no file). `dir` is the
 * zoneinfo root, NULL for /usr/share/zoneinfo. Names with "..", a leading '/', or characters
 * outside [A-Za-z0-9/_+-] are refused. Returns CC_OK, CC_EINVAL (unknown or malformed zone:
 * err says which) or CC_ENOMEM. */
int cc_tzload_zone(const char *name, const char *dir, struct cc_tz *tz,
                   struct cc_err *err) CC_MUST_USE;

#endif
