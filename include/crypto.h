/*
 * Cryptographic helpers over OpenSSL: HMAC-SHA256, SHA-256, base64,
 * constant-time comparison, random bytes and AES-256-GCM sealing of
 * secrets at rest.
 */
#ifndef GC_CRYPTO_H
#define GC_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "gc_err.h"

#define CRYPTO_SHA256_LEN 32
#define CRYPTO_KEY_LEN    32 /* AES-256 key */

/*
 * out = HMAC-SHA256(key, msg): GC_OK, or GC_ECRYPTO when OpenSSL fails
 * (out is then zeroed: never a MAC to compare or send).
 */
enum gc_err crypto_hmac_sha256(const void *key, size_t keylen, const void *msg,
                               size_t msglen, uint8_t out[CRYPTO_SHA256_LEN]);

/*
 * Lower-case hex SHA-256 of data into hex (65 bytes with the NUL): GC_OK,
 * or GC_ECRYPTO when OpenSSL fails (hex is then "").
 */
enum gc_err crypto_sha256_hex(const void *data, size_t len, char hex[65]);

/* Equal length and bytes, in time independent of the contents. */
int crypto_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/*
 * Standard base64 with padding.  crypto_b64_encode writes the NUL-terminated
 * text into out (needs 4*ceil(n/3)+1 bytes) and returns its length.
 */
size_t crypto_b64_encode(const void *in, size_t n, char *out, size_t outsz);

/*
 * Decode standard base64 (padding required, no whitespace).  Returns the
 * decoded length in *outlen.  GC_EINVAL on malformed text, GC_ETOOBIG when
 * out is too small.
 */
enum gc_err crypto_b64_decode(const char *in, size_t n, uint8_t *out,
                              size_t outsz, size_t *outlen);

/* Value of a hex digit (either case), or -1. */
int crypto_hex_value(char c);

/* Fill buf with n bytes from the OS CSPRNG; GC_ESYS on failure. */
enum gc_err crypto_random(void *buf, size_t n);

/*
 * Seal plaintext under key with AES-256-GCM, binding aad (may be NULL).
 * The result is "v1:" + base64(nonce || ciphertext || tag); caller frees it
 * with free().  NULL on failure.
 */
char *crypto_seal(const uint8_t key[CRYPTO_KEY_LEN], const char *plaintext,
                  const char *aad);

/*
 * Open a value made by crypto_seal with the same key and aad.  *out is a
 * NUL-terminated string the caller frees with free(); NULL on failure.
 * GC_ECRYPTO when the value is malformed or fails authentication.
 */
enum gc_err crypto_open(const uint8_t key[CRYPTO_KEY_LEN], const char *sealed,
                        const char *aad, char **out);

/*
 * Load a 32-byte key from a file holding it as 64 hex characters or as
 * base64 (trailing newline allowed).  GC_ESYS when unreadable, GC_EINVAL
 * when malformed; the reason is written into why.
 */
enum gc_err crypto_key_load(const char *path, uint8_t key[CRYPTO_KEY_LEN],
                            char *why, size_t whysz);

#endif
