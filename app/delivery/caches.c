/*
 * The Emarsys token and id caches of the store-backed env (env.h).
 *
 * The store is the cache every process shares: a token fetched by one
 * worker serves them all, sealed under the secrets key (AES-GCM, the
 * brand in the aad), and so do resolved field and event ids.  In front
 * of it each process keeps a few entries of its own, so that a delivery
 * neither reads nor decrypts from the store every time: the token opened
 * from the store with its expiry, and the ids by (scope, kind, name).
 *
 * Invalidation.  A put or a forget here updates the local entry and the
 * store together.  Another process's forget does not reach this one: its
 * local entries stay until they fail upstream, and every such failure
 * already has a path that forgets and re-resolves (a 401 drops the token
 * and fetches a new one; a 2006 on the upsert drops the field ids, a
 * 5001/5004 on the trigger the event id).  So a stale entry costs one
 * failed call, as a stale store row always did.  A local token is used
 * only while it has TOKEN_LOCAL_MIN_MS left; nearer its expiry the store
 * is read again, where another process may have put a fresh one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "crypto.h"
#include "env.h"

#define TOKENS_MAX         16  /* brands whose token a process keeps */
#define IDS_MAX            128 /* ids a process keeps */
#define TOKEN_LOCAL_MIN_MS 300000

struct tok_entry {
	char *brand, *client_id; /* owned; brand NULL: a free slot */
	char *token, *sealed;    /* owned: in clear, and as stored */
	int64_t expires_ms;
};

struct id_entry {
	char *scope, *kind, *name; /* owned; scope NULL: a free slot */
	char id[32];
};

struct caches {
	struct tok_entry tokens[TOKENS_MAX];
	struct id_entry ids[IDS_MAX];
	int tok_next, id_next; /* the slot taken next when all are used */
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

static void
id_drop(struct id_entry *e)
{
	free(e->scope);
	free(e->kind);
	free(e->name);
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
	for (int i = 0; i < IDS_MAX; i++)
		id_drop(&c->ids[i]);
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

static enum gc_err
env_token_get(void *ctx, const char *brand, const char *client_id, char *token,
              size_t n, int64_t *expires_ms)
{
	struct env_ctx *c = ctx;
	struct tok_entry *e = tok_find(c->caches, brand, client_id);
	char aad[200], *sealed = NULL, *clear = NULL;
	enum gc_err err;

	if (e != NULL && e->expires_ms - store_now_ms() >= TOKEN_LOCAL_MIN_MS) {
		*expires_ms = e->expires_ms;
		return tok_copy(token, n, e->token);
	}
	err = store_em_token_get(c->st, brand, client_id, &sealed, expires_ms);
	if (err != GC_OK)
		return err;
	tok_aad(aad, sizeof(aad), brand);
	if (crypto_open(c->cfg->secrets_key, sealed, aad, &clear) != GC_OK)
		err = GC_ENOTFOUND; /* unreadable is as good as absent */
	else if ((err = tok_copy(token, n, clear)) == GC_OK)
		tok_keep(c->caches, brand, client_id, clear, sealed,
		         *expires_ms);
	if (clear != NULL) {
		OPENSSL_cleanse(clear, strlen(clear));
		free(clear);
	}
	free(sealed);
	return err;
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
		return GC_ENOMEM;
	err = store_em_token_put(c->st, brand, client_id, sealed, expires_ms);
	tok_keep(c->caches, brand, client_id, token, sealed, expires_ms);
	free(sealed);
	return err;
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
		return err;
	}
	err = store_em_token_get(c->st, brand, client_id, &sealed, &exp);
	if (err != GC_OK)
		return err == GC_ENOTFOUND ? GC_OK : err;
	tok_aad(aad, sizeof(aad), brand);
	if (crypto_open(c->cfg->secrets_key, sealed, aad, &clear) == GC_OK &&
	    strcmp(clear, token) == 0)
		err = store_em_token_forget(c->st, brand, sealed);
	if (clear != NULL) {
		OPENSSL_cleanse(clear, strlen(clear));
		free(clear);
	}
	free(sealed);
	return err;
}

/* The local id entry of (scope, kind, name), or NULL. */
static struct id_entry *
id_find(struct caches *c, const char *scope, const char *kind, const char *name)
{
	for (int i = 0; i < IDS_MAX; i++) {
		struct id_entry *e = &c->ids[i];
		if (e->scope != NULL && strcmp(e->scope, scope) == 0 &&
		    strcmp(e->kind, kind) == 0 && strcmp(e->name, name) == 0)
			return e;
	}
	return NULL;
}

/* Keep an id locally, replacing the entry of the same name. */
static void
id_keep(struct caches *c, const char *scope, const char *kind, const char *name,
        const char *id)
{
	struct id_entry *e = id_find(c, scope, kind, name);

	for (int i = 0; e == NULL && i < IDS_MAX; i++)
		if (c->ids[i].scope == NULL)
			e = &c->ids[i];
	if (e == NULL)
		e = &c->ids[c->id_next++ % IDS_MAX];
	id_drop(e);
	e->scope = strdup(scope);
	e->kind = strdup(kind);
	e->name = strdup(name);
	snprintf(e->id, sizeof(e->id), "%s", id);
	if (e->scope == NULL || e->kind == NULL || e->name == NULL)
		id_drop(e);
}

static enum gc_err
env_id_get(void *ctx, const char *scope, const char *kind, const char *name,
           char out[32])
{
	struct env_ctx *c = ctx;
	struct id_entry *e = id_find(c->caches, scope, kind, name);
	enum gc_err err;

	if (e != NULL) {
		memcpy(out, e->id, sizeof(e->id));
		return GC_OK;
	}
	err = store_em_id_get(c->st, scope, kind, name, out);
	if (err == GC_OK)
		id_keep(c->caches, scope, kind, name, out);
	return err;
}

static enum gc_err
env_id_put(void *ctx, const char *scope, const char *kind, const char *name,
           const char *id)
{
	struct env_ctx *c = ctx;

	id_keep(c->caches, scope, kind, name, id);
	return store_em_id_put(c->st, scope, kind, name, id);
}

static enum gc_err
env_id_forget(void *ctx, const char *scope, const char *kind)
{
	struct env_ctx *c = ctx;

	for (int i = 0; i < IDS_MAX; i++) {
		struct id_entry *e = &c->caches->ids[i];
		if (e->scope != NULL && strcmp(e->scope, scope) == 0 &&
		    strcmp(e->kind, kind) == 0)
			id_drop(e);
	}
	return store_em_id_forget(c->st, scope, kind);
}

/* See env.h. */
void
caches_env_init(struct dest_env *env)
{
	env->token_get = env_token_get;
	env->token_put = env_token_put;
	env->token_forget = env_token_forget;
	env->id_get = env_id_get;
	env->id_put = env_id_put;
	env->id_forget = env_id_forget;
}
