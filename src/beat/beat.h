/* `celeryc beat`: the periodic task scheduler (schedule file + job store, HA lease). */
#ifndef CELERYC_BEAT_H
#define CELERYC_BEAT_H

/* Run `celeryc beat` (argv[0] is "beat"). Returns the process exit status. */
int cc_beat_main(int argc, char **argv);

#endif
