/*
 * POST /v1/events: the signed webhook intake (DESIGN.md, Inbound).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "brand.h"
#include "engine.h"
#include "event.h"
#include "handlers.h"
#include "jsonutil.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "webhook.h"

/* webhook-id: 1..256 printable ASCII characters without spaces. */
static int
webhook_id_ok(const char *id)
{
	size_t n = strlen(id);

	if (n == 0 || n > 256)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (id[i] <= ' ' || id[i] > '~')
			return 0;
	return 1;
}

/* Read the body and check the signature; 0 when the request may go on. */
static int
events_authenticate(struct request *req, const char **id)
{
	enum webhook_fail f;

	if (request_body_or_problem(req) != 0)
		return -1;
	*id = request_param(req, "HTTP_WEBHOOK_ID");
	f = webhook_verify(req->cfg->webhook_keys, req->cfg->nwebhook_keys, *id,
	                   request_param(req, "HTTP_WEBHOOK_TIMESTAMP"),
	                   request_param(req, "HTTP_WEBHOOK_SIGNATURE"),
	                   buf_str(&req->body), req->body.len, time(NULL),
	                   req->cfg->webhook_tolerance_s);
	if (f != WEBHOOK_OK) {
		metrics_auth_failure(M_AUTH_WEBHOOK, (int)f);
		log_warnx("webhook rejected: %s", webhook_fail_names[f]);
		request_problem(req, 401, "invalid_signature",
		                webhook_fail_names[f], NULL);
		return -1;
	}
	if (!webhook_id_ok(*id)) {
		request_problem(req, 400, "invalid_webhook_id",
		                "webhook-id must be 1 to 256 printable "
		                "characters without spaces",
		                NULL);
		return -1;
	}
	return 0;
}

/* For metrics: the kind a rejected body names, or -1. */
static int
events_kind_hint(const struct request *req)
{
	json_t *root = json_loadb(buf_str(&req->body), req->body.len, 0, NULL);
	const char *kind = jsonutil_str(root, "event");
	int k = -1;

	for (int i = 0; kind != NULL && i < EV__MAX; i++)
		if (strcmp(kind, ev_kind_names[i]) == 0)
			k = i;
	json_decref(root);
	return k;
}

static void
events_reject(struct request *req, int kind, int status, const char *code,
              const char *detail, const char *field)
{
	metrics_event(kind, M_EV_REJECTED);
	request_problem(req, status, code, detail,
	                field ? json_pack("{s:s}", "field", field) : NULL);
}

/* Load the event's brand or answer 404/5xx. */
static int
events_brand(struct request *req, const struct gc_event *ev, struct brand *b)
{
	char detail[160];
	enum gc_err err;

	err = brand_load(req->st, req->cfg->secrets_key, ev->brand_slug, b);
	if (err == GC_OK)
		return 0;
	if (err == GC_ENOTFOUND) {
		snprintf(detail, sizeof(detail),
		         "brand_slug: no brand \"%s\" is configured",
		         ev->brand_slug);
		events_reject(req, (int)ev->kind, 404, "unknown_brand", detail,
		              "brand_slug");
	} else if (err == GC_ECRYPTO) {
		log_errorx("brand %s: secrets do not decrypt (wrong "
		           "secrets_key_file?)",
		           ev->brand_slug);
		request_problem(req, 500, "brand_secrets",
		                "brand credentials cannot be decrypted", NULL);
	} else
		request_problem(req, 503, "store_unavailable",
		                "the store is unavailable; retry later", NULL);
	return -1;
}

/*
 * Answer 503 when the store would not keep the event (store_usable), or
 * once recorded did not keep it (store_kept), so the sender retries; 0
 * when it is healthy.
 */
static int
events_store_down(struct request *req, int recorded)
{
	char why[256], detail[400];

	if ((recorded ? store_kept : store_usable)(req->st, why, sizeof(why)) ==
	    GC_OK)
		return 0;
	snprintf(detail, sizeof(detail),
	         "the store is unavailable (%s); the event was not recorded; "
	         "retry later",
	         why);
	request_problem(req, 503, "store_unavailable", detail, NULL);
	return 1;
}

/* See handlers.h. */
void
events_post(struct request *req)
{
	struct gc_event ev;
	struct ev_problem prob;
	struct brand b;
	const char *id = NULL;
	json_t *outcome;
	enum gc_err err;
	int status;

	if (events_authenticate(req, &id) != 0)
		return;
	if (!request_is_json(req)) {
		events_reject(req, -1, 415, "unsupported_media_type",
		              "Content-Type must be application/json", NULL);
		return;
	}
	memset(&prob, 0, sizeof(prob));
	err = event_parse(buf_str(&req->body), req->body.len, time(NULL), &ev,
	                  &prob);
	if (err != GC_OK) {
		events_reject(req, events_kind_hint(req),
		              err == GC_ENOMEM ? 500 : 400, "invalid_event",
		              prob.detail, prob.field[0] ? prob.field : NULL);
		return;
	}
	if (events_store_down(req, 0) || events_brand(req, &ev, &b) != 0) {
		event_fini(&ev);
		return;
	}
	err = engine_submit(req->eng, id, &ev, &b, &outcome, &status);
	brand_fini(&b);
	event_fini(&ev);
	if (err != GC_OK) {
		request_problem(req, 503, "store_unavailable",
		                "the event could not be recorded; nothing was "
		                "delivered; retry later",
		                NULL);
		return;
	}
	/* No 2xx unless the record lasts (on SQLite: is in the file at the
	 * store's path). */
	if (events_store_down(req, 1)) {
		json_decref(outcome);
		return;
	}
	request_json(req, status, outcome);
}
