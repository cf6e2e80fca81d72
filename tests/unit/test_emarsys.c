/*
 * The Emarsys reply helpers (emarsys.h) against the reply shapes of
 * reference/emarsys-api.md: the envelope with replyCode as a number or a
 * string, ids as strings or numbers, per-contact errors as an object, an
 * empty [] or {}, or absent.  Expected trigger ids were computed with
 * Python's hashlib.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "emarsys.h"

#define NROWS(a) (sizeof(a) / sizeof((a)[0]))

/* Parse body as an HTTP reply (caller releases rep with emarsys_reply_fini). */
static void
parse(const char *body, struct em_reply *rep)
{
	struct http_resp r;

	http_resp_init(&r);
	r.status = 200;
	assert_int_equal(buf_puts(&r.body, body), GC_OK);
	emarsys_reply_parse(&r, rep);
	http_resp_fini(&r);
}

struct reply_row {
	int line;
	const char *body;
	int has_root; /* a JSON object envelope */
	long code;    /* replyCode, -1 when absent or unusable */
	const char *text;
	const char *data; /* compact JSON of data, NULL when absent */
};

static const struct reply_row reply_rows[] = {
    {__LINE__, "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{}}", 1, 0, "OK",
     "{}"},
    /* replyCode as a string (reference 3.1: types vary). */
    {__LINE__, "{\"replyCode\":\"0\",\"replyText\":\"OK\",\"data\":[]}", 1, 0,
     "OK", "[]"},
    {__LINE__,
     "{\"replyCode\":\"5005\",\"replyText\":\"No program or campaign is "
     "triggered.\",\"data\":\"\"}",
     1, 5005, "No program or campaign is triggered.", "\"\""},
    {__LINE__,
     "{\"replyCode\":9002,\"replyText\":\"A field with this name already "
     "exists\",\"data\":\"\"}",
     1, 9002, "A field with this name already exists", "\"\""},
    {__LINE__, "{\"replyCode\":7003,\"replyText\":\"Too many requests\"}", 1,
     7003, "Too many requests", NULL},
    /* A string that is not a number is no success. */
    {__LINE__, "{\"replyCode\":\"abc\",\"replyText\":\"x\"}", 1, -1, "x", NULL},
    {__LINE__, "{\"replyCode\":\"\",\"data\":{}}", 1, -1, "", "{}"},
    {__LINE__, "{\"replyCode\":\" 0\"}", 1, -1, "", NULL},
    {__LINE__, "{\"replyCode\":\"0x10\"}", 1, -1, "", NULL},
    {__LINE__, "{\"replyCode\":\"-1\"}", 1, -1, "", NULL},
    {__LINE__, "{\"replyCode\":-3}", 1, -1, "", NULL},
    {__LINE__, "{\"replyCode\":0.0}", 1, -1, "", NULL},
    {__LINE__, "{\"replyCode\":true}", 1, -1, "", NULL},
    {__LINE__, "{\"replyCode\":null,\"replyText\":7}", 1, -1, "", NULL},
    {__LINE__, "{\"replyCode\":\"99999999999999999999\"}", 1, -1, "", NULL},
    /* The OAuth shape of a 401 (no envelope). */
    {__LINE__,
     "{\"error\":\"invalid_token\",\"error_description\":\"expired\"}", 1, -1,
     "", NULL},
    {__LINE__, "{}", 1, -1, "", NULL},
    /* Not an envelope at all. */
    {__LINE__, "[]", 0, -1, "", NULL},
    {__LINE__, "[{\"replyCode\":0}]", 0, -1, "", NULL},
    {__LINE__, "0", 0, -1, "", NULL},
    {__LINE__, "\"OK\"", 0, -1, "", NULL},
    {__LINE__, "<html><body>502 Bad Gateway</body></html>", 0, -1, "", NULL},
    {__LINE__, "", 0, -1, "", NULL},
    {__LINE__, "{\"replyCode\":0,", 0, -1, "", NULL},
};

static void
test_reply_parse(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < NROWS(reply_rows); i++) {
		const struct reply_row *w = &reply_rows[i];
		struct em_reply rep;
		char *data;

		parse(w->body, &rep);
		data = rep.data ? json_dumps(rep.data,
		                             JSON_COMPACT | JSON_ENCODE_ANY)
		                : NULL;
		if ((rep.root != NULL) != w->has_root || rep.code != w->code ||
		    rep.text == NULL || strcmp(rep.text, w->text) != 0 ||
		    (data == NULL) != (w->data == NULL) ||
		    (data != NULL && strcmp(data, w->data) != 0)) {
			print_error(
			    "%s:%d: have root %d code %ld text \"%s\" "
			    "data %s, want root %d code %ld text \"%s\" "
			    "data %s\n",
			    __FILE__, w->line, rep.root != NULL, rep.code,
			    rep.text ? rep.text : "(null)",
			    data ? data : "(none)", w->has_root, w->code,
			    w->text, w->data ? w->data : "(none)");
			failed++;
		}
		free(data);
		emarsys_reply_fini(&rep);
		assert_null(rep.root);
	}
	assert_int_equal(failed, 0);
}

struct cerr_row {
	int line;
	const char *body;
	const char *key; /* NULL: any contact */
	int want;
	long code;
	const char *msg;
	size_t msgsize;
};

#define UPSERT(errors)                                                         \
	"{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[],"          \
	"\"errors\":" errors "}}"

static const struct cerr_row cerr_rows[] = {
    /* Success: errors {} or [] (PHP's empty array) or absent. */
    {__LINE__, UPSERT("{}"), "a@b.c", 0, 0, NULL, 200},
    {__LINE__, UPSERT("[]"), "a@b.c", 0, 0, NULL, 200},
    {__LINE__, UPSERT("[]"), NULL, 0, 0, NULL, 200},
    {__LINE__,
     "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":{\"ids\":[\"1\"]}}",
     "a@b.c", 0, 0, NULL, 200},
    {__LINE__, "{\"replyCode\":0,\"replyText\":\"OK\",\"data\":\"\"}", "a@b.c",
     0, 0, NULL, 200},
    {__LINE__, "{\"replyCode\":0}", NULL, 0, 0, NULL, 200},
    {__LINE__, "not json", "a@b.c", 0, 0, NULL, 200},
    /* The documented shape: keyed by the key value. */
    {__LINE__,
     UPSERT("{\"a@b.c\":{\"2010\":\"More than one contact found with the "
            "external id: 3 - a@b.c\"}}"),
     "a@b.c", 1, 2010,
     "More than one contact found with the external id: 3 - a@b.c", 200},
    {__LINE__,
     UPSERT("{\"erik.selvig@example.com\":{\"2008\":\"No contact found\"}}"),
     "erik.selvig@example.com", 1, 2008, "No contact found", 200},
    {__LINE__, UPSERT("{\"+447700900123\":{\"2006\":\"Invalid field id\"}}"),
     "+447700900123", 1, 2006, "Invalid field id", 200},
    /* Another contact's error is not ours... */
    {__LINE__, UPSERT("{\"x@y.z\":{\"2010\":\"dup\"}}"), "a@b.c", 0, 0, NULL,
     200},
    /* ...unless any contact is asked for (one contact per upsert). */
    {__LINE__, UPSERT("{\"x@y.z\":{\"2010\":\"dup\"}}"), NULL, 1, 2010, "dup",
     200},
    {__LINE__,
     UPSERT("{\"0\":{\"2005\":\"No value provided for key field: 3\"}}"), NULL,
     1, 2005, "No value provided for key field: 3", 200},
    /* Odd entries still count as a rejection. */
    {__LINE__, UPSERT("{\"a@b.c\":{}}"), "a@b.c", 1, 0, "contact rejected",
     200},
    {__LINE__, UPSERT("{\"a@b.c\":\"oops\"}"), "a@b.c", 1, 0,
     "contact rejected", 200},
    {__LINE__, UPSERT("{\"a@b.c\":[]}"), "a@b.c", 1, 0, "contact rejected",
     200},
    {__LINE__, UPSERT("{\"a@b.c\":{\"2007\":5}}"), "a@b.c", 1, 2007, "", 200},
    {__LINE__, UPSERT("{\"a@b.c\":{\"oops\":\"bad\"}}"), "a@b.c", 1, 0, "bad",
     200},
    /* The message is cut to the buffer. */
    {__LINE__, UPSERT("{\"a@b.c\":{\"2010\":\"More than one\"}}"), "a@b.c", 1,
     2010, "More th", 8},
};

static void
test_contact_error(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < NROWS(cerr_rows); i++) {
		const struct cerr_row *w = &cerr_rows[i];
		struct em_reply rep;
		char msg[200] = "untouched";
		long code = -42;
		int have;

		parse(w->body, &rep);
		have =
		    emarsys_contact_error(&rep, w->key, &code, msg, w->msgsize);
		/* Without an error, code and msg are left alone. */
		if (have != w->want ||
		    (have ? code != w->code || strcmp(msg, w->msg) != 0
		          : code != -42 || strcmp(msg, "untouched") != 0)) {
			print_error("%s:%d: have %d code %ld msg \"%s\", want "
			            "%d code %ld msg \"%s\"\n",
			            __FILE__, w->line, have, code, msg, w->want,
			            w->code, w->msg ? w->msg : "untouched");
			failed++;
		}
		emarsys_reply_fini(&rep);
	}
	assert_int_equal(failed, 0);
}

struct id_row {
	int line;
	const char *json; /* a JSON value; NULL for a missing member */
	int want;
	const char *out;
};

static const struct id_row id_rows[] = {
    /* Strings (field list) and numbers (newer spec, create replies). */
    {__LINE__, "\"123\"", 1, "123"},
    {__LINE__, "796", 1, "796"},
    {__LINE__, "\"4000001\"", 1, "4000001"},
    {__LINE__, "4000001", 1, "4000001"},
    {__LINE__, "0", 1, "0"},
    {__LINE__, "\"111111111\"", 1, "111111111"},
    {__LINE__, "968984932", 1, "968984932"},
    {__LINE__, "9223372036854775807", 1, "9223372036854775807"},
    {__LINE__, "\"123456789012345678\"", 1, "123456789012345678"},
    /* Too long, not digits, or not an id at all. */
    {__LINE__, "\"1234567890123456789\"", 0, ""},
    {__LINE__, "\"\"", 0, ""},
    {__LINE__, "\"12a\"", 0, ""},
    {__LINE__, "\" 12\"", 0, ""},
    {__LINE__, "\"-12\"", 0, ""},
    {__LINE__, "\"../contact\"", 0, ""},
    {__LINE__, "\"1/trigger?x=1\"", 0, ""},
    {__LINE__, "-5", 0, ""},
    {__LINE__, "12.0", 0, ""},
    {__LINE__, "true", 0, ""},
    {__LINE__, "null", 0, ""},
    {__LINE__, "{\"id\":1}", 0, ""},
    {__LINE__, "[1]", 0, ""},
    {__LINE__, NULL, 0, ""},
};

static void
test_id_text(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < NROWS(id_rows); i++) {
		const struct id_row *w = &id_rows[i];
		json_t *v = NULL;
		char out[32] = "junk";
		int have;

		if (w->json != NULL) {
			v = json_loads(w->json, JSON_DECODE_ANY, NULL);
			assert_non_null(v);
		}
		have = emarsys_id_text(v, out);
		if (have != w->want || strcmp(out, w->out) != 0) {
			print_error("%s:%d: have %d \"%s\", want %d \"%s\"\n",
			            __FILE__, w->line, have, out, w->want,
			            w->out);
			failed++;
		}
		json_decref(v);
	}
	assert_int_equal(failed, 0);
}

struct trig_row {
	int line;
	const char *brand, *token, *name, *want;
};

/* Expected ids: sha256("<brand>\n<name>\n<token>"), computed outside. */
static const struct trig_row trig_rows[] = {
    {__LINE__, "acme", "ABCD1234", "gocertify_consent_intent",
     "gcrelay-28d8931e30c8bdf37a2ce5326e661d67"},
    {__LINE__, "acme", "ABCD1234", "gocertify_offer_claimed",
     "gcrelay-768bd5922c78f28c3a73572bdba1f626"},
    {__LINE__, "other", "ABCD1234", "gocertify_offer_claimed",
     "gcrelay-4b3c73f198a2affc004c1e9387c87295"},
    {__LINE__, "acme", "ABCD1235", "gocertify_offer_claimed",
     "gcrelay-84f24f75377e8eca27cba883677e02fa"},
    {__LINE__, "", "", "", "gcrelay-75a11da44c802486bc6f65640aa48a73"},
    {__LINE__, "", NULL, "", "gcrelay-75a11da44c802486bc6f65640aa48a73"},
};

static void
test_trigger_id(void **state)
{
	char a[48], b[48], longtok[300];
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < NROWS(trig_rows); i++) {
		const struct trig_row *w = &trig_rows[i];
		char out[48];
		emarsys_trigger_id(w->brand, w->token, w->name, out);
		if (strcmp(out, w->want) != 0) {
			print_error("%s:%d: have %s, want %s\n", __FILE__,
			            w->line, out, w->want);
			failed++;
		}
	}
	assert_int_equal(failed, 0);

	/* Same verification, same id; the separator keeps the parts apart. */
	emarsys_trigger_id("acme", "TOK1", "gocertify_offer_claimed", a);
	emarsys_trigger_id("acme", "TOK1", "gocertify_offer_claimed", b);
	assert_string_equal(a, b);
	emarsys_trigger_id("acm", "TOK1", "egocertify_offer_claimed", b);
	assert_string_not_equal(a, b);
	emarsys_trigger_id("acme", "TOK2", "gocertify_offer_claimed", b);
	assert_string_not_equal(a, b);

	/* The longest token (128 characters) and more still fit. */
	memset(longtok, 'x', 256);
	longtok[256] = '\0';
	emarsys_trigger_id("acme", longtok, "gocertify_offer_claimed", a);
	assert_int_equal(strlen(a), 40);
	assert_int_equal(strncmp(a, "gcrelay-", 8), 0);
	assert_int_equal(strspn(a + 8, "0123456789abcdef"), 32);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_reply_parse),
	    cmocka_unit_test(test_contact_error),
	    cmocka_unit_test(test_id_text),
	    cmocka_unit_test(test_trigger_id),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
