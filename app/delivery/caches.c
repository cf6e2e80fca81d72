/*
 * The Emarsys token and id caches of the store-backed env (env.h).
 *
 * The store is the cache every process shares: a token fetched by one
 * worker serves them all, sealed under the secrets key (AES-GCM, the
 * brand in the aad), and so do resolved field and event ids.  The store
 * stays the one view of them: another process's refresh, re-resolution
 * or forget (after a 401, a 2006 on the upsert, a 5001/5004 on the
 * trigger), or an operator's edit, is seen by the next read here.
 *
 * In front of the store each process keeps the tokens it opened, with
 * their sealed form: a read still fetches the stored row but decrypts
 * only when the row changed.  A put or a forget updates the local entry
 * and the store together.  On PostgreSQL the store itself answers the
 * read from what this process last read while its connection hears no
 * change (every put and forget is told to every process:
 * store_em_cached_get), so a process never goes on with a token or an id
 * another process found stale for longer than the news takes to come.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "crypto.h"
#include "env.h"
#include "log.h"

#define TOKENS_MAX 16 /* brands whose token a process keeps */

/*
 * A cache write (what, for whom) that failed with err: the store logged
 * its own error; this says what it means for deliveries (then).  Returns
 * err, for the caller.
 */
static enum gc_err
cache_failed(enum gc_err err, const char *what, const char *who,
             const char *then)
{
	if (err != GC_OK)
		log_warnx("emarsys cache: could not %s of %s (%s); %s", what,
		          who, gc_strerror(err), then);
	return err;
}

struct tok_entry {
	char *brand, *client_id; /* owned; brand NULL: a free slot */
	char *token, *sealed;    /* owned: in clear, and as stored */
	int64_t expires_ms;
};

struct caches {
	struct tok_entry tokens[TOKENS_MAX];
	int tok_next; /* the slot taken next when all are used */
};

/* See env.h. */
struct caches *
caches_alloc(void)
{
	return calloc(1, sizeof(struct caches));
}

static void
tok_drop(struct tok_entry *e)
{
	if (e->token != NULL)
		OPENSSL_cleanse(e->token, strlen(e->token));
	free(e->brand);
	free(e->client_id);
	free(e->token);
	free(e->sealed);
	memset(e, 0, sizeof(*e));
}

/* See env.h. */
void
caches_free(struct caches *c)
{
	if (c == NULL)
		return;
	for (int i = 0; i < TOKENS_MAX; i++)
		tok_drop(&c->tokens[i]);
	free(c);
}

/* The local token entry of brand (and client_id unless NULL), or NULL. */
static struct tok_entry *
tok_find(struct caches *c, const char *brand, const char *client_id)
{
	for (int i = 0; i < TOKENS_MAX; i++) {
		struct tok_entry *e = &c->tokens[i];
		if (e->brand != NULL && strcmp(e->brand, brand) == 0 &&
		    (client_id == NULL || strcmp(e->client_id, client_id) == 0))
			return e;
	}
	return NULL;
}

/* Keep a token locally, replacing brand's entry; kept copies only. */
static void
tok_keep(struct caches *c, const char *brand, const char *client_id,
         const char *token, const char *sealed, int64_t expires_ms)
{
	struct tok_entry *e = tok_find(c, brand, NULL);

	for (int i = 0; e == NULL && i < TOKENS_MAX; i++)
		if (c->tokens[i].brand == NULL)
			e = &c->tokens[i];
	if (e == NULL)
		e = &c->tokens[c->tok_next++ % TOKENS_MAX];
	tok_drop(e);
	e->brand = strdup(brand);
	e->client_id = strdup(client_id);
	e->token = strdup(token);
	e->sealed = strdup(sealed);
	e->expires_ms = expires_ms;
	if (e->brand == NULL || e->client_id == NULL || e->token == NULL ||
	    e->sealed == NULL)
		tok_drop(e); /* not kept: the store still has it */
}

static void
tok_aad(char *aad, size_t n, const char *brand)
{
	snprintf(aad, n, "emarsys-token:%s", brand);
}

/* Copy token into out (size n): GC_OK, or GC_ENOTFOUND when too long. */
static enum gc_err
tok_copy(char *out, size_t n, const char *token)
{
	if (strlen(token) >= n)
		return GC_ENOTFOUND;
	memcpy(out, token, strlen(token) + 1);
	return GC_OK;
}

/*
 * The token in sealed (as stored; freed here) copied into token: opened
 * again only when the row changed since this process opened it.
 */
static enum gc_err
tok_open(struct env_ctx *c, const char *brand, const char *client_id,
         char *sealed, char *token, size_t n, int64_t expires_ms)
{
	struct tok_entry *e = tok_find(c->caches, brand, client_id);
	char aad[200], *clear = NULL;
	enum gc_err err;

	if (e != NULL && strcmp(e->sealed, sealed) == 0) {
		/* The row we opened before: no need to open it again. */
		free(sealed);
		return tok_copy(token, n, e->token);
	}
	tok_aad(aad, sizeof(aad), brand);
	if (crypto_open(c->cfg->secrets_key, sealed, aad, &clear) != GC_OK)
		err = GC_ENOTFOUND; /* unreadable is as good as absent */
	else if ((err = tok_copy(token, n, clear)) == GC_OK)
		tok_keep(c->caches, brand, client_id, clear, sealed,
		         expires_ms);
	if (clear != NULL) {
		OPENSSL_cleanse(clear, strlen(clear));
		free(clear);
	}
	free(sealed);
	return err;
}

static enum gc_err
env_token_get(void *ctx, const char *brand, const char *client_id, char *token,
              size_t n, int64_t *expires_ms)
{
	struct env_ctx *c = ctx;
	char *sealed = NULL;
	enum gc_err err;

	err = store_em_token_get(c->st, brand, client_id, &sealed, expires_ms);
	if (err != GC_OK)
		return err;
	return tok_open(c, brand, client_id, sealed, token, n, *expires_ms);
}

static enum gc_err
env_cached_get(void *ctx, const char *brand, const char *client_id, char *token,
               size_t n, int64_t *expires_ms, const char *scope,
               struct em_id *ids, size_t nids)
{
	struct env_ctx *c = ctx;
	char *sealed = NULL;
	enum gc_err err;

	err = store_em_cached_get(c->st, brand, client_id, &sealed, expires_ms,
	                          scope, ids, nids);
	if (err != GC_OK)
		return err;
	return tok_open(c, brand, client_id, sealed, token, n, *expires_ms);
}

static enum gc_err
env_token_put(void *ctx, const char *brand, const char *client_id,
              const char *token, int64_t expires_ms)
{
	struct env_ctx *c = ctx;
	char aad[200], *sealed;
	enum gc_err err;

	tok_aad(aad, sizeof(aad), brand);
	if ((sealed = crypto_seal(c->cfg->secrets_key, token, aad)) == NULL)
		return cache_failed(GC_ECRYPTO, "seal the token", brand,
		                    "other processes fetch their own");
	err = store_em_token_put(c->st, brand, client_id, sealed, expires_ms);
	tok_keep(c->caches, brand, client_id, token, sealed, expires_ms);
	free(sealed);
	return cache_failed(err, "store the token", brand,
	                    "other processes fetch their own");
}

/*
 * Drop the token of brand if it is still token: the local entry and the
 * store's row (by its sealed form: the local one, else the store's own
 * once it opens to token).
 */
static enum gc_err
env_token_forget(void *ctx, const char *brand, const char *client_id,
                 const char *token)
{
	struct env_ctx *c = ctx;
	struct tok_entry *e = tok_find(c->caches, brand, NULL);
	char aad[200], *sealed = NULL, *clear = NULL;
	int64_t exp;
	enum gc_err err;

	if (e != NULL && strcmp(e->token, token) == 0) {
		err = store_em_token_forget(c->st, brand, e->sealed);
		tok_drop(e);
		return cache_failed(err, "drop the refused token", brand,
		                    "another process may try it once more");
	}
	err = store_em_token_get(c->st, brand, client_id, &sealed, &exp);
	if (err != GC_OK)
		return err == GC_ENOTFOUND
		           ? GC_OK
		           : cache_failed(err, "drop the refused token", brand,
		                          "another process may try it once "
		                          "more");
	tok_aad(aad, sizeof(aad), brand);
	if (crypto_open(c->cfg->secrets_key, sealed, aad, &clear) == GC_OK &&
	    strcmp(clear, token) == 0)
		err = store_em_token_forget(c->st, brand, sealed);
	if (clear != NULL) {
		OPENSSL_cleanse(clear, strlen(clear));
		free(clear);
	}
	free(sealed);
	return cache_failed(err, "drop the refused token", brand,
	                    "another process may try it once more");
}

static enum gc_err
env_token_lease(void *ctx, const char *brand, const char *client_id,
                const char *owner, int64_t now_ms, int64_t until_ms,
                int64_t *held_until_ms)
{
	struct env_ctx *c = ctx;

	return store_em_token_lease(c->st, brand, client_id, owner, now_ms,
	                            until_ms, held_until_ms);
}

static enum gc_err
env_token_unlease(void *ctx, const char *brand, const char *client_id,
                  const char *owner)
{
	struct env_ctx *c = ctx;

	return cache_failed(
	    store_em_token_unlease(c->st, brand, client_id, owner),
	    "release the token fetch lease", brand,
	    "other processes wait for it to expire");
}

static enum gc_err
env_ids_get(void *ctx, const char *scope, struct em_id *ids, size_t n)
{
	struct env_ctx *c = ctx;

	return store_em_ids_get(c->st, scope, ids, n);
}

static enum gc_err
env_id_put(void *ctx, const char *scope, const char *kind, const char *name,
           const char *id)
{
	struct env_ctx *c = ctx;
	char what[160];

	snprintf(what, sizeof(what), "store the %s id of %s", kind, name);
	return cache_failed(store_em_id_put(c->st, scope, kind, name, id), what,
	                    scope, "it is looked up again next time");
}

static enum gc_err
env_id_forget(void *ctx, const char *scope, const char *kind)
{
	struct env_ctx *c = ctx;
	char what[64];

	snprintf(what, sizeof(what), "forget the stale %s ids", kind);
	return cache_failed(store_em_id_forget(c->st, scope, kind), what, scope,
	                    "the next delivery may use them once more");
}

/* See env.h. */
void
caches_env_init(struct dest_env *env)
{
	env->token_get = env_token_get;
	env->cached_get = env_cached_get;
	env->token_put = env_token_put;
	env->token_forget = env_token_forget;
	env->token_lease = env_token_lease;
	env->token_unlease = env_token_unlease;
	env->ids_get = env_ids_get;
	env->id_put = env_id_put;
	env->id_forget = env_id_forget;
}
