/* The job store's migrations (jobstore_schema.c). */
#ifndef CELERYC_JOBSTORE_SCHEMA_H
#define CELERYC_JOBSTORE_SCHEMA_H

/* Number of migrations: the latest schema version. */
int cc_jobstore_schema_count(void);
/* The SQL of migration `version` (1-based), NULL when out of range. */
const char *cc_jobstore_schema_migration(int version);

#endif
