#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "db.h"
#include "log.h"
#include "store.h"
#include "store_priv.h"

/*
 * Migrations, applied in order, each in SQLite's dialect and in
 * PostgreSQL's; the schema version (SQLite: PRAGMA user_version;
 * PostgreSQL: gcrelay_schema) holds how many ran.  Never edit a shipped
 * step: append a new one, in both.
 */
static const char *const migrations[][DB__MAX] = {
    /* 1: the initial schema */
    {"CREATE TABLE brands ("
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
     "CREATE TABLE brands ("
     "  slug TEXT PRIMARY KEY,"
     "  doc TEXT NOT NULL,"
     "  created_at BIGINT NOT NULL,"
     "  updated_at BIGINT NOT NULL);"
     "CREATE TABLE events ("
     "  id TEXT PRIMARY KEY,"
     "  seq BIGSERIAL NOT NULL UNIQUE,"
     "  brand TEXT NOT NULL,"
     "  kind TEXT NOT NULL,"
     "  body TEXT,"
     "  received_at BIGINT NOT NULL,"
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
     "  next_at BIGINT,"
     "  lease_until BIGINT NOT NULL DEFAULT 0,"
     "  updated_at BIGINT NOT NULL,"
     "  PRIMARY KEY (event_id, destination));"
     "CREATE INDEX deliveries_due ON deliveries(status, next_at);"
     "CREATE TABLE attempts ("
     "  id BIGSERIAL PRIMARY KEY,"
     "  event_id TEXT NOT NULL,"
     "  destination TEXT NOT NULL,"
     "  at BIGINT NOT NULL,"
     "  step TEXT NOT NULL,"
     "  outcome TEXT NOT NULL,"
     "  http_status INTEGER,"
     "  reply_code TEXT,"
     "  excerpt TEXT,"
     "  latency_ms BIGINT);"
     "CREATE INDEX attempts_event ON attempts(event_id, destination);"
     "CREATE TABLE yotpo_ledger ("
     "  brand TEXT NOT NULL,"
     "  token TEXT NOT NULL,"
     "  action TEXT NOT NULL,"
     "  state TEXT NOT NULL,"
     "  event_id TEXT NOT NULL,"
     "  reference TEXT NOT NULL,"
     "  lease_until BIGINT NOT NULL DEFAULT 0,"
     "  sent_at BIGINT,"
     "  updated_at BIGINT NOT NULL,"
     "  PRIMARY KEY (brand, token, action));"
     "CREATE TABLE emarsys_ids ("
     "  brand TEXT NOT NULL,"
     "  kind TEXT NOT NULL,"
     "  name TEXT NOT NULL,"
     "  remote_id TEXT NOT NULL,"
     "  updated_at BIGINT NOT NULL,"
     "  PRIMARY KEY (brand, kind, name));"
     "CREATE TABLE emarsys_tokens ("
     "  brand TEXT PRIMARY KEY,"
     "  client_id TEXT NOT NULL,"
     "  token TEXT NOT NULL,"
     "  expires_at BIGINT NOT NULL);"
     "CREATE TABLE throttle ("
     "  brand TEXT PRIMARY KEY,"
     "  next_ms BIGINT NOT NULL);"},
    /* 2: lease owners; the customer an uncertain award was for */
    {"ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;"
     "ALTER TABLE yotpo_ledger ADD COLUMN lease_owner TEXT;"
     "ALTER TABLE yotpo_ledger ADD COLUMN email TEXT;"
     "UPDATE yotpo_ledger SET email = (SELECT json_extract(body, '$.email') "
     "FROM events WHERE events.id = yotpo_ledger.event_id);",
     "ALTER TABLE deliveries ADD COLUMN lease_owner TEXT;"
     "ALTER TABLE yotpo_ledger ADD COLUMN lease_owner TEXT;"
     "ALTER TABLE yotpo_ledger ADD COLUMN email TEXT;"
     "UPDATE yotpo_ledger SET email = (SELECT body::json->>'email' "
     "FROM events WHERE events.id = yotpo_ledger.event_id);"},
    /* 3: how far a delivery got, so a later run need not redo it; how
     * many history reads have not found an uncertain award yet */
    {"ALTER TABLE deliveries ADD COLUMN progress TEXT;"
     "ALTER TABLE yotpo_ledger ADD COLUMN misses INTEGER NOT NULL "
     "DEFAULT 0;",
     "ALTER TABLE deliveries ADD COLUMN progress TEXT;"
     "ALTER TABLE yotpo_ledger ADD COLUMN misses INTEGER NOT NULL "
     "DEFAULT 0;"},
    /* 4: admin signatures already used, so a captured request cannot be
     * replayed within the timestamp tolerance */
    {"CREATE TABLE admin_replay ("
     "  sig TEXT PRIMARY KEY,"
     "  ts INTEGER NOT NULL,"
     "  seen_at INTEGER NOT NULL);"
     "CREATE INDEX admin_replay_ts ON admin_replay(ts);",
     "CREATE TABLE admin_replay ("
     "  sig TEXT PRIMARY KEY,"
     "  ts BIGINT NOT NULL,"
     "  seen_at BIGINT NOT NULL);"
     "CREATE INDEX admin_replay_ts ON admin_replay(ts);"},
    /* 5: who is fetching an Emarsys token, so a cold start makes one
     * token request per account, not one per process */
    {"CREATE TABLE emarsys_token_leases ("
     "  brand TEXT NOT NULL,"
     "  client_id TEXT NOT NULL,"
     "  owner TEXT NOT NULL,"
     "  lease_until INTEGER NOT NULL,"
     "  PRIMARY KEY (brand, client_id));",
     "CREATE TABLE emarsys_token_leases ("
     "  brand TEXT NOT NULL,"
     "  client_id TEXT NOT NULL,"
     "  owner TEXT NOT NULL,"
     "  lease_until BIGINT NOT NULL,"
     "  PRIMARY KEY (brand, client_id));"},
    /* 6: one row store_health rewrites to learn whether a write that
     * failed (a full disk) would succeed again */
    {"CREATE TABLE store_probe (id INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
     "INSERT INTO store_probe VALUES (1, 0);",
     "CREATE TABLE store_probe (id INTEGER PRIMARY KEY, n BIGINT NOT NULL);"
     "INSERT INTO store_probe VALUES (1, 0);"},
    /* 7: a 429's hold on an account, for every host sharing the store
     * (one host's processes share theirs in memory: delivery/limits.c) */
    {"CREATE TABLE account_holds (account TEXT PRIMARY KEY, "
     "until_ms INTEGER NOT NULL);",
     "CREATE TABLE account_holds (account TEXT PRIMARY KEY, "
     "until_ms BIGINT NOT NULL);"},
    /* 8: PostgreSQL: pacing, holds and token-fetch leases only spread
     * calls out; their writes need no WAL flush at commit (an unlogged
     * table is emptied by crash recovery: calls then pace afresh).  On
     * SQLite, nothing. */
    {"", "ALTER TABLE throttle SET UNLOGGED;"
         "ALTER TABLE account_holds SET UNLOGGED;"
         "ALTER TABLE emarsys_token_leases SET UNLOGGED;"},
    /* 9: the work still to do, in due order, in an index of its own:
     * on (status, next_at) a claim in a backlog read every pending row
     * and sorted them (PostgreSQL cannot merge the two statuses' runs),
     * and a planner that had seen few pending rows combined it with the
     * primary key for one event's status, reading them all again.  The
     * partial index holds only the rows still to do, next_at first. */
    {"DROP INDEX deliveries_due;"
     "CREATE INDEX deliveries_todo ON deliveries(next_at) "
     "WHERE status IN ('pending','retrying');",
     "DROP INDEX deliveries_due;"
     "CREATE INDEX deliveries_todo ON deliveries(next_at) "
     "WHERE status IN ('pending','retrying');"},
};
#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))
const int store_nmigrations = NMIGRATIONS;

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
	log_warnx("store: %s: %s", what, st->ops->errmsg(st->db));
	store_note_fault(st);
	return GC_ESTORE;
}

/* See store_priv.h. */
enum gc_err
store_exec(struct store *st, const char *sql)
{
	if (st->ops->exec(st->db, sql) != GC_OK) {
		store_note_fault(st);
		return GC_ESTORE;
	}
	return GC_OK;
}

static int
store_user_version(struct store *st)
{
	struct db_stmt *s = store_stmt(st, STMT_USER_VERSION);
	int v = -1;

	if (s != NULL && store_row(st, s) == DB_ROW)
		v = (int)store_col_int(s, 0);
	store_stmt_done(s);
	return v;
}

/* Apply pending migrations in one transaction, one host at a time. */
static enum gc_err
store_migrate(struct store *st, char *why, size_t whysz)
{
	enum db_dialect d = st->ops->dialect;
	int v;

	if (st->ops->migrate_lock(st->db) != GC_OK)
		goto fail_unlocked;
	if (store_begin(st) != GC_OK)
		goto fail;
	v = store_user_version(st);
	if (v < 0 || v > NMIGRATIONS) {
		store_rollback(st);
		st->ops->migrate_unlock(st->db);
		snprintf(why, whysz,
		         "database schema version %d is newer than this "
		         "gcrelay (%d): upgrade gcrelay on this host",
		         v, NMIGRATIONS);
		return GC_ESTORE;
	}
	for (; v < NMIGRATIONS; v++) {
		if (store_exec(st, migrations[v][d]) != GC_OK ||
		    st->ops->set_version(st->db, v + 1) != GC_OK)
			goto fail;
		log_info("store: applied migration %d", v + 1);
	}
	if (store_commit(st) != GC_OK)
		goto fail;
	st->ops->migrate_unlock(st->db);
	return GC_OK;
fail:
	/* Before the rollback replaces the error. */
	snprintf(why, whysz, "migration failed: %s", st->ops->errmsg(st->db));
	store_rollback(st);
	st->ops->migrate_unlock(st->db);
	return GC_ESTORE;
fail_unlocked:
	snprintf(why, whysz, "migration lock: %s", st->ops->errmsg(st->db));
	return GC_ESTORE;
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
	st->ops = cfg->store_backend == STORE_POSTGRESQL ? &db_pg_ops
	                                                 : &db_sqlite_ops;
	st->lazy_commits = cfg->durability == DURABILITY_NORMAL;
	if (st->ops->open(cfg, &st->db, why, whysz) != GC_OK) {
		store_close(st);
		return GC_ESTORE;
	}
	if (store_migrate(st, why, whysz) != GC_OK) {
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
	store_memo_forget(st);
	if (st->db != NULL)
		st->ops->close(st->db);
	free(st);
}

/* See store.h. */
enum gc_err
store_checkpoint(struct store *st)
{
	return st->ops->checkpoint(st->db);
}

/* See store.h. */
enum gc_err
store_wake_listen(struct store *st)
{
	if (st->ops->listen == NULL || st->db == NULL)
		return GC_OK;
	return st->ops->listen(st->db);
}

/* See store.h. */
int
store_wake_fd(struct store *st)
{
	if (st->ops->wake_fd == NULL || st->db == NULL)
		return -1;
	return st->ops->wake_fd(st->db);
}

/* See store.h. */
int
store_wake_drain(struct store *st)
{
	if (st->ops->wake_drain == NULL || st->db == NULL)
		return 0;
	return st->ops->wake_drain(st->db);
}

/* See store.h. */
void
store_wake_others(struct store *st)
{
	if (st->ops->notify == NULL || st->db == NULL)
		return;
	if (st->ops->notify(st->db, PG_WAKE_CHANNEL) != GC_OK)
		log_warnx("store: could not wake the other hosts' "
		          "dispatchers; they find the work at their next poll");
}

/* See store.h. */
int
store_schema_version(struct store *st)
{
	return store_user_version(st);
}

static void
brand_memo_drop(struct brand_memo *m)
{
	free(m->slug);
	free(m->doc);
	m->slug = m->doc = NULL;
}

/* See store_priv.h. */
void
store_memo_forget(struct store *st)
{
	for (int i = 0; i < BRAND_MEMO_MAX; i++)
		brand_memo_drop(&st->brands[i]);
	store_em_memo_forget(st);
}

/* See store_priv.h. */
int
store_memo_fresh(struct store *st)
{
	unsigned epoch;

	if (st->ops->memo_epoch == NULL || !st->ops->memo_epoch(st->db, &epoch))
		return 0;
	if (epoch != st->memo_epoch)
		store_memo_forget(st);
	st->memo_epoch = epoch;
	return 1;
}

/* See store_priv.h. */
enum gc_err
store_memo_told(struct store *st)
{
	store_memo_forget(st);
	if (st->ops->notify == NULL)
		return GC_OK;
	return st->ops->notify(st->db, PG_MEMO_CHANNEL);
}

/* See store.h. */
enum gc_err
store_brand_put(struct store *st, const char *slug, const char *doc,
                int *created)
{
	struct db_stmt *s;
	enum db_rc rc;

	*created = 0;
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	if ((s = store_stmt(st, STMT_BRAND_EXISTS)) == NULL)
		goto fail;
	store_bind_text(s, 1, slug);
	rc = store_row(st, s);
	if (!store_end(st, s, rc, "brand put"))
		goto fail;
	*created = rc == DB_DONE;
	if ((s = store_stmt(st, STMT_BRAND_PUT)) == NULL)
		goto fail;
	store_bind_text(s, 1, slug);
	store_bind_text(s, 2, doc);
	store_bind_int(s, 3, store_now_ms());
	if (!store_step(st, s, "brand put") || store_memo_told(st) != GC_OK ||
	    store_commit(st) != GC_OK)
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
	struct db_stmt *s;
	enum gc_err err = GC_OK;
	enum db_rc rc;

	*doc = NULL;
	if ((s = store_stmt(st, STMT_BRAND_GET)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, slug);
	rc = store_row(st, s);
	if (rc == DB_ROW) {
		if ((*doc = store_col_text(s, 0)) == NULL)
			err = GC_ENOMEM;
	} else if (rc == DB_DONE)
		err = GC_ENOTFOUND;
	if (!store_end(st, s, rc, "brand get"))
		err = GC_ESTORE;
	return err;
}

/* See store.h. */
enum gc_err
store_brand_doc(struct store *st, const char *slug, char **doc)
{
	struct brand_memo *m;
	enum gc_err err;

	if (!store_memo_fresh(st))
		return store_brand_get(st, slug, doc);
	for (int i = 0; i < BRAND_MEMO_MAX; i++) {
		m = &st->brands[i];
		if (m->slug != NULL && strcmp(m->slug, slug) == 0)
			return (*doc = strdup(m->doc)) != NULL ? GC_OK
			                                       : GC_ENOMEM;
	}
	if ((err = store_brand_get(st, slug, doc)) != GC_OK)
		return err;
	m = &st->brands[st->brands_next++ % BRAND_MEMO_MAX];
	brand_memo_drop(m);
	m->slug = strdup(slug);
	m->doc = strdup(*doc);
	if (m->slug == NULL || m->doc == NULL)
		brand_memo_drop(m); /* not kept: read again next time */
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_brand_delete(struct store *st, const char *slug)
{
	struct db_stmt *s;

	if ((s = store_stmt(st, STMT_BRAND_DELETE)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, slug);
	if (!store_step(st, s, "brand delete"))
		return GC_ESTORE;
	if (store_changes(st) == 0)
		return GC_ENOTFOUND;
	/* Deleted already: a host not told keeps it until it reconnects. */
	if (store_memo_told(st) != GC_OK)
		log_warnx("store: could not tell the other processes that "
		          "brand %s is gone; they take its events until they "
		          "reconnect",
		          slug);
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_brand_list(struct store *st, json_t **docs)
{
	struct db_stmt *s;
	json_t *arr;
	enum db_rc rc;

	*docs = NULL;
	if ((arr = json_array()) == NULL)
		return GC_ENOMEM;
	if ((s = store_stmt(st, STMT_BRAND_LIST)) == NULL) {
		json_decref(arr);
		return GC_ESTORE;
	}
	while ((rc = store_row(st, s)) == DB_ROW)
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
	struct db_stmt *s;

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
	return store_changes(st) > 0 ? GC_OK : GC_EEXISTS;
}
