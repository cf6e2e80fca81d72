/*
 * Store health (store.h, store_health): whether an event recorded now
 * would be durable, and recovery once the fault is gone.
 *
 * The checks of the file or server are the backend's (db_ops.check,
 * sqlite.c, pgsql.c); the shared outcome of the last write and the
 * recovery are here, for both.
 *
 * A running gcrelay can lose its store in ways SQLite does not report
 * on the next statement: the file deleted or replaced (the connection
 * goes on writing to the unlinked inode), made read-only (a connection
 * opened then is read-only for good), a disk that filled up (only the
 * write that hit it fails).  Every process checks the same things, and
 * the last write's outcome is shared, so intake, the dispatcher and
 * /healthz agree.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "db.h"
#include "log.h"
#include "store.h"
#include "store_priv.h"

/* A failed check is retried (reopen, probe) at most this often. */
#define RECOVER_EVERY_MS 1000

/*
 * Write outcomes, ordered by one counter: the store is faulty while the
 * last fault came after the last committed write.  Shared by every
 * process once store_shared_init ran in the master.
 */
struct store_shared {
	uint64_t seq;
	uint64_t fault_seq;
	uint64_t ok_seq;
	int fault_code; /* the backend's code of the last fault */
};

static struct store_shared local_shared;
static struct store_shared *shared = &local_shared;

static int64_t
health_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* See store.h. */
enum gc_err
store_shared_init(void)
{
	void *p =
	    mmap(NULL, sizeof(struct store_shared), PROT_READ | PROT_WRITE,
	         MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return GC_ESYS;
	shared = p;
	return GC_OK;
}

/* See store_priv.h. */
void
store_note_fault(struct store *st)
{
	int code = st->db != NULL ? st->ops->fault(st->db) : 0;

	if (code == 0)
		return;
	__atomic_store_n(&shared->fault_code, code, __ATOMIC_RELAXED);
	__atomic_store_n(&shared->fault_seq,
	                 __atomic_add_fetch(&shared->seq, 1, __ATOMIC_SEQ_CST),
	                 __ATOMIC_SEQ_CST);
}

/* See store_priv.h. */
void
store_note_ok(void)
{
	/* Cheap while healthy: no shared write. */
	if (__atomic_load_n(&shared->fault_seq, __ATOMIC_SEQ_CST) <=
	    __atomic_load_n(&shared->ok_seq, __ATOMIC_SEQ_CST))
		return;
	__atomic_store_n(&shared->ok_seq,
	                 __atomic_add_fetch(&shared->seq, 1, __ATOMIC_SEQ_CST),
	                 __ATOMIC_SEQ_CST);
}

static int
health_last_write_failed(void)
{
	return __atomic_load_n(&shared->fault_seq, __ATOMIC_SEQ_CST) >
	       __atomic_load_n(&shared->ok_seq, __ATOMIC_SEQ_CST);
}

/* What store_health found, and so how it may recover. */
enum health {
	HEALTH_OK,
	HEALTH_WAIT,   /* the file is missing or not writable */
	HEALTH_REOPEN, /* replaced, or this connection is read-only */
	HEALTH_PROBE,  /* the last write failed */
	HEALTH_SILENT, /* it does not answer a query */
};

/*
 * What is wrong with the file or the connection, without recovering;
 * ask: whether to ask the database a query too.
 */
static enum health
health_check(struct store *st, char *why, size_t whysz, int ask)
{
	switch (st->ops->check(st->db, why, whysz)) {
	case DB_HEALTH_OK:
		break;
	case DB_HEALTH_WAIT:
		return HEALTH_WAIT;
	case DB_HEALTH_REOPEN:
		return HEALTH_REOPEN;
	}
	if (health_last_write_failed()) {
		snprintf(why, whysz, "the last write failed: %s",
		         st->ops->fault_text(__atomic_load_n(
		             &shared->fault_code, __ATOMIC_RELAXED)));
		return HEALTH_PROBE;
	}
	if (ask && store_schema_version(st) < 0) {
		snprintf(why, whysz, "database does not answer: %s",
		         st->ops->errmsg(st->db));
		return HEALTH_SILENT;
	}
	return HEALTH_OK;
}

/*
 * A new connection to the store, replacing the old one only once it
 * works (the backend's reopen); statements are prepared again on it.
 */
static void
health_reopen(struct store *st)
{
	store_stmts_free(st);
	if (st->ops->reopen(st->db, store_nmigrations) == GC_OK)
		log_info("store: reopened");
}

/* A one-row write: does the file take writes again? */
static void
health_probe(struct store *st)
{
	if (store_exec(st, "UPDATE store_probe SET n = n + 1") == GC_OK)
		store_note_ok();
}

/* store_health, asking the database a query when ask. */
static enum gc_err
health(struct store *st, char *why, size_t whysz, int ask)
{
	enum health h = health_check(st, why, whysz, ask);
	int64_t now = health_mono_ms();

	if (h != HEALTH_OK && h != HEALTH_WAIT &&
	    now - st->recover_ms >= RECOVER_EVERY_MS) {
		st->recover_ms = now;
		if (h == HEALTH_REOPEN) {
			health_reopen(st);
			h = health_check(st, why, whysz, ask);
		}
		/* Only on the file at the path: never on an unlinked one. */
		if (h == HEALTH_PROBE) {
			health_probe(st);
			h = health_check(st, why, whysz, ask);
		}
	}
	if (h != HEALTH_OK && !st->unhealthy)
		log_warnx("store: unavailable: %s", why);
	else if (h == HEALTH_OK && st->unhealthy)
		log_info("store: available again");
	st->unhealthy = h != HEALTH_OK;
	return h == HEALTH_OK ? GC_OK : GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_health(struct store *st, char *why, size_t whysz)
{
	return health(st, why, whysz, 1);
}

/* See store.h. */
enum gc_err
store_usable(struct store *st, char *why, size_t whysz)
{
	/*
	 * A database server refuses the caller's next statement when it is
	 * gone: asking it first would be one more round trip per use.  A
	 * file (SQLite) may take writes it will not keep: ask it.
	 */
	return health(st, why, whysz, !st->ops->durable_commits);
}

/* See store.h. */
enum gc_err
store_kept(struct store *st, char *why, size_t whysz)
{
	if (st->ops->durable_commits)
		return GC_OK;
	return store_health(st, why, whysz);
}
