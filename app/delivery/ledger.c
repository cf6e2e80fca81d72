/*
 * The clocks, the Yotpo award ledger and the per-brand call throttle of
 * the store-backed env (env.h): each entry is the store function of the
 * same name, on the env's store.  The ledger is shared by every process,
 * so it lives in the store; the only state here is the ledger state a
 * run recorded after its call, held for the moment until the engine
 * stores it with the run's result (one transaction, one round trip
 * less per award).  The throttle lives in the store too when hosts share
 * it.  On one host it is paced in the shared memory of
 * delivery_limits.h instead, without a store write per award.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery_limits.h"
#include "env.h"
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

/* Runs whose ledger state waits for their result; beyond it, stored. */
#define NOTES_MAX 256

struct env_note {
	struct env_note *next;
	char *owner;
	struct ledger_note note;
};

/* See env.h. */
void
ledger_note_clear(struct ledger_note *n)
{
	free(n->brand);
	free(n->token);
	free(n->action);
	free(n->state);
	memset(n, 0, sizeof(*n));
}

static void
note_free(struct env_note *e)
{
	ledger_note_clear(&e->note);
	free(e->owner);
	free(e);
}

/* Unlink owner's state and return it (NULL: none). */
static struct env_note *
note_unlink(struct env_ctx *c, const char *owner)
{
	for (struct env_note **p = &c->notes; *p != NULL; p = &(*p)->next) {
		struct env_note *e = *p;
		if (strcmp(e->owner, owner) == 0) {
			*p = e->next;
			c->nnotes--;
			return e;
		}
	}
	return NULL;
}

/* Keep owner's ledger state, replacing any; 0 when it cannot. */
static int
note_keep(struct env_ctx *c, const char *owner, const char *brand,
          const char *token, const char *action, const char *state,
          int64_t sent_at_ms)
{
	struct env_note *e = note_unlink(c, owner);

	if (e != NULL)
		note_free(e); /* an earlier state of the same run */
	if (c->nnotes >= NOTES_MAX || (e = calloc(1, sizeof(*e))) == NULL)
		return 0;
	if ((e->owner = strdup(owner)) == NULL ||
	    (e->note.brand = strdup(brand)) == NULL ||
	    (e->note.token = strdup(token)) == NULL ||
	    (e->note.action = strdup(action)) == NULL ||
	    (e->note.state = strdup(state)) == NULL) {
		note_free(e);
		return 0;
	}
	e->note.sent_at_ms = sent_at_ms;
	e->next = c->notes;
	c->notes = e;
	c->nnotes++;
	return 1;
}

/* See env.h. */
int
env_ledger_take(struct dest_env *env, const char *owner,
                struct ledger_note *out)
{
	struct env_note *e = note_unlink(env->ctx, owner);

	if (e == NULL)
		return 0;
	*out = e->note;
	free(e->owner);
	free(e);
	return 1;
}

/* See env.h. */
void
env_notes_free(struct env_ctx *c)
{
	while (c->notes != NULL) {
		struct env_note *e = c->notes;
		c->notes = e->next;
		note_free(e);
	}
	c->nnotes = 0;
}

/*
 * Held for the run's result (see the top); stored at once when it
 * cannot be held.
 */
static enum gc_err
env_ledger_set(void *ctx, const char *brand, const char *token,
               const char *action, const char *owner, const char *state,
               int64_t sent_at_ms)
{
	struct env_ctx *c = ctx;

	if (note_keep(c, owner, brand, token, action, state, sent_at_ms))
		return GC_OK;
	return store_ledger_set(c->st, brand, token, action, owner, state,
	                        sent_at_ms);
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
}
