/*
 * State kept for the remote APIs: Emarsys id and token caches, the Yotpo
 * award ledger and the per-brand Yotpo throttle.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"
#include "store_priv.h"

/* The rows of STMT_EM_IDS_OF (bound, stepped or batched) into ids[]. */
static enum gc_err
ids_read(struct store *st, struct db_stmt *s, struct em_id *ids, size_t n)
{
	enum db_rc rc;

	while ((rc = store_row(st, s)) == DB_ROW)
		for (size_t i = 0; i < n; i++)
			if (strcmp(ids[i].kind, store_col(s, 0)) == 0 &&
			    strcmp(ids[i].name, store_col(s, 1)) == 0)
				snprintf(ids[i].out, 32, "%s", store_col(s, 2));
	return store_end(st, s, rc, "emarsys ids") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_em_ids_get(struct store *st, const char *scope, struct em_id *ids,
                 size_t n)
{
	struct db_stmt *s;

	if ((s = store_stmt(st, STMT_EM_IDS_OF)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, scope);
	return ids_read(st, s, ids, n);
}

/* See store.h. */
enum gc_err
store_em_id_put(struct store *st, const char *scope, const char *kind,
                const char *name, const char *id)
{
	struct db_stmt *s;

	if ((s = store_stmt(st, STMT_EM_ID_PUT)) != NULL) {
		store_bind_text(s, 1, scope);
		store_bind_text(s, 2, kind);
		store_bind_text(s, 3, name);
		store_bind_text(s, 4, id);
		store_bind_int(s, 5, store_now_ms());
	}
	return store_step(st, s, "emarsys id put") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_em_id_forget(struct store *st, const char *scope, const char *kind)
{
	struct db_stmt *s;

	if ((s = store_stmt(st, STMT_EM_ID_FORGET)) != NULL) {
		store_bind_text(s, 1, scope);
		store_bind_text(s, 2, kind);
	}
	return store_step(st, s, "emarsys id forget") ? GC_OK : GC_ESTORE;
}

/* The row of STMT_EM_TOKEN_GET (bound, stepped or batched). */
static enum gc_err
token_read(struct store *st, struct db_stmt *s, char **sealed,
           int64_t *expires_ms)
{
	enum db_rc rc;

	*sealed = NULL;
	*expires_ms = 0;
	if ((rc = store_row(st, s)) == DB_ROW) {
		*sealed = store_col_text(s, 0);
		*expires_ms = store_col_int(s, 1);
	}
	if (!store_end(st, s, rc, "emarsys token"))
		return GC_ESTORE;
	return rc == DB_ROW ? GC_OK : GC_ENOTFOUND;
}

/* See store.h. */
enum gc_err
store_em_token_get(struct store *st, const char *brand, const char *client_id,
                   char **sealed, int64_t *expires_ms)
{
	struct db_stmt *s;

	*sealed = NULL;
	*expires_ms = 0;
	if ((s = store_stmt(st, STMT_EM_TOKEN_GET)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, brand);
	store_bind_text(s, 2, client_id);
	return token_read(st, s, sealed, expires_ms);
}

/* See store.h. */
enum gc_err
store_em_cached_get(struct store *st, const char *brand, const char *client_id,
                    char **sealed, int64_t *expires_ms, const char *scope,
                    struct em_id *ids, size_t n)
{
	struct db_stmt *t, *i;
	long changes[2];
	size_t got;

	/* Without batches (SQLite): the two look-ups in turn. */
	if (n == 0 || st->ops->batch_begin == NULL) {
		if (n > 0)
			(void)store_em_ids_get(st, scope, ids, n);
		return store_em_token_get(st, brand, client_id, sealed,
		                          expires_ms);
	}
	*sealed = NULL;
	*expires_ms = 0;
	/* Prepared before the batch, which can only send them. */
	if ((t = store_stmt(st, STMT_EM_TOKEN_GET)) == NULL ||
	    (i = store_stmt(st, STMT_EM_IDS_OF)) == NULL)
		return GC_ESTORE;
	store_stmt_done(t);
	store_stmt_done(i);
	if (store_batch_begin(st, NULL, STORE_READ) != 1)
		return GC_ESTORE;
	store_bind_text(t, 1, brand);
	store_bind_text(t, 2, client_id);
	store_bind_text(i, 1, scope);
	if (!store_step(st, t, "emarsys token") ||
	    !store_step(st, i, "emarsys ids") ||
	    store_batch_commit(st, changes, 2, &got) != GC_OK)
		return GC_ESTORE;
	/* The answers, each read as its own look-up reads it. */
	(void)ids_read(st, i, ids, n);
	return token_read(st, t, sealed, expires_ms);
}

/* See store.h. */
enum gc_err
store_em_token_put(struct store *st, const char *brand, const char *client_id,
                   const char *sealed, int64_t expires_ms)
{
	struct db_stmt *s;

	if ((s = store_stmt(st, STMT_EM_TOKEN_PUT)) != NULL) {
		store_bind_text(s, 1, brand);
		store_bind_text(s, 2, client_id);
		store_bind_text(s, 3, sealed);
		store_bind_int(s, 4, expires_ms);
	}
	return store_step(st, s, "emarsys token put") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_em_token_forget(struct store *st, const char *brand, const char *sealed)
{
	struct db_stmt *s;

	if ((s = store_stmt(st, STMT_EM_TOKEN_FORGET)) != NULL) {
		store_bind_text(s, 1, brand);
		store_bind_text(s, 2, sealed);
	}
	return store_step(st, s, "emarsys token forget") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_em_token_lease(struct store *st, const char *brand, const char *client_id,
                     const char *owner, int64_t now_ms, int64_t until_ms,
                     int64_t *held_until_ms)
{
	struct db_stmt *s;
	enum db_rc rc;

	*held_until_ms = now_ms;
	if ((s = store_stmt(st, STMT_EM_TOKEN_LEASE)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, brand);
	store_bind_text(s, 2, client_id);
	store_bind_text(s, 3, owner);
	store_bind_int(s, 4, until_ms);
	store_bind_int(s, 5, now_ms);
	rc = store_row(st, s);
	if (!store_end(st, s, rc, "emarsys token lease"))
		return GC_ESTORE;
	if (rc == DB_ROW) {
		*held_until_ms = until_ms;
		return GC_OK;
	}
	/* Held by another: until when (now when it was just given back). */
	if ((s = store_stmt(st, STMT_EM_TOKEN_LEASE_PEEK)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, brand);
	store_bind_text(s, 2, client_id);
	if ((rc = store_row(st, s)) == DB_ROW)
		*held_until_ms = store_col_int(s, 0);
	if (!store_end(st, s, rc, "emarsys token lease peek"))
		return GC_ESTORE;
	return GC_EEXISTS;
}

/* See store.h. */
enum gc_err
store_em_token_unlease(struct store *st, const char *brand,
                       const char *client_id, const char *owner)
{
	struct db_stmt *s;

	if ((s = store_stmt(st, STMT_EM_TOKEN_UNLEASE)) != NULL) {
		store_bind_text(s, 1, brand);
		store_bind_text(s, 2, client_id);
		store_bind_text(s, 3, owner);
	}
	return store_step(st, s, "emarsys token unlease") ? GC_OK : GC_ESTORE;
}

/* The ledger statement id with the award key bound to ?1..?3. */
static struct db_stmt *
ledger_stmt(struct store *st, enum stmt id, const char *brand,
            const char *token, const char *action)
{
	struct db_stmt *s = store_stmt(st, id);

	if (s != NULL) {
		store_bind_text(s, 1, brand);
		store_bind_text(s, 2, token);
		store_bind_text(s, 3, action);
	}
	return s;
}

/* Decide a claim on an existing row (inside the transaction). */
static enum gc_err
ledger_existing(struct store *st, struct db_stmt *row, const char *brand,
                const char *token, const char *action, int64_t now_ms,
                const struct lease *l, enum ledger_claim *res,
                struct ledger_view *view)
{
	const char *state = store_col(row, 0);
	struct db_stmt *s;
	enum db_rc rc;

	snprintf(view->event_id, sizeof(view->event_id), "%s",
	         store_col(row, 1));
	view->lease_until = store_col_int(row, 2);
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
	s = ledger_stmt(st, STMT_LEDGER_RECONCILE, brand, token, action);
	if (s == NULL)
		return GC_ESTORE;
	store_bind_int(s, 4, l->until_ms);
	store_bind_text(s, 5, l->owner);
	store_bind_int(s, 6, now_ms);
	if ((rc = store_row(st, s)) == DB_ROW) {
		view->sent_at = store_col_int(s, 0);
		snprintf(view->email, sizeof(view->email), "%s",
		         store_col(s, 1));
		view->misses = (int)store_col_int(s, 2);
	}
	if (!store_end(st, s, rc, "ledger reconcile"))
		return GC_ESTORE;
	if (rc != DB_ROW) {
		log_warnx("store: ledger reconcile: the key's row is gone");
		return GC_ESTORE;
	}
	*res = LEDGER_RECONCILE;
	return GC_OK;
}

/* Insert the key's row as claimed (id: the plain or the new-only form). */
static enum gc_err
ledger_insert(struct store *st, enum stmt id, const char *brand,
              const char *token, const char *action, const char *event_id,
              const char *email, int64_t now_ms, const struct lease *l)
{
	struct db_stmt *s;

	s = ledger_stmt(st, id, brand, token, action);
	if (s != NULL) {
		store_bind_text(s, 4, event_id);
		store_bind_text(s, 5, email);
		store_bind_int(s, 6, l->until_ms);
		store_bind_text(s, 7, l->owner);
		store_bind_int(s, 8, now_ms);
	}
	return store_step(st, s, "ledger insert") ? GC_OK : GC_ESTORE;
}

/* The key is claimed for event_id now. */
static void
ledger_claimed(enum ledger_claim *res, struct ledger_view *view,
               const char *event_id, const char *email)
{
	*res = LEDGER_CLAIMED;
	snprintf(view->event_id, sizeof(view->event_id), "%s", event_id);
	snprintf(view->email, sizeof(view->email), "%s", email);
}

/* See store.h. */
enum gc_err
store_ledger_claim(struct store *st, const char *brand, const char *token,
                   const char *action, const char *event_id, const char *email,
                   int64_t now_ms, const struct lease *l,
                   enum ledger_claim *res, struct ledger_view *view)
{
	struct db_stmt *s;
	enum gc_err err = GC_OK;
	enum db_rc rc;
	char key[512];

	memset(view, 0, sizeof(*view));
	/*
	 * A key never seen (the common case): its row inserted on its own,
	 * which the primary key settles against any other claim.
	 */
	err = ledger_insert(st, STMT_LEDGER_INSERT_NEW, brand, token, action,
	                    event_id, email, now_ms, l);
	if (err != GC_OK)
		return err;
	if (store_changes(st) > 0) {
		ledger_claimed(res, view, event_id, email);
		return GC_OK;
	}
	/* Read, then insert or take over: one entry's transactions queue. */
	snprintf(key, sizeof(key), "ledger\x1f%s\x1f%s\x1f%s", brand, token,
	         action);
	if (store_begin_on(st, key) != GC_OK)
		return GC_ESTORE;
	if ((s = ledger_stmt(st, STMT_LEDGER_GET, brand, token, action)) ==
	    NULL)
		goto fail;
	if ((rc = store_row(st, s)) == DB_ROW)
		err = ledger_existing(st, s, brand, token, action, now_ms, l,
		                      res, view);
	if (!store_end(st, s, rc, "ledger claim"))
		goto fail;
	if (rc == DB_DONE) {
		err = ledger_insert(st, STMT_LEDGER_INSERT, brand, token,
		                    action, event_id, email, now_ms, l);
		ledger_claimed(res, view, event_id, email);
	}
	if (err != GC_OK || store_commit(st) != GC_OK)
		goto fail;
	if (view->email[0] == '\0')
		snprintf(view->email, sizeof(view->email), "%s", email);
	return GC_OK;
fail:
	store_rollback(st);
	return GC_ESTORE;
}

/* Run a statement on a ledger row owner holds; GC_EEXISTS when none. */
static enum gc_err
ledger_owned(struct store *st, struct db_stmt *s, const char *what)
{
	if (!store_step(st, s, what))
		return GC_ESTORE;
	return store_changes(st) > 0 ? GC_OK : GC_EEXISTS;
}

/* See store.h. */
enum gc_err
store_ledger_set(struct store *st, const char *brand, const char *token,
                 const char *action, const char *owner, const char *state,
                 int64_t sent_at_ms)
{
	struct db_stmt *s;

	s = ledger_stmt(st, STMT_LEDGER_SET, brand, token, action);
	if (s != NULL) {
		store_bind_text(s, 4, state);
		store_bind_int(s, 5, sent_at_ms);
		store_bind_int(s, 6, store_now_ms());
		store_bind_text(s, 7, owner);
	}
	return ledger_owned(st, s, "ledger set");
}

/* See store.h. */
enum gc_err
store_ledger_sending(struct store *st, const char *brand, const char *token,
                     const char *action, const char *owner,
                     const char *event_id, const char *email, int64_t now_ms)
{
	struct db_stmt *s;

	s = ledger_stmt(st, STMT_LEDGER_SENDING, brand, token, action);
	if (s != NULL) {
		store_bind_text(s, 4, owner);
		store_bind_text(s, 5, event_id);
		store_bind_text(s, 6, email);
		store_bind_int(s, 7, now_ms);
	}
	return ledger_owned(st, s, "ledger sending");
}

/* See store.h. */
enum gc_err
store_ledger_release(struct store *st, const char *brand, const char *token,
                     const char *action, const char *owner)
{
	struct db_stmt *s;

	s = ledger_stmt(st, STMT_LEDGER_RELEASE, brand, token, action);
	if (s != NULL)
		store_bind_text(s, 4, owner);
	return ledger_owned(st, s, "ledger release");
}

/* See store.h. */
enum gc_err
store_ledger_miss(struct store *st, const char *brand, const char *token,
                  const char *action, const char *owner, int64_t now_ms,
                  int *misses)
{
	struct db_stmt *s;
	enum db_rc rc;

	*misses = 0;
	s = ledger_stmt(st, STMT_LEDGER_MISS, brand, token, action);
	if (s == NULL)
		return GC_ESTORE;
	store_bind_text(s, 4, owner);
	store_bind_int(s, 5, now_ms);
	if ((rc = store_row(st, s)) == DB_ROW)
		*misses = (int)store_col_int(s, 0);
	if (!store_end(st, s, rc, "ledger miss"))
		return GC_ESTORE;
	return rc == DB_ROW ? GC_OK : GC_EEXISTS;
}

/*
 * No caller reserves a slot further ahead than its horizon (at most the
 * largest delivery budget, 120 s): one further off than this was taken
 * before the wall clock stepped back, and is not waited for.
 */
#define THROTTLE_STEPPED_MS (300 * 1000)

/* See store.h. */
enum gc_err
store_throttle_slot(struct store *st, const char *brand, int max_rps,
                    int64_t now_ms, int64_t horizon_ms, int64_t *slot_ms,
                    int *reserved)
{
	/* 10% margin: a call can leave a little after its slot. */
	return store_pace_slot(st, brand, 1100 / (max_rps > 0 ? max_rps : 1),
	                       now_ms, horizon_ms, slot_ms, reserved);
}

/* See store.h. */
enum gc_err
store_pace_slot(struct store *st, const char *key, int64_t interval_ms,
                int64_t now_ms, int64_t horizon_ms, int64_t *slot_ms,
                int *reserved)
{
	struct db_stmt *s;
	enum db_rc rc;

	*slot_ms = now_ms;
	*reserved = 0;
	if ((s = store_stmt(st, STMT_THROTTLE)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, key);
	store_bind_int(s, 2, now_ms);
	store_bind_int(s, 3, interval_ms > 0 ? interval_ms : 1);
	store_bind_int(s, 4, horizon_ms);
	store_bind_int(s, 5, THROTTLE_STEPPED_MS);
	if ((rc = store_row(st, s)) == DB_ROW) {
		*slot_ms = store_col_int(s, 0);
		*reserved = 1;
	}
	if (!store_end(st, s, rc, "throttle"))
		return GC_ESTORE;
	if (*reserved)
		return GC_OK;
	/* The next free slot is beyond the horizon: say when, keep it. */
	if ((s = store_stmt(st, STMT_THROTTLE_PEEK)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, key);
	if ((rc = store_row(st, s)) == DB_ROW)
		*slot_ms = store_col_int(s, 0);
	if (!store_end(st, s, rc, "throttle peek") || rc != DB_ROW)
		return GC_ESTORE;
	return GC_OK;
}

/* See store.h. */
int
store_shared_hosts(struct store *st)
{
	return st->ops->dialect == DB_PG;
}

/* See store.h. */
enum gc_err
store_holds_ahead(struct store *st, int64_t now_ms,
                  void (*each)(void *arg, const char *account,
                               int64_t until_ms),
                  void *arg)
{
	struct db_stmt *s;
	enum db_rc rc;

	if ((s = store_stmt(st, STMT_HOLDS_AHEAD)) == NULL)
		return GC_ESTORE;
	store_bind_int(s, 1, now_ms);
	while ((rc = store_row(st, s)) == DB_ROW)
		each(arg, store_col(s, 0), store_col_int(s, 1));
	return store_end(st, s, rc, "holds ahead") ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_hold_put(struct store *st, const char *account, int64_t until_ms)
{
	struct db_stmt *s;

	if ((s = store_stmt(st, STMT_HOLD_PUT)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, account);
	store_bind_int(s, 2, until_ms);
	return store_step(st, s, "hold put") ? GC_OK : GC_ESTORE;
}
