/*
 * One job on its way (engine_priv.h): the job helpers the clients call
 * (dest.h), and a run's requests: the account's holds, circuit and pace
 * before each one, batching in the dispatcher, the attempt and the shared
 * limits after each reply.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery_limits.h"
#include "dest.h"
#include "engine_priv.h"
#include "log.h"
#include "mono.h"
#include "store.h"

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
enum job_next
job_defer(struct job *j, int64_t at_ms, const char *fmt, ...)
{
	va_list ap;

	j->outcome = DEST_RETRY;
	j->deferred = 1;
	j->retry_at_ms = at_ms;
	va_start(ap, fmt);
	vsnprintf(j->reason, sizeof(j->reason), fmt, ap);
	va_end(ap);
	return JOB_DONE;
}

/* See dest.h. */
int64_t
job_wait_horizon(const struct job *j)
{
	int64_t now = j->env->mono_ms(j->env->ctx); /* the job's clock */
	int64_t h = j->deadline_ms - 500;

	if (j->max_wait_ms > 0 && now + j->max_wait_ms < h)
		h = now + j->max_wait_ms;
	return h;
}

/* See dest.h. */
int
job_can_wait(const struct job *j, int64_t until_ms)
{
	return until_ms <= job_wait_horizon(j);
}

/* See dest.h. */
int64_t
job_mono_at(const struct job *j, int64_t wall_ms)
{
	return j->env->mono_ms(j->env->ctx) +
	       (wall_ms - j->env->now_ms(j->env->ctx));
}

/* See dest.h. */
int64_t
job_wall_at(const struct job *j, int64_t mono_ms)
{
	return j->env->now_ms(j->env->ctx) +
	       (mono_ms - j->env->mono_ms(j->env->ctx));
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

/* Copy s (may be NULL) into a record's buffer; NULL stays NULL. */
static const char *
rec_copy(char *dst, size_t n, const char *s)
{
	if (s == NULL)
		return NULL;
	snprintf(dst, n, "%s", s);
	return dst;
}

/* See engine_priv.h. */
void
record_attempt(struct engine *eng, struct run *r, const struct http_resp *resp)
{
	static const char *const results[] = {"response", "not_sent",
	                                      "maybe_sent", "too_large"};
	_Static_assert(sizeof(results) / sizeof(results[0]) == HTTP__MAX,
	               "results[] out of step");
	const struct job *j = &r->job;
	struct attempt_rec *rec;
	int64_t now = store_now_ms(), took = mono_ms() - r->t0_ms;

	(void)eng;
	metrics_upstream(j->dest, resp->status, resp->seconds);
	log_attempt(m_dest_names[j->dest], j->event_id,
	            j->step ? j->step : "request", resp->status,
	            j->reply_code[0] ? j->reply_code : NULL, (double)took);
	if (r->natts == r->catts) {
		size_t c = r->catts ? r->catts * 2 : 4;
		void *p = realloc(r->atts, c * sizeof(*r->atts));
		if (p == NULL)
			goto nomem;
		r->atts = p;
		r->catts = c;
	}
	if ((rec = calloc(1, sizeof(*rec))) == NULL)
		goto nomem;
	r->atts[r->natts++] = &rec->a;
	rec->a.event_id = j->event_id;
	rec->a.destination = m_dest_names[j->dest];
	rec->a.step = rec_copy(rec->step, sizeof(rec->step),
	                       j->step ? j->step : "request");
	rec->a.outcome =
	    rec_copy(rec->outcome, sizeof(rec->outcome), results[resp->result]);
	rec->a.http_status = resp->status;
	rec->a.reply_code = rec_copy(rec->reply_code, sizeof(rec->reply_code),
	                             j->reply_code[0] ? j->reply_code : NULL);
	rec->a.excerpt = rec_copy(
	    rec->excerpt, sizeof(rec->excerpt),
	    j->excerpt[0] ? j->excerpt : (resp->error[0] ? resp->error : NULL));
	rec->a.latency_ms = (long)took;
	rec->a.at_ms = now;
	return;
nomem:
	log_warnx("out of memory: an attempt of %s is not kept", j->event_id);
}

/*
 * The request j->req will not be sent: tell the client as if it had
 * failed before leaving (so Yotpo gives its award key back), and stop.
 * defer_at > 0 (monotonic) hands the delivery back, due then, as no
 * failure.
 */
void
run_give_up(struct run *r, const char *why, int64_t defer_at)
{
	struct http_resp resp;
	struct job *j = &r->job;

	http_resp_init(&resp);
	resp.result = HTTP_NOT_SENT;
	snprintf(resp.error, sizeof(resp.error), "%s before %s", why,
	         j->step ? j->step : "the next step");
	j->ops->response(j, &resp);
	http_resp_fini(&resp);
	if (j->outcome != DEST_RETRY && j->outcome != DEST_FAILED)
		job_done(j, DEST_RETRY, "%s", resp.error);
	if (defer_at > 0 && j->outcome == DEST_RETRY) {
		/* Stored: on the wall clock, converted here once. */
		int64_t at = store_now_ms() + (defer_at - mono_ms());
		j->deferred = 1;
		if (j->retry_at_ms < at)
			j->retry_at_ms = at;
	}
	r->active = 0;
}

/*
 * The clients hold an account at most an hour after a 429 (a remote's
 * reset is capped there): a stored hold further off was written before
 * the wall clock stepped back, and is not waited for.
 */
#define STORED_HOLD_MAX_MS ((3600 + 60) * 1000LL)

/*
 * Other hosts' holds (PostgreSQL) are read at most this often, all at
 * once, into this host's (delivery_limits.h): a 429 one host sees holds
 * the others back within this long, at no store round trip per call.
 */
#define HOLDS_READ_EVERY_MS 250

struct holds_seen {
	int64_t now, wall_to_mono; /* monotonic now; wall + this: monotonic */
};

/* store_holds_ahead's callback: one stored hold, on the wall clock. */
static void
run_hold_seen(void *arg, const char *account, int64_t until_wall)
{
	const struct holds_seen *hs = arg;
	int64_t until = until_wall + hs->wall_to_mono;

	if (until - hs->now <= STORED_HOLD_MAX_MS)
		limits_hold(account, until);
}

/*
 * Until when the job's account may not be called (0: now): a 429's
 * shared hold and, in the dispatcher, an open circuit.
 */
int64_t
run_blocked_until(struct engine *eng, const struct run *r, int64_t now)
{
	struct holds_seen hs = {now, job_mono_at(&r->job, 0)};
	int64_t until;

	/*
	 * A 429 another host saw holds this one too.  Stored on the wall
	 * clock (each host's monotonic clock is its own).
	 */
	if (store_shared_hosts(eng->st) &&
	    (eng->holds_read_at == 0 ||
	     now - eng->holds_read_at >= HOLDS_READ_EVERY_MS)) {
		if (store_holds_ahead(eng->st, job_wall_at(&r->job, now),
		                      run_hold_seen, &hs) == GC_OK)
			eng->holds_read_at = now;
	}
	until = limits_hold_until(r->account);
	if (eng->dispatcher &&
	    limits_circuit(r->er->b->slug, r->job.dest, now) == CIRCUIT_OPEN) {
		int64_t open = now + eng->cfg->circuit_open_ms / 4;
		if (open > until)
			until = open;
	}
	return until > now ? until : 0;
}

/* See engine_priv.h. */
int
run_pace_slot(struct engine *eng, const struct run *r, int64_t now,
              int64_t horizon, int64_t *slot)
{
	int per_minute = limits_per_minute(r->account), reserved;
	int64_t wall;

	if (horizon < 0)
		horizon = 0;
	/*
	 * Hosts sharing a PostgreSQL store pace the account together, in
	 * the store (on the wall clock), at the limit this host learned,
	 * less 10% as limits_pace does.
	 */
	if (per_minute > 0 && store_shared_hosts(eng->st) &&
	    store_pace_slot(eng->st, r->account, 66000 / per_minute,
	                    job_wall_at(&r->job, now), horizon, &wall,
	                    &reserved) == GC_OK) {
		*slot = job_mono_at(&r->job, wall);
		return reserved;
	}
	return limits_pace(r->account, now, horizon, slot);
}

/*
 * Pace r's request to its account's live limit: 1 when it may go now;
 * else it waits for its slot (ready) or, when that is too far off, is
 * handed back, and 0.
 */
static int
run_paced(struct engine *eng, struct run *r, int64_t now)
{
	int64_t slot;

	if (r->paced)
		return 1;
	if (!run_pace_slot(eng, r, now, job_wait_horizon(&r->job) - now,
	                   &slot)) {
		run_give_up(r, "paced to the account's rate limit", slot);
		return 0;
	}
	r->paced = 1;
	if (slot <= now)
		return 1;
	r->ready = 1;
	r->job.wait_until_ms = slot;
	return 0;
}

/*
 * httpc_start refused j->req (err): nothing was sent.  One that does not
 * fit the HTTP client (a URL or header list over its limits) would never
 * fit: it fails for an operator, with the reason, instead of retrying.
 */
static void
run_refused(struct run *r, enum gc_err err)
{
	struct job *j = &r->job;
	const char *step = j->step ? j->step : "request";

	if (err != GC_ETOOBIG) {
		run_give_up(r, "could not start a request", 0);
		return;
	}
	log_errorx("%s delivery of %s: %s refused: its URL or headers are "
	           "over the HTTP client's limits",
	           m_dest_names[j->dest], j->event_id, step);
	run_give_up(r, "request over the HTTP client's limits", 0);
	job_done(j, DEST_FAILED,
	         "%s refused before sending: its URL or headers are over the "
	         "HTTP client's limits (URL 1023 bytes, %d headers)",
	         step, HTTPC_MAX_HEADERS);
}

/* Put j->req on the wire, within the deadline and the account's limits. */
static void
run_send(struct engine *eng, struct run *r)
{
	struct job *j = &r->job;
	int64_t now = mono_ms(), blocked;
	long left = (long)(j->deadline_ms - now);
	enum gc_err err;

	if ((blocked = run_blocked_until(eng, r, now)) > 0) {
		run_give_up(r, "account on hold (rate limit or open circuit)",
		            blocked);
		return;
	}
	if (left < MIN_REQUEST_MS) {
		run_give_up(r, "time budget used up", r->er->sync ? now : 0);
		return;
	}
	j->reply_code[0] = j->excerpt[0] = '\0';
	if (eng->dispatcher && !r->solo && !r->paced && batch_park(eng, r))
		return;
	if (!run_paced(eng, r, now))
		return;
	/*
	 * Every transfer busy (the dispatcher keeps more deliveries in
	 * hand than it has transfers): it goes when one frees, in its slot.
	 */
	if (httpc_idle(eng->http) == 0) {
		r->ready = 1;
		r->queued = 1;
		eng->queued++;
		return;
	}
	r->paced = 0;
	if (j->req.timeout_ms == 0)
		j->req.timeout_ms = eng->cfg->http_timeout_ms;
	r->capped = j->req.timeout_ms > left;
	if (r->capped)
		j->req.timeout_ms = left;
	r->t0_ms = now;
	if ((err = httpc_start(eng->http, &j->req, r)) != GC_OK) {
		run_refused(r, err);
		return;
	}
	r->in_flight = 1;
}

/* See engine_priv.h. */
void
run_advance(struct engine *eng, struct run *r)
{
	struct job *j = &r->job;

	while (r->active && !r->in_flight) {
		if (j->wait_until_ms > mono_ms())
			return;
		j->wait_until_ms = 0;
		if (r->ready) {
			/* Its request is built; its slot has come. */
			r->ready = 0;
			if (r->queued) {
				r->queued = 0;
				eng->queued--;
			}
			run_send(eng, r);
			if (r->queued)
				return; /* until a transfer frees */
			continue;
		}
		switch (j->ops->next(j)) {
		case JOB_DONE:
			r->active = 0;
			return;
		case JOB_WAIT:
			continue;
		case JOB_REQUEST:
			run_send(eng, r);
		}
	}
}

/* See engine_priv.h. */
void
run_feed_limits(struct engine *eng, struct run *r, const struct http_resp *rp)
{
	const struct app_config *cfg = eng->cfg;
	struct job *j = &r->job;
	int trip = rp->result == HTTP_OK && rp->status == 429;
	int ok = rp->result == HTTP_OK && rp->status < 500 && !trip;

	if (j->hold_until_ms > 0) {
		limits_hold(r->account, j->hold_until_ms);
		if (store_shared_hosts(eng->st))
			(void)store_hold_put(eng->st, r->account,
			                     job_wall_at(j, j->hold_until_ms));
		j->hold_until_ms = 0;
	}
	if (j->rate_limit > 0 || j->rate_remaining >= 0)
		limits_learn(r->account, j->rate_limit, j->rate_remaining,
		             j->rate_reset_ms);
	/* A timeout we imposed (the sync budget) says nothing of health. */
	if (r->capped && rp->timed_out)
		return;
	limits_circuit_result(r->er->b->slug, j->dest, ok, trip,
	                      cfg->circuit_failures, cfg->circuit_open_ms,
	                      mono_ms());
}

/* See engine_priv.h. */
void
run_response(struct engine *eng, struct run *r, const struct http_resp *resp,
             int feed)
{
	struct job *j = &r->job;

	r->in_flight = 0;
	j->rate_limit = 0;
	j->rate_remaining = -1;
	j->rate_reset_ms = 0;
	j->ops->response(j, resp);
	record_attempt(eng, r, resp);
	if (feed)
		run_feed_limits(eng, r, resp);
	/* Cut short by intake's budget: no failure of the remote's. */
	if (r->capped && resp->timed_out && r->er->sync &&
	    j->outcome == DEST_RETRY) {
		j->deferred = 1;
		if (j->retry_at_ms < store_now_ms())
			j->retry_at_ms = store_now_ms();
	}
}
