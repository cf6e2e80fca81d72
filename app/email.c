/*
 * Email addresses as they arrive in events: trimmed, lower-cased and
 * checked against the common subset of RFC 5321/5322 that mail systems
 * accept: a dot-atom local part, "@", and a domain of LDH labels.
 *
 * Not supported, so rejected: quoted local parts ("a b"@example.com),
 * comments, address literals (user@[192.0.2.1]), dotless domains
 * (user@localhost), and anything not ASCII: internationalised domain
 * names must arrive as A-labels (xn--...), and SMTPUTF8 local parts are
 * refused.
 *
 * Lower-casing the local part is the product's choice (DESIGN.md):
 * RFC 5321 lets a server tell "Ann" from "ann", but mailbox providers do
 * not, and one shopper must map to one contact.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "email.h"

#define EMAIL_LOCAL_MAX 64
#define EMAIL_LABEL_MAX 63

static enum gc_err email_fail(char *, size_t, const char *, ...)
    __attribute__((format(printf, 3, 4)));

/* Fill why (if any) with a formatted reason; always GC_EINVAL. */
static enum gc_err
email_fail(char *why, size_t whysz, const char *fmt, ...)
{
	va_list ap;

	if (why != NULL && whysz > 0) {
		va_start(ap, fmt);
		vsnprintf(why, whysz, fmt, ap);
		va_end(ap);
	}
	return GC_EINVAL;
}

/* ASCII white space, as trimmed from both ends. */
static int
email_is_space(char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

static int
email_is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* RFC 5322 atext, once lower-cased. */
static int
email_is_atext(char c)
{
	return email_is_alnum(c) ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", c) != NULL);
}

/* Check the dot-atom local part s of n bytes. */
static enum gc_err
email_check_local(const char *s, size_t n, char *why, size_t whysz)
{
	size_t i;

	if (n == 0)
		return email_fail(why, whysz, "empty local part");
	if (n > EMAIL_LOCAL_MAX)
		return email_fail(why, whysz, "local part over 64 characters");
	if (s[0] == '.')
		return email_fail(why, whysz, "local part starts with a dot");
	if (s[n - 1] == '.')
		return email_fail(why, whysz, "local part ends with a dot");
	for (i = 0; i < n; i++) {
		if (s[i] == '.' && i + 1 < n && s[i + 1] == '.')
			return email_fail(why, whysz,
			                  "consecutive dots in local part");
		if (s[i] != '.' && !email_is_atext(s[i]))
			return email_fail(why, whysz,
			                  "invalid character in local part");
	}
	return GC_OK;
}

/* Check one domain label s of n bytes; last is set for the TLD. */
static enum gc_err
email_check_label(const char *s, size_t n, int last, char *why, size_t whysz)
{
	size_t i, digits = 0;

	if (n == 0)
		return email_fail(why, whysz, "empty domain label");
	if (n > EMAIL_LABEL_MAX)
		return email_fail(why, whysz,
		                  "domain label over 63 characters");
	if (s[0] == '-')
		return email_fail(why, whysz,
		                  "domain label starts with a hyphen");
	if (s[n - 1] == '-')
		return email_fail(why, whysz,
		                  "domain label ends with a hyphen");
	for (i = 0; i < n; i++) {
		if (s[i] >= '0' && s[i] <= '9')
			digits++;
		else if (s[i] != '-' && !email_is_alnum(s[i]))
			return email_fail(why, whysz,
			                  "invalid character in domain");
	}
	if (last && digits == n)
		return email_fail(why, whysz, "numeric top-level domain");
	return GC_OK;
}

/* Check the domain s (NUL-terminated): two or more LDH labels. */
static enum gc_err
email_check_domain(const char *s, char *why, size_t whysz)
{
	const char *dot;
	enum gc_err err;
	size_t len;

	if (*s == '\0')
		return email_fail(why, whysz, "empty domain");
	if (strchr(s, '.') == NULL)
		return email_fail(why, whysz, "domain has no dot");
	if (s[0] == '.')
		return email_fail(why, whysz, "domain starts with a dot");
	if (s[strlen(s) - 1] == '.')
		return email_fail(why, whysz, "domain ends with a dot");
	for (;;) {
		dot = strchr(s, '.');
		len = dot != NULL ? (size_t)(dot - s) : strlen(s);
		err = email_check_label(s, len, dot == NULL, why, whysz);
		if (err != GC_OK || dot == NULL)
			return err;
		s = dot + 1;
	}
}

/*
 * Copy in, trimmed and lower-cased, into buf (EMAIL_MAX + 1 bytes),
 * refusing what cannot be an address whatever its structure.
 */
static enum gc_err
email_fold(const char *in, char *buf, char *why, size_t whysz)
{
	size_t i, n;
	char c;

	while (email_is_space(*in))
		in++;
	n = strlen(in);
	while (n > 0 && email_is_space(in[n - 1]))
		n--;
	if (n == 0)
		return email_fail(why, whysz, "empty address");
	for (i = 0; i < n; i++) {
		if ((unsigned char)in[i] >= 0x80)
			return email_fail(why, whysz, "non-ASCII character");
		if ((unsigned char)in[i] < 0x20 || in[i] == 0x7f)
			return email_fail(why, whysz, "control character");
	}
	if (n > EMAIL_MAX)
		return email_fail(why, whysz, "longer than 254 characters");
	for (i = 0; i < n; i++) {
		c = in[i];
		if (c >= 'A' && c <= 'Z')
			c += 'a' - 'A';
		buf[i] = c;
	}
	buf[n] = '\0';
	return GC_OK;
}

/* See email.h. */
enum gc_err
email_normalize(const char *in, char **out, char *why, size_t whysz)
{
	char buf[EMAIL_MAX + 1];
	char *at;
	enum gc_err err;
	size_t len;

	*out = NULL;
	if (in == NULL)
		return email_fail(why, whysz, "empty address");
	if ((err = email_fold(in, buf, why, whysz)) != GC_OK)
		return err;
	if ((at = strchr(buf, '@')) == NULL)
		return email_fail(why, whysz, "missing @");
	if (strchr(at + 1, '@') != NULL)
		return email_fail(why, whysz, "more than one @");
	if ((err = email_check_local(buf, (size_t)(at - buf), why, whysz)) !=
	    GC_OK)
		return err;
	if ((err = email_check_domain(at + 1, why, whysz)) != GC_OK)
		return err;
	len = strlen(buf);
	if ((*out = malloc(len + 1)) == NULL) {
		email_fail(why, whysz, "out of memory");
		return GC_ENOMEM;
	}
	memcpy(*out, buf, len + 1);
	return GC_OK;
}
