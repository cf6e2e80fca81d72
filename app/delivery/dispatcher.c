/*
 * The retrier: one child process that re-runs due deliveries from the
 * outbox and purges old event bodies.
 */
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "log.h"
#include "store.h"
#include "worker.h"

#define PURGE_EVERY_S 3600 /* purge and checkpoint */

static void
retrier_purge(struct store *st, const struct app_config *cfg)
{
	int64_t before =
	    store_now_ms() - (int64_t)cfg->retention_days * 86400 * 1000;
	int n = 0;

	if (store_purge_bodies(st, before, &n) == GC_OK && n > 0)
		log_info("purged the bodies of %d events older than %d days", n,
		         cfg->retention_days);
	/* Bursts leave a large WAL behind; give the space back. */
	if (store_checkpoint(st) != GC_OK)
		log_warnx("store: checkpoint failed");
}

/* Sleep up to ms, waking early when told to stop. */
static void
retrier_sleep(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	if (!worker_stop)
		nanosleep(&ts, NULL);
}

/* See worker.h. */
void
dispatcher_main(const struct app_config *cfg)
{
	struct store *st;
	struct engine *eng;
	time_t last_purge = 0;
	char why[512];
	int n;

	log_init("retrier", cfg->log_level);
	if (store_open(cfg, &st, why, sizeof(why)) != GC_OK)
		fatalx("store: %s", why);
	if ((eng = engine_alloc(cfg, st)) == NULL)
		fatalx("engine: out of memory");
	while (!worker_stop) {
		if (time(NULL) - last_purge >= PURGE_EVERY_S) {
			retrier_purge(st, cfg);
			last_purge = time(NULL);
		}
		/* One event at a time, so a stop is noticed in between. */
		for (n = 0; n < cfg->retrier_batch && !worker_stop; n++)
			if (engine_run_due(eng) == 0)
				break;
		if (n < cfg->retrier_batch)
			retrier_sleep(cfg->retrier_interval_ms);
	}
	engine_free(eng);
	store_close(st);
	log_info("retrier stopped");
	exit(0);
}
