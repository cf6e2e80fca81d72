/*
 * The store's database seam: what a backend (sqlite.c, pgsql.c) gives
 * the store logic, which exists once above it.  The store reaches a
 * backend only through struct db_ops; nothing outside app/store sees
 * this header.
 */
#ifndef GC_DB_H
#define GC_DB_H

#include <stddef.h>
#include <stdint.h>

#include "app_config.h"
#include "gc_err.h"

struct db; /* one connection, the backend's own */
struct db_ops;

/* One prepared statement; each backend's own begins with this. */
struct db_stmt {
	const struct db_ops *ops;
};

/* What stepping a statement came to. */
enum db_rc { DB_ROW, DB_DONE, DB_ERROR };

/* What a backend's check found, and so how the store may recover. */
enum db_health {
	DB_HEALTH_OK,
	DB_HEALTH_WAIT,   /* missing, not writable, unreachable: wait */
	DB_HEALTH_REOPEN, /* replaced, or this connection is read-only */
};

/* Messages one batch may hold (batch_begin), prepares included. */
#define DB_BATCH_MAX 160

/* PostgreSQL: what a dispatcher listens on for work any host recorded. */
#define PG_WAKE_CHANNEL "gcrelay_due"
/* PostgreSQL: where every change of what processes keep is told (brand
 * documents, Emarsys tokens and ids: store_memo_fresh). */
#define PG_MEMO_CHANNEL "gcrelay_memo"

/* Dialects, indexing the SQL tables (store_sql.c, store.c). */
enum db_dialect { DB_SQLITE, DB_PG, DB__MAX };

struct db_ops {
	enum db_dialect dialect;
	/*
	 * An acknowledged commit outlives this connection (a server); 0:
	 * it is only as good as the file it went to (store_kept).
	 */
	int durable_commits;
	/* Connect per cfg; why filled on failure.  *out owned (close). */
	enum gc_err (*open)(const struct app_config *cfg, struct db **out,
	                    char *why, size_t whysz);
	void (*close)(struct db *db);
	/* Prepare sql as statement number id; NULL (logged) on failure. */
	struct db_stmt *(*prepare)(struct db *db, int id, const char *sql);
	void (*finalize)(struct db_stmt *s);
	/* Back to unstepped with no bindings. */
	void (*reset)(struct db_stmt *s);
	/* Stepped but not reset. */
	int (*busy)(struct db_stmt *s);
	/* Bind by position from 1; text is borrowed until reset. */
	void (*bind_text)(struct db_stmt *s, int i, const char *v);
	void (*bind_int)(struct db_stmt *s, int i, int64_t v);
	void (*bind_null)(struct db_stmt *s, int i);
	enum db_rc (*step)(struct db_stmt *s);
	/* Columns of the current row, from 0. */
	int (*col_null)(struct db_stmt *s, int col);
	int64_t (*col_int)(struct db_stmt *s, int col);
	const char *(*col_text)(struct db_stmt *s, int col);
	/* Rows the last completed write of s changed (valid until reset). */
	long (*changes)(struct db_stmt *s);
	/* The connection's last error, for the log. */
	const char *(*errmsg)(struct db *db);
	/* Inside an open transaction. */
	int (*in_txn)(struct db *db);
	/* Run SQL text (several statements allowed); logged on failure. */
	enum gc_err (*exec)(struct db *db, const char *sql);
	/* Record the schema version (inside the migration transaction). */
	enum gc_err (*set_version)(struct db *db, int v);
	/*
	 * Hold off every other host's migration until unlock; afterwards
	 * STMT_USER_VERSION can be read.
	 */
	enum gc_err (*migrate_lock)(struct db *db);
	void (*migrate_unlock)(struct db *db);
	/* Backend health (file or server), before the common checks. */
	enum db_health (*check)(struct db *db, char *why, size_t whysz);
	/*
	 * A new connection replacing db's only once it works, is writable
	 * and has schema version want (the old one is closed).  The caller
	 * has freed every statement.
	 */
	enum gc_err (*reopen)(struct db *db, int want);
	/*
	 * The backend's code for the last error when it says the store
	 * cannot hold a write (not merely that one failed), else 0; and
	 * that code as text.
	 */
	int (*fault)(struct db *db);
	const char *(*fault_text)(int code);
	/* Housekeeping after a purge (WAL checkpoint); may do nothing. */
	enum gc_err (*checkpoint)(struct db *db);
	/*
	 * Wake-ups across hosts (NULL where the backend has none: SQLite's
	 * hosts are one).  listen: from now on (and again after each
	 * reconnect) this connection hears notify from any connection;
	 * wake_fd: readable when something may have been heard (-1: none
	 * now); wake_drain: how many were heard, consumed; notify: tell
	 * every listener of channel, once the current transaction (if any)
	 * commits.
	 */
	enum gc_err (*listen)(struct db *db);
	int (*wake_fd)(struct db *db);
	int (*wake_drain)(struct db *db);
	enum gc_err (*notify)(struct db *db, const char *channel);
	/*
	 * Whether this connection hears every change of what processes keep
	 * (notify on PG_MEMO_CHANNEL; it listens from the first call on),
	 * and *epoch: a number that changes whenever something may have
	 * changed since (a change heard, the connection lost or made
	 * again).  0: it does not hear them now (NULL: never; SQLite reads
	 * are in-process).
	 */
	int (*memo_epoch)(struct db *db, unsigned *epoch);
	/*
	 * Statements sent without waiting for each answer, then answered
	 * together: one round trip (NULL where the backend has no such
	 * mode; SQLite is in-process).  batch_begin sends the head (SQL
	 * text, one statement per string); until batch_end, step() sends
	 * its statement and returns DB_DONE at once, with no rows and its
	 * changes unknown.  batch_end sends tail (NULL: none) and waits for
	 * every answer: changes[] gets the statements' changes in order (at
	 * most max; *n of them), and a statement that returned rows has
	 * them to step through afterwards (its last run's), until reset.
	 * GC_ESTORE when anything failed: the rest was skipped, and an open
	 * transaction is left to roll back.  Every statement a batch steps
	 * must have been prepared before it.
	 */
	enum gc_err (*batch_begin)(struct db *db, const char *const *head,
	                           size_t n);
	enum gc_err (*batch_end)(struct db *db, const char *tail, long *changes,
	                         size_t max, size_t *n);
};

extern const struct db_ops db_sqlite_ops;
extern const struct db_ops db_pg_ops;

#endif
