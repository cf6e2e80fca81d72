/*
 * Standard Webhooks v1: key parsing, signature headers, verification.
 * Expected signatures were computed independently with Python's hmac
 * module; the first is the example vector published with the spec.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "webhook.h"

/* The Standard Webhooks example: a 24-byte secret. */
#define SPEC_KEY  "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_ID   "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TS   "1614265330"
#define SPEC_BODY "{\"test\": 2432232314}"
#define SPEC_SIG  "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
/* A second (rotated-in) key: bytes 0x00..0x1f. */
#define ROT_KEY "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
/* ROT_KEY over the SPEC_ID/SPEC_TS/SPEC_BODY delivery. */
#define ROT_SIG "v1,O4Gjv1HqPqsMrjmczoggs/sWA8gZD0VyHG+fLh4+ktI="
/* ROT_KEY over ("msg_2", "1700000000", {"event":"offer_claimed"}). */
#define ROT_SIG2 "v1,hK0GAilwEv1xbheLeuuzC03/f05TDboyjzp8Ar34+5M="
/* ROT_KEY over ("msg_e", SPEC_TS, ""). */
#define ROT_SIG_EMPTY "v1,4k7WEmO32eYm7LhJ0/iC7YGU3EaWTjCEgx8ppqZ2ZgU="
/* 31 bytes of base64: well-formed but not an HMAC-SHA256. */
#define SHORT_SIG "v1,AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM0w=="

#define SPEC_NOW 1614265330

static const char *const fail_ids[] = {
    "OK",
    "MISSING_ID",
    "MISSING_TIMESTAMP",
    "MISSING_SIGNATURE",
    "BAD_TIMESTAMP",
    "STALE",
    "FUTURE",
    "BAD_SIGNATURE_HEADER",
    "NO_MATCH",
};
_Static_assert(sizeof(fail_ids) / sizeof(fail_ids[0]) == WEBHOOK__MAX,
               "fail_ids");

struct key_row {
	int line;
	const char *text;
	enum gc_err want;
	size_t want_len;
};

static const struct key_row key_rows[] = {
    {__LINE__, SPEC_KEY, GC_OK, 24},
    {__LINE__, ROT_KEY, GC_OK, 32},
    {__LINE__, "whsec_AQgPFh0kKzI5QEdOVVxjanF4f4aNlJui", GC_OK, 24},
    {__LINE__,
     "whsec_AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09rh6O/2/QQLEhkgJy41"
     "PENKUVhfZm10e4KJkJeepayzug==",
     GC_OK, 64},
    /* 65 bytes: one too many. */
    {__LINE__,
     "whsec_AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09rh6O/2/QQLEhkgJy41"
     "PENKUVhfZm10e4KJkJeepayzusE=",
     GC_EINVAL, 0},
    /* 23 bytes: one too few. */
    {__LINE__, "whsec_AQgPFh0kKzI5QEdOVVxjanF4f4aNlJs=", GC_EINVAL, 0},
    {__LINE__, "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", GC_EINVAL, 0},
    {__LINE__, "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", GC_EINVAL, 0},
    {__LINE__, "whsec_", GC_EINVAL, 0},
    {__LINE__, "", GC_EINVAL, 0},
    {__LINE__, NULL, GC_EINVAL, 0},
    /* Not a multiple of four, bad characters, URL-safe alphabet. */
    {__LINE__, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", GC_EINVAL, 0},
    {__LINE__, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa!w", GC_EINVAL, 0},
    {__LINE__, "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh-_", GC_EINVAL,
     0},
    {__LINE__, "whsec_ MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", GC_EINVAL, 0},
    {__LINE__, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", GC_EINVAL, 0},
    {__LINE__, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa==", GC_EINVAL, 0},
};

static void
test_key_parse(void **state)
{
	struct webhook_key key;
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(key_rows) / sizeof(key_rows[0]); i++) {
		const struct key_row *r = &key_rows[i];
		enum gc_err err = webhook_key_parse(r->text, &key);
		if (err != r->want || key.len != r->want_len) {
			print_error("%s:%d: have err %d len %zu, want err %d "
			            "len %zu\n",
			            __FILE__, r->line, err, key.len, r->want,
			            r->want_len);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

struct verify_row {
	int line;
	const char *keys[2]; /* NULL-terminated when fewer */
	const char *id, *ts, *sig, *body;
	long long now;
	long tol;
	enum webhook_fail want;
};

#define SPEC_KEYS                                                              \
	{                                                                      \
		SPEC_KEY, NULL                                                 \
	}

static const struct verify_row verify_rows[] = {
    /* Known vector, exact time. */
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_OK},
    {__LINE__,
     {ROT_KEY, NULL},
     "msg_2",
     "1700000000",
     ROT_SIG2,
     "{\"event\":\"offer_claimed\"}",
     1700000000,
     300,
     WEBHOOK_OK},
    {__LINE__,
     {ROT_KEY, NULL},
     "msg_e",
     SPEC_TS,
     ROT_SIG_EMPTY,
     "",
     SPEC_NOW,
     300,
     WEBHOOK_OK},
    /* Several entries: any one may match, in any position. */
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, ROT_SIG " " SPEC_SIG, SPEC_BODY,
     SPEC_NOW, 300, WEBHOOK_OK},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG " " ROT_SIG, SPEC_BODY,
     SPEC_NOW, 300, WEBHOOK_OK},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS,
     "v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= " SPEC_SIG, SPEC_BODY,
     SPEC_NOW, 300, WEBHOOK_OK},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS,
     "v1,!!!! v2,abcd " SHORT_SIG " " SPEC_SIG, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_OK},
    /* Repeated, leading and trailing spaces. */
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, "   " ROT_SIG "    " SPEC_SIG "  ",
     SPEC_BODY, SPEC_NOW, 300, WEBHOOK_OK},
    /* Rotation: the second key matches, whichever order. */
    {__LINE__,
     {ROT_KEY, SPEC_KEY},
     SPEC_ID,
     SPEC_TS,
     SPEC_SIG,
     SPEC_BODY,
     SPEC_NOW,
     300,
     WEBHOOK_OK},
    {__LINE__,
     {SPEC_KEY, ROT_KEY},
     SPEC_ID,
     SPEC_TS,
     ROT_SIG,
     SPEC_BODY,
     SPEC_NOW,
     300,
     WEBHOOK_OK},
    {__LINE__,
     {ROT_KEY, NULL},
     SPEC_ID,
     SPEC_TS,
     SPEC_SIG,
     SPEC_BODY,
     SPEC_NOW,
     300,
     WEBHOOK_NO_MATCH},
    {__LINE__,
     {NULL, NULL},
     SPEC_ID,
     SPEC_TS,
     SPEC_SIG,
     SPEC_BODY,
     SPEC_NOW,
     300,
     WEBHOOK_NO_MATCH},
    /* Tolerance edges: exactly the tolerance is accepted. */
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW + 300,
     300, WEBHOOK_OK},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW + 301,
     300, WEBHOOK_STALE},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW - 300,
     300, WEBHOOK_OK},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW - 301,
     300, WEBHOOK_FUTURE},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW + 1,
     0, WEBHOOK_STALE},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW, 0,
     WEBHOOK_OK},
    /* A freshness failure comes before the signature is looked at. */
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, "junk", SPEC_BODY, 0, 300,
     WEBHOOK_FUTURE},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, "junk", SPEC_BODY, SPEC_NOW + 3600,
     300, WEBHOOK_STALE},
    /* Far-off values cannot overflow. */
    {__LINE__, SPEC_KEYS, SPEC_ID, "9223372036854775807", SPEC_SIG, SPEC_BODY,
     -9223372036854775807LL, 300, WEBHOOK_FUTURE},
    {__LINE__, SPEC_KEYS, SPEC_ID, "0", SPEC_SIG, SPEC_BODY,
     9223372036854775807LL, 300, WEBHOOK_STALE},
    /* Missing headers, reported in order. */
    {__LINE__, SPEC_KEYS, NULL, SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_MISSING_ID},
    {__LINE__, SPEC_KEYS, "", SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_MISSING_ID},
    {__LINE__, SPEC_KEYS, NULL, NULL, NULL, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_MISSING_ID},
    {__LINE__, SPEC_KEYS, SPEC_ID, NULL, SPEC_SIG, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_MISSING_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, NULL, NULL, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_MISSING_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, NULL, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_MISSING_SIGNATURE},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, "", SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_MISSING_SIGNATURE},
    /* Timestamps that are not plain decimal integers. */
    {__LINE__, SPEC_KEYS, SPEC_ID, "+1614265330", SPEC_SIG, SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_BAD_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, "-1614265330", SPEC_SIG, SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_BAD_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, " 1614265330", SPEC_SIG, SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_BAD_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, "1614265330 ", SPEC_SIG, SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_BAD_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, "1614265330.5", SPEC_SIG, SPEC_BODY,
     SPEC_NOW, 300, WEBHOOK_BAD_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, "0x603a3b32", SPEC_SIG, SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_BAD_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, "now", SPEC_SIG, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_BAD_TIMESTAMP},
    {__LINE__, SPEC_KEYS, SPEC_ID, "99999999999999999999", SPEC_SIG, SPEC_BODY,
     SPEC_NOW, 300, WEBHOOK_BAD_TIMESTAMP},
    /* No usable v1 entry. */
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, "v1,", SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, "v1,!!!!", SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS,
     "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE", SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS,
     "v1,g0hM9SsE-OTPJTGt_tmIKtSyZlE3uFJELVlNIOLJ1OE=", SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SHORT_SIG, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS,
     "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS,
     "V1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS,
     "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, "   ", SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, "junk, more junk", SPEC_BODY,
     SPEC_NOW, 300, WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, ROT_SIG "\t" SPEC_SIG, SPEC_BODY,
     SPEC_NOW, 300, WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, ROT_SIG "," SPEC_SIG, SPEC_BODY,
     SPEC_NOW, 300, WEBHOOK_BAD_SIGNATURE_HEADER},
    {__LINE__,
     {NULL, NULL},
     SPEC_ID,
     SPEC_TS,
     "v1,!!!!",
     SPEC_BODY,
     SPEC_NOW,
     300,
     WEBHOOK_BAD_SIGNATURE_HEADER},
    /* Well-formed, but something signed differs. */
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, "{\"test\": 2432232315}",
     SPEC_NOW, 300, WEBHOOK_NO_MATCH},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, SPEC_SIG, "", SPEC_NOW, 300,
     WEBHOOK_NO_MATCH},
    {__LINE__, SPEC_KEYS, "msg_other", SPEC_TS, SPEC_SIG, SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_NO_MATCH},
    {__LINE__, SPEC_KEYS, SPEC_ID, "1614265331", SPEC_SIG, SPEC_BODY, SPEC_NOW,
     300, WEBHOOK_NO_MATCH},
    {__LINE__, SPEC_KEYS, SPEC_ID, SPEC_TS, ROT_SIG, SPEC_BODY, SPEC_NOW, 300,
     WEBHOOK_NO_MATCH},
};

/* Parse a row's keys; returns how many. */
static size_t
row_keys(const char *const texts[2], struct webhook_key keys[2])
{
	size_t n = 0;

	while (n < 2 && texts[n] != NULL) {
		assert_int_equal(webhook_key_parse(texts[n], &keys[n]), GC_OK);
		n++;
	}
	return n;
}

static void
test_verify(void **state)
{
	struct webhook_key keys[2];
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(verify_rows) / sizeof(verify_rows[0]);
	     i++) {
		const struct verify_row *r = &verify_rows[i];
		size_t n = row_keys(r->keys, keys);
		enum webhook_fail have =
		    webhook_verify(keys, n, r->id, r->ts, r->sig, r->body,
		                   strlen(r->body), (time_t)r->now, r->tol);
		if (have != r->want) {
			print_error("%s:%d: have %s, want %s\n", __FILE__,
			            r->line, fail_ids[have], fail_ids[r->want]);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* The body is taken by length, not up to a NUL. */
static void
test_verify_bodylen(void **state)
{
	struct webhook_key key;
	const char body[] = SPEC_BODY "trailing";

	(void)state;
	assert_int_equal(webhook_key_parse(SPEC_KEY, &key), GC_OK);
	assert_int_equal(webhook_verify(&key, 1, SPEC_ID, SPEC_TS, SPEC_SIG,
	                                body, strlen(SPEC_BODY), SPEC_NOW, 300),
	                 WEBHOOK_OK);
	assert_int_equal(webhook_verify(&key, 1, SPEC_ID, SPEC_TS, SPEC_SIG,
	                                body, strlen(SPEC_BODY) - 1, SPEC_NOW,
	                                300),
	                 WEBHOOK_NO_MATCH);
}

struct parse_row {
	int line;
	const char *header;
	int want;
};

static const struct parse_row parse_rows[] = {
    {__LINE__, NULL, 0},
    {__LINE__, "", 0},
    {__LINE__, " ", 0},
    {__LINE__, SPEC_SIG, 1},
    {__LINE__, SPEC_SIG " " ROT_SIG, 2},
    {__LINE__, "  " SPEC_SIG "   " ROT_SIG " ", 2},
    {__LINE__, SPEC_SIG ROT_SIG, 0},
    {__LINE__, "v1a,xyz " SPEC_SIG, 1},
    {__LINE__, "v1," SPEC_SIG, 0},
    {__LINE__, "v1,", 0},
    {__LINE__, "v1", 0},
    {__LINE__, ",", 0},
    {__LINE__, SHORT_SIG, 0},
    {__LINE__, "v1,AQgPFh0kKzI5QEdOVVxjanF4f4aNlJuiqbC3vsXM09rh", 0},
    {__LINE__,
     "v1,===================="
     "========================",
     0},
    {__LINE__, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE==", 0},
    {__LINE__, SPEC_SIG " " SPEC_SIG " " SPEC_SIG, 3},
};

/* Counts calls and checks every signature handed over is 32 bytes. */
static void
count_sig(const uint8_t *sig, size_t len, void *arg)
{
	int *calls = arg;

	assert_non_null(sig);
	assert_int_equal(len, 32);
	(*calls)++;
}

static void
test_sig_parse(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(parse_rows) / sizeof(parse_rows[0]);
	     i++) {
		const struct parse_row *r = &parse_rows[i];
		int calls = 0;
		int have = webhook_sig_parse(r->header, count_sig, &calls);
		if (have != r->want || calls != r->want) {
			print_error("%s:%d: have %d (%d calls), want %d\n",
			            __FILE__, r->line, have, calls, r->want);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* webhook_sign reproduces the published vector and round-trips. */
static void
test_sign(void **state)
{
	struct webhook_key key;
	char out[64], small[47];

	(void)state;
	assert_int_equal(webhook_key_parse(SPEC_KEY, &key), GC_OK);
	webhook_sign(&key, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), out,
	             sizeof(out));
	assert_string_equal(out, SPEC_SIG);
	assert_int_equal(webhook_key_parse(ROT_KEY, &key), GC_OK);
	webhook_sign(&key, "msg_e", SPEC_TS, "", 0, out, 48);
	assert_string_equal(out, ROT_SIG_EMPTY);
	assert_int_equal(webhook_verify(&key, 1, "msg_e", SPEC_TS, out, "", 0,
	                                SPEC_NOW, 300),
	                 WEBHOOK_OK);
	webhook_sign(&key, "msg_e", SPEC_TS, "", 0, small, sizeof(small));
	assert_string_equal(small, "");
}

/* Every failure has a distinct, non-empty reason. */
static void
test_fail_names(void **state)
{
	(void)state;
	for (int i = 0; i < WEBHOOK__MAX; i++) {
		assert_non_null(webhook_fail_names[i]);
		assert_true(webhook_fail_names[i][0] != '\0');
		for (int j = 0; j < i; j++)
			assert_string_not_equal(webhook_fail_names[i],
			                        webhook_fail_names[j]);
	}
	assert_string_equal(webhook_fail_names[WEBHOOK_MISSING_ID],
	                    "missing webhook-id header");
	assert_string_equal(webhook_fail_names[WEBHOOK_STALE],
	                    "webhook-timestamp is too old");
	assert_string_equal(webhook_fail_names[WEBHOOK_NO_MATCH],
	                    "no signature matches");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_key_parse),
	    cmocka_unit_test(test_verify),
	    cmocka_unit_test(test_verify_bodylen),
	    cmocka_unit_test(test_sig_parse),
	    cmocka_unit_test(test_sign),
	    cmocka_unit_test(test_fail_names),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
