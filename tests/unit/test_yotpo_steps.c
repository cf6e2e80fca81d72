/*
 * The Yotpo destination's steps (clients/yotpo.c) in curl's shape: a
 * canned reply in, the exact request out.  The job gets a fake env (an
 * in-memory award ledger for one key, a throttle that always has a slot,
 * a clock the test sets), so each step shows what it asked of the ledger
 * and what it sent.  Rows print file:line, what we had and what we
 * wanted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "dest.h"
#include "req_is.h"

#define T0     1700000000000LL /* the fake clock at the start */
#define BASE   "https://loyalty.yotpo.test/api/v2"
#define EMAIL  "ann+x@example.com"
#define AFTER  60000LL  /* yotpo.reconcile_after_s, in ms */
#define WINDOW 600000LL /* yotpo.reconcile_window_s, in ms */
#define READS  3
#define AWARD_BODY                                                             \
	"{\"type\":\"CustomAction\",\"customer_email\":\"ann+x@example.com\"," \
	"\"action_name\":\"gocertify-students\",\"created_at\":"               \
	"\"2023-11-14T22:13:20Z\",\"history_title\":\"20% off for students "   \
	"(ref TOK42)\"}"
#define CUSTOMER_URL                                                           \
	BASE "/customers?customer_email=ann%2Bx%40example.com&with_history="   \
	     "true"

/* The fake env: the clock and the ledger row of the one award key. */
struct fake {
	int64_t now;
	char state[16]; /* "" (absent), "sending", "unknown", "done" */
	char owner[40]; /* who holds the lease, "" when nobody */
	char event_id[64];
	char email[128];
	int64_t sent_at;
	int misses;
	int slots;          /* throttle slots taken */
	int64_t slot_delay; /* how far off each slot is */
	int steal;          /* the slot's wait loses the claim to "L2" */
	int sendings;       /* "sending" marks after the claim's own */
};

static int64_t
f_now(void *ctx)
{
	return ((struct fake *)ctx)->now;
}

static enum gc_err
f_claim(void *ctx, const char *brand, const char *token, const char *action,
        const char *event_id, const char *email, int64_t now_ms,
        const struct lease *l, enum ledger_claim *res, struct ledger_view *v)
{
	struct fake *f = ctx;

	(void)brand, (void)token, (void)action, (void)now_ms;
	memset(v, 0, sizeof(*v));
	if (strcmp(f->state, "done") == 0) {
		*res = LEDGER_DONE;
		snprintf(v->event_id, sizeof(v->event_id), "%s", f->event_id);
		return GC_OK;
	}
	if (f->owner[0] != '\0') {
		*res = LEDGER_BUSY;
		return GC_OK;
	}
	snprintf(f->owner, sizeof(f->owner), "%s", l->owner);
	if (f->state[0] == '\0') {
		/* As the store: a new key is inserted "sending", leased. */
		*res = LEDGER_CLAIMED;
		snprintf(f->state, sizeof(f->state), "sending");
		snprintf(f->event_id, sizeof(f->event_id), "%s", event_id);
		snprintf(f->email, sizeof(f->email), "%s", email);
	} else
		*res = LEDGER_RECONCILE;
	snprintf(v->event_id, sizeof(v->event_id), "%s", f->event_id);
	snprintf(v->email, sizeof(v->email), "%s", f->email);
	v->sent_at = f->sent_at;
	v->misses = f->misses;
	return GC_OK;
}

static enum gc_err
f_set(void *ctx, const char *brand, const char *token, const char *action,
      const char *owner, const char *state, int64_t sent_at_ms)
{
	struct fake *f = ctx;

	(void)brand, (void)token, (void)action;
	if (strcmp(f->owner, owner) != 0)
		return GC_EEXISTS;
	snprintf(f->state, sizeof(f->state), "%s", state);
	f->sent_at = sent_at_ms;
	f->owner[0] = '\0';
	return GC_OK;
}

static enum gc_err
f_sending(void *ctx, const char *brand, const char *token, const char *action,
          const char *owner, const char *event_id, const char *email,
          int64_t now_ms)
{
	struct fake *f = ctx;

	(void)brand, (void)token, (void)action;
	if (strcmp(f->owner, owner) != 0)
		return GC_EEXISTS;
	snprintf(f->state, sizeof(f->state), "sending");
	snprintf(f->event_id, sizeof(f->event_id), "%s", event_id);
	snprintf(f->email, sizeof(f->email), "%s", email);
	f->sent_at = now_ms;
	f->misses = 0;
	f->sendings++;
	return GC_OK;
}

static enum gc_err
f_miss(void *ctx, const char *brand, const char *token, const char *action,
       const char *owner, int64_t now_ms, int *misses)
{
	struct fake *f = ctx;

	(void)brand, (void)token, (void)action, (void)now_ms;
	if (strcmp(f->owner, owner) != 0)
		return GC_EEXISTS;
	*misses = ++f->misses;
	return GC_OK;
}

static enum gc_err
f_release(void *ctx, const char *brand, const char *token, const char *action,
          const char *owner)
{
	struct fake *f = ctx;

	(void)brand, (void)token, (void)action;
	if (strcmp(f->owner, owner) != 0)
		return GC_EEXISTS;
	f->state[0] = f->owner[0] = '\0';
	return GC_OK;
}

static enum gc_err
f_slot(void *ctx, const char *brand, int max_rps, int64_t now_ms,
       int64_t horizon_ms, int64_t *slot_ms, int *reserved)
{
	struct fake *f = ctx;

	(void)brand, (void)max_rps, (void)horizon_ms;
	f->slots++;
	*slot_ms = now_ms + f->slot_delay;
	*reserved = 1;
	if (f->steal)
		snprintf(f->owner, sizeof(f->owner), "L2");
	return GC_OK;
}

static struct fake fk;
static const struct dest_env env = {
    .ctx = &fk,
    .now_ms = f_now,
    .mono_ms = f_now, /* one fake clock: stepped by the test */
    .ledger_claim = f_claim,
    .ledger_set = f_set,
    .ledger_sending = f_sending,
    .ledger_miss = f_miss,
    .ledger_release = f_release,
    .throttle_slot = f_slot,
};

/* The env of a store that claims and takes the slot in one call. */
static int paced; /* such calls */

static enum gc_err
f_claim_paced(void *ctx, const char *brand, const char *token,
              const char *action, const char *event_id, const char *email,
              int64_t now_ms, const struct lease *l, enum ledger_claim *res,
              struct ledger_view *v, int max_rps, int64_t horizon_ms,
              int64_t *slot_ms, int *reserved)
{
	enum gc_err err = f_claim(ctx, brand, token, action, event_id, email,
	                          now_ms, l, res, v);

	paced++;
	if (err != GC_OK)
		return err;
	return f_slot(ctx, brand, max_rps, now_ms, horizon_ms, slot_ms,
	              reserved);
}

static struct dest_env env_paced;
static const struct dest_env *job_env = &env;

static struct app_config cfg = {
    .yotpo_api_base = BASE,
    .yotpo_default_max_rps = 5,
    .yotpo_reconcile_after_s = AFTER / 1000,
    .yotpo_reconcile_reads = READS,
    .yotpo_reconcile_window_s = WINDOW / 1000,
};
static struct brand brand = {
    .slug = "acme",
    .has_yotpo = 1,
    .yotpo_enabled = 1,
    .yo_guid = "GUID-1",
    .yo_api_key = "KEY-1",
};
static struct gc_event ev = {
    .kind = EV_OFFER_CLAIMED,
    .email = EMAIL,
    .token = "TOK42",
    .campaign_slug = "students",
    .campaign_title = "20% off for students",
    .occurred_at = 1700000000,
};

/* A job for event_id under lease owner, started and driven to its first
 * request or its end (what next() said last). */
static enum job_next
job_begin(struct job *j, struct lease *l, const char *event_id,
          const char *owner)
{
	enum job_next n;

	memset(j, 0, sizeof(*j));
	memset(l, 0, sizeof(*l));
	snprintf(l->owner, sizeof(l->owner), "%s", owner);
	l->until_ms = fk.now + 60000;
	j->ops = &yotpo_ops;
	j->dest = M_DEST_YOTPO;
	j->cfg = &cfg;
	j->env = job_env;
	j->event_id = event_id;
	j->ev = &ev;
	j->brand = &brand;
	j->deadline_ms = fk.now + 10000;
	j->lease = l;
	if ((n = j->ops->start(j)) == JOB_DONE)
		return n;
	/* A wait moves the fake clock; "at once" is a wait of 0. */
	for (int i = 0; i < 10; i++) {
		if (j->wait_until_ms > fk.now)
			fk.now = j->wait_until_ms;
		j->wait_until_ms = 0;
		if ((n = j->ops->next(j)) != JOB_WAIT)
			return n;
	}
	fail_msg("job never stopped waiting");
	return JOB_DONE;
}

/* The canned reply: result, status, header lines, body. */
static void
job_reply(struct job *j, enum http_result res, long status, const char *headers,
          const char *body)
{
	struct http_resp r;

	http_resp_init(&r);
	r.result = res;
	r.status = status;
	if (res != HTTP_OK)
		snprintf(r.error, sizeof(r.error), "canned transport error");
	assert_int_equal(buf_puts(&r.headers, headers), GC_OK);
	assert_int_equal(buf_puts(&r.body, body), GC_OK);
	j->ops->response(j, &r);
	http_resp_fini(&r);
}

static const char *const post_headers[] = {
    "Accept: application/json", "x-guid: GUID-1", "x-api-key: KEY-1",
    "Content-Type: application/json", NULL};
static const char *const get_headers[] = {
    "Accept: application/json", "x-guid: GUID-1", "x-api-key: KEY-1", NULL};

/* ---- from the start: claim, POST /actions, the reply ---- */

struct award_row {
	int line;
	enum http_result result;
	long status;
	const char *headers;
	enum dest_outcome outcome;
	const char *state; /* the ledger afterwards */
	int64_t retry_at;  /* from T0; -1: not set */
	int64_t hold;      /* hold_until_ms from T0; 0: none */
};

/* clang-format off */
static const struct award_row award_rows[] = {
	{ __LINE__, HTTP_OK, 200, "", DEST_DELIVERED, "done", -1, 0 },
	{ __LINE__, HTTP_OK, 201, "", DEST_DELIVERED, "done", -1, 0 },
	/* Maybe applied: unknown, checked after reconcile_after_s */
	{ __LINE__, HTTP_OK, 500, "", DEST_RETRY, "unknown", AFTER, 0 },
	{ __LINE__, HTTP_OK, 503, "", DEST_RETRY, "unknown", AFTER, 0 },
	{ __LINE__, HTTP_MAYBE_SENT, 0, "", DEST_RETRY, "unknown", AFTER, 0 },
	/* Not applied: the key goes back */
	{ __LINE__, HTTP_NOT_SENT, 0, "", DEST_RETRY, "", -1, 0 },
	{ __LINE__, HTTP_OK, 400, "", DEST_FAILED, "", -1, 0 },
	{ __LINE__, HTTP_OK, 422, "", DEST_FAILED, "", -1, 0 },
	{ __LINE__, HTTP_OK, 429, "Retry-After: 30\r\n", DEST_RETRY, "",
	  30000, 30000 },
	/* 423: waited 1 s in place, then the key goes back */
	{ __LINE__, HTTP_OK, 423, "", DEST_RETRY, "", 2000, 0 },
};
/* clang-format on */

static void
test_award(void **state)
{
	size_t i, nfail = 0;

	(void)state;
	for (i = 0; i < sizeof(award_rows) / sizeof(award_rows[0]); i++) {
		const struct award_row *w = &award_rows[i];
		struct job j;
		struct lease l;
		int ok;

		memset(&fk, 0, sizeof(fk));
		fk.now = T0;
		assert_int_equal(job_begin(&j, &l, "evt-1", "L1"), JOB_REQUEST);
		ok = req_is(w->line, &j, "POST", BASE "/actions", post_headers,
		            AWARD_BODY) &&
		     strcmp(j.step, "award") == 0 &&
		     /* claimed just now: the claim's own mark, no other */
		     strcmp(fk.state, "sending") == 0 && fk.sendings == 0 &&
		     fk.slots == 1;
		job_reply(&j, w->result, w->status, w->headers, "{}");
		/* A 423 within the budget waits in place: give up after. */
		if (w->status == 423 && j.wait_until_ms != 0) {
			ok = ok && j.wait_until_ms == T0 + 1000;
			j.deadline_ms = T0; /* nothing left to wait with */
			fk.now = j.wait_until_ms;
			j.wait_until_ms = 0;
			ok = ok && j.ops->next(&j) == JOB_REQUEST;
			job_reply(&j, HTTP_OK, 423, "", "{}");
		}
		ok =
		    ok && j.ops->next(&j) == JOB_DONE &&
		    j.outcome == w->outcome &&
		    strcmp(fk.state, w->state) == 0 &&
		    j.retry_at_ms == (w->retry_at < 0 ? 0 : T0 + w->retry_at) &&
		    j.hold_until_ms == (w->hold ? T0 + w->hold : 0) &&
		    fk.owner[0] == '\0';
		if (!ok) {
			print_error("%s:%d: HTTP %ld: have %s, ledger \"%s\", "
			            "retry_at %+lld, hold %lld (%s)\n",
			            __FILE__, w->line, w->status,
			            dest_outcome_names[j.outcome], fk.state,
			            (long long)(j.retry_at_ms - T0),
			            (long long)j.hold_until_ms, j.reason);
			nfail++;
		}
		j.ops->finish(&j);
	}
	if (nfail > 0)
		fail_msg("%zu of %zu rows failed", nfail, i);
}

/*
 * A wait for the throttle slot between the claim and the call: the
 * claim is checked and marked again first, and one lost meanwhile sends
 * nothing.
 */
static void
test_award_after_wait(void **state)
{
	struct job j;
	struct lease l;

	(void)state;
	memset(&fk, 0, sizeof(fk));
	fk.now = T0;
	fk.slot_delay = 500;
	assert_int_equal(job_begin(&j, &l, "evt-1", "L1"), JOB_REQUEST);
	assert_true(req_is(__LINE__, &j, "POST", BASE "/actions", post_headers,
	                   AWARD_BODY));
	assert_int_equal(fk.sendings, 1);
	assert_int_equal(fk.sent_at, T0 + 500);
	job_reply(&j, HTTP_OK, 200, "", "{}");
	assert_int_equal(j.ops->next(&j), JOB_DONE);
	assert_int_equal(j.outcome, DEST_DELIVERED);
	assert_string_equal(fk.state, "done");
	j.ops->finish(&j);

	memset(&fk, 0, sizeof(fk));
	fk.now = T0;
	fk.slot_delay = 500;
	fk.steal = 1;
	assert_int_equal(job_begin(&j, &l, "evt-1", "L1"), JOB_DONE);
	assert_int_equal(j.outcome, DEST_RETRY);
	assert_non_null(strstr(j.reason, "lost the award claim"));
	assert_int_equal(fk.sendings, 0);
	assert_string_equal(fk.owner, "L2");
	j.ops->finish(&j);
}

/*
 * Where the env claims and takes the slot at once, the award uses that
 * slot: no other is taken; a slot to wait for still marks the call's
 * start again before it.
 */
static void
test_award_paced_claim(void **state)
{
	static const int64_t delays[] = {0, 500};
	struct job j;
	struct lease l;

	(void)state;
	env_paced = env;
	env_paced.ledger_claim_paced = f_claim_paced;
	job_env = &env_paced;
	for (size_t i = 0; i < 2; i++) {
		memset(&fk, 0, sizeof(fk));
		fk.now = T0;
		fk.slot_delay = delays[i];
		paced = 0;
		assert_int_equal(job_begin(&j, &l, "evt-1", "L1"), JOB_REQUEST);
		assert_true(req_is(__LINE__, &j, "POST", BASE "/actions",
		                   post_headers, AWARD_BODY));
		assert_int_equal(paced, 1);
		assert_int_equal(fk.slots, 1);
		assert_int_equal(fk.sendings, delays[i] > 0);
		assert_int_equal(fk.now, T0 + delays[i]);
		job_reply(&j, HTTP_OK, 200, "", "{}");
		assert_int_equal(j.ops->next(&j), JOB_DONE);
		assert_int_equal(j.outcome, DEST_DELIVERED);
		assert_string_equal(fk.state, "done");
		j.ops->finish(&j);
	}
	job_env = &env;
}

/* A key already awarded: nothing is sent. */
static void
test_award_done_before(void **state)
{
	struct job j;
	struct lease l;

	(void)state;
	memset(&fk, 0, sizeof(fk));
	fk.now = T0;
	snprintf(fk.state, sizeof(fk.state), "done");
	snprintf(fk.event_id, sizeof(fk.event_id), "evt-0");
	assert_int_equal(job_begin(&j, &l, "evt-1", "L1"), JOB_DONE);
	assert_int_equal(j.outcome, DEST_SKIPPED);
	assert_non_null(strstr(j.reason, "already awarded"));
	assert_int_equal(fk.slots, 0);
	j.ops->finish(&j);
}

/* ---- reconcile: GET /customers, then the miss, or the award found ---- */

/* The ledger after an uncertain call at T0 by evt-1. */
static void
fake_unknown(int misses)
{
	memset(&fk, 0, sizeof(fk));
	snprintf(fk.state, sizeof(fk.state), "unknown");
	snprintf(fk.event_id, sizeof(fk.event_id), "evt-1");
	snprintf(fk.email, sizeof(fk.email), EMAIL);
	fk.sent_at = T0;
	fk.misses = misses;
}

/* The next history read after misses reads found nothing. */
static int64_t
read_due(int misses)
{
	return T0 + AFTER + (WINDOW - AFTER) * misses / (READS - 1);
}

static void
test_reconcile_miss(void **state)
{
	struct job j;
	struct lease l;

	(void)state;
	fake_unknown(0);
	fk.now = read_due(0);
	assert_int_equal(job_begin(&j, &l, "evt-1", "L2"), JOB_REQUEST);
	assert_true(
	    req_is(__LINE__, &j, "GET", CUSTOMER_URL, get_headers, NULL));
	assert_string_equal(j.step, "reconcile");
	job_reply(&j, HTTP_OK, 404, "", "{\"error\":\"not found\"}");
	assert_int_equal(j.ops->next(&j), JOB_DONE);
	/* Counted, still unknown, and back at the next read. */
	assert_int_equal(fk.misses, 1);
	assert_string_equal(fk.state, "unknown");
	assert_int_equal(fk.sent_at, T0);
	assert_int_equal(j.outcome, DEST_RETRY);
	assert_int_equal(j.deferred, 1);
	assert_int_equal(j.retry_at_ms, read_due(1));
	j.ops->finish(&j);
}

/* Before the first read is due the job waits, or hands the key back. */
static void
test_reconcile_not_due(void **state)
{
	struct job j;
	struct lease l;

	(void)state;
	fake_unknown(1);
	fk.now = read_due(1) - 60000; /* beyond the 10 s budget */
	assert_int_equal(job_begin(&j, &l, "evt-1", "L2"), JOB_DONE);
	assert_int_equal(j.outcome, DEST_RETRY);
	assert_int_equal(j.retry_at_ms, read_due(1));
	assert_string_equal(fk.state, "unknown");
	assert_int_equal(fk.misses, 1);
	assert_int_equal(fk.slots, 0);
	j.ops->finish(&j);
}

/* Three reads spread over the window all miss: the award goes again. */
static void
test_reconcile_three_misses(void **state)
{
	static const char *const owners[READS] = {"L2", "L3", "L4"};
	struct job j;
	struct lease l;

	(void)state;
	fake_unknown(0);
	for (int k = 0; k < READS; k++) {
		fk.now = read_due(k);
		assert_int_equal(job_begin(&j, &l, "evt-1", owners[k]),
		                 JOB_REQUEST);
		assert_true(req_is(__LINE__, &j, "GET", CUSTOMER_URL,
		                   get_headers, NULL));
		job_reply(&j, HTTP_OK, 200, "",
		          "{\"email\":\"ann+x@example.com\",\"history_items\":"
		          "[{\"action\":\"Signed up\",\"points\":50}]}");
		assert_int_equal(fk.misses, k + 1);
		if (k < READS - 1) {
			assert_int_equal(j.ops->next(&j), JOB_DONE);
			assert_int_equal(j.deferred, 1);
			assert_int_equal(j.retry_at_ms, read_due(k + 1));
			j.ops->finish(&j);
		}
	}
	/* Confirmed absent at T0 + window: the same POST again, now. */
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	assert_true(req_is(__LINE__, &j, "POST", BASE "/actions", post_headers,
	                   AWARD_BODY));
	assert_string_equal(fk.state, "sending");
	assert_int_equal(fk.sent_at, T0 + WINDOW);
	assert_int_equal(fk.misses, 0);
	job_reply(&j, HTTP_OK, 200, "", "{}");
	assert_int_equal(j.ops->next(&j), JOB_DONE);
	assert_int_equal(j.outcome, DEST_DELIVERED);
	assert_string_equal(fk.state, "done");
	j.ops->finish(&j);
}

/* The uncertain award is in the history: done, nothing sent again. */
static void
test_reconcile_found(void **state)
{
	static const char *const events[] = {"evt-1", "evt-2"};
	struct job j;
	struct lease l;

	(void)state;
	for (int k = 0; k < 2; k++) {
		fake_unknown(0);
		fk.now = read_due(0);
		assert_int_equal(job_begin(&j, &l, events[k], "L2"),
		                 JOB_REQUEST);
		job_reply(&j, HTTP_OK, 200, "",
		          "{\"history_items\":[{\"action\":\"20% off for "
		          "students (ref TOK42)\",\"points\":100}]}");
		assert_int_equal(j.ops->next(&j), JOB_DONE);
		/* Ours with a warning; another event's call: skipped. */
		assert_int_equal(j.outcome,
		                 k == 0 ? DEST_WARNING : DEST_SKIPPED);
		assert_string_equal(fk.state, "done");
		assert_int_equal(fk.misses, 0);
		j.ops->finish(&j);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_award),
	    cmocka_unit_test(test_award_after_wait),
	    cmocka_unit_test(test_award_paced_claim),
	    cmocka_unit_test(test_award_done_before),
	    cmocka_unit_test(test_reconcile_miss),
	    cmocka_unit_test(test_reconcile_not_due),
	    cmocka_unit_test(test_reconcile_three_misses),
	    cmocka_unit_test(test_reconcile_found),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
