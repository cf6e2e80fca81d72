/*
 * The Emarsys destination (DESIGN.md, Emarsys; reference/emarsys-api.md).
 *
 * One delivery is a small plan worked out step by step: get a token (from
 * the shared cache or the token endpoint), resolve the ids it needs by
 * name (SMS opt-in field, gocertify_*_verified_at fields, the external
 * event), creating what is missing, upsert the contact, then trigger the
 * event with the Gocertify payload.  next() looks at what is known and
 * asks for the first missing piece; response() records what a reply
 * taught.  A retry of the whole delivery is safe: the upsert is
 * idempotent and the trigger carries a deterministic trigger_id.  The
 * token and id caches and the clock are the engine's, handed in as
 * j->env: this file only builds requests and reads replies.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "crypto.h"
#include "dest.h"
#include "emarsys.h"
#include "emarsys_priv.h"
#include "jsonutil.h"
#include "log.h"
#include "payload.h"

#define SMS_FIELD_NAME    "mobile sms opt-in" /* matched case-insensitively */
#define NO_SUCH_FIELD     "none"              /* the account has none */
#define NO_SUCH_FIELD_S   3600 /* look again after this: SMS may be enabled */
#define TOKEN_MARGIN_MS   60000
#define TOKEN_LEASE_MS    5000  /* beyond it another may fetch the token */
#define IDS_LEASE_MS      10000 /* beyond it another may resolve the ids */
#define LEASE_POLL_MS     200   /* how often a waiter looks again */
#define MAX_LISTS         3
#define PROGRESS_UPSERTED "upserted" /* stored: the trigger is what is left */

static const char *const step_names[] = {
    [EM_NONE] = "none",
    [EM_TOKEN] = "token",
    [EM_LIST_FIELDS] = "list_fields",
    [EM_CREATE_FIELD] = "create_field",
    [EM_LIST_EVENTS] = "list_events",
    [EM_CREATE_EVENT] = "create_event",
    [EM_UPSERT] = "upsert_contact",
    [EM_TRIGGER] = "trigger_event",
};
_Static_assert(sizeof(step_names) / sizeof(step_names[0]) == EM__MAX,
               "step_names[] out of step");

/* The API user's endpoint permission each step needs (reference 2.3). */
static const char *const step_perms[] = {
    [EM_NONE] = "-",
    [EM_TOKEN] = "-",
    [EM_LIST_FIELDS] = "field.list",
    [EM_CREATE_FIELD] = "field.create",
    [EM_LIST_EVENTS] = "externalevent.list",
    [EM_CREATE_EVENT] = "externalevent.create",
    [EM_UPSERT] = "contact.update",
    [EM_TRIGGER] = "externalevent.trigger",
};
_Static_assert(sizeof(step_perms) / sizeof(step_perms[0]) == EM__MAX,
               "step_perms[] out of step");

/* ---- reply helpers (emarsys.h) ---- */

/* s as a reply code or id: 1 to 18 ASCII digits; -1 otherwise. */
static long long
em_digits(const char *s)
{
	size_t n = strspn(s, "0123456789");

	if (n == 0 || n > 18 || s[n] != '\0')
		return -1;
	return strtoll(s, NULL, 10);
}

/*
 * See emarsys.h.  A replyCode that is neither a non-negative integer nor
 * a string of digits counts as absent (-1), never as success.
 */
void
emarsys_reply_parse(const struct http_resp *r, struct em_reply *rep)
{
	json_t *c;

	memset(rep, 0, sizeof(*rep));
	rep->code = -1;
	rep->text = "";
	rep->root = json_loadb(buf_str(&r->body), r->body.len, 0, NULL);
	if (!json_is_object(rep->root)) {
		/* Valid JSON but no envelope is as good as no JSON. */
		json_decref(rep->root);
		rep->root = NULL;
		return;
	}
	c = json_object_get(rep->root, "replyCode");
	if (json_is_integer(c) && json_integer_value(c) >= 0 &&
	    json_integer_value(c) <= LONG_MAX)
		rep->code = (long)json_integer_value(c);
	else if (json_is_string(c))
		rep->code = (long)em_digits(json_string_value(c));
	if (jsonutil_str(rep->root, "replyText") != NULL)
		rep->text = jsonutil_str(rep->root, "replyText");
	rep->data = json_object_get(rep->root, "data");
}

/* See emarsys.h. */
void
emarsys_reply_fini(struct em_reply *rep)
{
	json_decref(rep->root);
	memset(rep, 0, sizeof(*rep));
}

/* See emarsys.h. */
int
emarsys_contact_error(const struct em_reply *rep, const char *key_value,
                      long *code, char *msg, size_t n)
{
	json_t *errs = json_object_get(rep->data, "errors"), *mine = NULL, *v;
	const char *k;

	/* errors may be absent, {} or [] (PHP's empty array). */
	if (!json_is_object(errs))
		return 0;
	if (key_value != NULL)
		mine = json_object_get(errs, key_value);
	else
		json_object_foreach (errs, k, v) {
			mine = v;
			break;
		}
	if (mine == NULL)
		return 0;
	*code = 0;
	snprintf(msg, n, "contact rejected");
	if (json_is_object(mine))
		json_object_foreach (mine, k, v) {
			*code = strtol(k, NULL, 10);
			snprintf(msg, n, "%s",
			         json_is_string(v) ? json_string_value(v) : "");
			break;
		}
	return 1;
}

/*
 * See emarsys.h.  Ids go into URL paths and JSON keys, so only digits are
 * taken: a non-negative integer, or a string of 1 to 18 digits.
 */
int
emarsys_id_text(const json_t *v, char out[32])
{
	out[0] = '\0';
	if (json_is_integer(v) && json_integer_value(v) >= 0)
		snprintf(out, 32, "%lld", (long long)json_integer_value(v));
	else if (json_is_string(v) && em_digits(json_string_value(v)) >= 0)
		snprintf(out, 32, "%s", json_string_value(v));
	else
		return 0;
	return 1;
}

/*
 * See emarsys.h.  Brand slugs and event names hold no newline, so with
 * the token last the three parts cannot run into each other.
 */
enum gc_err
emarsys_trigger_id(const char *brand, const char *token, const char *event_name,
                   char out[48])
{
	char hex[65];
	struct buf b;
	enum gc_err err;

	out[0] = '\0';
	buf_init(&b, 0);
	err = buf_printf(&b, "%s\n%s\n%s", brand, event_name,
	                 token != NULL ? token : "");
	if (err == GC_OK)
		err = crypto_sha256_hex(buf_str(&b), b.len, hex);
	buf_free(&b);
	if (err == GC_OK)
		snprintf(out, 48, "gcrelay-%.32s", hex);
	return err;
}

/* ---- building requests ---- */

/* Now on the engine's wall clock: for stored and remote times; waits and
 * holds are monotonic (job_mono_at). */
static int64_t
em_now(const struct job *j)
{
	return j->env->now_ms(j->env->ctx);
}

static void
em_url(struct job *j, const char *path)
{
	const char *base = j->cfg->emarsys_api_base;
	size_t n = strlen(base);

	/* Too long: the request is refused, never sent cut (httpc.h). */
	http_req_url(&j->req, "%s%s%s", base,
	             n > 0 && base[n - 1] == '/' ? "" : "/", path);
}

static void
em_request(struct job *j, enum em_req kind, const char *method,
           const char *path)
{
	struct em_state *s = j->state;

	memset(&j->req, 0, sizeof(j->req));
	j->req.method = method;
	em_url(j, path);
	http_req_header(&j->req, "Content-Type: application/json");
	http_req_header(&j->req, "Accept: application/json");
	http_req_header(&j->req, s->auth);
	if (s->body.len > 0) {
		j->req.body = s->body.ptr;
		j->req.bodylen = s->body.len;
	}
	s->inflight = kind;
	j->step = step_names[kind];
}

/* Body from a JSON value (reference stolen: kept as s->sent, for
 * batching, until the next body). */
static void
em_body(struct em_state *s, json_t *v)
{
	char *text = jsonutil_compact(v);

	buf_reset(&s->body);
	if (text != NULL)
		buf_puts(&s->body, text);
	free(text);
	json_decref(s->sent);
	s->sent = v;
}

static void
em_token_request(struct job *j)
{
	struct em_state *s = j->state;

	memset(&j->req, 0, sizeof(j->req));
	j->req.method = "POST";
	http_req_url(&j->req, "%s", j->cfg->emarsys_token_url);
	http_req_header(&j->req,
	                "Content-Type: application/x-www-form-urlencoded");
	http_req_header(&j->req, "Accept: application/json");
	snprintf(s->userpwd, sizeof(s->userpwd), "%s:%s",
	         j->brand->em_client_id, j->brand->em_client_secret);
	j->req.userpwd = s->userpwd;
	buf_reset(&s->body);
	buf_puts(&s->body, "grant_type=client_credentials");
	j->req.body = s->body.ptr;
	j->req.bodylen = s->body.len;
	s->inflight = EM_TOKEN;
	j->step = step_names[EM_TOKEN];
}

/*
 * Use token from now on: GC_OK, or GC_ETOOBIG when it does not fit
 * s->token (none is set then: a cut token is never sent).
 */
static enum gc_err
em_set_token(struct em_state *s, const char *token)
{
	_Static_assert(sizeof(s->auth) > sizeof(s->token) + 22,
	               "auth[] holds the header with any token that fits");

	if (strlen(token) >= sizeof(s->token)) {
		s->token[0] = s->auth[0] = '\0';
		return GC_ETOOBIG;
	}
	snprintf(s->token, sizeof(s->token), "%s", token);
	snprintf(s->auth, sizeof(s->auth), "Authorization: Bearer %s", token);
	return GC_OK;
}

/* Take a cached token (clear, err as token_get gave them) that is still
 * good for a minute; clear is cleansed. */
static void
em_token_take(struct job *j, enum gc_err err, char *clear, size_t n,
              int64_t exp)
{
	struct em_state *s = j->state;

	if (err == GC_OK && exp - TOKEN_MARGIN_MS > em_now(j))
		(void)em_set_token(s, clear); /* fits: clear is as large */
	OPENSSL_cleanse(clear, n);
}

/* Use the shared cached token when it is still good for a minute. */
static void
em_cached_token(struct job *j)
{
	struct em_state *s = j->state;
	char clear[sizeof(s->token)];
	int64_t exp = 0;
	enum gc_err err;

	err = j->env->token_get(j->env->ctx, j->brand->slug,
	                        j->brand->em_client_id, clear, sizeof(clear),
	                        &exp);
	em_token_take(j, err, clear, sizeof(clear), exp);
}

/* The lease key of the account's field and event ids. */
static void
em_ids_key(const struct job *j, char *key, size_t n)
{
	snprintf(key, n, "ids:%s", j->brand->em_client_id);
}

/* Give back the leases this job holds (the token's, the ids'). */
static void
em_unlease(struct job *j)
{
	struct em_state *s = j->state;
	char key[sizeof(s->scope)];

	if (s->leased)
		j->env->token_unlease(j->env->ctx, j->brand->slug,
		                      j->brand->em_client_id, j->lease->owner);
	if (s->ids_leased) {
		em_ids_key(j, key, sizeof(key));
		j->env->token_unlease(j->env->ctx, j->brand->slug, key,
		                      j->lease->owner);
	}
	s->leased = s->ids_leased = 0;
}

/*
 * Take the lease named key for lease_ms, so that one delivery at a time
 * does what it guards: 1 to go on (*leased set when taken; a store
 * failure does not stop a delivery, which goes on without it); 0 while
 * another holds it (j->wait_until_ms set, or the delivery handed back
 * and finished, saying busy).
 */
static int
em_lease_turn(struct job *j, const char *key, int64_t lease_ms, int *leased,
              const char *busy)
{
	struct em_state *s = j->state;
	int64_t now = em_now(j), held, at, wake;
	enum gc_err err;

	err = j->env->token_lease(j->env->ctx, j->brand->slug, key,
	                          j->lease->owner, now, now + lease_ms, &held);
	if (err != GC_EEXISTS) {
		*leased = err == GC_OK;
		return 1;
	}
	/* Look again shortly, or once the holder's lease has run out. */
	at = now + LEASE_POLL_MS;
	if (held + 1 < at)
		at = held + 1;
	wake = job_mono_at(j, at); /* the lease is stored: wall clock */
	if (job_can_wait(j, wake)) {
		j->wait_until_ms = wake;
		return 0;
	}
	s->finished = 1;
	job_defer(j, now + LEASE_POLL_MS, "%s", busy);
	return 0;
}

/*
 * Without a token: whether to fetch one now (1), holding the account's
 * fetch lease, or to use the one another process just cached (1, with
 * s->token set); 0 while another fetches it (em_lease_turn).
 */
static int
em_token_turn(struct job *j)
{
	struct em_state *s = j->state;

	if (j->env->token_lease == NULL || j->lease == NULL)
		return 1;
	em_cached_token(j);
	if (s->token[0] != '\0')
		return 1;
	return em_lease_turn(j, j->brand->em_client_id, TOKEN_LEASE_MS,
	                     &s->leased,
	                     "another process is fetching the Emarsys token");
}

static void
em_upsert_request(struct job *j)
{
	struct em_state *s = j->state;
	const struct brand *b = j->brand;
	const struct gc_event *ev = j->ev;
	json_t *c = json_object();
	char id[32], date[16];
	struct tm tm;

	snprintf(id, sizeof(id), "%s", s->key_id);
	json_object_set_new(c, id, json_string(s->key_value));
	if (ev->email != NULL) {
		snprintf(id, sizeof(id), "%ld", b->em_field_email);
		json_object_set_new(c, id, json_string(ev->email));
		if (ev->email_opt_in == EV_OPT_YES) {
			snprintf(id, sizeof(id), "%ld", b->em_field_opt_in);
			json_object_set_new(c, id, json_integer(1));
		}
	}
	if (ev->mobile != NULL) {
		snprintf(id, sizeof(id), "%ld", b->em_field_mobile);
		json_object_set_new(c, id, json_string(ev->mobile));
		if (s->want_sms && strcmp(s->sms_id, NO_SUCH_FIELD) != 0)
			json_object_set_new(c, s->sms_id, json_integer(1));
	}
	gmtime_r(&ev->occurred_at, &tm);
	strftime(date, sizeof(date), "%Y-%m-%d", &tm);
	for (int i = 0; i < s->nvf; i++)
		json_object_set_new(c, s->vf[i].id, json_string(date));
	em_body(s,
	        json_pack("{s:s, s:[o]}", "key_id", s->key_id, "contacts", c));
	em_request(j, EM_UPSERT, "PUT", "contact/?create_if_not_exists=1");
}

static void
em_trigger_request(struct job *j)
{
	struct em_state *s = j->state;
	char path[96];

	em_body(s, json_pack("{s:s, s:s, s:s, s:O}", "key_id", s->key_id,
	                     "external_id", s->key_value, "trigger_id",
	                     s->trigger_id, "data", j->payload));
	snprintf(path, sizeof(path), "event/%s/trigger", s->ev_id);
	em_request(j, EM_TRIGGER, "POST", path);
}

/* ---- the plan ---- */

static int
em_skip(const struct gc_event *ev, const struct brand *b, char *buf, size_t n)
{
	if (b->em_key_field == BRAND_KEY_EMAIL && ev->email == NULL) {
		snprintf(buf, n,
		         "event has no email, the brand's Emarsys key "
		         "field");
		return 1;
	}
	if (b->em_key_field == BRAND_KEY_MOBILE && ev->mobile == NULL) {
		snprintf(buf, n,
		         "event has no mobile, the brand's Emarsys key "
		         "field");
		return 1;
	}
	return 0;
}

/*
 * Every id still unknown, for one look-up into ids[4]: how many; *sms
 * when the SMS opt-in field is among them.
 */
static size_t
em_ids_wanted(struct em_state *s, struct em_id *ids, int *sms)
{
	size_t n = 0;

	*sms = s->want_sms && s->sms_id[0] == '\0';
	if (*sms)
		ids[n++] = (struct em_id){"field", SMS_FIELD_NAME, s->sms_id};
	for (int i = 0; i < s->nvf; i++)
		if (s->vf[i].id[0] == '\0')
			ids[n++] =
			    (struct em_id){"field", s->vf[i].name, s->vf[i].id};
	if (s->ev_id[0] == '\0')
		ids[n++] = (struct em_id){"event", s->ev_name, s->ev_id};
	return n;
}

/* After the look-up: an SMS field known absent stays so for a while. */
static void
em_ids_looked(struct job *j, int sms)
{
	struct em_state *s = j->state;

	if (sms && strncmp(s->sms_id, NO_SUCH_FIELD, 4) == 0) {
		/* "none:<when>"; a bare "none" counts as long ago. */
		long long when =
		    s->sms_id[4] == ':' ? strtoll(s->sms_id + 5, NULL, 10) : 0;
		if (em_now(j) / 1000 - when < NO_SUCH_FIELD_S)
			snprintf(s->sms_id, sizeof(s->sms_id), NO_SUCH_FIELD);
		else
			s->sms_id[0] = '\0'; /* list the fields again */
	}
}

/* On a failure the ids it filled are still good; the rest unknown. */
static void
em_cached_ids(struct job *j)
{
	struct em_state *s = j->state;
	const struct dest_env *e = j->env;
	struct em_id ids[4];
	int sms;
	size_t n = em_ids_wanted(s, ids, &sms);

	if (n > 0)
		(void)e->ids_get(e->ctx, s->scope, ids, n);
	em_ids_looked(j, sms);
}

/* The cached token and ids at the start: in one look-up if the env can. */
static void
em_cached(struct job *j)
{
	struct em_state *s = j->state;
	const struct dest_env *e = j->env;
	char clear[sizeof(s->token)];
	struct em_id ids[4];
	int64_t exp = 0;
	enum gc_err err;
	int sms;
	size_t n = em_ids_wanted(s, ids, &sms);

	if (e->cached_get == NULL || n == 0) {
		em_cached_token(j);
		em_cached_ids(j);
		return;
	}
	err = e->cached_get(e->ctx, j->brand->slug, j->brand->em_client_id,
	                    clear, sizeof(clear), &exp, s->scope, ids, n);
	em_token_take(j, err, clear, sizeof(clear), exp);
	em_ids_looked(j, sms);
}

/* Whether some field or event id is still to be resolved. */
static int
em_ids_missing(const struct em_state *s)
{
	if (s->ev_id[0] == '\0' || (s->want_sms && s->sms_id[0] == '\0'))
		return 1;
	for (int i = 0; i < s->nvf; i++)
		if (s->vf[i].id[0] == '\0')
			return 1;
	return 0;
}

/*
 * With ids to resolve: whether to list (and create) them now (1),
 * holding the account's ids lease, or to use those another delivery
 * just cached (1, nothing missing now); 0 while another resolves them
 * (em_lease_turn).  One at a time: a paced account would otherwise see
 * every waiting delivery list the fields, and none of them get to
 * create the missing one before its turn comes round again.
 */
static int
em_ids_turn(struct job *j)
{
	struct em_state *s = j->state;
	char key[sizeof(s->scope)];

	if (s->ids_leased || j->env->token_lease == NULL || j->lease == NULL)
		return 1;
	em_cached_ids(j);
	if (!em_ids_missing(s))
		return 1;
	em_ids_key(j, key, sizeof(key));
	return em_lease_turn(
	    j, key, IDS_LEASE_MS, &s->ids_leased,
	    "another delivery is resolving the Emarsys field and event ids");
}

static enum job_next
em_start(struct job *j)
{
	const struct brand *b = j->brand;
	const struct gc_event *ev = j->ev;
	const char *groups[2];
	struct em_state *s = calloc(1, sizeof(*s));

	if ((j->state = s) == NULL)
		return job_done(j, DEST_RETRY, "out of memory");
	buf_init(&s->body, 0);
	snprintf(s->scope, sizeof(s->scope), "%s:%s", b->slug, b->em_client_id);
	snprintf(s->key_id, sizeof(s->key_id), "%ld",
	         b->em_key_field == BRAND_KEY_MOBILE ? b->em_field_mobile
	                                             : b->em_field_email);
	s->key_value =
	    b->em_key_field == BRAND_KEY_MOBILE ? ev->mobile : ev->email;
	s->want_sms = ev->mobile != NULL && ev->sms_opt_in == EV_OPT_YES;
	if (s->want_sms && b->em_field_sms > 0)
		snprintf(s->sms_id, sizeof(s->sms_id), "%ld", b->em_field_sms);
	if (ev->kind == EV_OFFER_CLAIMED) {
		int n = payload_verified_groups(ev, groups);
		for (int i = 0; i < n; i++)
			if (payload_verified_field(
			        groups[i], s->vf[s->nvf].name,
			        sizeof(s->vf[0].name)) == GC_OK)
				s->nvf++;
	}
	snprintf(s->ev_name, sizeof(s->ev_name), "gocertify_%s",
	         ev_kind_names[ev->kind]);
	/* Without its fixed id a trigger could be applied twice: not sent. */
	if (emarsys_trigger_id(b->slug, ev->token, s->ev_name, s->trigger_id) !=
	    GC_OK) {
		s->finished = 1;
		return job_done(j, DEST_RETRY,
		                "could not compute the trigger id (SHA-256)");
	}
	em_cached(j);
	/* An earlier run upserted the contact (idempotent, but a call). */
	s->upserted = strcmp(j->progress, PROGRESS_UPSERTED) == 0;
	return JOB_REQUEST;
}

/* The next field id to resolve: request to make, or 0 when all known. */
static int
em_next_field(struct job *j)
{
	struct em_state *s = j->state;

	if (s->want_sms && s->sms_id[0] == '\0' && !s->fields_listed) {
		em_request(j, EM_LIST_FIELDS, "GET", "field/translate/en");
		return 1;
	}
	for (int i = 0; i < s->nvf; i++) {
		if (s->vf[i].id[0] != '\0')
			continue;
		if (!s->fields_listed) {
			em_request(j, EM_LIST_FIELDS, "GET",
			           "field/translate/en");
			return 1;
		}
		if (s->vf[i].create_tried) {
			job_done(j, DEST_RETRY,
			         "field %s was neither found nor created",
			         s->vf[i].name);
			s->finished = 1;
			return 1;
		}
		s->vf[i].create_tried = 1;
		s->inflight_field = i;
		em_body(s, json_pack("{s:s, s:s}", "name", s->vf[i].name,
		                     "application_type", "date"));
		em_request(j, EM_CREATE_FIELD, "POST", "field");
		return 1;
	}
	return 0;
}

static int
em_next_event(struct job *j)
{
	struct em_state *s = j->state;

	if (s->ev_id[0] != '\0')
		return 0;
	if (!s->events_listed) {
		buf_reset(&s->body);
		em_request(j, EM_LIST_EVENTS, "GET", "event");
		return 1;
	}
	if (s->ev_create_tried) {
		job_done(j, DEST_RETRY,
		         "external event %s was neither found nor created",
		         s->ev_name);
		s->finished = 1;
		return 1;
	}
	s->ev_create_tried = 1;
	em_body(s, json_pack("{s:s}", "name", s->ev_name));
	em_request(j, EM_CREATE_EVENT, "POST", "event");
	return 1;
}

static enum job_next
em_next(struct job *j)
{
	struct em_state *s = j->state;

	if (s->finished)
		return JOB_DONE;
	if (s->token[0] == '\0' && !em_token_turn(j))
		return s->finished ? JOB_DONE : JOB_WAIT;
	if (s->token[0] == '\0') {
		em_token_request(j);
		return JOB_REQUEST;
	}
	if (em_ids_missing(s) && !em_ids_turn(j))
		return s->finished ? JOB_DONE : JOB_WAIT;
	buf_reset(&s->body);
	if (em_next_field(j) || em_next_event(j))
		return s->finished ? JOB_DONE : JOB_REQUEST;
	if (s->ids_leased)
		em_unlease(j); /* resolved: the next may go */
	if (!s->upserted) {
		em_upsert_request(j);
		return JOB_REQUEST;
	}
	em_trigger_request(j);
	return JOB_REQUEST;
}

/* ---- interpreting replies ---- */

static void
em_finish(struct job *j, enum dest_outcome o, const struct em_reply *rep,
          const char *what)
{
	struct em_state *s = j->state;

	if (rep != NULL && rep->code >= 0)
		job_done(j, o, "%s: Emarsys replyCode %ld: %.200s", what,
		         rep->code, rep->text);
	else
		job_done(j, o, "%s", what);
	s->finished = 1;
}

/* 429: wait for X-RateLimit-Reset when it falls within the budget. */
static void
em_rate_limited(struct job *j, const struct http_resp *r)
{
	struct em_state *s = j->state;
	char v[32];
	int64_t reset_ms = em_now(j) + 60000, hold;
	long long reset;

	if (http_resp_header(r, "X-RateLimit-Reset", v, sizeof(v)) &&
	    (reset = strtoll(v, NULL, 10)) > 0 &&
	    reset < em_now(j) / 1000 + 3600) /* a remote value */
		reset_ms = reset * 1000 + 100;
	/* Waits and holds are monotonic: converted once, here. */
	hold = job_mono_at(j, reset_ms);
	j->hold_until_ms = hold; /* for every call on this account */
	if (job_can_wait(j, hold)) {
		j->wait_until_ms = hold;
		return;
	}
	j->retry_at_ms = reset_ms;
	job_done(j, DEST_RETRY, "rate limited by Emarsys (429) until %lld",
	         (long long)(reset_ms / 1000));
	s->finished = 1;
}

/*
 * What every API reply shares: transport errors, 401, 403, 429, 5xx.
 * Returns 1 when the reply was handled here.
 */
static int
em_common(struct job *j, const struct http_resp *r, const struct em_reply *rep)
{
	struct em_state *s = j->state;

	if (r->result != HTTP_OK) {
		job_done(j, DEST_RETRY, "%s: %s", step_names[s->inflight],
		         r->error);
		s->finished = 1;
		return 1;
	}
	if (r->status == 401) {
		/*
		 * Drop the refused token from the cache if it is still
		 * there, the fresh one of a second 401 too: no delivery
		 * should send a token known to be refused.
		 */
		if (s->token[0] != '\0')
			j->env->token_forget(j->env->ctx, j->brand->slug,
			                     j->brand->em_client_id, s->token);
		s->token[0] = '\0';
		if (s->reauths++ == 0)
			return 1;
		em_finish(j, DEST_FAILED, rep,
		          "Emarsys rejected a fresh access token (401): check "
		          "the API user");
		return 1;
	}
	if (r->status == 403) {
		job_done(j, DEST_FAILED,
		         "Emarsys refused %s (403): the API user lacks the "
		         "endpoint permission %s",
		         step_names[s->inflight], step_perms[s->inflight]);
		s->finished = 1;
		return 1;
	}
	if (r->status == 429) {
		em_rate_limited(j, r);
		return 1;
	}
	if (r->status >= 500 ||
	    (r->status >= 200 && r->status < 300 && rep->root == NULL)) {
		job_done(j, DEST_RETRY, "%s: HTTP %ld from Emarsys",
		         step_names[s->inflight], r->status);
		s->finished = 1;
		return 1;
	}
	return 0;
}

static void
em_on_token(struct job *j, const struct http_resp *r)
{
	struct em_state *s = j->state;
	json_t *root = json_loadb(buf_str(&r->body), r->body.len, 0, NULL);
	json_t *exp = json_object_get(root, "expires_in");
	const char *tok = jsonutil_str(root, "access_token");
	int64_t life = json_is_integer(exp) ? json_integer_value(exp) : 3600;

	if (life < 0 || life > 86400) /* a remote value: keep it sane */
		life = life < 0 ? 0 : 86400;

	j->excerpt[0] = '\0'; /* never record the token */
	if (r->result != HTTP_OK || r->status >= 500 || r->status == 429) {
		job_done(j, DEST_RETRY, "token endpoint: %s",
		         r->result != HTTP_OK ? r->error : "server error");
		s->finished = 1;
	} else if (r->status != 200 || tok == NULL || *tok == '\0') {
		job_excerpt(j, r);
		job_done(
		    j, DEST_FAILED,
		    "Emarsys token endpoint refused the client credentials "
		    "(HTTP %ld)",
		    r->status);
		s->finished = 1;
	} else if (em_set_token(s, tok) != GC_OK) {
		/* Cut, it would only be refused: fail loudly, cache none. */
		job_done(j, DEST_FAILED,
		         "Emarsys token endpoint returned a token of %zu "
		         "bytes; gcrelay takes at most %zu",
		         strlen(tok), sizeof(s->token) - 1);
		s->finished = 1;
	} else {
		j->env->token_put(j->env->ctx, j->brand->slug,
		                  j->brand->em_client_id, tok,
		                  em_now(j) + life * 1000);
	}
	/* After the put: waiters then find the token, or else fetch. */
	em_unlease(j);
	json_decref(root);
}

static void
em_on_list_fields(struct job *j, const struct em_reply *rep)
{
	struct em_state *s = j->state;
	json_t *f;
	size_t i;

	s->fields_listed = 1;
	if (++s->field_lists > MAX_LISTS || rep->code != 0 ||
	    !json_is_array(rep->data)) {
		em_finish(j, DEST_RETRY, rep, "could not list fields");
		return;
	}
	json_array_foreach (rep->data, i, f) {
		const char *name = jsonutil_str(f, "name");
		char id[32];
		if (name == NULL ||
		    !emarsys_id_text(json_object_get(f, "id"), id))
			continue;
		if (s->want_sms && s->sms_id[0] == '\0' &&
		    strcasecmp(name, SMS_FIELD_NAME) == 0) {
			snprintf(s->sms_id, sizeof(s->sms_id), "%s", id);
			j->env->id_put(j->env->ctx, s->scope, "field",
			               SMS_FIELD_NAME, id);
		}
		for (int k = 0; k < s->nvf; k++)
			if (s->vf[k].id[0] == '\0' &&
			    strcasecmp(name, s->vf[k].name) == 0) {
				snprintf(s->vf[k].id, sizeof(s->vf[k].id), "%s",
				         id);
				j->env->id_put(j->env->ctx, s->scope, "field",
				               s->vf[k].name, id);
			}
	}
	if (s->want_sms && s->sms_id[0] == '\0') {
		char mark[32];
		/* Cached as "none:<when>" so the absence is checked again. */
		snprintf(mark, sizeof(mark), NO_SUCH_FIELD ":%lld",
		         (long long)(em_now(j) / 1000));
		snprintf(s->sms_id, sizeof(s->sms_id), NO_SUCH_FIELD);
		j->env->id_put(j->env->ctx, s->scope, "field", SMS_FIELD_NAME,
		               mark);
	}
}

static void
em_on_create(struct job *j, const struct em_reply *rep, int is_field)
{
	struct em_state *s = j->state;
	char id[32];
	char *dst = is_field ? s->vf[s->inflight_field].id : s->ev_id;
	const char *name =
	    is_field ? s->vf[s->inflight_field].name : s->ev_name;

	if (rep->code == 0 &&
	    emarsys_id_text(json_object_get(rep->data, "id"), id)) {
		snprintf(dst, 32, "%s", id);
		j->env->id_put(j->env->ctx, s->scope,
		               is_field ? "field" : "event", name, id);
		return;
	}
	/* Someone created it meanwhile: list again and take its id. */
	if (is_field && rep->code == 9002)
		s->fields_listed = 0;
	else if (!is_field && (rep->code == 5003 || rep->code == 7001))
		s->events_listed = 0;
	else
		em_finish(j, DEST_FAILED, rep,
		          is_field ? "could not create a verified-at field"
		                   : "could not create the external event");
}

static void
em_on_list_events(struct job *j, const struct em_reply *rep)
{
	struct em_state *s = j->state;
	json_t *e;
	size_t i;

	s->events_listed = 1;
	if (++s->event_lists > MAX_LISTS || rep->code != 0 ||
	    !json_is_array(rep->data)) {
		em_finish(j, DEST_RETRY, rep, "could not list external events");
		return;
	}
	json_array_foreach (rep->data, i, e) {
		const char *name = jsonutil_str(e, "name");
		char id[32];
		if (name != NULL && strcasecmp(name, s->ev_name) == 0 &&
		    emarsys_id_text(json_object_get(e, "id"), id)) {
			snprintf(s->ev_id, sizeof(s->ev_id), "%s", id);
			j->env->id_put(j->env->ctx, s->scope, "event",
			               s->ev_name, id);
			break;
		}
	}
}

/* Cached field ids turned out stale: resolve them again once. */
static int
em_reresolve_fields(struct job *j)
{
	struct em_state *s = j->state;

	if (s->reresolved++ > 0)
		return 0;
	j->env->id_forget(j->env->ctx, s->scope, "field");
	if (j->brand->em_field_sms <= 0)
		s->sms_id[0] = '\0';
	for (int i = 0; i < s->nvf; i++) {
		s->vf[i].id[0] = '\0';
		s->vf[i].create_tried = 0;
	}
	s->fields_listed = 0;
	return 1;
}

static void
em_on_upsert(struct job *j, const struct http_resp *r,
             const struct em_reply *rep)
{
	struct em_state *s = j->state;
	char msg[200];
	long code = rep->code;
	int rejected = 0;

	if (r->status == 200 && rep->code == 0) {
		/* One contact per upsert: any error in the reply is ours. */
		rejected =
		    emarsys_contact_error(rep, s->key_value, &code, msg,
		                          sizeof(msg)) ||
		    emarsys_contact_error(rep, NULL, &code, msg, sizeof(msg));
		if (!rejected) {
			s->upserted = 1;
			snprintf(j->progress, sizeof(j->progress), "%s",
			         PROGRESS_UPSERTED);
			return;
		}
		/* The attempt shows the contact's code, not the envelope's 0.
		 */
		snprintf(j->reply_code, sizeof(j->reply_code), "%ld", code);
	}
	if (code == 2006 && em_reresolve_fields(j))
		return;
	if (rejected) {
		job_done(j, DEST_FAILED,
		         "Emarsys rejected the contact: replyCode %ld: %.200s",
		         code, msg);
		s->finished = 1;
		return;
	}
	em_finish(j, DEST_FAILED, rep, "contact upsert failed");
}

static void
em_on_trigger(struct job *j, const struct http_resp *r,
              const struct em_reply *rep)
{
	struct em_state *s = j->state;
	json_t *conn = json_object_get(rep->data, "connectedTo");

	if (r->status == 200 && rep->code == 0) {
		if (json_is_false(conn))
			snprintf(j->warning, sizeof(j->warning),
			         "%s is not connected to any program",
			         s->ev_name);
		else if (s->want_sms && strcmp(s->sms_id, NO_SUCH_FIELD) == 0)
			snprintf(j->warning, sizeof(j->warning),
			         "the account has no Mobile SMS Opt-in field; "
			         "SMS opt-in not set");
		job_done(j, j->warning[0] ? DEST_WARNING : DEST_DELIVERED, "%s",
		         "");
		s->finished = 1;
	} else if (rep->code == 5005) {
		snprintf(j->warning, sizeof(j->warning),
		         "Emarsys 5005: %s triggers no program or campaign yet",
		         s->ev_name);
		job_done(j, DEST_WARNING, "%s", "");
		s->finished = 1;
	} else if ((rep->code == 5001 || rep->code == 5004) &&
	           s->ev_reresolved++ == 0) {
		j->env->id_forget(j->env->ctx, s->scope, "event");
		s->ev_id[0] = '\0';
		s->events_listed = s->ev_create_tried = 0;
	} else if (rep->code == 2008 && s->reupserted++ == 0)
		s->upserted = 0; /* contact not visible yet: upsert again */
	else
		em_finish(j, DEST_FAILED, rep, "event trigger failed");
}

/* What the X-RateLimit-* headers say, for the engine's pacing. */
static void
em_rate_headers(struct job *j, const struct http_resp *r)
{
	char v[32];
	long long x;

	j->rate_limit = 0;
	j->rate_remaining = -1;
	j->rate_reset_ms = 0;
	if (http_resp_header(r, "X-RateLimit-Limit", v, sizeof(v)) &&
	    (x = strtoll(v, NULL, 10)) > 0 && x < 10000000)
		j->rate_limit = (int)x;
	if (http_resp_header(r, "X-Ratelimit-Remaining", v, sizeof(v)) &&
	    (x = strtoll(v, NULL, 10)) >= 0 && x < 10000000)
		j->rate_remaining = (int)x;
	if (http_resp_header(r, "X-RateLimit-Reset", v, sizeof(v)) &&
	    (x = strtoll(v, NULL, 10)) > 0 &&
	    x < em_now(j) / 1000 + 3600) /* a remote value */
		j->rate_reset_ms = job_mono_at(j, x * 1000 + 100);
}

static void
em_response(struct job *j, const struct http_resp *r)
{
	struct em_state *s = j->state;
	struct em_reply rep;

	if (s->inflight == EM_TOKEN) {
		em_on_token(j, r);
		return;
	}
	job_excerpt(j, r);
	em_rate_headers(j, r);
	emarsys_reply_parse(r, &rep);
	if (rep.code >= 0)
		snprintf(j->reply_code, sizeof(j->reply_code), "%ld", rep.code);
	if (!em_common(j, r, &rep)) {
		switch (s->inflight) {
		case EM_LIST_FIELDS:
			em_on_list_fields(j, &rep);
			break;
		case EM_CREATE_FIELD:
			em_on_create(j, &rep, 1);
			break;
		case EM_LIST_EVENTS:
			em_on_list_events(j, &rep);
			break;
		case EM_CREATE_EVENT:
			em_on_create(j, &rep, 0);
			break;
		case EM_UPSERT:
			em_on_upsert(j, r, &rep);
			break;
		case EM_TRIGGER:
			em_on_trigger(j, r, &rep);
			break;
		default:
			break;
		}
	}
	emarsys_reply_fini(&rep);
}

static void
em_free(struct job *j)
{
	struct em_state *s = j->state;

	if (s == NULL)
		return;
	em_unlease(j);
	buf_free(&s->body);
	json_decref(s->sent);
	OPENSSL_cleanse(s, sizeof(*s));
	free(s);
	j->state = NULL;
}

const struct dest_ops emarsys_ops = {
    .name = "emarsys",
    .skip = em_skip,
    .start = em_start,
    .next = em_next,
    .response = em_response,
    .finish = em_free,
    .batch_item = em_batch_item,
    .batch_request = em_batch_request,
    .batch_split = em_batch_split,
};

/* ---- preflight (POST /admin/v1/brands/{slug}/check) ---- */

static void check_add(json_t *checks, const char *name, int ok, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));

static void
check_add(json_t *checks, const char *name, int ok, const char *fmt, ...)
{
	char detail[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	json_array_append_new(checks,
	                      json_pack("{s:s, s:b, s:s}", "check", name, "ok",
	                                ok, "detail", detail));
}

/* Perform j->req; the reply parsed into rep.  Returns the HTTP status. */
static long
pf_call(struct job *j, struct httpc *h, struct http_resp *r,
        struct em_reply *rep)
{
	httpc_perform(h, &j->req, r);
	emarsys_reply_parse(r, rep);
	return r->result == HTTP_OK ? r->status : 0;
}

static const char *
pf_why(long status, const struct http_resp *r, const char *perm)
{
	static char why[200];

	if (status == 0)
		snprintf(why, sizeof(why), "unreachable: %.150s", r->error);
	else if (status == 403)
		snprintf(why, sizeof(why),
		         "403: grant the API user the %s permission", perm);
	else
		snprintf(why, sizeof(why), "HTTP %ld", status);
	return why;
}

static int
pf_token(struct job *j, struct httpc *h, json_t *checks)
{
	struct em_state *s = j->state;
	struct http_resp r;
	json_t *root;
	const char *tok;

	em_token_request(j);
	httpc_perform(h, &j->req, &r);
	root = json_loadb(buf_str(&r.body), r.body.len, 0, NULL);
	tok = jsonutil_str(root, "access_token");
	if (r.result == HTTP_OK && r.status == 200 && tok != NULL &&
	    em_set_token(s, tok) != GC_OK)
		check_add(checks, "emarsys.token", 0,
		          "the token endpoint returned a token of %zu bytes; "
		          "gcrelay takes at most %zu",
		          strlen(tok), sizeof(s->token) - 1);
	else if (r.result == HTTP_OK && r.status == 200 && tok != NULL)
		check_add(checks, "emarsys.token", 1,
		          "client credentials accepted");
	else
		check_add(
		    checks, "emarsys.token", 0, "%s",
		    r.status == 401 || r.status == 400
		        ? "the token endpoint refused the client id or "
		          "secret"
		        : pf_why(r.result == HTTP_OK ? r.status : 0, &r, ""));
	json_decref(root);
	http_resp_fini(&r);
	return s->token[0] != '\0';
}

/* Names in a list reply matching name (case-insensitively): its id. */
static int
pf_find(const struct em_reply *rep, const char *name, char id[32])
{
	json_t *v;
	size_t i;

	json_array_foreach (rep->data, i, v) {
		const char *n = jsonutil_str(v, "name");
		if (n != NULL && strcasecmp(n, name) == 0 &&
		    emarsys_id_text(json_object_get(v, "id"), id))
			return 1;
	}
	return 0;
}

static void
pf_fields(struct job *j, struct httpc *h, json_t *checks)
{
	struct http_resp r;
	struct em_reply rep;
	char id[32];
	long st;

	em_request(j, EM_LIST_FIELDS, "GET", "field/translate/en");
	st = pf_call(j, h, &r, &rep);
	if (st != 200 || rep.code != 0 || !json_is_array(rep.data))
		check_add(checks, "emarsys.field_list", 0, "%s",
		          pf_why(st, &r, "field.list"));
	else {
		check_add(checks, "emarsys.field_list", 1, "%zu fields listed",
		          json_array_size(rep.data));
		if (j->brand->em_field_sms > 0)
			check_add(checks, "emarsys.sms_opt_in_field", 1,
			          "set by the brand: field %ld",
			          j->brand->em_field_sms);
		else if (pf_find(&rep, SMS_FIELD_NAME, id))
			check_add(checks, "emarsys.sms_opt_in_field", 1,
			          "\"Mobile SMS Opt-in\" is field %s", id);
		else
			check_add(checks, "emarsys.sms_opt_in_field", 0,
			          "no \"Mobile SMS Opt-in\" field (SMS module "
			          "off?): SMS opt-ins will not be set");
	}
	emarsys_reply_fini(&rep);
	http_resp_fini(&r);
}

static void
pf_events(struct job *j, struct httpc *h, json_t *checks)
{
	static const char *const names[] = {"gocertify_consent_intent",
	                                    "gocertify_offer_claimed"};
	struct http_resp r;
	struct em_reply rep;
	char id[32];
	long st;

	em_request(j, EM_LIST_EVENTS, "GET", "event");
	st = pf_call(j, h, &r, &rep);
	if (st != 200 || rep.code != 0 || !json_is_array(rep.data))
		check_add(checks, "emarsys.event_list", 0, "%s",
		          pf_why(st, &r, "externalevent.list"));
	else
		for (size_t i = 0; i < 2; i++) {
			char name[64];
			snprintf(name, sizeof(name), "emarsys.event.%s",
			         names[i]);
			if (pf_find(&rep, names[i], id))
				check_add(checks, name, 1, "exists: id %s", id);
			else
				check_add(checks, name, 1,
				          "not created yet: gcrelay creates it "
				          "on first use (needs "
				          "externalevent.create)");
		}
	emarsys_reply_fini(&rep);
	http_resp_fini(&r);
}

/* See emarsys.h. */
void
emarsys_preflight(const struct app_config *cfg, const struct brand *b,
                  struct httpc *h, json_t *checks)
{
	struct job j;
	struct em_state *s = calloc(1, sizeof(*s));

	if (s == NULL)
		return;
	memset(&j, 0, sizeof(j));
	j.cfg = cfg;
	j.brand = b;
	j.state = s;
	buf_init(&s->body, 0);
	if (pf_token(&j, h, checks)) {
		buf_reset(&s->body);
		pf_fields(&j, h, checks);
		pf_events(&j, h, checks);
	}
	em_free(&j);
}
