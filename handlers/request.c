#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "crypto.h"
#include "jsonutil.h"
#include "request.h"

/* See request.h. */
const char *
request_param(const struct request *req, const char *name)
{
	return req->param(req->io_ctx, name);
}

/* See request.h. */
enum gc_err
request_init(struct request *req)
{
	const char *q, *id;
	size_t n;

	buf_init(&req->body, 0);
	buf_init(&req->headers, 0);
	buf_init(&req->out, 0);
	req->status = 0;
	req->route = "unmatched";
	req->route_index = -1;
	req->method = request_param(req, "REQUEST_METHOD");
	req->uri = request_param(req, "REQUEST_URI");
	if ((id = request_param(req, "REQUEST_ID")) != NULL && *id != '\0')
		snprintf(req->reqid, sizeof(req->reqid), "%s", id);
	if (req->method == NULL || req->uri == NULL || req->uri[0] != '/')
		return GC_EINVAL;
	q = strchr(req->uri, '?');
	n = q ? (size_t)(q - req->uri) : strlen(req->uri);
	req->query = q ? q + 1 : "";
	if (n >= sizeof(req->path))
		return GC_EINVAL;
	memcpy(req->path, req->uri, n);
	req->path[n] = '\0';
	return GC_OK;
}

/* See request.h. */
void
request_fini(struct request *req)
{
	buf_free(&req->body);
	buf_free(&req->headers);
	buf_free(&req->out);
	for (size_t i = 0; i < 2; i++) {
		free(req->captures[i]);
		req->captures[i] = NULL;
	}
}

/* See request.h. */
enum gc_err
request_read_body(struct request *req, size_t max)
{
	const char *cl = request_param(req, "CONTENT_LENGTH");
	unsigned long long want = 0;
	char chunk[8192], *end;
	long n;
	enum gc_err err;

	buf_init(&req->body, max);
	if (cl != NULL && *cl != '\0') {
		want = strtoull(cl, &end, 10);
		if (*end != '\0' || cl[0] == '-')
			return GC_EINVAL;
		if (want > max)
			return GC_ETOOBIG;
	}
	while ((n = req->read(req->io_ctx, chunk, sizeof(chunk))) > 0)
		if ((err = buf_append(&req->body, chunk, (size_t)n)) != GC_OK)
			return err;
	if (n < 0 || (cl != NULL && *cl != '\0' && req->body.len != want))
		return GC_EINVAL;
	if (req->body.ptr == NULL)
		return buf_append(&req->body, "", 0);
	return GC_OK;
}

/* See request.h. */
int
request_body_or_problem(struct request *req)
{
	enum gc_err err = request_read_body(req, req->cfg->max_body_bytes);

	if (err == GC_OK)
		return 0;
	if (err == GC_ETOOBIG)
		request_problemf(req, 413, "body_too_large",
		                 "body exceeds max_body_bytes (%zu)",
		                 req->cfg->max_body_bytes);
	else
		request_problem(req, 400, "bad_body",
		                "could not read the whole request body", NULL);
	return -1;
}

/* See request.h. */
int
request_is_json(const struct request *req)
{
	const char *ct = request_param(req, "CONTENT_TYPE");
	size_t n;

	if (ct == NULL)
		return 0;
	n = strcspn(ct, "; \t");
	if (n == 16 && strncasecmp(ct, "application/json", 16) == 0)
		return 1;
	/* application/<something>+json */
	return n > 17 && strncasecmp(ct, "application/", 12) == 0 &&
	       strncasecmp(ct + n - 5, "+json", 5) == 0;
}

/* See request.h. */
void
request_json(struct request *req, int status, json_t *j)
{
	char *text = j ? jsonutil_compact(j) : NULL;

	buf_reset(&req->out);
	req->status = status;
	req->content_type = "application/json";
	if (text == NULL) {
		req->status = 500;
		buf_puts(&req->out, "{\"status\":\"error\"}\n");
	} else {
		buf_puts(&req->out, text);
		buf_puts(&req->out, "\n");
	}
	free(text);
	json_decref(j);
}

/* See request.h. */
void
request_problem(struct request *req, int status, const char *code,
                const char *detail, json_t *ext)
{
	json_t *p = json_object();

	if (p == NULL) {
		json_decref(ext);
		request_json(req, status, NULL);
		return;
	}
	json_object_set_new(p, "type", json_string("about:blank"));
	json_object_set_new(p, "title", json_string(request_reason(status)));
	json_object_set_new(p, "status", json_integer(status));
	if (detail != NULL)
		json_object_set_new(p, "detail", json_string(detail));
	if (code != NULL)
		json_object_set_new(p, "code", json_string(code));
	if (req->reqid[0] != '\0')
		json_object_set_new(p, "request_id", json_string(req->reqid));
	if (ext != NULL) {
		json_object_update(p, ext);
		json_decref(ext);
	}
	request_json(req, status, p);
	req->content_type = "application/problem+json";
}

/* See request.h. */
void
request_problemf(struct request *req, int status, const char *code,
                 const char *fmt, ...)
{
	char detail[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	request_problem(req, status, code, detail, NULL);
}

/* See request.h. */
void
request_header(struct request *req, const char *name, const char *value)
{
	if (strpbrk(name, "\r\n") || strpbrk(value, "\r\n"))
		return;
	buf_printf(&req->headers, "%s: %s\r\n", name, value);
}

/* See request.h. */
int
request_status_for(enum gc_err err)
{
	switch (err) {
	case GC_OK:
		return 200;
	case GC_EINVAL:
		return 400;
	case GC_EAUTH:
		return 401;
	case GC_EFORBIDDEN:
		return 403;
	case GC_ENOTFOUND:
		return 404;
	case GC_ETOOBIG:
		return 413;
	case GC_EEXISTS:
		return 409;
	case GC_ESTORE:
	case GC_ETIMEOUT:
		return 503;
	case GC_EUPSTREAM:
		return 502;
	default:
		return 500;
	}
}

/* See request.h. */
const char *
request_reason(int status)
{
	switch (status) {
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 500:
		return "Internal Server Error";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

/*
 * Percent-decode [p, end) into out ('+' is a space in queries only); -1
 * when malformed or too long.
 */
static int
query_decode(const char *p, const char *end, char *out, size_t n, int plus)
{
	size_t o = 0;

	for (; p < end; p++) {
		char c = *p;
		if (c == '+' && plus)
			c = ' ';
		else if (c == '%') {
			if (end - p < 3 || crypto_hex_value(p[1]) < 0 ||
			    crypto_hex_value(p[2]) < 0)
				return -1;
			c = (char)(crypto_hex_value(p[1]) << 4 |
			           crypto_hex_value(p[2]));
			p += 2;
		}
		if (c == '\0' || o + 1 >= n)
			return -1;
		out[o++] = c;
	}
	out[o] = '\0';
	return 1;
}

/* See request.h. */
int
request_pct_decode(char *s)
{
	char tmp[1024];
	size_t n = strlen(s);

	if (n >= sizeof(tmp) || !strchr(s, '%'))
		return n >= sizeof(tmp) ? -1 : 0;
	if (query_decode(s, s + n, tmp, sizeof(tmp), 0) < 0)
		return -1;
	memcpy(s, tmp, strlen(tmp) + 1);
	return 0;
}

/* See request.h. */
int
request_query(const struct request *req, const char *name, char *out, size_t n)
{
	const char *p = req->query, *amp, *eq;
	size_t nl = strlen(name);

	while (*p != '\0') {
		amp = strchr(p, '&');
		if (amp == NULL)
			amp = p + strlen(p);
		eq = memchr(p, '=', (size_t)(amp - p));
		if (eq != NULL && (size_t)(eq - p) == nl &&
		    strncmp(p, name, nl) == 0)
			return query_decode(eq + 1, amp, out, n, 1);
		p = *amp ? amp + 1 : amp;
	}
	return 0;
}

/* See request.h. */
int
request_parse_time(const char *s, int64_t *ms)
{
	struct tm tm;
	char *end;
	long long v;

	if (*s >= '0' && *s <= '9' && strlen(s) <= 12 &&
	    strspn(s, "0123456789") == strlen(s)) {
		v = strtoll(s, &end, 10);
		*ms = (int64_t)v * 1000;
		return 0;
	}
	memset(&tm, 0, sizeof(tm));
	end = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (end == NULL || *end != '\0')
		return -1;
	*ms = (int64_t)timegm(&tm) * 1000;
	return 0;
}
