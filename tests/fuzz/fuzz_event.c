/*
 * libFuzzer target: event_parse on arbitrary bodies.  On acceptance the
 * event must survive event_to_json -> event_from_json -> event_to_json
 * unchanged, satisfy the invariants of struct gc_event, and make a
 * payload and its verified-at field names.  On rejection the event must
 * be empty and the problem a bounded, NUL-terminated text.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "event.h"
#include "payload.h"

#define NOW 1800000000

#define CHECK(x)                                                               \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
			        __LINE__, #x);                                 \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
str_eq(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Every member of a and b is the same. */
static int
event_eq(const struct gc_event *a, const struct gc_event *b)
{
	return a->kind == b->kind && str_eq(a->brand_slug, b->brand_slug) &&
	       str_eq(a->email, b->email) && str_eq(a->mobile, b->mobile) &&
	       a->email_opt_in == b->email_opt_in &&
	       a->sms_opt_in == b->sms_opt_in &&
	       str_eq(a->campaign_slug, b->campaign_slug) &&
	       str_eq(a->type, b->type) &&
	       str_eq(a->pending_group_type, b->pending_group_type) &&
	       str_eq(a->pending_group_parent, b->pending_group_parent) &&
	       str_eq(a->pending_group_child, b->pending_group_child) &&
	       str_eq(a->token, b->token) && str_eq(a->subid, b->subid) &&
	       str_eq(a->brand_country, b->brand_country) &&
	       str_eq(a->user_country, b->user_country) &&
	       a->campaign_id == b->campaign_id &&
	       str_eq(a->campaign_title, b->campaign_title) &&
	       str_eq(a->campaign_url, b->campaign_url) &&
	       str_eq(a->iframe_parent_url, b->iframe_parent_url) &&
	       a->occurred_at == b->occurred_at;
}

/* What a validated event always holds. */
static void
check_invariants(const struct gc_event *ev)
{
	CHECK(ev->kind == EV_CONSENT_INTENT || ev->kind == EV_OFFER_CLAIMED);
	CHECK(ev->brand_slug != NULL && *ev->brand_slug != '\0');
	CHECK(ev->email != NULL || ev->mobile != NULL);
	CHECK(ev->email == NULL || *ev->email != '\0');
	CHECK(ev->mobile == NULL || ev->mobile[0] == '+');
	CHECK(ev->email_opt_in == EV_OPT_UNSET || ev->email != NULL);
	CHECK(ev->sms_opt_in == EV_OPT_UNSET || ev->mobile != NULL);
	CHECK(str_eq(ev->type, "Code") || str_eq(ev->type, "Deal"));
	CHECK(ev->token != NULL && ev->campaign_title != NULL);
	CHECK(ev->brand_country != NULL && strlen(ev->brand_country) == 2);
	CHECK(ev->user_country == NULL || strlen(ev->user_country) == 2);
	CHECK(ev->campaign_id >= 1);
	CHECK(ev->campaign_url != NULL);
	CHECK(ev->subid == NULL || *ev->subid != '\0');
	CHECK(ev->occurred_at >= 0);
}

/* The payload builds, has no empty value, and groups make field names. */
static void
check_payload(const struct gc_event *ev)
{
	const char *names[2], *key;
	char field[128];
	json_t *p = payload_build(ev), *v;
	int n;

	CHECK(p != NULL);
	json_object_foreach (p, key, v) {
		CHECK(!json_is_null(v));
		CHECK(!json_is_string(v) || json_string_length(v) > 0);
	}
	json_decref(p);
	n = payload_verified_groups(ev, names);
	CHECK(n >= 0 && n <= 2);
	for (int i = 0; i < n; i++)
		CHECK(payload_verified_field(names[i], field, sizeof(field)) ==
		      GC_OK);
}

/* to_json -> from_json -> to_json is the identity. */
static void
check_round_trip(const struct gc_event *ev)
{
	struct gc_event back;
	json_t *j = event_to_json(ev), *j2;
	char *s, *s2;

	CHECK(j != NULL);
	CHECK(event_from_json(j, &back) == GC_OK);
	CHECK(event_eq(ev, &back));
	j2 = event_to_json(&back);
	CHECK(j2 != NULL && json_equal(j, j2));
	s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
	s2 = json_dumps(j2, JSON_COMPACT | JSON_PRESERVE_ORDER);
	CHECK(s != NULL && s2 != NULL && strcmp(s, s2) == 0);
	free(s);
	free(s2);
	json_decref(j);
	json_decref(j2);
	event_fini(&back);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct gc_event empty;
	struct ev_problem prob;
	struct gc_event ev;
	enum gc_err err;

	err = event_parse((const char *)data, size, NOW, &ev, &prob);
	CHECK(memchr(prob.field, '\0', sizeof(prob.field)) != NULL);
	CHECK(memchr(prob.detail, '\0', sizeof(prob.detail)) != NULL);
	if (err != GC_OK) {
		CHECK(err == GC_EINVAL);
		CHECK(memcmp(&ev, &empty, sizeof(ev)) == 0);
		CHECK(prob.detail[0] != '\0');
		return 0;
	}
	check_invariants(&ev);
	check_round_trip(&ev);
	check_payload(&ev);
	event_fini(&ev);
	return 0;
}
