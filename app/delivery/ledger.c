/*
 * The clocks, the Yotpo award ledger and the per-brand call throttle of
 * the store-backed env (env.h): each entry is the store function of the
 * same name, on the env's store, but for ledger_set, whose states wait
 * for dest_env_flush to be stored together.  The ledger is
 * shared by every process, so it lives in the store only; so does the
 * throttle when hosts share the store.  On one host the throttle is
 * paced in the shared memory of delivery_limits.h instead, without a
 * store write per award.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery_limits.h"
#include "env.h"
#include "log.h"
#include "mono.h"

static int64_t
env_now_ms(void *ctx)
{
	(void)ctx;
	return store_now_ms();
}

static int64_t
env_mono_ms(void *ctx)
{
	(void)ctx;
	return mono_ms();
}

static enum gc_err
env_ledger_claim(void *ctx, const char *brand, const char *token,
                 const char *action, const char *event_id, const char *email,
                 int64_t now_ms, const struct lease *l, enum ledger_claim *res,
                 struct ledger_view *view)
{
	struct env_ctx *c = ctx;

	return store_ledger_claim(c->st, brand, token, action, event_id, email,
	                          now_ms, l, res, view);
}

/* Copy s into *p, advancing it; the copy. */
static const char *
put_str(char **p, const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = memcpy(*p, s, n);

	*p += n;
	return d;
}

/* Queued for dest_env_flush; stored at once when it cannot be queued. */
static enum gc_err
env_ledger_set(void *ctx, const char *brand, const char *token,
               const char *action, const char *owner, const char *state,
               int64_t sent_at_ms)
{
	struct env_ctx *c = ctx;
	struct queued_set *q;
	char *p;

	if (c->nsets == c->csets) {
		size_t n = c->csets ? c->csets * 2 : 16;
		void *v = realloc(c->sets, n * sizeof(*c->sets));
		if (v == NULL)
			goto now;
		c->sets = v;
		c->csets = n;
	}
	q = &c->sets[c->nsets];
	q->mem = malloc(strlen(brand) + strlen(token) + strlen(action) +
	                strlen(owner) + strlen(state) + 5);
	if ((p = q->mem) == NULL)
		goto now;
	q->v.brand = put_str(&p, brand);
	q->v.token = put_str(&p, token);
	q->v.action = put_str(&p, action);
	q->v.owner = put_str(&p, owner);
	q->v.state = put_str(&p, state);
	q->v.sent_at_ms = sent_at_ms;
	c->nsets++;
	return GC_OK;
now:
	return store_ledger_set(c->st, brand, token, action, owner, state,
	                        sent_at_ms);
}

/* See env.h. */
void
dest_env_flush(struct dest_env *env)
{
	struct env_ctx *c = env->ctx;
	struct ledger_set v[64];
	size_t i, k, n;

	for (i = 0; i < c->nsets; i += n) {
		n = c->nsets - i < 64 ? c->nsets - i : 64;
		for (k = 0; k < n; k++)
			v[k] = c->sets[i + k].v;
		(void)store_ledger_set_many(c->st, v, n);
		for (k = 0; k < n; k++) {
			if (v[k].err != GC_OK)
				log_errorx(
				    "yotpo ledger %s/%s: cannot record "
				    "\"%s\" (%s); a later run reconciles "
				    "against the history",
				    v[k].brand, v[k].action, v[k].state,
				    v[k].err == GC_EEXISTS
				        ? "claim lost"
				        : gc_strerror(v[k].err));
			free(c->sets[i + k].mem);
		}
	}
	c->nsets = 0;
}

static enum gc_err
env_ledger_sending(void *ctx, const char *brand, const char *token,
                   const char *action, const char *owner, const char *event_id,
                   const char *email, int64_t now_ms)
{
	struct env_ctx *c = ctx;

	return store_ledger_sending(c->st, brand, token, action, owner,
	                            event_id, email, now_ms);
}

static enum gc_err
env_ledger_miss(void *ctx, const char *brand, const char *token,
                const char *action, const char *owner, int64_t now_ms,
                int *misses)
{
	struct env_ctx *c = ctx;

	return store_ledger_miss(c->st, brand, token, action, owner, now_ms,
	                         misses);
}

static enum gc_err
env_ledger_release(void *ctx, const char *brand, const char *token,
                   const char *action, const char *owner)
{
	struct env_ctx *c = ctx;

	return store_ledger_release(c->st, brand, token, action, owner);
}

static enum gc_err
env_throttle_slot(void *ctx, const char *brand, int max_rps, int64_t now_ms,
                  int64_t horizon_ms, int64_t *slot_ms, int *reserved)
{
	struct env_ctx *c = ctx;
	char key[200];
	int64_t mono, slot;

	if (store_shared_hosts(c->st))
		return store_throttle_slot(c->st, brand, max_rps, now_ms,
		                           horizon_ms, slot_ms, reserved);
	/* 10% under max_rps, as the store paces it; slots on the
	 * monotonic clock, given back on the caller's. */
	snprintf(key, sizeof(key), "yotpo:%s", brand);
	mono = mono_ms();
	*reserved =
	    limits_pace_every(key, 1100000LL / (max_rps > 0 ? max_rps : 1),
	                      mono, horizon_ms, &slot);
	*slot_ms = now_ms + (slot - mono);
	return GC_OK;
}

/* One round trip when hosts share the store; else a claim, and a slot
 * in shared memory. */
static enum gc_err
env_ledger_claim_paced(void *ctx, const char *brand, const char *token,
                       const char *action, const char *event_id,
                       const char *email, int64_t now_ms, const struct lease *l,
                       enum ledger_claim *res, struct ledger_view *view,
                       int max_rps, int64_t horizon_ms, int64_t *slot_ms,
                       int *reserved)
{
	struct env_ctx *c = ctx;
	enum gc_err err;

	if (store_shared_hosts(c->st))
		return store_ledger_claim_paced(
		    c->st, brand, token, action, event_id, email, now_ms, l,
		    res, view, max_rps, horizon_ms, slot_ms, reserved);
	err = store_ledger_claim(c->st, brand, token, action, event_id, email,
	                         now_ms, l, res, view);
	if (err != GC_OK)
		return err;
	return env_throttle_slot(ctx, brand, max_rps, now_ms, horizon_ms,
	                         slot_ms, reserved);
}

/* See env.h. */
void
ledger_env_init(struct dest_env *env)
{
	env->now_ms = env_now_ms;
	env->mono_ms = env_mono_ms;
	env->ledger_claim = env_ledger_claim;
	env->ledger_set = env_ledger_set;
	env->ledger_sending = env_ledger_sending;
	env->ledger_miss = env_ledger_miss;
	env->ledger_release = env_ledger_release;
	env->throttle_slot = env_throttle_slot;
	env->ledger_claim_paced = env_ledger_claim_paced;
}
