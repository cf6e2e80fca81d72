/*
 * Admin request signatures (DESIGN.md, Admin JSON API):
 *   X-Gcrelay-Key: <key id>
 *   X-Gcrelay-Timestamp: <unix seconds>
 *   X-Gcrelay-Signature: v1,<base64(HMAC-SHA256(secret, canonical))>
 * where canonical = METHOD "\n" REQUEST_URI "\n" timestamp "\n"
 * lower-hex SHA-256 of the raw body.
 */
#ifndef GC_ADMIN_SIG_H
#define GC_ADMIN_SIG_H

#include <stddef.h>
#include <time.h>

#include "app_config.h"
#include "gc_err.h"

#define ADMIN_SIG_LEN 48 /* "v1," + 44 base64 characters + NUL */

/* The one 401 detail for every authentication failure. */
#define ADMIN_SIG_DETAIL                                                       \
	"request signature is missing, stale, replayed or does not match"

enum admin_sig_fail {
	ADMIN_SIG_OK,
	ADMIN_SIG_MISSING_KEY,
	ADMIN_SIG_MISSING_TIMESTAMP,
	ADMIN_SIG_MISSING_SIGNATURE,
	ADMIN_SIG_UNKNOWN_KEY,
	ADMIN_SIG_BAD_TIMESTAMP,
	ADMIN_SIG_STALE,
	ADMIN_SIG_FUTURE,
	ADMIN_SIG_BAD_FORMAT,
	ADMIN_SIG_MISMATCH,
	ADMIN_SIG_REPLAYED, /* set by the caller's replay cache */
	ADMIN_SIG_CRYPTO,   /* the MAC could not be computed: refused */
	ADMIN_SIG__MAX
};

/*
 * What failed, for the log and the metrics only: every failure answers
 * the client with the same ADMIN_SIG_DETAIL, so a 401 does not tell
 * which key ids exist.  Static storage.
 */
extern const char *const admin_sig_fail_names[ADMIN_SIG__MAX];

/*
 * Write the signature header value for a request into out: GC_OK, or
 * GC_ECRYPTO when it cannot be computed (out is then "").
 */
enum gc_err admin_sig_sign(const char *secret, const char *method,
                           const char *uri, const char *timestamp,
                           const char *body, size_t bodylen,
                           char out[ADMIN_SIG_LEN]);

/*
 * Check a request.  On success *key is the configured key (borrowed).
 * The signature is compared in constant time.
 */
enum admin_sig_fail admin_sig_check(const struct app_config *cfg,
                                    const char *key_id, const char *timestamp,
                                    const char *signature, const char *method,
                                    const char *uri, const char *body,
                                    size_t bodylen, time_t now,
                                    const struct admin_key **key);

/*
 * The canonical form of a signature that admin_sig_check accepted: its
 * MAC re-encoded, so that spellings of the same MAC that the base64
 * decoder tolerates (unused low bits) count as one for the replay cache.
 * Returns 0 with out filled, or -1 when signature does not decode.
 */
int admin_sig_canonical(const char *signature, char out[ADMIN_SIG_LEN]);

#endif
