/*
 * The SQLite backend: one database file (WAL) shared by every gcrelay
 * process of one host.  Everything about the file lives here: its path
 * and mode, the pragmas, its identity for store_ping, the checkpoint.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>

#include "db.h"
#include "log.h"

struct db {
	sqlite3 *h;
	char *path;
	dev_t dev; /* identity of the file opened, for ping */
	ino_t ino;
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

static enum gc_err
sq_pragmas(struct db *db, const struct app_config *cfg)
{
	char sql[200];

	sqlite3_busy_timeout(db->h, cfg->busy_timeout_ms);
	/*
	 * secure_delete: SQLite leaves deleted and overwritten records in
	 * the file (free space inside pages, freed overflow pages) until it
	 * happens to reuse them, so a purged body or email could still be
	 * read from the database file long after the retention.  With it on
	 * SQLite zeroes that space when it frees it; the checkpoint after
	 * the purge then empties the WAL (dispatcher.c).  Some builds of
	 * libsqlite3 (Debian's) default to it, SQLite itself does not: say
	 * so.  It costs some writes, only on deletes and updates.
	 */
	snprintf(sql, sizeof(sql),
	         "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; "
	         "PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;",
	         cfg->durability == DURABILITY_FULL ? "FULL" : "NORMAL");
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

static enum gc_err
sq_open(const struct app_config *cfg, struct db **out, char *why, size_t whysz)
{
	struct db *db;
	struct stat sb;

	*out = NULL;
	if ((db = calloc(1, sizeof(*db))) == NULL)
		return GC_ENOMEM;
	if ((db->path = strdup(cfg->store_path)) == NULL) {
		free(db);
		return GC_ENOMEM;
	}
	if (sq_create_private(db->path, why, whysz) != GC_OK)
		goto fail;
	if (sqlite3_open_v2(db->path, &db->h,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	                        SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK) {
		snprintf(why, whysz, "cannot open %s: %s", db->path,
		         db->h ? sqlite3_errmsg(db->h) : "out of memory");
		goto fail;
	}
	if (sq_pragmas(db, cfg) != GC_OK) {
		snprintf(why, whysz, "cannot configure %s: %s", db->path,
		         sqlite3_errmsg(db->h));
		goto fail;
	}
	if (stat(db->path, &sb) == 0) {
		db->dev = sb.st_dev;
		db->ino = sb.st_ino;
	}
	*out = db;
	return GC_OK;
fail:
	sq_close(db);
	return GC_ESTORE;
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

/* The file is still there, readable and writable, and the one open. */
static enum gc_err
sq_ping(struct db *db, char *why, size_t whysz)
{
	struct stat sb;

	if (stat(db->path, &sb) != 0) {
		snprintf(why, whysz, "database file: %s", strerror(errno));
		return GC_ESTORE;
	}
	if (sb.st_dev != db->dev || sb.st_ino != db->ino) {
		snprintf(why, whysz, "database file was replaced");
		return GC_ESTORE;
	}
	if (access(db->path, R_OK | W_OK) != 0) {
		snprintf(why, whysz, "database file: %s", strerror(errno));
		return GC_ESTORE;
	}
	return GC_OK;
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
    .ping = sq_ping,
    .checkpoint = sq_checkpoint,
};
