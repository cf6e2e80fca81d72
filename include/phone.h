/*
 * Mobile numbers: normalisation to E.164 and the country of a calling code.
 */
#ifndef GC_PHONE_H
#define GC_PHONE_H

#include <stddef.h>

#include "gc_err.h"

#define PHONE_E164_MAX 17 /* "+" + 15 digits + NUL */

/*
 * Normalise in to E.164 ("+447700900123") into out (PHONE_E164_MAX bytes).
 * Accepts a leading "+" or "00" and ignores white space, dashes, dots,
 * slashes and parentheses; a trunk "0" after the code is dropped where the
 * country never dials it in international form (see phone.c).  GC_EINVAL with a
 * short reason in why (e.g. "unknown country calling code", "too short for
 * +44") when the number is impossible.
 */
enum gc_err phone_normalize(const char *in, char out[PHONE_E164_MAX], char *why,
                            size_t whysz);

/*
 * ISO 3166-1 alpha-2 code of the country that owns the calling code of an
 * E.164 number, or NULL when unknown.  Codes shared by several countries
 * map to their main country (+1 US, +7 RU, +44 GB, ...): see phone.c.
 * Static storage.
 */
const char *phone_country(const char *e164);

#endif
