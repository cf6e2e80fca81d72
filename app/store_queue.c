/*
 * The dispatcher's queue: claiming due deliveries in batches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "jsonutil.h"
#include "store.h"
#include "store_priv.h"

/* The claimed event for id in arr, added (with its own owner) if new. */
static json_t *
claim_event(json_t *arr, const char *id, const struct lease *l)
{
	json_t *c;
	size_t i;
	char owner[sizeof(l->owner) + 16];

	json_array_foreach(arr, i, c) if (strcmp(jsonutil_str(c, "id"), id) ==
	                                  0) return c;
	/* One owner per event: two runs must never share a Yotpo claim. */
	snprintf(owner, sizeof(owner), "%s.%zu", l->owner, i);
	c = json_pack("{s:s, s:s, s:[]}", "id", id, "owner", owner,
	              "destinations");
	if (c == NULL || json_array_append_new(arr, c) != 0)
		return NULL;
	return c;
}

/* Lease one due delivery to owner; 1 when it was still due. */
static int
claim_one(struct store *st, sqlite3_stmt *u, const char *id, const char *dest,
          const char *owner, int64_t now_ms, int64_t until_ms)
{
	sqlite3_reset(u);
	sqlite3_bind_int64(u, 1, until_ms);
	sqlite3_bind_text(u, 2, owner, -1, SQLITE_STATIC);
	sqlite3_bind_int64(u, 3, now_ms);
	sqlite3_bind_text(u, 4, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(u, 5, dest, -1, SQLITE_STATIC);
	if (sqlite3_step(u) != SQLITE_DONE)
		return -1;
	return sqlite3_changes(st->db) > 0;
}

/* Select due deliveries and lease them; the transaction is open. */
static enum gc_err
claim_rows(struct store *st, sqlite3_stmt *q, sqlite3_stmt *u, int64_t now_ms,
           const struct lease *l, int max_events, json_t *arr)
{
	json_t *c;
	int rc;

	sqlite3_bind_int64(q, 1, now_ms);
	sqlite3_bind_int(q, 2, max_events * 2);
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(q, 0);
		const char *dest = (const char *)sqlite3_column_text(q, 1);
		if (id == NULL || dest == NULL)
			continue;
		if ((c = claim_event(arr, id, l)) == NULL)
			return GC_ENOMEM;
		if ((int)json_array_size(arr) > max_events) {
			json_array_remove(arr, json_array_size(arr) - 1);
			break;
		}
		int got = claim_one(st, u, id, dest, jsonutil_str(c, "owner"),
		                    now_ms, l->until_ms);
		if (got < 0)
			return GC_ESTORE;
		if (got)
			json_array_append_new(
			    json_object_get(c, "destinations"),
			    json_string(dest));
	}
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_claim_batch(struct store *st, int64_t now_ms, const struct lease *l,
                  int max_events, json_t **claimed)
{
	sqlite3_stmt *q, *u = NULL;
	json_t *arr = json_array();
	enum gc_err err = GC_ESTORE;

	*claimed = NULL;
	if (arr == NULL)
		return GC_ENOMEM;
	if (store_begin(st) != GC_OK) {
		json_decref(arr);
		return GC_ESTORE;
	}
	q = store_prepare(st, "SELECT event_id, destination FROM deliveries "
	                      "WHERE status IN ('pending','retrying') AND "
	                      "next_at <= ?1 AND lease_until < ?1 "
	                      "ORDER BY next_at LIMIT ?2");
	u = store_prepare(st, "UPDATE deliveries SET lease_until = ?1, "
	                      "lease_owner = ?2, attempts = attempts + 1, "
	                      "updated_at = ?3 WHERE event_id = ?4 AND "
	                      "destination = ?5 AND status IN "
	                      "('pending','retrying') AND lease_until < ?3");
	if (q != NULL && u != NULL)
		err = claim_rows(st, q, u, now_ms, l, max_events, arr);
	sqlite3_finalize(q);
	sqlite3_finalize(u);
	if (err == GC_OK && store_commit(st) == GC_OK) {
		/* Events whose every delivery was taken meanwhile: drop. */
		for (size_t i = json_array_size(arr); i-- > 0;)
			if (json_array_size(json_object_get(
			        json_array_get(arr, i), "destinations")) == 0)
				json_array_remove(arr, i);
		*claimed = arr;
		return GC_OK;
	}
	if (err == GC_ESTORE)
		store_fail(st, "claim batch");
	store_rollback(st);
	json_decref(arr);
	return err == GC_OK ? GC_ESTORE : err;
}

/* See store.h. */
enum gc_err
store_oldest_due(struct store *st, int64_t now_ms, int64_t *age_ms)
{
	sqlite3_stmt *s = store_prepare(
	    st, "SELECT min(next_at) FROM deliveries WHERE status IN "
	        "('pending','retrying') AND next_at <= ?");
	int rc;

	*age_ms = 0;
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_int64(s, 1, now_ms);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_type(s, 0) != SQLITE_NULL)
		*age_ms = now_ms - sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? GC_OK : store_fail(st, "oldest due");
}
