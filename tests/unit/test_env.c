/*
 * The store-backed destination env (app/delivery/env.h): two envs over
 * one store stand for two processes.  The token is stored sealed and
 * read back in clear; what one process puts or forgets the other sees
 * at its next read, its locally opened token included.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../app/delivery/env.h"
#include "mono.h"

#define SCOPE "acme:cid"

struct fixture {
	char dir[64], path[128];
	struct app_config cfg;
	struct store *st;
	struct dest_env *a, *b; /* two processes */
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char why[256] = "";

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/gcrelay-test-env.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	snprintf(f->path, sizeof(f->path), "%s/store.db", f->dir);
	f->cfg.store_path = f->path;
	f->cfg.durability = DURABILITY_NORMAL;
	f->cfg.busy_timeout_ms = 1000;
	memset(f->cfg.secrets_key, 0x5a, sizeof(f->cfg.secrets_key));
	if (store_open(&f->cfg, &f->st, why, sizeof(why)) != GC_OK) {
		print_error("store_open: %s\n", why);
		rmdir(f->dir);
		free(f);
		return -1;
	}
	f->a = dest_env_alloc(&f->cfg, f->st);
	f->b = dest_env_alloc(&f->cfg, f->st);
	*state = f;
	return f->a != NULL && f->b != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	char p[160];

	dest_env_free(f->a);
	dest_env_free(f->b);
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

/* e's token for acme: GC_OK with it in out, or the error. */
static enum gc_err
tok(const struct dest_env *e, char out[64])
{
	int64_t exp;

	out[0] = '\0';
	return e->token_get(e->ctx, "acme", "cid", out, 64, &exp);
}

static void
test_token(void **state)
{
	struct fixture *f = *state;
	struct dest_env *a = f->a, *b = f->b;
	int64_t now = a->now_ms(a->ctx), exp;
	char out[64], *sealed;

	assert_int_equal(tok(a, out), GC_ENOTFOUND);
	assert_int_equal(
	    a->token_put(a->ctx, "acme", "cid", "TKN-1", now + 3600000), GC_OK);
	/* Stored sealed; the other process opens it. */
	assert_int_equal(
	    store_em_token_get(f->st, "acme", "cid", &sealed, &exp), GC_OK);
	assert_null(strstr(sealed, "TKN-1"));
	free(sealed);
	assert_int_equal(exp, now + 3600000);
	assert_int_equal(tok(b, out), GC_OK);
	assert_string_equal(out, "TKN-1");
	/* A short buffer is no token. */
	assert_int_equal(a->token_get(a->ctx, "acme", "cid", out, 5, &exp),
	                 GC_ENOTFOUND);
	/* Another client id is another token. */
	assert_int_equal(a->token_get(a->ctx, "acme", "cid2", out, 64, &exp),
	                 GC_ENOTFOUND);

	/* a forgets: gone for both. */
	assert_int_equal(a->token_forget(a->ctx, "acme", "cid", "TKN-1"),
	                 GC_OK);
	assert_int_equal(tok(a, out), GC_ENOTFOUND);
	assert_int_equal(tok(b, out), GC_ENOTFOUND);
	assert_int_equal(b->token_forget(b->ctx, "acme", "cid", "TKN-1"),
	                 GC_OK);

	/* Forgetting a token that is no longer the cached one keeps it. */
	assert_int_equal(
	    a->token_put(a->ctx, "acme", "cid", "TKN-2", now + 3600000), GC_OK);
	assert_int_equal(b->token_forget(b->ctx, "acme", "cid", "TKN-1"),
	                 GC_OK);
	assert_int_equal(tok(b, out), GC_OK);
	assert_string_equal(out, "TKN-2");

	/* b's refresh replaces the token a opened before. */
	assert_int_equal(
	    a->token_put(a->ctx, "acme", "cid", "TKN-3", now + 60000), GC_OK);
	assert_int_equal(
	    b->token_put(b->ctx, "acme", "cid", "TKN-4", now + 3600000), GC_OK);
	assert_int_equal(tok(a, out), GC_OK);
	assert_string_equal(out, "TKN-4");
}

/* One token fetch lease per brand and client id across processes. */
static void
test_token_lease(void **state)
{
	struct fixture *f = *state;
	struct dest_env *a = f->a, *b = f->b;
	int64_t now = a->now_ms(a->ctx), held;

	assert_int_equal(
	    a->token_lease(a->ctx, "acme", "cid", "A", now, now + 5000, &held),
	    GC_OK);
	/* b waits for a; another client id is another lease. */
	assert_int_equal(
	    b->token_lease(b->ctx, "acme", "cid", "B", now, now + 5000, &held),
	    GC_EEXISTS);
	assert_int_equal(held, now + 5000);
	assert_int_equal(
	    b->token_lease(b->ctx, "acme", "cid2", "B", now, now + 5000, &held),
	    GC_OK);
	/* Only the holder gives it back. */
	assert_int_equal(b->token_unlease(b->ctx, "acme", "cid", "B"), GC_OK);
	assert_int_equal(
	    b->token_lease(b->ctx, "acme", "cid", "B", now, now + 5000, &held),
	    GC_EEXISTS);
	assert_int_equal(a->token_unlease(a->ctx, "acme", "cid", "A"), GC_OK);
	assert_int_equal(
	    b->token_lease(b->ctx, "acme", "cid", "B", now, now + 5000, &held),
	    GC_OK);
	/* A holder that never gives it back loses it when it expires. */
	assert_int_equal(a->token_lease(a->ctx, "acme", "cid", "A", now + 5000,
	                                now + 10000, &held),
	                 GC_EEXISTS);
	assert_int_equal(a->token_lease(a->ctx, "acme", "cid", "A", now + 5001,
	                                now + 10000, &held),
	                 GC_OK);
}

/*
 * One id through env e's ids_get, or the store's when e is NULL: GC_OK
 * when cached, else GC_ENOTFOUND.
 */
static enum gc_err
id_get(struct dest_env *e, struct store *st, const char *scope,
       const char *kind, const char *name, char out[32])
{
	struct em_id id = {kind, name, out};
	enum gc_err err;

	out[0] = '\0';
	err = e != NULL ? e->ids_get(e->ctx, scope, &id, 1)
	                : store_em_ids_get(st, scope, &id, 1);
	if (err != GC_OK)
		return err;
	return out[0] != '\0' ? GC_OK : GC_ENOTFOUND;
}

static void
test_ids(void **state)
{
	struct fixture *f = *state;
	struct dest_env *a = f->a, *b = f->b;
	char out[32];

	assert_int_equal(id_get(a, NULL, SCOPE, "field", "f1", out),
	                 GC_ENOTFOUND);
	assert_int_equal(a->id_put(a->ctx, SCOPE, "field", "f1", "101"), GC_OK);
	assert_int_equal(a->id_put(a->ctx, SCOPE, "event", "e1", "4001"),
	                 GC_OK);
	assert_int_equal(id_get(b, NULL, SCOPE, "field", "f1", out), GC_OK);
	assert_string_equal(out, "101");
	/* A put replaces, here and in the store. */
	assert_int_equal(a->id_put(a->ctx, SCOPE, "field", "f1", "102"), GC_OK);
	assert_int_equal(id_get(a, NULL, SCOPE, "field", "f1", out), GC_OK);
	assert_string_equal(out, "102");
	assert_int_equal(id_get(NULL, f->st, SCOPE, "field", "f1", out), GC_OK);
	assert_string_equal(out, "102");

	/* a forgets the fields: gone for both; events stay. */
	assert_int_equal(a->id_forget(a->ctx, SCOPE, "field"), GC_OK);
	assert_int_equal(id_get(a, NULL, SCOPE, "field", "f1", out),
	                 GC_ENOTFOUND);
	assert_int_equal(id_get(NULL, f->st, SCOPE, "field", "f1", out),
	                 GC_ENOTFOUND);
	assert_int_equal(id_get(a, NULL, SCOPE, "event", "e1", out), GC_OK);
	assert_string_equal(out, "4001");
	assert_int_equal(id_get(b, NULL, SCOPE, "field", "f1", out),
	                 GC_ENOTFOUND);
	/* Several in one look-up: those cached filled, the rest left. */
	{
		char f1[32] = "", e1[32] = "", e2[32] = "keep";
		struct em_id ids[] = {{"field", "f1", f1},
		                      {"event", "e1", e1},
		                      {"event", "e2", e2}};
		assert_int_equal(a->id_put(a->ctx, SCOPE, "field", "f1", "103"),
		                 GC_OK);
		assert_int_equal(b->ids_get(b->ctx, SCOPE, ids, 3), GC_OK);
		assert_string_equal(f1, "103");
		assert_string_equal(e1, "4001");
		assert_string_equal(e2, "keep");
	}
	/* Another scope is another account. */
	assert_int_equal(id_get(a, NULL, "other:cid", "event", "e1", out),
	                 GC_ENOTFOUND);
}

/* e's throttle slot for brand at 1 per second; *reserved as it says. */
static int64_t
slot(const struct dest_env *e, const char *brand, int64_t now, int64_t horizon,
     int *reserved)
{
	int64_t at = -1;

	assert_int_equal(
	    e->throttle_slot(e->ctx, brand, 1, now, horizon, &at, reserved),
	    GC_OK);
	return at;
}

/*
 * The Yotpo throttle on one host: the processes share it (here, two envs
 * over one limits table), slots 1.1 s apart (10% under max_rps), on the
 * caller's clock; nothing is written to the store for it.  A slot is
 * given relative to now, so the time the test itself takes (valgrind)
 * is allowed for: up to e ms early.
 */
static void
test_throttle(void **state)
{
	struct fixture *f = *state;
	int64_t now = 1700000000000, t0 = mono_ms(), at, stored, e;
	int reserved = -1, in_store = -1;

	assert_int_equal(slot(f->a, "acme", now, 5000, &reserved), now);
	assert_int_equal(reserved, 1);
	/* The other process gets the next slot. */
	at = slot(f->b, "acme", now, 5000, &reserved);
	e = mono_ms() - t0;
	assert_int_equal(reserved, 1);
	assert_in_range(at, now + 1100 - e, now + 1100);
	/* The next is beyond a 1.5 s horizon: not reserved, said when. */
	at = slot(f->a, "acme", now, 1500, &reserved);
	e = mono_ms() - t0;
	assert_int_equal(reserved, 0);
	assert_in_range(at, now + 2200 - e, now + 2200);
	/* It was not taken: asked again with room, it is the same one. */
	at = slot(f->a, "acme", now, 5000, &reserved);
	e = mono_ms() - t0;
	assert_int_equal(reserved, 1);
	assert_in_range(at, now + 2200 - e, now + 2200);
	/* Another brand is paced on its own. */
	assert_int_equal(slot(f->b, "beta", now, 5000, &reserved), now);
	assert_int_equal(reserved, 1);
	/* The store's throttle (several hosts) holds nothing of these. */
	assert_int_equal(store_throttle_slot(f->st, "acme", 10, now, 1000,
	                                     &stored, &in_store),
	                 GC_OK);
	assert_int_equal(stored, now);
	assert_int_equal(in_store, 1);
}

/* A claim of key (acme, tok) by env e for event ev, under lease l. */
static enum ledger_claim
claim(struct dest_env *e, const char *tok, const char *ev,
      const struct lease *l)
{
	enum ledger_claim c = LEDGER_BUSY;
	struct ledger_view v;

	assert_int_equal(e->ledger_claim(e->ctx, "acme", tok, "verified", ev,
	                                 "a@example.com", store_now_ms(), l, &c,
	                                 &v),
	                 GC_OK);
	return c;
}

/*
 * The ledger states a process records wait for its flush, then are
 * stored together: until then another process sees the keys in flight;
 * a state for a key the process no longer holds changes nothing.
 */
static void
test_ledger_flush(void **state)
{
	struct fixture *f = *state;
	struct lease la = {store_now_ms() + 60000, "A.1"};
	struct lease lb = {store_now_ms() + 60000, "B.1"};
	static const char *const toks[] = {"t1", "t2", "t3"};

	for (int i = 0; i < 3; i++)
		assert_int_equal(claim(f->a, toks[i], "e1", &la),
		                 LEDGER_CLAIMED);
	assert_int_equal(f->a->ledger_set(f->a->ctx, "acme", "t1", "verified",
	                                  "A.1", "done", store_now_ms()),
	                 GC_OK);
	assert_int_equal(f->a->ledger_set(f->a->ctx, "acme", "t2", "verified",
	                                  "A.1", "unknown", store_now_ms()),
	                 GC_OK);
	/* Not its key's holder: queued all the same, stored as nothing. */
	assert_int_equal(f->a->ledger_set(f->a->ctx, "acme", "t3", "verified",
	                                  "Z.9", "done", store_now_ms()),
	                 GC_OK);
	for (int i = 0; i < 3; i++)
		assert_int_equal(claim(f->b, toks[i], "e2", &lb), LEDGER_BUSY);
	dest_env_flush(f->a);
	assert_int_equal(claim(f->b, "t1", "e2", &lb), LEDGER_DONE);
	assert_int_equal(claim(f->b, "t2", "e2", &lb), LEDGER_RECONCILE);
	assert_int_equal(claim(f->b, "t3", "e2", &lb), LEDGER_BUSY);
	/* Nothing left queued: a second flush stores nothing. */
	dest_env_flush(f->a);
	assert_int_equal(claim(f->b, "t3", "e2", &lb), LEDGER_BUSY);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_token, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_token_lease, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_throttle, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ledger_flush, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
