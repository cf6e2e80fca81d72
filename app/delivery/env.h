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

/* The ctx of a store-backed env. */
struct env_ctx {
	const struct app_config *cfg; /* borrowed: the secrets key */
	struct store *st;             /* borrowed */
	struct caches *caches;        /* owned: this process's entries */
};

/*
 * A store-backed env over st, sealing tokens under cfg->secrets_key; both
 * are borrowed and must outlive it.  Caller frees with dest_env_free;
 * NULL when out of memory.
 */
struct dest_env *dest_env_alloc(const struct app_config *cfg, struct store *st);
/* Free env (NULL is fine) and its cached entries. */
void dest_env_free(struct dest_env *env);

/* ledger.c: fill env's clocks, ledger and throttle entries. */
void ledger_env_init(struct dest_env *env);

/* caches.c: this process's entries (caller frees with caches_free; NULL
 * when out of memory), and env's token and id entries over them. */
struct caches *caches_alloc(void);
void caches_free(struct caches *c);
void caches_env_init(struct dest_env *env);

#endif
