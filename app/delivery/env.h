/*
 * The store-backed destination env (struct dest_env in dest.h) the engine
 * hands its jobs: ledger.c (clocks, Yotpo award ledger, throttle) and
 * caches.c (Emarsys token and id caches), over include/store.h.
 */
#ifndef GC_DELIVERY_ENV_H
#define GC_DELIVERY_ENV_H

#include "app_config.h"
#include "dest.h"
#include "store.h"

struct caches;

/* A ledger state queued for dest_env_flush, its strings owned. */
struct queued_set {
	struct ledger_set v;
	char *mem; /* v's strings, one allocation */
};

/* The ctx of a store-backed env. */
struct env_ctx {
	const struct app_config *cfg; /* borrowed: the secrets key */
	struct store *st;             /* borrowed */
	struct caches *caches;        /* owned: this process's entries */
	struct queued_set *sets;      /* ledger_set's, until the flush */
	size_t nsets, csets;
};

/*
 * A store-backed env over st, sealing tokens under cfg->secrets_key; both
 * are borrowed and must outlive it.  Caller frees with dest_env_free;
 * NULL when out of memory.
 */
struct dest_env *dest_env_alloc(const struct app_config *cfg, struct store *st);
/* Free env (NULL is fine) and its cached entries, flushing it first. */
void dest_env_free(struct dest_env *env);

/*
 * Store the ledger states env->ledger_set queued since the last flush,
 * together (one transaction, one round trip on PostgreSQL), logging
 * those that could not be.  The engine flushes after taking in replies
 * and before it stores any run's result: a state is never stored after
 * its run's outcome.  A crash in between leaves the key "sending", which
 * the next run reconciles against the history, as after any crash.
 */
void dest_env_flush(struct dest_env *env);

/* ledger.c: fill env's clocks, ledger and throttle entries. */
void ledger_env_init(struct dest_env *env);

/* caches.c: this process's entries (caller frees with caches_free; NULL
 * when out of memory), and env's token and id entries over them. */
struct caches *caches_alloc(void);
void caches_free(struct caches *c);
void caches_env_init(struct dest_env *env);

#endif
