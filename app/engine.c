#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dest.h"
#include "engine.h"
#include "jsonutil.h"
#include "log.h"
#include "payload.h"
#include "store.h"

#define LEASE_SLACK_MS  60000  /* a lease outlives the budget by this */
#define PAUSED_RETRY_MS 300000 /* a paused destination is looked at again */

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

struct engine {
	const struct app_config *cfg;
	struct store *st;
	struct httpc *http;
	long long runs; /* for lease owners */
};

/* A fresh lease for one run: unique owner, budget plus slack. */
static void
engine_lease(struct engine *eng, struct lease *l)
{
	l->until_ms =
	    store_now_ms() + eng->cfg->delivery_budget_ms + LEASE_SLACK_MS;
	snprintf(l->owner, sizeof(l->owner), "%ld.%lld", (long)getpid(),
	         ++eng->runs);
}

/* See engine.h. */
struct engine *
engine_alloc(const struct app_config *cfg, struct store *st)
{
	struct httpc_opts o = {
	    .connect_timeout_ms = cfg->http_connect_timeout_ms,
	    .timeout_ms = cfg->http_timeout_ms,
	    .max_response_bytes = cfg->http_max_response_bytes,
	    .ca_file = cfg->http_ca_file,
	};
	struct engine *eng = calloc(1, sizeof(*eng));

	if (eng == NULL)
		return NULL;
	eng->cfg = cfg;
	eng->st = st;
	if ((eng->http = httpc_alloc(&o)) == NULL) {
		free(eng);
		return NULL;
	}
	return eng;
}

/* See engine.h. */
void
engine_free(struct engine *eng)
{
	if (eng == NULL)
		return;
	httpc_free(eng->http);
	free(eng);
}

/* See engine.h. */
struct httpc *
engine_httpc(struct engine *eng)
{
	return eng->http;
}

/* See dest.h. */
enum job_next
job_done(struct job *j, enum dest_outcome o, const char *fmt, ...)
{
	va_list ap;

	j->outcome = o;
	va_start(ap, fmt);
	vsnprintf(j->reason, sizeof(j->reason), fmt, ap);
	va_end(ap);
	return JOB_DONE;
}

/* See dest.h. */
void
job_excerpt(struct job *j, const struct http_resp *r)
{
	const unsigned char *p = (const unsigned char *)buf_str(&r->body);
	size_t o = 0;

	/* Printable ASCII kept, anything else as \xHH: safe in logs/JSON. */
	for (; *p != '\0' && o + 5 < sizeof(j->excerpt); p++) {
		if (*p >= 0x20 && *p < 0x7f && *p != '\\')
			j->excerpt[o++] = (char)*p;
		else
			o += (size_t)snprintf(j->excerpt + o,
			                      sizeof(j->excerpt) - o, "\\x%02x",
			                      *p);
	}
	j->excerpt[o] = '\0';
}

/*
 * Whether destination d has work for this event: 0 when it does, else 1
 * with the skip reason in buf.
 */
static int
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

struct run {
	struct job job;
	int active;    /* still has work */
	int in_flight; /* a request is on the wire */
	int64_t t0_ms;
};

static void
record_attempt(struct engine *eng, struct run *r, const struct http_resp *resp)
{
	static const char *const results[] = {"response", "not_sent",
	                                      "maybe_sent", "too_large"};
	_Static_assert(sizeof(results) / sizeof(results[0]) == HTTP__MAX,
	               "results[] out of step");
	struct attempt a = {
	    .event_id = r->job.event_id,
	    .destination = m_dest_names[r->job.dest],
	    .step = r->job.step ? r->job.step : "request",
	    .outcome =
	        resp->result == HTTP_OK ? "response" : results[resp->result],
	    .http_status = resp->status,
	    .reply_code = r->job.reply_code[0] ? r->job.reply_code : NULL,
	    .excerpt = r->job.excerpt[0]
	                   ? r->job.excerpt
	                   : (resp->error[0] ? resp->error : NULL),
	    .latency_ms = (long)(store_now_ms() - r->t0_ms),
	};

	metrics_upstream(r->job.dest, resp->status, resp->seconds);
	log_attempt(a.destination, a.event_id, a.step, resp->status,
	            a.reply_code, (double)a.latency_ms);
	if (store_attempt_add(eng->st, &a) != GC_OK)
		log_warnx("could not record an attempt for %s", a.event_id);
}

/*
 * The request j->req will not be sent: tell the client as if it had
 * failed before leaving (so Yotpo gives its award key back), and stop.
 */
static void
run_give_up(struct run *r, const char *why)
{
	struct http_resp resp;

	http_resp_init(&resp);
	resp.result = HTTP_NOT_SENT;
	snprintf(resp.error, sizeof(resp.error), "%s before %s", why,
	         r->job.step ? r->job.step : "the next step");
	r->job.ops->response(&r->job, &resp);
	http_resp_fini(&resp);
	if (r->job.outcome != DEST_RETRY && r->job.outcome != DEST_FAILED)
		job_done(&r->job, DEST_RETRY, "%s", resp.error);
	r->active = 0;
}

/* Ask a job what it wants next and act on it. */
static void
run_advance(struct engine *eng, struct run *r)
{
	struct job *j = &r->job;
	long left;

	while (r->active && !r->in_flight) {
		if (j->wait_until_ms > store_now_ms())
			return;
		j->wait_until_ms = 0;
		switch (j->ops->next(j)) {
		case JOB_DONE:
			r->active = 0;
			return;
		case JOB_WAIT:
			continue;
		case JOB_REQUEST:
			left = (long)(j->deadline_ms - store_now_ms());
			if (left < 200) {
				run_give_up(r, "time budget used up");
				return;
			}
			if (j->req.timeout_ms == 0)
				j->req.timeout_ms = eng->cfg->http_timeout_ms;
			if (j->req.timeout_ms > left)
				j->req.timeout_ms = left;
			j->reply_code[0] = j->excerpt[0] = '\0';
			r->t0_ms = store_now_ms();
			if (httpc_start(eng->http, &j->req, r) != GC_OK) {
				run_give_up(r, "could not start a request");
				return;
			}
			r->in_flight = 1;
		}
	}
}

/* Earliest wake-up among waiting jobs, capped by the deadline. */
static long
run_wait_ms(struct run *runs, int n, int64_t deadline)
{
	int64_t now = store_now_ms(), next = deadline;

	for (int i = 0; i < n; i++)
		if (runs[i].active && !runs[i].in_flight &&
		    runs[i].job.wait_until_ms < next)
			next = runs[i].job.wait_until_ms;
	return next > now ? (long)(next - now) : 0;
}

/* Drive every job until all are done (in parallel on one multi handle). */
static void
engine_drive(struct engine *eng, struct run *runs, int n, int64_t deadline)
{
	struct http_resp resp;
	void *owner;
	int active;

	for (;;) {
		active = 0;
		for (int i = 0; i < n; i++) {
			run_advance(eng, &runs[i]);
			active += runs[i].active;
		}
		if (active == 0)
			return;
		long wait = run_wait_ms(runs, n, deadline);
		int rc = httpc_next(eng->http, wait, &owner, &resp);
		if (rc == -1 && wait > 0) {
			/* Nothing on the wire: every job waits. */
			struct timespec ts = {wait / 1000,
			                      (wait % 1000) * 1000000L};
			nanosleep(&ts, NULL);
		}
		if (rc == 1) {
			struct run *r = owner;
			r->in_flight = 0;
			r->job.ops->response(&r->job, &resp);
			record_attempt(eng, r, &resp);
			http_resp_fini(&resp);
		}
		if (store_now_ms() > deadline + 5000) {
			/* Requests are bounded by the budget; this is a bug. */
			log_errorx("delivery driver overran its deadline");
			for (int i = 0; i < n; i++)
				if (runs[i].active && !runs[i].in_flight)
					run_give_up(&runs[i],
					            "time budget used up");
		}
	}
}

/* Store a job's result, choosing the next retry time or giving up. */
static void
engine_apply(struct engine *eng, struct job *j)
{
	const char *dest = m_dest_names[j->dest];
	int64_t next = 0, now = store_now_ms();
	enum m_outcome mo;
	const char *status = dest_outcome_names[j->outcome];
	char reason[400];
	int runs = 0;
	enum gc_err err;

	snprintf(reason, sizeof(reason), "%s", j->reason);
	mo = j->outcome == DEST_DELIVERED ? M_OUT_DELIVERED
	     : j->outcome == DEST_WARNING ? M_OUT_WARNING
	     : j->outcome == DEST_SKIPPED ? M_OUT_SKIPPED
	     : j->outcome == DEST_FAILED  ? M_OUT_FAILED
	                                  : M_OUT_RETRYING;
	if (j->outcome == DEST_RETRY) {
		store_delivery_attempts(eng->st, j->event_id, dest, &runs);
		if (runs < 1)
			runs = 1;
		if ((size_t)runs > eng->cfg->nretry_schedule) {
			status = "dead";
			mo = M_OUT_DEAD;
			snprintf(reason, sizeof(reason),
			         "gave up after %d runs: %s", runs, j->reason);
		} else {
			next = now + eng->cfg->retry_schedule[runs - 1] * 1000;
			if (j->retry_at_ms > next)
				next = j->retry_at_ms;
		}
	}
	metrics_delivery(j->dest, mo);
	err = store_delivery_finish(eng->st, j->event_id, dest, j->lease->owner,
	                            status, reason[0] ? reason : NULL,
	                            j->warning[0] ? j->warning : NULL, next);
	if (err == GC_EEXISTS)
		log_errorx("%s delivery of %s outlived its lease; another run "
		           "owns it now, this outcome (%s) is not stored",
		           dest, j->event_id, status);
	else if (err != GC_OK)
		log_errorx("could not store the %s outcome of %s; the lease "
		           "will expire and the retrier will run it again",
		           dest, j->event_id);
}

/*
 * A delivery the plan now skips on a retry: the brand changed since the
 * event arrived.  A paused destination keeps it waiting (without using
 * up a run); anything else needs an operator.
 */
static void
engine_replan(struct engine *eng, struct job *j, const struct brand *b,
              int64_t received_ms)
{
	int paused =
	    (j->dest == M_DEST_EMARSYS && b->has_emarsys &&
	     !b->emarsys_enabled) ||
	    (j->dest == M_DEST_YOTPO && b->has_yotpo && !b->yotpo_enabled);
	int64_t span = 0;

	for (size_t i = 0; i < eng->cfg->nretry_schedule; i++)
		span += eng->cfg->retry_schedule[i] * 1000;
	if (paused && store_now_ms() - received_ms < span) {
		if (store_delivery_postpone(
		        eng->st, j->event_id, m_dest_names[j->dest],
		        j->lease->owner, j->reason,
		        store_now_ms() + PAUSED_RETRY_MS) != GC_OK)
			log_warnx("could not postpone %s/%s", j->event_id,
			          m_dest_names[j->dest]);
		return;
	}
	/* Removed, or paused for longer than the whole retry schedule. */
	if (paused && store_delivery_finish(
	                  eng->st, j->event_id, m_dest_names[j->dest],
	                  j->lease->owner, "dead",
	                  "destination paused for longer than the retry "
	                  "schedule",
	                  NULL, 0) == GC_OK)
		return;
	j->outcome = DEST_FAILED;
	engine_apply(eng, j);
}

/*
 * Run the given destinations of one event in parallel; each must already
 * be leased to l.  received_ms is when the event arrived, for a rerun; 0
 * for the run right after intake, where a planned skip is final.
 */
static void
engine_run_event(struct engine *eng, const char *id, const struct gc_event *ev,
                 const struct brand *b, const int want[M_DEST__MAX],
                 const struct lease *l, int64_t received_ms)
{
	struct run runs[M_DEST__MAX];
	json_t *payload = payload_build(ev);
	int64_t deadline = store_now_ms() + eng->cfg->delivery_budget_ms;
	int n = 0, replan[M_DEST__MAX] = {0};

	/* Taking the lease may have waited for the store: end in time. */
	if (deadline > l->until_ms - LEASE_SLACK_MS)
		deadline = l->until_ms - LEASE_SLACK_MS;

	memset(runs, 0, sizeof(runs));
	for (int d = 0; d < M_DEST__MAX; d++) {
		if (!want[d])
			continue;
		struct job *j = &runs[n].job;
		j->ops = dests[d];
		j->dest = (enum m_dest)d;
		j->cfg = eng->cfg;
		j->st = eng->st;
		j->event_id = id;
		j->ev = ev;
		j->brand = b;
		j->payload = payload;
		j->deadline_ms = deadline;
		j->lease = l;
		if (plan_skip((enum m_dest)d, ev, b, j->reason,
		              sizeof(j->reason))) {
			j->outcome = DEST_SKIPPED;
			replan[n] = received_ms != 0;
		} else
			runs[n].active = j->ops->start(j) != JOB_DONE;
		n++;
	}
	engine_drive(eng, runs, n, deadline);
	for (int i = 0; i < n; i++) {
		if (replan[i])
			engine_replan(eng, &runs[i].job, b, received_ms);
		else
			engine_apply(eng, &runs[i].job);
		runs[i].job.ops->finish(&runs[i].job);
	}
	json_decref(payload);
}

static enum gc_err
engine_outcome(struct engine *eng, const char *id, int duplicate,
               json_t **outcome, int *status)
{
	int ok = 0;
	enum gc_err err = store_event_outcome(eng->st, id, outcome, &ok);

	if (err != GC_OK)
		return err;
	if (duplicate)
		json_object_set_new(*outcome, "duplicate", json_true());
	*status = ok ? 200 : 202;
	return GC_OK;
}

/* See engine.h. */
enum gc_err
engine_submit(struct engine *eng, const char *webhook_id,
              const struct gc_event *ev, const struct brand *b,
              json_t **outcome, int *status)
{
	struct delivery_init di[M_DEST__MAX];
	char reasons[M_DEST__MAX][300];
	int want[M_DEST__MAX] = {0};
	struct lease l;
	json_t *body;
	char *text;
	enum gc_err err;

	*outcome = NULL;
	for (int d = 0; d < M_DEST__MAX; d++) {
		int skip = plan_skip((enum m_dest)d, ev, b, reasons[d],
		                     sizeof(reasons[d]));
		di[d].destination = m_dest_names[d];
		di[d].status = skip ? "skipped" : "pending";
		di[d].reason = skip ? reasons[d] : NULL;
		want[d] = !skip;
	}
	if ((body = event_to_json(ev)) == NULL ||
	    (text = jsonutil_compact(body)) == NULL) {
		json_decref(body);
		return GC_ENOMEM;
	}
	json_decref(body);
	engine_lease(eng, &l);
	err = store_event_insert(eng->st, webhook_id, ev->brand_slug,
	                         ev_kind_names[ev->kind], text, di, M_DEST__MAX,
	                         &l);
	free(text);
	if (err == GC_EEXISTS) {
		metrics_event(ev->kind, M_EV_DUPLICATE);
		return engine_outcome(eng, webhook_id, 1, outcome, status);
	}
	if (err != GC_OK)
		return err;
	metrics_event(ev->kind, M_EV_ACCEPTED);
	for (int d = 0; d < M_DEST__MAX; d++)
		if (!want[d])
			metrics_delivery((enum m_dest)d, M_OUT_SKIPPED);
	engine_run_event(eng, webhook_id, ev, b, want, &l, 0);
	if (engine_outcome(eng, webhook_id, 0, outcome, status) != GC_OK) {
		/* Recorded: gcrelay owns it now, whatever happens next. */
		*outcome = json_pack("{s:s, s:s}", "id", webhook_id, "status",
		                     "accepted");
		*status = 202;
	}
	return *outcome != NULL ? GC_OK : GC_ENOMEM;
}

/*
 * Finish the leased deliveries of an event that cannot run at all: as a
 * result for the retry schedule (retry = 1) or with a final status.
 */
static void
engine_cannot_run(struct engine *eng, const char *id,
                  const int want[M_DEST__MAX], const struct lease *l,
                  const char *status, const char *why)
{
	struct job j;

	for (int d = 0; d < M_DEST__MAX; d++) {
		if (!want[d])
			continue;
		log_warnx("delivery %s/%s: %s", id, m_dest_names[d], why);
		memset(&j, 0, sizeof(j));
		j.dest = (enum m_dest)d;
		j.event_id = id;
		j.lease = l;
		if (status == NULL) {
			job_done(&j, DEST_RETRY, "%s", why);
			engine_apply(eng, &j);
		} else if (store_delivery_finish(eng->st, id, m_dest_names[d],
		                                 l->owner, status, why, NULL,
		                                 0) != GC_OK)
			log_errorx("could not finish %s/%s", id,
			           m_dest_names[d]);
	}
}

/* Load an event and its brand and run the wanted destinations. */
static void
engine_rerun(struct engine *eng, const char *id, const int want[M_DEST__MAX],
             const struct lease *l)
{
	char *brand = NULL, *body = NULL;
	int64_t received = 0;
	struct gc_event ev;
	struct brand b;
	json_t *obj = NULL;
	enum gc_err err;

	memset(&ev, 0, sizeof(ev));
	if ((err = store_event_body(eng->st, id, &brand, &body, &received)) !=
	    GC_OK)
		engine_cannot_run(
		    eng, id, want, l, err == GC_ENOTFOUND ? "dead" : NULL,
		    err == GC_ENOTFOUND ? "event body purged (retention)"
		                        : "store unavailable");
	else if ((obj = json_loads(body, 0, NULL)) == NULL ||
	         event_from_json(obj, &ev) != GC_OK)
		engine_cannot_run(eng, id, want, l, "failed",
		                  "stored event is unreadable");
	else if ((err = brand_load(eng->st, eng->cfg->secrets_key, brand,
	                           &b)) != GC_OK)
		engine_cannot_run(
		    eng, id, want, l, err == GC_ESTORE ? NULL : "failed",
		    err == GC_ENOTFOUND ? "brand is no longer configured"
		    : err == GC_ECRYPTO ? "brand secrets do not decrypt (wrong "
		                          "secrets key?)"
		    : err == GC_ESTORE ? "brand unreadable or store unavailable"
		                       : gc_strerror(err));
	else {
		engine_run_event(eng, id, &ev, &b, want, l,
		                 received > 0 ? received : 1);
		brand_fini(&b);
	}
	event_fini(&ev);
	json_decref(obj);
	free(brand);
	free(body);
}

/* Destination flags from an array of destination names. */
static void
engine_wanted(const json_t *names, int want[M_DEST__MAX])
{
	json_t *v;
	size_t i;

	json_array_foreach(names, i, v)
	{
		for (int d = 0; d < M_DEST__MAX; d++)
			if (strcmp(json_string_value(v), m_dest_names[d]) == 0)
				want[d] = 1;
	}
}

/* See engine.h. */
int
engine_run_due(struct engine *eng)
{
	int want[M_DEST__MAX] = {0};
	struct lease l;
	json_t *claimed;
	char *id;

	engine_lease(eng, &l);
	if (store_claim_due(eng->st, store_now_ms(), &l, &id, &claimed) !=
	        GC_OK ||
	    id == NULL) {
		json_decref(claimed);
		return 0;
	}
	engine_wanted(claimed, want);
	json_decref(claimed);
	engine_rerun(eng, id, want, &l);
	free(id);
	return 1;
}

/* See engine.h. */
enum gc_err
engine_redeliver(struct engine *eng, const char *event_id, int *count)
{
	int want[M_DEST__MAX] = {0};
	struct lease l;
	json_t *taken;
	enum gc_err err;

	*count = 0;
	engine_lease(eng, &l);
	err = store_event_take(eng->st, event_id, store_now_ms(), &l, &taken);
	if (err != GC_OK)
		return err;
	engine_wanted(taken, want);
	*count = (int)json_array_size(taken);
	json_decref(taken);
	if (*count > 0)
		engine_rerun(eng, event_id, want, &l);
	return GC_OK;
}
