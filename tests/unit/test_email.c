/*
 * Unit tests for app/email.c: table-driven, good and bad rows side by
 * side.  A failing row prints file:line, what we had and what we wanted;
 * every row runs before the test fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "email.h"

/* want is the normalised address on GC_OK, else the reason. */
struct norm_row {
	int line;
	const char *in;
	enum gc_err err;
	const char *want;
};

/* clang-format off */
#define GOOD(in, want)	{ __LINE__, (in), GC_OK, (want) }
#define BAD(in, why)	{ __LINE__, (in), GC_EINVAL, (why) }
/* clang-format on */

/* Runs of a given length, to build addresses at the limits. */
#define A10 "aaaaaaaaaa"
#define A60 A10 A10 A10 A10 A10 A10
#define A63 A60 "aaa"
#define A64 A60 "aaaa"
#define A65 A60 "aaaaa"
#define B10 "bbbbbbbbbb"
#define B61 B10 B10 B10 B10 B10 B10 "b"
/* A64 "@" A63 "." A63 "." B61: 64 + 1 + 189 = 254 characters. */
#define MAXADDR A64 "@" A63 "." A63 "." B61

/* clang-format off */
static const struct norm_row norm_rows[] = {
	/* Case folding and trimming */
	GOOD("ann@example.com",			"ann@example.com"),
	GOOD("Ann.Lee@Example.COM",		"ann.lee@example.com"),
	GOOD("  ann@example.com\t\r\n",		"ann@example.com"),
	GOOD("\vANN@EXAMPLE.CO.UK\f",		"ann@example.co.uk"),
	/* Dot-atom local parts */
	GOOD("first.last+tag@example.com",	"first.last+tag@example.com"),
	GOOD("o'brien@example.ie",		"o'brien@example.ie"),
	GOOD("a!#$%&'*+-/=?^_`{|}~z@example.com",
	    "a!#$%&'*+-/=?^_`{|}~z@example.com"),
	GOOD("x@example.com",			"x@example.com"),
	GOOD(A64 "@example.com",		A64 "@example.com"),
	/* LDH domains */
	GOOD("ann@mail-1.example.com",		"ann@mail-1.example.com"),
	GOOD("ann@123.example.com",		"ann@123.example.com"),
	GOOD("ann@example.xn--p1ai",		"ann@example.xn--p1ai"),
	GOOD("ann@a.io",			"ann@a.io"),
	GOOD("ann@" A63 ".com",			"ann@" A63 ".com"),
	GOOD(MAXADDR,				MAXADDR),
	/* Nothing there */
	BAD("",					"empty address"),
	BAD(" \t\r\n",				"empty address"),
	/* The @ */
	BAD("ann.example.com",			"missing @"),
	BAD("ann@@example.com",			"more than one @"),
	BAD("ann@lee@example.com",		"more than one @"),
	BAD("\"ann@lee\"@example.com",		"more than one @"),
	/* Local part */
	BAD("@example.com",			"empty local part"),
	BAD(A65 "@example.com",			"local part over 64 characters"),
	BAD(".ann@example.com",			"local part starts with a dot"),
	BAD("ann.@example.com",			"local part ends with a dot"),
	BAD("ann..lee@example.com",		"consecutive dots in local part"),
	BAD("ann lee@example.com",		"invalid character in local part"),
	BAD("\"ann\"@example.com",		"invalid character in local part"),
	BAD("ann(x)@example.com",		"invalid character in local part"),
	BAD("ann,lee@example.com",		"invalid character in local part"),
	BAD("ann\\lee@example.com",		"invalid character in local part"),
	BAD("<ann@example.com>",		"invalid character in local part"),
	/* Domain */
	BAD("ann@",				"empty domain"),
	BAD("ann@localhost",			"domain has no dot"),
	BAD("ann@example.com.",			"domain ends with a dot"),
	BAD("ann@.example.com",			"domain starts with a dot"),
	BAD("ann@example..com",			"empty domain label"),
	BAD("ann@-example.com",			"domain label starts with a hyphen"),
	BAD("ann@example-.com",			"domain label ends with a hyphen"),
	BAD("ann@example.-com",			"domain label starts with a hyphen"),
	BAD("ann@exa_mple.com",			"invalid character in domain"),
	BAD("ann@example.com>",			"invalid character in domain"),
	BAD("ann@exam ple.com",			"invalid character in domain"),
	BAD("ann@[192.0.2.1]",			"invalid character in domain"),
	BAD("ann@192.0.2.1",			"numeric top-level domain"),
	BAD("ann@example.123",			"numeric top-level domain"),
	BAD("ann@" A64 ".com",			"domain label over 63 characters"),
	/* Length */
	BAD("b" MAXADDR,			"longer than 254 characters"),
	/* Not ASCII, not printable */
	BAD("ann@ex\xc3\xa4mple.com",			"non-ASCII character"),
	BAD("\xc3\xa4nn\xc3\xa4@example.com",			"non-ASCII character"),
	BAD("ann@example.com\xc2\xa0",		"non-ASCII character"),
	BAD("ann\x01@example.com",		"control character"),
	BAD("ann@exa\tmple.com",		"control character"),
	BAD("ann@example.com\x7f",		"control character"),
};
/* clang-format on */

static void
test_email_normalize(void **state)
{
	const struct norm_row *r;
	char why[128], *out;
	const char *have;
	enum gc_err err;
	size_t i, nfail = 0;

	(void)state;
	for (i = 0; i < sizeof(norm_rows) / sizeof(norm_rows[0]); i++) {
		r = &norm_rows[i];
		why[0] = '\0';
		out = (char *)"stale";
		err = email_normalize(r->in, &out, why, sizeof(why));
		have = err == GC_OK ? out : why;
		if (err == r->err && have != NULL &&
		    strcmp(have, r->want) == 0 &&
		    (err == GC_OK || out == NULL)) {
			free(out);
			continue;
		}
		print_error("%s:%d: email_normalize(\"%s\"): have %s \"%s\", "
		            "want %s \"%s\"\n",
		            __FILE__, r->line, r->in, gc_strerror(err),
		            have ? have : "(null)", gc_strerror(r->err),
		            r->want);
		if (err == GC_OK)
			free(out);
		nfail++;
	}
	if (nfail > 0)
		fail_msg("%zu of %zu rows failed", nfail, i);
}

/* Reasons go only where there is room for them; *out is NULL on failure. */
static void
test_email_edges(void **state)
{
	char why[8], *out;

	(void)state;
	out = (char *)"stale";
	assert_int_equal(email_normalize("ann", &out, NULL, 0), GC_EINVAL);
	assert_null(out);
	assert_int_equal(email_normalize("ann", &out, why, 0), GC_EINVAL);
	assert_int_equal(email_normalize("ann", &out, why, sizeof(why)),
	                 GC_EINVAL);
	assert_string_equal(why, "missing");
	out = (char *)"stale";
	assert_int_equal(email_normalize(NULL, &out, why, sizeof(why)),
	                 GC_EINVAL);
	assert_null(out);
	assert_int_equal(email_normalize(" A@B.CD ", &out, NULL, 0), GC_OK);
	assert_string_equal(out, "a@b.cd");
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_email_normalize),
	    cmocka_unit_test(test_email_edges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
