#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin_sig.h"
#include "buf.h"
#include "crypto.h"

const char *const admin_sig_fail_names[] = {
    [ADMIN_SIG_OK] = "ok",
    [ADMIN_SIG_MISSING_KEY] = "missing X-Gcrelay-Key header",
    [ADMIN_SIG_MISSING_TIMESTAMP] = "missing X-Gcrelay-Timestamp header",
    [ADMIN_SIG_MISSING_SIGNATURE] = "missing X-Gcrelay-Signature header",
    [ADMIN_SIG_UNKNOWN_KEY] = "unknown key id",
    [ADMIN_SIG_BAD_TIMESTAMP] = "X-Gcrelay-Timestamp must be unix seconds",
    [ADMIN_SIG_STALE] = "X-Gcrelay-Timestamp is too old (more than the "
                        "allowed skew in the past)",
    [ADMIN_SIG_FUTURE] = "X-Gcrelay-Timestamp is in the future (more than "
                         "the allowed skew ahead)",
    [ADMIN_SIG_BAD_FORMAT] =
        "X-Gcrelay-Signature must be \"v1,\" followed by base64",
    [ADMIN_SIG_MISMATCH] = "signature does not match the request",
    [ADMIN_SIG_REPLAYED] = "signature was already used (replay)",
    [ADMIN_SIG_CRYPTO] = "signature could not be computed (OpenSSL failed)",
};
_Static_assert(sizeof(admin_sig_fail_names) / sizeof(admin_sig_fail_names[0]) ==
                   ADMIN_SIG__MAX,
               "admin_sig_fail_names[] out of step");

/* The request's MAC: GC_OK, GC_ECRYPTO or GC_ENOMEM (mac zeroed). */
static enum gc_err
admin_sig_mac(const char *secret, const char *method, const char *uri,
              const char *timestamp, const char *body, size_t bodylen,
              uint8_t mac[CRYPTO_SHA256_LEN])
{
	char hex[65];
	struct buf canon;
	enum gc_err err;

	memset(mac, 0, CRYPTO_SHA256_LEN);
	if ((err = crypto_sha256_hex(body, bodylen, hex)) != GC_OK)
		return err;
	buf_init(&canon, 0);
	err = buf_printf(&canon, "%s\n%s\n%s\n%s", method, uri, timestamp, hex);
	if (err == GC_OK)
		err = crypto_hmac_sha256(secret, strlen(secret),
		                         buf_str(&canon), canon.len, mac);
	buf_free(&canon);
	return err;
}

/* See admin_sig.h. */
enum gc_err
admin_sig_sign(const char *secret, const char *method, const char *uri,
               const char *timestamp, const char *body, size_t bodylen,
               char out[ADMIN_SIG_LEN])
{
	uint8_t mac[CRYPTO_SHA256_LEN];
	enum gc_err err;

	out[0] = '\0';
	err = admin_sig_mac(secret, method, uri, timestamp, body, bodylen, mac);
	if (err != GC_OK)
		return err;
	memcpy(out, "v1,", 3);
	crypto_b64_encode(mac, sizeof(mac), out + 3, ADMIN_SIG_LEN - 3);
	return GC_OK;
}

static enum admin_sig_fail
admin_sig_time(const char *timestamp, time_t now, long tolerance)
{
	long long ts;
	char *end;

	if (timestamp[0] < '0' || timestamp[0] > '9' || strlen(timestamp) > 12)
		return ADMIN_SIG_BAD_TIMESTAMP;
	errno = 0;
	ts = strtoll(timestamp, &end, 10);
	if (*end != '\0' || errno != 0)
		return ADMIN_SIG_BAD_TIMESTAMP;
	if (ts < (long long)now - tolerance)
		return ADMIN_SIG_STALE;
	if (ts > (long long)now + tolerance)
		return ADMIN_SIG_FUTURE;
	return ADMIN_SIG_OK;
}

/* See admin_sig.h. */
enum admin_sig_fail
admin_sig_check(const struct app_config *cfg, const char *key_id,
                const char *timestamp, const char *signature,
                const char *method, const char *uri, const char *body,
                size_t bodylen, time_t now, const struct admin_key **key)
{
	uint8_t mac[CRYPTO_SHA256_LEN], got[CRYPTO_SHA256_LEN + 2];
	const struct admin_key *k;
	enum admin_sig_fail f;
	size_t glen;

	*key = NULL;
	if (key_id == NULL || *key_id == '\0')
		return ADMIN_SIG_MISSING_KEY;
	if (timestamp == NULL || *timestamp == '\0')
		return ADMIN_SIG_MISSING_TIMESTAMP;
	if (signature == NULL || *signature == '\0')
		return ADMIN_SIG_MISSING_SIGNATURE;
	if ((k = cfg_admin_key(cfg, key_id)) == NULL)
		return ADMIN_SIG_UNKNOWN_KEY;
	if ((f = admin_sig_time(timestamp, now, cfg->admin_tolerance_s)) !=
	    ADMIN_SIG_OK)
		return f;
	if (strncmp(signature, "v1,", 3) != 0 ||
	    crypto_b64_decode(signature + 3, strlen(signature + 3), got,
	                      sizeof(got), &glen) != GC_OK)
		return ADMIN_SIG_BAD_FORMAT;
	if (admin_sig_mac(k->secret, method, uri, timestamp, body, bodylen,
	                  mac) != GC_OK)
		return ADMIN_SIG_CRYPTO; /* fail closed */
	if (!crypto_ct_equal(mac, sizeof(mac), got, glen))
		return ADMIN_SIG_MISMATCH;
	*key = k;
	return ADMIN_SIG_OK;
}

/* See admin_sig.h. */
int
admin_sig_canonical(const char *signature, char out[ADMIN_SIG_LEN])
{
	uint8_t mac[CRYPTO_SHA256_LEN + 2];
	size_t len;

	if (strncmp(signature, "v1,", 3) != 0 ||
	    crypto_b64_decode(signature + 3, strlen(signature + 3), mac,
	                      sizeof(mac), &len) != GC_OK ||
	    len != CRYPTO_SHA256_LEN)
		return -1;
	memcpy(out, "v1,", 3);
	crypto_b64_encode(mac, len, out + 3, ADMIN_SIG_LEN - 3);
	return 0;
}
