/*
 * Standard Webhooks v1 (https://www.standardwebhooks.com/): secrets,
 * signature headers and verification of inbound deliveries.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "webhook.h"

#define WEBHOOK_KEY_PREFIX "whsec_"
#define WEBHOOK_KEY_MIN    24
/* base64 of a 32-byte HMAC-SHA256: 4 * ceil(32 / 3) characters. */
#define WEBHOOK_SIG_B64_LEN 44

const char *const webhook_fail_names[] = {
    [WEBHOOK_OK] = "signature verified",
    [WEBHOOK_MISSING_ID] = "missing webhook-id header",
    [WEBHOOK_MISSING_TIMESTAMP] = "missing webhook-timestamp header",
    [WEBHOOK_MISSING_SIGNATURE] = "missing webhook-signature header",
    [WEBHOOK_BAD_TIMESTAMP] = "webhook-timestamp is not an integer",
    [WEBHOOK_STALE] = "webhook-timestamp is too old",
    [WEBHOOK_FUTURE] = "webhook-timestamp is too far in the future",
    [WEBHOOK_BAD_SIGNATURE_HEADER] = "webhook-signature has no v1 entry",
    [WEBHOOK_NO_MATCH] = "no signature matches",
};
_Static_assert(sizeof(webhook_fail_names) / sizeof(webhook_fail_names[0]) ==
                   WEBHOOK__MAX,
               "webhook_fail_names out of step with enum webhook_fail");

/*
 * See webhook.h.  On failure key is zeroed.  The secret is the base64 text
 * after "whsec_", standard alphabet with padding, as Standard Webhooks
 * libraries generate it.
 */
enum gc_err
webhook_key_parse(const char *text, struct webhook_key *key)
{
	size_t plen = strlen(WEBHOOK_KEY_PREFIX), n;

	memset(key, 0, sizeof(*key));
	if (text == NULL || strncmp(text, WEBHOOK_KEY_PREFIX, plen) != 0)
		return GC_EINVAL;
	text += plen;
	n = strlen(text);
	if (crypto_b64_decode(text, n, key->bytes, sizeof(key->bytes),
	                      &key->len) != GC_OK ||
	    key->len < WEBHOOK_KEY_MIN) {
		memset(key, 0, sizeof(*key));
		return GC_EINVAL;
	}
	return GC_OK;
}

/*
 * Decode one header entry [p, p + n) when it is "v1,<base64 of 32 bytes>".
 * Returns 1 and fills sig when it is, 0 otherwise.
 */
static int
sig_entry(const char *p, size_t n, uint8_t sig[CRYPTO_SHA256_LEN])
{
	size_t len;

	if (n != 3 + WEBHOOK_SIG_B64_LEN || memcmp(p, "v1,", 3) != 0)
		return 0;
	if (crypto_b64_decode(p + 3, n - 3, sig, CRYPTO_SHA256_LEN, &len) !=
	    GC_OK)
		return 0;
	return len == CRYPTO_SHA256_LEN;
}

/*
 * See webhook.h.  Entries are separated by one or more spaces; entries of
 * other versions ("v1a,...") and malformed ones are skipped.  Returns the
 * number of well-formed v1 entries, which is the number of calls to fn (fn
 * may be NULL to only count).  A NULL header has none.
 */
int
webhook_sig_parse(const char *header,
                  void (*fn)(const uint8_t *sig, size_t len, void *arg),
                  void *arg)
{
	uint8_t sig[CRYPTO_SHA256_LEN];
	const char *p = header, *end;
	int count = 0;

	if (header == NULL)
		return 0;
	while (*p != '\0') {
		if (*p == ' ') {
			p++;
			continue;
		}
		if ((end = strchr(p, ' ')) == NULL)
			end = p + strlen(p);
		if (sig_entry(p, (size_t)(end - p), sig)) {
			if (count < INT_MAX)
				count++;
			if (fn != NULL)
				fn(sig, sizeof(sig), arg);
		}
		p = end;
	}
	return count;
}

/*
 * Parse a webhook-timestamp: a plain decimal integer, no sign, no white
 * space, no overflow.  Returns 1 and sets *ts when valid.
 */
static int
timestamp_parse(const char *s, long long *ts)
{
	char *end;

	if (*s < '0' || *s > '9')
		return 0;
	errno = 0;
	*ts = strtoll(s, &end, 10);
	return errno == 0 && *end == '\0';
}

/*
 * Where ts lies relative to now with tolerance tol: WEBHOOK_OK when
 * |now - ts| <= tol.  Differences are taken in unsigned arithmetic so
 * extreme values cannot overflow.
 */
static enum webhook_fail
timestamp_check(long long ts, long long now, long tolerance_s)
{
	unsigned long long tol =
	    tolerance_s > 0 ? (unsigned long long)tolerance_s : 0;

	if (ts < now && (unsigned long long)now - (unsigned long long)ts > tol)
		return WEBHOOK_STALE;
	if (ts > now && (unsigned long long)ts - (unsigned long long)now > tol)
		return WEBHOOK_FUTURE;
	return WEBHOOK_OK;
}

/*
 * mac = HMAC-SHA256(key, id "." timestamp "." body).  GC_ENOMEM when the
 * signed content cannot be assembled, GC_ECRYPTO when OpenSSL fails.
 */
static enum gc_err
webhook_mac(const struct webhook_key *key, const char *id,
            const char *timestamp, const char *body, size_t bodylen,
            uint8_t mac[CRYPTO_SHA256_LEN])
{
	size_t idlen = strlen(id), tslen = strlen(timestamp), n;
	enum gc_err err;
	char *msg;

	if (bodylen > SIZE_MAX - idlen - tslen - 2)
		return GC_ENOMEM;
	n = idlen + 1 + tslen + 1 + bodylen;
	if ((msg = malloc(n > 0 ? n : 1)) == NULL)
		return GC_ENOMEM;
	memcpy(msg, id, idlen);
	msg[idlen] = '.';
	memcpy(msg + idlen + 1, timestamp, tslen);
	msg[idlen + 1 + tslen] = '.';
	if (bodylen > 0)
		memcpy(msg + idlen + tslen + 2, body, bodylen);
	err = crypto_hmac_sha256(key->bytes, key->len, msg, n, mac);
	free(msg);
	return err;
}

/* State of one comparison pass: the expected MAC and whether any matched. */
struct sig_match {
	const uint8_t *mac;
	int matched;
};

/* webhook_sig_parse callback: compare, in constant time, with no exit. */
static void
sig_compare(const uint8_t *sig, size_t len, void *arg)
{
	struct sig_match *m = arg;

	m->matched |= crypto_ct_equal(sig, len, m->mac, CRYPTO_SHA256_LEN);
}

/* Presence and freshness checks, in the order webhook_verify reports them. */
static enum webhook_fail
webhook_precheck(const char *id, const char *timestamp, const char *signature,
                 time_t now, long tolerance_s)
{
	long long ts;

	/* An empty header value is as good as none. */
	if (id == NULL || *id == '\0')
		return WEBHOOK_MISSING_ID;
	if (timestamp == NULL || *timestamp == '\0')
		return WEBHOOK_MISSING_TIMESTAMP;
	if (signature == NULL || *signature == '\0')
		return WEBHOOK_MISSING_SIGNATURE;
	if (!timestamp_parse(timestamp, &ts))
		return WEBHOOK_BAD_TIMESTAMP;
	return timestamp_check(ts, (long long)now, tolerance_s);
}

/*
 * See webhook.h.  Returns WEBHOOK_OK or the first failed check.  Every
 * entry is compared with every key, whatever matched before, so the time
 * taken does not tell which entry or key matched.  When memory runs out
 * or the MAC cannot be computed, the delivery is refused as
 * WEBHOOK_NO_MATCH (fail closed).
 */
enum webhook_fail
webhook_verify(const struct webhook_key *keys, size_t nkeys, const char *id,
               const char *timestamp, const char *signature, const char *body,
               size_t bodylen, time_t now, long tolerance_s)
{
	uint8_t mac[CRYPTO_SHA256_LEN];
	struct sig_match m = {mac, 0};
	enum webhook_fail fail;

	fail = webhook_precheck(id, timestamp, signature, now, tolerance_s);
	if (fail != WEBHOOK_OK)
		return fail;
	if (webhook_sig_parse(signature, NULL, NULL) == 0)
		return WEBHOOK_BAD_SIGNATURE_HEADER;
	for (size_t i = 0; i < nkeys; i++) {
		if (webhook_mac(&keys[i], id, timestamp, body, bodylen, mac) !=
		    GC_OK) {
			m.matched = 0;
			break;
		}
		webhook_sig_parse(signature, sig_compare, &m);
	}
	memset(mac, 0, sizeof(mac));
	return m.matched ? WEBHOOK_OK : WEBHOOK_NO_MATCH;
}

/*
 * See webhook.h.  Writes "v1,<base64>" (47 characters and the NUL) into
 * out; out is "" when outsz is too small or memory runs out.
 */
void
webhook_sign(const struct webhook_key *key, const char *id,
             const char *timestamp, const char *body, size_t bodylen, char *out,
             size_t outsz)
{
	uint8_t mac[CRYPTO_SHA256_LEN];

	if (outsz > 0)
		out[0] = '\0';
	if (outsz < 3 + WEBHOOK_SIG_B64_LEN + 1 ||
	    webhook_mac(key, id, timestamp, body, bodylen, mac) != GC_OK)
		return;
	memcpy(out, "v1,", 3);
	crypto_b64_encode(mac, sizeof(mac), out + 3, outsz - 3);
}
