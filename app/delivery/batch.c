/*
 * Batches (dispatcher only): requests of many jobs that a destination can
 * merge (Emarsys contact upserts and event triggers of one account) wait
 * up to BATCH_LINGER_MS in a batch, go out as one call paced and held
 * like any other, and the reply is split back into one response per job,
 * so every delivery keeps its own outcome and attempt record.  A reply
 * that cannot be split sends each job again on its own.
 */
#include <stdlib.h>
#include <string.h>

#include "delivery_limits.h"
#include "engine_priv.h"
#include "log.h"
#include "mono.h"

#define BATCH_MAX      1000 /* members of one batch */
#define BATCH_ENVELOPE 1024 /* bytes of a merged body around its items */

static void
batch_free(struct batch *b)
{
	json_decref(b->items);
	buf_free(&b->body);
	free(b->runs);
	free(b->members);
	free(b);
}

static struct batch *
batch_alloc(struct engine *eng, const char *key, size_t limit)
{
	struct batch *b = calloc(1, sizeof(*b));
	/* At most what the dispatcher keeps in hand (engine_room). */
	int hand = eng->cfg->delivery_concurrency * ENGINE_HAND_PER_TRANSFER;
	int cap = hand < BATCH_MAX ? hand : BATCH_MAX;

	if (b == NULL)
		return NULL;
	b->w.batch = 1;
	b->cap = cap;
	b->limit = limit;
	b->items = json_array();
	b->runs = calloc((size_t)cap, sizeof(*b->runs));
	b->members = calloc((size_t)cap, sizeof(*b->members));
	buf_init(&b->body, 0);
	if (b->items == NULL || b->runs == NULL || b->members == NULL) {
		batch_free(b);
		return NULL;
	}
	snprintf(b->key, sizeof(b->key), "%s", key);
	b->flush_at = mono_ms() + BATCH_LINGER_MS;
	b->next = eng->batches;
	eng->batches = b;
	return b;
}

/* The open batch of key with room for member, or NULL. */
static struct batch *
batch_open(struct engine *eng, const char *key, const char *member, size_t add)
{
	for (struct batch *b = eng->batches; b != NULL; b = b->next) {
		if (b->sent || strcmp(b->key, key) != 0)
			continue;
		if (b->n >= b->cap || b->bytes + add > b->limit)
			continue;
		int dup = 0;
		for (int i = 0; i < b->n && !dup; i++)
			dup = strcmp(b->members[i], member) == 0;
		/* One contact once per call: its errors must be its own. */
		if (!dup)
			return b;
	}
	return NULL;
}

/* See engine_priv.h. */
int
batch_park(struct engine *eng, struct run *r)
{
	struct job *j = &r->job;
	const struct dest_ops *ops = j->ops;
	const char *member = NULL;
	char key[256];
	json_t *item = NULL;
	size_t limit = 0, add;
	struct batch *b;

	if (ops->batch_item == NULL ||
	    !ops->batch_item(j, key, sizeof(key), &member, &item, &limit))
		return 0;
	/* The single call's body holds the item and a little more: count
	 * that, with a comma; BATCH_ENVELOPE leaves room for the rest. */
	add = j->req.bodylen + 1;
	b = add > 0 ? batch_open(eng, key, member, add) : NULL;
	if (b == NULL && add > 0 && add + BATCH_ENVELOPE < limit)
		b = batch_alloc(eng, key, limit - BATCH_ENVELOPE);
	if (b == NULL) {
		json_decref(item);
		return 0;
	}
	json_array_append_new(b->items, item);
	b->runs[b->n] = r;
	b->members[b->n++] = member;
	b->bytes += add;
	r->in_flight = 1; /* parked: on its way to the wire */
	if (b->n >= b->cap && !b->paced)
		b->flush_at = 0; /* full: no reason to linger */
	return 1;
}

/* Unlink b from the engine's list and free it. */
static void
batch_drop(struct engine *eng, struct batch *b)
{
	struct batch **pp = &eng->batches;

	while (*pp != NULL && *pp != b)
		pp = &(*pp)->next;
	if (*pp == b)
		*pp = b->next;
	batch_free(b);
}

/*
 * Every member goes alone after all, at once (ready, never batched);
 * paced: they already hold the batch's pacing slot.
 */
static void
batch_scatter(struct engine *eng, struct batch *b, int paced)
{
	for (int i = 0; i < b->n; i++) {
		struct run *r = b->runs[i];
		r->in_flight = 0;
		r->solo = 1;
		r->ready = 1;
		r->paced = paced;
		r->job.wait_until_ms = 0;
	}
	batch_drop(eng, b);
}

/* Hand every member back, due at at_ms (held account, far pacing). */
static void
batch_defer(struct engine *eng, struct batch *b, const char *why, int64_t at_ms)
{
	for (int i = 0; i < b->n; i++) {
		b->runs[i]->in_flight = 0;
		run_give_up(b->runs[i], why, at_ms);
	}
	batch_drop(eng, b);
}

/* The earliest deadline of b's members, for the call's timeout. */
static int64_t
batch_deadline(const struct batch *b)
{
	int64_t d = b->runs[0]->job.deadline_ms;

	for (int i = 1; i < b->n; i++)
		if (b->runs[i]->job.deadline_ms < d)
			d = b->runs[i]->job.deadline_ms;
	return d;
}

/*
 * Send b now if the account allows; else it waits for its pacing slot
 * (taking members until then), or its members are handed back (held
 * account, slot too far off) or sent alone (a batch of one, in its slot;
 * a request that cannot be built).
 */
static void
batch_send(struct engine *eng, struct batch *b, int64_t now)
{
	struct run *first = b->runs[0];
	int64_t blocked, slot = now, deadline = batch_deadline(b);
	int64_t horizon = deadline - MIN_REQUEST_MS - now;

	if (horizon > BATCH_HORIZON_MS)
		horizon = BATCH_HORIZON_MS;
	if ((blocked = run_blocked_until(eng, first, now)) > 0)
		batch_defer(eng, b, "account on hold", blocked);
	else if (!b->paced && !run_pace_slot(eng, first, now, horizon, &slot))
		batch_defer(eng, b, "paced to the rate limit", slot);
	else if (slot > now) {
		b->paced = 1; /* it holds that slot; members join until then */
		b->flush_at = slot;
	} else if (httpc_idle(eng->http) == 0 && b->n > 1 &&
	           deadline - now >= MIN_REQUEST_MS)
		b->paced = 1; /* its slot has come: it goes when a transfer
		                 frees, taking members until then */
	else if (b->n == 1 || deadline - now < MIN_REQUEST_MS ||
	         first->job.ops->batch_request(&first->job, b->items, &b->body,
	                                       &b->req) != GC_OK)
		batch_scatter(eng, b, b->n == 1);
	else {
		b->req.timeout_ms = eng->cfg->http_timeout_ms < deadline - now
		                        ? eng->cfg->http_timeout_ms
		                        : (long)(deadline - now);
		b->t0_ms = now;
		if (httpc_start(eng->http, &b->req, b) != GC_OK)
			batch_scatter(eng, b, 0);
		else
			b->sent = 1;
	}
}

/* See engine_priv.h. */
long
batch_flush(struct engine *eng, long max_ms)
{
	int64_t now = mono_ms(), next = now + max_ms;
	struct batch *b, *nb;

	for (b = eng->batches; b != NULL; b = nb) {
		nb = b->next;
		if (b->sent)
			continue;
		if (b->flush_at <= now)
			batch_send(eng, b, now);
		else if (b->flush_at < next)
			next = b->flush_at;
	}
	return next > now ? (long)(next - now) : 0;
}

/* See engine_priv.h. */
void
batch_response(struct engine *eng, struct batch *b,
               const struct http_resp *resp)
{
	struct http_resp *each = calloc((size_t)b->n, sizeof(*each));
	struct job **jobs = calloc((size_t)b->n, sizeof(*jobs));
	int ok = 0;

	for (int i = 0; each != NULL && i < b->n; i++)
		http_resp_init(&each[i]);
	for (int i = 0; jobs != NULL && i < b->n; i++) {
		jobs[i] = &b->runs[i]->job;
		b->runs[i]->t0_ms = b->t0_ms;
	}
	if (each != NULL && jobs != NULL)
		ok = jobs[0]->ops->batch_split(jobs, b->n, resp, each);
	/* One call: it counts once for the account's limits and circuit. */
	run_feed_limits(eng, b->runs[0], resp);
	log_info("batch of %d %s: HTTP %ld%s", b->n, b->key, resp->status,
	         ok ? "" : "; not attributable, each is sent alone");
	for (int i = 0; i < b->n; i++) {
		if (ok)
			run_response(eng, b->runs[i], &each[i], 0);
		else {
			/* The batch's reply is each member's attempt. */
			job_excerpt(&b->runs[i]->job, resp);
			record_attempt(eng, b->runs[i], resp);
		}
		if (each != NULL)
			http_resp_fini(&each[i]);
	}
	free(each);
	free(jobs);
	if (ok)
		batch_drop(eng, b);
	else
		batch_scatter(eng, b, 0);
}

/* See engine_priv.h. */
void
batch_free_all(struct engine *eng)
{
	while (eng->batches != NULL)
		batch_drop(eng, eng->batches);
}
