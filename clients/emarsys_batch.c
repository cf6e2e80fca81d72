/*
 * Emarsys batches (reference/emarsys-api.md, 3.2 and 3.4): the dispatcher
 * merges the contact upserts of one API user into one
 * `PUT contact/?create_if_not_exists=1` with up to 1000 contacts (8 MB),
 * and the triggers of one external event into one
 * `POST event/{id}/trigger` with a `contacts` array (1000 items, 1 MB),
 * each item keeping its own trigger_id.  The reply is split back into
 * the reply each job would have had alone: a contact's entry in
 * data.errors (keyed by its key value, or by its position) is its own
 * failure; the rest succeeded.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "emarsys.h"
#include "emarsys_priv.h"
#include "jsonutil.h"

#define UPSERT_LIMIT  8000000 /* bytes of one PUT contact body */
#define TRIGGER_LIMIT 1000000 /* bytes of one trigger body */

/* See emarsys_priv.h. */
int
em_batch_item(struct job *j, char *key, size_t keysz, const char **member,
              json_t **item, size_t *limit)
{
	struct em_state *s = j->state;
	json_t *it;

	*item = NULL;
	if (s->inflight != EM_UPSERT && s->inflight != EM_TRIGGER)
		return 0;
	/* The single call's body, as built: its contact, or all but key_id. */
	if (s->inflight == EM_UPSERT)
		it = json_incref(
		    json_array_get(json_object_get(s->sent, "contacts"), 0));
	else if ((it = json_copy(s->sent)) != NULL)
		json_object_del(it, "key_id");
	if (it == NULL)
		return 0;
	/* Same account, call and key field: one call can carry them. */
	snprintf(key, keysz, "emarsys:%s %s %s key %s", j->brand->em_client_id,
	         j->req.method, j->req.url, s->key_id);
	*member = s->key_value;
	*item = it;
	*limit = s->inflight == EM_UPSERT ? UPSERT_LIMIT : TRIGGER_LIMIT;
	return 1;
}

/* See emarsys_priv.h. */
enum gc_err
em_batch_request(struct job *first, json_t *items, struct buf *body,
                 struct http_req *req)
{
	struct em_state *s = first->state;
	json_t *v =
	    json_pack("{s:s, s:O}", "key_id", s->key_id, "contacts", items);
	char *text = jsonutil_compact(v);
	enum gc_err err = GC_ENOMEM;

	json_decref(v);
	buf_reset(body);
	if (text != NULL)
		err = buf_puts(body, text);
	free(text);
	if (err != GC_OK)
		return err;
	/* The first job's method, URL and headers (it outlives the call). */
	*req = first->req;
	req->body = body->ptr;
	req->bodylen = body->len;
	req->timeout_ms = 0;
	return GC_OK;
}

/* A response like r with body text (NULL: r's own). */
static void
resp_copy(struct http_resp *dst, const struct http_resp *r, long status,
          const char *text)
{
	dst->result = r->result;
	dst->status = status;
	dst->timed_out = r->timed_out;
	dst->seconds = r->seconds;
	snprintf(dst->error, sizeof(dst->error), "%s", r->error);
	buf_puts(&dst->headers, buf_str(&r->headers));
	buf_puts(&dst->body, text != NULL ? text : buf_str(&r->body));
}

/* Job i's entry in data.errors: by its key value, else by position. */
static json_t *
split_error(const struct em_reply *rep, const struct em_state *s, int i)
{
	json_t *errs = json_object_get(rep->data, "errors"), *e;
	char pos[16];

	if (!json_is_object(errs))
		return NULL;
	if ((e = json_object_get(errs, s->key_value)) != NULL)
		return e;
	snprintf(pos, sizeof(pos), "%d", i);
	return json_object_get(errs, pos);
}

/* The reply job i would have had alone, from the batch's 200 reply. */
static void
split_one(struct http_resp *dst, const struct http_resp *r,
          const struct em_reply *rep, const struct em_state *s, int i)
{
	json_t *err = split_error(rep, s, i), *v = NULL, *val = NULL;
	const char *code = NULL;
	long c;
	char *text;

	if (s->inflight == EM_UPSERT)
		v = json_pack("{s:i, s:s, s:{s:[], s:o}}", "replyCode", 0,
		              "replyText", "OK", "data", "ids", "errors",
		              err ? json_pack("{s:O}", s->key_value, err)
		                  : json_object());
	else if (err != NULL) {
		/* A single trigger reports a contact's error as the reply. */
		if (json_is_object(err))
			json_object_foreach (err, code, val)
				break;
		c = code != NULL ? strtol(code, NULL, 10) : 0;
		v = json_pack("{s:I, s:s, s:s}", "replyCode",
		              (json_int_t)(c > 0 ? c : 1), "replyText",
		              json_is_string(val) ? json_string_value(val)
		                                  : "error for this contact",
		              "data", "");
	} else
		v = json_pack("{s:i, s:s, s:O?}", "replyCode", 0, "replyText",
		              "OK", "data", rep->data);
	text = jsonutil_compact(v);
	json_decref(v);
	resp_copy(dst, r,
	          s->inflight == EM_TRIGGER && err != NULL ? 400 : r->status,
	          text != NULL ? text : "");
	free(text);
}

/*
 * Whether a reply speaks for every item alike: a transport failure, a
 * status about the call or the account (401, 403, 429, 5xx), or 5005
 * (the event triggers no program).
 */
static int
split_whole(const struct http_resp *r, const struct em_reply *rep)
{
	return r->result != HTTP_OK || r->status == 401 || r->status == 403 ||
	       r->status == 429 || r->status >= 500 || rep->code == 5005;
}

/* See emarsys_priv.h. */
int
em_batch_split(struct job **jobs, int n, const struct http_resp *r,
               struct http_resp *each)
{
	struct em_reply rep;
	int ok = 1;

	emarsys_reply_parse(r, &rep);
	if (split_whole(r, &rep))
		for (int i = 0; i < n; i++)
			resp_copy(&each[i], r, r->status, NULL);
	else if (r->status == 200 && rep.code == 0 && rep.root != NULL)
		for (int i = 0; i < n; i++)
			split_one(&each[i], r, &rep, jobs[i]->state, i);
	else {
		ok = 0; /* e.g. 400 for the whole batch: who caused it? */
		for (int i = 0; i < n && rep.code >= 0; i++)
			snprintf(jobs[i]->reply_code,
			         sizeof(jobs[i]->reply_code), "%ld", rep.code);
	}
	emarsys_reply_fini(&rep);
	return ok;
}
