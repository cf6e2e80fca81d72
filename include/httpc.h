/*
 * The HTTP client: the only module that touches libcurl.  One struct httpc
 * per process (created after fork) holds a curl multi handle, so
 * connections stay alive between events, and runs several transfers at
 * once.  TLS verification is always on.
 */
#ifndef GC_HTTPC_H
#define GC_HTTPC_H

#include <stddef.h>

#include "buf.h"
#include "gc_err.h"

#define HTTPC_MAX_HEADERS 8

/*
 * A request.  Nothing is cut to fit: a URL longer than url[] (set it with
 * http_req_url) or a header beyond HTTPC_MAX_HEADERS (http_req_header)
 * sets err, and httpc_start then refuses the request (GC_ETOOBIG) rather
 * than send a truncated one.  Zero it (memset) before building.
 */
struct http_req {
	const char *method; /* "GET", "POST", "PUT" */
	char url[1024];
	const char *headers[HTTPC_MAX_HEADERS]; /* "Name: value", borrowed */
	int nheaders;
	enum gc_err err;     /* GC_ETOOBIG once something did not fit */
	const char *userpwd; /* HTTP Basic "user:password", or NULL */
	const char *body;    /* borrowed; NULL for none */
	size_t bodylen;
	long timeout_ms; /* 0: the configured default */
};

/* How a transfer ended. */
enum http_result {
	HTTP_OK,         /* a response arrived (any status) */
	HTTP_NOT_SENT,   /* failed before the request left (connect, TLS) */
	HTTP_MAYBE_SENT, /* failed after sending: the server may have acted */
	HTTP_TOO_LARGE,  /* response body over the cap */
	HTTP__MAX
};

struct http_resp {
	enum http_result result;
	long status;        /* HTTP status, 0 when none */
	struct buf body;    /* capped response body */
	struct buf headers; /* raw header lines, for http_resp_header */
	char error[128];    /* transport error text, "" when none */
	int timed_out;
	double seconds; /* total time */
};

struct httpc;

struct httpc_opts {
	long connect_timeout_ms;
	long timeout_ms;
	size_t max_response_bytes;
	const char *ca_file;  /* NULL: system bundle */
	int allow_plain_http; /* gcrelayctl only: servers only use https */
	int max_transfers;    /* at once; 0: a default of 8 */
};

/* Caller frees with httpc_free; NULL on failure. */
struct httpc *httpc_alloc(const struct httpc_opts *opts);
void httpc_free(struct httpc *h);

/*
 * Start a transfer; owner is returned with it by httpc_next.  req's
 * borrowed strings must stay valid until the transfer completes.
 * Nothing is sent on failure: GC_ETOOBIG when req did not fit (see
 * struct http_req), GC_ECONFIG when libcurl refused an option (the
 * https-only restriction, say; logged), GC_EINVAL without a URL,
 * GC_ENOMEM, GC_ESYS.
 */
enum gc_err httpc_start(struct httpc *h, const struct http_req *req,
                        void *owner);

/*
 * Drive transfers until one completes or max_wait_ms passes (0 = only
 * what is ready now).  On completion returns 1, sets *owner and moves the
 * response into resp (caller frees with http_resp_fini).  Returns 0 when
 * nothing completed, -1 when no transfer is running.  When libcurl's
 * multi handle fails, each running transfer completes in turn as
 * HTTP_MAYBE_SENT with the reason in resp->error (logged).
 */
int httpc_next(struct httpc *h, long max_wait_ms, void **owner,
               struct http_resp *resp);

/*
 * Also wait on fd (readable: a wake-up) in httpc_next, which then returns
 * 0 early; httpc_woken tells (and forgets) whether that happened.  Up to
 * HTTPC_WAKE_FDS fds, one per slot (the dispatcher's wake-up pipe and its
 * store connection); fd -1 empties the slot.
 */
#define HTTPC_WAKE_FDS 2
void httpc_wake_fd(struct httpc *h, int slot, int fd);
int httpc_woken(struct httpc *h);

/* How many more transfers may start now. */
int httpc_idle(const struct httpc *h);

/* Start one transfer and wait for it (gcrelayctl, preflight checks). */
enum gc_err httpc_perform(struct httpc *h, const struct http_req *req,
                          struct http_resp *resp);

void http_resp_init(struct http_resp *r);
void http_resp_fini(struct http_resp *r);

/*
 * Value of a response header, name matched case-insensitively, copied into
 * out (size n).  Returns 1 when present.
 */
int http_resp_header(const struct http_resp *r, const char *name, char *out,
                     size_t n);

/* Add a header to req (borrowed pointer); a ninth sets req->err. */
void http_req_header(struct http_req *req, const char *line);

/*
 * Set req->url, printf-style: GC_OK, or GC_ETOOBIG when it does not fit
 * (the URL is then empty and req->err set: the request is refused).
 */
enum gc_err http_req_url(struct http_req *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Percent-encode s for a query component into b.
 */
enum gc_err httpc_escape(struct buf *b, const char *s);

#endif
