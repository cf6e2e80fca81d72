/*
 * The delivery engine (include/engine.h).  Every event being delivered is
 * an "erun" holding one job per destination; the engine keeps a list of
 * them and drives all their jobs on one curl multi handle.  A worker at
 * intake runs one erun within delivery.sync_budget_ms; the dispatcher
 * keeps up to delivery.concurrency jobs in flight.
 *
 * Before every request the engine checks the account's shared hold (a
 * 429's reset) and, in the dispatcher, the (brand, destination) circuit;
 * after every response it records the attempt, publishes a new hold and
 * feeds the circuit.  A job that cannot go on now without a failure is
 * "deferred": handed back to the store, due again when it can go, without
 * using up a run of the retry schedule.
 *
 * This file holds the eruns, their results and the dispatcher's claims;
 * run.c a job's requests and replies, batch.c the Emarsys batches,
 * intake.c what a worker does with a new event.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "delivery_limits.h"
#include "dest.h"
#include "engine.h"
#include "engine_priv.h"
#include "env.h"
#include "jsonutil.h"
#include "log.h"
#include "mono.h"
#include "payload.h"
#include "store.h"

#define LEASE_SLACK_MS   15000  /* a lease outlives the budget by this */
#define PAUSED_RETRY_MS  300000 /* a paused destination is looked at again */
#define DISPATCH_WAIT_MS 1000   /* longest in-place wait in the dispatcher */

const char *const dest_outcome_names[] = {
    [DEST_DELIVERED] = "delivered", [DEST_WARNING] = "delivered",
    [DEST_SKIPPED] = "skipped",     [DEST_RETRY] = "retrying",
    [DEST_FAILED] = "failed",
};
_Static_assert(sizeof(dest_outcome_names) / sizeof(dest_outcome_names[0]) ==
                   DEST__MAX,
               "dest_outcome_names[] out of step");

/* Destinations in the order they appear in responses. */
static const struct dest_ops *const dests[M_DEST__MAX] = {
    [M_DEST_EMARSYS] = &emarsys_ops,
    [M_DEST_YOTPO] = &yotpo_ops,
};

/* See engine_priv.h. */
void
engine_lease(struct engine *eng, struct lease *l, long budget_ms)
{
	l->until_ms = store_now_ms() + budget_ms + LEASE_SLACK_MS;
	snprintf(l->owner, sizeof(l->owner), "%ld.%lld", (long)getpid(),
	         ++eng->seq);
}

/* See engine.h. */
struct engine *
engine_alloc(const struct app_config *cfg, struct store *st, int dispatcher)
{
	struct httpc_opts o = {
	    .connect_timeout_ms = cfg->http_connect_timeout_ms,
	    .timeout_ms = cfg->http_timeout_ms,
	    .max_response_bytes = cfg->http_max_response_bytes,
	    .ca_file = cfg->http_ca_file,
	    .max_transfers = dispatcher ? cfg->delivery_concurrency : 0,
	};
	struct engine *eng = calloc(1, sizeof(*eng));

	if (eng == NULL)
		return NULL;
	eng->cfg = cfg;
	eng->st = st;
	eng->dispatcher = dispatcher;
	if ((eng->http = httpc_alloc(&o)) == NULL ||
	    (eng->env = dest_env_alloc(cfg, st)) == NULL) {
		httpc_free(eng->http);
		free(eng);
		return NULL;
	}
	if (dispatcher)
		httpc_wake_fd(eng->http, 0, limits_wake_fd());
	return eng;
}

static void erun_free(struct erun *er);

/* See engine.h. */
void
engine_free(struct engine *eng)
{
	struct erun *er, *next;

	if (eng == NULL)
		return;
	/* Unfinished runs keep their leases; they expire and run again. */
	batch_free_all(eng);
	for (er = eng->active; er != NULL; er = next) {
		next = er->next;
		for (int i = 0; i < er->n; i++)
			er->runs[i].job.ops->finish(&er->runs[i].job);
		erun_free(er);
	}
	httpc_free(eng->http);
	dest_env_free(eng->env);
	free(eng);
}

/* See engine.h. */
struct httpc *
engine_httpc(struct engine *eng)
{
	return eng->http;
}

/* See engine.h. */
int
engine_jobs(const struct engine *eng)
{
	return eng->jobs;
}

/* See engine.h. */
int
engine_room(const struct engine *eng)
{
	int wire = httpc_idle(eng->http) - eng->queued;
	int hand = eng->cfg->delivery_concurrency * ENGINE_HAND_PER_TRANSFER -
	           eng->jobs;

	return wire < hand ? wire : hand;
}

/* See engine_priv.h. */
int
plan_skip(enum m_dest d, const struct gc_event *ev, const struct brand *b,
          char *buf, size_t n)
{
	int has = d == M_DEST_EMARSYS ? b->has_emarsys : b->has_yotpo;
	int on = d == M_DEST_EMARSYS ? b->emarsys_enabled : b->yotpo_enabled;

	if (!has) {
		snprintf(buf, n, "%s is not configured for this brand",
		         m_dest_names[d]);
		return 1;
	}
	if (!on) {
		snprintf(buf, n, "%s is paused for this brand (enabled: false)",
		         m_dest_names[d]);
		return 1;
	}
	return dests[d]->skip(ev, b, buf, n);
}

/* The run's number within the retry schedule (counted at claim). */
static int
engine_runs(struct engine *eng, const struct job *j)
{
	int runs = 0;

	store_delivery_attempts(eng->st, j->event_id, m_dest_names[j->dest],
	                        &runs);
	return runs < 1 ? 1 : runs;
}

static enum m_outcome
engine_metric(enum dest_outcome o)
{
	return o == DEST_DELIVERED ? M_OUT_DELIVERED
	       : o == DEST_WARNING ? M_OUT_WARNING
	       : o == DEST_SKIPPED ? M_OUT_SKIPPED
	       : o == DEST_FAILED  ? M_OUT_FAILED
	                           : M_OUT_RETRYING;
}

/*
 * The result of a job for the store, in res (reason in buf): a deferred
 * job goes back due at its time without using a run; a retry takes the
 * next step of the schedule (or is dead past its end).
 */
static void
engine_result(struct engine *eng, const struct job *j,
              struct delivery_result *res, char *buf, size_t n)
{
	enum m_outcome mo = engine_metric(j->outcome);
	int64_t now = store_now_ms();
	int runs;

	memset(res, 0, sizeof(*res));
	res->event_id = j->event_id;
	res->destination = m_dest_names[j->dest];
	res->owner = j->lease->owner;
	res->progress = j->progress;
	res->status = dest_outcome_names[j->outcome];
	res->warning = j->warning[0] ? j->warning : NULL;
	snprintf(buf, n, "%s", j->reason);
	res->reason = buf[0] ? buf : NULL;
	if (j->deferred) {
		res->postpone = 1;
		res->next_at_ms = j->retry_at_ms > now ? j->retry_at_ms : now;
		return;
	}
	if (j->outcome == DEST_RETRY) {
		runs = engine_runs(eng, j);
		if ((size_t)runs > eng->cfg->nretry_schedule) {
			res->status = "dead";
			mo = M_OUT_DEAD;
			snprintf(buf, n, "gave up after %d runs: %s", runs,
			         j->reason);
		} else {
			res->next_at_ms =
			    now + eng->cfg->retry_schedule[runs - 1] * 1000;
			if (j->retry_at_ms > res->next_at_ms)
				res->next_at_ms = j->retry_at_ms;
		}
	}
	metrics_delivery(j->dest, mo);
}

/*
 * A delivery the plan now skips on a retry: the brand changed since the
 * event arrived.  A paused destination keeps it waiting (without using
 * up a run) until the whole retry schedule has passed, then it is dead;
 * anything else needs an operator.
 */
static void
engine_replan(struct engine *eng, struct job *j, const struct brand *b,
              int64_t received_ms, struct delivery_result *res, char *buf,
              size_t n)
{
	int paused =
	    (j->dest == M_DEST_EMARSYS && b->has_emarsys &&
	     !b->emarsys_enabled) ||
	    (j->dest == M_DEST_YOTPO && b->has_yotpo && !b->yotpo_enabled);
	int64_t span = 0;

	for (size_t i = 0; i < eng->cfg->nretry_schedule; i++)
		span += eng->cfg->retry_schedule[i] * 1000;
	if (paused && store_now_ms() - received_ms < span) {
		j->retry_at_ms = store_now_ms() + PAUSED_RETRY_MS;
		j->deferred = 1;
	} else if (paused)
		job_done(j, DEST_FAILED,
		         "destination paused for longer than "
		         "the retry schedule");
	else
		j->outcome = DEST_FAILED;
	engine_result(eng, j, res, buf, n);
	if (paused && !j->deferred)
		res->status = "dead";
}

/*
 * Store results (grouped by event) in one transaction; log lost leases
 * and failures; wake the dispatcher for what is due now.
 */
static void
engine_store(struct engine *eng, struct delivery_result *res, size_t n)
{
	int64_t soon = store_now_ms() + DISPATCH_WAIT_MS;
	int wake = 0;

	if (n == 0)
		return;
	(void)store_deliveries_finish(eng->st, res, n);
	for (size_t i = 0; i < n; i++) {
		if (res[i].err == GC_ESTORE &&
		    (i == 0 || strcmp(res[i - 1].event_id, res[i].event_id)))
			log_errorx("could not store the outcome of %s; its "
			           "lease expires and the dispatcher runs it "
			           "again",
			           res[i].event_id);
		else if (res[i].err == GC_EEXISTS)
			log_errorx("%s delivery of %s outlived its lease; "
			           "another run owns it now, this outcome is "
			           "not stored",
			           res[i].destination, res[i].event_id);
		else if (res[i].postpone && res[i].next_at_ms <= soon)
			wake = 1;
	}
	if (!wake)
		return;
	limits_wake();
	/* Intake handing work over: any host's dispatcher may take it. */
	if (!eng->dispatcher)
		store_wake_others(eng->st);
}

static void
erun_free(struct erun *er)
{
	if (er == NULL)
		return;
	json_decref(er->payload);
	json_decref(er->progress);
	for (int i = 0; i < er->n; i++) {
		for (size_t k = 0; k < er->runs[i].natts; k++)
			free((void *)er->runs[i].atts[k]); /* its record */
		free(er->runs[i].atts);
	}
	if (er->owns) {
		event_fini(&er->ev_own);
		brand_fini(&er->b_own);
	}
	free(er);
}

/* The account whose limits govern calls of destination d for brand b. */
static void
erun_account(const struct brand *b, enum m_dest d, char *out, size_t n)
{
	if (d == M_DEST_EMARSYS)
		snprintf(out, n, "emarsys:%s",
		         b->em_client_id ? b->em_client_id : "");
	else
		snprintf(out, n, "yotpo:%s", b->slug);
}

/* See engine_priv.h. */
void
erun_plan(struct engine *eng, struct erun *er, const int want[M_DEST__MAX],
          long budget_ms)
{
	/* The lease is stored (wall clock); the deadline is monotonic. */
	int64_t left = er->lease.until_ms - LEASE_SLACK_MS - store_now_ms();
	int64_t deadline = mono_ms();

	/* Taking the lease may have waited for the store: end in time. */
	deadline += left < budget_ms ? left : budget_ms;
	er->payload = payload_build(er->ev);
	for (int d = 0; d < M_DEST__MAX; d++) {
		if (!want[d])
			continue;
		struct run *r = &er->runs[er->n];
		struct job *j = &r->job;
		r->er = er;
		r->w.batch = 0;
		erun_account(er->b, (enum m_dest)d, r->account,
		             sizeof(r->account));
		j->ops = dests[d];
		j->dest = (enum m_dest)d;
		j->cfg = eng->cfg;
		j->env = eng->env;
		j->event_id = er->id;
		j->ev = er->ev;
		j->brand = er->b;
		j->payload = er->payload;
		j->deadline_ms = deadline;
		j->max_wait_ms = eng->dispatcher ? DISPATCH_WAIT_MS : 0;
		j->lease = &er->lease;
		snprintf(j->progress, sizeof(j->progress), "%s",
		         jsonutil_str(er->progress, m_dest_names[d])
		             ? jsonutil_str(er->progress, m_dest_names[d])
		             : "");
		if (plan_skip((enum m_dest)d, er->ev, er->b, j->reason,
		              sizeof(j->reason))) {
			j->outcome = DEST_SKIPPED;
			er->replan[er->n] = er->received_ms != 0;
		} else
			r->active = j->ops->start(j) != JOB_DONE;
		er->n++;
	}
	eng->jobs += er->n;
	er->next = eng->active;
	eng->active = er;
}

/*
 * Store the results of the finished eruns in done (a list), with their
 * attempts, at most FINISH_GROUP_MAX eruns to a transaction (the store
 * may split them further), and forget them.  A batch reply ends a
 * brand's Emarsys runs together: storing them together writes each hot
 * page once, not once per event.
 */
#define FINISH_GROUP_MAX 64
static void
erun_finish(struct engine *eng, struct erun *done)
{
	struct delivery_result res[FINISH_GROUP_MAX * M_DEST__MAX];
	char reasons[FINISH_GROUP_MAX * M_DEST__MAX][400];
	struct erun *er, *group;
	size_t n;
	int k;

	/* The ledger states of these runs go first. */
	if (done != NULL)
		dest_env_flush(eng->env);
	while (done != NULL) {
		group = done;
		for (k = 0, n = 0; done != NULL && k < FINISH_GROUP_MAX;
		     k++, done = done->next)
			for (int i = 0; i < done->n; i++, n++) {
				struct run *r = &done->runs[i];
				if (done->replan[i])
					engine_replan(eng, &r->job, done->b,
					              done->received_ms,
					              &res[n], reasons[n],
					              sizeof(reasons[n]));
				else
					engine_result(eng, &r->job, &res[n],
					              reasons[n],
					              sizeof(reasons[n]));
				res[n].attempts = r->atts;
				res[n].nattempts = r->natts;
			}
		engine_store(eng, res, n);
		while (group != done) {
			er = group;
			group = er->next;
			for (int i = 0; i < er->n; i++)
				er->runs[i].job.ops->finish(&er->runs[i].job);
			eng->jobs -= er->n;
			erun_free(er);
		}
	}
}

/* Advance every job; finish the eruns that have nothing left. */
static void
engine_advance(struct engine *eng)
{
	struct erun **pp = &eng->active, *er, *done = NULL, **tail = &done;
	int busy;

	while ((er = *pp) != NULL) {
		busy = 0;
		for (int i = 0; i < er->n; i++) {
			run_advance(eng, &er->runs[i]);
			busy |= er->runs[i].active;
		}
		if (busy) {
			pp = &er->next;
			continue;
		}
		*pp = er->next;
		er->next = NULL;
		*tail = er;
		tail = &er->next;
	}
	erun_finish(eng, done);
}

/* Milliseconds until the earliest waiting job, at most max_ms. */
static long
engine_wait_ms(const struct engine *eng, long max_ms)
{
	int64_t now = mono_ms(), next = now + max_ms;

	for (const struct erun *er = eng->active; er != NULL; er = er->next)
		for (int i = 0; i < er->n; i++) {
			const struct run *r = &er->runs[i];
			/* A queued run goes when a response frees its
			 * transfer: that wakes the wait anyway. */
			if (r->active && !r->in_flight && !r->queued &&
			    r->job.wait_until_ms < next)
				next = r->job.wait_until_ms;
		}
	return next > now ? (long)(next - now) : 0;
}

/* Sleep up to ms, waking early when a wake-up fd says so. */
static int
engine_sleep(const struct engine *eng, long ms)
{
	struct pollfd p[2] = {
	    {eng->dispatcher ? limits_wake_fd() : -1, POLLIN, 0},
	    {eng->dispatcher ? store_wake_fd(eng->st) : -1, POLLIN, 0},
	};

	return poll(p, 2, (int)ms) > 0;
}

/* See engine.h. */
int
engine_step(struct engine *eng, long max_wait_ms)
{
	struct http_resp resp;
	void *owner;
	long wait;
	int rc, woken = 0;

	engine_advance(eng);
	if (eng->active == NULL && !eng->dispatcher)
		return 0; /* intake: nothing left to wait for */
	if (eng->dispatcher) {
		/* Heard while running statements: do not wait at all. */
		if (store_wake_drain(eng->st) > 0) {
			woken = 1;
			max_wait_ms = 0;
		}
		/* Another host's intake: its fd changes on a reconnect. */
		httpc_wake_fd(eng->http, 1, store_wake_fd(eng->st));
	}
	wait = batch_flush(eng, engine_wait_ms(eng, max_wait_ms));
	rc = httpc_next(eng->http, wait, &owner, &resp);
	if (rc == -1 && wait > 0)
		woken = engine_sleep(eng, wait); /* nothing on the wire */
	/*
	 * Every reply that is in, before the next advance: the runs they
	 * end are then stored together.  Replies only move runs on; what
	 * they send next goes out in the advance.
	 */
	for (; rc == 1; rc = httpc_next(eng->http, 0, &owner, &resp)) {
		if (((struct wire *)owner)->batch)
			batch_response(eng, owner, &resp);
		else
			run_response(eng, owner, &resp, 1);
		http_resp_fini(&resp);
	}
	dest_env_flush(eng->env); /* the ledger states they came to */
	woken |= httpc_woken(eng->http);
	if (woken) {
		limits_wake_drain();
		(void)store_wake_drain(eng->st);
	}
	return woken;
}

/*
 * Finish the leased deliveries of an event that cannot run at all: as a
 * result for the retry schedule (status NULL) or with a final status.
 */
static void
engine_cannot_run(struct engine *eng, const char *id,
                  const int want[M_DEST__MAX], const struct lease *l,
                  const char *status, const char *why)
{
	struct delivery_result res[M_DEST__MAX];
	char reasons[M_DEST__MAX][400];
	struct job j;
	size_t n = 0;

	for (int d = 0; d < M_DEST__MAX; d++) {
		if (!want[d])
			continue;
		log_warnx("delivery %s/%s: %s", id, m_dest_names[d], why);
		memset(&j, 0, sizeof(j));
		j.dest = (enum m_dest)d;
		j.event_id = id;
		j.lease = l;
		job_done(&j, status == NULL ? DEST_RETRY : DEST_FAILED, "%s",
		         why);
		engine_result(eng, &j, &res[n], reasons[n], sizeof(reasons[n]));
		if (status != NULL)
			res[n].status = status; /* "failed" or "dead" */
		n++;
	}
	engine_store(eng, res, n);
}

/*
 * A claimed event's brand, body and brand document (as store_event_body):
 * from the claim when it read them (stored), else from the store.
 */
static enum gc_err
erun_stored(struct engine *eng, struct erun *er, const json_t *stored,
            char **brand, char **body, char **doc)
{
	const char *b = jsonutil_str(stored, "brand");
	const char *t = jsonutil_str(stored, "body");
	const char *d = jsonutil_str(stored, "doc");

	if (stored == NULL)
		return store_event_body(eng->st, er->id, brand, body,
		                        &er->received_ms, doc);
	if (b == NULL || t == NULL)
		return GC_ENOTFOUND; /* purged */
	er->received_ms =
	    json_integer_value(json_object_get(stored, "received_ms"));
	*brand = strdup(b);
	*body = strdup(t);
	*doc = d != NULL ? strdup(d) : NULL;
	if (*brand == NULL || *body == NULL || (d != NULL && *doc == NULL))
		return GC_ENOMEM;
	return GC_OK;
}

/* Load a claimed event and its brand into er; 0 when it can run. */
static int
erun_load(struct engine *eng, struct erun *er, const json_t *stored,
          const int want[M_DEST__MAX])
{
	char *brand = NULL, *body = NULL, *doc = NULL;
	json_t *obj = NULL;
	enum gc_err err;
	int ok = 0;

	if ((err = erun_stored(eng, er, stored, &brand, &body, &doc)) != GC_OK)
		engine_cannot_run(eng, er->id, want, &er->lease,
		                  err == GC_ENOTFOUND ? "dead" : NULL,
		                  err == GC_ENOTFOUND
		                      ? "event body purged (retention)"
		                      : "store unavailable");
	else if ((obj = json_loads(body, 0, NULL)) == NULL ||
	         event_from_json(obj, &er->ev_own) != GC_OK)
		engine_cannot_run(eng, er->id, want, &er->lease, "failed",
		                  "stored event is unreadable");
	else if ((err = doc == NULL
	                    ? GC_ENOTFOUND
	                    : brand_from_doc(eng->cfg->secrets_key, brand, doc,
	                                     &er->b_own)) != GC_OK)
		engine_cannot_run(
		    eng, er->id, want, &er->lease,
		    err == GC_ESTORE ? NULL : "failed",
		    err == GC_ENOTFOUND ? "brand is no longer configured"
		    : err == GC_ECRYPTO ? "brand secrets do not decrypt (wrong "
		                          "secrets key?)"
		    : err == GC_ESTORE ? "brand unreadable or store unavailable"
		                       : gc_strerror(err));
	else
		ok = 1;
	/* event_fini on a half-filled event is safe; brand only when ok. */
	er->owns = ok;
	if (!ok)
		event_fini(&er->ev_own);
	json_decref(obj);
	free(brand);
	free(body);
	free(doc);
	return ok ? 0 : -1;
}

/* Destination flags from an array of destination names. */
static void
engine_wanted(const json_t *names, int want[M_DEST__MAX])
{
	json_t *v;
	size_t i;

	json_array_foreach (names, i, v) {
		for (int d = 0; d < M_DEST__MAX; d++)
			if (strcmp(json_string_value(v), m_dest_names[d]) == 0)
				want[d] = 1;
	}
}

/* Start a claimed event ({"id","owner","destinations"}) in the engine. */
static void
engine_start_claimed(struct engine *eng, const json_t *c, int64_t until_ms)
{
	int want[M_DEST__MAX] = {0};
	struct erun *er = calloc(1, sizeof(*er));

	if (er == NULL)
		return; /* its lease expires and it is claimed again */
	snprintf(er->id, sizeof(er->id), "%s", jsonutil_str(c, "id"));
	snprintf(er->lease.owner, sizeof(er->lease.owner), "%s",
	         jsonutil_str(c, "owner"));
	er->lease.until_ms = until_ms;
	engine_wanted(json_object_get(c, "destinations"), want);
	er->progress = json_incref(json_object_get(c, "progress"));
	if (erun_load(eng, er, json_object_get(c, "stored"), want) != 0) {
		erun_free(er);
		return;
	}
	er->ev = &er->ev_own;
	er->b = &er->b_own;
	if (er->received_ms <= 0)
		er->received_ms = 1;
	erun_plan(eng, er, want, eng->cfg->delivery_budget_ms);
}

/* See engine.h. */
int
engine_claim(struct engine *eng, int max_jobs)
{
	struct lease l;
	json_t *claimed, *c;
	size_t i;
	int events = max_jobs / M_DEST__MAX;

	if (events < 1)
		return 0;
	engine_lease(eng, &l, eng->cfg->delivery_budget_ms);
	if (store_claim_batch(eng->st, store_now_ms(), &l, events, &claimed) !=
	    GC_OK)
		return -1;
	json_array_foreach (claimed, i, c)
		engine_start_claimed(eng, c, l.until_ms);
	i = json_array_size(claimed);
	json_decref(claimed);
	return (int)i;
}

/* See engine.h. */
enum gc_err
engine_redeliver(struct engine *eng, const char *event_id, int *count)
{
	struct delivery_result res[M_DEST__MAX];
	int64_t now = store_now_ms();
	struct lease l;
	json_t *taken, *v;
	size_t i, n = 0;
	enum gc_err err;

	*count = 0;
	engine_lease(eng, &l, eng->cfg->delivery_budget_ms);
	err = store_event_take(eng->st, event_id, now, &l, &taken);
	if (err != GC_OK)
		return err;
	/* Hand them to the dispatcher, due now, as its first run. */
	memset(res, 0, sizeof(res));
	json_array_foreach (taken, i, v) {
		if (n == M_DEST__MAX)
			break;
		res[n].event_id = event_id;
		res[n].destination = json_string_value(v);
		res[n].owner = l.owner;
		res[n].reason = "redelivery requested";
		res[n].next_at_ms = now;
		res[n++].postpone = 1;
	}
	if (n > 0 &&
	    (err = store_deliveries_finish(eng->st, res, n)) == GC_OK) {
		limits_wake();
		store_wake_others(eng->st);
	}
	for (i = 0; i < n && err == GC_OK; i++)
		*count += res[i].err == GC_OK;
	json_decref(taken);
	return err;
}
