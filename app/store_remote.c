/*
 * State kept for the remote APIs: Emarsys id and token caches, the Yotpo
 * award ledger and the per-brand Yotpo throttle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "store.h"
#include "store_priv.h"

static int
run(struct store *st, sqlite3_stmt *s, const char *what)
{
	int rc = s ? sqlite3_step(s) : SQLITE_ERROR;

	sqlite3_finalize(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		store_fail(st, what);
		return 0;
	}
	return 1;
}

/* See store.h. */
enum gc_err
store_em_id_get(struct store *st, const char *scope, const char *kind,
                const char *name, char out[32])
{
	sqlite3_stmt *s = store_prepare(st, "SELECT remote_id FROM emarsys_ids "
	                                    "WHERE brand = ? AND kind = ? AND "
	                                    "name = ?");
	int rc;

	out[0] = '\0';
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, scope, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		snprintf(out, 32, "%s",
		         (const char *)sqlite3_column_text(s, 0));
	sqlite3_finalize(s);
	if (rc == SQLITE_DONE)
		return GC_ENOTFOUND;
	return rc == SQLITE_ROW ? GC_OK : store_fail(st, "emarsys id");
}

/* See store.h. */
enum gc_err
store_em_id_put(struct store *st, const char *scope, const char *kind,
                const char *name, const char *id)
{
	sqlite3_stmt *s = store_prepare(
	    st, "INSERT INTO emarsys_ids(brand, kind, name, remote_id, "
	        "updated_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(brand, "
	        "kind, name) DO UPDATE SET remote_id = ?4, updated_at = ?5");

	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, scope, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, store_now_ms());
	return run(st, s, "emarsys id put") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_em_id_forget(struct store *st, const char *scope, const char *kind)
{
	sqlite3_stmt *s = store_prepare(st, "DELETE FROM emarsys_ids WHERE "
	                                    "brand = ? AND kind = ?");

	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, scope, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, kind, -1, SQLITE_STATIC);
	return run(st, s, "emarsys id forget") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_em_token_get(struct store *st, const char *brand, const char *client_id,
                   char **sealed, int64_t *expires_ms)
{
	sqlite3_stmt *s = store_prepare(st, "SELECT token, expires_at FROM "
	                                    "emarsys_tokens WHERE brand = ? "
	                                    "AND client_id = ?");
	int rc;

	*sealed = NULL;
	*expires_ms = 0;
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, brand, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, client_id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*sealed = store_col_text(s, 0);
		*expires_ms = sqlite3_column_int64(s, 1);
	}
	sqlite3_finalize(s);
	if (rc == SQLITE_DONE)
		return GC_ENOTFOUND;
	return rc == SQLITE_ROW ? GC_OK : store_fail(st, "emarsys token");
}

/* See store.h. */
enum gc_err
store_em_token_put(struct store *st, const char *brand, const char *client_id,
                   const char *sealed, int64_t expires_ms)
{
	sqlite3_stmt *s = store_prepare(
	    st, "INSERT INTO emarsys_tokens(brand, client_id, token, "
	        "expires_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(brand) DO "
	        "UPDATE SET client_id = ?2, token = ?3, expires_at = ?4");

	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, brand, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, client_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, sealed, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 4, expires_ms);
	return run(st, s, "emarsys token put") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_em_token_forget(struct store *st, const char *brand, const char *sealed)
{
	sqlite3_stmt *s = store_prepare(st, "DELETE FROM emarsys_tokens WHERE "
	                                    "brand = ? AND token = ?");

	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, brand, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, sealed, -1, SQLITE_STATIC);
	return run(st, s, "emarsys token forget") ? GC_OK : GC_ESTORE;
}

static void
bind_key(sqlite3_stmt *s, const char *brand, const char *token,
         const char *action)
{
	sqlite3_bind_text(s, 1, brand, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, token, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, action, -1, SQLITE_STATIC);
}

/* Decide a claim on an existing row (inside the transaction). */
static enum gc_err
ledger_existing(struct store *st, sqlite3_stmt *row, const char *brand,
                const char *token, const char *action, int64_t now_ms,
                int64_t lease_until_ms, enum ledger_claim *res,
                struct ledger_view *view)
{
	const char *state = (const char *)sqlite3_column_text(row, 0);
	sqlite3_stmt *s;

	snprintf(view->event_id, sizeof(view->event_id), "%s",
	         (const char *)sqlite3_column_text(row, 1));
	view->lease_until = sqlite3_column_int64(row, 2);
	view->sent_at = sqlite3_column_int64(row, 3);
	if (strcmp(state, "done") == 0) {
		*res = LEDGER_DONE;
		return GC_OK;
	}
	if (view->lease_until >= now_ms) {
		*res = LEDGER_BUSY;
		return GC_OK;
	}
	/*
	 * "unknown", or "sending" whose owner died mid-call: the award may
	 * have happened.  Take the lease to reconcile; an expired "sending"
	 * counts as sent when it was claimed.
	 */
	s = store_prepare(st, "UPDATE yotpo_ledger SET state = 'unknown', "
	                      "lease_until = ?4, sent_at = coalesce(sent_at, "
	                      "updated_at), updated_at = ?5 WHERE brand = ?1 "
	                      "AND token = ?2 AND action = ?3 "
	                      "RETURNING sent_at");
	if (s == NULL)
		return GC_ESTORE;
	bind_key(s, brand, token, action);
	sqlite3_bind_int64(s, 4, lease_until_ms);
	sqlite3_bind_int64(s, 5, now_ms);
	if (sqlite3_step(s) == SQLITE_ROW)
		view->sent_at = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	*res = LEDGER_RECONCILE;
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_ledger_claim(struct store *st, const char *brand, const char *token,
                   const char *action, const char *event_id,
                   const char *reference, int64_t now_ms,
                   int64_t lease_until_ms, enum ledger_claim *res,
                   struct ledger_view *view)
{
	sqlite3_stmt *s;
	enum gc_err err = GC_OK;
	int rc;

	memset(view, 0, sizeof(*view));
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	s = store_prepare(st, "SELECT state, event_id, lease_until, "
	                      "coalesce(sent_at, 0) FROM yotpo_ledger WHERE "
	                      "brand = ? AND token = ? AND action = ?");
	if (s == NULL)
		goto fail;
	bind_key(s, brand, token, action);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		err = ledger_existing(st, s, brand, token, action, now_ms,
		                      lease_until_ms, res, view);
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		goto fail;
	if (rc == SQLITE_DONE) {
		s = store_prepare(st, "INSERT INTO yotpo_ledger(brand, token, "
		                      "action, state, event_id, reference, "
		                      "lease_until, updated_at) VALUES "
		                      "(?, ?, ?, 'sending', ?, ?, ?, ?)");
		if (s == NULL)
			goto fail;
		bind_key(s, brand, token, action);
		sqlite3_bind_text(s, 4, event_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 5, reference, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 6, lease_until_ms);
		sqlite3_bind_int64(s, 7, now_ms);
		if (!run(st, s, "ledger insert"))
			goto fail;
		*res = LEDGER_CLAIMED;
		snprintf(view->event_id, sizeof(view->event_id), "%s",
		         event_id);
	}
	if (err != GC_OK || store_commit(st) != GC_OK)
		goto fail;
	return GC_OK;
fail:
	store_rollback(st);
	return store_fail(st, "ledger claim");
}

/* See store.h. */
enum gc_err
store_ledger_set(struct store *st, const char *brand, const char *token,
                 const char *action, const char *state, int64_t sent_at_ms)
{
	int keep_lease = strcmp(state, "sending") == 0;
	sqlite3_stmt *s = store_prepare(
	    st, keep_lease
	            ? "UPDATE yotpo_ledger SET state = ?4, updated_at = ?6 "
	              "WHERE brand = ?1 AND token = ?2 AND action = ?3 AND "
	              "?5 = ?5"
	            : "UPDATE yotpo_ledger SET state = ?4, sent_at = ?5, "
	              "lease_until = 0, updated_at = ?6 WHERE brand = ?1 AND "
	              "token = ?2 AND action = ?3");

	if (s == NULL)
		return GC_ESTORE;
	bind_key(s, brand, token, action);
	sqlite3_bind_text(s, 4, state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, sent_at_ms);
	sqlite3_bind_int64(s, 6, store_now_ms());
	return run(st, s, "ledger set") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_ledger_release(struct store *st, const char *brand, const char *token,
                     const char *action)
{
	sqlite3_stmt *s = store_prepare(st, "DELETE FROM yotpo_ledger WHERE "
	                                    "brand = ? AND token = ? AND "
	                                    "action = ? AND state != 'done'");

	if (s == NULL)
		return GC_ESTORE;
	bind_key(s, brand, token, action);
	return run(st, s, "ledger release") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_throttle_slot(struct store *st, const char *brand, int max_rps,
                    int64_t now_ms, int64_t *slot_ms)
{
	/* 10% margin: a call can leave a little after its slot. */
	int64_t interval = 1100 / (max_rps > 0 ? max_rps : 1);
	sqlite3_stmt *s = store_prepare(
	    st, "INSERT INTO throttle(brand, next_ms) VALUES (?1, ?2 + ?3) "
	        "ON CONFLICT(brand) DO UPDATE SET next_ms = "
	        "max(next_ms, ?2) + ?3 RETURNING next_ms - ?3");
	int rc;

	*slot_ms = now_ms;
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, brand, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, now_ms);
	sqlite3_bind_int64(s, 3, interval);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*slot_ms = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? GC_OK : store_fail(st, "throttle");
}
