/*
 * Unit tests for the store's cost: how many statements and transactions
 * each hot-path operation runs, and that statements are prepared once
 * per connection.  Table-driven: each row is one operation on a store in
 * a temporary directory and the counters it must add; a failing row
 * prints file:line, what we had and what we wanted; every row runs before
 * the test fails.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "app_config.h"
#include "store.h"

struct fixture {
	char dir[64];
	char path[96];
	struct store *st;
};

enum op {
	OP_INSERT,      /* id, two deliveries: emarsys pending, yotpo arg */
	OP_ATTEMPT,     /* id, destination arg */
	OP_FINISH,      /* id, destination arg: delivered, with an attempt */
	OP_FINISH_5,    /* the same with five attempts */
	OP_CLAIM,       /* whatever is due, in one batch */
	OP_OUTCOME,     /* id */
	OP_SETTLED_NEW, /* id, every delivery skipped */
};

/* One operation and what it must cost. */
struct cost_row {
	int line;
	enum op op;
	const char *id;
	const char *arg;
	enum gc_err err;
	struct store_stats want; /* prepares, runs, steps, begun, ... */
};

/* clang-format off */
#define ROW(op, id, arg, err, prep, runs, steps, begun, comm, rb) \
	{ __LINE__, (op), (id), (arg), (err), \
	  { (prep), (runs), (steps), (begun), (comm), (rb) } }

static const struct cost_row cost_rows[] = {
	/* BEGIN and COMMIT were prepared by the migration at open. */
	ROW(OP_INSERT, "e1", "pending",	GC_OK,		2, 3, 3, 1, 1, 0),
	/* The same work again prepares nothing. */
	ROW(OP_INSERT, "e2", "skipped",	GC_OK,		0, 3, 3, 1, 1, 0),
	ROW(OP_INSERT, "e1", "pending",	GC_EEXISTS,	1, 1, 1, 1, 0, 1),
	ROW(OP_ATTEMPT, "e1", "emarsys", GC_OK,		1, 1, 1, 0, 0, 0),
	ROW(OP_ATTEMPT, "e1", "yotpo",	GC_OK,		0, 1, 1, 0, 0, 0),
	/* The update, its attempt and the event's new status: one transaction. */
	ROW(OP_FINISH, "e1", "emarsys",	GC_OK,		2, 3, 3, 1, 1, 0),
	ROW(OP_FINISH, "e1", "yotpo",	GC_OK,		0, 3, 3, 1, 1, 0),
	/* Lease gone: the update changes nothing; the attempt still counts. */
	ROW(OP_FINISH, "e1", "yotpo",	GC_EEXISTS,	0, 3, 3, 1, 1, 0),
	/* Five attempts: four rows in one statement (prepared now), one. */
	ROW(OP_FINISH_5, "e1", "yotpo",	GC_EEXISTS,	1, 4, 4, 1, 1, 0),
	/* e2's one pending delivery: select (a row, then done), lease it. */
	ROW(OP_CLAIM, NULL, NULL,	GC_OK,		2, 2, 3, 1, 1, 0),
	ROW(OP_CLAIM, NULL, NULL,	GC_OK,		0, 1, 1, 1, 1, 0),
	/* One query: two delivery rows, each with the status, and done. */
	ROW(OP_OUTCOME, "e1", NULL,	GC_OK,		1, 1, 3, 0, 0, 0),
	ROW(OP_OUTCOME, "e1", NULL,	GC_OK,		0, 1, 3, 0, 0, 0),
	ROW(OP_SETTLED_NEW, "e3", NULL,	GC_OK,		0, 3, 3, 1, 1, 0),
};
/* clang-format on */

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct app_config cfg;
	char why[256] = "";

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/gcrelay-test-store.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/store.db", f->dir);
	memset(&cfg, 0, sizeof(cfg));
	cfg.store_path = f->path;
	cfg.durability = DURABILITY_NORMAL;
	cfg.busy_timeout_ms = 1000;
	if (store_open(&cfg, &f->st, why, sizeof(why)) != GC_OK) {
		print_error("store_open: %s\n", why);
		rmdir(f->dir);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char p[128];

	store_close(f->st);
	unlink(f->path);
	snprintf(p, sizeof(p), "%s-wal", f->path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", f->path);
	unlink(p);
	rmdir(f->dir);
	free(f);
	return 0;
}

/*
 * Run one row's operation.  Intake's lease has already expired, so its
 * deliveries are due; a claim's lease lives on.
 */
static enum gc_err
run_op(struct store *st, const struct cost_row *r)
{
	struct lease l = {.until_ms = 1, .owner = "1.1"};
	struct delivery_init d[2] = {
	    {"emarsys", "pending", NULL},
	    {"yotpo", r->arg, NULL},
	};
	struct attempt a = {r->id, r->arg, "upsert", "ok", 200,
	                    NULL,  NULL,   5,        0};
	const struct attempt *atts[] = {&a, &a, &a, &a, &a};
	struct delivery_result res = {
	    .event_id = r->id,
	    .destination = r->arg,
	    .owner = l.owner,
	    .status = "delivered",
	    .attempts = atts,
	    .nattempts = 1,
	};
	json_t *j = NULL;
	char *id = NULL;
	enum gc_err err = GC_EINVAL;
	int ok;

	switch (r->op) {
	case OP_SETTLED_NEW:
		d[0].status = d[1].status = "skipped";
		/* FALLTHROUGH */
	case OP_INSERT:
		err = store_event_insert(st, r->id, "acme", "order", "{}", d, 2,
		                         &l, 0);
		break;
	case OP_ATTEMPT:
		err = store_attempt_add(st, &a);
		break;
	case OP_FINISH_5:
		res.nattempts = 5;
		/* FALLTHROUGH */
	case OP_FINISH:
		err = store_deliveries_finish(st, &res, 1);
		if (err == GC_OK)
			err = res.err; /* the lease may have been lost */
		break;
	case OP_CLAIM:
		l.until_ms = store_now_ms() + 60000; /* not due twice */
		err = store_claim_batch(st, store_now_ms() + 1000, &l, 32, &j);
		break;
	case OP_OUTCOME:
		err = store_event_outcome(st, r->id, &j, &ok);
		break;
	}
	free(id);
	json_decref(j);
	return err;
}

/* have - before, field by field, against want; 1 when they match. */
static int
cost_matches(const struct store_stats *b, const struct store_stats *a,
             const struct store_stats *w)
{
	return a->prepares - b->prepares == w->prepares &&
	       a->runs - b->runs == w->runs &&
	       a->steps - b->steps == w->steps &&
	       a->begun - b->begun == w->begun &&
	       a->committed - b->committed == w->committed &&
	       a->rolled_back - b->rolled_back == w->rolled_back;
}

static void
test_costs(void **state)
{
	struct fixture *f = *state;
	struct store_stats b, a;
	const struct store_stats *w;
	int failed = 0;
	enum gc_err err;

	for (size_t i = 0; i < sizeof(cost_rows) / sizeof(cost_rows[0]); i++) {
		const struct cost_row *r = &cost_rows[i];

		store_stats(f->st, &b);
		err = run_op(f->st, r);
		store_stats(f->st, &a);
		w = &r->want;
		if (err == r->err && cost_matches(&b, &a, w))
			continue;
		print_error(
		    "%s:%d: have err %d, prepares %llu runs %llu "
		    "steps %llu txn %llu/%llu/%llu\n",
		    __FILE__, r->line, err,
		    (unsigned long long)(a.prepares - b.prepares),
		    (unsigned long long)(a.runs - b.runs),
		    (unsigned long long)(a.steps - b.steps),
		    (unsigned long long)(a.begun - b.begun),
		    (unsigned long long)(a.committed - b.committed),
		    (unsigned long long)(a.rolled_back - b.rolled_back));
		print_error(
		    "%s:%d: want err %d, prepares %llu runs %llu "
		    "steps %llu txn %llu/%llu/%llu\n",
		    __FILE__, r->line, r->err, (unsigned long long)w->prepares,
		    (unsigned long long)w->runs, (unsigned long long)w->steps,
		    (unsigned long long)w->begun,
		    (unsigned long long)w->committed,
		    (unsigned long long)w->rolled_back);
		failed++;
	}
	if (failed)
		fail_msg("%d row(s) failed", failed);
}

/* The status intake computes must be the one event_refresh would. */
static void
test_outcomes(void **state)
{
	struct fixture *f = *state;
	struct lease l = {.until_ms = 1, .owner = "1.1"};
	struct delivery_init d[2] = {
	    {"emarsys", "skipped", "no list"},
	    {"yotpo", "skipped", "no token"},
	};
	json_t *out;
	int ok = -1;

	assert_int_equal(
	    store_event_insert(f->st, "s1", "acme", "order", "{}", d, 2, &l, 0),
	    GC_OK);
	assert_int_equal(store_event_outcome(f->st, "s1", &out, &ok), GC_OK);
	assert_int_equal(ok, 1);
	assert_string_equal(json_string_value(json_object_get(out, "status")),
	                    "delivered");
	json_decref(out);
	d[1].status = "pending";
	assert_int_equal(
	    store_event_insert(f->st, "p1", "acme", "order", "{}", d, 2, &l, 0),
	    GC_OK);
	assert_int_equal(store_event_outcome(f->st, "p1", &out, &ok), GC_OK);
	assert_int_equal(ok, 0);
	assert_string_equal(json_string_value(json_object_get(out, "status")),
	                    "accepted");
	json_decref(out);
}

/*
 * Several events' results in one call (the dispatcher's runs that end
 * together): one transaction, each result its own lease check, each
 * event its own status.
 */
static void
test_finish_together(void **state)
{
	struct fixture *f = *state;
	struct lease l = {.until_ms = 1, .owner = "1.1"};
	struct delivery_init d[2] = {
	    {"emarsys", "pending", NULL},
	    {"yotpo", "pending", NULL},
	};
	struct attempt a = {"g1", "emarsys", "upsert", "ok", 200,
	                    NULL, NULL,      5,        0};
	const struct attempt *atts[] = {&a};
	struct delivery_result r[4] = {
	    {.event_id = "g1",
	     .destination = "emarsys",
	     .owner = "1.1",
	     .status = "delivered",
	     .reason = "",
	     .attempts = atts,
	     .nattempts = 1},
	    {.event_id = "g1",
	     .destination = "yotpo",
	     .owner = "1.1",
	     .status = "delivered",
	     .reason = "",
	     .attempts = atts,
	     .nattempts = 1},
	    {.event_id = "g2",
	     .destination = "emarsys",
	     .owner = "1.1",
	     .status = "failed",
	     .reason = "bad",
	     .attempts = atts,
	     .nattempts = 1},
	    /* another run's lease: changes nothing, its attempt counts */
	    {.event_id = "g3",
	     .destination = "yotpo",
	     .owner = "9.9",
	     .status = "delivered",
	     .reason = "",
	     .attempts = atts,
	     .nattempts = 1},
	};
	/* each event's status, and its emarsys and yotpo deliveries' */
	static const char *const want[3][3] = {
	    {"delivered", "delivered", "delivered"},
	    {"accepted", "failed", "pending"},
	    {"accepted", "pending", "pending"},
	};
	struct store_stats b, e;
	json_t *out;
	int ok;

	for (int i = 0; i < 3; i++) {
		char id[16];
		snprintf(id, sizeof(id), "g%d", i + 1);
		assert_int_equal(store_event_insert(f->st, id, "acme", "order",
		                                    "{}", d, 2, &l, 0),
		                 GC_OK);
	}
	store_stats(f->st, &b);
	assert_int_equal(store_deliveries_finish(f->st, r, 4), GC_OK);
	store_stats(f->st, &e);
	assert_int_equal(e.begun - b.begun, 1);
	assert_int_equal(e.committed - b.committed, 1);
	assert_int_equal(r[0].err, GC_OK);
	assert_int_equal(r[1].err, GC_OK);
	assert_int_equal(r[2].err, GC_OK);
	assert_int_equal(r[3].err, GC_EEXISTS);
	for (int i = 0; i < 3; i++) {
		char id[16];
		snprintf(id, sizeof(id), "g%d", i + 1);
		assert_int_equal(store_event_outcome(f->st, id, &out, &ok),
		                 GC_OK);
		assert_string_equal(
		    json_string_value(json_object_get(out, "status")),
		    want[i][0]);
		for (size_t k = 0; k < 2; k++)
			assert_string_equal(
			    json_string_value(json_object_get(
			        json_array_get(
			            json_object_get(out, "deliveries"), k),
			        "status")),
			    want[i][k + 1]);
		json_decref(out);
	}
}

/*
 * Intake answers a new event it does not deliver at once with
 * store_event_outcome_new: it must be what the store would give.
 */
static void
test_outcome_new(void **state)
{
	struct fixture *f = *state;
	struct lease none = {0};
	static const struct delivery_init cases[][2] = {
	    {{"emarsys", "pending", NULL}, {"yotpo", "skipped", "no token"}},
	    {{"emarsys", "skipped", "no list"}, {"yotpo", "skipped", "no"}},
	    {{"emarsys", "pending", NULL}, {"yotpo", "pending", NULL}},
	    /* out of order: the store sorts by destination */
	    {{"yotpo", "pending", NULL}, {"emarsys", "skipped", "x"}},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char id[16];
		json_t *stored, *built;
		int ok_stored = -1, ok_built = -1;
		char *a, *b;

		snprintf(id, sizeof(id), "n%zu", i);
		assert_int_equal(store_event_insert(f->st, id, "acme", "order",
		                                    "{}", cases[i], 2, &none,
		                                    0),
		                 GC_OK);
		assert_int_equal(
		    store_event_outcome(f->st, id, &stored, &ok_stored), GC_OK);
		built = store_event_outcome_new(id, cases[i], 2, &ok_built);
		assert_non_null(built);
		a = json_dumps(stored, JSON_SORT_KEYS);
		b = json_dumps(built, JSON_SORT_KEYS);
		if (strcmp(a, b) != 0)
			fail_msg("case %zu: store %s, built %s", i, a, b);
		assert_int_equal(ok_built, ok_stored);
		free(a);
		free(b);
		json_decref(stored);
		json_decref(built);
	}
}

/* One use of a signature and what the replay cache must answer. */
struct replay_row {
	int line;
	const char *sig;
	int64_t ts;
	time_t now;
	enum gc_err err;
};

/*
 * Tolerance 300 s: an entry lives until its signed timestamp is older
 * than now - 300 - 60 (the margin), whatever time it was seen.
 */
static const struct replay_row replay_rows[] = {
    {__LINE__, "v1,a", 1000, 1000, GC_OK},
    {__LINE__, "v1,a", 1000, 1000, GC_EEXISTS},
    {__LINE__, "v1,b", 1000, 1001, GC_OK},
    {__LINE__, "v1,a", 1000, 1300, GC_EEXISTS},
    {__LINE__, "v1,a", 1000, 1360, GC_EEXISTS},
    {__LINE__, "v1,a", 1000, 1361, GC_OK}, /* purged; stale anyway */
    {__LINE__, "v1,c", 1660, 1361, GC_OK}, /* signed 300 s ahead */
    {__LINE__, "v1,c", 1660, 1960, GC_EEXISTS},
    {__LINE__, "v1,c", 1660, 2020, GC_EEXISTS},
    {__LINE__, "v1,b", 1000, 2020, GC_OK},
};

/* Each signature is recorded once; expired entries are purged. */
static void
test_admin_replay(void **state)
{
	struct fixture *f = *state;
	const struct replay_row *r;
	int failed = 0;
	enum gc_err err;

	for (size_t i = 0; i < sizeof(replay_rows) / sizeof(replay_rows[0]);
	     i++) {
		r = &replay_rows[i];
		err = store_admin_replay(f->st, r->sig, r->ts, r->now, 300);
		if (err == r->err)
			continue;
		print_error("%s:%d: have %s, want %s\n", __FILE__, r->line,
		            gc_strerror(err), gc_strerror(r->err));
		failed++;
	}
	if (failed)
		fail_msg("%d row(s) failed", failed);
}

/*
 * The Yotpo throttle at 10 per second (a slot every 110 ms): slots are
 * handed out in order within the caller's horizon, refused beyond it, and
 * a slot left far ahead by a wall clock stepped back is not waited for.
 */
struct throttle_row {
	int line;
	int64_t now, horizon;
	int reserved;
	int64_t slot;
};

#define HOUR_MS (3600 * 1000LL)
/* clang-format off */
static const struct throttle_row throttle_rows[] = {
    /* line		now		horizon	reserved slot */
    {__LINE__,	1000000,		0,	1,	1000000},
    {__LINE__,	1000000,		0,	0,	1000110},
    {__LINE__,	1000000,		200,	1,	1000110},
    {__LINE__,	1000000,		200,	0,	1000220},
    {__LINE__,	1000500,		0,	1,	1000500},
    /* The wall clock stepped back two hours: now, not in two hours. */
    {__LINE__,	1000500 - 2 * HOUR_MS,	0,	1,	1000500 - 2 * HOUR_MS},
    {__LINE__,	1000500 - 2 * HOUR_MS,	0,	0,	1000610 - 2 * HOUR_MS},
};
/* clang-format on */

static void
test_throttle(void **state)
{
	struct fixture *f = *state;
	const struct throttle_row *r;
	int64_t slot;
	int failed = 0, reserved;
	enum gc_err err;

	for (size_t i = 0; i < sizeof(throttle_rows) / sizeof(throttle_rows[0]);
	     i++) {
		r = &throttle_rows[i];
		err = store_throttle_slot(f->st, "acme", 10, r->now, r->horizon,
		                          &slot, &reserved);
		if (err == GC_OK && reserved == r->reserved && slot == r->slot)
			continue;
		print_error("%s:%d: have %s reserved %d slot %lld, want "
		            "reserved %d slot %lld\n",
		            __FILE__, r->line, gc_strerror(err), reserved,
		            (long long)slot, r->reserved, (long long)r->slot);
		failed++;
	}
	if (failed)
		fail_msg("%d row(s) failed", failed);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_costs, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_outcomes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_finish_together, setup,
	                                    teardown),
	    cmocka_unit_test_setup_teardown(test_outcome_new, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_admin_replay, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_throttle, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
