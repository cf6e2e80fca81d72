/*
 * Small JSON helpers shared by handlers and clients.
 */
#ifndef GC_JSONUTIL_H
#define GC_JSONUTIL_H

#include <jansson.h>

#include "buf.h"

/* Append s as a quoted, escaped JSON string (invalid UTF-8 -> U+FFFD). */
enum gc_err jsonutil_escape(struct buf *b, const char *s);

/*
 * Serialise j compactly, keys in insertion order.  Caller frees the result
 * with free(); NULL on allocation failure.
 */
char *jsonutil_compact(const json_t *j);

/* Borrowed string member of obj, or NULL when absent or not a string. */
const char *jsonutil_str(const json_t *obj, const char *key);

#endif
