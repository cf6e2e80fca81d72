/*
 * The PostgreSQL backend (libpq): one connection per process, to a
 * database several hosts share.  Statements are prepared once per
 * connection (PQprepare) and run with text parameters that the server
 * types from the statement; a lost connection is re-established on the
 * next statement after the failed one, which then prepares itself again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "db.h"
#include "log.h"
#include "metrics.h"

/* Keys for pg_advisory_lock: the migration, and (store_sql.c) writes. */
#define PG_MIGRATE_LOCK 4741521
#define PG_MAXPARAMS    36 /* 4 attempts rows of 9 */

struct db {
	PGconn *conn;
	int lock_timeout_ms; /* store.busy_timeout_ms, as with SQLite */
	unsigned gen;  /* bumped on every reconnect: statements re-prepare */
	int listening; /* LISTEN PG_WAKE_CHANNEL, again on reconnect */
	int hearing;   /* LISTEN PG_MEMO_CHANNEL, again on reconnect */
	int wakes;     /* notifications on PG_WAKE_CHANNEL, not yet drained */
	unsigned memo_news; /* on PG_MEMO_CHANNEL, and lost connections */
	/* A batch (pipeline mode): each message sent, and the statement
	 * whose answer it is (NULL: the answer is not kept). */
	int batching, batch_failed, nsent;
	struct pg_stmt *sent[DB_BATCH_MAX];
	char err[512];
};

struct pg_stmt {
	struct db_stmt base;
	struct db *db;
	int id;
	char *sql;
	unsigned gen; /* the connection it was prepared on */
	int nparams;
	const char *vals[PG_MAXPARAMS];
	char ints[PG_MAXPARAMS][24];
	PGresult *res;
	int row, nrows;
	long changes;
};

#define PS(x) ((struct pg_stmt *)(x))

/* Remember the connection's error (one line) for errmsg. */
static void
pg_note(struct db *db, const char *what)
{
	const char *m = PQerrorMessage(db->conn);

	snprintf(db->err, sizeof(db->err), "%s%s%.*s", what ? what : "",
	         what ? ": " : "", (int)strcspn(m, "\n"), m);
}

static enum gc_err pg_session(struct db *db);

/* A new connection in place of this one: statements prepare again. */
static void
pg_reconnect(struct db *db)
{
	PQreset(db->conn);
	db->gen++;
	if (PQstatus(db->conn) != CONNECTION_OK)
		pg_note(db, "reconnect");
	else
		(void)pg_session(db);
}

/*
 * After a failure: when the connection itself is gone, reconnect once,
 * so the next statement finds a live one (this one has failed anyway).
 */
static void
pg_recover(struct db *db)
{
	if (PQstatus(db->conn) == CONNECTION_OK)
		return;
	log_warnx("store: connection to PostgreSQL lost; reconnecting");
	pg_reconnect(db);
}

static enum gc_err pg_exec(struct db *db, const char *sql);

/*
 * Session settings, again after each reconnect: a writer that holds the
 * write lock too long makes others give up after the busy timeout (503)
 * rather than wait forever, as SQLite's busy_timeout does.
 */
static enum gc_err
pg_session(struct db *db)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "SET lock_timeout = %d",
	         db->lock_timeout_ms);
	if (pg_exec(db, sql) != GC_OK)
		return GC_ESTORE;
	/* Changes while disconnected: gen moved on, so the memo epoch did
	 * too.  Not hearing them again: ask again next time. */
	if (db->hearing && pg_exec(db, "LISTEN " PG_MEMO_CHANNEL) != GC_OK)
		db->hearing = 0;
	/* What was notified while disconnected is found by the poll. */
	return db->listening ? pg_exec(db, "LISTEN " PG_WAKE_CHANNEL) : GC_OK;
}

static void
pg_quiet(void *arg, const char *msg)
{
	(void)arg;
	log_debug("store: postgresql: %.*s", (int)strcspn(msg, "\n"), msg);
}

static enum gc_err
pg_exec(struct db *db, const char *sql)
{
	enum gc_err err = GC_OK;
	ExecStatusType rs;
	PGresult *r;

	metrics_store_round_trip();
	r = PQexec(db->conn, sql);
	rs = PQresultStatus(r);

	if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
		pg_note(db, NULL);
		log_warnx("store: %.60s: %s", sql, db->err);
		err = GC_ESTORE;
	}
	PQclear(r);
	if (err != GC_OK)
		pg_recover(db);
	return err;
}

static void
pg_close(struct db *db)
{
	if (db == NULL)
		return;
	PQfinish(db->conn);
	free(db);
}

static enum gc_err
pg_open(const struct app_config *cfg, struct db **out, char *why, size_t whysz)
{
	const char *keys[] = {"dbname", "application_name", "password", NULL};
	const char *vals[] = {cfg->store_url, "gcrelay", cfg->store_password,
	                      NULL};
	struct db *db;

	*out = NULL;
	if ((db = calloc(1, sizeof(*db))) == NULL)
		return GC_ENOMEM;
	if (cfg->store_password == NULL)
		keys[2] = NULL;
	/* expand_dbname: store.url is a conninfo string or a URI. */
	db->conn = PQconnectdbParams(keys, vals, 1);
	if (db->conn == NULL || PQstatus(db->conn) != CONNECTION_OK) {
		snprintf(why, whysz, "cannot connect to PostgreSQL: %.*s",
		         db->conn ? (int)strcspn(PQerrorMessage(db->conn), "\n")
		                  : 13,
		         db->conn ? PQerrorMessage(db->conn) : "out of memory");
		pg_close(db);
		return GC_ESTORE;
	}
	PQsetNoticeProcessor(db->conn, pg_quiet, NULL);
	db->lock_timeout_ms = cfg->busy_timeout_ms;
	if (pg_session(db) != GC_OK) {
		snprintf(why, whysz, "cannot configure the session: %s",
		         db->err);
		pg_close(db);
		return GC_ESTORE;
	}
	*out = db;
	return GC_OK;
}

/* Prepare s on the current connection as "s<id>". */
static int
pg_prepare_on(struct pg_stmt *ps)
{
	struct db *db = ps->db;
	char name[16];
	PGresult *r;
	int ok;

	snprintf(name, sizeof(name), "s%d", ps->id);
	metrics_store_round_trip();
	r = PQprepare(db->conn, name, ps->sql, 0, NULL);
	ok = PQresultStatus(r) == PGRES_COMMAND_OK;
	PQclear(r);
	if (ok) {
		metrics_store_round_trip();
		r = PQdescribePrepared(db->conn, name);
		ok = PQresultStatus(r) == PGRES_COMMAND_OK;
		ps->nparams = ok ? PQnparams(r) : 0;
		PQclear(r);
	}
	if (!ok || ps->nparams > PG_MAXPARAMS) {
		pg_note(db, "prepare");
		log_warnx("store: prepare %d: %s", ps->id, db->err);
		pg_recover(db);
		return 0;
	}
	ps->gen = db->gen;
	return 1;
}

/* The largest $N of sql (outside quotes): its parameters. */
static int
pg_nparams(const char *sql)
{
	int n = 0, quoted = 0;

	for (const char *p = sql; *p != '\0'; p++) {
		if (*p == '\'')
			quoted = !quoted;
		else if (*p == '$' && !quoted && p[1] >= '0' && p[1] <= '9') {
			int k = (int)strtol(p + 1, NULL, 10);
			n = k > n ? k : n;
		}
	}
	return n;
}

/*
 * A statement first used inside a batch cannot be prepared on its own
 * (pipeline mode allows no synchronous call): the batch sends its
 * Prepare (pg_batch_stmt), its parameters counted from its text.
 */
static int
pg_prepare_later(struct pg_stmt *ps)
{
	ps->nparams = pg_nparams(ps->sql);
	ps->gen = ps->db->gen - 1;
	return ps->nparams <= PG_MAXPARAMS;
}

static struct db_stmt *
pg_prepare(struct db *db, int id, const char *sql)
{
	struct pg_stmt *ps;

	if ((ps = calloc(1, sizeof(*ps))) == NULL)
		return NULL;
	ps->base.ops = &db_pg_ops;
	ps->db = db;
	ps->id = id;
	if ((ps->sql = strdup(sql)) == NULL ||
	    !(db->batching ? pg_prepare_later(ps) : pg_prepare_on(ps))) {
		free(ps->sql);
		free(ps);
		return NULL;
	}
	return &ps->base;
}

static void
pg_reset(struct db_stmt *s)
{
	struct pg_stmt *ps = PS(s);

	PQclear(ps->res);
	ps->res = NULL;
	ps->row = ps->nrows = 0;
	memset(ps->vals, 0, sizeof(ps->vals));
}

static void
pg_finalize(struct db_stmt *s)
{
	if (s == NULL)
		return;
	pg_reset(s);
	free(PS(s)->sql);
	free(s);
}

static int
pg_busy(struct db_stmt *s)
{
	return PS(s)->res != NULL;
}

static void
pg_bind_text(struct db_stmt *s, int i, const char *v)
{
	if (i >= 1 && i <= PG_MAXPARAMS)
		PS(s)->vals[i - 1] = v;
}

static void
pg_bind_int(struct db_stmt *s, int i, int64_t v)
{
	struct pg_stmt *ps = PS(s);

	if (i < 1 || i > PG_MAXPARAMS)
		return;
	snprintf(ps->ints[i - 1], sizeof(ps->ints[i - 1]), "%lld",
	         (long long)v);
	ps->vals[i - 1] = ps->ints[i - 1];
}

static void
pg_bind_null(struct db_stmt *s, int i)
{
	if (i >= 1 && i <= PG_MAXPARAMS)
		PS(s)->vals[i - 1] = NULL;
}

/* One message of a batch sent (ok), its answer ps's (NULL: not kept). */
static int
pg_batch_sent(struct db *db, int ok, struct pg_stmt *ps)
{
	if (!ok) {
		pg_note(db, "batch");
		db->batch_failed = 1;
		return 0;
	}
	db->sent[db->nsent++] = ps;
	return 1;
}

/* Room for k more messages in the batch (none after a failure). */
static int
pg_batch_room(struct db *db, int k)
{
	if (db->batch_failed)
		return 0;
	if (db->nsent + k > DB_BATCH_MAX) {
		snprintf(db->err, sizeof(db->err),
		         "batch: more than %d messages", DB_BATCH_MAX);
		db->batch_failed = 1;
		return 0;
	}
	return 1;
}

static int
pg_batch_text(struct db *db, const char *sql)
{
	if (!pg_batch_room(db, 1))
		return 0;
	return pg_batch_sent(
	    db, PQsendQueryParams(db->conn, sql, 0, NULL, NULL, NULL, NULL, 0),
	    NULL);
}

/* A statement in a batch: sent, not waited for (prepared again first
 * when the connection is new since). */
static enum db_rc
pg_batch_stmt(struct pg_stmt *ps, const char *name)
{
	struct db *db = ps->db;

	if (!pg_batch_room(db, 2))
		return DB_ERROR;
	if (ps->gen != db->gen) {
		if (!pg_batch_sent(
		        db, PQsendPrepare(db->conn, name, ps->sql, 0, NULL),
		        NULL))
			return DB_ERROR;
		ps->gen = db->gen;
	}
	if (!pg_batch_sent(db,
	                   PQsendQueryPrepared(db->conn, name, ps->nparams,
	                                       ps->vals, NULL, NULL, 0),
	                   ps))
		return DB_ERROR;
	ps->changes = -1;
	return DB_DONE;
}

/* Run the statement: its rows are then stepped through from memory. */
static enum db_rc
pg_run(struct pg_stmt *ps)
{
	struct db *db = ps->db;
	char name[16];
	ExecStatusType rs;

	if (db->batching) {
		snprintf(name, sizeof(name), "s%d", ps->id);
		return pg_batch_stmt(ps, name);
	}
	if (ps->gen != db->gen && !pg_prepare_on(ps))
		return DB_ERROR;
	snprintf(name, sizeof(name), "s%d", ps->id);
	metrics_store_round_trip();
	ps->res = PQexecPrepared(db->conn, name, ps->nparams, ps->vals, NULL,
	                         NULL, 0);
	rs = PQresultStatus(ps->res);
	if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
		pg_note(db, NULL);
		PQclear(ps->res);
		ps->res = NULL;
		pg_recover(db);
		return DB_ERROR;
	}
	ps->nrows = PQntuples(ps->res);
	ps->changes = strtol(PQcmdTuples(ps->res), NULL, 10);
	ps->row = 0;
	return ps->nrows > 0 ? DB_ROW : DB_DONE;
}

static enum db_rc
pg_step(struct db_stmt *s)
{
	struct pg_stmt *ps = PS(s);

	if (ps->res == NULL)
		return pg_run(ps);
	return ++ps->row < ps->nrows ? DB_ROW : DB_DONE;
}

static int
pg_col_null(struct db_stmt *s, int col)
{
	struct pg_stmt *ps = PS(s);

	return ps->res == NULL || ps->row >= ps->nrows ||
	       PQgetisnull(ps->res, ps->row, col);
}

static int64_t
pg_col_int(struct db_stmt *s, int col)
{
	struct pg_stmt *ps = PS(s);

	if (pg_col_null(s, col))
		return 0;
	return strtoll(PQgetvalue(ps->res, ps->row, col), NULL, 10);
}

static const char *
pg_col_text(struct db_stmt *s, int col)
{
	struct pg_stmt *ps = PS(s);

	if (pg_col_null(s, col))
		return NULL;
	return PQgetvalue(ps->res, ps->row, col);
}

static long
pg_changes(struct db_stmt *s)
{
	return PS(s)->changes;
}

static const char *
pg_errmsg(struct db *db)
{
	return db->err[0] ? db->err : "no error";
}

static int
pg_in_txn(struct db *db)
{
	PGTransactionStatusType t = PQtransactionStatus(db->conn);

	return t == PQTRANS_INTRANS || t == PQTRANS_INERROR;
}

static enum gc_err
pg_set_version(struct db *db, int v)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "UPDATE gcrelay_schema SET version = %d", v);
	return pg_exec(db, sql);
}

/*
 * A session advisory lock: a second host starting at the same time
 * waits here, then finds the schema migrated.  The version table is
 * created under it so that it exists for STMT_USER_VERSION.
 */
static enum gc_err
pg_migrate_lock(struct db *db)
{
	char sql[64];

	/* However long another host's migration takes. */
	snprintf(sql, sizeof(sql),
	         "SET lock_timeout = 0; SELECT pg_advisory_lock(%d)",
	         PG_MIGRATE_LOCK);
	if (pg_exec(db, sql) != GC_OK)
		return GC_ESTORE;
	return pg_exec(db, "CREATE TABLE IF NOT EXISTS gcrelay_schema ("
	                   "version INTEGER NOT NULL);"
	                   "INSERT INTO gcrelay_schema SELECT 0 WHERE NOT "
	                   "EXISTS (SELECT 1 FROM gcrelay_schema)");
}

static void
pg_migrate_unlock(struct db *db)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "SELECT pg_advisory_unlock(%d)",
	         PG_MIGRATE_LOCK);
	(void)pg_exec(db, sql);
	(void)pg_session(db);
}

/* The connection is up, re-established first when it broke. */
static enum db_health
pg_check(struct db *db, char *why, size_t whysz)
{
	pg_recover(db);
	if (PQstatus(db->conn) != CONNECTION_OK) {
		snprintf(why, whysz, "database unreachable: %s", db->err);
		return DB_HEALTH_WAIT;
	}
	return DB_HEALTH_OK;
}

/* check reconnects already; nothing to replace. */
static enum gc_err
pg_reopen(struct db *db, int want)
{
	(void)want;
	return PQstatus(db->conn) == CONNECTION_OK ? GC_OK : GC_ESTORE;
}

/*
 * PostgreSQL says which statement failed and why; a lost connection is
 * found by check.  No error here stands for the store as a whole.
 */
static int
pg_fault(struct db *db)
{
	(void)db;
	return 0;
}

static const char *
pg_fault_text(int code)
{
	(void)code;
	return "write failed";
}

static enum gc_err
pg_checkpoint(struct db *db)
{
	(void)db;
	return GC_OK;
}

static enum gc_err
pg_listen(struct db *db)
{
	db->listening = 1;
	return pg_exec(db, "LISTEN " PG_WAKE_CHANNEL);
}

/* The socket, while connected: a notification makes it readable. */
static int
pg_wake_fd(struct db *db)
{
	if (!db->listening || PQstatus(db->conn) != CONNECTION_OK)
		return -1;
	return PQsocket(db->conn);
}

/*
 * Read what arrived and sort the notifications, also those libpq kept
 * while running other statements.  A connection found broken here
 * counts as one of each: the caller then looks at the store, which
 * reconnects.
 */
static void
pg_hear(struct db *db)
{
	PGnotify *n;

	if (!PQconsumeInput(db->conn)) {
		pg_note(db, "listen");
		db->wakes++;
		db->memo_news++;
		return;
	}
	while ((n = PQnotifies(db->conn)) != NULL) {
		if (strcmp(n->relname, PG_MEMO_CHANNEL) == 0)
			db->memo_news++;
		else
			db->wakes++;
		PQfreemem(n);
	}
}

static int
pg_wake_drain(struct db *db)
{
	int count;

	if (!db->listening || PQstatus(db->conn) != CONNECTION_OK)
		return 0;
	pg_hear(db);
	count = db->wakes;
	db->wakes = 0;
	return count;
}

static int
pg_memo_epoch(struct db *db, unsigned *epoch)
{
	if (PQstatus(db->conn) != CONNECTION_OK)
		return 0;
	if (!db->hearing) {
		if (pg_exec(db, "LISTEN " PG_MEMO_CHANNEL) != GC_OK)
			return 0;
		db->hearing = 1;
	}
	pg_hear(db);
	/* Both only grow: any change of either is a new epoch. */
	*epoch = db->gen + db->memo_news;
	return db->hearing;
}

/* See db.h: pipeline mode, one Sync. */
static enum gc_err
pg_batch_begin(struct db *db, const char *const *head, size_t n)
{
	db->nsent = db->batch_failed = 0;
	if (!PQenterPipelineMode(db->conn)) {
		pg_note(db, "pipeline");
		return GC_ESTORE;
	}
	db->batching = 1;
	for (size_t i = 0; i < n; i++)
		(void)pg_batch_text(db, head[i]);
	return GC_OK;
}

/*
 * A batched statement's rows, kept (r is now ps's) for stepping through
 * once the batch is answered: those of its last run when it ran twice.
 */
static void
pg_batch_rows(struct pg_stmt *ps, PGresult *r)
{
	PQclear(ps->res);
	ps->res = r;
	ps->nrows = PQntuples(r);
	ps->row = -1; /* the first step gives row 0 */
	ps->changes = strtol(PQcmdTuples(r), NULL, 10);
}

/* See db.h. */
static enum gc_err
pg_batch_end(struct db *db, const char *tail, long *changes, size_t max,
             size_t *n)
{
	int ok, synced, i = 0, nulls = 0;
	PGresult *r;

	*n = 0;
	if (tail != NULL)
		(void)pg_batch_text(db, tail);
	/* Synced even when a send failed: what was sent is answered. */
	ok = !db->batch_failed;
	if ((synced = PQpipelineSync(db->conn) == 1))
		metrics_store_round_trip(); /* every answer comes in one go */
	else {
		pg_note(db, "batch");
		ok = 0;
	}
	/*
	 * Every answer in order, up to the Sync's: one result per message
	 * and a NULL after each; after a failure the rest come back
	 * PGRES_PIPELINE_ABORTED.  A connection gone ends it early.
	 */
	while (synced && PQstatus(db->conn) == CONNECTION_OK &&
	       PQpipelineStatus(db->conn) != PQ_PIPELINE_OFF) {
		ExecStatusType rs;

		if ((r = PQgetResult(db->conn)) == NULL) {
			if (++nulls > db->nsent)
				break; /* nothing was synced */
			continue;
		}
		rs = PQresultStatus(r);
		if (rs == PGRES_PIPELINE_SYNC) {
			PQclear(r);
			break;
		}
		if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
			if (ok && rs != PGRES_PIPELINE_ABORTED)
				pg_note(db, NULL); /* the one that failed */
			ok = 0;
		} else if (i < db->nsent && db->sent[i] != NULL) {
			if (*n < max)
				changes[(*n)++] =
				    strtol(PQcmdTuples(r), NULL, 10);
			if (PQntuples(r) > 0) {
				pg_batch_rows(db->sent[i], r);
				r = NULL;
			}
		}
		i++;
		PQclear(r);
	}
	db->batching = 0;
	if (PQexitPipelineMode(db->conn) != 1) {
		/* Answers left unread: this connection cannot go on. */
		pg_note(db, "batch");
		pg_reconnect(db);
		ok = 0;
	}
	if (!ok) {
		/* Rows of a batch that failed are not to be read. */
		for (i = 0; i < db->nsent; i++)
			if (db->sent[i] != NULL)
				pg_reset(&db->sent[i]->base);
		log_warnx("store: batch: %s", db->err);
		pg_recover(db);
	}
	return ok ? GC_OK : GC_ESTORE;
}

static enum gc_err
pg_notify(struct db *db, const char *channel)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "NOTIFY %s", channel);
	return pg_exec(db, sql);
}

const struct db_ops db_pg_ops = {
    .dialect = DB_PG,
    .durable_commits = 1,
    .open = pg_open,
    .close = pg_close,
    .prepare = pg_prepare,
    .finalize = pg_finalize,
    .reset = pg_reset,
    .busy = pg_busy,
    .bind_text = pg_bind_text,
    .bind_int = pg_bind_int,
    .bind_null = pg_bind_null,
    .step = pg_step,
    .col_null = pg_col_null,
    .col_int = pg_col_int,
    .col_text = pg_col_text,
    .changes = pg_changes,
    .errmsg = pg_errmsg,
    .in_txn = pg_in_txn,
    .exec = pg_exec,
    .set_version = pg_set_version,
    .migrate_lock = pg_migrate_lock,
    .migrate_unlock = pg_migrate_unlock,
    .check = pg_check,
    .reopen = pg_reopen,
    .fault = pg_fault,
    .fault_text = pg_fault_text,
    .checkpoint = pg_checkpoint,
    .listen = pg_listen,
    .wake_fd = pg_wake_fd,
    .wake_drain = pg_wake_drain,
    .notify = pg_notify,
    .memo_epoch = pg_memo_epoch,
    .batch_begin = pg_batch_begin,
    .batch_end = pg_batch_end,
};
