/* celeryc version. The sw_ident/sw_ver pair advertised in events and `inspect report`. */
#ifndef CELERYC_VERSION_H
#define CELERYC_VERSION_H

#define CELERYC_VERSION_MAJOR 0
#define CELERYC_VERSION_MINOR 1
#define CELERYC_VERSION_PATCH 0
#define CELERYC_VERSION       "0.1.0"

/* What celeryc claims to be compatible with (the Celery version of the wire reference). */
#define CELERYC_CELERY_COMPAT "5.2.6"

#endif
