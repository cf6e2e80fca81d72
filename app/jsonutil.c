#include <string.h>

#include "jsonutil.h"

/* Length of the valid UTF-8 sequence at p, or 0 when it is invalid. */
static size_t
utf8_len(const unsigned char *p)
{
	size_t n, i;
	unsigned cp;

	if (p[0] < 0x80)
		return 1;
	if ((p[0] & 0xe0) == 0xc0) {
		n = 2;
		cp = p[0] & 0x1f;
	} else if ((p[0] & 0xf0) == 0xe0) {
		n = 3;
		cp = p[0] & 0x0f;
	} else if ((p[0] & 0xf8) == 0xf0) {
		n = 4;
		cp = p[0] & 0x07;
	} else
		return 0;
	for (i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/* See jsonutil.h. */
enum gc_err
jsonutil_escape(struct buf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)(s ? s : "");
	enum gc_err err;
	size_t n;

	if ((err = buf_append(b, "\"", 1)) != GC_OK)
		return err;
	while (*p != '\0') {
		if (*p == '"' || *p == '\\')
			err = buf_printf(b, "\\%c", *p);
		else if (*p == '\n')
			err = buf_puts(b, "\\n");
		else if (*p < 0x20 || *p == 0x7f)
			err = buf_printf(b, "\\u%04x", *p);
		else if ((n = utf8_len(p)) == 0)
			err = buf_puts(b, "\\ufffd");
		else {
			err = buf_append(b, p, n);
			p += n;
			if (err != GC_OK)
				return err;
			continue;
		}
		if (err != GC_OK)
			return err;
		p++;
	}
	return buf_append(b, "\"", 1);
}

/* See jsonutil.h. */
char *
jsonutil_compact(const json_t *j)
{
	return json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
}

/* See jsonutil.h. */
const char *
jsonutil_str(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}
