#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

/* See buf.h. */
void
buf_init(struct buf *b, size_t max)
{
	b->ptr = NULL;
	b->len = b->cap = 0;
	b->max = max;
}

/* See buf.h. */
void
buf_free(struct buf *b)
{
	free(b->ptr);
	b->ptr = NULL;
	b->len = b->cap = 0;
}

/* See buf.h. */
void
buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->ptr != NULL)
		b->ptr[0] = '\0';
}

static enum gc_err
buf_grow(struct buf *b, size_t need)
{
	size_t ncap;
	char *p;

	if (need <= b->cap)
		return GC_OK;
	ncap = b->cap ? b->cap : 64;
	while (ncap < need) {
		if (ncap > (size_t)-1 / 2) {
			buf_free(b);
			return GC_ENOMEM;
		}
		ncap *= 2;
	}
	if ((p = realloc(b->ptr, ncap)) == NULL) {
		buf_free(b);
		return GC_ENOMEM;
	}
	b->ptr = p;
	b->cap = ncap;
	return GC_OK;
}

/* See buf.h. */
enum gc_err
buf_append(struct buf *b, const void *data, size_t n)
{
	enum gc_err err;

	if (n > (size_t)-1 - b->len - 1 || (b->max && b->len + n > b->max)) {
		buf_free(b);
		return GC_ETOOBIG;
	}
	if ((err = buf_grow(b, b->len + n + 1)) != GC_OK)
		return err;
	if (n > 0)
		memcpy(b->ptr + b->len, data, n);
	b->len += n;
	b->ptr[b->len] = '\0';
	return GC_OK;
}

/* See buf.h. */
enum gc_err
buf_puts(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

/* See buf.h. */
enum gc_err
buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list cp;
	enum gc_err err;
	int n;

	va_copy(cp, ap);
	n = vsnprintf(NULL, 0, fmt, cp);
	va_end(cp);
	if (n < 0)
		return GC_EINVAL;
	if (b->max && b->len + (size_t)n > b->max) {
		buf_free(b);
		return GC_ETOOBIG;
	}
	if ((err = buf_grow(b, b->len + (size_t)n + 1)) != GC_OK)
		return err;
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return GC_OK;
}

/* See buf.h. */
enum gc_err
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	enum gc_err err;

	va_start(ap, fmt);
	err = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return err;
}

/* See buf.h. */
char *
buf_steal(struct buf *b)
{
	char *p = b->ptr;

	if (p == NULL)
		p = calloc(1, 1);
	b->ptr = NULL;
	b->len = b->cap = 0;
	return p;
}

/* See buf.h. */
const char *
buf_str(const struct buf *b)
{
	return b->ptr ? b->ptr : "";
}
