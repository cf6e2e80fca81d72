/*
 * Capped growable byte buffer (after curl's dynbuf).  The buffer is always
 * NUL-terminated when ptr is not NULL.  An append that would exceed max
 * fails with GC_ETOOBIG and frees the buffer, so a caller that ignores the
 * error cannot use a half-written body.
 */
#ifndef GC_BUF_H
#define GC_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "gc_err.h"

struct buf {
	char *ptr;  /* owned; NULL until the first append */
	size_t len; /* bytes used, excluding the NUL */
	size_t cap; /* bytes allocated */
	size_t max; /* cap on len; 0 means unlimited */
};

/* Prepare b with the given cap (0 = unlimited); allocates nothing. */
void buf_init(struct buf *b, size_t max);
/* Free the contents; b may be reused after buf_init or buf_reset. */
void buf_free(struct buf *b);
/* Forget the contents but keep the allocation. */
void buf_reset(struct buf *b);
/* Append n bytes.  GC_ETOOBIG or GC_ENOMEM free b's contents. */
enum gc_err buf_append(struct buf *b, const void *data, size_t n);
/* Append a NUL-terminated string. */
enum gc_err buf_puts(struct buf *b, const char *s);
/* Append formatted text. */
enum gc_err buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum gc_err buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Take the contents: caller frees with free(); b is left empty. */
char *buf_steal(struct buf *b);
/* Contents as a string: borrowed, "" when empty. */
const char *buf_str(const struct buf *b);

#endif
