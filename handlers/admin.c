/*
 * The admin JSON API (/admin/v1): signature check and brand configuration.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin_sig.h"
#include "brand.h"
#include "delivery_limits.h"
#include "emarsys.h"
#include "engine.h"
#include "handlers.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "yotpo.h"

/*
 * Refuse with the one 401 text; the reason goes to the log and the
 * metrics only, so the answer does not tell a known key id from an
 * unknown one.
 */
static int
admin_unauthorized(struct request *req, enum admin_sig_fail f)
{
	metrics_auth_failure(M_AUTH_ADMIN, (int)f);
	log_warnx("admin auth failed: %s", admin_sig_fail_names[f]);
	request_problem(req, 401, "unauthorized", ADMIN_SIG_DETAIL, NULL);
	req->admin_key = NULL;
	return -1;
}

/*
 * Record a valid signature in the shared replay cache: each signed
 * request is good once, in every process.  0 when first seen, else -1
 * with the problem in req.
 */
static int
admin_once(struct request *req, const char *sig, const char *ts, time_t now)
{
	char canon[ADMIN_SIG_LEN];
	enum gc_err err;

	if (admin_sig_canonical(sig, canon) != 0)
		return admin_unauthorized(req, ADMIN_SIG_BAD_FORMAT);
	/* admin_sig_check parsed ts already: digits, at most 12. */
	err = store_admin_replay(req->st, canon, strtoll(ts, NULL, 10), now,
	                         req->cfg->admin_tolerance_s);
	if (err == GC_EEXISTS)
		return admin_unauthorized(req, ADMIN_SIG_REPLAYED);
	if (err != GC_OK) {
		req->admin_key = NULL;
		request_problem(req, request_status_for(err), "store",
		                gc_strerror(err), NULL);
		return -1;
	}
	return 0;
}

/* See handlers.h. */
int
admin_authenticate(struct request *req)
{
	const char *ts = request_param(req, "HTTP_X_GCRELAY_TIMESTAMP");
	const char *sig = request_param(req, "HTTP_X_GCRELAY_SIGNATURE");
	enum admin_sig_fail f;
	time_t now = time(NULL);

	if (request_body_or_problem(req) != 0)
		return -1;
	f = admin_sig_check(req->cfg, request_param(req, "HTTP_X_GCRELAY_KEY"),
	                    ts, sig, req->method, req->uri, buf_str(&req->body),
	                    req->body.len, now, &req->admin_key);
	if (f != ADMIN_SIG_OK)
		return admin_unauthorized(req, f);
	return admin_once(req, sig, ts, now);
}

/* Slug from the path, or a 400 already in req. */
static const char *
admin_slug(struct request *req)
{
	const char *slug = req->captures[0];

	if (slug == NULL || !brand_slug_valid(slug)) {
		request_problem(req, 400, "invalid_slug",
		                "brand slug must match [a-z0-9][a-z0-9-]{0,63}",
		                NULL);
		return NULL;
	}
	return slug;
}

static void
admin_store_error(struct request *req, enum gc_err err)
{
	if (err == GC_ENOTFOUND)
		request_problemf(req, 404, "not_found", "no brand %s",
		                 req->captures[0] ? req->captures[0] : "");
	else
		request_problem(req, request_status_for(err), "store",
		                gc_strerror(err), NULL);
}

/* Stored document of slug parsed, or NULL with *err set. */
static json_t *
admin_stored(struct request *req, const char *slug, enum gc_err *err)
{
	char *text = NULL;
	json_t *doc;

	if ((*err = store_brand_get(req->st, slug, &text)) != GC_OK)
		return NULL;
	doc = json_loads(text, 0, NULL);
	free(text);
	if (doc == NULL)
		*err = GC_ESTORE;
	return doc;
}

/* GET /admin/v1/brands */
void
admin_brands_list(struct request *req)
{
	json_t *docs, *out, *v;
	enum gc_err err;
	size_t i;

	if ((err = store_brand_list(req->st, &docs)) != GC_OK) {
		admin_store_error(req, err);
		return;
	}
	out = json_array();
	json_array_foreach (docs, i, v) {
		json_t *doc = json_loads(json_string_value(v), 0, NULL);
		if (doc != NULL)
			json_array_append_new(
			    out, brand_doc_public(doc, req->cfg->secrets_key));
		json_decref(doc);
	}
	json_decref(docs);
	request_json(req, 200, json_pack("{s:o}", "brands", out));
}

/* GET /admin/v1/brands/{slug} */
void
admin_brand_get(struct request *req)
{
	const char *slug = admin_slug(req);
	json_t *doc;
	enum gc_err err;

	if (slug == NULL)
		return;
	if ((doc = admin_stored(req, slug, &err)) == NULL) {
		admin_store_error(req, err);
		return;
	}
	request_json(req, 200, brand_doc_public(doc, req->cfg->secrets_key));
	json_decref(doc);
}

/* Parse the JSON body, or a 415/400 already in req. */
static json_t *
admin_body_json(struct request *req)
{
	json_error_t jerr;
	json_t *in;

	if (!request_is_json(req)) {
		request_problem(req, 415, "unsupported_media_type",
		                "Content-Type must be application/json", NULL);
		return NULL;
	}
	in = json_loadb(buf_str(&req->body), req->body.len,
	                JSON_REJECT_DUPLICATES, &jerr);
	if (in == NULL)
		request_problemf(req, 400, "malformed_json",
		                 "malformed JSON at line %d column %d: %s",
		                 jerr.line, jerr.column, jerr.text);
	return in;
}

/* PUT /admin/v1/brands/{slug} */
void
admin_brand_put(struct request *req)
{
	const char *slug = admin_slug(req);
	json_t *in, *stored, *sealed = NULL, *errors;
	enum gc_err err;
	char *text;
	int created;

	if (slug == NULL || (in = admin_body_json(req)) == NULL)
		return;
	stored = admin_stored(req, slug, &err);
	if (stored == NULL && err != GC_ENOTFOUND) {
		json_decref(in);
		admin_store_error(req, err);
		return;
	}
	errors = json_array();
	err = brand_doc_merge(in, stored, slug, req->cfg->secrets_key, &sealed,
	                      errors);
	json_decref(in);
	json_decref(stored);
	if (err != GC_OK) {
		request_problem(req, 400, "invalid_brand",
		                "the brand document has invalid fields",
		                json_pack("{s:o}", "errors", errors));
		return;
	}
	json_decref(errors);
	text = jsonutil_compact(sealed);
	err = text ? store_brand_put(req->st, slug, text, &created) : GC_ENOMEM;
	free(text);
	if (err != GC_OK) {
		json_decref(sealed);
		admin_store_error(req, err);
		return;
	}
	log_info("brand %s %s by key %s", slug, created ? "created" : "updated",
	         req->admin_key->id);
	request_json(req, created ? 201 : 200,
	             brand_doc_public(sealed, req->cfg->secrets_key));
	json_decref(sealed);
}

/* DELETE /admin/v1/brands/{slug} */
void
admin_brand_delete(struct request *req)
{
	const char *slug = admin_slug(req);
	enum gc_err err;

	if (slug == NULL)
		return;
	if ((err = store_brand_delete(req->st, slug)) != GC_OK) {
		admin_store_error(req, err);
		return;
	}
	log_info("brand %s deleted by key %s", slug, req->admin_key->id);
	buf_reset(&req->out);
	req->status = 204;
	req->content_type = "application/json";
}

/* The list's query parameters, decoded; borrowed by struct event_filter. */
struct events_query {
	char brand[80], status[16], since[40], limit[8], cursor[24];
};

/* Answer 400 invalid_query naming the parameter in detail and field. */
static void
admin_bad_query(struct request *req, const char *name, const char *rule)
{
	char detail[160];

	snprintf(detail, sizeof(detail), "%s %s", name, rule);
	request_problem(req, 400, "invalid_query", detail,
	                json_pack("{s:s}", "field", name));
}

/*
 * Query parameter name into out: 1 present, 0 absent.  A value that does
 * not percent-decode or is too long answers 400 and gives -1: dropping it
 * would widen the filter to what was not asked for.
 */
static int
admin_query(struct request *req, const char *name, char *out, size_t n)
{
	int rc = request_query(req, name, out, n);

	if (rc < 0)
		admin_bad_query(req, name, "is malformed or too long");
	return rc;
}

static int
admin_events_status(struct request *req, struct events_query *q,
                    struct event_filter *f)
{
	static const char *const statuses[] = {"pending", "delivered", "failed",
	                                       NULL};
	int i, rc;

	if ((rc = admin_query(req, "status", q->status, sizeof(q->status))) !=
	    1)
		return rc;
	for (i = 0; statuses[i] && strcmp(statuses[i], q->status); i++)
		;
	if (statuses[i] == NULL) {
		admin_bad_query(req, "status",
		                "must be pending, delivered or failed");
		return -1;
	}
	f->status = q->status;
	return 1;
}

static int
admin_events_limit(struct request *req, struct events_query *q,
                   struct event_filter *f)
{
	char *end;
	long l;
	int rc;

	if ((rc = admin_query(req, "limit", q->limit, sizeof(q->limit))) != 1)
		return rc;
	l = strtol(q->limit, &end, 10);
	if (*end != '\0' || l < 1 || l > 500) {
		admin_bad_query(req, "limit", "must be 1 to 500");
		return -1;
	}
	f->limit = (int)l;
	return 1;
}

/* Fill f from the query; -1 once a parameter has been answered 400. */
static int
admin_events_filter(struct request *req, struct events_query *q,
                    struct event_filter *f)
{
	int rc;

	if ((rc = admin_query(req, "brand", q->brand, sizeof(q->brand))) < 0)
		return -1;
	f->brand = rc == 1 ? q->brand : NULL;
	if (admin_events_status(req, q, f) < 0)
		return -1;
	if ((rc = admin_query(req, "since", q->since, sizeof(q->since))) < 0)
		return -1;
	if (rc == 1 && request_parse_time(q->since, &f->since_ms) != 0) {
		admin_bad_query(req, "since",
		                "must be unix seconds or YYYY-MM-DDTHH:MM:SSZ");
		return -1;
	}
	if (admin_events_limit(req, q, f) < 0)
		return -1;
	if ((rc = admin_query(req, "cursor", q->cursor, sizeof(q->cursor))) < 0)
		return -1;
	if (rc == 1 && strspn(q->cursor, "0123456789") != strlen(q->cursor)) {
		admin_bad_query(req, "cursor", "is not one this API returned");
		return -1;
	}
	f->cursor = rc == 1 ? q->cursor : NULL;
	return 0;
}

/*
 * GET /admin/v1/events?brand=&status=&since=&limit=&cursor=
 * A parameter that is malformed, too long or out of range answers 400
 * problem+json naming it (detail and "field").
 */
void
admin_events_list(struct request *req)
{
	struct events_query q;
	struct event_filter f = {.limit = 50};
	json_t *out;
	enum gc_err err;

	if (admin_events_filter(req, &q, &f) != 0)
		return;
	if ((err = store_events_list(req->st, &f, &out)) != GC_OK) {
		request_problem(req, request_status_for(err), "store",
		                gc_strerror(err), NULL);
		return;
	}
	request_json(req, 200, out);
}

/* GET /admin/v1/events/{id} */
void
admin_event_get(struct request *req)
{
	json_t *out;
	enum gc_err err = store_event_detail(req->st, req->captures[0], &out);

	if (err == GC_ENOTFOUND)
		request_problemf(req, 404, "not_found", "no event %.100s",
		                 req->captures[0]);
	else if (err != GC_OK)
		request_problem(req, request_status_for(err), "store",
		                gc_strerror(err), NULL);
	else
		request_json(req, 200, out);
}

/*
 * POST /admin/v1/events/{id}/redeliver: hand its undelivered parts to the
 * dispatcher, due now; the answer shows them pending.
 */
void
admin_event_redeliver(struct request *req)
{
	json_t *out;
	enum gc_err err;
	int count = 0, ok;

	err = engine_redeliver(req->eng, req->captures[0], &count);
	if (err == GC_OK)
		err = store_event_outcome(req->st, req->captures[0], &out, &ok);
	if (err == GC_ENOTFOUND) {
		request_problemf(req, 404, "not_found", "no event %.100s",
		                 req->captures[0]);
		return;
	}
	if (err != GC_OK) {
		request_problem(req, request_status_for(err), "store",
		                gc_strerror(err), NULL);
		return;
	}
	log_info("event %s redelivered by key %s (%d requeued)",
	         req->captures[0], req->admin_key->id, count);
	json_object_set_new(out, "requeued", json_integer(count));
	request_json(req, 200, out);
}

/*
 * One end of a redelivery window: absent (ms untouched), unix seconds as
 * a JSON integer or a string, or "YYYY-MM-DDTHH:MM:SSZ"; -1 for anything
 * else, never ignored.
 */
static int
admin_window_end(const json_t *in, const char *key, int64_t *ms)
{
	const json_t *v = json_object_get(in, key);

	if (v == NULL)
		return 0;
	if (json_is_integer(v) && json_integer_value(v) >= 0 &&
	    json_integer_value(v) <= INT64_MAX / 1000) {
		*ms = (int64_t)json_integer_value(v) * 1000;
		return 0;
	}
	return json_is_string(v) ? request_parse_time(json_string_value(v), ms)
	                         : -1;
}

/*
 * POST /admin/v1/brands/{slug}/redeliver {"since","until"}: make the
 * brand's failed and dead deliveries in the window due now; the dispatcher
 * runs them.
 */
void
admin_brand_redeliver(struct request *req)
{
	const char *slug = admin_slug(req);
	int64_t since = 0, until = INT64_MAX;
	json_t *in = NULL;
	int count = 0;
	enum gc_err err;

	if (slug == NULL)
		return;
	if (req->body.len > 0 && (in = admin_body_json(req)) == NULL)
		return;
	if (admin_window_end(in, "since", &since) != 0 ||
	    admin_window_end(in, "until", &until) != 0) {
		json_decref(in);
		request_problem(req, 400, "invalid_window",
		                "since and until must be unix seconds or "
		                "YYYY-MM-DDTHH:MM:SSZ",
		                NULL);
		return;
	}
	json_decref(in);
	err = store_brand_requeue(req->st, slug, since, until, &count);
	if (err != GC_OK) {
		admin_store_error(req, err);
		return;
	}
	if (count > 0) {
		limits_wake();
		store_wake_others(req->st);
	}
	log_info("brand %s: %d deliveries requeued by key %s", slug, count,
	         req->admin_key->id);
	request_json(req, 202,
	             json_pack("{s:s, s:i}", "brand", slug, "requeued", count));
}

/*
 * POST /admin/v1/brands/{slug}/check: call the real APIs with the brand's
 * credentials and report, item by item, what works and what the brand
 * still has to fix.  Read-only: creates nothing remotely.
 */
void
admin_brand_check(struct request *req)
{
	const char *slug = admin_slug(req);
	struct brand b;
	json_t *checks, *c;
	enum gc_err err;
	size_t i;
	int ok = 1;

	if (slug == NULL)
		return;
	if ((err = brand_load(req->st, req->cfg->secrets_key, slug, &b)) !=
	    GC_OK) {
		admin_store_error(req, err);
		return;
	}
	checks = json_array();
	if (b.has_emarsys)
		emarsys_preflight(req->cfg, &b, engine_httpc(req->eng), checks);
	if (b.has_yotpo)
		yotpo_preflight(req->cfg, &b, engine_httpc(req->eng), checks);
	brand_fini(&b);
	json_array_foreach (checks, i, c)
		if (!json_is_true(json_object_get(c, "ok")))
			ok = 0;
	request_json(req, 200,
	             json_pack("{s:s, s:b, s:o}", "brand", slug, "ok", ok,
	                       "checks", checks));
}
