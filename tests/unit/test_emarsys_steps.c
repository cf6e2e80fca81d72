/*
 * The Emarsys destination's steps (clients/emarsys.c) in curl's shape: a
 * canned reply in, the exact request out.  The job gets a fake env (a
 * token and id cache in memory, a clock the test sets), so each step
 * shows what it took from the caches, what it taught them and what it
 * sent.  Failures print file:line, what we had and what we wanted.
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
#include "emarsys.h"
#include "req_is.h"

#define T0       1700000000000LL /* the fake clock */
#define API      "https://api.emarsys.test/api/v3/"
#define TOKEN    "https://auth.emarsys.test/oauth2/token"
#define SCOPE    "acme:cid"
#define MAX_IDS  8
#define OK_REPLY "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{}}"

/* The fake env: the clock, one brand's token and a few ids. */
struct fake {
	int64_t now;
	char token[64]; /* "" when none */
	int64_t token_exp;
	int puts, forgets; /* token_put and token_forget calls */
	struct {
		char kind[8], name[64], id[32];
	} ids[MAX_IDS];
	int nids;
	int id_puts, id_forgets;
	int id_lookups; /* ids_get calls */
};

static struct fake fk;

static int64_t
f_now(void *ctx)
{
	return ((struct fake *)ctx)->now;
}

static enum gc_err
f_token_get(void *ctx, const char *brand, const char *client_id, char *token,
            size_t n, int64_t *expires_ms)
{
	struct fake *f = ctx;

	assert_string_equal(brand, "acme");
	assert_string_equal(client_id, "cid");
	if (f->token[0] == '\0')
		return GC_ENOTFOUND;
	snprintf(token, n, "%s", f->token);
	*expires_ms = f->token_exp;
	return GC_OK;
}

static enum gc_err
f_token_put(void *ctx, const char *brand, const char *client_id,
            const char *token, int64_t expires_ms)
{
	struct fake *f = ctx;

	assert_string_equal(brand, "acme");
	assert_string_equal(client_id, "cid");
	snprintf(f->token, sizeof(f->token), "%s", token);
	f->token_exp = expires_ms;
	f->puts++;
	return GC_OK;
}

static enum gc_err
f_token_forget(void *ctx, const char *brand, const char *client_id,
               const char *token)
{
	struct fake *f = ctx;

	assert_string_equal(brand, "acme");
	assert_string_equal(client_id, "cid");
	f->forgets++;
	if (strcmp(f->token, token) == 0)
		f->token[0] = '\0';
	return GC_OK;
}

static enum gc_err
f_ids_get(void *ctx, const char *scope, struct em_id *ids, size_t n)
{
	struct fake *f = ctx;

	assert_string_equal(scope, SCOPE);
	f->id_lookups++;
	for (size_t k = 0; k < n; k++)
		for (int i = 0; i < f->nids; i++)
			if (strcmp(f->ids[i].kind, ids[k].kind) == 0 &&
			    strcmp(f->ids[i].name, ids[k].name) == 0)
				snprintf(ids[k].out, 32, "%s", f->ids[i].id);
	return GC_OK;
}

static enum gc_err
f_id_put(void *ctx, const char *scope, const char *kind, const char *name,
         const char *id)
{
	struct fake *f = ctx;

	assert_string_equal(scope, SCOPE);
	assert_true(f->nids < MAX_IDS);
	snprintf(f->ids[f->nids].kind, sizeof(f->ids[0].kind), "%s", kind);
	snprintf(f->ids[f->nids].name, sizeof(f->ids[0].name), "%s", name);
	snprintf(f->ids[f->nids].id, sizeof(f->ids[0].id), "%s", id);
	f->nids++;
	f->id_puts++;
	return GC_OK;
}

static enum gc_err
f_id_forget(void *ctx, const char *scope, const char *kind)
{
	struct fake *f = ctx;
	int k = 0;

	assert_string_equal(scope, SCOPE);
	for (int i = 0; i < f->nids; i++)
		if (strcmp(f->ids[i].kind, kind) != 0)
			f->ids[k++] = f->ids[i];
	f->nids = k;
	f->id_forgets++;
	return GC_OK;
}

static const struct dest_env env = {
    .ctx = &fk,
    .now_ms = f_now,
    .mono_ms = f_now, /* one fake clock: stepped by the test */
    .token_get = f_token_get,
    .token_put = f_token_put,
    .token_forget = f_token_forget,
    .ids_get = f_ids_get,
    .id_put = f_id_put,
    .id_forget = f_id_forget,
};

static struct app_config cfg = {
    .emarsys_token_url = TOKEN,
    .emarsys_api_base = API,
};
static struct brand brand = {
    .slug = "acme",
    .has_emarsys = 1,
    .emarsys_enabled = 1,
    .em_client_id = "cid",
    .em_client_secret = "secret",
    .em_key_field = BRAND_KEY_EMAIL,
    .em_field_email = 3,
    .em_field_opt_in = 31,
    .em_field_mobile = 37,
};

/* The fake caches with the token (valid an hour) and the given ids. */
static void
fake_init(const char *const *ids)
{
	memset(&fk, 0, sizeof(fk));
	fk.now = T0;
	snprintf(fk.token, sizeof(fk.token), "TKN-1");
	fk.token_exp = T0 + 3600000;
	for (; ids != NULL && ids[0] != NULL; ids += 3) {
		f_id_put(&fk, SCOPE, ids[0], ids[1], ids[2]);
		fk.id_puts--;
	}
}

/* An event of kind for ann@example.com, email opt-in given. */
static void
event_init(struct gc_event *ev, enum ev_kind kind)
{
	memset(ev, 0, sizeof(*ev));
	ev->kind = kind;
	ev->brand_slug = "acme";
	ev->email = "ann@example.com";
	ev->email_opt_in = EV_OPT_YES;
	ev->sms_opt_in = EV_OPT_UNSET;
	ev->token = "TOK42";
	ev->pending_group_type = "Student";
	ev->occurred_at = 1700000000; /* 2023-11-14T22:13:20Z */
}

/* A started job for ev (payload borrowed): what start() said. */
static enum job_next
job_begin(struct job *j, const struct gc_event *ev, const json_t *payload)
{
	memset(j, 0, sizeof(*j));
	j->ops = &emarsys_ops;
	j->dest = M_DEST_EMARSYS;
	j->cfg = &cfg;
	j->env = &env;
	j->event_id = "evt-1";
	j->ev = ev;
	j->brand = &brand;
	j->payload = payload;
	j->deadline_ms = fk.now + 10000;
	return j->ops->start(j);
}

static void
job_reply(struct job *j, long status, const char *body)
{
	struct http_resp r;

	http_resp_init(&r);
	r.result = HTTP_OK;
	r.status = status;
	assert_int_equal(buf_puts(&r.body, body), GC_OK);
	j->ops->response(j, &r);
	http_resp_fini(&r);
}

static const char *const api_headers[] = {"Content-Type: application/json",
                                          "Accept: application/json",
                                          "Authorization: Bearer TKN-1", NULL};

/* ---- cached token and ids: upsert, trigger, delivered ---- */

struct plan_row {
	int line;
	enum ev_kind kind;
	const char *const *ids; /* cached: kind, name, id triples */
	const char *upsert;     /* the exact upsert body */
	const char *trigger;    /* its URL */
};

static const char *const consent_ids[] = {"event", "gocertify_consent_intent",
                                          "4000001", NULL};
static const char *const claimed_ids[] = {
    "field", "gocertify_student_verified_at", "10001",
    "event", "gocertify_offer_claimed",       "4000002",
    NULL};

/* clang-format off */
static const struct plan_row plan_rows[] = {
	{ __LINE__, EV_CONSENT_INTENT, consent_ids,
	  "{\"key_id\":\"3\",\"contacts\":[{\"3\":\"ann@example.com\","
	  "\"31\":1}]}",
	  API "event/4000001/trigger" },
	{ __LINE__, EV_OFFER_CLAIMED, claimed_ids,
	  "{\"key_id\":\"3\",\"contacts\":[{\"3\":\"ann@example.com\","
	  "\"31\":1,\"10001\":\"2023-11-14\"}]}",
	  API "event/4000002/trigger" },
};
/* clang-format on */

/* The trigger body for ev's kind, with its deterministic trigger_id. */
static void
trigger_body(enum ev_kind kind, char *out, size_t n)
{
	char name[48], tid[48];

	snprintf(name, sizeof(name), "gocertify_%s", ev_kind_names[kind]);
	emarsys_trigger_id("acme", "TOK42", name, tid);
	snprintf(out, n,
	         "{\"key_id\":\"3\",\"external_id\":\"ann@example.com\","
	         "\"trigger_id\":\"%s\",\"data\":{\"token\":\"TOK42\"}}",
	         tid);
}

static void
test_plan_cached(void **state)
{
	json_t *payload = json_pack("{s:s}", "token", "TOK42");
	char want[512];

	(void)state;
	for (size_t i = 0; i < sizeof(plan_rows) / sizeof(plan_rows[0]); i++) {
		const struct plan_row *w = &plan_rows[i];
		struct gc_event ev;
		struct job j;

		fake_init(w->ids);
		event_init(&ev, w->kind);
		assert_int_not_equal(job_begin(&j, &ev, payload), JOB_DONE);
		assert_int_equal(j.ops->next(&j), JOB_REQUEST);
		assert_true(req_is(w->line, &j, "PUT",
		                   API "contact/?create_if_not_exists=1",
		                   api_headers, w->upsert));
		assert_string_equal(j.step, "upsert_contact");
		job_reply(&j, 200,
		          "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":"
		          "{\"ids\":[\"101\"]}}");
		assert_string_equal(j.progress, "upserted");
		assert_int_equal(j.ops->next(&j), JOB_REQUEST);
		trigger_body(w->kind, want, sizeof(want));
		assert_true(
		    req_is(w->line, &j, "POST", w->trigger, api_headers, want));
		assert_string_equal(j.step, "trigger_event");
		job_reply(&j, 200, OK_REPLY);
		assert_int_equal(j.ops->next(&j), JOB_DONE);
		assert_int_equal(j.outcome, DEST_DELIVERED);
		/* Nothing fetched, so nothing taught to the caches. */
		assert_int_equal(
		    fk.puts + fk.forgets + fk.id_puts + fk.id_forgets, 0);
		/* Every id the job needed, in one look-up. */
		assert_int_equal(fk.id_lookups, 1);
		j.ops->finish(&j);
	}
	json_decref(payload);
}

/* A token within a minute of its expiry is not used: a new one is
 * fetched and cached with its lifetime. */
static void
test_token_refresh(void **state)
{
	static const char *const form_headers[] = {
	    "Content-Type: application/x-www-form-urlencoded",
	    "Accept: application/json", NULL};
	json_t *payload = json_pack("{s:s}", "token", "TOK42");
	struct gc_event ev;
	struct job j;

	(void)state;
	fake_init(consent_ids);
	fk.token_exp = T0 + 59000;
	event_init(&ev, EV_CONSENT_INTENT);
	job_begin(&j, &ev, payload);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	assert_true(req_is(__LINE__, &j, "POST", TOKEN, form_headers,
	                   "grant_type=client_credentials"));
	assert_string_equal(j.req.userpwd, "cid:secret");
	job_reply(&j, 200,
	          "{\"access_token\":\"TKN-2\",\"expires_in\":3600,"
	          "\"token_type\":\"bearer\"}");
	assert_string_equal(j.excerpt, ""); /* never the token */
	assert_int_equal(fk.puts, 1);
	assert_string_equal(fk.token, "TKN-2");
	assert_int_equal(fk.token_exp, T0 + 3600000);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	assert_string_equal(j.req.headers[2], "Authorization: Bearer TKN-2");
	j.ops->finish(&j);
	json_decref(payload);
}

/* A 401 forgets the cached token and fetches a new one, once. */
static void test_token_401(void **state);

/* A fresh token refused too is forgotten as well: none stays cached. */
static void
test_token_401_twice(void **state)
{
	json_t *payload = json_pack("{s:s}", "token", "TOK42");
	struct gc_event ev;
	struct job j;

	(void)state;
	fake_init(consent_ids);
	event_init(&ev, EV_CONSENT_INTENT);
	job_begin(&j, &ev, payload);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	job_reply(&j, 401, "{\"error\":\"invalid_token\"}");
	assert_int_equal(fk.forgets, 1);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	assert_string_equal(j.req.url, TOKEN);
	job_reply(&j, 200, "{\"access_token\":\"TKN-2\",\"expires_in\":3600}");
	assert_int_equal(fk.puts, 1);
	assert_string_equal(fk.token, "TKN-2");
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	job_reply(&j, 401, "{\"error\":\"invalid_token\"}");
	assert_int_equal(fk.forgets, 2);
	assert_string_equal(fk.token, "");
	assert_int_equal(j.ops->next(&j), JOB_DONE);
	assert_int_equal(j.outcome, DEST_FAILED);
	j.ops->finish(&j);
	json_decref(payload);
}

static void
test_token_401(void **state)
{
	json_t *payload = json_pack("{s:s}", "token", "TOK42");
	struct gc_event ev;
	struct job j;

	(void)state;
	fake_init(consent_ids);
	event_init(&ev, EV_CONSENT_INTENT);
	job_begin(&j, &ev, payload);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	job_reply(&j, 401, "{\"error\":\"invalid_token\"}");
	assert_int_equal(fk.forgets, 1);
	assert_string_equal(fk.token, "");
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	assert_string_equal(j.req.url, TOKEN);
	j.ops->finish(&j);
	json_decref(payload);
}

/* A token the endpoint returns that does not fit (4095 bytes at most) is
 * never cut and sent: the delivery fails with the reason, nothing is
 * cached.  One that just fits is used whole. */
static void
test_token_too_long(void **state)
{
	json_t *payload = json_pack("{s:s}", "token", "TOK42");
	static const size_t lens[] = {4095, 4096, 6000};
	char *tok = malloc(6001), body[6100];
	struct gc_event ev;
	struct job j;

	(void)state;
	assert_non_null(tok);
	for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		int fits = lens[i] < 4096;
		memset(tok, 'A', lens[i]);
		tok[lens[i]] = '\0';
		snprintf(body, sizeof(body),
		         "{\"access_token\":\"%s\",\"expires_in\":3600}", tok);
		fake_init(consent_ids);
		fk.token[0] = '\0';
		event_init(&ev, EV_CONSENT_INTENT);
		job_begin(&j, &ev, payload);
		assert_int_equal(j.ops->next(&j), JOB_REQUEST);
		assert_string_equal(j.req.url, TOKEN);
		job_reply(&j, 200, body);
		assert_int_equal(fk.puts, fits);
		if (fits) {
			assert_int_equal(j.ops->next(&j), JOB_REQUEST);
			assert_int_equal(strlen(j.req.headers[2]),
			                 strlen("Authorization: Bearer ") +
			                     lens[i]);
		} else {
			assert_int_equal(j.ops->next(&j), JOB_DONE);
			assert_int_equal(j.outcome, DEST_FAILED);
			snprintf(body, sizeof(body), "a token of %zu bytes",
			         lens[i]);
			assert_non_null(strstr(j.reason, body));
		}
		j.ops->finish(&j);
	}
	free(tok);
	json_decref(payload);
}

/* 2006 on the upsert: the cached field ids are forgotten and listed
 * again; 5001 on the trigger: the event id likewise. */
static void
test_stale_ids(void **state)
{
	json_t *payload = json_pack("{s:s}", "token", "TOK42");
	struct gc_event ev;
	struct job j;

	(void)state;
	fake_init(claimed_ids);
	event_init(&ev, EV_OFFER_CLAIMED);
	job_begin(&j, &ev, payload);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	job_reply(&j, 400,
	          "{\"replyCode\":2006,\"replyText\":\"Invalid field\"}");
	assert_int_equal(fk.id_forgets, 1);
	assert_int_equal(fk.nids, 1); /* the event id stays */
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	assert_true(req_is(__LINE__, &j, "GET", API "field/translate/en",
	                   api_headers, NULL));
	job_reply(&j, 200,
	          "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":[{\"id\":"
	          "10007,\"name\":\"gocertify_student_verified_at\"}]}");
	assert_int_equal(fk.id_puts, 1);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	assert_string_equal(j.req.url, API "contact/?create_if_not_exists=1");
	assert_non_null(strstr(j.req.body, "\"10007\":\"2023-11-14\""));
	job_reply(&j, 200, OK_REPLY);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	job_reply(&j, 400,
	          "{\"replyCode\":5001,\"replyText\":\"No such event\"}");
	assert_int_equal(fk.id_forgets, 2);
	assert_int_equal(j.ops->next(&j), JOB_REQUEST);
	assert_true(
	    req_is(__LINE__, &j, "GET", API "event", api_headers, NULL));
	j.ops->finish(&j);
	json_decref(payload);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plan_cached),
	    cmocka_unit_test(test_token_refresh),
	    cmocka_unit_test(test_token_401),
	    cmocka_unit_test(test_token_401_twice),
	    cmocka_unit_test(test_stale_ids),
	    cmocka_unit_test(test_token_too_long),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
