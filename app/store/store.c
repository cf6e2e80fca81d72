#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"
#include "store.h"
#include "store_priv.h"

/*
 * Migrations, applied in order; PRAGMA user_version holds how many ran.
 * Never edit a shipped step: append a new one.
 */
static const char *const migrations[] = {
    /* 1: the initial schema */
    "CREATE TABLE brands ("
    "  slug TEXT PRIMARY KEY,"
    "  doc TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL);"
    "CREATE TABLE events ("
    "  id TEXT PRIMARY KEY,"
    "  brand TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  body TEXT,"
    "  received_at INTEGER NOT NULL,"
    "  status TEXT NOT NULL,"
    "  http_status INTEGER,"
    "  response TEXT,"
    "  purged INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX events_brand_time ON events(brand, received_at);"
    "CREATE INDEX events_time ON events(received_at);"
    "CREATE TABLE deliveries ("
    "  event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE,"
    "  destination TEXT NOT NULL,"
    "  status TEXT NOT NULL,"
    "  reason TEXT,"
    "  warning TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_at INTEGER,"
    "  lease_until INTEGER NOT NULL DEFAULT 0,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (event_id, destination));"
    "CREATE INDEX deliveries_due ON deliveries(status, next_at);"
    "CREATE TABLE attempts ("
    "  id INTEGER PRIMARY KEY,"
    "  event_id TEXT NOT NULL,"
    "  destination TEXT NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  step TEXT NOT NULL,"
    "  outcome TEXT NOT NULL,"
    "  http_status INTEGER,"
    "  reply_code TEXT,"
    "  excerpt TEXT,"
    "  latency_ms INTEGER);"
    "CREATE INDEX attempts_event ON attempts(event_id, destination);"
    "CREATE TABLE yotpo_ledger ("
    "  brand TEXT NOT NULL,"
    "  token TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  event_id TEXT NOT NULL,"
    "  reference TEXT NOT NULL,"
    "  lease_until INTEGER NOT NULL DEFAULT 0,"
    "  sent_at INTEGER,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (brand, token, action));"
    "CREATE TABLE emarsys_ids ("
    "  brand TEXT NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  remote_id TEXT NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  PRIMARY KEY (brand, kind, name));"
    "CREATE TABLE emarsys_tokens ("
    "  brand TEXT PRIMARY KEY,"
    "  client_id TEXT NOT NULL,"
    "  token TEXT NOT NULL,"
    "  expires_at INTEGER NOT NULL);"
    "CREATE TABLE throttle ("
    "  brand TEXT PRIMARY KEY,"
    "  next_ms INTEGER NOT NULL);",
    /* 2: lease owners; the customer an uncertain award was for */
    "ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;"
    "ALTER TABLE yotpo_ledger ADD COLUMN lease_owner TEXT;"
    "ALTER TABLE yotpo_ledger ADD COLUMN email TEXT;"
    "UPDATE yotpo_ledger SET email = (SELECT json_extract(body, '$.email') "
    "FROM events WHERE events.id = yotpo_ledger.event_id);",
    /* 3: how far a delivery got, so a later run need not redo it; how
     * many history reads have not found an uncertain award yet */
    "ALTER TABLE deliveries ADD COLUMN progress TEXT;"
    "ALTER TABLE yotpo_ledger ADD COLUMN misses INTEGER NOT NULL "
    "DEFAULT 0;",
    /* 4: admin signatures already used, so a captured request cannot be
     * replayed within the timestamp tolerance */
    "CREATE TABLE admin_replay ("
    "  sig TEXT PRIMARY KEY,"
    "  ts INTEGER NOT NULL,"
    "  seen_at INTEGER NOT NULL);"
    "CREATE INDEX admin_replay_ts ON admin_replay(ts);",
    /* 5: who is fetching an Emarsys token, so a cold start makes one
     * token request per account, not one per process */
    "CREATE TABLE emarsys_token_leases ("
    "  brand TEXT NOT NULL,"
    "  client_id TEXT NOT NULL,"
    "  owner TEXT NOT NULL,"
    "  lease_until INTEGER NOT NULL,"
    "  PRIMARY KEY (brand, client_id));",
    /* 6: one row store_health rewrites to learn whether a write that
     * failed (a full disk) would succeed again */
    "CREATE TABLE store_probe (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
    "INSERT INTO store_probe VALUES (1, 0);",
};
#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* See store.h. */
int64_t
store_now_ms(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* See store_priv.h. */
enum gc_err
store_fail(struct store *st, const char *what)
{
	log_warnx("store: %s: %s", what, sqlite3_errmsg(st->db));
	store_note_fault(st);
	return GC_ESTORE;
}

/* See store_priv.h. */
enum gc_err
store_exec(struct store *st, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(st->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_warnx("store: %.60s: %s", sql, msg ? msg : "?");
		sqlite3_free(msg);
		store_note_fault(st);
		return GC_ESTORE;
	}
	return GC_OK;
}

static int
store_user_version(struct store *st)
{
	sqlite3_stmt *s = store_stmt(st, STMT_USER_VERSION);
	int v = -1;

	if (s != NULL && store_row(st, s) == SQLITE_ROW)
		v = sqlite3_column_int(s, 0);
	store_stmt_done(s);
	return v;
}

/* Apply pending migrations, each in its own transaction. */
static enum gc_err
store_migrate(struct store *st, char *why, size_t whysz)
{
	char sql[64];
	int v;

	if (store_begin(st) != GC_OK)
		goto fail;
	v = store_user_version(st);
	if (v < 0 || v > NMIGRATIONS) {
		store_rollback(st);
		snprintf(why, whysz,
		         "database schema version %d is newer than this "
		         "gcrelay (%d)",
		         v, NMIGRATIONS);
		return GC_ESTORE;
	}
	for (; v < NMIGRATIONS; v++) {
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", v + 1);
		if (store_exec(st, migrations[v]) != GC_OK ||
		    store_exec(st, sql) != GC_OK)
			goto fail;
		log_info("store: applied migration %d", v + 1);
	}
	if (store_commit(st) != GC_OK)
		goto fail;
	return GC_OK;
fail:
	/* Before the rollback replaces the error. */
	snprintf(why, whysz, "migration failed: %s", sqlite3_errmsg(st->db));
	store_rollback(st);
	return GC_ESTORE;
}

static enum gc_err
store_pragmas(struct store *st)
{
	char sql[200];

	sqlite3_busy_timeout(st->db, st->busy_timeout_ms);
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
	         st->durability == DURABILITY_FULL ? "FULL" : "NORMAL");
	return store_exec(st, sql);
}

/*
 * Create the database file 0600 if it is missing: SQLite gives the -wal
 * and -shm files the database's mode, so they are private too, whatever
 * the umask.  An existing file keeps the mode its operator chose.
 */
static enum gc_err
store_create_private(const char *path, char *why, size_t whysz)
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

/* See store_priv.h. */
enum gc_err
store_connect(struct store *st, int create, char *why, size_t whysz)
{
	struct stat sb;
	int v;

	if (create && store_create_private(st->path, why, whysz) != GC_OK)
		return GC_ESTORE;
	if (sqlite3_open_v2(st->path, &st->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
	                        (create ? SQLITE_OPEN_CREATE : 0),
	                    NULL) != SQLITE_OK) {
		snprintf(why, whysz, "cannot open %s: %s", st->path,
		         st->db ? sqlite3_errmsg(st->db) : "out of memory");
		return GC_ESTORE;
	}
	if (store_pragmas(st) != GC_OK) {
		snprintf(why, whysz, "cannot configure %s: %s", st->path,
		         sqlite3_errmsg(st->db));
		return GC_ESTORE;
	}
	if (create && store_migrate(st, why, whysz) != GC_OK)
		return GC_ESTORE;
	if (!create && (v = store_user_version(st)) != NMIGRATIONS) {
		snprintf(why, whysz, "%s has schema version %d, not %d",
		         st->path, v, NMIGRATIONS);
		return GC_ESTORE;
	}
	if (stat(st->path, &sb) == 0) {
		st->dev = sb.st_dev;
		st->ino = sb.st_ino;
	}
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_open(const struct app_config *cfg, struct store **out, char *why,
           size_t whysz)
{
	struct store *st;

	*out = NULL;
	if ((st = calloc(1, sizeof(*st))) == NULL)
		return GC_ENOMEM;
	if ((st->path = strdup(cfg->store_path)) == NULL) {
		free(st);
		return GC_ENOMEM;
	}
	st->busy_timeout_ms = cfg->busy_timeout_ms;
	st->durability = (int)cfg->durability;
	if (store_connect(st, 1, why, whysz) != GC_OK) {
		store_close(st);
		return GC_ESTORE;
	}
	*out = st;
	return GC_OK;
}

/* See store.h. */
void
store_close(struct store *st)
{
	if (st == NULL)
		return;
	store_stmts_free(st);
	sqlite3_close_v2(st->db);
	free(st->path);
	free(st);
}

/* See store.h. */
enum gc_err
store_checkpoint(struct store *st)
{
	return store_exec(st, "PRAGMA wal_checkpoint(TRUNCATE)");
}

/* See store.h. */
int
store_schema_version(struct store *st)
{
	return store_user_version(st);
}

/* See store.h. */
enum gc_err
store_brand_put(struct store *st, const char *slug, const char *doc,
                int *created)
{
	sqlite3_stmt *s;
	int rc;

	*created = 0;
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	if ((s = store_stmt(st, STMT_BRAND_EXISTS)) == NULL)
		goto fail;
	store_bind_text(s, 1, slug);
	rc = store_row(st, s);
	if (!store_end(st, s, rc, "brand put"))
		goto fail;
	*created = rc == SQLITE_DONE;
	if ((s = store_stmt(st, STMT_BRAND_PUT)) == NULL)
		goto fail;
	store_bind_text(s, 1, slug);
	store_bind_text(s, 2, doc);
	store_bind_int(s, 3, store_now_ms());
	if (!store_step(st, s, "brand put") || store_commit(st) != GC_OK)
		goto fail;
	return GC_OK;
fail:
	store_rollback(st);
	return GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_brand_get(struct store *st, const char *slug, char **doc)
{
	sqlite3_stmt *s;
	enum gc_err err = GC_OK;
	int rc;

	*doc = NULL;
	if ((s = store_stmt(st, STMT_BRAND_GET)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, slug);
	rc = store_row(st, s);
	if (rc == SQLITE_ROW) {
		if ((*doc = store_col_text(s, 0)) == NULL)
			err = GC_ENOMEM;
	} else if (rc == SQLITE_DONE)
		err = GC_ENOTFOUND;
	if (!store_end(st, s, rc, "brand get"))
		err = GC_ESTORE;
	return err;
}

/* See store.h. */
enum gc_err
store_brand_delete(struct store *st, const char *slug)
{
	sqlite3_stmt *s;

	if ((s = store_stmt(st, STMT_BRAND_DELETE)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, slug);
	if (!store_step(st, s, "brand delete"))
		return GC_ESTORE;
	return sqlite3_changes(st->db) > 0 ? GC_OK : GC_ENOTFOUND;
}

/* See store.h. */
enum gc_err
store_brand_list(struct store *st, json_t **docs)
{
	sqlite3_stmt *s;
	json_t *arr;
	int rc;

	*docs = NULL;
	if ((arr = json_array()) == NULL)
		return GC_ENOMEM;
	if ((s = store_stmt(st, STMT_BRAND_LIST)) == NULL) {
		json_decref(arr);
		return GC_ESTORE;
	}
	while ((rc = store_row(st, s)) == SQLITE_ROW)
		json_array_append_new(arr, json_string(store_col(s, 0)));
	if (!store_end(st, s, rc, "brand list")) {
		json_decref(arr);
		return GC_ESTORE;
	}
	*docs = arr;
	return GC_OK;
}

/*
 * A process whose clock read a second later may purge while another
 * checks a request at the very edge of the window: keep entries this
 * much longer than the tolerance so such a purge cannot let a replay in.
 */
#define ADMIN_REPLAY_MARGIN_S 60

/* See store.h. */
enum gc_err
store_admin_replay(struct store *st, const char *sig, int64_t ts, time_t now,
                   long tolerance_s)
{
	sqlite3_stmt *s;

	if ((s = store_stmt(st, STMT_ADMIN_REPLAY_PURGE)) == NULL)
		return GC_ESTORE;
	store_bind_int(s, 1,
	               (int64_t)now - tolerance_s - ADMIN_REPLAY_MARGIN_S);
	if (!store_step(st, s, "admin replay purge"))
		return GC_ESTORE;
	if ((s = store_stmt(st, STMT_ADMIN_REPLAY_INSERT)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, sig);
	store_bind_int(s, 2, ts);
	store_bind_int(s, 3, store_now_ms());
	if (!store_step(st, s, "admin replay insert"))
		return GC_ESTORE;
	/* ON CONFLICT DO NOTHING: no row changed means it was seen. */
	return sqlite3_changes(st->db) > 0 ? GC_OK : GC_EEXISTS;
}
