/*
 * HMAC-SHA256 and SHA-256 (app/crypto.c), and what their failure does to
 * the callers.  OpenSSL is made to fail for real: the thread's default
 * library context is swapped for one that holds only OpenSSL's "null"
 * provider, which has no algorithms, so every digest and MAC fetch fails
 * exactly as it would with a broken or locked-down OpenSSL.  Each caller
 * must then fail closed and say so: no zero MAC compared or sent, no
 * signature accepted, no trigger id made of nothing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/provider.h>

#include "admin_sig.h"
#include "crypto.h"
#include "emarsys.h"
#include "webhook.h"

/* RFC 4231, test case 2. */
#define JEFE_MSG "what do ya want for nothing?"
static const uint8_t jefe_mac[CRYPTO_SHA256_LEN] = {
    0x5b, 0xdc, 0xc1, 0x46, 0xbf, 0x60, 0x75, 0x4e, 0x6a, 0x04, 0x24,
    0x26, 0x08, 0x95, 0x75, 0xc7, 0x5a, 0x00, 0x3f, 0x08, 0x9d, 0x27,
    0x39, 0x83, 0x9d, 0xec, 0x58, 0xb9, 0x64, 0xec, 0x38, 0x43};
#define ABC_SHA256                                                             \
	"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"

/* The Standard Webhooks example (also in test_webhook.c). */
#define SPEC_KEY  "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define SPEC_ID   "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define SPEC_TS   "1614265330"
#define SPEC_BODY "{\"test\": 2432232314}"
#define SPEC_SIG  "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
#define SPEC_NOW  1614265330

static struct admin_key akey = {"ops", "ops-secret", ROLE_WRITE};

static struct app_config *
admin_cfg(void)
{
	static struct app_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.admin_keys[0] = akey;
	cfg.nadmin_keys = 1;
	cfg.admin_tolerance_s = 300;
	return &cfg;
}

/* OpenSSL without algorithms, for this thread, until broken_end. */
struct broken {
	OSSL_LIB_CTX *ctx, *saved;
	OSSL_PROVIDER *null;
};

static void
broken_begin(struct broken *b)
{
	assert_non_null(b->ctx = OSSL_LIB_CTX_new());
	/* Loaded explicitly, it keeps the default provider from loading. */
	assert_non_null(b->null = OSSL_PROVIDER_load(b->ctx, "null"));
	b->saved = OSSL_LIB_CTX_set0_default(b->ctx);
	assert_non_null(b->saved);
}

static void
broken_end(struct broken *b)
{
	OSSL_LIB_CTX_set0_default(b->saved);
	OSSL_PROVIDER_unload(b->null);
	OSSL_LIB_CTX_free(b->ctx);
}

/* Every caller, with OpenSSL working (ok) or failing (!ok). */
static void
check_callers(int ok)
{
	uint8_t mac[CRYPTO_SHA256_LEN], zero[CRYPTO_SHA256_LEN] = {0};
	char hex[65], sig[ADMIN_SIG_LEN], wsig[64], tid[48];
	const struct admin_key *k;
	struct webhook_key wk;

	memset(mac, 0xaa, sizeof(mac));
	assert_int_equal(
	    crypto_hmac_sha256("Jefe", 4, JEFE_MSG, strlen(JEFE_MSG), mac),
	    ok ? GC_OK : GC_ECRYPTO);
	assert_memory_equal(mac, ok ? jefe_mac : zero, sizeof(mac));
	assert_int_equal(crypto_sha256_hex("abc", 3, hex),
	                 ok ? GC_OK : GC_ECRYPTO);
	assert_string_equal(hex, ok ? ABC_SHA256 : "");

	/* Webhooks: the genuine signature verifies only when a MAC can be
	 * computed; signing gives nothing rather than a wrong value. */
	assert_int_equal(webhook_key_parse(SPEC_KEY, &wk), GC_OK);
	assert_int_equal(webhook_verify(&wk, 1, SPEC_ID, SPEC_TS, SPEC_SIG,
	                                SPEC_BODY, strlen(SPEC_BODY), SPEC_NOW,
	                                300),
	                 ok ? WEBHOOK_OK : WEBHOOK_NO_MATCH);
	webhook_sign(&wk, SPEC_ID, SPEC_TS, SPEC_BODY, strlen(SPEC_BODY), wsig,
	             sizeof(wsig));
	assert_string_equal(wsig, ok ? SPEC_SIG : "");

	/* Admin: a signature made while OpenSSL worked is refused, with
	 * its own reason, once it does not. */
	assert_int_equal(admin_sig_sign(akey.secret, "GET", "/admin/v1/brands",
	                                "1700000000", "", 0, sig),
	                 ok ? GC_OK : GC_ECRYPTO);
	if (!ok) {
		assert_string_equal(sig, "");
		return;
	}
	assert_int_equal(admin_sig_check(admin_cfg(), "ops", "1700000000", sig,
	                                 "GET", "/admin/v1/brands", "", 0,
	                                 1700000000, &k),
	                 ADMIN_SIG_OK);
	assert_int_equal(emarsys_trigger_id("acme", "TOK1", "ev", tid), GC_OK);
	assert_int_equal(strlen(tid), 40);
}

static void
test_working(void **state)
{
	(void)state;
	check_callers(1);
}

static void
test_openssl_failing(void **state)
{
	char sig[ADMIN_SIG_LEN], tid[48] = "junk";
	const struct admin_key *k = &akey;
	struct broken b;

	(void)state;
	assert_int_equal(admin_sig_sign(akey.secret, "GET", "/admin/v1/brands",
	                                "1700000000", "", 0, sig),
	                 GC_OK);
	broken_begin(&b);
	check_callers(0);
	assert_int_equal(admin_sig_check(admin_cfg(), "ops", "1700000000", sig,
	                                 "GET", "/admin/v1/brands", "", 0,
	                                 1700000000, &k),
	                 ADMIN_SIG_CRYPTO);
	assert_null(k);
	assert_int_equal(emarsys_trigger_id("acme", "TOK1", "ev", tid),
	                 GC_ECRYPTO);
	assert_string_equal(tid, "");
	broken_end(&b);
	/* And all is well again once OpenSSL is. */
	check_callers(1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_working),
	    cmocka_unit_test(test_openssl_failing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
