/* Fuzz target for src/core/config.c: cc_config_load() reading an untrusted config file.
 *
 * Input: the bytes of a config file. They are written to a private temp file under /tmp
 * (created once per process, removed at exit) and loaded as `celeryc worker --config FILE`
 * with an empty environment, so the file parser, the unquoting, every option's value parser
 * and range check, the broker/backend URL checks (proto/url.c) and the derived values
 * (queue list, hostname expansion) all see fuzzed text.
 * Properties checked: CC_OK leaves the invariants config.h promises (broker URL set, at
 * least one queue, concurrency >= 1, hostname expanded); a failure is CC_ECONFIG with a
 * message; cc_config_deinit() always frees everything (LeakSanitizer) and may run twice.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_config_path[64];

static void fuzz_config_cleanup(void)
{
    if (fuzz_config_path[0] != '\0')
        unlink(fuzz_config_path);
}

/* The temp file's path, created on first use. NULL if /tmp is unusable. */
static const char *fuzz_config_file(void)
{
    int fd;

    if (fuzz_config_path[0] != '\0')
        return fuzz_config_path;
    snprintf(fuzz_config_path, sizeof(fuzz_config_path), "/tmp/celeryc-fuzz-config.XXXXXX");
    fd = mkstemp(fuzz_config_path);
    if (fd < 0) {
        perror("fuzz_config: mkstemp");
        fuzz_config_path[0] = '\0';
        return NULL;
    }
    close(fd);
    atexit(fuzz_config_cleanup);
    return fuzz_config_path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_config_file();
    char a0[] = "worker", a1[] = "--config";
    char *argv[4] = {a0, a1, NULL, NULL};
    char *env[1] = {NULL};
    struct cc_config cfg;
    struct cc_err err = {0};
    FILE *f;
    int rc;

    if (path == NULL)
        abort();
    f = fopen(path, "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0)
        abort();
    argv[2] = (char *)path;
    rc = cc_config_load(&cfg, CC_CMD_WORKER, 3, argv, env, &err);
    if (rc == CC_OK) {
        if (cfg.broker_url == NULL || cfg.result_backend == NULL || cfg.hostname == NULL ||
            strchr(cfg.hostname, '@') == NULL || cfg.n_queues < 1 || cfg.queues == NULL ||
            cfg.queues[cfg.n_queues] != NULL || cfg.concurrency < 1 || cfg.default_queue == NULL)
            abort();
    } else if (rc != CC_ECONFIG || err.msg[0] == '\0') {
        fprintf(stderr, "cc_config_load: rc %d (%s): %s\n", rc, cc_strerror(rc), err.msg);
        abort();
    }
    cc_config_deinit(&cfg);
    cc_config_deinit(&cfg);
    return 0;
}
