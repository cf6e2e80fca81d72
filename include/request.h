/*
 * One HTTP request as FastCGI hands it to a worker, and the response the
 * handler builds.  Handlers never touch libfcgi: the worker fills the
 * parameter and body callbacks (router.c) and unit tests use their own.
 */
#ifndef GC_REQUEST_H
#define GC_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "app_config.h"
#include "buf.h"
#include "gc_err.h"

struct store;
struct engine;

struct request {
	/* Input, borrowed until the request ends. */
	const char *(*param)(void *ctx, const char *name);
	/* Read up to n body bytes; returns bytes read, 0 at end, -1 error. */
	long (*read)(void *ctx, char *dst, size_t n);
	void *io_ctx;
	const char *method; /* REQUEST_METHOD */
	const char *uri;    /* REQUEST_URI as sent: path and query */
	char path[512];     /* uri up to '?' */
	const char *query;  /* after '?', "" when none */
	char reqid[64];     /* nginx's $request_id, or ours */
	struct buf body;    /* filled by request_read_body */
	const char *route;  /* route label for logs and metrics */
	int route_index;
	char *captures[2]; /* path segments matched by '*' (owned) */

	/* Process context, borrowed. */
	const struct app_config *cfg;
	struct store *st;
	struct engine *eng;
	const struct admin_key *admin_key; /* set once admin auth passed */
	int control_plane; /* on the control socket: data routes are 404 */

	/* Output. */
	int status;
	const char *content_type;
	struct buf headers; /* extra "Name: value\r\n" lines */
	struct buf out;
};

/*
 * Set up req for one request from its parameters.  GC_EINVAL when the
 * method or URI is missing or the path is too long.
 */
enum gc_err request_init(struct request *req);
/* Free what req owns. */
void request_fini(struct request *req);

/* FastCGI parameter (e.g. "HTTP_WEBHOOK_ID"), or NULL; borrowed. */
const char *request_param(const struct request *req, const char *name);

/*
 * Read the body, at most max bytes.  GC_ETOOBIG when CONTENT_LENGTH or the
 * data exceed max, GC_EINVAL when the body ends before CONTENT_LENGTH.
 */
enum gc_err request_read_body(struct request *req, size_t max);

/*
 * Read the body up to the configured max_body_bytes.  Returns 0, or -1
 * with the 413/400 problem already in req.
 */
int request_body_or_problem(struct request *req);

/* Whether the request's Content-Type is JSON (application/json or +json). */
int request_is_json(const struct request *req);

/* Respond with a JSON document (takes a reference to j in every case). */
void request_json(struct request *req, int status, json_t *j);

/*
 * Respond with application/problem+json (RFC 9457): title from the status,
 * detail as given (may be NULL), code a short machine-readable reason, and
 * extra members from ext when not NULL (reference stolen).
 */
void request_problem(struct request *req, int status, const char *code,
                     const char *detail, json_t *ext);

/* printf-style detail. */
void request_problemf(struct request *req, int status, const char *code,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Add a response header line (name and value must not contain CR/LF). */
void request_header(struct request *req, const char *name, const char *value);

/*
 * Value of query parameter name, percent-decoded, into out (size n).
 * Returns 1 when present, 0 when absent, -1 when malformed or too long.
 */
int request_query(const struct request *req, const char *name, char *out,
                  size_t n);

/* Percent-decode s in place; -1 when malformed or it decodes a NUL. */
int request_pct_decode(char *s);

/*
 * Parse a time given as unix seconds or "YYYY-MM-DDTHH:MM:SSZ" into
 * milliseconds.  Returns 0 on success, -1 when malformed.
 */
int request_parse_time(const char *s, int64_t *ms);

/* HTTP status for an error code when nothing more precise applies. */
int request_status_for(enum gc_err err);

/* Reason phrase of an HTTP status. */
const char *request_reason(int status);

#endif
