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

/* ---- what a process keeps of an Emarsys account (store_memo_fresh) ---- */

static void
em_memo_drop(struct em_memo *m)
{
	for (size_t i = 0; i < m->nrows; i++) {
		free(m->rows[i].kind);
		free(m->rows[i].name);
		free(m->rows[i].id);
	}
	free(m->rows);
	free(m->brand);
	free(m->client_id);
	free(m->scope);
	free(m->sealed);
	memset(m, 0, sizeof(*m));
}

/* See store_priv.h. */
void
store_em_memo_forget(struct store *st)
{
	for (int i = 0; i < EM_MEMO_MAX; i++)
		em_memo_drop(&st->ems[i]);
}

static struct em_memo *
em_memo_find(struct store *st, const char *brand, const char *client_id,
             const char *scope)
{
	for (int i = 0; i < EM_MEMO_MAX; i++) {
		struct em_memo *m = &st->ems[i];
		if (m->brand != NULL && strcmp(m->brand, brand) == 0 &&
		    strcmp(m->client_id, client_id) == 0 &&
		    strcmp(m->scope, scope) == 0)
			return m;
	}
	return NULL;
}

/* A slot for a new entry, with its key; NULL when out of memory. */
static struct em_memo *
em_memo_new(struct store *st, const char *brand, const char *client_id,
            const char *scope)
{
	struct em_memo *m = &st->ems[st->ems_next++ % EM_MEMO_MAX];

	em_memo_drop(m);
	m->brand = strdup(brand);
	m->client_id = strdup(client_id);
	m->scope = strdup(scope);
	if (m->brand == NULL || m->client_id == NULL || m->scope == NULL) {
		em_memo_drop(m);
		return NULL;
	}
	return m;
}

/* Keep one id row in m; 0 when out of memory. */
static int
em_memo_row(struct em_memo *m, const char *kind, const char *name,
            const char *id)
{
	struct em_row *r = realloc(m->rows, (m->nrows + 1) * sizeof(*r));

	if (r == NULL)
		return 0;
	m->rows = r;
	r = &m->rows[m->nrows++];
	r->kind = strdup(kind);
	r->name = strdup(name);
	r->id = strdup(id);
	return r->kind != NULL && r->name != NULL && r->id != NULL;
}

/* The entry of ids[] that a cached id (kind, name, id) fills. */
static void
ids_fill(struct em_id *ids, size_t n, const char *kind, const char *name,
         const char *id)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(ids[i].kind, kind) == 0 &&
		    strcmp(ids[i].name, name) == 0)
			snprintf(ids[i].out, 32, "%s", id);
}

/* After a write of a token or an id: every process drops what it keeps. */
static void
em_told(struct store *st)
{
	if (store_memo_told(st) != GC_OK)
		log_warnx("store: could not tell the other processes of a "
		          "new Emarsys token or id; they find out from "
		          "Emarsys's answer (401, unknown id)");
}

/*
 * The rows of STMT_EM_IDS_OF (bound, stepped or batched) into ids[], and
 * each kept in keep unless NULL (*kept 0 when one could not be).
 */
static enum gc_err
ids_read(struct store *st, struct db_stmt *s, struct em_id *ids, size_t n,
         struct em_memo *keep, int *kept)
{
	enum db_rc rc;

	while ((rc = store_row(st, s)) == DB_ROW) {
		ids_fill(ids, n, store_col(s, 0), store_col(s, 1),
		         store_col(s, 2));
		if (keep != NULL &&
		    !em_memo_row(keep, store_col(s, 0), store_col(s, 1),
		                 store_col(s, 2)))
			*kept = 0;
	}
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
	return ids_read(st, s, ids, n, NULL, NULL);
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
	if (!store_step(st, s, "emarsys id put"))
		return GC_ESTORE;
	em_told(st);
	return GC_OK;
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
	if (!store_step(st, s, "emarsys id forget"))
		return GC_ESTORE;
	em_told(st);
	return GC_OK;
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
	struct em_memo *m = NULL;
	long changes[2];
	size_t got;
	enum gc_err err, ids_err;
	int keep, kept = 1;

	/* Without batches (SQLite): the two look-ups in turn. */
	if (n == 0 || st->ops->batch_begin == NULL) {
		if (n > 0)
			(void)store_em_ids_get(st, scope, ids, n);
		return store_em_token_get(st, brand, client_id, sealed,
		                          expires_ms);
	}
	*sealed = NULL;
	*expires_ms = 0;
	if ((keep = store_memo_fresh(st)) &&
	    (m = em_memo_find(st, brand, client_id, scope)) != NULL) {
		for (size_t r = 0; r < m->nrows; r++)
			ids_fill(ids, n, m->rows[r].kind, m->rows[r].name,
			         m->rows[r].id);
		*expires_ms = m->expires_ms;
		if (m->sealed == NULL)
			return GC_ENOTFOUND;
		return (*sealed = strdup(m->sealed)) != NULL ? GC_OK
		                                             : GC_ENOMEM;
	}
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
	/* The answers, each read as its own look-up reads it, and kept
	 * while nothing changes (store_memo_fresh said so before the read:
	 * a change since is heard at its next call). */
	if (keep)
		m = em_memo_new(st, brand, client_id, scope);
	ids_err = ids_read(st, i, ids, n, m, &kept);
	err = token_read(st, t, sealed, expires_ms);
	if (m == NULL)
		return err;
	if (ids_err != GC_OK || !kept ||
	    (err != GC_OK && err != GC_ENOTFOUND) ||
	    (err == GC_OK && (m->sealed = strdup(*sealed)) == NULL))
		em_memo_drop(m); /* read again next time */
	else
		m->expires_ms = *expires_ms;
	return err;
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
	if (!store_step(st, s, "emarsys token put"))
		return GC_ESTORE;
	em_told(st);
	return GC_OK;
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
	if (!store_step(st, s, "emarsys token forget"))
		return GC_ESTORE;
	em_told(st);
	return GC_OK;
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

/* The write lock key of an award key's transactions. */
static void
ledger_key(char *key, size_t n, const char *brand, const char *token,
           const char *action)
{
	snprintf(key, n, "ledger\x1f%s\x1f%s\x1f%s", brand, token, action);
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

/*
 * The claim of a key its fast insert found taken: read it, then insert
 * or take over, under the key's lock (one entry's transactions queue).
 */
static enum gc_err
ledger_claim_seen(struct store *st, const char *brand, const char *token,
                  const char *action, const char *event_id, const char *email,
                  int64_t now_ms, const struct lease *l, enum ledger_claim *res,
                  struct ledger_view *view)
{
	struct db_stmt *s;
	enum gc_err err = GC_OK;
	enum db_rc rc;
	char key[512];

	ledger_key(key, sizeof(key), brand, token, action);
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

/* See store.h. */
enum gc_err
store_ledger_claim(struct store *st, const char *brand, const char *token,
                   const char *action, const char *event_id, const char *email,
                   int64_t now_ms, const struct lease *l,
                   enum ledger_claim *res, struct ledger_view *view)
{
	enum gc_err err;

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
	return ledger_claim_seen(st, brand, token, action, event_id, email,
	                         now_ms, l, res, view);
}

/* Run a statement on a ledger row owner holds; GC_EEXISTS when none. */
static enum gc_err
ledger_owned(struct store *st, struct db_stmt *s, const char *what)
{
	if (!store_step(st, s, what))
		return GC_ESTORE;
	return store_changes(st) > 0 ? GC_OK : GC_EEXISTS;
}

/* STMT_LEDGER_SET for one state, bound; NULL on failure. */
static struct db_stmt *
ledger_set_stmt(struct store *st, const struct ledger_set *v)
{
	struct db_stmt *s;

	s = ledger_stmt(st, STMT_LEDGER_SET, v->brand, v->token, v->action);
	if (s != NULL) {
		store_bind_text(s, 4, v->state);
		store_bind_int(s, 5, v->sent_at_ms);
		store_bind_int(s, 6, store_now_ms());
		store_bind_text(s, 7, v->owner);
	}
	return s;
}

/* See store.h. */
enum gc_err
store_ledger_set(struct store *st, const char *brand, const char *token,
                 const char *action, const char *owner, const char *state,
                 int64_t sent_at_ms)
{
	struct ledger_set v = {brand, token,      action, owner,
	                       state, sent_at_ms, GC_OK};

	return ledger_owned(st, ledger_set_stmt(st, &v), "ledger set");
}

/* store_ledger_set_many of at most STORE_LOCK_KEYS_MAX states. */
static enum gc_err
ledger_set_some(struct store *st, struct ledger_set *v, size_t n)
{
	char key[STORE_LOCK_KEYS_MAX][512];
	const char *keys[STORE_LOCK_KEYS_MAX];
	long changes[DB_BATCH_MAX];
	size_t got = 0;
	int batched;

	for (size_t i = 0; i < n; i++) {
		ledger_key(key[i], sizeof(key[i]), v[i].brand, v[i].token,
		           v[i].action);
		keys[i] = key[i];
	}
	if ((batched = store_batch_begin_keys(st, keys, n, STORE_LAZY)) < 0 ||
	    (batched == 0 && store_begin_lazy(st, NULL) != GC_OK))
		return GC_ESTORE;
	for (size_t i = 0; i < n; i++) {
		if (!store_step(st, ledger_set_stmt(st, &v[i]), "ledger set"))
			goto fail;
		v[i].err = store_changes(st) > 0 ? GC_OK : GC_EEXISTS;
	}
	if (batched ? store_batch_commit(st, changes, DB_BATCH_MAX, &got)
	            : store_commit(st))
		goto fail;
	for (size_t i = 0; batched && i < n; i++)
		v[i].err = i < got && changes[i] > 0 ? GC_OK : GC_EEXISTS;
	return GC_OK;
fail:
	store_rollback(st);
	return GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_ledger_set_many(struct store *st, struct ledger_set *v, size_t n)
{
	enum gc_err err = GC_OK;
	size_t k;

	if (n == 1) {
		v[0].err =
		    store_ledger_set(st, v[0].brand, v[0].token, v[0].action,
		                     v[0].owner, v[0].state, v[0].sent_at_ms);
		return v[0].err == GC_ESTORE ? GC_ESTORE : GC_OK;
	}
	for (size_t i = 0; i < n; i += k) {
		k = n - i < STORE_LOCK_KEYS_MAX ? n - i : STORE_LOCK_KEYS_MAX;
		if (ledger_set_some(st, v + i, k) == GC_OK)
			continue;
		err = GC_ESTORE;
		for (size_t j = i; j < i + k; j++)
			v[j].err = GC_ESTORE;
	}
	return err;
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

/* A brand's Yotpo calls apart, in ms: 10% margin, as a call can leave a
 * little after its slot. */
static int64_t
throttle_every(int max_rps)
{
	return 1100 / (max_rps > 0 ? max_rps : 1);
}

/* See store.h. */
enum gc_err
store_throttle_slot(struct store *st, const char *brand, int max_rps,
                    int64_t now_ms, int64_t horizon_ms, int64_t *slot_ms,
                    int *reserved)
{
	return store_pace_slot(st, brand, throttle_every(max_rps), now_ms,
	                       horizon_ms, slot_ms, reserved);
}

/* STMT_THROTTLE (as stmt, its durable twin) bound for a slot of key. */
static struct db_stmt *
pace_stmt(struct store *st, enum stmt stmt, const char *key,
          int64_t interval_ms, int64_t now_ms, int64_t horizon_ms)
{
	struct db_stmt *s = store_stmt(st, stmt);

	if (s != NULL) {
		store_bind_text(s, 1, key);
		store_bind_int(s, 2, now_ms);
		store_bind_int(s, 3, interval_ms > 0 ? interval_ms : 1);
		store_bind_int(s, 4, horizon_ms);
		store_bind_int(s, 5, THROTTLE_STEPPED_MS);
	}
	return s;
}

/* The next free slot of key, beyond the caller's horizon: not taken. */
static enum gc_err
pace_peek(struct store *st, const char *key, int64_t *slot_ms)
{
	struct db_stmt *s;
	enum db_rc rc;

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
enum gc_err
store_pace_slot(struct store *st, const char *key, int64_t interval_ms,
                int64_t now_ms, int64_t horizon_ms, int64_t *slot_ms,
                int *reserved)
{
	struct db_stmt *s;
	enum db_rc rc;

	*slot_ms = now_ms;
	*reserved = 0;
	s = pace_stmt(st, STMT_THROTTLE, key, interval_ms, now_ms, horizon_ms);
	if (s == NULL)
		return GC_ESTORE;
	if ((rc = store_row(st, s)) == DB_ROW) {
		*slot_ms = store_col_int(s, 0);
		*reserved = 1;
	}
	if (!store_end(st, s, rc, "throttle"))
		return GC_ESTORE;
	return *reserved ? GC_OK : pace_peek(st, key, slot_ms);
}

/* See store.h. */
enum gc_err
store_ledger_claim_paced(struct store *st, const char *brand, const char *token,
                         const char *action, const char *event_id,
                         const char *email, int64_t now_ms,
                         const struct lease *l, enum ledger_claim *res,
                         struct ledger_view *view, int max_rps,
                         int64_t horizon_ms, int64_t *slot_ms, int *reserved)
{
	struct db_stmt *s;
	long changes[2];
	size_t got = 0;
	enum gc_err err;

	if (st->ops->batch_begin == NULL) {
		err = store_ledger_claim(st, brand, token, action, event_id,
		                         email, now_ms, l, res, view);
		return err != GC_OK
		           ? err
		           : store_throttle_slot(st, brand, max_rps, now_ms,
		                                 horizon_ms, slot_ms, reserved);
	}
	/*
	 * The claim's insert and the slot in one message, committed
	 * together at its end (PostgreSQL's implicit transaction): the
	 * claim waits for the WAL flush, so the slot takes the durable
	 * statement (its lazy one would turn the flush off for both).
	 */
	memset(view, 0, sizeof(*view));
	*slot_ms = now_ms;
	*reserved = 0;
	if (store_batch_begin(st, NULL, STORE_READ) != 1)
		return GC_ESTORE;
	if (ledger_insert(st, STMT_LEDGER_INSERT_NEW, brand, token, action,
	                  event_id, email, now_ms, l) != GC_OK ||
	    (s = pace_stmt(st, STMT_THROTTLE_DURABLE, brand,
	                   throttle_every(max_rps), now_ms, horizon_ms)) ==
	        NULL ||
	    !store_step(st, s, "throttle") ||
	    store_batch_commit(st, changes, 2, &got) != GC_OK || got != 2) {
		store_rollback(st);
		return GC_ESTORE;
	}
	/* Its row, kept by the batch, when it reserved one; none else. */
	if (changes[1] > 0 && store_row(st, s) == DB_ROW) {
		*slot_ms = store_col_int(s, 0);
		*reserved = 1;
	}
	store_stmt_done(s);
	if (!*reserved && pace_peek(st, brand, slot_ms) != GC_OK)
		return GC_ESTORE;
	if (changes[0] > 0) {
		ledger_claimed(res, view, event_id, email);
		return GC_OK;
	}
	return ledger_claim_seen(st, brand, token, action, event_id, email,
	                         now_ms, l, res, view);
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
