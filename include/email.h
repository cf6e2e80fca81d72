/*
 * Email addresses as they arrive in events.
 */
#ifndef GC_EMAIL_H
#define GC_EMAIL_H

#include <stddef.h>

#include "gc_err.h"

#define EMAIL_MAX 254

/*
 * Trim surrounding white space, lower-case and syntax-check in.  On success
 * *out is the normalised address (caller frees with free()).  GC_EINVAL with
 * a short reason in why when the syntax is not that of a deliverable
 * address (local@domain.tld, dot-atom local part, LDH domain labels, at most
 * 254 characters).  *out is NULL on failure.
 */
enum gc_err email_normalize(const char *in, char **out, char *why,
                            size_t whysz);

#endif
