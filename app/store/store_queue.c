/*
 * The dispatcher's queue: claiming due deliveries in batches, and how
 * long the oldest due one has waited.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "store.h"
#include "store_priv.h"

/* The claimed event for id in arr, added (leased to owner) if new. */
static json_t *
claim_event(json_t *arr, const char *id, const char *owner)
{
	json_t *c;
	size_t i;

	json_array_foreach (arr, i, c) {
		if (strcmp(jsonutil_str(c, "id"), id) == 0)
			return c;
	}
	c = json_pack("{s:s, s:s, s:[], s:{}}", "id", id, "owner", owner,
	              "destinations", "progress");
	if (c == NULL || json_array_append_new(arr, c) != 0)
		return NULL;
	return c;
}

/* Add a leased delivery (dest, its progress or NULL) to its event c. */
static void
claim_add(json_t *c, const char *dest, const char *progress)
{
	json_array_append_new(json_object_get(c, "destinations"),
	                      json_string(dest));
	if (progress != NULL)
		json_object_set_new(json_object_get(c, "progress"), dest,
		                    json_string(progress));
}

/* Lease one due delivery to owner: 1 when taken, 0 when gone, -1 error. */
static int
claim_one(struct store *st, const char *id, const char *dest, const char *owner,
          int64_t now_ms, int64_t until_ms)
{
	struct db_stmt *u = store_stmt(st, STMT_CLAIM_ONE);

	if (u == NULL)
		return -1;
	store_bind_int(u, 1, until_ms);
	store_bind_text(u, 2, owner);
	store_bind_int(u, 3, now_ms);
	store_bind_text(u, 4, id);
	store_bind_text(u, 5, dest);
	if (!store_step(st, u, "claim one"))
		return -1;
	return store_changes(st) > 0;
}

/*
 * The due deliveries, earliest first, as [[event id, destination], ...]
 * for up to max_events events (new reference); NULL on failure.
 */
static json_t *
claim_due_rows(struct store *st, int64_t now_ms, int max_events)
{
	struct db_stmt *q = store_stmt(st, STMT_CLAIM_SELECT);
	json_t *rows = json_array();
	enum db_rc rc = DB_ERROR;

	if (q == NULL || rows == NULL) {
		json_decref(rows);
		return NULL;
	}
	store_bind_int(q, 1, now_ms);
	store_bind_int(q, 2, (int64_t)max_events * 2);
	while ((rc = store_row(st, q)) == DB_ROW)
		json_array_append_new(
		    rows, json_pack("[s, s, s?]", store_col(q, 0),
		                    store_col(q, 1), store_col(q, 2)));
	if (!store_end(st, q, rc, "claim select")) {
		json_decref(rows);
		return NULL;
	}
	return rows;
}

/* Lease the rows to one owner per event, at most max_events events. */
static enum gc_err
claim_rows(struct store *st, json_t *rows, int64_t now_ms,
           const struct lease *l, int max_events, json_t *arr)
{
	char owner[sizeof(l->owner) + 16];
	json_t *row, *c;
	size_t i;
	int got;

	json_array_foreach (rows, i, row) {
		const char *id = json_string_value(json_array_get(row, 0));
		const char *dest = json_string_value(json_array_get(row, 1));
		if (id == NULL || dest == NULL)
			continue;
		/* One owner per event: two runs must never share a claim. */
		snprintf(owner, sizeof(owner), "%s.%zu", l->owner,
		         json_array_size(arr));
		if ((c = claim_event(arr, id, owner)) == NULL)
			return GC_ENOMEM;
		if ((int)json_array_size(arr) > max_events) {
			json_array_remove(arr, json_array_size(arr) - 1);
			break;
		}
		got = claim_one(st, id, dest, jsonutil_str(c, "owner"), now_ms,
		                l->until_ms);
		if (got < 0)
			return GC_ESTORE;
		if (got)
			claim_add(c, dest,
			          json_string_value(json_array_get(row, 2)));
	}
	return GC_OK;
}

/* The claimed rows of STMT_CLAIM_BATCH (s, answered) into arr. */
static enum gc_err
claim_read(struct store *st, struct db_stmt *s, json_t *arr)
{
	enum gc_err err = GC_OK;
	enum db_rc rc;
	json_t *c;

	while ((rc = store_row(st, s)) == DB_ROW) {
		if ((c = claim_event(arr, store_col(s, 0), store_col(s, 3))) ==
		        NULL ||
		    (json_object_get(c, "stored") == NULL &&
		     json_object_set_new(
		         c, "stored",
		         json_pack("{s:s, s:I, s:s?, s:s?}", "brand",
		                   store_col(s, 4), "received_ms",
		                   (json_int_t)store_col_int(s, 5), "body",
		                   store_col(s, 6), "doc", store_col(s, 7))) !=
		         0)) {
			err = GC_ENOMEM;
			rc = DB_DONE;
			break;
		}
		claim_add(c, store_col(s, 1),
		          store_col_null(s, 2) ? NULL : store_col(s, 2));
	}
	if (!store_end(st, s, rc, "claim batch"))
		return GC_ESTORE;
	return err;
}

/*
 * PostgreSQL: select and lease in one statement (STMT_CLAIM_BATCH), sent
 * with its BEGIN and COMMIT as one batch (one round trip); the rows are
 * read once committed.  Its locks are the claim's own key; its settings
 * keep the planner to walking the due rows in next_at order, stopping
 * at the LIMIT: one whose statistics are from quieter times than a
 * backlog would rather read every due row through a bitmap and sort
 * them, each claim again (milliseconds per claim in a backlog of
 * 10,000).  Out of memory reading the rows: those leased wait for their
 * leases to expire.
 */
static enum gc_err
claim_batch(struct store *st, int64_t now_ms, const struct lease *l,
            int max_events, json_t *arr)
{
	struct db_stmt *s = store_stmt(st, STMT_CLAIM_BATCH);
	long changes;
	size_t n;

	if (s == NULL)
		return GC_ESTORE;
	store_stmt_done(s); /* prepared: a batch can send it */
	if (store_batch_begin(st, "claim", STORE_LAZY | STORE_ORDERED) != 1)
		return GC_ESTORE;
	store_bind_int(s, 1, l->until_ms);
	store_bind_text(s, 2, l->owner);
	store_bind_int(s, 3, now_ms);
	store_bind_int(s, 4, (int64_t)max_events * 2);
	store_bind_int(s, 5, max_events);
	if (!store_step(st, s, "claim batch") ||
	    store_batch_commit(st, &changes, 1, &n) != GC_OK) {
		store_rollback(st);
		return GC_ESTORE;
	}
	return claim_read(st, s, arr);
}

/* SQLite: select the due rows, then lease each, in one transaction. */
static enum gc_err
claim_each(struct store *st, int64_t now_ms, const struct lease *l,
           int max_events, json_t *arr)
{
	json_t *rows;
	enum gc_err err = GC_ESTORE;

	if (store_begin_on(st, "claim") != GC_OK)
		return GC_ESTORE;
	if ((rows = claim_due_rows(st, now_ms, max_events)) != NULL)
		err = claim_rows(st, rows, now_ms, l, max_events, arr);
	json_decref(rows);
	if (err != GC_OK || store_commit(st) != GC_OK) {
		store_rollback(st);
		return err == GC_OK ? GC_ESTORE : err;
	}
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_claim_batch(struct store *st, int64_t now_ms, const struct lease *l,
                  int max_events, json_t **claimed)
{
	json_t *arr = json_array();
	enum gc_err err;

	*claimed = NULL;
	if (arr == NULL)
		return GC_ENOMEM;
	/* Rows it locks itself (SKIP LOCKED), leased only when free. */
	err = store_shared_hosts(st)
	          ? claim_batch(st, now_ms, l, max_events, arr)
	          : claim_each(st, now_ms, l, max_events, arr);
	if (err != GC_OK) {
		json_decref(arr);
		return err;
	}
	/* Events whose every delivery was taken meanwhile: drop them. */
	for (size_t i = json_array_size(arr); i-- > 0;)
		if (json_array_size(json_object_get(json_array_get(arr, i),
		                                    "destinations")) == 0)
			json_array_remove(arr, i);
	*claimed = arr;
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_oldest_due(struct store *st, int64_t now_ms, int64_t *age_ms)
{
	struct db_stmt *s = store_stmt(st, STMT_OLDEST_DUE);
	enum db_rc rc;

	*age_ms = 0;
	if (s == NULL)
		return GC_ESTORE;
	store_bind_int(s, 1, now_ms);
	if ((rc = store_row(st, s)) == DB_ROW && !store_col_null(s, 0))
		*age_ms = now_ms - store_col_int(s, 0);
	if (!store_end(st, s, rc, "oldest due"))
		return GC_ESTORE;
	return GC_OK;
}
