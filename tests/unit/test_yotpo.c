/*
 * Unit tests for the pure parts of clients/yotpo.c: the history title
 * that carries an award's reference, and the search for that reference
 * in a GET /customers reply.  Table-driven; a failing row prints
 * file:line, what we had and what we wanted; every row runs before the
 * test fails.
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

#include "yotpo.h"

#define X10 "xxxxxxxxxx"
#define X79 X10 X10 X10 X10 X10 X10 X10 "xxxxxxxxx"
#define X80 X79 "x"

struct title_row {
	int line;
	const char *title;
	const char *token;
	size_t n; /* size of the output buffer */
	const char *want;
};

/* clang-format off */
#define TITLE(t, tok, want)	{ __LINE__, (t), (tok), 300, (want) }
#define TITLE_N(t, tok, n, want)	{ __LINE__, (t), (tok), (n), (want) }

static const struct title_row title_rows[] = {
	TITLE("20% OFF for Key Workers", "ABCD1234",
	    "20% OFF for Key Workers (ref ABCD1234)"),
	TITLE("", "T1",				" (ref T1)"),
	TITLE("Students", "a)b(c",		"Students (ref a)b(c)"),
	/* 80 bytes are kept, the 81st goes */
	TITLE(X80, "T",				X80 " (ref T)"),
	TITLE(X80 "yyy", "T",			X80 " (ref T)"),
	/* Never half a character: 79 bytes + a 2-byte one, cut before it */
	TITLE(X79 "\xc3\xa9t\xc3\xa9", "T",	X79 " (ref T)"),
	/* A 2-byte character that ends exactly at byte 80 stays */
	TITLE(X10 X10 X10 X10 X10 X10 X10 "xxxxxxxx\xc3\xa9z", "T",
	    X10 X10 X10 X10 X10 X10 X10 "xxxxxxxx\xc3\xa9 (ref T)"),
	/* 3- and 4-byte characters across the cut */
	TITLE(X10 X10 X10 X10 X10 X10 X10 "xxxxxxxx\xe2\x82\xac", "T",
	    X10 X10 X10 X10 X10 X10 X10 "xxxxxxxx (ref T)"),
	TITLE(X79 "\xf0\x9f\x8e\x93", "T",	X79 " (ref T)"),
	TITLE("\xc3\xa9" X79, "T",		"\xc3\xa9" X10 X10 X10 X10 X10
	    X10 X10 "xxxxxxxx (ref T)"),
	/* A short buffer truncates and stays terminated */
	TITLE_N("Students", "T1", 8,		"Student"),
	TITLE_N("Students", "T1", 1,		""),
};
/* clang-format on */

static void
test_yotpo_history_title(void **state)
{
	const struct title_row *r;
	char out[300];
	size_t i, nfail = 0;

	(void)state;
	for (i = 0; i < sizeof(title_rows) / sizeof(title_rows[0]); i++) {
		r = &title_rows[i];
		memset(out, '#', sizeof(out));
		yotpo_history_title(r->title, r->token, out, r->n);
		if (memchr(out, '\0', r->n) != NULL &&
		    strcmp(out, r->want) == 0)
			continue;
		print_error("%s:%d: yotpo_history_title(\"%s\", \"%s\", %zu): "
		            "have \"%.*s\", want \"%s\"\n",
		            __FILE__, r->line, r->title, r->token, r->n,
		            (int)r->n, out, r->want);
		nfail++;
	}
	if (nfail > 0)
		fail_msg("%zu of %zu rows failed", nfail, i);
}

struct has_row {
	int line;
	const char *customer; /* JSON text */
	const char *token;
	int want;
};

/* clang-format off */
#define HAS(c, tok)	{ __LINE__, (c), (tok), 1 }
#define HASNT(c, tok)	{ __LINE__, (c), (tok), 0 }

static const struct has_row has_rows[] = {
	/* The fields a history item may carry the title in */
	HAS("{\"history_items\":[{\"action\":\"Students (ref AB1)\","
	    "\"points\":100}]}", "AB1"),
	HAS("{\"history_items\":[{\"history_title\":\"Students (ref AB1)\"}]}",
	    "AB1"),
	HAS("{\"history_items\":[{\"title\":\"Students (ref AB1)\"}]}", "AB1"),
	/* Among others, not first */
	HAS("{\"history_items\":[{\"action\":\"Signed up\",\"points\":50},"
	    "{\"action\":\"X (ref ZZ9)\"},{\"action\":\"Y (ref AB1)\"}]}",
	    "AB1"),
	/* Nested deeper in an item */
	HAS("{\"history_items\":[{\"details\":{\"meta\":[\"n\","
	    "{\"text\":\"Students (ref AB1)\"}]}}]}", "AB1"),
	HAS("{\"history_items\":[[\"Students (ref AB1)\"]]}", "AB1"),
	/* Any text around the reference */
	HAS("{\"history_items\":[{\"action\":\"(ref AB1)\"}]}", "AB1"),
	HAS("{\"history_items\":[{\"action\":\"a (ref AB1) b\"}]}", "AB1"),
	/* Tokens that share a prefix or a suffix do not match */
	HASNT("{\"history_items\":[{\"action\":\"Students (ref AB12)\"}]}",
	      "AB1"),
	HASNT("{\"history_items\":[{\"action\":\"Students (ref AB1)\"}]}",
	      "AB12"),
	HASNT("{\"history_items\":[{\"action\":\"Students (ref XAB1)\"}]}",
	      "AB1"),
	HASNT("{\"history_items\":[{\"action\":\"Students (ref ab1)\"}]}",
	      "AB1"),
	HASNT("{\"history_items\":[{\"action\":\"Students AB1\"}]}", "AB1"),
	HASNT("{\"history_items\":[{\"action\":\"Students (ref  AB1)\"}]}",
	      "AB1"),
	/* Only history_items counts */
	HASNT("{\"email\":\"(ref AB1)\",\"history_items\":[]}", "AB1"),
	HASNT("{\"note\":{\"history_items\":[\"(ref AB1)\"]}}", "AB1"),
	/* No history at all, or not the expected shape */
	HASNT("{\"email\":\"a@b.cd\",\"points_balance\":0}", "AB1"),
	HASNT("{\"history_items\":[]}", "AB1"),
	HASNT("{\"history_items\":null}", "AB1"),
	HASNT("{\"history_items\":[{\"points\":100}]}", "AB1"),
	HASNT("{\"history_items\":[{\"action\":null,\"points\":1}]}", "AB1"),
	HASNT("[{\"action\":\"(ref AB1)\"}]", "AB1"),
	HASNT("{}", "AB1"),
};
/* clang-format on */

static void
test_yotpo_history_has(void **state)
{
	const struct has_row *r;
	json_error_t jerr;
	json_t *c;
	size_t i, nfail = 0;
	int have;

	(void)state;
	for (i = 0; i < sizeof(has_rows) / sizeof(has_rows[0]); i++) {
		r = &has_rows[i];
		c = json_loads(r->customer, 0, &jerr);
		if (c == NULL) {
			print_error("%s:%d: bad row JSON: %s\n", __FILE__,
			            r->line, jerr.text);
			nfail++;
			continue;
		}
		have = yotpo_history_has(c, r->token);
		json_decref(c);
		if (have == r->want)
			continue;
		print_error("%s:%d: yotpo_history_has(%s, \"%s\"): have %d, "
		            "want %d\n",
		            __FILE__, r->line, r->customer, r->token, have,
		            r->want);
		nfail++;
	}
	if (nfail > 0)
		fail_msg("%zu of %zu rows failed", nfail, i);
}

/* A title built here is found by the search, and its token only. */
static void
test_yotpo_round_trip(void **state)
{
	char title[300];
	json_t *c;

	(void)state;
	yotpo_history_title(X79 "\xc3\xa9", "TOK42", title, sizeof(title));
	c = json_pack("{s:[{s:s, s:i}]}", "history_items", "action", title,
	              "points", 100);
	assert_non_null(c);
	assert_int_equal(yotpo_history_has(c, "TOK42"), 1);
	assert_int_equal(yotpo_history_has(c, "TOK4"), 0);
	assert_int_equal(yotpo_history_has(c, "TOK421"), 0);
	json_decref(c);
	assert_int_equal(yotpo_history_has(NULL, "TOK42"), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_yotpo_history_title),
	    cmocka_unit_test(test_yotpo_history_has),
	    cmocka_unit_test(test_yotpo_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
