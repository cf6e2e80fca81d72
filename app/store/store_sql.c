/*
 * Every SQL statement the store runs, in one table indexed by enum stmt,
 * and the per-connection cache that prepares each once (kcaldav over
 * ksql).  Callers take a statement with store_stmt, bind, step with
 * store_row or store_step, and give it back with store_stmt_done.
 *
 * stmts[] is written in SQLite's dialect with ?NNN (or ?) placeholders.
 * PostgreSQL runs the same text with $NNN placeholders (pg_sql), except
 * where pg_stmts[] gives its own, or pg_lazy_stmts[] under
 * store.durability = "normal".  "" means nothing to run there.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "store.h"
#include "store_priv.h"

/* The attempts insert and one row of it, for statements of 1 to 4 rows. */
#define ATTEMPT_INSERT                                                         \
	"INSERT INTO attempts(event_id, destination, at, step, outcome, "      \
	"http_status, reply_code, excerpt, latency_ms) VALUES "
#define ATTEMPT_ROW "(?, ?, ?, ?, ?, ?, ?, ?, ?)"

/* A Yotpo ledger key claimed: "sending", leased, its reference the token. */
#define LEDGER_INSERT                                                          \
	"INSERT INTO yotpo_ledger(brand, token, action, state, event_id, "     \
	"reference, email, lease_until, lease_owner, updated_at) VALUES "      \
	"(?1, ?2, ?3, 'sending', ?4, ?2, ?5, ?6, ?7, ?8)"

#define LEDGER_SET(b, t, a, state, sent, now, owner)                           \
	"UPDATE yotpo_ledger SET state = " state ", sent_at = " sent           \
	", lease_until = 0, lease_owner = NULL, updated_at = " now             \
	" WHERE brand = " b " AND token = " t " AND action = " a               \
	" AND lease_owner = " owner

/* A pacing slot of a key (store_pace_slot), and its row's next one. */
#define THROTTLE_SQL                                                           \
	"INSERT INTO throttle(brand, next_ms) VALUES (?1, ?2 + ?3) "           \
	"ON CONFLICT(brand) DO UPDATE SET next_ms = "                          \
	"(CASE WHEN next_ms > ?2 + ?5 THEN ?2 ELSE max(next_ms, ?2) END) "     \
	"+ ?3 WHERE next_ms <= ?2 + ?4 OR next_ms > ?2 + ?5 "                  \
	"RETURNING next_ms - ?3"

static const char *const stmts[] = {
    [STMT_BEGIN] = "BEGIN IMMEDIATE",
    [STMT_COMMIT] = "COMMIT",
    [STMT_ROLLBACK] = "ROLLBACK",
    [STMT_USER_VERSION] = "PRAGMA user_version",
    [STMT_BRAND_EXISTS] = "SELECT 1 FROM brands WHERE slug = ?",
    [STMT_BRAND_PUT] = "INSERT INTO brands(slug, doc, created_at, "
                       "updated_at) VALUES (?1, ?2, ?3, ?3) "
                       "ON CONFLICT(slug) DO UPDATE SET doc = ?2, "
                       "updated_at = ?3",
    [STMT_BRAND_GET] = "SELECT doc FROM brands WHERE slug = ?",
    [STMT_BRAND_DELETE] = "DELETE FROM brands WHERE slug = ?",
    [STMT_BRAND_LIST] = "SELECT doc FROM brands ORDER BY slug",
    [STMT_ADMIN_REPLAY_PURGE] = "DELETE FROM admin_replay WHERE ts < ?",
    [STMT_ADMIN_REPLAY_INSERT] = "INSERT INTO admin_replay(sig, ts, "
                                 "seen_at) VALUES (?, ?, ?) "
                                 "ON CONFLICT(sig) DO NOTHING",
    [STMT_EVENT_INSERT] = "INSERT INTO events(id, brand, kind, body, "
                          "received_at, status) VALUES "
                          "(?, ?, ?, ?, ?, ?) "
                          "ON CONFLICT(id) DO NOTHING",
    [STMT_DELIVERY_INSERT] =
        "INSERT INTO deliveries(event_id, destination, status, "
        "reason, attempts, next_at, lease_until, lease_owner, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    /*
     * pending over failed over delivered, from the event's own rows
     * found by the primary key alone: a condition on status as well
     * could lead a planner to the (large, in a backlog) status index.
     */
    [STMT_EVENT_REFRESH] =
        "UPDATE events SET status = CASE (SELECT max(CASE WHEN status IN"
        " ('pending','retrying') THEN 2 WHEN status IN ('failed','dead')"
        " THEN 1 ELSE 0 END) FROM deliveries WHERE event_id = ?1)"
        " WHEN 2 THEN 'pending' WHEN 1 THEN 'failed' ELSE 'delivered' END"
        " WHERE id = ?1",
    [STMT_EVENT_OUTCOME] =
        "SELECT d.destination, d.status, d.reason, d.warning, d.attempts, "
        "d.next_at, e.status FROM events e LEFT JOIN deliveries d ON "
        "d.event_id = e.id WHERE e.id = ? ORDER BY d.destination",
    [STMT_EVENT_BODY] = "SELECT e.brand, e.received_at, e.body, b.doc "
                        "FROM events e LEFT JOIN brands b ON b.slug = "
                        "e.brand WHERE e.id = ?",
    [STMT_EVENT_EXISTS] = "SELECT 1 FROM events WHERE id = ?",
    [STMT_EVENT_DETAIL] = "SELECT id, brand, kind, status, received_at, "
                          "body FROM events WHERE id = ?",
    [STMT_EVENTS_LIST] = "SELECT id, brand, kind, status, received_at, "
                         "rowid FROM events WHERE (?1 IS NULL OR brand = "
                         "?1) AND (?2 IS NULL OR status = ?2) AND "
                         "received_at >= ?3 AND (?4 IS NULL OR rowid < "
                         "?4) ORDER BY rowid DESC LIMIT ?5",
    [STMT_DELIVERIES_OF] =
        "SELECT destination, status, reason, warning, attempts, "
        "next_at FROM deliveries WHERE event_id = ? "
        "ORDER BY destination",
    [STMT_RESULT_FINISH] =
        "UPDATE deliveries SET status = ?1, reason = ?2, warning = ?3, "
        "next_at = ?4, lease_until = 0, lease_owner = NULL, "
        "updated_at = ?5, progress = coalesce(?9, progress) WHERE "
        "event_id = ?6 AND "
        "destination = ?7 AND lease_owner = ?8",
    [STMT_RESULT_POSTPONE] =
        "UPDATE deliveries SET status = 'retrying', reason = ?1, "
        "next_at = ?2, lease_until = 0, lease_owner = NULL, "
        "attempts = max(attempts - 1, 0), updated_at = ?3, "
        "progress = coalesce(?7, progress) WHERE event_id = ?4 AND "
        "destination = ?5 AND "
        "lease_owner = ?6",
    [STMT_DELIVERY_RUNS] = "SELECT attempts FROM deliveries "
                           "WHERE event_id = ? AND destination = ?",
    [STMT_ATTEMPT_ADD] = ATTEMPT_INSERT ATTEMPT_ROW,
    [STMT_ATTEMPT_ADD_2] = ATTEMPT_INSERT ATTEMPT_ROW ", " ATTEMPT_ROW,
    [STMT_ATTEMPT_ADD_3] =
        ATTEMPT_INSERT ATTEMPT_ROW ", " ATTEMPT_ROW ", " ATTEMPT_ROW,
    [STMT_ATTEMPT_ADD_4] = ATTEMPT_INSERT ATTEMPT_ROW
    ", " ATTEMPT_ROW ", " ATTEMPT_ROW ", " ATTEMPT_ROW,
    [STMT_ATTEMPTS_OF] = "SELECT destination, at, step, outcome, http_status, "
                         "reply_code, excerpt, latency_ms FROM attempts "
                         "WHERE event_id = ? ORDER BY id",
    [STMT_CLAIM_SELECT] = "SELECT event_id, destination, progress "
                          "FROM deliveries "
                          "WHERE status IN ('pending','retrying') AND "
                          "next_at <= ?1 AND lease_until < ?1 "
                          "ORDER BY next_at LIMIT ?2",
    [STMT_CLAIM_ONE] = "UPDATE deliveries SET lease_until = ?1, "
                       "lease_owner = ?2, attempts = attempts + 1, "
                       "updated_at = ?3 WHERE event_id = ?4 AND "
                       "destination = ?5 AND status IN "
                       "('pending','retrying') AND lease_until < ?3",
    [STMT_OLDEST_DUE] = "SELECT min(next_at) FROM deliveries WHERE status IN "
                        "('pending','retrying') AND next_at <= ?",
    [STMT_EVENT_TAKE] =
        "UPDATE deliveries SET status = 'retrying', attempts = 1,"
        " next_at = ?1, lease_until = ?2, lease_owner = ?4, updated_at "
        "= ?1 "
        "WHERE event_id = ?3 AND (status IN ('failed','dead') "
        "OR (status IN ('pending','retrying') AND "
        "lease_until < ?1)) RETURNING destination",
    [STMT_BRAND_REQUEUE] =
        "UPDATE deliveries SET status = 'retrying', next_at = ?1, "
        "attempts = 0, updated_at = ?1 WHERE status IN "
        "('failed','dead') AND event_id IN (SELECT id FROM events "
        "WHERE brand = ?2 AND received_at >= ?3 AND received_at < ?4 "
        "AND body IS NOT NULL) RETURNING event_id",
    [STMT_OUTBOX_DEPTH] = "SELECT count(*) FROM deliveries WHERE status "
                          "IN ('pending','retrying')",
    /*
     * Retention: every personal field of a settled event older than ?1.
     * Bodies hold the contact; upstream texts (excerpts, reasons,
     * warnings) can quote it; the ledger keeps the address an award
     * went to.  Statuses, codes and times stay; so do the ledger's
     * token and reference (Gocertify's verification id, no contact
     * data), which keep an award exactly-once.  Not "body IS NOT NULL":
     * what a purged event kept from before this purge goes too.
     */
    [STMT_PURGE_EXCERPTS] = "UPDATE attempts SET excerpt = NULL WHERE "
                            "excerpt IS NOT NULL AND event_id IN (SELECT id "
                            "FROM events WHERE received_at < ?1 AND "
                            "status != 'pending')",
    [STMT_PURGE_REASONS] = "UPDATE deliveries SET reason = NULL, warning = "
                           "NULL WHERE (reason IS NOT NULL OR warning IS "
                           "NOT NULL) AND event_id IN (SELECT id FROM "
                           "events WHERE received_at < ?1 AND status != "
                           "'pending')",
    [STMT_PURGE_LEDGER] = "UPDATE yotpo_ledger SET email = NULL WHERE "
                          "email IS NOT NULL AND event_id IN (SELECT id "
                          "FROM events WHERE received_at < ?1 AND "
                          "status != 'pending')",
    [STMT_PURGE_BODIES] = "UPDATE events SET body = NULL, purged = 1 WHERE "
                          "received_at < ?1 AND body IS NOT NULL AND "
                          "status != 'pending'",
    [STMT_EM_IDS_OF] = "SELECT kind, name, remote_id FROM emarsys_ids "
                       "WHERE brand = ?",
    [STMT_EM_ID_PUT] =
        "INSERT INTO emarsys_ids(brand, kind, name, remote_id, "
        "updated_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(brand, "
        "kind, name) DO UPDATE SET remote_id = ?4, updated_at = ?5",
    [STMT_EM_ID_FORGET] = "DELETE FROM emarsys_ids WHERE "
                          "brand = ? AND kind = ?",
    [STMT_EM_TOKEN_GET] = "SELECT token, expires_at FROM emarsys_tokens "
                          "WHERE brand = ? AND client_id = ?",
    [STMT_EM_TOKEN_PUT] =
        "INSERT INTO emarsys_tokens(brand, client_id, token, "
        "expires_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(brand) DO "
        "UPDATE SET client_id = ?2, token = ?3, expires_at = ?4",
    [STMT_EM_TOKEN_FORGET] = "DELETE FROM emarsys_tokens WHERE "
                             "brand = ? AND token = ?",
    [STMT_EM_TOKEN_LEASE] =
        "INSERT INTO emarsys_token_leases(brand, client_id, owner, "
        "lease_until) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(brand, "
        "client_id) DO UPDATE SET owner = ?3, lease_until = ?4 WHERE "
        "emarsys_token_leases.lease_until < ?5 RETURNING "
        "emarsys_token_leases.lease_until",
    [STMT_EM_TOKEN_LEASE_PEEK] = "SELECT lease_until FROM "
                                 "emarsys_token_leases WHERE brand = ? AND "
                                 "client_id = ?",
    [STMT_EM_TOKEN_UNLEASE] = "DELETE FROM emarsys_token_leases WHERE "
                              "brand = ? AND client_id = ? AND owner = ?",
    [STMT_LEDGER_GET] = "SELECT state, event_id, lease_until FROM "
                        "yotpo_ledger WHERE brand = ? AND token = ? AND "
                        "action = ?",
    [STMT_LEDGER_RECONCILE] = "UPDATE yotpo_ledger SET state = 'unknown', "
                              "lease_until = ?4, lease_owner = ?5, sent_at = "
                              "coalesce(sent_at, updated_at), updated_at = ?6 "
                              "WHERE brand = ?1 AND token = ?2 AND action = ?3 "
                              "RETURNING sent_at, coalesce(email, ''), "
                              "misses",
    [STMT_LEDGER_INSERT] = LEDGER_INSERT,
    [STMT_LEDGER_INSERT_NEW] =
        LEDGER_INSERT " ON CONFLICT(brand, token, action) DO NOTHING",
    [STMT_LEDGER_SET] = LEDGER_SET("?1", "?2", "?3", "?4", "?5", "?6", "?7"),
    [STMT_LEDGER_SENDING] =
        "UPDATE yotpo_ledger SET state = 'sending', sent_at = NULL, "
        "misses = 0, event_id = ?5, email = ?6, updated_at = ?7 WHERE "
        "brand = ?1 "
        "AND token = ?2 AND action = ?3 AND lease_owner = ?4 AND "
        "state != 'done'",
    [STMT_LEDGER_MISS] =
        "UPDATE yotpo_ledger SET misses = misses + 1, updated_at = ?5 "
        "WHERE brand = ?1 AND token = ?2 AND action = ?3 AND "
        "lease_owner = ?4 AND state != 'done' RETURNING misses",
    [STMT_LEDGER_RELEASE] = "DELETE FROM yotpo_ledger WHERE brand = ? AND "
                            "token = ? AND action = ? AND state != 'done' "
                            "AND lease_owner = ?",
    [STMT_THROTTLE] = THROTTLE_SQL,
    [STMT_THROTTLE_DURABLE] = THROTTLE_SQL,
    [STMT_THROTTLE_PEEK] = "SELECT next_ms FROM throttle WHERE brand = ?",
    [STMT_HOLDS_AHEAD] = "SELECT account, until_ms FROM account_holds "
                         "WHERE until_ms > ?",
    [STMT_HOLD_PUT] = "INSERT INTO account_holds(account, until_ms) VALUES "
                      "(?1, ?2) ON CONFLICT(account) DO UPDATE SET "
                      "until_ms = ?2 WHERE account_holds.until_ms < ?2",
};
_Static_assert(sizeof(stmts) / sizeof(stmts[0]) == STMT__MAX,
               "stmts[] must name every enum stmt");

/* STMT_EVENT_INSERT_2 around the FROM list of its deliveries' insert. */
#define EVENT_INSERT_2_HEAD                                                    \
	"WITH e AS (INSERT INTO events(id, brand, kind, body, received_at, "   \
	"status) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT(id) DO "          \
	"NOTHING RETURNING id)"
#define EVENT_INSERT_2_TAIL(from)                                              \
	" INSERT INTO deliveries(event_id, destination, status, reason, "      \
	"attempts, next_at, lease_until, updated_at, lease_owner) SELECT "     \
	"e.id, v.d, v.s, v.r, v.a, v.n, v.l, $5, v.o FROM e," from             \
	" (VALUES ($7::text, $8::text, $9::text, $10::int, $11::bigint, "      \
	"$12::bigint, $13::text), ($14, $15, $16, $17::int, $18::bigint, "     \
	"$19::bigint, $20)) AS v(d, s, r, a, n, l, o)"

/* STMT_THROTTLE after the row it inserts. */
#define PG_THROTTLE_TAIL                                                       \
	" ON CONFLICT(brand) DO UPDATE SET next_ms = (CASE WHEN "              \
	"throttle.next_ms > $2::bigint + $5::bigint THEN $2::bigint ELSE "     \
	"greatest(throttle.next_ms, $2::bigint) END) + $3::bigint WHERE "      \
	"throttle.next_ms <= $2::bigint + $4::bigint OR throttle.next_ms > "   \
	"$2::bigint + $5::bigint RETURNING next_ms - $3::bigint"

#define PG_THROTTLE_SQL                                                        \
	"INSERT INTO throttle(brand, next_ms) VALUES ($1, $2::bigint + "       \
	"$3::bigint)" PG_THROTTLE_TAIL

/*
 * PostgreSQL's own text where the dialects differ: no BEGIN IMMEDIATE
 * (pg_begin below takes transaction advisory locks instead), no rowid
 * (events.seq), greatest() for the two-argument max(), parameters whose type
 * nothing around them decides, and claims that skip the rows another host is
 * claiming.
 */
static const char *const pg_stmts[STMT__MAX] = {
    [STMT_USER_VERSION] = "SELECT version FROM gcrelay_schema",
    [STMT_EVENTS_LIST] = "SELECT id, brand, kind, status, received_at, "
                         "seq FROM events WHERE ($1::text IS NULL OR "
                         "brand = $1) AND ($2::text IS NULL OR status = "
                         "$2) AND received_at >= $3 AND ($4::bigint IS "
                         "NULL OR seq < $4) ORDER BY seq DESC LIMIT $5",
    [STMT_RESULT_POSTPONE] =
        "UPDATE deliveries SET status = 'retrying', reason = $1, "
        "next_at = $2, lease_until = 0, lease_owner = NULL, "
        "attempts = greatest(attempts - 1, 0), updated_at = $3, "
        "progress = coalesce($7, progress) WHERE event_id = $4 AND "
        "destination = $5 AND lease_owner = $6",
    /*
     * The due rows no other claim holds, locked; the earliest-due $5
     * events of them numbered; those leased, each event to its own
     * owner ($2.n), and returned with the event's body and its brand's
     * document, in one statement.
     */
    [STMT_CLAIM_BATCH] =
        "UPDATE deliveries d SET lease_until = $1, lease_owner = $2::text "
        "|| '.' || q.n, attempts = d.attempts + 1, updated_at = $3 FROM ("
        "SELECT event_id, destination, dense_rank() OVER (ORDER BY "
        "first_at, event_id) - 1 AS n FROM (SELECT event_id, "
        "destination, min(next_at) OVER (PARTITION BY event_id) AS "
        "first_at FROM (SELECT event_id, destination, next_at FROM "
        "deliveries WHERE status IN ('pending','retrying') AND next_at "
        "<= $3 AND lease_until < $3 ORDER BY next_at LIMIT $4 FOR "
        "UPDATE SKIP LOCKED) due) w) q JOIN events e ON e.id = "
        "q.event_id LEFT JOIN brands b ON b.slug = e.brand WHERE q.n < "
        "$5 AND d.event_id = q.event_id AND d.destination = "
        "q.destination RETURNING d.event_id, d.destination, d.progress, "
        "d.lease_owner, e.brand, e.received_at, e.body, b.doc",
    /*
     * A new event and its two deliveries in one statement (one round
     * trip, atomic without BEGIN); nothing at all when the id is known.
     * _WAKE also notifies every dispatcher when the event is new (at
     * its commit, as NOTIFY would; n is materialized: pg_notify is
     * volatile).
     */
    [STMT_EVENT_INSERT_2] = EVENT_INSERT_2_HEAD EVENT_INSERT_2_TAIL(""),
    [STMT_EVENT_INSERT_2_WAKE] =
        EVENT_INSERT_2_HEAD ", n AS (SELECT pg_notify('" PG_WAKE_CHANNEL
                            "', '') FROM e)" EVENT_INSERT_2_TAIL(" n,"),
    [STMT_THROTTLE] = PG_THROTTLE_SQL,
    [STMT_THROTTLE_DURABLE] = PG_THROTTLE_SQL,
};

/*
 * PostgreSQL under store.durability = "normal": writes whose loss in a
 * crash of the database server costs nothing but work done again (a
 * pacing slot; a ledger state after the call, whose loss leaves
 * "sending", which a later run reconciles against the history) commit
 * without waiting for the WAL flush.  Each turns synchronous_commit off
 * for its own transaction (set_config, local), as SET LOCAL would in a
 * BEGIN block, without one.
 */
#define PG_LAZY "(SELECT set_config('synchronous_commit', 'off', true))"

static const char *const pg_lazy_stmts[STMT__MAX] = {
    [STMT_LEDGER_SET] = LEDGER_SET("$1", "$2", "$3", "$4", "$5", "$6",
                                   "$7") " AND " PG_LAZY " IS NOT NULL",
    [STMT_THROTTLE] =
        "INSERT INTO throttle(brand, next_ms) SELECT $1, "
        "$2::bigint + $3::bigint FROM " PG_LAZY " AS lazy" PG_THROTTLE_TAIL,
};

/*
 * stmts[id] with each ?NNN written $NNN and each bare ? numbered as
 * SQLite numbers it (one past the largest so far); outside quotes.
 * Returns 0 when it does not fit in buf.
 */
static int
pg_sql(const char *in, char *buf, size_t bufsz)
{
	size_t o = 0;
	int quoted = 0, max = 0, n;
	char *end;

	for (; *in != '\0'; in++) {
		if (*in == '\'')
			quoted = !quoted;
		if (quoted || *in != '?') {
			if (o + 1 >= bufsz)
				return 0;
			buf[o++] = *in;
			continue;
		}
		end = (char *)in + 1;
		n = max + 1;
		if (isdigit((unsigned char)in[1]))
			n = (int)strtol(in + 1, &end, 10);
		max = n > max ? n : max;
		if ((size_t)snprintf(buf + o, bufsz - o, "$%d", n) >= bufsz - o)
			return 0;
		o += strlen(buf + o);
		in = end - 1;
	}
	buf[o] = '\0';
	return 1;
}

/* The text of statement id on st's backend; NULL when it has none. */
static const char *
stmt_sql(struct store *st, enum stmt id, char *buf, size_t bufsz)
{
	if (st->ops->dialect != DB_PG)
		return stmts[id];
	if (st->lazy_commits && pg_lazy_stmts[id] != NULL)
		return pg_lazy_stmts[id];
	if (pg_stmts[id] != NULL)
		return pg_stmts[id];
	if (stmts[id] == NULL || !pg_sql(stmts[id], buf, bufsz))
		return NULL;
	return buf;
}

/* The cached statement id, prepared on first use; NULL (logged). */
static struct db_stmt *
stmt_get(struct store *st, enum stmt id)
{
	char buf[1024];
	const char *sql;
	struct db_stmt *s;

	if ((s = st->stmt[id]) != NULL) {
		/* A caller that forgot store_stmt_done must not leak state. */
		if (st->ops->busy(s)) {
			log_warnx("store: statement %d was not reset", id);
			store_stmt_done(s);
		}
		return s;
	}
	if ((sql = stmt_sql(st, id, buf, sizeof(buf))) == NULL) {
		log_warnx("store: statement %d has no SQL", id);
		return NULL;
	}
	if ((s = st->ops->prepare(st->db, id, sql)) == NULL)
		return NULL;
	st->stats.prepares++;
	st->stmt[id] = s;
	return s;
}

/* See store_priv.h. */
struct db_stmt *
store_stmt(struct store *st, enum stmt id)
{
	st->stats.runs++;
	return stmt_get(st, id);
}

/* See store_priv.h. */
void
store_stmt_done(struct db_stmt *s)
{
	if (s != NULL)
		s->ops->reset(s);
}

/* See store_priv.h. */
void
store_stmts_free(struct store *st)
{
	for (int i = 0; i < STMT__MAX; i++) {
		if (st->stmt[i] != NULL)
			st->ops->finalize(st->stmt[i]);
		st->stmt[i] = NULL;
	}
}

/* See store_priv.h. */
enum db_rc
store_row(struct store *st, struct db_stmt *s)
{
	st->stats.steps++;
	return s->ops->step(s);
}

/* See store_priv.h. */
int
store_end(struct store *st, struct db_stmt *s, enum db_rc rc, const char *what)
{
	int ok = rc == DB_DONE || rc == DB_ROW;

	/* Before the reset, while the error is still the step's. */
	if (!ok)
		store_fail(st, what);
	st->changes = s != NULL && ok ? s->ops->changes(s) : 0;
	store_stmt_done(s);
	return ok;
}

/* See store_priv.h. */
int
store_step(struct store *st, struct db_stmt *s, const char *what)
{
	return store_end(st, s, s != NULL ? store_row(st, s) : DB_ERROR, what);
}

/* See store_priv.h. */
long
store_changes(struct store *st)
{
	return st->changes;
}

/* See store_priv.h. */
void
store_bind_text(struct db_stmt *s, int i, const char *v)
{
	if (v == NULL)
		s->ops->bind_null(s, i);
	else
		s->ops->bind_text(s, i, v);
}

/* See store_priv.h. */
void
store_bind_int(struct db_stmt *s, int i, int64_t v)
{
	s->ops->bind_int(s, i, v);
}

/* See store_priv.h. */
void
store_bind_null(struct db_stmt *s, int i)
{
	s->ops->bind_null(s, i);
}

/* See store_priv.h. */
void
store_bind_pos(struct db_stmt *s, int i, int64_t v)
{
	if (v > 0)
		s->ops->bind_int(s, i, v);
	else
		s->ops->bind_null(s, i);
}

/* See store_priv.h. */
char *
store_col_text(struct db_stmt *s, int col)
{
	const char *t = s->ops->col_text(s, col);

	return t ? strdup(t) : NULL;
}

/* See store_priv.h. */
const char *
store_col(struct db_stmt *s, int col)
{
	return s->ops->col_text(s, col);
}

/* See store_priv.h. */
int64_t
store_col_int(struct db_stmt *s, int col)
{
	return s->ops->col_int(s, col);
}

/* See store_priv.h. */
int
store_col_null(struct db_stmt *s, int col)
{
	return s->ops->col_null(s, col);
}

/* Run a transaction-control statement ("" on this backend: nothing). */
static enum gc_err
store_txn(struct store *st, enum stmt id, const char *what)
{
	struct db_stmt *s;

	if (st->ops->dialect != DB_PG && stmts[id][0] == '\0')
		return GC_OK;
	if ((s = stmt_get(st, id)) == NULL)
		return GC_ESTORE;
	return store_end(st, s, s->ops->step(s), what) ? GC_OK : GC_ESTORE;
}

/*
 * PostgreSQL's transaction advisory locks for writes: one key for the
 * whole store, and a key space whose keys are hashes of store_begin_on's
 * keys (a collision only makes two transactions wait for each other).
 */
#define PG_STORE_LOCK 4741520
#define PG_KEY_LOCKS  4741521

/* FNV-1a, 31 bits: a non-negative int4 for pg_advisory_xact_lock. */
static int
lock_key_hash(const char *key)
{
	uint32_t h = 2166136261u;

	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 16777619u;
	return (int)(h & 0x7fffffff);
}

static int
lock_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/*
 * PostgreSQL: the statement taking a write transaction's locks: the
 * store's key alone (no keys), or shared with the keys' own, taken in
 * one order (their hashes ascending) so that two transactions holding
 * several never wait for each other in a cycle.
 */
static void
pg_locks(char *sql, size_t sqlsz, const char *const *keys, size_t nkeys)
{
	int h[STORE_LOCK_KEYS_MAX];
	size_t n = 0, o;

	if (nkeys == 0 || nkeys > STORE_LOCK_KEYS_MAX) {
		snprintf(sql, sqlsz, "SELECT pg_advisory_xact_lock(%d)",
		         PG_STORE_LOCK);
		return;
	}
	for (size_t i = 0; i < nkeys; i++)
		h[i] = lock_key_hash(keys[i]);
	qsort(h, nkeys, sizeof(h[0]), lock_cmp);
	o = (size_t)snprintf(sql, sqlsz,
	                     "SELECT pg_advisory_xact_lock_shared(%d)",
	                     PG_STORE_LOCK);
	for (size_t i = 0; i < nkeys && o < sqlsz; i++) {
		if (n > 0 && h[i] == h[n - 1])
			continue; /* one key, or two hashed alike */
		h[n++] = h[i];
		o += (size_t)snprintf(sql + o, sqlsz - o,
		                      ", pg_advisory_xact_lock(%d, %d)",
		                      PG_KEY_LOCKS, h[i]);
	}
}

/*
 * PostgreSQL: BEGIN, the transaction's own settings (local: "" or SET
 * LOCAL statements) and its locks in one message (one round trip).
 */
static enum gc_err
pg_begin(struct store *st, const char *key, const char *local)
{
	char locks[128], sql[384];

	pg_locks(locks, sizeof(locks), &key, key != NULL);
	snprintf(sql, sizeof(sql), "BEGIN; %s%s", local, locks);
	return store_exec(st, sql);
}

/* The transaction's own settings (how: STORE_ flags), as statements. */
#define SET_LAZY    "SET LOCAL synchronous_commit = off"
#define SET_ORDERED "SET LOCAL enable_bitmapscan = off"

static enum gc_err
begin_with(struct store *st, const char *key, int how)
{
	char local[128];
	enum gc_err err;

	snprintf(local, sizeof(local), "%s%s",
	         how & STORE_LAZY && st->lazy_commits ? SET_LAZY "; " : "",
	         how & STORE_ORDERED ? SET_ORDERED "; " : "");
	err = st->ops->dialect == DB_PG ? pg_begin(st, key, local)
	                                : store_txn(st, STMT_BEGIN, "begin");
	if (err != GC_OK)
		store_rollback(st);
	else
		st->stats.begun++;
	return err;
}

/* See store_priv.h. */
enum gc_err
store_begin_on(struct store *st, const char *key)
{
	return begin_with(st, key, 0);
}

/* See store_priv.h. */
enum gc_err
store_begin_lazy(struct store *st, const char *key)
{
	return begin_with(st, key, STORE_LAZY);
}

/* See store_priv.h. */
int
store_batch_begin(struct store *st, const char *key, int how)
{
	return store_batch_begin_keys(st, &key, key != NULL, how);
}

/* See store_priv.h. */
int
store_batch_begin_keys(struct store *st, const char *const *keys, size_t nkeys,
                       int how)
{
	char locks[64 + 48 * STORE_LOCK_KEYS_MAX];
	const char *head[4];
	size_t n = 0;

	if (st->ops->batch_begin == NULL)
		return 0;
	st->batch_read = (how & STORE_READ) != 0;
	if (st->batch_read)
		return st->ops->batch_begin(st->db, NULL, 0) == GC_OK ? 1 : -1;
	pg_locks(locks, sizeof(locks), keys, nkeys);
	head[n++] = "BEGIN";
	if (how & STORE_LAZY && st->lazy_commits)
		head[n++] = SET_LAZY;
	if (how & STORE_ORDERED)
		head[n++] = SET_ORDERED;
	head[n++] = locks;
	if (st->ops->batch_begin(st->db, head, n) != GC_OK)
		return -1;
	st->stats.begun++;
	return 1;
}

/* See store_priv.h. */
enum gc_err
store_batch_commit(struct store *st, long *changes, size_t max, size_t *n)
{
	int read = st->batch_read;

	st->batch_read = 0;
	if (st->ops->batch_end(st->db, read ? NULL : "COMMIT", changes, max,
	                       n) != GC_OK) {
		store_rollback(st);
		return GC_ESTORE;
	}
	if (!read)
		st->stats.committed++;
	store_note_ok();
	return GC_OK;
}

/* See store_priv.h. */
enum gc_err
store_begin(struct store *st)
{
	return store_begin_on(st, NULL);
}

/* See store_priv.h. */
enum gc_err
store_commit(struct store *st)
{
	enum gc_err err = store_txn(st, STMT_COMMIT, "commit");

	if (err == GC_OK) {
		st->stats.committed++;
		store_note_ok();
	}
	return err;
}

/* See store_priv.h. */
void
store_rollback(struct store *st)
{
	if (!st->ops->in_txn(st->db))
		return;
	if (store_txn(st, STMT_ROLLBACK, "rollback") == GC_OK)
		st->stats.rolled_back++;
}

/* See store.h. */
void
store_stats(struct store *st, struct store_stats *out)
{
	*out = st->stats;
}
