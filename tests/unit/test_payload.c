/*
 * The Gocertify payload and verified-at field names (payload.c), against
 * golden files: tests/data/payload/<case>.in.json is an event body,
 * <case>.out.json the exact compact payload; tests/data/slugs.txt maps
 * group names to field names.  Data files are found under $GC_TEST_DATA
 * (default tests/data, relative to the repository root).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "event.h"
#include "payload.h"

#define NOW 1800000000 /* 2027-01-15T08:00:00Z: date when none is sent */

/* $GC_TEST_DATA/<rel> into out. */
static void
data_path(char *out, size_t n, const char *rel)
{
	const char *dir = getenv("GC_TEST_DATA");

	if (dir == NULL || *dir == '\0')
		dir = "tests/data";
	if ((size_t)snprintf(out, n, "%s/%s", dir, rel) >= n)
		fail_msg("path too long: %s/%s", dir, rel);
}

/* The whole file at rel (caller frees); fails the test when unreadable. */
static char *
slurp(const char *rel, size_t *len)
{
	char path[512], *text;
	FILE *fp;
	long n = 0;

	data_path(path, sizeof(path), rel);
	if ((fp = fopen(path, "rb")) == NULL)
		fail_msg("cannot open %s (run from the repository root or set "
		         "GC_TEST_DATA)",
		         path);
	if (fseek(fp, 0, SEEK_END) != 0 || (n = ftell(fp)) < 0 ||
	    fseek(fp, 0, SEEK_SET) != 0)
		fail_msg("cannot size %s", path);
	text = malloc((size_t)n + 1);
	assert_non_null(text);
	if (fread(text, 1, (size_t)n, fp) != (size_t)n)
		fail_msg("cannot read %s", path);
	fclose(fp);
	text[n] = '\0';
	*len = (size_t)n;
	return text;
}

struct golden {
	int line;
	const char *name;
	const char *fields[2]; /* expected verified-at fields, NULL-padded */
};

static const struct golden cases[] = {
    {__LINE__, "student_code", {"gocertify_student_verified_at", NULL}},
    {__LINE__,
     "key_worker_nhs_deal",
     {"gocertify_key_worker_verified_at", "gocertify_nhs_worker_verified_at"}},
    {__LINE__, "email_only", {NULL, NULL}},  /* a consent verifies nothing */
    {__LINE__, "mobile_only", {NULL, NULL}}, /* user_country from +44 */
    {__LINE__, "all_optionals_absent", {NULL, NULL}},
    {__LINE__,
     "non_ascii_group",
     {"gocertify_tudiants_apprentis_verified_at",
      "gocertify_lves_ingnieurs_verified_at"}},
};

/* The verified-at fields of ev match c->fields; prints the difference. */
static int
check_fields(const struct golden *c, const struct gc_event *ev)
{
	const char *names[2];
	char field[128];
	int n = payload_verified_groups(ev, names), ok = 1;

	for (int i = 0; i < 2; i++) {
		const char *have = "(none)";
		if (i < n) {
			assert_int_equal(payload_verified_field(names[i], field,
			                                        sizeof(field)),
			                 GC_OK);
			have = field;
		}
		const char *want = c->fields[i] ? c->fields[i] : "(none)";
		if (strcmp(have, want) != 0) {
			print_error("%s:%d: %s: field %d: have %s, want %s\n",
			            __FILE__, c->line, c->name, i, have, want);
			ok = 0;
		}
	}
	return ok;
}

/* Parse <case>.in.json, build, compare with <case>.out.json. */
static int
check_case(const struct golden *c)
{
	char rel[128], *in, *want, *have;
	struct ev_problem prob;
	struct gc_event ev;
	size_t inlen, wantlen;
	json_t *payload;
	int ok;

	snprintf(rel, sizeof(rel), "payload/%s.in.json", c->name);
	in = slurp(rel, &inlen);
	snprintf(rel, sizeof(rel), "payload/%s.out.json", c->name);
	want = slurp(rel, &wantlen);
	while (wantlen > 0 && want[wantlen - 1] == '\n')
		want[--wantlen] = '\0';
	if (event_parse(in, inlen, NOW, &ev, &prob) != GC_OK)
		fail_msg("%s:%d: %s.in.json rejected: %s", __FILE__, c->line,
		         c->name, prob.detail);
	payload = payload_build(&ev);
	assert_non_null(payload);
	have = json_dumps(payload, JSON_COMPACT | JSON_PRESERVE_ORDER);
	ok = strcmp(have, want) == 0;
	if (!ok)
		print_error("%s:%d: %s:\nhave %s\nwant %s\n", __FILE__, c->line,
		            c->name, have, want);
	ok &= check_fields(c, &ev);
	free(have);
	json_decref(payload);
	event_fini(&ev);
	free(in);
	free(want);
	return ok;
}

static void
test_golden(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		failed += !check_case(&cases[i]);
	assert_int_equal(failed, 0);
}

/* One line of slugs.txt: "name<TAB>field" or "name<TAB>ERROR". */
static int
check_slug_line(int lineno, char *line)
{
	char *tab = strchr(line, '\t'), have[128];
	const char *want;
	enum gc_err err;

	if (tab == NULL)
		fail_msg("slugs.txt:%d: no tab", lineno);
	*tab = '\0';
	want = tab + 1;
	err = payload_verified_field(line, have, sizeof(have));
	if (err != GC_OK)
		snprintf(have, sizeof(have), "ERROR");
	if (strcmp(have, want) == 0)
		return 1;
	print_error("slugs.txt:%d: \"%s\": have %s, want %s\n", lineno, line,
	            have, want);
	return 0;
}

static void
test_slugs(void **state)
{
	size_t len;
	char *text = slurp("slugs.txt", &len), *line, *next;
	int lineno = 0, failed = 0, rows = 0;

	(void)state;
	for (line = text; line < text + len; line = next) {
		char *nl = strchr(line, '\n');
		next = nl != NULL ? nl + 1 : text + len;
		if (nl != NULL)
			*nl = '\0';
		lineno++;
		if (line[0] == '#' || line[0] == '\0')
			continue;
		rows++;
		failed += !check_slug_line(lineno, line);
	}
	free(text);
	assert_true(rows >= 9);
	assert_int_equal(failed, 0);
}

struct group_row {
	int line;
	enum ev_kind kind;
	const char *type, *parent, *child;
	int want;
	const char *want0, *want1;
};

static const struct group_row group_rows[] = {
    {__LINE__, EV_OFFER_CLAIMED, "Occupation", "Key Worker", "NHS Worker", 2,
     "Key Worker", "NHS Worker"},
    {__LINE__, EV_OFFER_CLAIMED, "Occupation", "Key Worker", NULL, 1,
     "Key Worker", NULL},
    {__LINE__, EV_OFFER_CLAIMED, "Occupation", NULL, "NHS Worker", 1,
     "NHS Worker", NULL},
    {__LINE__, EV_OFFER_CLAIMED, "Student", NULL, NULL, 1, "Student", NULL},
    {__LINE__, EV_OFFER_CLAIMED, NULL, NULL, NULL, 0, NULL, NULL},
    /* Same field twice is asked only once. */
    {__LINE__, EV_OFFER_CLAIMED, NULL, "Student", "student", 1, "Student",
     NULL},
    /* A consent verifies nothing. */
    {__LINE__, EV_CONSENT_INTENT, "Occupation", "Key Worker", "NHS Worker", 0,
     NULL, NULL},
};

static int
same(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void
test_verified_groups(void **state)
{
	int failed = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(group_rows) / sizeof(group_rows[0]);
	     i++) {
		const struct group_row *r = &group_rows[i];
		struct gc_event ev = {.kind = r->kind};
		const char *names[2] = {"x", "x"};
		int n;

		ev.pending_group_type = (char *)r->type;
		ev.pending_group_parent = (char *)r->parent;
		ev.pending_group_child = (char *)r->child;
		n = payload_verified_groups(&ev, names);
		if (n != r->want || !same(names[0], r->want0) ||
		    !same(names[1], r->want1)) {
			print_error("%s:%d: have %d [%s, %s], want %d\n",
			            __FILE__, r->line, n,
			            names[0] ? names[0] : "NULL",
			            names[1] ? names[1] : "NULL", r->want);
			failed++;
		}
	}
	assert_int_equal(failed, 0);
}

/* Empty strings are omitted like NULL ones; required ones too. */
static void
test_build_omits(void **state)
{
	struct gc_event ev = {.kind = EV_OFFER_CLAIMED};
	json_t *p;
	char *s;

	(void)state;
	ev.type = (char *)"Code";
	ev.subid = (char *)"";
	ev.campaign_id = 5;
	ev.occurred_at = 0;
	p = payload_build(&ev);
	assert_non_null(p);
	s = json_dumps(p, JSON_COMPACT | JSON_PRESERVE_ORDER);
	assert_string_equal(s, "{\"type\":\"Code\",\"campaign_id\":5,"
	                       "\"date\":\"1970-01-01T00:00:00Z\"}");
	free(s);
	json_decref(p);
}

/* Edges of payload_group_slug and payload_verified_field. */
static void
test_slug_edges(void **state)
{
	char slug[PAYLOAD_SLUG_MAX], field[25]; /* fits "ab" exactly */

	(void)state;
	assert_int_equal(payload_group_slug(NULL, slug), GC_EINVAL);
	assert_string_equal(slug, "");
	assert_int_equal(payload_group_slug("A-B", slug), GC_OK);
	assert_string_equal(slug, "a_b");
	assert_int_equal(
	    payload_verified_field("Key Worker", field, sizeof(field)),
	    GC_ETOOBIG);
	assert_string_equal(field, "");
	assert_int_equal(payload_verified_field("!!!", field, sizeof(field)),
	                 GC_EINVAL);
	assert_int_equal(payload_verified_field("ab", field, sizeof(field)),
	                 GC_OK);
	assert_string_equal(field, "gocertify_ab_verified_at");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_golden),
	    cmocka_unit_test(test_slugs),
	    cmocka_unit_test(test_verified_groups),
	    cmocka_unit_test(test_build_omits),
	    cmocka_unit_test(test_slug_edges),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
