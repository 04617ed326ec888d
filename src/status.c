/* Status code names and the error-detail helper (include/celeryc/status.h). */
#include <stdarg.h>
#include <stdio.h>

#include "celeryc/status.h"

int cc_err_set(struct cc_err *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;

        err->code = code;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *cc_strerror(int code)
{
    switch (code) {
    case CC_OK:
        return "CC_OK: success";
    case CC_ENOMEM:
        return "CC_ENOMEM: out of memory";
    case CC_EINVAL:
        return "CC_EINVAL: invalid argument";
    case CC_ERANGE:
        return "CC_ERANGE: value out of range";
    case CC_EIO:
        return "CC_EIO: system call failed";
    case CC_ETIMEDOUT:
        return "CC_ETIMEDOUT: timed out";
    case CC_ENOTFOUND:
        return "CC_ENOTFOUND: not found";
    case CC_EAGAIN:
        return "CC_EAGAIN: try again";
    case CC_ETOOBIG:
        return "CC_ETOOBIG: over a size limit";
    case CC_EUNSUPP:
        return "CC_EUNSUPP: not supported";
    case CC_ESHUTDOWN:
        return "CC_ESHUTDOWN: shutting down";
    case CC_EBADMSG:
        return "CC_EBADMSG: malformed message";
    case CC_ENOTASK:
        return "CC_ENOTASK: no task name";
    case CC_ENOID:
        return "CC_ENOID: no task id";
    case CC_ECONTENT:
        return "CC_ECONTENT: content type refused";
    case CC_EENCODING:
        return "CC_EENCODING: bad content encoding or compression";
    case CC_EBADTABLE:
        return "CC_EBADTABLE: AMQP table not representable";
    case CC_EBADTIME:
        return "CC_EBADTIME: bad ISO-8601 time";
    case CC_EBROKER:
        return "CC_EBROKER: broker connection failed";
    case CC_EPRECOND:
        return "CC_EPRECOND: declared with other arguments (406)";
    case CC_EACCESS:
        return "CC_EACCESS: access refused (403)";
    case CC_ECHANNEL:
        return "CC_ECHANNEL: channel closed by the broker";
    case CC_ENOTFOUND_Q:
        return "CC_ENOTFOUND_Q: queue or exchange not found (404)";
    case CC_EBACKEND:
        return "CC_EBACKEND: result backend failed";
    case CC_ECONFIG:
        return "CC_ECONFIG: bad configuration";
    case CC_EURL:
        return "CC_EURL: bad URL";
    case CC_EUSAGE:
        return "CC_EUSAGE: bad command line";
    case CC_TASK_FAILED:
        return "CC_TASK_FAILED: task raised";
    case CC_TASK_RETRY:
        return "CC_TASK_RETRY: task asked for a retry";
    case CC_TASK_REJECT:
        return "CC_TASK_REJECT: task rejected its message";
    case CC_TASK_IGNORE:
        return "CC_TASK_IGNORE: task asked to be ignored";
    default:
        return "unknown status";
    }
}
