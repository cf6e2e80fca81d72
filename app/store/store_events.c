/*
 * The event ledger: events, their deliveries and every attempt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "jsonutil.h"
#include "store.h"
#include "store_priv.h"

/* ISO 8601 UTC with milliseconds. */
static json_t *
iso_ms(int64_t ms)
{
	char out[32], ts[24];
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, sizeof(out), "%s.%03dZ", ts, (int)(ms % 1000));
	return json_string(out);
}

/* Recompute an event's status from its deliveries. */
static int
event_refresh(struct store *st, const char *id)
{
	struct db_stmt *s = store_stmt(st, STMT_EVENT_REFRESH);

	if (s != NULL)
		store_bind_text(s, 1, id);
	return store_step(st, s, "event refresh");
}

/*
 * The status event_refresh would give an event with these deliveries, so
 * that intake need not run it.
 */
static const char *
event_status_of(const struct delivery_init *d, size_t n)
{
	const char *status = "delivered";

	for (size_t i = 0; i < n; i++) {
		if (strcmp(d[i].status, "pending") == 0 ||
		    strcmp(d[i].status, "retrying") == 0)
			return "pending";
		if (strcmp(d[i].status, "failed") == 0 ||
		    strcmp(d[i].status, "dead") == 0)
			status = "failed";
	}
	return status;
}

/*
 * Bind delivery d of a new event at k, k+1, ... (destination, status,
 * reason, attempts, next_at, lease_until, lease_owner).
 */
static void
delivery_bind(struct db_stmt *s, int k, const struct delivery_init *d,
              int64_t now, const struct lease *l)
{
	int pending = strcmp(d->status, "pending") == 0;
	int leased = pending && l->until_ms > 0; /* else the dispatcher's */

	store_bind_text(s, k, d->destination);
	store_bind_text(s, k + 1, d->status);
	store_bind_text(s, k + 2, d->reason);
	store_bind_int(s, k + 3, leased);
	store_bind_pos(s, k + 4, pending ? now : 0);
	store_bind_int(s, k + 5, leased ? l->until_ms : 0);
	store_bind_text(s, k + 6, leased ? l->owner : NULL);
}

/* Insert one delivery of a new event (inside its transaction). */
static int
delivery_insert(struct store *st, const char *id, const struct delivery_init *d,
                int64_t now, const struct lease *l)
{
	struct db_stmt *s = store_stmt(st, STMT_DELIVERY_INSERT);

	if (s == NULL)
		return 0;
	store_bind_text(s, 1, id);
	delivery_bind(s, 2, d, now, l);
	store_bind_int(s, 9, now);
	return store_step(st, s, "delivery insert");
}

/* Bind the event's own columns of an insert (?1..?6). */
static void
event_bind(struct db_stmt *s, const char *id, const char *brand,
           const char *kind, const char *body, int64_t now, const char *status)
{
	store_bind_text(s, 1, id);
	store_bind_text(s, 2, brand);
	store_bind_text(s, 3, kind);
	store_bind_text(s, 4, body);
	store_bind_int(s, 5, now);
	store_bind_text(s, 6, status);
}

/*
 * PostgreSQL: the event and its two deliveries in one statement, which
 * the id's unique key settles against the same id arriving elsewhere.
 */
static enum gc_err
event_insert_2(struct store *st, const char *id, const char *brand,
               const char *kind, const char *body,
               const struct delivery_init *d, int64_t now,
               const struct lease *l, int wake)
{
	struct db_stmt *s = store_stmt(st, wake ? STMT_EVENT_INSERT_2_WAKE
	                                        : STMT_EVENT_INSERT_2);

	if (s == NULL)
		return GC_ESTORE;
	event_bind(s, id, brand, kind, body, now, event_status_of(d, 2));
	delivery_bind(s, 7, &d[0], now, l);
	delivery_bind(s, 14, &d[1], now, l);
	if (!store_step(st, s, "event insert"))
		return GC_ESTORE;
	store_note_ok();
	return store_changes(st) == 0 ? GC_EEXISTS : GC_OK;
}

/* See store.h. */
enum gc_err
store_event_insert(struct store *st, const char *id, const char *brand,
                   const char *kind, const char *body,
                   const struct delivery_init *d, size_t n,
                   const struct lease *l, int wake)
{
	int64_t now = store_now_ms();
	struct db_stmt *s;

	if (st->ops->dialect == DB_PG && n == 2)
		return event_insert_2(st, id, brand, kind, body, d, now, l,
		                      wake);
	if (store_begin_on(st, id) != GC_OK)
		return GC_ESTORE;
	if ((s = store_stmt(st, STMT_EVENT_INSERT)) == NULL)
		goto fail;
	event_bind(s, id, brand, kind, body, now, event_status_of(d, n));
	if (!store_step(st, s, "event insert"))
		goto fail;
	if (store_changes(st) == 0) {
		store_rollback(st);
		return GC_EEXISTS;
	}
	for (size_t i = 0; i < n; i++)
		if (!delivery_insert(st, id, &d[i], now, l))
			goto fail;
	if (store_commit(st) != GC_OK)
		goto fail;
	if (wake)
		store_wake_others(st);
	return GC_OK;
fail:
	store_rollback(st);
	return GC_ESTORE;
}

/* One delivery row as JSON; detail adds attempts/next time. */
static json_t *
delivery_json(struct db_stmt *s, int detail)
{
	json_t *d = json_object();
	const char *reason = store_col(s, 2), *warning = store_col(s, 3);

	json_object_set_new(d, "destination", json_string(store_col(s, 0)));
	json_object_set_new(d, "status", json_string(store_col(s, 1)));
	if (reason != NULL)
		json_object_set_new(d, "reason", json_string(reason));
	if (warning != NULL)
		json_object_set_new(d, "warning", json_string(warning));
	if (detail) {
		json_object_set_new(d, "runs",
		                    json_integer((int)store_col_int(s, 4)));
		if (!store_col_null(s, 5) &&
		    !strcmp(store_col(s, 1), "retrying"))
			json_object_set_new(d, "next_attempt_at",
			                    iso_ms(store_col_int(s, 5)));
	}
	return d;
}

/* Deliveries of an event as a JSON array; NULL on store failure. */
static json_t *
deliveries_of(struct store *st, const char *id, int detail)
{
	struct db_stmt *s = store_stmt(st, STMT_DELIVERIES_OF);
	json_t *arr;
	enum db_rc rc;

	if (s == NULL)
		return NULL;
	arr = json_array();
	store_bind_text(s, 1, id);
	while ((rc = store_row(st, s)) == DB_ROW)
		json_array_append_new(arr, delivery_json(s, detail));
	if (!store_end(st, s, rc, "deliveries")) {
		json_decref(arr);
		return NULL;
	}
	return arr;
}

/* See store.h. */
enum gc_err
store_event_outcome(struct store *st, const char *id, json_t **out,
                    int *final_ok)
{
	struct db_stmt *s;
	json_t *dl = json_array();
	char status[16] = "";
	enum db_rc rc;

	/* The event's status and its deliveries in one query. */
	*out = NULL;
	if (dl == NULL || (s = store_stmt(st, STMT_EVENT_OUTCOME)) == NULL) {
		json_decref(dl);
		return dl == NULL ? GC_ENOMEM : GC_ESTORE;
	}
	store_bind_text(s, 1, id);
	while ((rc = store_row(st, s)) == DB_ROW) {
		snprintf(status, sizeof(status), "%s", store_col(s, 6));
		if (!store_col_null(s, 0))
			json_array_append_new(dl, delivery_json(s, 1));
	}
	if (!store_end(st, s, rc, "event outcome")) {
		json_decref(dl);
		return GC_ESTORE;
	}
	if (status[0] == '\0') {
		json_decref(dl);
		return GC_ENOTFOUND;
	}
	*final_ok = strcmp(status, "delivered") == 0;
	*out =
	    json_pack("{s:s, s:s, s:o}", "id", id, "status",
	              *final_ok ? "delivered" : "accepted", "deliveries", dl);
	return *out ? GC_OK : GC_ENOMEM;
}

static int
by_destination(const void *a, const void *b)
{
	const struct delivery_init *const *x = a, *const *y = b;

	return strcmp((*x)->destination, (*y)->destination);
}

/* See store.h. */
json_t *
store_event_outcome_new(const char *id, const struct delivery_init *d, size_t n,
                        int *final_ok)
{
	const struct delivery_init **by = calloc(n ? n : 1, sizeof(*by));
	json_t *dl = json_array(), *o;
	size_t i;

	for (i = 0; by != NULL && i < n; i++)
		by[i] = &d[i];
	if (by != NULL) /* as STMT_EVENT_OUTCOME sorts them */
		qsort(by, n, sizeof(*by), by_destination);
	for (i = 0; by != NULL && dl != NULL && i < n; i++) {
		/* Not run yet: no runs, no next attempt time. */
		o = json_pack("{s:s, s:s, s:i}", "destination",
		              by[i]->destination, "status", by[i]->status,
		              "runs", 0);
		if (o != NULL && by[i]->reason != NULL)
			json_object_set_new(o, "reason",
			                    json_string(by[i]->reason));
		if (json_array_append_new(dl, o) != 0)
			break;
	}
	free(by);
	if (dl == NULL || i < n) {
		json_decref(dl);
		return NULL;
	}
	*final_ok = strcmp(event_status_of(d, n), "delivered") == 0;
	return json_pack("{s:s, s:s, s:o}", "id", id, "status",
	                 *final_ok ? "delivered" : "accepted", "deliveries",
	                 dl);
}

/* See store.h. */
enum gc_err
store_event_body(struct store *st, const char *id, char **brand, char **body,
                 int64_t *received_ms, char **brand_doc)
{
	struct db_stmt *s;
	enum db_rc rc;
	int ok;

	*brand = *body = *brand_doc = NULL;
	*received_ms = 0;
	if ((s = store_stmt(st, STMT_EVENT_BODY)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, id);
	if ((rc = store_row(st, s)) == DB_ROW) {
		*brand = store_col_text(s, 0);
		*received_ms = store_col_int(s, 1);
		*body = store_col_text(s, 2);
		*brand_doc = store_col_text(s, 3);
	}
	ok = store_end(st, s, rc, "event body");
	if (!ok || rc == DB_DONE || *brand == NULL || *body == NULL) {
		free(*brand);
		free(*body);
		free(*brand_doc);
		*brand = *body = *brand_doc = NULL;
		return ok ? GC_ENOTFOUND : GC_ESTORE; /* unknown or purged */
	}
	return GC_OK;
}

/* Bind attempt a as row k (from 0) of an attempts insert. */
static void
attempt_bind(struct db_stmt *s, int k, const struct attempt *a)
{
	int p = k * 9;

	store_bind_text(s, p + 1, a->event_id);
	store_bind_text(s, p + 2, a->destination);
	store_bind_int(s, p + 3, a->at_ms > 0 ? a->at_ms : store_now_ms());
	store_bind_text(s, p + 4, a->step);
	store_bind_text(s, p + 5, a->outcome);
	store_bind_pos(s, p + 6, a->http_status);
	store_bind_text(s, p + 7, a->reply_code);
	store_bind_text(s, p + 8, a->excerpt);
	store_bind_int(s, p + 9, a->latency_ms);
}

/* Insert atts[0..n), in order, up to ATTEMPT_ROWS_MAX per statement. */
static enum gc_err
attempts_add(struct store *st, const struct attempt *const *atts, size_t n)
{
	struct db_stmt *s;
	size_t k;

	for (; n > 0; atts += k, n -= k) {
		k = n < ATTEMPT_ROWS_MAX ? n : ATTEMPT_ROWS_MAX;
		if ((s = store_stmt(st, STMT_ATTEMPT_ADD + (int)k - 1)) == NULL)
			return GC_ESTORE;
		for (size_t i = 0; i < k; i++)
			attempt_bind(s, (int)i, atts[i]);
		if (!store_step(st, s, "attempts add"))
			return GC_ESTORE;
	}
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_attempt_add(struct store *st, const struct attempt *a)
{
	return attempts_add(st, &a, 1);
}

/* One result's update; 1 done (r->err set), 0 on a store failure. */
static int
result_update(struct store *st, struct delivery_result *r, int64_t now)
{
	struct db_stmt *s;
	int k = 0;

	if (r->postpone) {
		if ((s = store_stmt(st, STMT_RESULT_POSTPONE)) == NULL)
			return 0;
		store_bind_text(s, 1, r->reason);
		store_bind_int(s, 2, r->next_at_ms);
		k = 3;
	} else {
		if ((s = store_stmt(st, STMT_RESULT_FINISH)) == NULL)
			return 0;
		store_bind_text(s, 1, r->status);
		store_bind_text(s, 2, r->reason);
		store_bind_text(s, 3, r->warning);
		store_bind_pos(s, 4, r->next_at_ms);
		k = 5;
	}
	store_bind_int(s, k, now);
	store_bind_text(s, k + 1, r->event_id);
	store_bind_text(s, k + 2, r->destination);
	store_bind_text(s, k + 3, r->owner);
	store_bind_text(s, k + 4, r->progress);
	if (!store_step(st, s, "delivery result"))
		return 0;
	r->err = store_changes(st) > 0 ? GC_OK : GC_EEXISTS;
	return 1;
}

/* The statements a finish may run, prepared before a batch sends them. */
static int
finish_prepared(struct store *st)
{
	static const enum stmt ids[] = {
	    STMT_RESULT_FINISH, STMT_RESULT_POSTPONE, STMT_ATTEMPT_ADD,
	    STMT_ATTEMPT_ADD_2, STMT_ATTEMPT_ADD_3,   STMT_ATTEMPT_ADD_4,
	    STMT_EVENT_REFRESH,
	};
	struct db_stmt *s;

	for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
		if ((s = store_stmt(st, ids[i])) == NULL)
			return 0;
		store_stmt_done(s);
	}
	return 1;
}

/* Messages a batch finishing r[0..n) sends: head, results, attempt
 * rows, one refresh per event, COMMIT, and prepares. */
static size_t
finish_msgs(const struct delivery_result *r, size_t n)
{
	size_t natts = 0;

	for (size_t i = 0; i < n; i++)
		natts += r[i].nattempts;
	return 3 + n + (natts + ATTEMPT_ROWS_MAX - 1) / ATTEMPT_ROWS_MAX + n +
	       1 + 7;
}

/*
 * Begin the finish's transaction, under the keys of its events: as one
 * batch (one round trip on PostgreSQL) when the backend has them and it
 * fits, else statement by statement.  Returns 1 batched, 0 not, -1 on
 * failure.
 */
static int
finish_begin(struct store *st, const struct delivery_result *r, size_t n,
             const char *const *keys, size_t nkeys)
{
	int b = 0;

	if (st->ops->batch_begin != NULL && finish_msgs(r, n) <= DB_BATCH_MAX &&
	    nkeys <= STORE_LOCK_KEYS_MAX && finish_prepared(st))
		b = store_batch_begin_keys(st, keys, nkeys, STORE_LAZY);
	if (b == 0 &&
	    store_begin_lazy(st, nkeys == 1 ? keys[0] : NULL) != GC_OK)
		return -1;
	return b;
}

/* store_deliveries_finish in one transaction. */
static enum gc_err
finish_events(struct store *st, struct delivery_result *r, size_t n)
{
	int64_t now = store_now_ms();
	const char *keys[STORE_LOCK_KEYS_MAX];
	const struct attempt **atts = NULL;
	size_t natts = 0, nkeys = 0, got = 0;
	long changes[DB_BATCH_MAX];
	int batched;

	/* Each event's key (results come grouped by event). */
	for (size_t i = 0; i < n; i++) {
		if ((i == 0 || strcmp(r[i].event_id, r[i - 1].event_id) != 0) &&
		    nkeys++ < STORE_LOCK_KEYS_MAX)
			keys[nkeys - 1] = r[i].event_id;
		natts += r[i].nattempts;
	}
	/* Every result's attempts, in order, inserted a few rows at once. */
	if (natts > 0 && (atts = calloc(natts, sizeof(*atts))) == NULL)
		return GC_ENOMEM;
	natts = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < r[i].nattempts; k++)
			atts[natts++] = r[i].attempts[k];
	if ((batched = finish_begin(st, r, n, keys, nkeys)) < 0) {
		free(atts);
		return GC_ESTORE;
	}
	for (size_t i = 0; i < n; i++)
		if (!result_update(st, &r[i], now))
			goto fail;
	if (attempts_add(st, atts, natts) != GC_OK)
		goto fail;
	/* One status refresh per event (results come grouped). */
	for (size_t i = 0; i < n; i++)
		if ((i + 1 == n ||
		     strcmp(r[i + 1].event_id, r[i].event_id) != 0) &&
		    !event_refresh(st, r[i].event_id))
			goto fail;
	if (batched ? store_batch_commit(st, changes, DB_BATCH_MAX, &got)
	            : store_commit(st))
		goto fail;
	/* A batch's results: whether each update found its lease. */
	for (size_t i = 0; batched && i < n; i++)
		r[i].err = i < got && changes[i] > 0 ? GC_OK : GC_EEXISTS;
	free(atts);
	return GC_OK;
fail:
	store_rollback(st);
	free(atts);
	return GC_ESTORE;
}

/* The index after the results of r[k]'s event (they come grouped). */
static size_t
event_end(const struct delivery_result *r, size_t n, size_t k)
{
	size_t e = k + 1;

	while (e < n && strcmp(r[e].event_id, r[k].event_id) == 0)
		e++;
	return e;
}

/* See store.h. */
enum gc_err
store_deliveries_finish(struct store *st, struct delivery_result *r, size_t n)
{
	int batches = st->ops->batch_begin != NULL;
	enum gc_err err = GC_OK;
	size_t i, k, e, events;

	/*
	 * All at once; or, where the backend sends a finish as one batch
	 * (one round trip), as many whole events as a batch holds at a time.
	 */
	for (i = 0; i < n; i = k) {
		k = event_end(r, n, i);
		for (events = 1; k < n; events++, k = e) {
			e = event_end(r, n, k);
			if (batches &&
			    (events == STORE_LOCK_KEYS_MAX ||
			     finish_msgs(r + i, e - i) > DB_BATCH_MAX))
				break;
		}
		if (finish_events(st, r + i, k - i) == GC_OK)
			continue;
		err = GC_ESTORE;
		for (size_t j = i; j < k; j++)
			r[j].err = GC_ESTORE;
	}
	return err;
}

/* See store.h. */
enum gc_err
store_delivery_attempts(struct store *st, const char *event_id,
                        const char *dest, int *runs)
{
	struct db_stmt *s;
	enum db_rc rc;

	*runs = 0;
	if ((s = store_stmt(st, STMT_DELIVERY_RUNS)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, event_id);
	store_bind_text(s, 2, dest);
	if ((rc = store_row(st, s)) == DB_ROW)
		*runs = (int)store_col_int(s, 0);
	if (!store_end(st, s, rc, "delivery runs"))
		return GC_ESTORE;
	return rc == DB_ROW ? GC_OK : GC_ENOTFOUND;
}

/*
 * Step s to its end, collecting text column col of each row into *out (a
 * new array) and, when first is not NULL, a copy of the first row's
 * column 0 into *first (caller frees).  Returns 1, or 0 (logged, *out
 * NULL).
 */
static int
store_collect(struct store *st, struct db_stmt *s, int col, json_t **out,
              char **first, const char *what)
{
	json_t *arr = json_array();
	enum db_rc rc;

	while ((rc = store_row(st, s)) == DB_ROW) {
		if (first != NULL && *first == NULL)
			*first = store_col_text(s, 0);
		json_array_append_new(arr, json_string(store_col(s, col)));
	}
	if (!store_end(st, s, rc, what)) {
		json_decref(arr);
		arr = NULL;
	}
	*out = arr;
	return arr != NULL;
}

/* Whether event id exists: 1 yes, 0 no, -1 store failure (logged). */
static int
event_exists(struct store *st, const char *id)
{
	struct db_stmt *s;
	enum db_rc rc;

	if ((s = store_stmt(st, STMT_EVENT_EXISTS)) == NULL)
		return -1;
	store_bind_text(s, 1, id);
	rc = store_row(st, s);
	if (!store_end(st, s, rc, "event exists"))
		return -1;
	return rc == DB_ROW;
}

/* See store.h. */
enum gc_err
store_event_take(struct store *st, const char *event_id, int64_t now_ms,
                 const struct lease *l, json_t **taken)
{
	struct db_stmt *s;
	json_t *arr = NULL;
	int exists;

	*taken = NULL;
	if (store_begin_on(st, event_id) != GC_OK)
		return GC_ESTORE;
	if ((exists = event_exists(st, event_id)) < 0)
		goto fail;
	if (exists == 0) {
		store_rollback(st);
		return GC_ENOTFOUND;
	}
	if ((s = store_stmt(st, STMT_EVENT_TAKE)) == NULL)
		goto fail;
	store_bind_int(s, 1, now_ms);
	store_bind_int(s, 2, l->until_ms);
	store_bind_text(s, 3, event_id);
	store_bind_text(s, 4, l->owner);
	if (!store_collect(st, s, 0, &arr, NULL, "event take") ||
	    !event_refresh(st, event_id) || store_commit(st) != GC_OK)
		goto fail;
	*taken = arr;
	return GC_OK;
fail:
	store_rollback(st);
	json_decref(arr);
	return GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_brand_requeue(struct store *st, const char *brand, int64_t since_ms,
                    int64_t until_ms, int *count)
{
	struct db_stmt *s;
	json_t *ids = NULL, *v;
	size_t i;

	*count = 0;
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	if ((s = store_stmt(st, STMT_BRAND_REQUEUE)) == NULL)
		goto fail;
	store_bind_int(s, 1, store_now_ms());
	store_bind_text(s, 2, brand);
	store_bind_int(s, 3, since_ms);
	store_bind_int(s, 4, until_ms);
	if (!store_collect(st, s, 0, &ids, NULL, "brand requeue"))
		goto fail;
	for (i = 0; i < json_array_size(ids); i++) {
		v = json_array_get(ids, i);
		if (!event_refresh(st, json_string_value(v)))
			goto fail;
	}
	if (store_commit(st) != GC_OK)
		goto fail;
	*count = (int)json_array_size(ids);
	json_decref(ids);
	return GC_OK;
fail:
	store_rollback(st);
	json_decref(ids);
	return GC_ESTORE;
}

/* See store.h. */
enum gc_err
store_outbox_depth(struct store *st, long *n)
{
	struct db_stmt *s;
	enum db_rc rc;

	*n = 0;
	if ((s = store_stmt(st, STMT_OUTBOX_DEPTH)) == NULL)
		return GC_ESTORE;
	if ((rc = store_row(st, s)) == DB_ROW)
		*n = (long)store_col_int(s, 0);
	return store_end(st, s, rc, "outbox depth") ? GC_OK : GC_ESTORE;
}

static json_t *
event_row_json(struct store *st, struct db_stmt *s)
{
	const char *id = store_col(s, 0);
	json_t *e = json_object();

	json_object_set_new(e, "id", json_string(id));
	json_object_set_new(e, "brand", json_string(store_col(s, 1)));
	json_object_set_new(e, "kind", json_string(store_col(s, 2)));
	json_object_set_new(e, "status", json_string(store_col(s, 3)));
	json_object_set_new(e, "received_at", iso_ms(store_col_int(s, 4)));
	json_object_set_new(e, "deliveries", deliveries_of(st, id, 0));
	return e;
}

/* See store.h. */
enum gc_err
store_events_list(struct store *st, const struct event_filter *f, json_t **out)
{
	struct db_stmt *s;
	json_t *arr;
	int64_t last = 0;
	int rc, n = 0;
	char cursor[32];

	*out = NULL;
	if ((s = store_stmt(st, STMT_EVENTS_LIST)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, f->brand);
	store_bind_text(s, 2, f->status);
	store_bind_int(s, 3, f->since_ms);
	if (f->cursor != NULL)
		store_bind_int(s, 4, strtoll(f->cursor, NULL, 10));
	else
		store_bind_null(s, 4);
	store_bind_int(s, 5, f->limit);
	arr = json_array();
	while ((rc = store_row(st, s)) == DB_ROW) {
		json_array_append_new(arr, event_row_json(st, s));
		last = store_col_int(s, 5);
		n++;
	}
	if (!store_end(st, s, rc, "events list")) {
		json_decref(arr);
		return GC_ESTORE;
	}
	snprintf(cursor, sizeof(cursor), "%lld", (long long)last);
	*out = json_pack("{s:o, s:o}", "events", arr, "next_cursor",
	                 n == f->limit ? json_string(cursor) : json_null());
	return GC_OK;
}

/* One attempt row as JSON. */
static json_t *
attempt_json(struct db_stmt *s)
{
	json_t *a = json_object();

	json_object_set_new(a, "destination", json_string(store_col(s, 0)));
	json_object_set_new(a, "at", iso_ms(store_col_int(s, 1)));
	json_object_set_new(a, "step", json_string(store_col(s, 2)));
	json_object_set_new(a, "outcome", json_string(store_col(s, 3)));
	if (!store_col_null(s, 4))
		json_object_set_new(a, "http_status",
		                    json_integer((int)store_col_int(s, 4)));
	if (!store_col_null(s, 5))
		json_object_set_new(a, "reply_code",
		                    json_string(store_col(s, 5)));
	if (!store_col_null(s, 6))
		json_object_set_new(a, "excerpt", json_string(store_col(s, 6)));
	json_object_set_new(a, "latency_ms", json_integer(store_col_int(s, 7)));
	return a;
}

static json_t *
attempts_of(struct store *st, const char *id)
{
	struct db_stmt *s = store_stmt(st, STMT_ATTEMPTS_OF);
	json_t *arr = json_array();
	enum db_rc rc;

	if (s == NULL)
		return arr;
	store_bind_text(s, 1, id);
	while ((rc = store_row(st, s)) == DB_ROW)
		json_array_append_new(arr, attempt_json(s));
	store_end(st, s, rc, "attempts");
	return arr;
}

/* See store.h. */
enum gc_err
store_event_detail(struct store *st, const char *id, json_t **out)
{
	struct db_stmt *s;
	json_t *e = NULL, *body;
	enum db_rc rc;

	*out = NULL;
	if ((s = store_stmt(st, STMT_EVENT_DETAIL)) == NULL)
		return GC_ESTORE;
	store_bind_text(s, 1, id);
	if ((rc = store_row(st, s)) == DB_ROW) {
		e = event_row_json(st, s);
		json_object_set_new(e, "deliveries", deliveries_of(st, id, 1));
		body = store_col_null(s, 5)
		           ? json_null()
		           : json_loads(store_col(s, 5), 0, NULL);
		json_object_set_new(e, "event", body ? body : json_null());
		json_object_set_new(e, "attempts", attempts_of(st, id));
	}
	if (!store_end(st, s, rc, "event detail")) {
		json_decref(e);
		return GC_ESTORE;
	}
	if (rc == DB_DONE)
		return GC_ENOTFOUND;
	*out = e;
	return GC_OK;
}

/* See store.h. */
enum gc_err
store_purge_bodies(struct store *st, int64_t before_ms, int *count)
{
	/* The bodies last: their count is the one reported. */
	static const enum stmt purge[] = {STMT_PURGE_EXCERPTS,
	                                  STMT_PURGE_REASONS, STMT_PURGE_LEDGER,
	                                  STMT_PURGE_BODIES};
	struct db_stmt *s;

	*count = 0;
	if (store_begin(st) != GC_OK)
		return GC_ESTORE;
	for (size_t i = 0; i < sizeof(purge) / sizeof(purge[0]); i++) {
		if ((s = store_stmt(st, purge[i])) != NULL)
			store_bind_int(s, 1, before_ms);
		if (!store_step(st, s, "purge"))
			goto fail;
	}
	*count = store_changes(st);
	if (store_commit(st) != GC_OK)
		goto fail;
	return GC_OK;
fail:
	store_rollback(st);
	*count = 0;
	return GC_ESTORE;
}
