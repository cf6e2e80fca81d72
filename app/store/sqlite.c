/*
 * The SQLite backend: one database file (WAL) shared by every gcrelay
 * process of one host.  Everything about the file lives here: its path
 * and mode, the pragmas, its identity, read-only state and fault codes for
 * store_health, the checkpoint.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "log.h"

struct db {
	sqlite3 *h;
	char *path;
	dev_t dev; /* identity of the file opened, for check */
	ino_t ino;
	int busy_timeout_ms; /* for a reopen */
	int durability;
	struct timespec busy_since; /* monotonic: the first busy try */
};

struct sqlite_stmt {
	struct db_stmt base;
	sqlite3_stmt *s;
	struct db *db;
};

#define SS(x) ((struct sqlite_stmt *)(x))

static enum gc_err
sq_exec(struct db *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_warnx("store: %.60s: %s", sql, msg ? msg : "?");
		sqlite3_free(msg);
		return GC_ESTORE;
	}
	return GC_OK;
}

/*
 * The write lock is busy: try again soon, until busy_timeout_ms.
 * SQLite's own handler (sqlite3_busy_timeout) sleeps 1, 2, 5, 10, 15 ms
 * and more between tries, far longer than a writer here holds the lock
 * (a fraction of a millisecond): under load the workers' intake and the
 * dispatcher's results then slept while the lock was free.  Here a
 * try waits 50 us, doubling to at most 1 ms.
 */
static int
sq_busy_wait(void *arg, int tries)
{
	struct db *db = arg;
	struct timespec now, nap = {0, 0};
	long long waited_us;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (tries == 0)
		db->busy_since = now;
	waited_us = (now.tv_sec - db->busy_since.tv_sec) * 1000000LL +
	            (now.tv_nsec - db->busy_since.tv_nsec) / 1000;
	if (waited_us >= db->busy_timeout_ms * 1000LL)
		return 0; /* SQLITE_BUSY for the caller */
	nap.tv_nsec = (50L << (tries < 5 ? tries : 5)) * 1000L;
	if (nap.tv_nsec > 1000000L)
		nap.tv_nsec = 1000000L;
	nanosleep(&nap, NULL);
	return 1;
}

static enum gc_err
sq_pragmas(struct db *db)
{
	char sql[200];

	sqlite3_busy_handler(db->h, sq_busy_wait, db);
	/*
	 * secure_delete: SQLite leaves deleted and overwritten records in
	 * the file (free space inside pages, freed overflow pages) until it
	 * happens to reuse them, so a purged body or email could still be
	 * read from the database file long after the retention.  With it on
	 * SQLite zeroes that space when it frees it; the checkpoint after
	 * the purge then empties the WAL (dispatcher.c).  Some builds of
	 * libsqlite3 (Debian's) default to it, SQLite itself does not: say
	 * so.  It costs some writes, only on deletes and updates.
	 *
	 * wal_autocheckpoint: SQLite checkpoints after a commit that leaves
	 * 1000 pages (4 MB) in the WAL.  Each event writes many pages, so
	 * under load that was many checkpoints a second, each
	 * fsyncing twice and writing the same hot pages again.  10000 pages
	 * (about 40 MB of WAL) write a hot page once per checkpoint
	 * instead: 45% more events delivered per second in the fast bench.
	 * The hourly checkpoint (dispatcher.c) still gives the space back.
	 */
	snprintf(sql, sizeof(sql),
	         "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
	         "PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON; "
	         "PRAGMA wal_autocheckpoint=10000;",
	         db->durability == DURABILITY_FULL ? "FULL" : "NORMAL");
	return sq_exec(db, sql);
}

/*
 * Create the database file 0600 if it is missing: SQLite gives the -wal
 * and -shm files the database's mode, so they are private too, whatever
 * the umask.  An existing file keeps the mode its operator chose.
 */
static enum gc_err
sq_create_private(const char *path, char *why, size_t whysz)
{
	int fd;

	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd == -1 && errno == EEXIST)
		return GC_OK;
	if (fd == -1) {
		snprintf(why, whysz, "cannot create %s: %s", path,
		         strerror(errno));
		return GC_ESTORE;
	}
	close(fd);
	return GC_OK;
}

static void
sq_close(struct db *db)
{
	if (db == NULL)
		return;
	sqlite3_close_v2(db->h);
	free(db->path);
	free(db);
}

/*
 * Open db->path into db->h with the pragmas (create: creating the file
 * 0600 when missing), and note the file's identity.
 */
static enum gc_err
sq_connect(struct db *db, int create, char *why, size_t whysz)
{
	struct stat sb;

	if (create && sq_create_private(db->path, why, whysz) != GC_OK)
		return GC_ESTORE;
	if (sqlite3_open_v2(db->path, &db->h,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
	                        (create ? SQLITE_OPEN_CREATE : 0),
	                    NULL) != SQLITE_OK) {
		snprintf(why, whysz, "cannot open %s: %s", db->path,
		         db->h ? sqlite3_errmsg(db->h) : "out of memory");
		return GC_ESTORE;
	}
	if (sq_pragmas(db) != GC_OK) {
		snprintf(why, whysz, "cannot configure %s: %s", db->path,
		         sqlite3_errmsg(db->h));
		return GC_ESTORE;
	}
	if (stat(db->path, &sb) == 0) {
		db->dev = sb.st_dev;
		db->ino = sb.st_ino;
	}
	return GC_OK;
}

static enum gc_err
sq_open(const struct app_config *cfg, struct db **out, char *why, size_t whysz)
{
	struct db *db;

	*out = NULL;
	if ((db = calloc(1, sizeof(*db))) == NULL)
		return GC_ENOMEM;
	if ((db->path = strdup(cfg->store_path)) == NULL) {
		free(db);
		return GC_ENOMEM;
	}
	db->busy_timeout_ms = cfg->busy_timeout_ms;
	db->durability = (int)cfg->durability;
	if (sq_connect(db, 1, why, whysz) != GC_OK) {
		sq_close(db);
		return GC_ESTORE;
	}
	*out = db;
	return GC_OK;
}

static struct db_stmt *
sq_prepare(struct db *db, int id, const char *sql)
{
	struct sqlite_stmt *ss;

	if ((ss = calloc(1, sizeof(*ss))) == NULL)
		return NULL;
	if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT,
	                       &ss->s, NULL) != SQLITE_OK) {
		log_warnx("store: prepare %d: %s", id, sqlite3_errmsg(db->h));
		sqlite3_finalize(ss->s);
		free(ss);
		return NULL;
	}
	ss->base.ops = &db_sqlite_ops;
	ss->db = db;
	return &ss->base;
}

static void
sq_finalize(struct db_stmt *s)
{
	if (s == NULL)
		return;
	sqlite3_finalize(SS(s)->s);
	free(s);
}

static void
sq_reset(struct db_stmt *s)
{
	sqlite3_reset(SS(s)->s);
	sqlite3_clear_bindings(SS(s)->s);
}

static int
sq_busy(struct db_stmt *s)
{
	return sqlite3_stmt_busy(SS(s)->s);
}

static void
sq_bind_text(struct db_stmt *s, int i, const char *v)
{
	sqlite3_bind_text(SS(s)->s, i, v, -1, SQLITE_STATIC);
}

static void
sq_bind_int(struct db_stmt *s, int i, int64_t v)
{
	sqlite3_bind_int64(SS(s)->s, i, v);
}

static void
sq_bind_null(struct db_stmt *s, int i)
{
	sqlite3_bind_null(SS(s)->s, i);
}

static enum db_rc
sq_step(struct db_stmt *s)
{
	switch (sqlite3_step(SS(s)->s)) {
	case SQLITE_ROW:
		return DB_ROW;
	case SQLITE_DONE:
		return DB_DONE;
	default:
		return DB_ERROR;
	}
}

static int
sq_col_null(struct db_stmt *s, int col)
{
	return sqlite3_column_type(SS(s)->s, col) == SQLITE_NULL;
}

static int64_t
sq_col_int(struct db_stmt *s, int col)
{
	return sqlite3_column_int64(SS(s)->s, col);
}

static const char *
sq_col_text(struct db_stmt *s, int col)
{
	return (const char *)sqlite3_column_text(SS(s)->s, col);
}

static long
sq_changes(struct db_stmt *s)
{
	return sqlite3_changes(SS(s)->db->h);
}

static const char *
sq_errmsg(struct db *db)
{
	return sqlite3_errmsg(db->h);
}

static int
sq_in_txn(struct db *db)
{
	return !sqlite3_get_autocommit(db->h);
}

static enum gc_err
sq_set_version(struct db *db, int v)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v);
	return sq_exec(db, sql);
}

/* BEGIN IMMEDIATE in the migration already keeps the others out. */
static enum gc_err
sq_migrate_lock(struct db *db)
{
	(void)db;
	return GC_OK;
}

static void
sq_migrate_unlock(struct db *db)
{
	(void)db;
}

/*
 * The file is present, the one this connection has open (device and
 * inode), writable, and the connection is not read-only.
 */
static enum db_health
sq_check(struct db *db, char *why, size_t whysz)
{
	struct stat sb;

	if (stat(db->path, &sb) != 0) {
		snprintf(why, whysz, "database file: %s", strerror(errno));
		return DB_HEALTH_WAIT;
	}
	if (sb.st_dev != db->dev || sb.st_ino != db->ino) {
		snprintf(why, whysz, "database file was replaced");
		return DB_HEALTH_REOPEN;
	}
	if (access(db->path, R_OK | W_OK) != 0) {
		snprintf(why, whysz, "database file: %s", strerror(errno));
		return DB_HEALTH_WAIT;
	}
	if (sqlite3_db_readonly(db->h, "main") != 0) {
		snprintf(why, whysz, "database is open read-only");
		return DB_HEALTH_REOPEN;
	}
	return DB_HEALTH_OK;
}

/* PRAGMA user_version of h, -1 on failure. */
static int
sq_user_version(sqlite3 *h)
{
	sqlite3_stmt *s;
	int v = -1;

	if (sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &s, NULL) !=
	    SQLITE_OK)
		return -1;
	if (sqlite3_step(s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	return v;
}

/*
 * A new connection to the file now at the path, never creating one.
 * The old connection must not checkpoint on close: its WAL file is the
 * one the path's new database uses.
 */
static enum gc_err
sq_reopen(struct db *db, int want)
{
	struct db old = *db;
	char why[256];

	db->h = NULL;
	if (sq_connect(db, 0, why, sizeof(why)) != GC_OK ||
	    sqlite3_db_readonly(db->h, "main") != 0 ||
	    sq_user_version(db->h) != want) {
		sqlite3_close_v2(db->h);
		*db = old;
		return GC_ESTORE;
	}
	sqlite3_db_config(old.h, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);
	sqlite3_close_v2(old.h);
	return GC_OK;
}

/* Errors that say the file cannot hold a write, not that one failed. */
static int
sq_fault(struct db *db)
{
	int code = sqlite3_extended_errcode(db->h);

	switch (code & 0xff) {
	case SQLITE_FULL:
	case SQLITE_IOERR:
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
	case SQLITE_READONLY:
	case SQLITE_CANTOPEN:
	case SQLITE_PERM:
		return code;
	}
	return 0;
}

static const char *
sq_fault_text(int code)
{
	return sqlite3_errstr(code);
}

static enum gc_err
sq_checkpoint(struct db *db)
{
	return sq_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
}

const struct db_ops db_sqlite_ops = {
    .dialect = DB_SQLITE,
    .open = sq_open,
    .close = sq_close,
    .prepare = sq_prepare,
    .finalize = sq_finalize,
    .reset = sq_reset,
    .busy = sq_busy,
    .bind_text = sq_bind_text,
    .bind_int = sq_bind_int,
    .bind_null = sq_bind_null,
    .step = sq_step,
    .col_null = sq_col_null,
    .col_int = sq_col_int,
    .col_text = sq_col_text,
    .changes = sq_changes,
    .errmsg = sq_errmsg,
    .in_txn = sq_in_txn,
    .exec = sq_exec,
    .set_version = sq_set_version,
    .migrate_lock = sq_migrate_lock,
    .migrate_unlock = sq_migrate_unlock,
    .check = sq_check,
    .reopen = sq_reopen,
    .fault = sq_fault,
    .fault_text = sq_fault_text,
    .checkpoint = sq_checkpoint,
};
