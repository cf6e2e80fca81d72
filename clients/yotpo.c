/*
 * The Yotpo Loyalty destination (DESIGN.md, Yotpo Loyalty).
 *
 * Yotpo has no idempotency key and the earning rules have no maximum, so
 * one duplicate POST /actions gives points away twice.  Every award goes
 * through the ledger (j->env's ledger_*), keyed by (brand, verification
 * token, action name):
 *
 *   absent   -> claimed "sending" under a lease -> POST
 *   2xx      -> "done": never sent again, whatever webhook id asks
 *   sent, no answer (timeout after the body left, 5xx)
 *            -> "unknown": before any new call, wait until Yotpo's
 *               delayed writes are visible, look for the reference in
 *               the customer's history, and send again only when it is
 *               confirmed absent
 *   not sent (connect error), 429, 423 -> claim released, retried
 *   400/401/403/404/422 -> claim released, failed for an operator
 *
 * Calls for one brand are spaced by a throttle shared by all processes.
 * The ledger, the throttle and the clock are the engine's, handed in as
 * j->env: this file only builds requests and reads replies.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "dest.h"
#include "jsonutil.h"
#include "log.h"
#include "yotpo.h"

#define BUSY_POLL_MS 200
#define TITLE_MAX    80 /* bytes of the campaign title in history_title */

enum yo_phase { YO_CLAIM, YO_RECONCILE, YO_SEND };
enum yo_req { YO_NONE, YO_GET_CUSTOMER, YO_POST_ACTION };

struct yo_state {
	char action[160];
	char title[300];
	char guid[600];
	char key[600];
	enum yo_phase phase;
	enum yo_req inflight;
	int64_t sent_at;
	char email[256];   /* the customer to reconcile against */
	char claimer[260]; /* the event whose call is being reconciled */
	int64_t slot_ms;   /* throttle slot held (monotonic), 0 when none */
	int slot_far;      /* the claim's slot_ms is beyond the horizon */
	int misses;        /* history reads that did not find it yet */
	int fresh;         /* claimed just now, not waited since */
	int finished;
	struct buf body;
};

/* Now on the engine's wall clock: for stored and remote times; waits and
 * holds are monotonic (job_mono_at). */
static int64_t
yo_now(const struct job *j)
{
	return j->env->now_ms(j->env->ctx);
}

/* See yotpo.h. */
void
yotpo_history_title(const char *campaign_title, const char *token, char *out,
                    size_t n)
{
	size_t len = strnlen(campaign_title, TITLE_MAX);

	/*
	 * Cut before a character, never inside one: half a UTF-8 sequence
	 * makes the body invalid JSON (json_pack refuses it).
	 */
	while (len > 0 && ((unsigned char)campaign_title[len] & 0xc0) == 0x80)
		len--;
	snprintf(out, n, "%.*s (ref %s)", (int)len, campaign_title, token);
}

static int
json_mentions(const json_t *v, const char *needle)
{
	const char *k;
	json_t *m;
	size_t i;

	if (json_is_string(v))
		return strstr(json_string_value(v), needle) != NULL;
	if (json_is_object(v)) {
		json_object_foreach ((json_t *)v, k, m)
			if (json_mentions(m, needle))
				return 1;
	}
	if (json_is_array(v)) {
		json_array_foreach (v, i, m)
			if (json_mentions(m, needle))
				return 1;
	}
	return 0;
}

/* See yotpo.h. */
int
yotpo_history_has(const json_t *customer, const char *token)
{
	char needle[200];

	snprintf(needle, sizeof(needle), "(ref %s)", token);
	return json_mentions(json_object_get(customer, "history_items"),
	                     needle);
}

static int
yo_skip(const struct gc_event *ev, const struct brand *b, char *buf, size_t n)
{
	(void)b;
	if (ev->kind != EV_OFFER_CLAIMED)
		snprintf(buf, n, "nothing to award on %s",
		         ev_kind_names[ev->kind]);
	else if (ev->email == NULL)
		snprintf(buf, n,
		         "event has no email; Yotpo identifies "
		         "customers by email");
	else if (ev->campaign_slug == NULL)
		snprintf(buf, n,
		         "event has no campaign_slug, so no Custom "
		         "Action to trigger");
	else
		return 0;
	return 1;
}

static enum job_next
yo_start(struct job *j)
{
	struct yo_state *s = calloc(1, sizeof(*s));

	if ((j->state = s) == NULL)
		return job_done(j, DEST_RETRY, "out of memory");
	buf_init(&s->body, 0);
	brand_action_name(j->brand, j->ev->campaign_slug, s->action,
	                  sizeof(s->action));
	yotpo_history_title(j->ev->campaign_title, j->ev->token, s->title,
	                    sizeof(s->title));
	snprintf(s->guid, sizeof(s->guid), "x-guid: %s", j->brand->yo_guid);
	snprintf(s->key, sizeof(s->key), "x-api-key: %s", j->brand->yo_api_key);
	return JOB_REQUEST;
}

static enum job_next
yo_stop(struct job *j, enum dest_outcome o, const char *why)
{
	struct yo_state *s = j->state;

	s->finished = 1;
	return job_done(j, o, "%s", why);
}

/* Record a ledger state for our claim; loud when it cannot be stored. */
static enum gc_err
yo_ledger(struct job *j, const char *state, int64_t sent_at)
{
	struct yo_state *s = j->state;
	enum gc_err err;

	err = j->env->ledger_set(j->env->ctx, j->brand->slug, j->ev->token,
	                         s->action, j->lease->owner, state, sent_at);
	if (err != GC_OK)
		log_errorx("yotpo ledger %s/%s: cannot record \"%s\" (%s); "
		           "a later run reconciles against the history",
		           j->brand->slug, s->action, state,
		           err == GC_EEXISTS ? "claim lost" : gc_strerror(err));
	return err;
}

/* Give the key back (nothing was sent) and retry later. */
static void
yo_release(struct job *j)
{
	struct yo_state *s = j->state;

	if (j->env->ledger_release(j->env->ctx, j->brand->slug, j->ev->token,
	                           s->action, j->lease->owner) != GC_OK)
		log_warnx("yotpo ledger %s/%s: claim already gone",
		          j->brand->slug, s->action);
}

/*
 * When the next history read of an uncertain award made at sent_at is
 * due, after misses reads that found nothing: the first after
 * yotpo.reconcile_after_s, the last at yotpo.reconcile_window_s.
 */
static int64_t
yo_read_due(const struct job *j, int64_t sent_at, int misses)
{
	const struct app_config *c = j->cfg;
	int64_t after = c->yotpo_reconcile_after_s * 1000;
	int64_t span = c->yotpo_reconcile_window_s * 1000 - after;
	int gaps =
	    c->yotpo_reconcile_reads > 1 ? c->yotpo_reconcile_reads - 1 : 1;

	if (misses >= c->yotpo_reconcile_reads)
		misses = c->yotpo_reconcile_reads - 1;
	return sent_at + after + span * misses / gaps;
}

/* The award may have happened: remember that and retry after a check. */
static void
yo_unknown(struct job *j, int64_t sent_at, const char *why)
{
	struct yo_state *s = j->state;

	yo_ledger(j, "unknown", sent_at);
	j->retry_at_ms = yo_read_due(j, sent_at, s->misses);
	yo_stop(j, DEST_RETRY, why);
}

/* The brand's Yotpo calls per second. */
static int
yo_rps(const struct job *j)
{
	return j->brand->yo_max_rps > 0 ? j->brand->yo_max_rps
	                                : j->cfg->yotpo_default_max_rps;
}

/*
 * Claim the key; the first claim takes the call's throttle slot with it
 * where the env can (one round trip), which the call then uses.
 */
static enum gc_err
yo_claim_key(struct job *j, enum ledger_claim *c, struct ledger_view *v)
{
	struct yo_state *s = j->state;
	int64_t now = yo_now(j), mono, horizon, slot;
	int reserved;
	enum gc_err err;

	if (j->env->ledger_claim_paced == NULL || s->slot_ms != 0)
		return j->env->ledger_claim(
		    j->env->ctx, j->brand->slug, j->ev->token, s->action,
		    j->event_id, j->ev->email, now, j->lease, c, v);
	mono = j->env->mono_ms(j->env->ctx);
	horizon = job_wait_horizon(j) - mono;
	err = j->env->ledger_claim_paced(
	    j->env->ctx, j->brand->slug, j->ev->token, s->action, j->event_id,
	    j->ev->email, now, j->lease, c, v, yo_rps(j),
	    horizon > 0 ? horizon : 0, &slot, &reserved);
	if (err == GC_OK) {
		s->slot_ms = mono + (slot - now);
		s->slot_far = !reserved;
	}
	return err;
}

static enum job_next
yo_claim(struct job *j)
{
	struct yo_state *s = j->state;
	struct ledger_view v;
	enum ledger_claim c;
	int64_t now = yo_now(j);

	if (yo_claim_key(j, &c, &v) != GC_OK)
		return yo_stop(j, DEST_RETRY, "store unavailable (ledger)");
	/* Reconcile against the customer the uncertain call was for. */
	snprintf(s->email, sizeof(s->email), "%s", v.email);
	snprintf(s->claimer, sizeof(s->claimer), "%s", v.event_id);
	switch (c) {
	case LEDGER_CLAIMED:
		s->phase = YO_SEND;
		s->fresh = 1;
		return JOB_WAIT; /* proceed at once */
	case LEDGER_RECONCILE:
		s->phase = YO_RECONCILE;
		s->sent_at = v.sent_at;
		s->misses = v.misses;
		return JOB_WAIT;
	case LEDGER_DONE:
		if (strcmp(v.event_id, j->event_id) == 0)
			return yo_stop(j, DEST_DELIVERED, "");
		s->finished = 1;
		return job_done(j, DEST_SKIPPED,
		                "points already awarded for verification %s "
		                "(event %.100s)",
		                j->ev->token, v.event_id);
	case LEDGER_BUSY:
		break;
	}
	/* Another process is on it: look again shortly. */
	if (job_can_wait(j, job_mono_at(j, now + BUSY_POLL_MS))) {
		j->wait_until_ms = job_mono_at(j, now + BUSY_POLL_MS);
		return JOB_WAIT;
	}
	s->finished = 1;
	return job_defer(j, now + BUSY_POLL_MS,
	                 "another delivery of this verification is in "
	                 "progress");
}

/* Hold a throttle slot; JOB_WAIT until it comes, JOB_REQUEST when due. */
static enum job_next
yo_throttle(struct job *j)
{
	struct yo_state *s = j->state;
	int64_t now = yo_now(j), mono = j->env->mono_ms(j->env->ctx),
	        slot = now;
	int64_t horizon = job_wait_horizon(j) - mono;
	int reserved = !s->slot_far;

	s->slot_far = 0;
	if (s->slot_ms == 0) {
		if (j->env->throttle_slot(
		        j->env->ctx, j->brand->slug, yo_rps(j), now,
		        horizon > 0 ? horizon : 0, &slot, &reserved) != GC_OK)
			slot = now;
		/* The slot is stored (wall clock); it is waited for on the
		 * monotonic clock, converted once. */
		s->slot_ms = mono + (slot - now);
	}
	if (reserved && s->slot_ms <= mono) {
		s->slot_ms = 0;
		return JOB_REQUEST;
	}
	if (!reserved || !job_can_wait(j, s->slot_ms)) {
		/* The slot is too far off to hold on to: come back then. */
		if (s->phase == YO_SEND)
			yo_release(j);
		else
			yo_ledger(j, "unknown", s->sent_at);
		s->finished = 1;
		slot = now + (s->slot_ms - mono);
		return job_defer(j, slot,
		                 "throttled: the next Yotpo slot is at %lld",
		                 (long long)slot);
	}
	j->wait_until_ms = s->slot_ms;
	s->fresh = 0;
	return JOB_WAIT;
}

static void
yo_headers(struct job *j, const char *method)
{
	struct yo_state *s = j->state;

	memset(&j->req, 0, sizeof(j->req));
	j->req.method = method;
	http_req_header(&j->req, "Accept: application/json");
	http_req_header(&j->req, s->guid);
	http_req_header(&j->req, s->key);
}

static void
yo_get_customer(struct job *j)
{
	struct yo_state *s = j->state;

	yo_headers(j, "GET");
	buf_reset(&s->body);
	buf_printf(&s->body,
	           "%s/customers?customer_email=", j->cfg->yotpo_api_base);
	httpc_escape(&s->body, s->email);
	buf_puts(&s->body, "&with_history=true");
	/* Too long: the request is refused, never sent cut (httpc.h). */
	http_req_url(&j->req, "%s", buf_str(&s->body));
	buf_reset(&s->body);
	s->inflight = YO_GET_CUSTOMER;
	j->step = "reconcile";
}

/* Fill j->req with the award; JOB_DONE (claim released) when it cannot. */
static enum job_next
yo_post_action(struct job *j)
{
	struct yo_state *s = j->state;
	char created[32];
	struct tm tm;
	json_t *body;
	char *text;

	/*
	 * Mark the start of this call, for this event and customer; send
	 * only while the claim is still ours.  A key claimed just now, with
	 * no wait since, is already marked so (the claim writes "sending",
	 * leased to this run): checking again would be one more write
	 * waiting for the store, and no surer than the gap it leaves
	 * before the call.
	 */
	s->sent_at = yo_now(j);
	if (!s->fresh &&
	    j->env->ledger_sending(j->env->ctx, j->brand->slug, j->ev->token,
	                           s->action, j->lease->owner, j->event_id,
	                           j->ev->email, s->sent_at) != GC_OK)
		return yo_stop(j, DEST_RETRY, "lost the award claim; not sent");
	s->fresh = 0;
	snprintf(s->claimer, sizeof(s->claimer), "%s", j->event_id);
	gmtime_r(&j->ev->occurred_at, &tm);
	strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm);
	body =
	    json_pack("{s:s, s:s, s:s, s:s, s:s}", "type", "CustomAction",
	              "customer_email", j->ev->email, "action_name", s->action,
	              "created_at", created, "history_title", s->title);
	text = jsonutil_compact(body);
	json_decref(body);
	buf_reset(&s->body);
	/* Never send an empty body: nothing left, so give the key back. */
	if (text == NULL || buf_puts(&s->body, text) != GC_OK) {
		free(text);
		yo_release(j);
		return yo_stop(j, DEST_RETRY, "could not build the award body");
	}
	free(text);
	yo_headers(j, "POST");
	http_req_header(&j->req, "Content-Type: application/json");
	http_req_url(&j->req, "%s/actions", j->cfg->yotpo_api_base);
	j->req.body = buf_str(&s->body);
	j->req.bodylen = s->body.len;
	s->inflight = YO_POST_ACTION;
	j->step = "award";
	return JOB_REQUEST;
}

static enum job_next
yo_next(struct job *j)
{
	struct yo_state *s = j->state;
	int64_t due;
	enum job_next n;

	if (s->finished)
		return JOB_DONE;
	switch (s->phase) {
	case YO_CLAIM:
		return yo_claim(j);
	case YO_RECONCILE:
		due = yo_read_due(j, s->sent_at, s->misses);
		if (due > yo_now(j)) {
			if (job_can_wait(j, job_mono_at(j, due))) {
				j->wait_until_ms = job_mono_at(j, due);
				return JOB_WAIT;
			}
			yo_unknown(
			    j, s->sent_at,
			    "outcome of an earlier award unknown; waiting "
			    "for Yotpo's history to settle");
			return JOB_DONE;
		}
		if ((n = yo_throttle(j)) != JOB_REQUEST)
			return n;
		yo_get_customer(j);
		return JOB_REQUEST;
	case YO_SEND:
		if ((n = yo_throttle(j)) != JOB_REQUEST)
			return n;
		return yo_post_action(j);
	}
	return JOB_DONE;
}

/* When to go on after a 429/423 (wall clock): ratelimit-reset /
 * Retry-After seconds from now, default 1. */
static int64_t
yo_reset_ms(const struct job *j, const struct http_resp *r)
{
	char v[32];
	long long secs = 1, x;

	if (http_resp_header(r, "ratelimit-reset", v, sizeof(v)) &&
	    (x = strtoll(v, NULL, 10)) > 0)
		secs = x;
	if (http_resp_header(r, "Retry-After", v, sizeof(v)) &&
	    (x = strtoll(v, NULL, 10)) > secs)
		secs = x;
	if (secs > 3600) /* a remote value: keep the arithmetic sane */
		secs = 3600;
	return yo_now(j) + secs * 1000;
}

/* 429/423 on the award: nothing was applied; wait or give the key back. */
static void
yo_later(struct job *j, const struct http_resp *r)
{
	int64_t at = yo_reset_ms(j, r), wake = job_mono_at(j, at);

	if (r->status == 429)
		j->hold_until_ms = wake; /* for every call on this account */
	if (job_can_wait(j, wake)) {
		j->wait_until_ms = wake;
		return;
	}
	yo_release(j);
	j->retry_at_ms = at;
	yo_stop(j, DEST_RETRY,
	        r->status == 429 ? "rate limited by Yotpo (429)"
	                         : "Yotpo record busy (423)");
}

static void
yo_on_award(struct job *j, const struct http_resp *r)
{
	struct yo_state *s = j->state;
	char why[300];

	if (r->result == HTTP_NOT_SENT) {
		yo_release(j);
		snprintf(why, sizeof(why), "award not sent: %s", r->error);
		yo_stop(j, DEST_RETRY, why);
	} else if (r->result != HTTP_OK || r->status >= 500) {
		snprintf(
		    why, sizeof(why),
		    "award outcome unknown (%s); will check the customer's "
		    "history before any new call",
		    r->result != HTTP_OK ? r->error : "server error");
		yo_unknown(j, s->sent_at, why);
	} else if (r->status >= 200 && r->status < 300) {
		yo_ledger(j, "done", s->sent_at);
		yo_stop(j, DEST_DELIVERED, "");
	} else if (r->status == 429 || r->status == 423)
		yo_later(j, r);
	else {
		yo_release(j);
		snprintf(why, sizeof(why),
		         "Yotpo rejected the award (HTTP %ld): %.150s",
		         r->status, j->excerpt);
		yo_stop(j, DEST_FAILED, why);
	}
}

static void yo_missed(struct job *j);

static void
yo_on_customer(struct job *j, const struct http_resp *r)
{
	struct yo_state *s = j->state;
	int64_t wake = job_mono_at(j, yo_reset_ms(j, r));
	json_t *cust;
	int found;

	if (r->result == HTTP_OK && r->status == 429)
		j->hold_until_ms = wake;
	if (r->result == HTTP_OK && (r->status == 429 || r->status == 423) &&
	    job_can_wait(j, wake)) {
		j->wait_until_ms = wake;
		return;
	}
	if (r->result != HTTP_OK || (r->status != 200 && r->status != 404)) {
		/* Still unknown: keep it so and check again later. */
		yo_unknown(j, s->sent_at,
		           r->status == 401 || r->status == 403
		               ? "Yotpo refused the history check "
		                 "(credentials?)"
		               : "could not check the customer's history");
		if (r->status == 401 || r->status == 403)
			j->outcome = DEST_FAILED;
		return;
	}
	cust = r->status == 200
	           ? json_loadb(buf_str(&r->body), r->body.len, 0, NULL)
	           : NULL;
	if (r->status == 200 &&
	    !json_is_array(json_object_get(cust, "history_items"))) {
		/* A reply we cannot read proves nothing: stay unknown. */
		json_decref(cust);
		yo_unknown(j, s->sent_at,
		           "customer history unreadable (no history_items)");
		return;
	}
	found = cust != NULL && yotpo_history_has(cust, j->ev->token);
	json_decref(cust);
	metrics_yotpo_reconcile(found);
	if (found) {
		yo_ledger(j, "done", s->sent_at);
		if (strcmp(s->claimer, j->event_id) != 0) {
			/* The award was another event's uncertain call. */
			s->finished = 1;
			job_done(j, DEST_SKIPPED,
			         "points already awarded for verification %s "
			         "(event %.100s, confirmed in the customer's "
			         "history)",
			         j->ev->token, s->claimer);
			return;
		}
		yo_stop(j, DEST_DELIVERED, "");
		snprintf(j->warning, sizeof(j->warning),
		         "award confirmed in the customer's history after an "
		         "unknown outcome");
		j->outcome = DEST_WARNING;
		return;
	}
	yo_missed(j);
}

/*
 * A history read found no trace of the uncertain award.  Absence is
 * confirmed only when yotpo.reconcile_reads reads, the last at least
 * yotpo.reconcile_window_s after the call, all missed it: Yotpo shows
 * writes late, and one empty read never licenses a second award.
 */
static void
yo_missed(struct job *j)
{
	struct yo_state *s = j->state;
	int64_t now = yo_now(j);
	int reads = j->cfg->yotpo_reconcile_reads;

	if (j->env->ledger_miss(j->env->ctx, j->brand->slug, j->ev->token,
	                        s->action, j->lease->owner, now,
	                        &s->misses) != GC_OK) {
		yo_unknown(j, s->sent_at, "could not count a history read");
		return;
	}
	if (s->misses >= reads &&
	    now - s->sent_at >= j->cfg->yotpo_reconcile_window_s * 1000) {
		/* Confirmed absent: send again (for this event, if the claim
		 * is still ours: yo_post_action checks). */
		s->phase = YO_SEND;
		return;
	}
	yo_ledger(j, "unknown", s->sent_at);
	s->finished = 1;
	job_defer(j, yo_read_due(j, s->sent_at, s->misses),
	          "award outcome unknown: %d of %d history reads found "
	          "nothing so far",
	          s->misses, reads);
}

static void
yo_response(struct job *j, const struct http_resp *r)
{
	struct yo_state *s = j->state;

	/* A customer record is personal data: keep it out of attempts. */
	if (s->inflight == YO_POST_ACTION || r->status != 200)
		job_excerpt(j, r);
	if (s->inflight == YO_POST_ACTION)
		yo_on_award(j, r);
	else
		yo_on_customer(j, r);
}

static void
yo_free(struct job *j)
{
	struct yo_state *s = j->state;

	if (s == NULL)
		return;
	buf_free(&s->body);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
	j->state = NULL;
}

const struct dest_ops yotpo_ops = {
    .name = "yotpo",
    .skip = yo_skip,
    .start = yo_start,
    .next = yo_next,
    .response = yo_response,
    .finish = yo_free,
};

/* ---- preflight (POST /admin/v1/brands/{slug}/check) ---- */

/* See yotpo.h. */
void
yotpo_preflight(const struct app_config *cfg, const struct brand *b,
                struct httpc *h, json_t *checks)
{
	struct job j;
	struct yo_state s;
	struct http_resp r;
	json_t *list, *c;
	size_t i, custom = 0;
	char detail[200];
	int ok;

	memset(&j, 0, sizeof(j));
	memset(&s, 0, sizeof(s));
	j.cfg = cfg;
	j.brand = b;
	j.state = &s;
	snprintf(s.guid, sizeof(s.guid), "x-guid: %s", b->yo_guid);
	snprintf(s.key, sizeof(s.key), "x-api-key: %s", b->yo_api_key);
	yo_headers(&j, "GET");
	http_req_url(&j.req, "%s/campaigns", cfg->yotpo_api_base);
	httpc_perform(h, &j.req, &r);
	ok = r.result == HTTP_OK && r.status == 200;
	if (r.result != HTTP_OK)
		snprintf(detail, sizeof(detail), "unreachable: %.150s",
		         r.error);
	else if (r.status == 401 || r.status == 403)
		snprintf(detail, sizeof(detail),
		         "HTTP %ld: the GUID or API key is wrong", r.status);
	else
		snprintf(detail, sizeof(detail),
		         ok ? "GUID and API key accepted" : "HTTP %ld",
		         r.status);
	json_array_append_new(checks, json_pack("{s:s, s:b, s:s}", "check",
	                                        "yotpo.credentials", "ok", ok,
	                                        "detail", detail));
	list = ok ? json_loadb(buf_str(&r.body), r.body.len, 0, NULL) : NULL;
	if (json_is_object(list)) /* tolerate {"campaigns": [...]} */
		json_array_foreach (json_object_get(list, "campaigns"), i, c)
			custom += jsonutil_str(c, "type") &&
			          strstr(jsonutil_str(c, "type"), "Custom");
	json_array_foreach (list, i, c)
		if (jsonutil_str(c, "type") &&
		    strstr(jsonutil_str(c, "type"), "Custom"))
			custom++;
	if (ok)
		json_array_append_new(
		    checks,
		    json_pack("{s:s, s:b, s:s+}", "check",
		              "yotpo.custom_actions", "ok", 1, "detail",
		              custom ? "custom-action campaigns are visible"
		                     : "no custom-action campaign visible",
		              "; the API cannot confirm action names: check "
		              "that each rule is named gocertify-<campaign>"));
	json_decref(list);
	http_resp_fini(&r);
	OPENSSL_cleanse(&s, sizeof(s));
}
