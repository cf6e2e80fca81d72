/*
 * The HTTP client (clients/http.c) refuses what does not fit instead of
 * cutting it: a URL longer than http_req.url, a ninth header.  Each row
 * builds a request to a listener of our own on loopback and checks what
 * httpc_start said and whether anything reached the listener: a refused
 * request never leaves.  The control rows (a URL and headers that just
 * fit) show that the listener does see what is sent.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "httpc.h"

struct row {
	int line;
	const char *scheme; /* "http" or "https" */
	size_t url_len;     /* total length of the URL */
	int nheaders;
	enum gc_err want_url;   /* what http_req_url said */
	enum gc_err want_start; /* what httpc_start said */
	int want_sent;          /* a connection reached the listener */
};

/* clang-format off */
static const struct row rows[] = {
	/* control: everything fits, the request leaves */
	{__LINE__, "http", 100, 8, GC_OK, GC_OK, 1},
	{__LINE__, "http", 1023, 1, GC_OK, GC_OK, 1},
	/* a URL one byte over: refused, never sent cut */
	{__LINE__, "http", 1024, 1, GC_ETOOBIG, GC_ETOOBIG, 0},
	{__LINE__, "http", 5000, 1, GC_ETOOBIG, GC_ETOOBIG, 0},
	/* a ninth header: refused, not dropped */
	{__LINE__, "http", 100, 9, GC_OK, GC_ETOOBIG, 0},
	{__LINE__, "http", 100, 12, GC_OK, GC_ETOOBIG, 0},
};
/* clang-format on */

/* A listener on 127.0.0.1 (non-blocking accept); its port in *port. */
static int
listener(int *port)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

	assert_true(fd >= 0);
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(fd, 8), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	*port = ntohs(sin.sin_port);
	return fd;
}

/* Whether a connection arrived at fd within about ms (then closed). */
static int
connected(struct httpc *h, int fd, int ms)
{
	struct http_resp resp;
	void *owner;
	int c = -1;

	for (int t = 0; t < ms && c < 0; t += 20) {
		int rc = httpc_next(h, 20, &owner, &resp);
		if (rc == 1)
			http_resp_fini(&resp);
		else if (rc == -1)
			usleep(20 * 1000); /* nothing running: just wait */
		c = accept(fd, NULL, NULL);
	}
	if (c >= 0)
		close(c);
	return c >= 0;
}

static void
test_refuse_what_does_not_fit(void **state)
{
	static char headers[16][32];
	struct httpc_opts o = {.connect_timeout_ms = 1000,
	                       .timeout_ms = 1000,
	                       .max_response_bytes = 4096,
	                       .allow_plain_http = 1};
	int ok = 1;

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *w = &rows[i];
		struct httpc *h = httpc_alloc(&o);
		struct http_req req;
		char path[6000];
		enum gc_err got_url, got_start;
		int port, fd = listener(&port), sent, prefix;
		struct http_resp resp;
		void *owner;

		assert_non_null(h);
		memset(&req, 0, sizeof(req));
		req.method = "GET";
		prefix = snprintf(path, sizeof(path), "%s://127.0.0.1:%d/",
		                  w->scheme, port);
		memset(path + prefix, 'p', w->url_len - (size_t)prefix);
		path[w->url_len] = '\0';
		got_url = http_req_url(&req, "%s", path);
		for (int k = 0; k < w->nheaders; k++) {
			snprintf(headers[k], sizeof(headers[k]), "X-H%d: %d", k,
			         k);
			http_req_header(&req, headers[k]);
		}
		got_start = httpc_start(h, &req, &req);
		sent = connected(h, fd, 300);
		if (got_url != w->want_url || got_start != w->want_start ||
		    sent != w->want_sent) {
			print_error("%s:%d: have url %s, start %s, sent %d; "
			            "want %s, %s, %d\n",
			            __FILE__, w->line, gc_strerror(got_url),
			            gc_strerror(got_start), sent,
			            gc_strerror(w->want_url),
			            gc_strerror(w->want_start), w->want_sent);
			ok = 0;
		}
		if (got_url != GC_OK && req.url[0] != '\0') {
			print_error("%s:%d: a cut URL was kept: %.40s...\n",
			            __FILE__, w->line, req.url);
			ok = 0;
		}
		/* Let a started transfer end (the peer closed on it). */
		while (got_start == GC_OK &&
		       httpc_next(h, 1000, &owner, &resp) == 0)
			;
		if (got_start == GC_OK)
			http_resp_fini(&resp);
		close(fd);
		httpc_free(h);
	}
	assert_true(ok);
}

/* Without allow_plain_http only https leaves: an http URL is refused by
 * libcurl before any connection (the protocol restriction took). */
static void
test_https_only(void **state)
{
	struct httpc_opts o = {.connect_timeout_ms = 1000,
	                       .timeout_ms = 1000,
	                       .max_response_bytes = 4096};
	struct httpc *h = httpc_alloc(&o);
	struct http_req req;
	struct http_resp resp;
	int port, fd = listener(&port);

	(void)state;
	assert_non_null(h);
	memset(&req, 0, sizeof(req));
	req.method = "GET";
	assert_int_equal(http_req_url(&req, "http://127.0.0.1:%d/", port),
	                 GC_OK);
	assert_int_equal(httpc_perform(h, &req, &resp), GC_OK);
	assert_int_equal(resp.result, HTTP_NOT_SENT);
	assert_int_equal(resp.status, 0);
	http_resp_fini(&resp);
	assert_true(accept(fd, NULL, NULL) < 0 && errno == EAGAIN);
	close(fd);
	httpc_free(h);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refuse_what_does_not_fit),
	    cmocka_unit_test(test_https_only),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
