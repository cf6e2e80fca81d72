/*
 * The store: one SQLite file (WAL) shared by every gcrelay process of a
 * host, or one PostgreSQL database shared by several hosts
 * (store.backend; app/store/sqlite.c, pgsql.c behind app/store/db.h).
 * This module owns all SQL; handlers and the engine call these
 * functions, which are the same on both backends.  Each process opens
 * its own connection after fork (store_open).
 *
 * Strings returned through out-parameters are owned by the caller (free());
 * they are NULL on failure.
 */
#ifndef GC_STORE_H
#define GC_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "app_config.h"
#include "gc_err.h"

struct store;

/*
 * Open the store cfg names: SQLite, creating the file at cfg->store_path
 * if needed (WAL, durability, busy timeout); or connect to PostgreSQL at
 * cfg->store_url.  Then apply pending migrations (one host at a time).
 * *out is owned (store_close).  GC_ESTORE with a reason in why on
 * failure, also when the schema is newer than this binary.
 */
enum gc_err store_open(const struct app_config *cfg, struct store **out,
                       char *why, size_t whysz);
void store_close(struct store *st);

/* Schema version after migrations. */
int store_schema_version(struct store *st);

/*
 * Dispatchers woken across hosts (PostgreSQL LISTEN/NOTIFY; on SQLite
 * these do nothing: -1, 0).  store_wake_listen: this connection hears
 * every host's store_wake_others from now on, again after a reconnect.
 * store_wake_fd: readable when one may have been heard (it changes on a
 * reconnect: ask again before each wait); -1 when none.
 * store_wake_drain: how many were heard (>0: look for due work),
 * consumed.  store_wake_others: after committing work that is due now,
 * wake every listening dispatcher (a failure is logged: the poll finds
 * the work).
 */
enum gc_err store_wake_listen(struct store *st);
int store_wake_fd(struct store *st);
int store_wake_drain(struct store *st);
void store_wake_others(struct store *st);

/*
 * Call once in the master before forking: the outcome of the last write
 * is then shared by every process (store_health).  Without it each
 * process sees only its own.
 */
enum gc_err store_shared_init(void);

/*
 * The one store health check (intake before and after recording, the
 * dispatcher before claiming, /healthz).  SQLite: the database file is
 * present, is the one this connection has open (device and inode), is
 * writable and open read-write; PostgreSQL: the connection is up (it is
 * re-established when it broke).  Both: the last write of any process
 * of this host succeeded, and the store answers a query.  When it fails
 * it tries to recover, at most once a second: reopen the file when the
 * connection is read-only or the file was replaced, probe with a small
 * write when the last write failed.  GC_ESTORE with why filled while the
 * store is unusable.  Never creates a database: one deleted under a
 * running gcrelay stays unavailable until the file is put back (or
 * gcrelay restarts).
 */
enum gc_err store_health(struct store *st, char *why, size_t whysz);
/*
 * store_health for a caller about to use the store (intake before it
 * records, the dispatcher before it claims): on PostgreSQL it does not
 * ask the server a query, as the caller's own statement fails if the
 * server is gone (the connection is still checked and re-established).
 */
enum gc_err store_usable(struct store *st, char *why, size_t whysz);

/*
 * Whether a write this process committed is still in the store, for
 * intake before it delivers or answers 2xx: on SQLite store_health (the
 * file it went to may have been replaced or removed since); on
 * PostgreSQL GC_OK (an acknowledged commit is durable on the server; a
 * connection lost afterwards does not undo it, and saying "not
 * recorded" then would be false).
 */
enum gc_err store_kept(struct store *st, char *why, size_t whysz);

/* Current time in milliseconds (wall clock) used for store timestamps. */
int64_t store_now_ms(void);

/* ---- brands ---- */

/* Insert or replace a brand document (secrets already sealed). *created
 * tells whether it was new. */
enum gc_err store_brand_put(struct store *st, const char *slug, const char *doc,
                            int *created);
/* The stored document; GC_ENOTFOUND when absent. */
enum gc_err store_brand_get(struct store *st, const char *slug, char **doc);
/*
 * store_brand_get for a delivery: on PostgreSQL a process keeps the
 * documents it read while its connection hears that none changed (every
 * put and delete tells every host), so an event costs no read; a change
 * reaches the next event on every host within the notification's way
 * there (milliseconds).  SQLite reads each time (in-process).
 */
enum gc_err store_brand_doc(struct store *st, const char *slug, char **doc);
/* GC_ENOTFOUND when absent. */
enum gc_err store_brand_delete(struct store *st, const char *slug);
/* All documents ordered by slug, as a JSON array of strings; new ref. */
enum gc_err store_brand_list(struct store *st, json_t **docs);

/* ---- admin replay cache ---- */

/*
 * Record that the admin signature sig, signed at ts (unix seconds), was
 * used; entries that the timestamp check (now +- tolerance_s) rejects
 * anyway are purged first.  GC_OK when sig is new, GC_EEXISTS when it
 * was already recorded by any process (nothing changes), GC_ESTORE.
 */
enum gc_err store_admin_replay(struct store *st, const char *sig, int64_t ts,
                               time_t now, long tolerance_s);

/* ---- events, deliveries, attempts (store_events.c) ---- */

/*
 * A lease: the right to work on a delivery, or a Yotpo award key, until
 * until_ms.  owner is unique per run ("pid.seq"): a run whose lease ran
 * out and was taken over cannot overwrite the newer run's result.
 */
struct lease {
	int64_t until_ms;
	char owner[40];
};

/* A delivery as created at intake. */
struct delivery_init {
	const char *destination; /* "emarsys", "yotpo" */
	const char *status;      /* "pending" or "skipped" */
	const char *reason;      /* why skipped, or NULL */
};

/*
 * Record an event and its deliveries in one transaction; pending
 * deliveries are leased to l, counting the run; with l->until_ms 0 they
 * are left unleased and due now, for the dispatcher.  GC_EEXISTS when the id is
 * already recorded (nothing changes).  wake: a new event also wakes the
 * other hosts' dispatchers, as store_wake_others (on PostgreSQL in the
 * insert's own round trip).
 */
enum gc_err store_event_insert(struct store *st, const char *id,
                               const char *brand, const char *kind,
                               const char *body, const struct delivery_init *d,
                               size_t n, const struct lease *l, int wake);

/*
 * The outcome document of an event: {"id","status","deliveries":[...]},
 * status "delivered" when every delivery is delivered or skipped, else
 * "accepted".  *final_ok tells which.  *out is a new reference.
 * GC_ENOTFOUND when unknown.
 */
enum gc_err store_event_outcome(struct store *st, const char *id, json_t **out,
                                int *final_ok);

/*
 * The outcome document store_event_outcome gives for an event just
 * recorded by store_event_insert with these n deliveries and no lease,
 * built without asking the store.  NULL when out of memory.
 */
json_t *store_event_outcome_new(const char *id, const struct delivery_init *d,
                                size_t n, int *final_ok);

/*
 * Stored brand and normalised body of an event (caller frees each), when
 * it was received, and the brand's document as store_brand_get gives it
 * (NULL when the brand is no longer configured), in one query.
 * GC_ENOTFOUND when unknown or the body was purged.
 */
enum gc_err store_event_body(struct store *st, const char *id, char **brand,
                             char **body, int64_t *received_ms,
                             char **brand_doc);

/* How many runs a delivery has had (for the retry schedule). */
enum gc_err store_delivery_attempts(struct store *st, const char *event_id,
                                    const char *dest, int *runs);

/* One HTTP call made for a delivery. */
struct attempt {
	const char *event_id;
	const char *destination;
	const char *step;
	const char *outcome;
	long http_status;
	const char *reply_code; /* may be NULL */
	const char *excerpt;    /* may be NULL */
	long latency_ms;
	int64_t at_ms; /* when it was made; 0: now */
};
/*
 * What one run of a delivery came to, for store_deliveries_finish:
 * status ("delivered", "skipped", "retrying", "failed", "dead") with
 * next_at_ms for "retrying"; or postpone: due again at next_at_ms as
 * "retrying" without counting the run.  The lease must still be owner's.
 */
struct delivery_result {
	const char *event_id;
	const char *destination;
	const char *owner;
	const char *status; /* ignored when postpone */
	const char *reason;
	const char *warning;
	int64_t next_at_ms;
	int postpone;
	const char *progress; /* how far it got ("": nowhere; NULL: keep) */
	const struct attempt *const *attempts; /* the calls this run made */
	size_t nattempts;
	enum gc_err err; /* out: GC_OK, or GC_EEXISTS when the lease was lost */
};

/*
 * Store the results of events' runs (each event's together), with their
 * attempts, and recompute each event's status: in one transaction, or
 * one per event where the backend sends an event's as one batch.  A
 * result whose lease was lost changes nothing (its err says GC_EEXISTS)
 * but its attempts are still recorded: they happened.  GC_ESTORE when
 * something was not stored: its results' err say GC_ESTORE.
 */
enum gc_err store_deliveries_finish(struct store *st, struct delivery_result *r,
                                    size_t n);

/* Record an attempt (strings are copied).  GC_ESTORE on failure. */
enum gc_err store_attempt_add(struct store *st, const struct attempt *a);

/*
 * The dispatcher's claim: lease the due deliveries (pending or retrying,
 * next_at passed, lease expired) of up to max_events events, earliest
 * first, counting a run for each, in one transaction.  Each event gets its
 * own owner (l->owner plus a suffix), all until l->until_ms.  *claimed is
 * an array of {"id","owner","destinations":[names],"progress":{name:
 * progress}} (new reference).  Where the backend reads them in the same
 * statement (PostgreSQL), each also has "stored": {"brand","received_ms",
 * "body","doc"}, as store_event_body gives them (body and doc null when
 * purged or gone).
 */
enum gc_err store_claim_batch(struct store *st, int64_t now_ms,
                              const struct lease *l, int max_events,
                              json_t **claimed);

/*
 * Operators' redelivery of one event: in one transaction, take every
 * delivery that is failed, dead, or waiting for a retry with no live
 * lease, make it "retrying" and lease it to l.  *taken is an array of
 * destination names (new reference).  GC_ENOTFOUND when there is no such
 * event.
 */
enum gc_err store_event_take(struct store *st, const char *event_id,
                             int64_t now_ms, const struct lease *l,
                             json_t **taken);

/*
 * Requeue failed/dead deliveries of a brand's events received within
 * [since_ms, until_ms), for the dispatcher.  *count = how many.
 */
enum gc_err store_brand_requeue(struct store *st, const char *brand,
                                int64_t since_ms, int64_t until_ms, int *count);

/* How long the oldest due delivery has been due (0 when none is). */
enum gc_err store_oldest_due(struct store *st, int64_t now_ms, int64_t *age_ms);

/* Deliveries waiting for a retry (pending or retrying). */
enum gc_err store_outbox_depth(struct store *st, long *n);

/* Events filter for listing. */
struct event_filter {
	const char *brand;  /* NULL: any */
	const char *status; /* NULL: any */
	int64_t since_ms;   /* 0: any */
	int limit;          /* 1..500 */
	const char *cursor; /* opaque, from the previous page; NULL: first */
};
/* {"events":[...], "next_cursor": "..."|null} (new reference). */
enum gc_err store_events_list(struct store *st, const struct event_filter *f,
                              json_t **out);
/* Event with its deliveries and attempts (new reference); GC_ENOTFOUND
 * when unknown. */
enum gc_err store_event_detail(struct store *st, const char *id, json_t **out);

/*
 * Remove the personal data of settled events received before before_ms,
 * from every table, in one transaction: the body, the response excerpts
 * of their attempts, the reasons and warnings of their deliveries and
 * the email of their Yotpo ledger rows.  Outcomes (statuses, codes,
 * times) stay.  *count = events whose body went now; 0 on failure.
 */
enum gc_err store_purge_bodies(struct store *st, int64_t before_ms, int *count);

/* Fold the WAL back into the database and truncate it (housekeeping;
 * nothing to do on PostgreSQL). */
enum gc_err store_checkpoint(struct store *st);

/* ---- Emarsys id and token caches (store_remote.c) ---- */

/* An Emarsys id wanted by kind ("field", "event") and name. */
struct em_id {
	const char *kind, *name;
	char *out; /* 32 bytes: filled when the id is cached */
};
/*
 * The cached remote ids of ids[] within scope (brand and client id), in
 * one query: each one's out filled when cached, else left as it was.
 */
enum gc_err store_em_ids_get(struct store *st, const char *scope,
                             struct em_id *ids, size_t n);
/* Cache an id (replacing any); GC_ESTORE on failure. */
enum gc_err store_em_id_put(struct store *st, const char *scope,
                            const char *kind, const char *name, const char *id);
/* Forget every cached id of a kind ("field", "event") in scope. */
enum gc_err store_em_id_forget(struct store *st, const char *scope,
                               const char *kind);

/* Cached sealed token for brand and client id (caller frees *sealed),
 * valid until expires_ms; GC_ENOTFOUND when none. */
enum gc_err store_em_token_get(struct store *st, const char *brand,
                               const char *client_id, char **sealed,
                               int64_t *expires_ms);
/*
 * store_em_token_get and store_em_ids_get together: the token's result,
 * and ids[] filled as store_em_ids_get fills them.  One round trip where
 * the backend sends statements in batches (PostgreSQL).
 */
enum gc_err store_em_cached_get(struct store *st, const char *brand,
                                const char *client_id, char **sealed,
                                int64_t *expires_ms, const char *scope,
                                struct em_id *ids, size_t n);
/* Cache a sealed token for brand (replacing any); GC_ESTORE on failure. */
enum gc_err store_em_token_put(struct store *st, const char *brand,
                               const char *client_id, const char *sealed,
                               int64_t expires_ms);
/* Drop the cached token of brand if it is still the given one. */
enum gc_err store_em_token_forget(struct store *st, const char *brand,
                                  const char *sealed);

/*
 * Take the lease to fetch the token of brand and client id for owner,
 * until until_ms, when nobody holds it at now_ms: GC_OK when taken,
 * GC_EEXISTS when another holds it (until *held_until_ms), GC_ESTORE.
 */
enum gc_err store_em_token_lease(struct store *st, const char *brand,
                                 const char *client_id, const char *owner,
                                 int64_t now_ms, int64_t until_ms,
                                 int64_t *held_until_ms);
/* Give back the token fetch lease of brand and client id if owner holds
 * it; GC_ESTORE on failure. */
enum gc_err store_em_token_unlease(struct store *st, const char *brand,
                                   const char *client_id, const char *owner);

/* ---- Yotpo award ledger and throttle (store_remote.c) ---- */

enum ledger_claim {
	LEDGER_CLAIMED,   /* new: we may send, holding the lease */
	LEDGER_DONE,      /* already awarded */
	LEDGER_BUSY,      /* another run holds it until lease_until */
	LEDGER_RECONCILE, /* outcome unknown; we hold the lease to check */
};

struct ledger_view {
	char event_id[260]; /* who claimed or awarded it */
	char email[256];    /* the customer the uncertain call was for */
	int64_t lease_until;
	int64_t sent_at; /* when the uncertain call was started */
	int misses;      /* history reads that did not find it yet */
};

/*
 * Claim the award key (brand, token, action) for event_id and email in
 * one transaction, leased to l; see enum ledger_claim.
 */
enum gc_err store_ledger_claim(struct store *st, const char *brand,
                               const char *token, const char *action,
                               const char *event_id, const char *email,
                               int64_t now_ms, const struct lease *l,
                               enum ledger_claim *res,
                               struct ledger_view *view);

/*
 * store_ledger_claim, and a slot of brand's Yotpo throttle as
 * store_throttle_slot gives it, in one round trip where the backend
 * batches (PostgreSQL): the slot is taken whatever the claim comes to.
 */
enum gc_err store_ledger_claim_paced(
    struct store *st, const char *brand, const char *token, const char *action,
    const char *event_id, const char *email, int64_t now_ms,
    const struct lease *l, enum ledger_claim *res, struct ledger_view *view,
    int max_rps, int64_t horizon_ms, int64_t *slot_ms, int *reserved);

/*
 * Record the outcome of a call for a claim owner holds: "done" or
 * "unknown", releasing the lease; sent_at_ms is when the call started.
 * GC_EEXISTS when owner no longer holds the key.
 */
enum gc_err store_ledger_set(struct store *st, const char *brand,
                             const char *token, const char *action,
                             const char *owner, const char *state,
                             int64_t sent_at_ms);

/* One state of store_ledger_set_many: store_ledger_set's arguments. */
struct ledger_set {
	const char *brand, *token, *action, *owner, *state;
	int64_t sent_at_ms;
	enum gc_err err; /* out: store_ledger_set's result */
};

/*
 * store_ledger_set of each of v[0..n), in one transaction (one round
 * trip on PostgreSQL) for up to 32 keys at a time.  GC_ESTORE when
 * some were not stored (their err say so).
 */
enum gc_err store_ledger_set_many(struct store *st, struct ledger_set *v,
                                  size_t n);

/*
 * Just before owner sends the award: mark the key "sending" for event_id
 * and email, started now (a run that later finds the lease expired
 * reconciles from this moment, against this customer).  GC_EEXISTS when
 * owner no longer holds the key: do not send.
 */
enum gc_err store_ledger_sending(struct store *st, const char *brand,
                                 const char *token, const char *action,
                                 const char *owner, const char *event_id,
                                 const char *email, int64_t now_ms);

/*
 * A history read owner made found no trace of the uncertain award:
 * count it; *misses is the count so far.  GC_EEXISTS when owner no
 * longer holds the key.
 */
enum gc_err store_ledger_miss(struct store *st, const char *brand,
                              const char *token, const char *action,
                              const char *owner, int64_t now_ms, int *misses);

/* Forget a claim owner holds that sent nothing (the key may be claimed
 * again).  GC_EEXISTS when owner no longer holds it. */
enum gc_err store_ledger_release(struct store *st, const char *brand,
                                 const char *token, const char *action,
                                 const char *owner);

/*
 * Reserve the next call slot for brand at most max_rps per second across
 * every process, when it falls within horizon_ms of now: *reserved = 1
 * and *slot_ms is when the call may go.  A slot further off is not taken
 * (*reserved = 0; *slot_ms says when to ask again), so callers that will
 * not wait for it do not push everyone else's slots back.
 */
enum gc_err store_throttle_slot(struct store *st, const char *brand,
                                int max_rps, int64_t now_ms, int64_t horizon_ms,
                                int64_t *slot_ms, int *reserved);
/*
 * The same for any key (an account, "emarsys:<client id>"), one call
 * every interval_ms: how the hosts sharing a PostgreSQL store pace an
 * account together.
 */
enum gc_err store_pace_slot(struct store *st, const char *key,
                            int64_t interval_ms, int64_t now_ms,
                            int64_t horizon_ms, int64_t *slot_ms,
                            int *reserved);

/* ---- account holds shared by hosts (store_remote.c) ---- */

/*
 * Whether other hosts may share this store (PostgreSQL).  A host's own
 * processes share holds in memory (delivery_limits.h); hosts share them
 * here.
 */
int store_shared_hosts(struct store *st);
/*
 * Every hold a 429 put on an account that lasts beyond now_ms: each(arg,
 * account, until_ms) per account.
 */
enum gc_err store_holds_ahead(struct store *st, int64_t now_ms,
                              void (*each)(void *arg, const char *account,
                                           int64_t until_ms),
                              void *arg);
/* Hold account until until_ms (a later hold wins). */
enum gc_err store_hold_put(struct store *st, const char *account,
                           int64_t until_ms);

/*
 * gcrelay store copy (store_copy.c): open the SQLite store from and the
 * PostgreSQL store to (both migrated), refuse unless to holds no brand
 * or event, and copy brands, events, deliveries, attempts, the Yotpo
 * ledger and the Emarsys caches in one transaction.  GC_ESTORE with why.
 */
enum gc_err store_copy(const struct app_config *from,
                       const struct app_config *to, char *why, size_t whysz);

/* ---- statement and transaction counts (store_sql.c) ---- */

/* Work done on one connection since store_open, for tests and metrics. */
struct store_stats {
	uint64_t prepares;    /* statements compiled: one per kind, once */
	uint64_t runs;        /* statements run, BEGIN and COMMIT aside */
	uint64_t steps;       /* their steps: rows + 1 */
	uint64_t begun;       /* transactions begun */
	uint64_t committed;   /* transactions committed */
	uint64_t rolled_back; /* transactions rolled back */
};

/* Copy the connection's counters into *out. */
void store_stats(struct store *st, struct store_stats *out);

#endif
