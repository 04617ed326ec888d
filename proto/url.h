/* Broker and backend URLs, parsed the way kombu and Celery read them. Pure. */
#ifndef CELERYC_URL_H
#define CELERYC_URL_H

#include <stdbool.h>

#include "celeryc/status.h"

/* amqp://user:pass@host:port/vhost, amqps://... Defaults as kombu: guest/guest, localhost,
 * 5672 (5671 for amqps), vhost "/". The vhost is the URL-decoded path without its leading
 * slash ("amqp://h//" and "amqp://h/" both mean "/"; "amqp://h/%2F" means "/"; "amqp://h/v"
 * means "v"). User and password are URL-decoded. Also accepts "pyamqp://". */
struct cc_amqp_url {
    char *host;
    int port;
    char *user;
    char *password;
    char *vhost;
    bool tls;
};

/* rediss:// certificate policy, Celery's ssl_cert_reqs. REQUIRED is the zero value: Celery 5.2
 * refuses a rediss:// URL without ssl_cert_reqs, we default to the safe choice instead. */
enum cc_redis_ssl_reqs {
    CC_REDIS_SSL_REQUIRED = 0, /* "required", "CERT_REQUIRED": chain and host name checked */
    CC_REDIS_SSL_OPTIONAL,     /* "optional", "CERT_OPTIONAL": chain checked, host name not */
    CC_REDIS_SSL_NONE,         /* "none", "CERT_NONE": nothing checked */
};

/* redis://[[user]:password@]host[:port][/db], rediss://..., unix:///path?db=N (socket).
 * Defaults: localhost, 6379, db 0. For rediss:// only, the query may carry Celery's
 * ssl_cert_reqs, ssl_ca_certs, ssl_certfile and ssl_keyfile (an unknown ssl_cert_reqs value
 * is CC_EURL); for redis:// the query is ignored, as Celery does. */
struct cc_redis_url {
    char *host; /* NULL for unix sockets */
    int port;
    char *socket_path; /* unix:// only */
    char *username;    /* NULL unless given (Redis 6 ACL) */
    char *password;    /* NULL unless given */
    int db;
    bool tls;
    enum cc_redis_ssl_reqs ssl_cert_reqs; /* rediss:// only */
    char *ssl_ca_certs;                   /* NULL: the system's default CA paths */
    char *ssl_certfile;                   /* client certificate (PEM), NULL for none */
    char *ssl_keyfile;                    /* its key; NULL: in ssl_certfile */
};

int cc_url_parse_amqp(const char *url, struct cc_amqp_url *out, struct cc_err *err) CC_MUST_USE;
void cc_url_amqp_deinit(struct cc_amqp_url *u);

int cc_url_parse_redis(const char *url, struct cc_redis_url *out, struct cc_err *err) CC_MUST_USE;
void cc_url_redis_deinit(struct cc_redis_url *u);

/* [issue 14] Masks: kombu's sanitize_url default (banner, logs, errors) and Celery's
 * inspect conf (filter_hidden_settings: "********"). */
#define CC_URL_MASK_LOG  "**"
#define CC_URL_MASK_CONF "********"

/* The URL with every password replaced by `mask`: the user info's ("redis://:MASK@h/0",
 * "amqp://u:MASK@h//"), query parameters named *pass* / *secret* / *token*
 * ("?password=MASK"), libpq conninfo "password=MASK", each URL of a "url;url" list; the rest
 * unchanged (Celery's masked forms, with the query kept). NULL -> "". Returns: owned; NULL
 * only when memory ran out. */
char *cc_url_mask(const char *url, const char *mask);

/* cc_url_mask(url, CC_URL_MASK_LOG), as Celery prints URLs in its banner. Owned. */
char *cc_url_redact(const char *url);

#endif
