/*
 * Client step tests in curl's shape: checking the exact request a job
 * built (shared by the step tests of each destination).  Include it
 * after cmocka.h (it reports with print_error).
 */
#ifndef GC_TEST_REQ_IS_H
#define GC_TEST_REQ_IS_H

#include <stdio.h>
#include <string.h>

#include "dest.h"

/*
 * Whether j->req is exactly method, url, headers (NULL-terminated) and
 * body (NULL: none); prints what differs, at the caller's file:line.
 */
static int
req_is_at(const char *file, int line, const struct job *j, const char *method,
          const char *url, const char *const *headers, const char *body)
{
	const struct http_req *q = &j->req;
	int ok = 1, n = 0;

	if (strcmp(q->method, method) != 0 || strcmp(q->url, url) != 0) {
		print_error("%s:%d: have %s %s, want %s %s\n", file, line,
		            q->method, q->url, method, url);
		ok = 0;
	}
	for (; headers[n] != NULL; n++)
		if (n >= q->nheaders ||
		    strcmp(q->headers[n], headers[n]) != 0) {
			print_error("%s:%d: header %d: have \"%s\", want "
			            "\"%s\"\n",
			            file, line, n,
			            n < q->nheaders ? q->headers[n] : "(none)",
			            headers[n]);
			ok = 0;
		}
	if (n != q->nheaders) {
		print_error("%s:%d: have %d headers, want %d\n", file, line,
		            q->nheaders, n);
		ok = 0;
	}
	if (body == NULL ? q->body != NULL
	                 : q->body == NULL || q->bodylen != strlen(body) ||
	                       memcmp(q->body, body, q->bodylen) != 0) {
		print_error("%s:%d: body: have %.*s, want %s\n", file, line,
		            q->body ? (int)q->bodylen : 6,
		            q->body ? q->body : "(none)",
		            body ? body : "(none)");
		ok = 0;
	}
	return ok;
}

#define req_is(line, ...) req_is_at(__FILE__, (line), __VA_ARGS__)

#endif
