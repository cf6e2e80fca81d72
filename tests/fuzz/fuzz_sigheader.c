/*
 * libFuzzer target: webhook_sig_parse and webhook_verify on arbitrary
 * header values.  The input is "<id>\n<timestamp>\n<signature>\n<body>"
 * (missing parts are NULL headers; the body may hold newlines and NULs).
 * Properties: every entry handed to the callback is 32 bytes and their
 * number is the return value; the verdict is a known one; and appending
 * the right signature to any header that failed only on its signatures
 * makes it verify, whatever junk came before.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webhook.h"

#define NOW       1614265330
#define TOLERANCE 300

#define CHECK(x)                                                               \
	do {                                                                   \
		if (!(x)) {                                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
			        __LINE__, #x);                                 \
			abort();                                               \
		}                                                              \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Count entries; each must be a 32-byte signature. */
static void
count_entry(const uint8_t *sig, size_t len, void *arg)
{
	int *n = arg;

	CHECK(sig != NULL && len == 32);
	(*n)++;
}

/* [p, stop) as a new NUL-terminated string. */
static char *
dup_range(const uint8_t *p, const uint8_t *stop)
{
	size_t n = (size_t)(stop - p);
	char *s = malloc(n + 1);

	if (s == NULL)
		abort();
	memcpy(s, p, n);
	s[n] = '\0';
	return s;
}

/*
 * Split data at its first three newlines into id, timestamp, signature
 * and body (which keeps any later newlines and NULs); parts past the end
 * stay NULL.  Returns the body length.
 */
static size_t
split(const uint8_t *data, size_t size, char *parts[4])
{
	const uint8_t *p = data, *end = data + size, *nl;
	size_t bodylen = 0;

	for (int i = 0; i < 4; i++) {
		nl = i < 3 ? memchr(p, '\n', (size_t)(end - p)) : NULL;
		parts[i] = dup_range(p, nl != NULL ? nl : end);
		if (i == 3)
			bodylen = (size_t)(end - p);
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	return bodylen;
}

/* id, ts and header failed only on signatures: add the right one. */
static void
check_append(const struct webhook_key *key, const char *id, const char *ts,
             const char *header, const char *body, size_t bodylen)
{
	char sig[64], *both;
	size_t n = strlen(header);

	webhook_sign(key, id, ts, body, bodylen, sig, sizeof(sig));
	CHECK(strncmp(sig, "v1,", 3) == 0);
	if ((both = malloc(n + sizeof(sig) + 2)) == NULL)
		abort();
	memcpy(both, header, n);
	both[n] = ' ';
	memcpy(both + n + 1, sig, strlen(sig) + 1);
	CHECK(webhook_verify(key, 1, id, ts, both, body, bodylen, NOW,
	                     TOLERANCE) == WEBHOOK_OK);
	free(both);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct webhook_key keys[2];
	static int ready;
	char *part[4] = {NULL, NULL, NULL, NULL};
	const char *body;
	enum webhook_fail fail;
	size_t bodylen;
	int calls = 0;

	if (!ready) {
		CHECK(
		    webhook_key_parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
		                      &keys[0]) == GC_OK);
		CHECK(webhook_key_parse("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRY"
		                        "XGBkaGxwdHh8=",
		                        &keys[1]) == GC_OK);
		ready = 1;
	}
	bodylen = split(data, size, part);
	body = part[3] != NULL ? part[3] : "";
	CHECK(webhook_sig_parse(part[2], count_entry, &calls) == calls);
	fail = webhook_verify(keys, 2, part[0], part[1], part[2], body, bodylen,
	                      NOW, TOLERANCE);
	CHECK(fail >= WEBHOOK_OK && fail < WEBHOOK__MAX);
	CHECK(webhook_fail_names[fail] != NULL);
	if (fail == WEBHOOK_NO_MATCH || fail == WEBHOOK_BAD_SIGNATURE_HEADER)
		check_append(&keys[1], part[0], part[1], part[2], body,
		             bodylen);
	/* Any text as a configured secret: no crash, zeroed on failure. */
	if (part[2] != NULL) {
		struct webhook_key k;
		if (webhook_key_parse(part[2], &k) != GC_OK)
			CHECK(k.len == 0);
	}
	for (int i = 0; i < 4; i++)
		free(part[i]);
	return 0;
}
