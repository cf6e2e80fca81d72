/*
 * The event ledger: events, their deliveries and every attempt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sqlite3.h>

#include "jsonutil.h"
#include "store.h"
#include "store_priv.h"

/* ISO 8601 UTC with milliseconds. */
static json_t *
iso_ms(int64_t ms)
{
	char out[32], ts[24];
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, sizeof(out), "%s.%03dZ", ts, (int)(ms % 1000));
	return json_string(out);
}

/* Recompute an event's status from its deliveries. */
static int
event_refresh(struct store *st, const char *id)
{
	sqlite3_stmt *stmt = store_prepare(
	    st, "UPDATE events SET status = CASE"
	        " WHEN EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1"
	        "  AND status IN ('pending','retrying')) THEN 'pending'"
	        " WHEN EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1"
	        "  AND status IN ('failed','dead')) THEN 'failed'"
	        " ELSE 'delivered' END WHERE id = ?1");

	if (stmt == NULL)
		return 0;
	sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
	return store_step(st, stmt, "step");
}

/* See store.h. */
enum gc_err
store_event_insert(struct store *st, const char *id, const char *brand,
                   const char *kind, const char *body,
                   const struct delivery_init *d, size_t n,
                   const struct lease *l)
{
	int64_t now = store_now_ms();
	sqlite3_stmt *stmt;
	int rc;

	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	stmt = store_prepare(st, "INSERT INTO events(id, brand, kind, body, "
	                         "received_at, status) VALUES "
	                         "(?, ?, ?, ?, ?, 'pending') "
	                         "ON CONFLICT(id) DO NOTHING");
	if (stmt == NULL)
		goto fail;
	sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 2, brand, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 3, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(stmt, 4, body, -1, SQLITE_STATIC);
	sqlite3_bind_int64(stmt, 5, now);
	rc = sqlite3_step(stmt);
	sqlite3_finalize(stmt);
	if (rc != SQLITE_DONE)
		goto fail;
	if (sqlite3_changes(st->db) == 0) {
		store_rollback(st);
		return GC_EEXISTS;
	}
	for (size_t i = 0; i < n; i++) {
		int pending = strcmp(d[i].status, "pending") == 0;
		int leased = pending && l->until_ms > 0;
		stmt = store_prepare(
		    st, "INSERT INTO deliveries(event_id, destination, status, "
		        "reason, attempts, next_at, lease_until, updated_at, "
		        "lease_owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
		if (stmt == NULL)
			goto fail;
		sqlite3_bind_text(stmt, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 2, d[i].destination, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 3, d[i].status, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 4, d[i].reason, -1, SQLITE_STATIC);
		sqlite3_bind_int(stmt, 5, leased);
		if (pending)
			sqlite3_bind_int64(stmt, 6, now);
		else
			sqlite3_bind_null(stmt, 6);
		sqlite3_bind_int64(stmt, 7, leased ? l->until_ms : 0);
		sqlite3_bind_int64(stmt, 8, now);
		sqlite3_bind_text(stmt, 9, leased ? l->owner : NULL, -1,
		                  SQLITE_STATIC);
		if (!store_step(st, stmt, "step"))
			goto fail;
	}
	if (!event_refresh(st, id) || store_commit(st) != GC_OK)
		goto fail;
	return GC_OK;
fail:
	store_rollback(st);
	return store_fail(st, "event insert");
}

/* One delivery row as JSON; detail adds attempts/next time. */
static json_t *
delivery_json(sqlite3_stmt *s, int detail)
{
	json_t *d = json_object();
	const char *reason = (const char *)sqlite3_column_text(s, 2),
	           *warning = (const char *)sqlite3_column_text(s, 3);

	json_object_set_new(
	    d, "destination",
	    json_string((const char *)sqlite3_column_text(s, 0)));
	json_object_set_new(
	    d, "status", json_string((const char *)sqlite3_column_text(s, 1)));
	if (reason != NULL)
		json_object_set_new(d, "reason", json_string(reason));
	if (warning != NULL)
		json_object_set_new(d, "warning", json_string(warning));
	if (detail) {
		json_object_set_new(d, "runs",
		                    json_integer(sqlite3_column_int(s, 4)));
		if (sqlite3_column_type(s, 5) != SQLITE_NULL &&
		    !strcmp((const char *)sqlite3_column_text(s, 1),
		            "retrying"))
			json_object_set_new(d, "next_attempt_at",
			                    iso_ms(sqlite3_column_int64(s, 5)));
	}
	return d;
}

/* Deliveries of an event as a JSON array; NULL on store failure. */
static json_t *
deliveries_of(struct store *st, const char *id, int detail)
{
	sqlite3_stmt *s = store_prepare(
	    st, "SELECT destination, status, reason, warning, attempts, "
	        "next_at FROM deliveries WHERE event_id = ? "
	        "ORDER BY destination");
	json_t *arr;
	int rc;

	if (s == NULL)
		return NULL;
	arr = json_array();
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(arr, delivery_json(s, detail));
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		json_decref(arr);
		store_fail(st, "deliveries");
		return NULL;
	}
	return arr;
}

/* See store.h. */
enum gc_err
store_event_outcome(struct store *st, const char *id, json_t **out,
                    int *final_ok)
{
	sqlite3_stmt *s;
	json_t *dl;
	char status[16] = "";
	int rc;

	*out = NULL;
	s = store_prepare(st, "SELECT status FROM events WHERE id = ?");
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		snprintf(status, sizeof(status), "%s",
		         (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	if (rc == SQLITE_DONE)
		return GC_ENOTFOUND;
	if (rc != SQLITE_ROW)
		return store_fail(st, "event outcome");
	if ((dl = deliveries_of(st, id, 1)) == NULL)
		return GC_ESTORE;
	*final_ok = strcmp(status, "delivered") == 0;
	*out =
	    json_pack("{s:s, s:s, s:o}", "id", id, "status",
	              *final_ok ? "delivered" : "accepted", "deliveries", dl);
	return *out ? GC_OK : GC_ENOMEM;
}

/* See store.h. */
enum gc_err
store_event_body(struct store *st, const char *id, char **brand, char **body,
                 int64_t *received_ms)
{
	sqlite3_stmt *s;
	int rc;

	*brand = *body = NULL;
	*received_ms = 0;
	s = store_prepare(st, "SELECT brand, received_at, body FROM events "
	                      "WHERE id = ?");
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*brand = store_col_text(s, 0);
		*received_ms = sqlite3_column_int64(s, 1);
		*body = store_col_text(s, 2);
	}
	sqlite3_finalize(s);
	if (rc == SQLITE_DONE)
		return GC_ENOTFOUND;
	if (rc != SQLITE_ROW)
		return store_fail(st, "event body");
	if (*brand == NULL || *body == NULL) {
		free(*brand);
		free(*body);
		*brand = *body = NULL;
		return GC_ENOTFOUND; /* purged */
	}
	return GC_OK;
}

/* Run an UPDATE of one leased delivery and refresh its event. */
static enum gc_err
delivery_update(struct store *st, sqlite3_stmt *s, const char *event_id,
                const char *what)
{
	int changed;

	if (s == NULL || !store_step(st, s, "step"))
		goto fail;
	if ((changed = sqlite3_changes(st->db)) == 0) {
		store_rollback(st);
		return GC_EEXISTS;
	}
	if (!event_refresh(st, event_id) || store_commit(st) != GC_OK)
		goto fail;
	return GC_OK;
fail:
	store_rollback(st);
	return store_fail(st, what);
}

/* See store.h. */
enum gc_err
store_delivery_finish(struct store *st, const char *event_id, const char *dest,
                      const char *owner, const char *status, const char *reason,
                      const char *warning, int64_t next_at_ms)
{
	sqlite3_stmt *s;

	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	s = store_prepare(st, "UPDATE deliveries SET status = ?, reason = ?, "
	                      "warning = ?, next_at = ?, lease_until = 0, "
	                      "lease_owner = NULL, updated_at = ? WHERE "
	                      "event_id = ? AND destination = ? AND "
	                      "lease_owner = ?");
	if (s != NULL) {
		sqlite3_bind_text(s, 1, status, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, reason, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, warning, -1, SQLITE_STATIC);
		if (next_at_ms > 0)
			sqlite3_bind_int64(s, 4, next_at_ms);
		else
			sqlite3_bind_null(s, 4);
		sqlite3_bind_int64(s, 5, store_now_ms());
		sqlite3_bind_text(s, 6, event_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 7, dest, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 8, owner, -1, SQLITE_STATIC);
	}
	return delivery_update(st, s, event_id, "delivery finish");
}

/* See store.h. */
enum gc_err
store_delivery_postpone(struct store *st, const char *event_id,
                        const char *dest, const char *owner, const char *reason,
                        int64_t next_at_ms)
{
	sqlite3_stmt *s;

	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	s = store_prepare(st,
	                  "UPDATE deliveries SET status = 'retrying', "
	                  "reason = ?, next_at = ?, lease_until = 0, "
	                  "lease_owner = NULL, attempts = max(attempts - 1, "
	                  "0), updated_at = ? WHERE event_id = ? AND "
	                  "destination = ? AND lease_owner = ?");
	if (s != NULL) {
		sqlite3_bind_text(s, 1, reason, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 2, next_at_ms);
		sqlite3_bind_int64(s, 3, store_now_ms());
		sqlite3_bind_text(s, 4, event_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 5, dest, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 6, owner, -1, SQLITE_STATIC);
	}
	return delivery_update(st, s, event_id, "delivery postpone");
}

/* See store.h. */
enum gc_err
store_delivery_attempts(struct store *st, const char *event_id,
                        const char *dest, int *runs)
{
	sqlite3_stmt *s = store_prepare(st, "SELECT attempts FROM deliveries "
	                                    "WHERE event_id = ? AND "
	                                    "destination = ?");
	int rc;

	*runs = 0;
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, event_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, dest, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*runs = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	if (rc == SQLITE_DONE)
		return GC_ENOTFOUND;
	return rc == SQLITE_ROW ? GC_OK : store_fail(st, "delivery runs");
}

/* See store.h. */
enum gc_err
store_attempt_add(struct store *st, const struct attempt *a)
{
	sqlite3_stmt *s = store_prepare(
	    st, "INSERT INTO attempts(event_id, destination, at, step, "
	        "outcome, http_status, reply_code, excerpt, latency_ms) "
	        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");

	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, a->event_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, a->destination, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, store_now_ms());
	sqlite3_bind_text(s, 4, a->step, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, a->outcome, -1, SQLITE_STATIC);
	if (a->http_status > 0)
		sqlite3_bind_int64(s, 6, a->http_status);
	else
		sqlite3_bind_null(s, 6);
	sqlite3_bind_text(s, 7, a->reply_code, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 8, a->excerpt, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 9, a->latency_ms);
	return store_step(st, s, "step") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_claim_due(struct store *st, int64_t now_ms, const struct lease *l,
                char **event_id, json_t **claimed)
{
	sqlite3_stmt *s;
	json_t *arr;
	int rc;

	*event_id = NULL;
	*claimed = NULL;
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	s = store_prepare(
	    st, "UPDATE deliveries SET lease_until = ?1, lease_owner = ?3, "
	        "attempts = attempts + 1, updated_at = ?2 "
	        "WHERE status IN ('pending','retrying') AND next_at <= ?2 "
	        "AND lease_until < ?2 AND event_id = (SELECT event_id FROM "
	        "deliveries WHERE status IN ('pending','retrying') AND "
	        "next_at <= ?2 AND lease_until < ?2 ORDER BY next_at LIMIT 1) "
	        "RETURNING event_id, destination");
	if (s == NULL) {
		store_rollback(st);
		return GC_ESTORE;
	}
	sqlite3_bind_int64(s, 1, l->until_ms);
	sqlite3_bind_int64(s, 2, now_ms);
	sqlite3_bind_text(s, 3, l->owner, -1, SQLITE_STATIC);
	arr = json_array();
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (*event_id == NULL)
			*event_id = store_col_text(s, 0);
		json_array_append_new(
		    arr, json_string((const char *)sqlite3_column_text(s, 1)));
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE || store_commit(st) != GC_OK) {
		json_decref(arr);
		free(*event_id);
		*event_id = NULL;
		store_rollback(st);
		return store_fail(st, "claim due");
	}
	*claimed = arr;
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_event_take(struct store *st, const char *event_id, int64_t now_ms,
                 const struct lease *l, json_t **taken)
{
	sqlite3_stmt *s;
	json_t *arr;
	int rc, exists;

	*taken = NULL;
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	if ((s = store_prepare(st, "SELECT 1 FROM events WHERE id = ?")) ==
	    NULL)
		goto fail;
	sqlite3_bind_text(s, 1, event_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_finalize(s);
	if ((exists = rc == SQLITE_ROW) == 0 && rc != SQLITE_DONE)
		goto fail;
	if (!exists) {
		store_rollback(st);
		return GC_ENOTFOUND;
	}
	s = store_prepare(
	    st, "UPDATE deliveries SET status = 'retrying', attempts = 1,"
	        " next_at = ?1, lease_until = ?2, lease_owner = ?4, updated_at "
	        "= ?1 "
	        "WHERE event_id = ?3 AND (status IN ('failed','dead') "
	        "OR (status IN ('pending','retrying') AND "
	        "lease_until < ?1)) RETURNING destination");
	if (s == NULL)
		goto fail;
	sqlite3_bind_int64(s, 1, now_ms);
	sqlite3_bind_int64(s, 2, l->until_ms);
	sqlite3_bind_text(s, 3, event_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, l->owner, -1, SQLITE_STATIC);
	arr = json_array();
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(
		    arr, json_string((const char *)sqlite3_column_text(s, 0)));
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE || !event_refresh(st, event_id) ||
	    store_commit(st) != GC_OK) {
		json_decref(arr);
		goto fail;
	}
	*taken = arr;
	return GC_OK;
fail:
	store_rollback(st);
	return store_fail(st, "event take");
}

/* See store.h. */
enum gc_err
store_brand_requeue(struct store *st, const char *brand, int64_t since_ms,
                    int64_t until_ms, int *count)
{
	sqlite3_stmt *s;
	json_t *ids, *v;
	size_t i;
	int rc;

	*count = 0;
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	s = store_prepare(
	    st, "UPDATE deliveries SET status = 'retrying', next_at = ?1, "
	        "attempts = 0, updated_at = ?1 WHERE status IN "
	        "('failed','dead') AND event_id IN (SELECT id FROM events "
	        "WHERE brand = ?2 AND received_at >= ?3 AND received_at < ?4 "
	        "AND body IS NOT NULL) RETURNING event_id");
	if (s == NULL)
		goto fail;
	sqlite3_bind_int64(s, 1, store_now_ms());
	sqlite3_bind_text(s, 2, brand, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, since_ms);
	sqlite3_bind_int64(s, 4, until_ms);
	ids = json_array();
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		json_array_append_new(
		    ids, json_string((const char *)sqlite3_column_text(s, 0)));
	sqlite3_finalize(s);
	*count = (int)json_array_size(ids);
	json_array_foreach(ids, i, v) event_refresh(st, json_string_value(v));
	json_decref(ids);
	if (rc != SQLITE_DONE || store_commit(st) != GC_OK)
		goto fail;
	return GC_OK;
fail:
	store_rollback(st);
	return store_fail(st, "brand requeue");
}

/* See store.h. */
enum gc_err
store_outbox_depth(struct store *st, long *n)
{
	sqlite3_stmt *s = store_prepare(st, "SELECT count(*) FROM deliveries "
	                                    "WHERE status IN "
	                                    "('pending','retrying')");
	int rc;

	*n = 0;
	if (s == NULL)
		return GC_ESTORE;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*n = (long)sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? GC_OK : store_fail(st, "outbox depth");
}

static json_t *
event_row_json(struct store *st, sqlite3_stmt *s)
{
	const char *id = (const char *)sqlite3_column_text(s, 0);
	json_t *e = json_object();

	json_object_set_new(e, "id", json_string(id));
	json_object_set_new(
	    e, "brand", json_string((const char *)sqlite3_column_text(s, 1)));
	json_object_set_new(
	    e, "kind", json_string((const char *)sqlite3_column_text(s, 2)));
	json_object_set_new(
	    e, "status", json_string((const char *)sqlite3_column_text(s, 3)));
	json_object_set_new(e, "received_at",
	                    iso_ms(sqlite3_column_int64(s, 4)));
	json_object_set_new(e, "deliveries", deliveries_of(st, id, 0));
	return e;
}

/* See store.h. */
enum gc_err
store_events_list(struct store *st, const struct event_filter *f, json_t **out)
{
	sqlite3_stmt *s;
	json_t *arr;
	int64_t last = 0;
	int rc, n = 0;
	char cursor[32];

	*out = NULL;
	s = store_prepare(st, "SELECT id, brand, kind, status, received_at, "
	                      "rowid FROM events WHERE (?1 IS NULL OR brand = "
	                      "?1) AND (?2 IS NULL OR status = ?2) AND "
	                      "received_at >= ?3 AND (?4 IS NULL OR rowid < "
	                      "?4) ORDER BY rowid DESC LIMIT ?5");
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, f->brand, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, f->status, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, f->since_ms);
	if (f->cursor != NULL)
		sqlite3_bind_int64(s, 4, strtoll(f->cursor, NULL, 10));
	else
		sqlite3_bind_null(s, 4);
	sqlite3_bind_int(s, 5, f->limit);
	arr = json_array();
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		json_array_append_new(arr, event_row_json(st, s));
		last = sqlite3_column_int64(s, 5);
		n++;
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) {
		json_decref(arr);
		return store_fail(st, "events list");
	}
	snprintf(cursor, sizeof(cursor), "%lld", (long long)last);
	*out = json_pack("{s:o, s:o}", "events", arr, "next_cursor",
	                 n == f->limit ? json_string(cursor) : json_null());
	return GC_OK;
}

static json_t *
attempts_of(struct store *st, const char *id)
{
	sqlite3_stmt *s = store_prepare(
	    st, "SELECT destination, at, step, outcome, http_status, "
	        "reply_code, excerpt, latency_ms FROM attempts "
	        "WHERE event_id = ? ORDER BY id");
	json_t *arr = json_array();

	if (s == NULL)
		return arr;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	while (sqlite3_step(s) == SQLITE_ROW) {
		json_t *a = json_object();
		json_object_set_new(
		    a, "destination",
		    json_string((const char *)sqlite3_column_text(s, 0)));
		json_object_set_new(a, "at",
		                    iso_ms(sqlite3_column_int64(s, 1)));
		json_object_set_new(
		    a, "step",
		    json_string((const char *)sqlite3_column_text(s, 2)));
		json_object_set_new(
		    a, "outcome",
		    json_string((const char *)sqlite3_column_text(s, 3)));
		if (sqlite3_column_type(s, 4) != SQLITE_NULL)
			json_object_set_new(
			    a, "http_status",
			    json_integer(sqlite3_column_int(s, 4)));
		if (sqlite3_column_type(s, 5) != SQLITE_NULL)
			json_object_set_new(
			    a, "reply_code",
			    json_string(
			        (const char *)sqlite3_column_text(s, 5)));
		if (sqlite3_column_type(s, 6) != SQLITE_NULL)
			json_object_set_new(
			    a, "excerpt",
			    json_string(
			        (const char *)sqlite3_column_text(s, 6)));
		json_object_set_new(a, "latency_ms",
		                    json_integer(sqlite3_column_int64(s, 7)));
		json_array_append_new(arr, a);
	}
	sqlite3_finalize(s);
	return arr;
}

/* See store.h. */
enum gc_err
store_event_detail(struct store *st, const char *id, json_t **out)
{
	sqlite3_stmt *s;
	json_t *e = NULL, *body;
	int rc;

	*out = NULL;
	s = store_prepare(st, "SELECT id, brand, kind, status, received_at, "
	                      "body FROM events WHERE id = ?");
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		e = event_row_json(st, s);
		json_object_set_new(e, "deliveries", deliveries_of(st, id, 1));
		body = sqlite3_column_type(s, 5) == SQLITE_NULL
		           ? json_null()
		           : json_loads((const char *)sqlite3_column_text(s, 5),
		                        0, NULL);
		json_object_set_new(e, "event", body ? body : json_null());
		json_object_set_new(e, "attempts", attempts_of(st, id));
	}
	sqlite3_finalize(s);
	if (rc == SQLITE_DONE)
		return GC_ENOTFOUND;
	if (rc != SQLITE_ROW)
		return store_fail(st, "event detail");
	*out = e;
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_purge_bodies(struct store *st, int64_t before_ms, int *count)
{
	sqlite3_stmt *s;

	*count = 0;
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	/* Attempt excerpts can quote contact details too. */
	s = store_prepare(st, "UPDATE attempts SET excerpt = NULL WHERE "
	                      "excerpt IS NOT NULL AND event_id IN (SELECT id "
	                      "FROM events WHERE received_at < ?1 AND body IS "
	                      "NOT NULL AND status != 'pending')");
	if (s == NULL)
		goto fail;
	sqlite3_bind_int64(s, 1, before_ms);
	if (!store_step(st, s, "step"))
		goto fail;
	s = store_prepare(st, "UPDATE events SET body = NULL, purged = 1 WHERE "
	                      "received_at < ? AND body IS NOT NULL AND "
	                      "status != 'pending'");
	if (s == NULL)
		goto fail;
	sqlite3_bind_int64(s, 1, before_ms);
	if (!store_step(st, s, "step"))
		goto fail;
	*count = sqlite3_changes(st->db);
	if (store_commit(st) != GC_OK)
		goto fail;
	return GC_OK;
fail:
	store_rollback(st);
	return store_fail(st, "purge");
}
