/*
 * Emarsys batches (clients/emarsys_batch.c): what one job adds to a
 * batch (em_batch_item), the merged request (em_batch_request) and how
 * the merged reply is split back into the reply each job would have had
 * alone (em_batch_split), as tables of canned replies in, per-job
 * replies out.  Shapes from reference/emarsys-api.md 3.2 and 3.4.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../clients/emarsys_priv.h"
#include "emarsys.h"
#include "jsonutil.h"

#define NROWS(a)    (sizeof(a) / sizeof((a)[0]))
#define MAXJOBS     4
#define API         "https://api.example/api/v3/"
#define UPSERT_URL  API "contact/?create_if_not_exists=1"
#define TRIGGER_URL API "event/4000001/trigger"

static char client_id[] = "demo_client";
static struct brand the_brand = {.em_client_id = client_id};

/* A job at the upsert or trigger step for key_value, its single body. */
static void
job_init(struct job *j, struct em_state *s, enum em_req kind,
         const char *key_value, const char *body)
{
	memset(j, 0, sizeof(*j));
	memset(s, 0, sizeof(*s));
	buf_init(&s->body, 0);
	j->state = s;
	j->brand = &the_brand;
	snprintf(s->key_id, sizeof(s->key_id), "3");
	s->key_value = key_value;
	s->inflight = kind;
	if (body != NULL) {
		assert_int_equal(buf_puts(&s->body, body), GC_OK);
		s->sent = json_loads(body, 0, NULL); /* as em_body keeps it */
	}
	j->req.method = kind == EM_UPSERT ? "PUT" : "POST";
	snprintf(j->req.url, sizeof(j->req.url), "%s",
	         kind == EM_UPSERT ? UPSERT_URL : TRIGGER_URL);
	http_req_header(&j->req, "Content-Type: application/json");
	j->req.body = s->body.ptr;
	j->req.bodylen = s->body.len;
	j->req.timeout_ms = 1234;
}

static void
job_fini(struct job *j)
{
	struct em_state *s = j->state;

	buf_free(&s->body);
	json_decref(s->sent);
}

/* Whether text is JSON equal to want (also JSON); prints both if not. */
static int
json_same(int line, const char *what, const char *text, const char *want)
{
	json_t *a = json_loads(text, JSON_DECODE_ANY, NULL);
	json_t *b = json_loads(want, JSON_DECODE_ANY, NULL);
	int same = a != NULL && b != NULL && json_equal(a, b);

	assert_non_null(b); /* the table itself is valid JSON */
	if (!same)
		print_error("%s:%d: %s: have %s, want %s\n", __FILE__, line,
		            what, text, want);
	json_decref(a);
	json_decref(b);
	return same;
}

/* ---- em_batch_item ---- */

struct item_row {
	int line;
	enum em_req kind;
	const char *key_value, *body;
	int want;
	const char *key, *item; /* item: compact JSON, in order */
	size_t limit;
};

static const struct item_row item_rows[] = {
    /* The upsert's one contact is the item. */
    {__LINE__, EM_UPSERT, "a@x.com",
     "{\"key_id\":\"3\",\"contacts\":[{\"3\":\"a@x.com\",\"31\":1,\"10001\":"
     "\"2025-01-31\"}]}",
     1, "emarsys:demo_client PUT " UPSERT_URL " key 3",
     "{\"3\":\"a@x.com\",\"31\":1,\"10001\":\"2025-01-31\"}", 8000000},
    /* The trigger's body without key_id is the item (3.4: the batch
     * item has external_id, trigger_id and data of its own). */
    {__LINE__, EM_TRIGGER, "a@x.com",
     "{\"key_id\":\"3\",\"external_id\":\"a@x.com\",\"trigger_id\":"
     "\"gcrelay-1\",\"data\":{\"token\":\"T1\",\"n\":[1,2]}}",
     1, "emarsys:demo_client POST " TRIGGER_URL " key 3",
     "{\"external_id\":\"a@x.com\",\"trigger_id\":\"gcrelay-1\",\"data\":{"
     "\"token\":\"T1\",\"n\":[1,2]}}",
     1000000},
    /* Other steps go alone. */
    {__LINE__, EM_TOKEN, "a@x.com", "grant_type=client_credentials", 0, NULL,
     NULL, 0},
    {__LINE__, EM_LIST_FIELDS, "a@x.com", NULL, 0, NULL, NULL, 0},
    {__LINE__, EM_CREATE_EVENT, "a@x.com", "{\"name\":\"x\"}", 0, NULL, NULL,
     0},
    /* An upsert body without a contact has nothing to merge. */
    {__LINE__, EM_UPSERT, "a@x.com", "{\"key_id\":\"3\",\"contacts\":[]}", 0,
     NULL, NULL, 0},
};

static void
test_batch_item(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < NROWS(item_rows); i++) {
		const struct item_row *w = &item_rows[i];
		struct job j;
		struct em_state s;
		char key[256] = "untouched";
		const char *member = NULL;
		json_t *item = (json_t *)&item; /* must be set to NULL or it */
		size_t limit = 0;
		char *text = NULL;
		int have;

		job_init(&j, &s, w->kind, w->key_value, w->body);
		have =
		    em_batch_item(&j, key, sizeof(key), &member, &item, &limit);
		if (have)
			text = jsonutil_compact(item);
		if (have != w->want ||
		    (have &&
		     (strcmp(key, w->key) != 0 || member == NULL ||
		      strcmp(member, w->key_value) != 0 || text == NULL ||
		      strcmp(text, w->item) != 0 || limit != w->limit)) ||
		    (!have && item != NULL)) {
			print_error("%s:%d: have %d key \"%s\" member %s item "
			            "%s limit %zu; want %d key \"%s\" item %s "
			            "limit %zu\n",
			            __FILE__, w->line, have, key,
			            member ? member : "(null)",
			            text ? text : "(null)", limit, w->want,
			            w->key ? w->key : "",
			            w->item ? w->item : "", w->limit);
			failed++;
		}
		free(text);
		if (have)
			json_decref(item);
		job_fini(&j);
	}
	assert_int_equal(failed, 0);
}

/* ---- em_batch_request ---- */

static void
test_batch_request(void **state)
{
	struct job j;
	struct em_state s;
	struct http_req req;
	struct buf body;
	json_t *items = json_array();

	(void)state;
	job_init(&j, &s, EM_TRIGGER, "a@x.com", "{}");
	json_array_append_new(
	    items, json_loads("{\"external_id\":\"a@x.com\",\"trigger_id\":"
	                      "\"t1\",\"data\":{\"k\":1}}",
	                      0, NULL));
	json_array_append_new(
	    items, json_loads("{\"external_id\":\"b@x.com\",\"trigger_id\":"
	                      "\"t2\",\"data\":{}}",
	                      0, NULL));
	buf_init(&body, 0);
	assert_int_equal(buf_puts(&body, "stale"), GC_OK);
	memset(&req, 0x5a, sizeof(req));
	assert_int_equal(em_batch_request(&j, items, &body, &req), GC_OK);
	/* Exactly the documented batch form, compact, items in order. */
	assert_string_equal(
	    buf_str(&body),
	    "{\"key_id\":\"3\",\"contacts\":[{\"external_id\":\"a@x.com\","
	    "\"trigger_id\":\"t1\",\"data\":{\"k\":1}},{\"external_id\":"
	    "\"b@x.com\",\"trigger_id\":\"t2\",\"data\":{}}]}");
	assert_string_equal(req.method, "POST");
	assert_string_equal(req.url, TRIGGER_URL);
	assert_int_equal(req.nheaders, 1);
	assert_string_equal(req.headers[0], "Content-Type: application/json");
	assert_ptr_equal(req.body, body.ptr);
	assert_int_equal(req.bodylen, body.len);
	assert_int_equal(req.timeout_ms, 0);
	/* items is borrowed, not stolen. */
	assert_int_equal(json_array_size(items), 2);
	json_decref(items);
	buf_free(&body);
	job_fini(&j);

	/* The upsert: the same shape with the contacts. */
	job_init(&j, &s, EM_UPSERT, "a@x.com", "{}");
	items = json_loads("[{\"3\":\"a@x.com\",\"31\":1},{\"3\":\"b@x.com\"}]",
	                   0, NULL);
	buf_init(&body, 0);
	assert_int_equal(em_batch_request(&j, items, &body, &req), GC_OK);
	assert_string_equal(
	    buf_str(&body),
	    "{\"key_id\":\"3\",\"contacts\":[{\"3\":\"a@x.com\","
	    "\"31\":1},{\"3\":\"b@x.com\"}]}");
	assert_string_equal(req.method, "PUT");
	assert_string_equal(req.url, UPSERT_URL);
	json_decref(items);
	buf_free(&body);
	job_fini(&j);
}

/* ---- em_batch_split ---- */

struct split_row {
	int line;
	enum em_req kind;
	const char *keys[MAXJOBS]; /* each job's key value; NULL ends */
	enum http_result result;
	long status;
	const char *headers, *body;
	int want;                       /* em_batch_split's return */
	long want_status[MAXJOBS];      /* each job's reply */
	const char *want_body[MAXJOBS]; /* JSON; NULL: the batch body as is */
};

#define OK_EMPTY                                                               \
	"{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[],"          \
	"\"errors\":{}}}"
#define RATE_HDRS                                                              \
	"HTTP/1.1 429 Too Many Requests\r\nX-RateLimit-Limit: 1000\r\n"        \
	"X-Ratelimit-Remaining: 0\r\nX-RateLimit-Reset: 1900000000\r\n\r\n"

static const struct split_row split_rows[] = {
    /* Upsert, one contact rejected, keyed by its key value (3.2). */
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com", "c@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\",\"3\"],"
     "\"errors\":{\"b@x.com\":{\"2007\":\"Invalid value\"}}}}",
     1,
     {200, 200, 200},
     {OK_EMPTY,
      "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[],"
      "\"errors\":{\"b@x.com\":{\"2007\":\"Invalid value\"}}}}",
      OK_EMPTY}},
    /* Keyed by position (no key value in the entry): "1" is job 1's. */
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com", "c@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\",\"3\"],"
     "\"errors\":{\"1\":{\"2005\":\"No value provided for key field: 3\"}}}}",
     1,
     {200, 200, 200},
     {OK_EMPTY,
      "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[],"
      "\"errors\":{\"b@x.com\":{\"2005\":\"No value provided for key field: "
      "3\"}}}}",
      OK_EMPTY}},
    /* Two rejected, one by key value, one by position. */
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com", "c@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"2\"],"
     "\"errors\":{\"a@x.com\":{\"2010\":\"dup\"},\"2\":{\"2006\":\"bad\"}}}}",
     1,
     {200, 200, 200},
     {"{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[],"
      "\"errors\":{\"a@x.com\":{\"2010\":\"dup\"}}}}",
      OK_EMPTY,
      "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[],"
      "\"errors\":{\"c@x.com\":{\"2006\":\"bad\"}}}}"}},
    /* errors as [] (PHP's empty array) or absent: all succeeded. */
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[1,2],"
     "\"errors\":[]}}",
     1,
     {200, 200},
     {OK_EMPTY, OK_EMPTY}},
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":\"0\",\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\","
     "\"2\"]}}",
     1,
     {200, 200},
     {OK_EMPTY, OK_EMPTY}},
    /* Trigger, one contact failing: its error is the reply a single
     * trigger would have had (HTTP 400, replyCode = the code). */
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com", "c@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\",\"3\"],"
     "\"errors\":{\"b@x.com\":{\"2008\":\"No contact found with the "
     "external id: 3 - b@x.com\"}}}}",
     1,
     {200, 400, 200},
     {"{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\","
      "\"3\"],\"errors\":{\"b@x.com\":{\"2008\":\"No contact found with the "
      "external id: 3 - b@x.com\"}}}}",
      "{\"replyCode\":2008,\"replyText\":\"No contact found with the "
      "external id: 3 - b@x.com\",\"data\":\"\"}",
      "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\","
      "\"3\"],\"errors\":{\"b@x.com\":{\"2008\":\"No contact found with the "
      "external id: 3 - b@x.com\"}}}}"}},
    /* A trigger error keyed by position; an odd entry still fails it. */
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[],"
     "\"errors\":{\"0\":{\"5011\":\"Event data is not an object\"},"
     "\"b@x.com\":\"oops\"}}}",
     1,
     {400, 400},
     {"{\"replyCode\":5011,\"replyText\":\"Event data is not an object\","
      "\"data\":\"\"}",
      "{\"replyCode\":1,\"replyText\":\"error for this contact\","
      "\"data\":\"\"}"}},
    /* Interactions: connectedTo reaches every job. */
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\",\"2\"],"
     "\"errors\":{},\"connectedTo\":false}}",
     1,
     {200, 200},
     {"{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\","
      "\"2\"],\"errors\":{},\"connectedTo\":false}}",
      "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\","
      "\"2\"],\"errors\":{},\"connectedTo\":false}}"}},
    /* 429: the same reply, headers included, for every job. */
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com", "c@x.com"},
     HTTP_OK,
     429,
     RATE_HDRS,
     "{\"replyCode\":7003,\"replyText\":\"Too many requests\",\"data\":\"\"}",
     1,
     {429, 429, 429},
     {NULL, NULL, NULL}},
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     429,
     RATE_HDRS,
     "{\"replyCode\":7003,\"replyText\":\"Too many requests\",\"data\":\"\"}",
     1,
     {429, 429},
     {NULL, NULL}},
    /* 401, 403, 5xx and 5005: about the call or the account. */
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     401,
     "",
     "{\"error\":\"invalid_token\"}",
     1,
     {401, 401},
     {NULL, NULL}},
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     403,
     "",
     "{\"replyCode\":1,\"replyText\":\"Forbidden\",\"data\":\"\"}",
     1,
     {403, 403},
     {NULL, NULL}},
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     503,
     "",
     "<html>503</html>",
     1,
     {503, 503},
     {NULL, NULL}},
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     400,
     "",
     "{\"replyCode\":5005,\"replyText\":\"No program or campaign is "
     "triggered.\",\"data\":\"\"}",
     1,
     {400, 400},
     {NULL, NULL}},
    /* A transport failure: every job's. */
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com"},
     HTTP_MAYBE_SENT,
     0,
     "",
     "",
     1,
     {0, 0},
     {NULL, NULL}},
    /* Not attributable: each job goes alone (0). */
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     400,
     "",
     "{\"replyCode\":1000,\"replyText\":\"Batch size exceeded\",\"data\":"
     "\"\"}",
     0,
     {0, 0},
     {NULL, NULL}},
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     400,
     "",
     "{\"replyCode\":1001,\"replyText\":\"Invalid parameters\",\"data\":"
     "\"\"}",
     0,
     {0, 0},
     {NULL, NULL}},
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     200,
     "",
     "{\"replyCode\":2004,\"replyText\":\"Invalid key field id\",\"data\":"
     "\"\"}",
     0,
     {0, 0},
     {NULL, NULL}},
    {__LINE__,
     EM_TRIGGER,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     200,
     "",
     "[]",
     0,
     {0, 0},
     {NULL, NULL}},
    {__LINE__,
     EM_UPSERT,
     {"a@x.com", "b@x.com"},
     HTTP_OK,
     404,
     "",
     "{\"replyCode\":1,\"replyText\":\"Not Found\",\"data\":\"\"}",
     0,
     {0, 0},
     {NULL, NULL}},
};

static int
split_check(const struct split_row *w, int n, const struct http_resp *r,
            struct http_resp *each)
{
	int bad = 0;
	char v[32];

	for (int i = 0; i < n; i++) {
		const char *want =
		    w->want_body[i] ? w->want_body[i] : buf_str(&r->body);
		if (each[i].status != w->want_status[i] ||
		    each[i].result != r->result) {
			print_error("%s:%d: job %d: status %ld result %d, want "
			            "%ld %d\n",
			            __FILE__, w->line, i, each[i].status,
			            (int)each[i].result, w->want_status[i],
			            (int)r->result);
			bad++;
		}
		if (w->want_body[i] == NULL) {
			/* The batch's reply as it came. */
			if (strcmp(buf_str(&each[i].body), want) != 0) {
				print_error("%s:%d: job %d: body %s, want %s\n",
				            __FILE__, w->line, i,
				            buf_str(&each[i].body), want);
				bad++;
			}
		} else if (!json_same(w->line, "body", buf_str(&each[i].body),
		                      want))
			bad++;
		/* Headers travel with every share (X-RateLimit-*). */
		if (strcmp(buf_str(&each[i].headers), buf_str(&r->headers)) !=
		    0) {
			print_error("%s:%d: job %d: headers differ\n", __FILE__,
			            w->line, i);
			bad++;
		}
		if (w->status == 429 &&
		    (!http_resp_header(&each[i], "X-RateLimit-Reset", v,
		                       sizeof(v)) ||
		     strcmp(v, "1900000000") != 0)) {
			print_error("%s:%d: job %d: no X-RateLimit-Reset\n",
			            __FILE__, w->line, i);
			bad++;
		}
		if (strcmp(each[i].error, r->error) != 0) {
			print_error("%s:%d: job %d: error \"%s\"\n", __FILE__,
			            w->line, i, each[i].error);
			bad++;
		}
	}
	return bad;
}

static void
test_batch_split(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t k = 0; k < NROWS(split_rows); k++) {
		const struct split_row *w = &split_rows[k];
		struct job js[MAXJOBS], *jobs[MAXJOBS];
		struct em_state ss[MAXJOBS];
		struct http_resp r, each[MAXJOBS];
		int n = 0, have;

		while (n < MAXJOBS && w->keys[n] != NULL) {
			job_init(&js[n], &ss[n], w->kind, w->keys[n], "{}");
			jobs[n] = &js[n];
			http_resp_init(&each[n]);
			n++;
		}
		http_resp_init(&r);
		r.result = w->result;
		r.status = w->status;
		r.seconds = 0.25;
		if (w->result != HTTP_OK)
			snprintf(r.error, sizeof(r.error),
			         "Connection reset by peer");
		assert_int_equal(buf_puts(&r.headers, w->headers), GC_OK);
		assert_int_equal(buf_puts(&r.body, w->body), GC_OK);
		have = em_batch_split(jobs, n, &r, each);
		if (have != w->want) {
			print_error("%s:%d: returned %d, want %d\n", __FILE__,
			            w->line, have, w->want);
			failed++;
		} else if (have)
			failed += split_check(w, n, &r, each) != 0;
		for (int i = 0; i < n; i++) {
			http_resp_fini(&each[i]);
			job_fini(&js[i]);
		}
		http_resp_fini(&r);
	}
	assert_int_equal(failed, 0);
}

/*
 * A split reply read by the job's own client: the per-job replies of a
 * batch upsert with one rejected contact are what a single upsert of
 * each would have been (emarsys_contact_error on each share).
 */
static void
test_split_shares_parse_alone(void **state)
{
	const char *keys[3] = {"a@x.com", "b@x.com", "c@x.com"};
	struct job js[3], *jobs[3];
	struct em_state ss[3];
	struct http_resp r, each[3];

	(void)state;
	for (int i = 0; i < 3; i++) {
		job_init(&js[i], &ss[i], EM_UPSERT, keys[i], "{}");
		jobs[i] = &js[i];
		http_resp_init(&each[i]);
	}
	http_resp_init(&r);
	r.status = 200;
	assert_int_equal(
	    buf_puts(&r.body, "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{"
	                      "\"ids\":[\"1\",\"3\"],\"errors\":{\"b@x.com\":{"
	                      "\"2007\":\"Invalid value\"}}}}"),
	    GC_OK);
	assert_int_equal(em_batch_split(jobs, 3, &r, each), 1);
	for (int i = 0; i < 3; i++) {
		struct em_reply rep;
		char msg[100] = "";
		long code = -1;
		int rejected;

		emarsys_reply_parse(&each[i], &rep);
		assert_int_equal(rep.code, 0);
		/* Any contact's error in a share is that job's own. */
		rejected =
		    emarsys_contact_error(&rep, NULL, &code, msg, sizeof(msg));
		assert_int_equal(rejected, i == 1);
		if (rejected) {
			assert_int_equal(code, 2007);
			assert_string_equal(msg, "Invalid value");
		}
		emarsys_reply_fini(&rep);
		http_resp_fini(&each[i]);
		job_fini(&js[i]);
	}
	http_resp_fini(&r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_batch_item),
	    cmocka_unit_test(test_batch_request),
	    cmocka_unit_test(test_batch_split),
	    cmocka_unit_test(test_split_shares_parse_alone),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
