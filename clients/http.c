#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#include "httpc.h"
#include "log.h"

#define POOL_DEFAULT 8 /* transfers at once unless opts say more */

/* One transfer in flight. */
struct xfer {
	CURL *easy;
	struct curl_slist *hdrs;
	struct http_resp resp;
	void *owner;
	const char *upload; /* request body, borrowed */
	size_t upload_len;
	size_t upload_pos;
	int upload_read; /* curl has taken some of the body */
	size_t max;
	int in_use;
	int body_over;
	char errbuf[CURL_ERROR_SIZE];
};

struct httpc {
	CURLM *multi;
	struct httpc_opts opts;
	char *ca_file;
	struct xfer *pool;
	int npool;
	int running;
	int wake_fd[HTTPC_WAKE_FDS]; /* also polled; -1 when none */
	int woken;                   /* one of them was readable */
};

/* See httpc.h. */
void
http_resp_init(struct http_resp *r)
{
	memset(r, 0, sizeof(*r));
	buf_init(&r->body, 0);
	buf_init(&r->headers, 0);
}

/* See httpc.h. */
void
http_resp_fini(struct http_resp *r)
{
	buf_free(&r->body);
	buf_free(&r->headers);
}

/* See httpc.h. */
void
http_req_header(struct http_req *req, const char *line)
{
	if (req->nheaders >= HTTPC_MAX_HEADERS) {
		req->err = GC_ETOOBIG; /* httpc_start refuses it */
		return;
	}
	req->headers[req->nheaders++] = line;
}

/* See httpc.h. */
enum gc_err
http_req_url(struct http_req *req, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(req->url, sizeof(req->url), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(req->url))
		return GC_OK;
	/* Never a cut URL: nothing is sent to a truncated address. */
	req->url[0] = '\0';
	req->err = GC_ETOOBIG;
	return GC_ETOOBIG;
}

/* See httpc.h. */
struct httpc *
httpc_alloc(const struct httpc_opts *opts)
{
	struct httpc *h = calloc(1, sizeof(*h));

	if (h == NULL)
		return NULL;
	h->opts = *opts;
	if (opts->ca_file != NULL &&
	    (h->ca_file = strdup(opts->ca_file)) == NULL)
		goto fail;
	for (int i = 0; i < HTTPC_WAKE_FDS; i++)
		h->wake_fd[i] = -1;
	h->npool = opts->max_transfers > 0 ? opts->max_transfers : POOL_DEFAULT;
	if ((h->pool = calloc((size_t)h->npool, sizeof(*h->pool))) == NULL)
		goto fail;
	if ((h->multi = curl_multi_init()) == NULL)
		goto fail;
	/* Keep a connection alive for each transfer that may run at once. */
	if (curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS,
	                      (long)(h->npool > 16 ? h->npool : 16)) !=
	    CURLM_OK)
		goto fail;
	return h;
fail:
	if (h->multi != NULL)
		curl_multi_cleanup(h->multi);
	free(h->pool);
	free(h->ca_file);
	free(h);
	return NULL;
}

/* See httpc.h. */
void
httpc_free(struct httpc *h)
{
	if (h == NULL)
		return;
	for (int i = 0; i < h->npool; i++) {
		struct xfer *x = &h->pool[i];
		if (x->easy == NULL)
			continue;
		if (x->in_use)
			curl_multi_remove_handle(h->multi, x->easy);
		curl_easy_cleanup(x->easy);
		curl_slist_free_all(x->hdrs);
		http_resp_fini(&x->resp);
	}
	curl_multi_cleanup(h->multi);
	free(h->pool);
	free(h->ca_file);
	free(h);
}

static size_t
on_body(char *data, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;

	if (x->resp.body.len + len > x->max) {
		x->body_over = 1;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	if (buf_append(&x->resp.body, data, len) != GC_OK)
		return 0;
	return len;
}

static size_t
on_header(char *data, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;

	/* A new status line (redirects are off, but 100-continue) resets. */
	if (len > 5 && strncmp(data, "HTTP/", 5) == 0)
		buf_reset(&x->resp.headers);
	if (x->resp.headers.len + len < 64 * 1024)
		buf_append(&x->resp.headers, data, len);
	return len;
}

/* Hand the request body to curl. */
static size_t
on_read(char *dst, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t left = x->upload_len - x->upload_pos, len = size * n;

	if (len > left)
		len = left;
	memcpy(dst, x->upload + x->upload_pos, len);
	x->upload_pos += len;
	x->upload_read = 1;
	return len;
}

/*
 * curl rewinds the body to resend a request, for instance when a kept-alive
 * connection turns out dead after the request was written.  For a POST
 * that is not safe (Yotpo would award twice), so once any of the body has
 * been taken, refuse: the transfer fails and is classed "maybe sent".
 */
static int
on_seek(void *arg, curl_off_t offset, int origin)
{
	struct xfer *x = arg;

	if (x->upload_read || offset != 0 || origin != SEEK_SET)
		return CURL_SEEKFUNC_FAIL;
	x->upload_pos = 0;
	return CURL_SEEKFUNC_OK;
}

static struct xfer *
xfer_get(struct httpc *h)
{
	for (int i = 0; i < h->npool; i++) {
		struct xfer *x = &h->pool[i];
		if (x->in_use)
			continue;
		if (x->easy == NULL && (x->easy = curl_easy_init()) == NULL)
			return NULL;
		curl_easy_reset(x->easy);
		curl_slist_free_all(x->hdrs);
		x->hdrs = NULL;
		http_resp_fini(&x->resp);
		http_resp_init(&x->resp);
		x->body_over = 0;
		x->upload = NULL;
		x->upload_len = x->upload_pos = 0;
		x->upload_read = 0;
		x->errbuf[0] = '\0';
		return x;
	}
	return NULL;
}

/*
 * Set curl option opt of e to val unless an earlier one failed; rc keeps
 * the first failure and bad its name.  Every option matters (above all
 * the https-only protocol restriction): one that does not take refuses
 * the request rather than send it without.
 */
#define XFER_SET(opt, val)                                                     \
	do {                                                                   \
		if (rc == CURLE_OK &&                                          \
		    (rc = curl_easy_setopt(e, opt, val)) != CURLE_OK)          \
			bad = #opt;                                            \
	} while (0)

/* The request's headers, and none of curl's "Expect: 100-continue". */
static enum gc_err
xfer_headers(struct xfer *x, const struct http_req *req)
{
	struct curl_slist *more;

	/* On failure x->hdrs stays whole; xfer_get frees it on reuse. */
	for (int i = 0; i < req->nheaders; i++) {
		if ((more = curl_slist_append(x->hdrs, req->headers[i])) ==
		    NULL)
			return GC_ENOMEM;
		x->hdrs = more;
	}
	if ((more = curl_slist_append(x->hdrs, "Expect:")) == NULL)
		return GC_ENOMEM;
	x->hdrs = more;
	return GC_OK;
}

/* The body, read through on_read (and never rewound once read). */
static CURLcode
xfer_body(struct xfer *x, const struct http_req *req)
{
	CURL *e = x->easy;
	CURLcode rc = CURLE_OK;
	const char *bad = NULL;

	x->upload = req->body;
	x->upload_len = req->bodylen;
	x->upload_pos = 0;
	x->upload_read = 0;
	XFER_SET(CURLOPT_POST, 1L);
	XFER_SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->bodylen);
	XFER_SET(CURLOPT_READFUNCTION, on_read);
	XFER_SET(CURLOPT_READDATA, x);
	XFER_SET(CURLOPT_SEEKFUNCTION, on_seek);
	XFER_SET(CURLOPT_SEEKDATA, x);
	if (rc != CURLE_OK)
		log_errorx("http: libcurl refused %s: %s; request not sent",
		           bad, curl_easy_strerror(rc));
	return rc;
}

/*
 * Set x up for req: GC_ETOOBIG when the request did not fit (a URL or a
 * header over the limits: see http_req_url), GC_ECONFIG when libcurl
 * refuses an option (logged), GC_ENOMEM.
 */
static enum gc_err
xfer_setup(struct httpc *h, struct xfer *x, const struct http_req *req)
{
	CURL *e = x->easy;
	long timeout = req->timeout_ms ? req->timeout_ms : h->opts.timeout_ms;
	const char *protos = h->opts.allow_plain_http ? "http,https" : "https";
	CURLcode rc = CURLE_OK;
	const char *bad = NULL;
	enum gc_err err;

	if (req->err != GC_OK || req->nheaders > HTTPC_MAX_HEADERS)
		return GC_ETOOBIG;
	if (req->url[0] == '\0' || req->method == NULL)
		return GC_EINVAL;
	if ((err = xfer_headers(x, req)) != GC_OK)
		return err;
	XFER_SET(CURLOPT_URL, req->url);
	XFER_SET(CURLOPT_PROTOCOLS_STR, protos);
	XFER_SET(CURLOPT_REDIR_PROTOCOLS_STR, protos);
	XFER_SET(CURLOPT_FOLLOWLOCATION, 0L);
	XFER_SET(CURLOPT_SSL_VERIFYPEER, 1L);
	XFER_SET(CURLOPT_SSL_VERIFYHOST, 2L);
	if (h->ca_file != NULL)
		XFER_SET(CURLOPT_CAINFO, h->ca_file);
	XFER_SET(CURLOPT_CONNECTTIMEOUT_MS, h->opts.connect_timeout_ms);
	XFER_SET(CURLOPT_TIMEOUT_MS, timeout);
	XFER_SET(CURLOPT_NOSIGNAL, 1L);
	XFER_SET(CURLOPT_HTTPHEADER, x->hdrs);
	XFER_SET(CURLOPT_CUSTOMREQUEST, req->method);
	XFER_SET(CURLOPT_USERAGENT, "gcrelay/0.1");
	XFER_SET(CURLOPT_WRITEFUNCTION, on_body);
	XFER_SET(CURLOPT_WRITEDATA, x);
	XFER_SET(CURLOPT_HEADERFUNCTION, on_header);
	XFER_SET(CURLOPT_HEADERDATA, x);
	XFER_SET(CURLOPT_ERRORBUFFER, x->errbuf);
	XFER_SET(CURLOPT_PRIVATE, x);
	if (req->userpwd != NULL) {
		XFER_SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		XFER_SET(CURLOPT_USERPWD, req->userpwd);
	}
	if (rc == CURLE_OK && req->body != NULL)
		return xfer_body(x, req) == CURLE_OK ? GC_OK : GC_ECONFIG;
	if (req->body == NULL && strcmp(req->method, "GET") == 0)
		XFER_SET(CURLOPT_HTTPGET, 1L);
	if (rc == CURLE_OK)
		return GC_OK;
	log_errorx("http: libcurl refused %s: %s; request not sent", bad,
	           curl_easy_strerror(rc));
	return GC_ECONFIG;
}

#undef XFER_SET

/* See httpc.h. */
enum gc_err
httpc_start(struct httpc *h, const struct http_req *req, void *owner)
{
	struct xfer *x = xfer_get(h);
	enum gc_err err;
	CURLMcode mc;

	if (x == NULL)
		return GC_ENOMEM;
	x->owner = owner;
	x->max = h->opts.max_response_bytes;
	buf_init(&x->resp.body, 0);
	if ((err = xfer_setup(h, x, req)) != GC_OK)
		return err;
	if ((mc = curl_multi_add_handle(h->multi, x->easy)) != CURLM_OK) {
		log_errorx("http: curl_multi_add_handle: %s",
		           curl_multi_strerror(mc));
		return GC_ESYS;
	}
	x->in_use = 1;
	h->running++;
	return GC_OK;
}

/* Classify a finished transfer into x->resp. */
static void
xfer_finish(struct xfer *x, CURLcode rc)
{
	long reqsize = 0;
	struct http_resp *r = &x->resp;

	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_getinfo(x->easy, CURLINFO_TOTAL_TIME, &r->seconds);
	curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &reqsize);
	r->timed_out = rc == CURLE_OPERATION_TIMEDOUT;
	if (rc == CURLE_OK) {
		r->result = HTTP_OK;
		return;
	}
	snprintf(r->error, sizeof(r->error), "%.120s",
	         x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
	if (x->body_over) {
		r->result = HTTP_TOO_LARGE;
		snprintf(r->error, sizeof(r->error),
		         "response body over %zu bytes", x->max);
	} else if ((reqsize == 0 && !x->upload_read) ||
	           rc == CURLE_COULDNT_CONNECT ||
	           rc == CURLE_COULDNT_RESOLVE_HOST ||
	           rc == CURLE_SSL_CONNECT_ERROR ||
	           rc == CURLE_PEER_FAILED_VERIFICATION ||
	           rc == CURLE_UNSUPPORTED_PROTOCOL ||
	           rc == CURLE_URL_MALFORMAT)
		r->result = HTTP_NOT_SENT;
	else
		r->result = HTTP_MAYBE_SENT;
	r->status = r->status > 0 ? r->status : 0;
}

/* The transfer of easy handle e, or NULL. */
static struct xfer *
xfer_of(struct httpc *h, CURL *e)
{
	for (int i = 0; i < h->npool; i++)
		if (h->pool[i].in_use && h->pool[i].easy == e)
			return &h->pool[i];
	return NULL;
}

/* Take x off the multi handle: its response moves to *resp. */
static void
xfer_done(struct httpc *h, struct xfer *x, void **owner, struct http_resp *resp)
{
	CURLMcode mc = curl_multi_remove_handle(h->multi, x->easy);

	if (mc != CURLM_OK)
		log_warnx("http: curl_multi_remove_handle: %s",
		          curl_multi_strerror(mc));
	x->in_use = 0;
	h->running--;
	*owner = x->owner;
	*resp = x->resp;
	http_resp_init(&x->resp);
}

/*
 * The multi handle failed (mc): no transfer on it can be trusted to end,
 * so each is ended here, one per call, as "maybe sent" (the request may
 * have left).  Returns 1 with one of them, or -1 when none is left.
 */
static int
xfer_abort(struct httpc *h, CURLMcode mc, void **owner, struct http_resp *resp)
{
	for (int i = 0; i < h->npool; i++) {
		struct xfer *x = &h->pool[i];
		if (!x->in_use)
			continue;
		log_errorx("http: %s; ending the transfer",
		           curl_multi_strerror(mc));
		x->resp.result = HTTP_MAYBE_SENT;
		snprintf(x->resp.error, sizeof(x->resp.error),
		         "curl multi handle failed: %.80s",
		         curl_multi_strerror(mc));
		xfer_done(h, x, owner, resp);
		return 1;
	}
	return -1;
}

/* See httpc.h. */
int
httpc_next(struct httpc *h, long max_wait_ms, void **owner,
           struct http_resp *resp)
{
	CURLMsg *msg;
	CURLMcode mc;
	int still, left;

	*owner = NULL;
	for (;;) {
		if ((mc = curl_multi_perform(h->multi, &still)) != CURLM_OK)
			return xfer_abort(h, mc, owner, resp);
		while ((msg = curl_multi_info_read(h->multi, &left)) != NULL) {
			struct xfer *x = xfer_of(h, msg->easy_handle);
			if (msg->msg != CURLMSG_DONE || x == NULL)
				continue;
			xfer_finish(x, msg->data.result);
			xfer_done(h, x, owner, resp);
			return 1;
		}
		if (h->running == 0)
			return -1;
		if (max_wait_ms <= 0 || h->woken)
			return 0;
		long step = max_wait_ms < 100 ? max_wait_ms : 100;
		struct curl_waitfd w[HTTPC_WAKE_FDS];
		unsigned nw = 0;
		for (int i = 0; i < HTTPC_WAKE_FDS; i++)
			if (h->wake_fd[i] >= 0)
				w[nw++] = (struct curl_waitfd){
				    h->wake_fd[i], CURL_WAIT_POLLIN, 0};
		mc = curl_multi_poll(h->multi, nw > 0 ? w : NULL, nw, (int)step,
		                     NULL);
		if (mc != CURLM_OK)
			return xfer_abort(h, mc, owner, resp);
		for (unsigned i = 0; i < nw; i++)
			if (w[i].revents != 0)
				h->woken = 1;
		max_wait_ms -= step;
	}
}

/* See httpc.h. */
void
httpc_wake_fd(struct httpc *h, int slot, int fd)
{
	if (slot >= 0 && slot < HTTPC_WAKE_FDS)
		h->wake_fd[slot] = fd;
}

/* See httpc.h. */
int
httpc_woken(struct httpc *h)
{
	int w = h->woken;

	h->woken = 0;
	return w;
}

/* See httpc.h. */
int
httpc_idle(const struct httpc *h)
{
	return h->npool - h->running;
}

/* See httpc.h. */
enum gc_err
httpc_perform(struct httpc *h, const struct http_req *req,
              struct http_resp *resp)
{
	static int marker;
	void *owner;
	enum gc_err err;
	int rc;

	http_resp_init(resp);
	if ((err = httpc_start(h, req, &marker)) != GC_OK) {
		resp->result = HTTP_NOT_SENT;
		snprintf(resp->error, sizeof(resp->error),
		         "request refused before sending: %s",
		         err == GC_ETOOBIG ? "URL or headers over the limits"
		                           : gc_strerror(err));
		return err;
	}
	while ((rc = httpc_next(h, 1000, &owner, resp)) == 0)
		;
	return rc == 1 ? GC_OK : GC_ESYS;
}

/* See httpc.h. */
int
http_resp_header(const struct http_resp *r, const char *name, char *out,
                 size_t n)
{
	const char *p = buf_str(&r->headers);
	size_t nl = strlen(name);

	while (*p != '\0') {
		const char *eol = strstr(p, "\r\n");
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (len > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
			const char *v = p + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			size_t vlen = len - (size_t)(v - p);
			while (vlen > 0 &&
			       (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
				vlen--;
			snprintf(out, n, "%.*s", (int)vlen, v);
			return 1;
		}
		p += len;
		if (eol != NULL)
			p += 2;
	}
	if (n > 0)
		out[0] = '\0';
	return 0;
}

/* See httpc.h. */
enum gc_err
httpc_escape(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";
	enum gc_err err = GC_OK;

	for (const unsigned char *p = (const unsigned char *)s;
	     *p != '\0' && err == GC_OK; p++) {
		if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		    (*p >= '0' && *p <= '9') || strchr("-._~", *p))
			err = buf_append(b, p, 1);
		else
			err = buf_printf(b, "%%%c%c", hex[*p >> 4],
			                 hex[*p & 0xf]);
	}
	return err;
}
