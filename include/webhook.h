/*
 * Standard Webhooks v1 signature verification.
 */
#ifndef GC_WEBHOOK_H
#define GC_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "gc_err.h"

#define WEBHOOK_KEY_MAX 64 /* decoded secret bytes */

struct webhook_key {
	uint8_t bytes[WEBHOOK_KEY_MAX];
	size_t len;
};

/*
 * Decode a configured "whsec_<base64>" secret.  GC_EINVAL when the prefix
 * or base64 is wrong or the key is shorter than 24 bytes or longer than
 * WEBHOOK_KEY_MAX.
 */
enum gc_err webhook_key_parse(const char *text, struct webhook_key *key);

/* Which check failed. */
enum webhook_fail {
	WEBHOOK_OK,
	WEBHOOK_MISSING_ID,
	WEBHOOK_MISSING_TIMESTAMP,
	WEBHOOK_MISSING_SIGNATURE,
	WEBHOOK_BAD_TIMESTAMP,        /* not an integer */
	WEBHOOK_STALE,                /* older than the tolerance */
	WEBHOOK_FUTURE,               /* newer than the tolerance */
	WEBHOOK_BAD_SIGNATURE_HEADER, /* no parseable v1 entry */
	WEBHOOK_NO_MATCH,             /* no entry matches any key */
	WEBHOOK__MAX
};

/* Human-readable reason for a failure; static storage. */
extern const char *const webhook_fail_names[WEBHOOK__MAX];

/*
 * Verify one delivery.  id, timestamp and signature are the header values
 * (NULL when absent); body is the exact raw body.  Accepts when any
 * space-separated "v1,<base64>" entry equals
 * base64(HMAC-SHA256(key, id "." timestamp "." body)) for any key, compared
 * in constant time, and the timestamp is within tolerance_s of now.
 */
enum webhook_fail webhook_verify(const struct webhook_key *keys, size_t nkeys,
                                 const char *id, const char *timestamp,
                                 const char *signature, const char *body,
                                 size_t bodylen, time_t now, long tolerance_s);

/*
 * Parse a signature header: calls fn for each well-formed "v1,<base64>"
 * entry with the decoded signature; unknown versions are skipped.  Returns
 * the number of v1 entries seen.  Exposed for fuzzing.
 */
int webhook_sig_parse(const char *header,
                      void (*fn)(const uint8_t *sig, size_t len, void *arg),
                      void *arg);

/*
 * Sign: writes "v1,<base64>" for (key, id, timestamp, body) into out
 * (at least 48 bytes).  Used by gcrelayctl and tests.
 */
void webhook_sign(const struct webhook_key *key, const char *id,
                  const char *timestamp, const char *body, size_t bodylen,
                  char *out, size_t outsz);

#endif
