/*
 * The Gocertify payload sent to Emarsys as external-event data, and the
 * names of the gocertify_<group>_verified_at contact fields (DESIGN.md,
 * "The Gocertify payload" and "Emarsys").
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "payload.h"

#define PAYLOAD_TIME_BUF 64

/* A payload member copied from a string member of struct gc_event. */
struct payload_key {
	const char *name;
	size_t off; /* offsetof(struct gc_event, <char *member>) */
};

/* Members before campaign_id, in the documented order. */
static const struct payload_key payload_head[] = {
    {"type", offsetof(struct gc_event, type)},
    {"pending_group_type", offsetof(struct gc_event, pending_group_type)},
    {"pending_group_parent", offsetof(struct gc_event, pending_group_parent)},
    {"pending_group_child", offsetof(struct gc_event, pending_group_child)},
    {"token", offsetof(struct gc_event, token)},
    {"subid", offsetof(struct gc_event, subid)},
    {"brand_slug", offsetof(struct gc_event, brand_slug)},
    {"brand_country", offsetof(struct gc_event, brand_country)},
    {"user_country", offsetof(struct gc_event, user_country)},
};

/* Members between campaign_id and date. */
static const struct payload_key payload_tail[] = {
    {"campaign_title", offsetof(struct gc_event, campaign_title)},
    {"campaign_url", offsetof(struct gc_event, campaign_url)},
    {"iframe_parent_url", offsetof(struct gc_event, iframe_parent_url)},
};

/*
 * Add the members keys[0..n) that are set and non-empty to o.  0 on
 * success, -1 when memory ran out.
 */
static int
put_strings(json_t *o, const struct gc_event *ev,
            const struct payload_key *keys, size_t n)
{
	int fail = 0;

	for (size_t i = 0; i < n; i++) {
		const char *s =
		    *(char *const *)(const void *)((const char *)ev +
		                                   keys[i].off);
		if (s != NULL && *s != '\0')
			fail |= json_object_set_new(o, keys[i].name,
			                            json_string(s));
	}
	return fail;
}

/* t as "YYYY-MM-DDTHH:MM:SSZ"; "" when it cannot be represented. */
static void
payload_time(time_t t, char out[PAYLOAD_TIME_BUF])
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(out, PAYLOAD_TIME_BUF, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		out[0] = '\0';
}

/*
 * See payload.h.  campaign_id is a JSON integer; date is occurred_at in
 * UTC.  Caller owns the reference (json_decref).
 */
json_t *
payload_build(const struct gc_event *ev)
{
	char date[PAYLOAD_TIME_BUF];
	json_t *o;
	int fail;

	if ((o = json_object()) == NULL)
		return NULL;
	payload_time(ev->occurred_at, date);
	fail = put_strings(o, ev, payload_head,
	                   sizeof(payload_head) / sizeof(payload_head[0]));
	fail |= json_object_set_new(o, "campaign_id",
	                            json_integer(ev->campaign_id));
	fail |= put_strings(o, ev, payload_tail,
	                    sizeof(payload_tail) / sizeof(payload_tail[0]));
	fail |= json_object_set_new(o, "date", json_string(date));
	if (fail != 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static int
slug_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/*
 * See payload.h.  "Key Worker" -> "key_worker", "Étudiant" -> "tudiant"
 * (bytes outside ASCII are dropped, they do not separate), "日本" and
 * "!!!" -> GC_EINVAL.  out is "" on failure.
 */
enum gc_err
payload_group_slug(const char *name, char out[PAYLOAD_SLUG_MAX])
{
	size_t n = 0;
	int sep = 0;

	out[0] = '\0';
	if (name == NULL)
		return GC_EINVAL;
	for (const unsigned char *u = (const unsigned char *)name; *u; u++) {
		int c = (*u >= 'A' && *u <= 'Z') ? *u + ('a' - 'A') : *u;
		if (c >= 0x80)
			continue;
		if (!slug_char(c)) {
			sep = n > 0; /* no leading "_" */
			continue;
		}
		if (n + sep + 1 >= PAYLOAD_SLUG_MAX) {
			out[0] = '\0';
			return GC_ETOOBIG;
		}
		if (sep)
			out[n++] = '_';
		out[n++] = (char)c;
		sep = 0;
	}
	out[n] = '\0';
	return n > 0 ? GC_OK : GC_EINVAL;
}

/*
 * See payload.h.  Only an offer_claimed event verifies anything; a
 * consent_intent has no verified groups.  When parent and child slug to
 * the same name only the parent is returned, so a contact never gets the
 * same field twice.  Unused slots of names are NULL.
 */
int
payload_verified_groups(const struct gc_event *ev, const char *names[2])
{
	char a[PAYLOAD_SLUG_MAX], b[PAYLOAD_SLUG_MAX];
	const char *parent = ev->pending_group_parent;
	const char *child = ev->pending_group_child;

	names[0] = names[1] = NULL;
	if (ev->kind != EV_OFFER_CLAIMED)
		return 0;
	if (parent != NULL && child != NULL) {
		names[0] = parent;
		if (payload_group_slug(parent, a) != GC_OK ||
		    payload_group_slug(child, b) != GC_OK || strcmp(a, b) != 0)
			names[1] = child;
		return names[1] != NULL ? 2 : 1;
	}
	if (parent != NULL || child != NULL)
		names[0] = parent != NULL ? parent : child;
	else
		names[0] = ev->pending_group_type;
	return names[0] != NULL ? 1 : 0;
}

/*
 * See payload.h.  GC_ETOOBIG when the slug or the field name does not
 * fit; out is "" on failure (when n > 0).
 */
enum gc_err
payload_verified_field(const char *group, char *out, size_t n)
{
	char slug[PAYLOAD_SLUG_MAX];
	enum gc_err err;
	int len;

	if (n > 0)
		out[0] = '\0';
	if ((err = payload_group_slug(group, slug)) != GC_OK)
		return err;
	len = snprintf(out, n, "gocertify_%s_verified_at", slug);
	if (len < 0 || (size_t)len >= n) {
		if (n > 0)
			out[0] = '\0';
		return GC_ETOOBIG;
	}
	return GC_OK;
}
