/*
 * gcrelay store copy: an existing SQLite store into an empty PostgreSQL
 * one, so a one-host install can grow into many without losing its
 * history or awarding anything again.  Both are migrated to this
 * gcrelay's schema first; the rows then move table by table in one
 * PostgreSQL transaction (all or nothing), as text the server types.
 */
#include <stdio.h>
#include <string.h>

#include "db.h"
#include "log.h"
#include "store.h"
#include "store_priv.h"

/*
 * What is copied, in an order the foreign keys accept.  Not copied: the
 * admin replay cache, leases, throttle slots, holds and the health probe
 * (short-lived, or written afresh).  Brand documents keep their sealed
 * secrets: every host uses the same secrets_key_file.
 */
static const struct copy_table {
	const char *name;
	const char *cols;
	int ncols;
	const char *order;
} copy_tables[] = {
    {"brands", "slug, doc, created_at, updated_at", 4, "slug"},
    {"events",
     "id, brand, kind, body, received_at, status, http_status, "
     "response, purged",
     9, "rowid"},
    {"deliveries",
     "event_id, destination, status, reason, warning, attempts, next_at, "
     "lease_until, updated_at, lease_owner, progress",
     11, "rowid"},
    {"attempts",
     "id, event_id, destination, at, step, outcome, http_status, "
     "reply_code, excerpt, latency_ms",
     10, "id"},
    {"yotpo_ledger",
     "brand, token, action, state, event_id, reference, lease_until, "
     "sent_at, updated_at, lease_owner, email, misses",
     12, "rowid"},
    {"emarsys_ids", "brand, kind, name, remote_id, updated_at", 5, "rowid"},
    {"emarsys_tokens", "brand, client_id, token, expires_at", 4, "rowid"},
};

/* The SQL text for reading (SQLite) or writing (PostgreSQL) table t. */
static void
copy_sql(const struct copy_table *t, int insert, char *buf, size_t bufsz)
{
	size_t o;

	if (!insert) {
		snprintf(buf, bufsz, "SELECT %s FROM %s ORDER BY %s", t->cols,
		         t->name, t->order);
		return;
	}
	o = (size_t)snprintf(buf, bufsz, "INSERT INTO %s(%s) VALUES (", t->name,
	                     t->cols);
	for (int i = 1; i <= t->ncols && o < bufsz; i++)
		o += (size_t)snprintf(buf + o, bufsz - o, "$%d%s", i,
		                      i < t->ncols ? ", " : ")");
}

/* Copy the rows of t (number id) from src to dst; how many, or -1. */
static long
copy_table(struct store *src, struct store *dst, const struct copy_table *t,
           int id)
{
	char sel[512], ins[512];
	struct db_stmt *r, *w;
	enum db_rc rc;
	long n = 0;

	copy_sql(t, 0, sel, sizeof(sel));
	copy_sql(t, 1, ins, sizeof(ins));
	if ((r = src->ops->prepare(src->db, id, sel)) == NULL)
		return -1;
	if ((w = dst->ops->prepare(dst->db, 1000 + id, ins)) == NULL) {
		src->ops->finalize(r);
		return -1;
	}
	while ((rc = r->ops->step(r)) == DB_ROW) {
		for (int i = 0; i < t->ncols; i++)
			store_bind_text(w, i + 1, store_col(r, i));
		if (w->ops->step(w) == DB_ERROR) {
			log_warnx("store copy: %s: %s", t->name,
			          dst->ops->errmsg(dst->db));
			rc = DB_ERROR;
			break;
		}
		w->ops->reset(w);
		n++;
	}
	if (rc == DB_ERROR)
		log_warnx("store copy: %s: %s", t->name,
		          src->ops->errmsg(src->db));
	src->ops->finalize(r);
	dst->ops->finalize(w);
	return rc == DB_DONE ? n : -1;
}

/* Refuse a destination that already holds brands or events. */
static int
copy_dst_empty(struct store *dst)
{
	struct db_stmt *s;
	int empty = 0;

	s = dst->ops->prepare(dst->db, 999,
	                      "SELECT (SELECT count(*) FROM brands) + "
	                      "(SELECT count(*) FROM events)");
	if (s == NULL)
		return 0;
	if (s->ops->step(s) == DB_ROW)
		empty = store_col_int(s, 0) == 0;
	s->ops->finalize(s);
	return empty;
}

/* See store.h. */
enum gc_err
store_copy(const struct app_config *from, const struct app_config *to,
           char *why, size_t whysz)
{
	struct store *src = NULL, *dst = NULL;
	enum gc_err err = GC_ESTORE;
	size_t i;
	long n;

	if (store_open(from, &src, why, whysz) != GC_OK ||
	    store_open(to, &dst, why, whysz) != GC_OK)
		goto out;
	if (dst->ops->dialect != DB_PG || !copy_dst_empty(dst)) {
		snprintf(why, whysz,
		         "the destination must be an empty "
		         "PostgreSQL store");
		goto out;
	}
	if (dst->ops->exec(dst->db, "BEGIN") != GC_OK)
		goto out;
	for (i = 0; i < sizeof(copy_tables) / sizeof(copy_tables[0]); i++) {
		if ((n = copy_table(src, dst, &copy_tables[i], (int)i)) < 0)
			break;
		log_info("store copy: %s: %ld rows", copy_tables[i].name, n);
	}
	if (i < sizeof(copy_tables) / sizeof(copy_tables[0]) ||
	    dst->ops->exec(dst->db, "SELECT setval(pg_get_serial_sequence("
	                            "'attempts', 'id'), coalesce(max(id), 0) "
	                            "+ 1, false) FROM attempts") != GC_OK ||
	    dst->ops->exec(dst->db, "COMMIT") != GC_OK) {
		snprintf(why, whysz, "copy failed: %s",
		         dst->ops->errmsg(dst->db));
		(void)dst->ops->exec(dst->db, "ROLLBACK");
		goto out;
	}
	err = GC_OK;
out:
	store_close(src);
	store_close(dst);
	return err;
}
