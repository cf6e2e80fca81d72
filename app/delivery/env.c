/*
 * The store-backed destination env (env.h): one per engine, so one per
 * process, built in engine_alloc.
 */
#include <stdlib.h>

#include "env.h"

/* See env.h. */
struct dest_env *
dest_env_alloc(const struct app_config *cfg, struct store *st)
{
	struct dest_env *env = calloc(1, sizeof(*env));
	struct env_ctx *ctx = calloc(1, sizeof(*ctx));

	if (env == NULL || ctx == NULL ||
	    (ctx->caches = caches_alloc()) == NULL) {
		free(ctx);
		free(env);
		return NULL;
	}
	ctx->cfg = cfg;
	ctx->st = st;
	env->ctx = ctx;
	ledger_env_init(env);
	caches_env_init(env);
	return env;
}

/* See env.h. */
void
dest_env_free(struct dest_env *env)
{
	struct env_ctx *ctx;

	if (env == NULL)
		return;
	dest_env_flush(env);
	ctx = env->ctx;
	free(ctx->sets);
	caches_free(ctx->caches);
	free(ctx);
	free(env);
}
