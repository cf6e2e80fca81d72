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
	return store_step(st, s, "emarsys id put") ? GC_OK : GC_ESTORE;
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
	return store_step(st, s, "emarsys id forget") ? GC_OK : GC_ESTORE;
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
	return store_step(st, s, "emarsys token put") ? GC_OK : GC_ESTORE;
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
	return store_step(st, s, "emarsys token forget") ? GC_OK : GC_ESTORE;
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
                const struct lease *l, enum ledger_claim *res,
                struct ledger_view *view)
{
	const char *state = (const char *)sqlite3_column_text(row, 0);
	sqlite3_stmt *s;
	int rc;

	snprintf(view->event_id, sizeof(view->event_id), "%s",
	         (const char *)sqlite3_column_text(row, 1));
	view->lease_until = sqlite3_column_int64(row, 2);
	if (strcmp(state, "done") == 0) {
		*res = LEDGER_DONE;
		return GC_OK;
	}
	if (view->lease_until >= now_ms) {
		*res = LEDGER_BUSY;
		return GC_OK;
	}
	/*
	 * "unknown", or "sending" whose run died mid-call: the award may
	 * have happened.  Take the lease to reconcile; an expired "sending"
	 * counts as started when it was last claimed or re-sent.
	 */
	s = store_prepare(st, "UPDATE yotpo_ledger SET state = 'unknown', "
	                      "lease_until = ?4, lease_owner = ?5, sent_at = "
	                      "coalesce(sent_at, updated_at), updated_at = ?6 "
	                      "WHERE brand = ?1 AND token = ?2 AND action = ?3 "
	                      "RETURNING sent_at, coalesce(email, '')");
	if (s == NULL)
		return GC_ESTORE;
	bind_key(s, brand, token, action);
	sqlite3_bind_int64(s, 4, l->until_ms);
	sqlite3_bind_text(s, 5, l->owner, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, now_ms);
	if ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		view->sent_at = sqlite3_column_int64(s, 0);
		snprintf(view->email, sizeof(view->email), "%s",
		         (const char *)sqlite3_column_text(s, 1));
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW)
		return GC_ESTORE;
	*res = LEDGER_RECONCILE;
	return GC_OK;
}

static enum gc_err
ledger_insert(struct store *st, const char *brand, const char *token,
              const char *action, const char *event_id, const char *email,
              int64_t now_ms, const struct lease *l)
{
	sqlite3_stmt *s = store_prepare(
	    st,
	    "INSERT INTO yotpo_ledger(brand, token, action, state, "
	    "event_id, reference, email, lease_until, lease_owner, "
	    "updated_at) VALUES (?1, ?2, ?3, 'sending', ?4, ?2, ?5, ?6, ?7, "
	    "?8)");

	if (s == NULL)
		return GC_ESTORE;
	bind_key(s, brand, token, action);
	sqlite3_bind_text(s, 4, event_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, email, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, l->until_ms);
	sqlite3_bind_text(s, 7, l->owner, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 8, now_ms);
	return store_step(st, s, "ledger insert") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_ledger_claim(struct store *st, const char *brand, const char *token,
                   const char *action, const char *event_id, const char *email,
                   int64_t now_ms, const struct lease *l,
                   enum ledger_claim *res, struct ledger_view *view)
{
	sqlite3_stmt *s;
	enum gc_err err = GC_OK;
	int rc;

	memset(view, 0, sizeof(*view));
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	s = store_prepare(st, "SELECT state, event_id, lease_until FROM "
	                      "yotpo_ledger WHERE brand = ? AND token = ? AND "
	                      "action = ?");
	if (s == NULL)
		goto fail;
	bind_key(s, brand, token, action);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		err = ledger_existing(st, s, brand, token, action, now_ms, l,
		                      res, view);
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		goto fail;
	if (rc == SQLITE_DONE) {
		err = ledger_insert(st, brand, token, action, event_id, email,
		                    now_ms, l);
		*res = LEDGER_CLAIMED;
		snprintf(view->event_id, sizeof(view->event_id), "%s",
		         event_id);
		snprintf(view->email, sizeof(view->email), "%s", email);
	}
	if (err != GC_OK || store_commit(st) != GC_OK)
		goto fail;
	if (view->email[0] == '\0')
		snprintf(view->email, sizeof(view->email), "%s", email);
	return GC_OK;
fail:
	store_rollback(st);
	return store_fail(st, "ledger claim");
}

/* Run a statement on a ledger row owner holds; GC_EEXISTS when none. */
static enum gc_err
ledger_owned(struct store *st, sqlite3_stmt *s, const char *what)
{
	if (!store_step(st, s, what))
		return GC_ESTORE;
	return sqlite3_changes(st->db) > 0 ? GC_OK : GC_EEXISTS;
}

/* See store.h. */
enum gc_err
store_ledger_set(struct store *st, const char *brand, const char *token,
                 const char *action, const char *owner, const char *state,
                 int64_t sent_at_ms)
{
	sqlite3_stmt *s = store_prepare(
	    st,
	    "UPDATE yotpo_ledger SET state = ?4, sent_at = ?5, "
	    "lease_until = 0, lease_owner = NULL, updated_at = ?6 WHERE "
	    "brand = ?1 AND token = ?2 AND action = ?3 AND lease_owner = ?7");

	if (s == NULL)
		return GC_ESTORE;
	bind_key(s, brand, token, action);
	sqlite3_bind_text(s, 4, state, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, sent_at_ms);
	sqlite3_bind_int64(s, 6, store_now_ms());
	sqlite3_bind_text(s, 7, owner, -1, SQLITE_STATIC);
	return ledger_owned(st, s, "ledger set");
}

/* See store.h. */
enum gc_err
store_ledger_sending(struct store *st, const char *brand, const char *token,
                     const char *action, const char *owner,
                     const char *event_id, const char *email, int64_t now_ms)
{
	sqlite3_stmt *s = store_prepare(
	    st, "UPDATE yotpo_ledger SET state = 'sending', sent_at = NULL, "
	        "event_id = ?5, email = ?6, updated_at = ?7 WHERE brand = ?1 "
	        "AND token = ?2 AND action = ?3 AND lease_owner = ?4 AND "
	        "state != 'done'");

	if (s == NULL)
		return GC_ESTORE;
	bind_key(s, brand, token, action);
	sqlite3_bind_text(s, 4, owner, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, event_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 6, email, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 7, now_ms);
	return ledger_owned(st, s, "ledger sending");
}

/* See store.h. */
enum gc_err
store_ledger_release(struct store *st, const char *brand, const char *token,
                     const char *action, const char *owner)
{
	sqlite3_stmt *s = store_prepare(st, "DELETE FROM yotpo_ledger WHERE "
	                                    "brand = ? AND token = ? AND "
	                                    "action = ? AND state != 'done' "
	                                    "AND lease_owner = ?");

	if (s == NULL)
		return GC_ESTORE;
	bind_key(s, brand, token, action);
	sqlite3_bind_text(s, 4, owner, -1, SQLITE_STATIC);
	return ledger_owned(st, s, "ledger release");
}

/* See store.h. */
enum gc_err
store_throttle_slot(struct store *st, const char *brand, int max_rps,
                    int64_t now_ms, int64_t horizon_ms, int64_t *slot_ms,
                    int *reserved)
{
	/* 10% margin: a call can leave a little after its slot. */
	int64_t interval = 1100 / (max_rps > 0 ? max_rps : 1);
	sqlite3_stmt *s = store_prepare(
	    st, "INSERT INTO throttle(brand, next_ms) VALUES (?1, ?2 + ?3) "
	        "ON CONFLICT(brand) DO UPDATE SET next_ms = "
	        "max(next_ms, ?2) + ?3 WHERE next_ms <= ?2 + ?4 "
	        "RETURNING next_ms - ?3");
	int rc;

	*slot_ms = now_ms;
	*reserved = 0;
	if (s == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, brand, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, now_ms);
	sqlite3_bind_int64(s, 3, interval);
	sqlite3_bind_int64(s, 4, horizon_ms);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*slot_ms = sqlite3_column_int64(s, 0);
		*reserved = 1;
	}
	sqlite3_finalize(s);
	if (rc == SQLITE_ROW)
		return GC_OK;
	if (rc != SQLITE_DONE)
		return store_fail(st, "throttle");
	/* The next free slot is beyond the horizon: say when, keep it. */
	if ((s = store_prepare(st, "SELECT next_ms FROM throttle WHERE "
	                           "brand = ?")) == NULL)
		return GC_ESTORE;
	sqlite3_bind_text(s, 1, brand, -1, SQLITE_STATIC);
	if ((rc = sqlite3_step(s)) == SQLITE_ROW)
		*slot_ms = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW ? GC_OK : store_fail(st, "throttle peek");
}
