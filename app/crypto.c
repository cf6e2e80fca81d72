#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "crypto.h"

#define GCM_NONCE_LEN 12
#define GCM_TAG_LEN   16

/* See crypto.h. */
enum gc_err
crypto_hmac_sha256(const void *key, size_t keylen, const void *msg,
                   size_t msglen, uint8_t out[CRYPTO_SHA256_LEN])
{
	unsigned int outlen = CRYPTO_SHA256_LEN;

	if (keylen <= INT_MAX &&
	    HMAC(EVP_sha256(), key, (int)keylen, msg, msglen, out, &outlen) !=
	        NULL &&
	    outlen == CRYPTO_SHA256_LEN)
		return GC_OK;
	memset(out, 0, CRYPTO_SHA256_LEN);
	return GC_ECRYPTO;
}

/* See crypto.h. */
enum gc_err
crypto_sha256_hex(const void *data, size_t len, char hex[65])
{
	static const char digits[] = "0123456789abcdef";
	uint8_t md[CRYPTO_SHA256_LEN];

	hex[0] = '\0';
	if (SHA256(data, len, md) == NULL)
		return GC_ECRYPTO;
	for (size_t i = 0; i < sizeof(md); i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 0xf];
	}
	hex[64] = '\0';
	return GC_OK;
}

/* See crypto.h. */
int
crypto_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	if (alen != blen)
		return 0;
	return CRYPTO_memcmp(a, b, alen) == 0;
}

/* See crypto.h. */
size_t
crypto_b64_encode(const void *in, size_t n, char *out, size_t outsz)
{
	if (outsz < 4 * ((n + 2) / 3) + 1) {
		if (outsz > 0)
			out[0] = '\0';
		return 0;
	}
	return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static int
b64_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* See crypto.h. */
enum gc_err
crypto_b64_decode(const char *in, size_t n, uint8_t *out, size_t outsz,
                  size_t *outlen)
{
	size_t i, o = 0, pad = 0;
	int v[4];

	*outlen = 0;
	if (n % 4 != 0)
		return GC_EINVAL;
	for (i = 0; i < n; i += 4) {
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];
			if (c == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad > 0 || (v[k] = b64_val(c)) < 0)
				return GC_EINVAL;
		}
		if (o + 3 - pad > outsz)
			return GC_ETOOBIG;
		out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[o++] = (uint8_t)((v[1] & 0xf) << 4 | v[2] >> 2);
		if (pad < 1)
			out[o++] = (uint8_t)((v[2] & 0x3) << 6 | v[3]);
	}
	*outlen = o;
	return GC_OK;
}

/* See crypto.h. */
enum gc_err
crypto_random(void *buf, size_t n)
{
	return RAND_bytes(buf, (int)n) == 1 ? GC_OK : GC_ESYS;
}

/* See crypto.h. */
char *
crypto_seal(const uint8_t key[CRYPTO_KEY_LEN], const char *plaintext,
            const char *aad)
{
	size_t ptlen = strlen(plaintext), rawlen, b64sz;
	uint8_t *raw = NULL;
	char *out = NULL;
	EVP_CIPHER_CTX *ctx = NULL;
	int len;

	rawlen = GCM_NONCE_LEN + ptlen + GCM_TAG_LEN;
	b64sz = 3 + 4 * ((rawlen + 2) / 3) + 1;
	if ((raw = malloc(rawlen)) == NULL || (out = malloc(b64sz)) == NULL)
		goto fail;
	if (crypto_random(raw, GCM_NONCE_LEN) != GC_OK)
		goto fail;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) != 1)
		goto fail;
	if (aad != NULL &&
	    EVP_EncryptUpdate(ctx, NULL, &len, (const uint8_t *)aad,
	                      (int)strlen(aad)) != 1)
		goto fail;
	if (EVP_EncryptUpdate(ctx, raw + GCM_NONCE_LEN, &len,
	                      (const uint8_t *)plaintext, (int)ptlen) != 1 ||
	    EVP_EncryptFinal_ex(ctx, raw + GCM_NONCE_LEN + len, &len) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG_LEN,
	                        raw + GCM_NONCE_LEN + ptlen) != 1)
		goto fail;
	memcpy(out, "v1:", 3);
	crypto_b64_encode(raw, rawlen, out + 3, b64sz - 3);
	EVP_CIPHER_CTX_free(ctx);
	OPENSSL_cleanse(raw, rawlen);
	free(raw);
	return out;
fail:
	EVP_CIPHER_CTX_free(ctx);
	free(raw);
	free(out);
	return NULL;
}

/* See crypto.h. */
enum gc_err
crypto_open(const uint8_t key[CRYPTO_KEY_LEN], const char *sealed,
            const char *aad, char **out)
{
	size_t slen, rawlen, ctlen;
	uint8_t *raw = NULL;
	char *pt = NULL;
	EVP_CIPHER_CTX *ctx = NULL;
	int len, ok = 0;

	*out = NULL;
	if (strncmp(sealed, "v1:", 3) != 0)
		return GC_ECRYPTO;
	sealed += 3;
	slen = strlen(sealed);
	if ((raw = malloc(slen / 4 * 3 + 1)) == NULL)
		return GC_ENOMEM;
	if (crypto_b64_decode(sealed, slen, raw, slen / 4 * 3 + 1, &rawlen) !=
	        GC_OK ||
	    rawlen < GCM_NONCE_LEN + GCM_TAG_LEN)
		goto done;
	ctlen = rawlen - GCM_NONCE_LEN - GCM_TAG_LEN;
	if ((pt = malloc(ctlen + 1)) == NULL)
		goto done;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, raw) != 1)
		goto done;
	if (aad != NULL &&
	    EVP_DecryptUpdate(ctx, NULL, &len, (const uint8_t *)aad,
	                      (int)strlen(aad)) != 1)
		goto done;
	if (EVP_DecryptUpdate(ctx, (uint8_t *)pt, &len, raw + GCM_NONCE_LEN,
	                      (int)ctlen) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN,
	                        raw + GCM_NONCE_LEN + ctlen) != 1 ||
	    EVP_DecryptFinal_ex(ctx, (uint8_t *)pt + len, &len) != 1)
		goto done;
	pt[ctlen] = '\0';
	ok = 1;
done:
	EVP_CIPHER_CTX_free(ctx);
	free(raw);
	if (!ok) {
		free(pt);
		return GC_ECRYPTO;
	}
	*out = pt;
	return GC_OK;
}

/* See crypto.h. */
int
crypto_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* See crypto.h. */
enum gc_err
crypto_key_load(const char *path, uint8_t key[CRYPTO_KEY_LEN], char *why,
                size_t whysz)
{
	char text[256];
	size_t n, got;
	FILE *fp;

	if ((fp = fopen(path, "r")) == NULL) {
		snprintf(why, whysz, "cannot read key file %s: %s", path,
		         strerror(errno));
		return GC_ESYS;
	}
	n = fread(text, 1, sizeof(text) - 1, fp);
	fclose(fp);
	text[n] = '\0';
	while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' ||
	                 text[n - 1] == ' '))
		text[--n] = '\0';
	if (n == 2 * CRYPTO_KEY_LEN) {
		for (size_t i = 0; i < CRYPTO_KEY_LEN; i++) {
			int hi = crypto_hex_value(text[2 * i]),
			    lo = crypto_hex_value(text[2 * i + 1]);
			if (hi < 0 || lo < 0)
				goto bad;
			key[i] = (uint8_t)(hi << 4 | lo);
		}
		OPENSSL_cleanse(text, sizeof(text));
		return GC_OK;
	}
	if (crypto_b64_decode(text, n, key, CRYPTO_KEY_LEN, &got) == GC_OK &&
	    got == CRYPTO_KEY_LEN) {
		OPENSSL_cleanse(text, sizeof(text));
		return GC_OK;
	}
bad:
	OPENSSL_cleanse(text, sizeof(text));
	snprintf(why, whysz,
	         "key file %s must hold 32 bytes as 64 hex characters or "
	         "base64",
	         path);
	return GC_EINVAL;
}
