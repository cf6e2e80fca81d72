/*
 * The per-account limits of one host (include/delivery_limits.h), in
 * this process's table: an account's learned pace survives any number
 * of other accounts being looked at, held and paced, a new account
 * takes the entry that no longer holds anything back, and a limit learned
 * but never paced here (PostgreSQL paces in the store) is kept too.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "delivery_limits.h"

#define EM    "emarsys:cid"
#define EM2   "emarsys:cid2"
#define NOW   1000000 /* ms, monotonic */
#define MANY  3000    /* more accounts than the table holds */
#define LIMIT 600     /* per minute: 110 ms apart */

/* Reserve the next slot of account now; its time. */
static int64_t
next_slot(const char *account)
{
	int64_t slot = -1;

	assert_int_equal(limits_pace(account, NOW, 60000, &slot), 1);
	return slot;
}

static void
test_pace_outlives_lookups(void **state)
{
	char key[32];
	int64_t slot;

	(void)state;
	limits_learn(EM, LIMIT, -1, 0);
	assert_int_equal(next_slot(EM), NOW);
	/* Looking at accounts takes no entry: none of these is held. */
	for (int i = 0; i < MANY; i++) {
		snprintf(key, sizeof(key), "yotpo:brand%d", i);
		assert_int_equal(limits_per_minute(key), 0);
		assert_int_equal(limits_hold_until(key), 0);
		assert_int_equal(limits_pace(key, NOW, 1000, &slot), 1);
		assert_int_equal(slot, NOW); /* not paced: no limit known */
	}
	assert_int_equal(limits_per_minute(EM), LIMIT);
	assert_int_equal(next_slot(EM), NOW + 66000 / LIMIT);
}

static void
test_new_accounts_take_stale_entries(void **state)
{
	char key[32];
	int64_t slot;

	(void)state;
	limits_learn(EM2, LIMIT, -1, 0);
	assert_int_equal(next_slot(EM2), NOW);
	/* Many accounts held, all of it over: they take one another's. */
	for (int i = 0; i < MANY; i++) {
		snprintf(key, sizeof(key), "yotpo:old%d", i);
		limits_hold(key, NOW - 1);
		assert_int_equal(
		    limits_pace_every(key, 1000, NOW - 10, 0, &slot), 1);
	}
	/* The account still paced kept its entry and its slot. */
	assert_int_equal(limits_per_minute(EM2), LIMIT);
	assert_int_equal(next_slot(EM2), NOW + 66000 / LIMIT);
	/* A live hold is kept too. */
	limits_hold("yotpo:held", NOW + 5000);
	for (int i = 0; i < MANY; i++) {
		snprintf(key, sizeof(key), "yotpo:later%d", i);
		limits_hold(key, NOW - 1);
	}
	assert_int_equal(limits_hold_until("yotpo:held"), NOW + 5000);
	/* A later hold wins; an earlier one does not shorten it. */
	limits_hold("yotpo:held", NOW + 100);
	assert_int_equal(limits_hold_until("yotpo:held"), NOW + 5000);
}

/*
 * With PostgreSQL the store paces Emarsys accounts: their entries keep
 * the learned limit only, no hold and no slot.  New accounts must not
 * take one another's entry while the table has room, nor take those of
 * limits heard since other accounts' holds and slots lapsed.
 */
static void
test_learned_limits_stay_without_slots(void **state)
{
	char key[32];

	(void)state;
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "emarsys:store%d", i);
		limits_learn(key, LIMIT + i, -1, 0);
	}
	for (int i = 0; i < 100; i++) {
		snprintf(key, sizeof(key), "emarsys:store%d", i);
		assert_int_equal(limits_per_minute(key), LIMIT + i);
	}
}

static void
test_fixed_pace(void **state)
{
	int64_t slot;

	(void)state;
	assert_int_equal(
	    limits_pace_every("yotpo:fixed", 10000, NOW, 15, &slot), 1);
	assert_int_equal(slot, NOW);
	assert_int_equal(
	    limits_pace_every("yotpo:fixed", 10000, NOW, 15, &slot), 1);
	assert_int_equal(slot, NOW + 10);
	/* The next (NOW + 20) is beyond the horizon: not taken, said when. */
	assert_int_equal(
	    limits_pace_every("yotpo:fixed", 10000, NOW, 15, &slot), 0);
	assert_int_equal(slot, NOW + 20);
	assert_int_equal(
	    limits_pace_every("yotpo:fixed", 10000, NOW, 25, &slot), 1);
	assert_int_equal(slot, NOW + 20);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pace_outlives_lookups),
	    cmocka_unit_test(test_new_accounts_take_stale_entries),
	    cmocka_unit_test(test_fixed_pace),
	    cmocka_unit_test(test_learned_limits_stay_without_slots),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
