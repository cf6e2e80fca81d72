/*
 * Internals shared by the store_*.c files.  Nothing outside the store
 * includes this header.
 */
#ifndef GC_STORE_PRIV_H
#define GC_STORE_PRIV_H

#include <stdint.h>

#include "db.h"
#include "store.h"

/*
 * Every statement the store runs, by name; the SQL is in stmts[]
 * (store_sql.c).  Each is prepared on first use and kept until
 * store_close.
 */
/* Attempts one statement inserts at most (STMT_ATTEMPT_ADD_4). */
#define ATTEMPT_ROWS_MAX 4

enum stmt {
	STMT_BEGIN,
	STMT_COMMIT,
	STMT_ROLLBACK,
	STMT_USER_VERSION,
	/* brands (store.c) */
	STMT_BRAND_EXISTS,
	STMT_BRAND_PUT,
	STMT_BRAND_GET,
	STMT_BRAND_DELETE,
	STMT_BRAND_LIST,
	/* admin replay cache (store.c) */
	STMT_ADMIN_REPLAY_PURGE,
	STMT_ADMIN_REPLAY_INSERT,
	/* events, deliveries, attempts (store_events.c, store_queue.c) */
	STMT_EVENT_INSERT,
	STMT_DELIVERY_INSERT,
	STMT_EVENT_REFRESH,
	STMT_EVENT_OUTCOME,
	STMT_EVENT_BODY,
	STMT_EVENT_EXISTS,
	STMT_EVENT_DETAIL,
	STMT_EVENTS_LIST,
	STMT_DELIVERIES_OF,
	STMT_RESULT_FINISH,
	STMT_RESULT_POSTPONE,
	STMT_DELIVERY_RUNS,
	STMT_ATTEMPT_ADD, /* one row; then 2, 3 and ATTEMPT_ROWS_MAX rows */
	STMT_ATTEMPT_ADD_2,
	STMT_ATTEMPT_ADD_3,
	STMT_ATTEMPT_ADD_4,
	STMT_ATTEMPTS_OF,
	STMT_CLAIM_SELECT,
	STMT_CLAIM_ONE,
	STMT_CLAIM_BATCH,         /* PostgreSQL only */
	STMT_EVENT_INSERT_2,      /* PostgreSQL only */
	STMT_EVENT_INSERT_2_WAKE, /* PostgreSQL only */
	STMT_OLDEST_DUE,
	STMT_EVENT_TAKE,
	STMT_BRAND_REQUEUE,
	STMT_OUTBOX_DEPTH,
	STMT_PURGE_EXCERPTS,
	STMT_PURGE_REASONS,
	STMT_PURGE_LEDGER,
	STMT_PURGE_BODIES,
	/* remote API state (store_remote.c) */
	STMT_EM_IDS_OF,
	STMT_EM_ID_PUT,
	STMT_EM_ID_FORGET,
	STMT_EM_TOKEN_GET,
	STMT_EM_TOKEN_PUT,
	STMT_EM_TOKEN_FORGET,
	STMT_EM_TOKEN_LEASE,
	STMT_EM_TOKEN_LEASE_PEEK,
	STMT_EM_TOKEN_UNLEASE,
	STMT_LEDGER_GET,
	STMT_LEDGER_RECONCILE,
	STMT_LEDGER_INSERT,
	STMT_LEDGER_INSERT_NEW,
	STMT_LEDGER_SET,
	STMT_LEDGER_SENDING,
	STMT_LEDGER_MISS,
	STMT_LEDGER_RELEASE,
	STMT_THROTTLE,
	STMT_THROTTLE_DURABLE, /* STMT_THROTTLE, never a lazy commit */
	STMT_THROTTLE_PEEK,
	STMT_HOLDS_AHEAD,
	STMT_HOLD_PUT,
	STMT__MAX
};

/* Brand documents a process keeps (store_brand_doc). */
#define BRAND_MEMO_MAX 64
/* Emarsys accounts whose token and ids it keeps (store_em_cached_get). */
#define EM_MEMO_MAX 64

struct brand_memo {
	char *slug, *doc; /* owned; NULL: a free slot */
};

struct em_row {
	char *kind, *name, *id;
};

struct em_memo {
	char *brand, *client_id, *scope; /* owned; brand NULL: a free slot */
	char *sealed;                    /* the stored token; NULL: none */
	int64_t expires_ms;
	struct em_row *rows; /* every cached id of scope */
	size_t nrows;
};

struct store {
	const struct db_ops *ops; /* the backend */
	struct db *db;
	struct db_stmt *stmt[STMT__MAX]; /* prepared on first use */
	long changes;       /* rows the last finished write changed */
	int64_t recover_ms; /* monotonic time of the last recovery try */
	int unhealthy;      /* last store_health failed (logged once) */
	int lazy_commits;   /* store.durability normal (store_begin_lazy) */
	int batch_read;     /* the open batch is STORE_READ: no COMMIT */
	struct store_stats stats;
	/* Kept while the backend's memo_epoch stays memo_epoch. */
	struct brand_memo brands[BRAND_MEMO_MAX];
	struct em_memo ems[EM_MEMO_MAX];
	unsigned memo_epoch;
	unsigned brands_next, ems_next; /* the slots taken next when full */
};

/*
 * Log the database error for what; returns GC_ESTORE.  Call it before any
 * rollback: that replaces the error.  Failed statements and transaction
 * commands log themselves, so a rollback after them needs no store_fail.
 */
enum gc_err store_fail(struct store *st, const char *what);
/*
 * Note the outcome of a write for store_health: a fault (the backend's
 * error of st's last call, when it says the store cannot hold a write:
 * SQLite's file full, unreadable, corrupt, read-only or gone) or a
 * committed write.
 */
void store_note_fault(struct store *st);
void store_note_ok(void);
/* How many migrations this gcrelay knows: its schema version. */
extern const int store_nmigrations;
/*
 * Whether this process may use what it keeps (brand documents, Emarsys
 * tokens and ids): its connection hears every change (PostgreSQL); all
 * of it is dropped first when something may have changed since the last
 * call.  0: read the store (SQLite always: its reads are in-process).
 */
int store_memo_fresh(struct store *st);
/*
 * Something kept changed: this process drops all it keeps, and every
 * process hears it once the current transaction, if any, commits.
 */
enum gc_err store_memo_told(struct store *st);
/* Drop everything kept (store_close, store_memo_fresh). */
void store_memo_forget(struct store *st);
void store_em_memo_forget(struct store *st);

/* Run SQL text once (startup, migrations, housekeeping); logged. */
enum gc_err store_exec(struct store *st, const char *sql);

/*
 * The cached statement id, reset with no bindings, prepared on first use
 * (store_sql.c).  Borrowed: give it back with store_stmt_done.  NULL
 * when it cannot be prepared (logged).
 */
struct db_stmt *store_stmt(struct store *st, enum stmt id);
/* Reset s and clear its bindings (s may be NULL). */
void store_stmt_done(struct db_stmt *s);
/* Free every cached statement (store_close). */
void store_stmts_free(struct store *st);
/* Step s, counted: DB_ROW, DB_DONE or DB_ERROR. */
enum db_rc store_row(struct store *st, struct db_stmt *s);
/*
 * Give s back after its last step returned rc, noting the rows it
 * changed (store_changes).  Returns 1 when rc is DB_ROW or DB_DONE, else
 * logs what with the step's error (before the reset or a rollback can
 * replace it) and returns 0.
 */
int store_end(struct store *st, struct db_stmt *s, enum db_rc rc,
              const char *what);
/*
 * Step s once and give it back (s may be NULL: a failed store_stmt).
 * Returns 1 on DB_DONE or DB_ROW, else logs what and returns 0.
 */
int store_step(struct store *st, struct db_stmt *s, const char *what);
/* Rows the last statement given back changed (an INSERT, UPDATE, DELETE). */
long store_changes(struct store *st);

/* Bind text (NULL binds NULL), or an integer; borrowed until done. */
void store_bind_text(struct db_stmt *s, int i, const char *v);
void store_bind_int(struct db_stmt *s, int i, int64_t v);
void store_bind_null(struct db_stmt *s, int i);
/* Bind v, or NULL when v <= 0. */
void store_bind_pos(struct db_stmt *s, int i, int64_t v);

/* Copy of a text column (caller frees), NULL when NULL. */
char *store_col_text(struct db_stmt *s, int col);
/* Text column, borrowed until the next step or done; NULL when NULL. */
const char *store_col(struct db_stmt *s, int col);
/* Integer column (0 when NULL), and whether a column is NULL. */
int64_t store_col_int(struct db_stmt *s, int col);
int store_col_null(struct db_stmt *s, int col);

/*
 * Begin a write transaction (one writer at a time, on every backend:
 * BEGIN IMMEDIATE; BEGIN and a transaction advisory lock) / COMMIT /
 * ROLLBACK (only when one is open).
 */
enum gc_err store_begin(struct store *st);
/*
 * Begin a write transaction that reads and writes only rows tied to key
 * (an event's, one Yotpo ledger entry's) or rows it locks itself (FOR
 * UPDATE SKIP LOCKED): on PostgreSQL it waits only for transactions on
 * the same key and for store_begin's; on SQLite it is store_begin.
 */
enum gc_err store_begin_on(struct store *st, const char *key);
/*
 * store_begin_on for a transaction whose loss in a crash of the database
 * costs only what a gcrelay crash at that moment would: deliveries'
 * leases and results, which a later run redoes (an Emarsys call may be
 * repeated; a Yotpo award never is, its ledger entry is durable).  With
 * store.durability = normal its commit does not wait for PostgreSQL's
 * WAL flush (SQLite's normal does not wait for any).  Never for an
 * accepted event, a ledger entry or an operator's change.
 */
enum gc_err store_begin_lazy(struct store *st, const char *key);
/* How a write transaction begins on PostgreSQL, beyond its locks. */
#define STORE_LAZY    0x1 /* as store_begin_lazy */
#define STORE_ORDERED 0x2 /* no bitmap scans (the claim's) */
#define STORE_READ    0x4 /* no BEGIN, COMMIT or locks (see below) */
/*
 * A write transaction on key (how: STORE_ flags) sent as one batch
 * (db.h), where the backend has batches: 1 when begun, 0 when it has
 * none (begin another way), -1 on failure.  Its statements are then sent
 * unanswered (store_changes unknown, no rows) until store_batch_commit,
 * which commits and gives their changes in order, and the rows of those
 * that return rows to step through, or rolls back.  With STORE_READ the
 * batch has no BEGIN, COMMIT or locks (key unused): selects, or writes
 * that need no lock, which PostgreSQL runs as one implicit transaction
 * committed at the batch's end; ended by store_batch_commit all the
 * same, one round trip for all of them.  A statement first used inside
 * a batch is prepared by it (pgsql.c).
 */
int store_batch_begin(struct store *st, const char *key, int how);
/*
 * store_batch_begin for a transaction writing under several keys (at
 * most STORE_LOCK_KEYS_MAX; more, or none, lock the whole store).
 */
#define STORE_LOCK_KEYS_MAX 32
int store_batch_begin_keys(struct store *st, const char *const *keys,
                           size_t nkeys, int how);
enum gc_err store_batch_commit(struct store *st, long *changes, size_t max,
                               size_t *n);
enum gc_err store_commit(struct store *st);
void store_rollback(struct store *st);

#endif
