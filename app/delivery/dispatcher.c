/*
 * The dispatcher: one child process (or delivery.dispatchers of them)
 * keeping up to delivery.concurrency deliveries in flight.  It claims due
 * deliveries in batches under leases, starts new work as soon as a slot
 * frees, and is woken at once when a worker hands it an event (the
 * wake-up pipe of delivery_limits.h; on PostgreSQL also when any host's
 * worker does, store_wake_listen).  It also purges old event bodies
 * and checkpoints the WAL every hour.
 */
#include <stdlib.h>
#include <unistd.h>

#include "delivery_limits.h"
#include "engine.h"
#include "log.h"
#include "mono.h"
#include "store.h"
#include "worker.h"

#define PURGE_EVERY_MS (3600 * 1000) /* purge and checkpoint */

static void
dispatcher_purge(struct store *st, const struct app_config *cfg)
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

/*
 * How many events to claim now: as many as there is room for, up to
 * retrier.batch.  With enough in hand to keep every transfer busy, it
 * waits for room for a quarter of the most it could ever claim at once
 * rather than taking an event per freed transfer (a round trip each, on
 * a database server).
 */
static int
dispatcher_ask(const struct engine *eng, const struct app_config *cfg)
{
	int room = engine_room(eng) / 2;
	int most = cfg->delivery_concurrency / 2; /* the wire's room at most */
	int ask, least = 1;

	if (most > cfg->retrier_batch)
		most = cfg->retrier_batch;
	if (engine_jobs(eng) >= cfg->delivery_concurrency)
		least = (most + 3) / 4;
	ask = room < cfg->retrier_batch ? room : cfg->retrier_batch;
	return ask >= least ? ask : 0;
}

/*
 * Claim while there is room and due work; returns when the next look is
 * due: now when the last claim filled what it asked for.  *roomless: no
 * room to claim into, so look again as soon as there is.
 */
static int64_t
dispatcher_fill(struct engine *eng, const struct app_config *cfg, int *roomless)
{
	int ask = dispatcher_ask(eng, cfg), got;

	*roomless = ask == 0;
	if (ask == 0)
		return mono_ms() + cfg->retrier_interval_ms;
	got = engine_claim(eng, ask * 2);
	if (got < 0) {
		log_warnx("dispatcher: could not claim due deliveries");
		return mono_ms() + cfg->retrier_interval_ms;
	}
	/* A full batch: there may be more due right now. */
	return got == ask ? mono_ms() : mono_ms() + cfg->retrier_interval_ms;
}

/* See worker.h. */
void
dispatcher_main(const struct app_config *cfg)
{
	struct store *st;
	struct engine *eng;
	int64_t last_purge = mono_ms() - PURGE_EVERY_MS, next_look = 0;
	char why[512];
	int woken = 1, roomless = 0;

	log_init("dispatcher", cfg->log_level);
	if (store_open(cfg, &st, why, sizeof(why)) != GC_OK)
		fatalx("store: %s", why);
	if ((eng = engine_alloc(cfg, st, 1)) == NULL)
		fatalx("engine: out of memory");
	/* Woken by every host's intake, not only this host's pipe. */
	if (store_wake_listen(st) != GC_OK)
		log_warnx("dispatcher: cannot listen for other hosts' work; "
		          "it is found by the poll");
	log_info("dispatcher started");
	while (!worker_stop || engine_jobs(eng) > 0) {
		limits_dispatcher_beat(mono_ms());
		if (mono_ms() - last_purge >= PURGE_EVERY_MS) {
			dispatcher_purge(st, cfg);
			last_purge = mono_ms();
		}
		/*
		 * Stopping: finish what is in flight, take nothing new.  An
		 * unusable store: claim nothing, look again in a second.  Out
		 * of room: look again once a finished run or transfer makes
		 * some, not a retrier interval later.
		 */
		if (roomless && dispatcher_ask(eng, cfg) > 0)
			woken = 1;
		if (!worker_stop && (woken || mono_ms() >= next_look)) {
			roomless = 0;
			next_look = store_usable(st, why, sizeof(why)) == GC_OK
			                ? dispatcher_fill(eng, cfg, &roomless)
			                : mono_ms() + 1000;
		}
		long wait = (long)(next_look - mono_ms());
		woken = engine_step(eng, wait < 0      ? 0
		                         : wait > 1000 ? 1000
		                                       : wait);
	}
	engine_free(eng);
	store_close(st);
	log_info("dispatcher stopped");
	exit(0);
}
