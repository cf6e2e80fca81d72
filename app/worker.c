#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>

#include "crypto.h"
#include "engine.h"
#include "handlers.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "worker.h"

volatile sig_atomic_t worker_stop;

/* The listener while the stop signal is unblocked: between requests. */
static volatile sig_atomic_t worker_listen_fd = -1;

/*
 * The stop signal is only delivered between requests (it is blocked while
 * one is served).  Closing the listener makes an accept() that is about to
 * start, or is restarted after this handler (SA_RESTART), fail with EBADF,
 * so one signal is enough whenever it comes.
 */
static void
worker_on_stop(int sig)
{
	int save = errno;

	(void)sig;
	worker_stop = 1;
	if (worker_listen_fd != -1) {
		close(worker_listen_fd);
		worker_listen_fd = -1;
	}
	errno = save;
}

/* See worker.h. */
void
worker_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = worker_on_stop;
	sigemptyset(&sa.sa_mask);
	sigaddset(&sa.sa_mask, SIGTERM);
	sigaddset(&sa.sa_mask, SIGINT);
	sigaddset(&sa.sa_mask, SIGUSR1);
	/*
	 * SA_RESTART: libfcgi does not retry on EINTR, so an interrupted
	 * read of a request's params would drop it.  A blocked accept()
	 * ends anyway: the handler closes the listener.
	 */
	sa.sa_flags = SA_RESTART;
	/* Without them a stop would kill a request mid-way: exit instead
	 * (the master logs it and starts another). */
	/*
	 * SIGUSR1 is FastCGI's "finish and exit".  Ours, set before
	 * FCGX_Init: libfcgi's own only makes every later accept() fail, and
	 * the worker would spin on that.
	 */
	if (sigaction(SIGTERM, &sa, NULL) != 0 ||
	    sigaction(SIGINT, &sa, NULL) != 0 ||
	    sigaction(SIGUSR1, &sa, NULL) != 0 ||
	    signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		fatal("worker signals");
}

static const char *
fcgi_param(void *ctx, const char *name)
{
	FCGX_Request *r = ctx;

	return FCGX_GetParam(name, r->envp);
}

static long
fcgi_read(void *ctx, char *dst, size_t n)
{
	FCGX_Request *r = ctx;
	int got = FCGX_GetStr(dst, (int)n, r->in);

	if (got < 0 || FCGX_GetError(r->in) != 0)
		return -1;
	return got;
}

static double
elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 +
	       (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/*
 * Write status line, headers and body to FastCGI stdout and flush them.
 * The head is formatted by us: libfcgi's own printf knows no %zu.
 * Returns 0, or -1 when a write to nginx failed (logged once).
 */
static int
worker_respond(FCGX_Request *r, struct request *req)
{
	struct buf head;
	int rc = 0;

	buf_init(&head, 0);
	buf_printf(&head,
	           "Status: %d %s\r\nContent-Type: %s\r\n"
	           "Content-Length: %zu\r\nCache-Control: no-store\r\n"
	           "%s\r\n",
	           req->status, request_reason(req->status),
	           req->content_type ? req->content_type : "text/plain",
	           req->out.len, buf_str(&req->headers));
	if (FCGX_PutStr(buf_str(&head), (int)head.len, r->out) != (int)head.len)
		rc = -1;
	buf_free(&head);
	if (rc == 0 && req->out.len > 0 &&
	    FCGX_PutStr(req->out.ptr, (int)req->out.len, r->out) !=
	        (int)req->out.len)
		rc = -1;
	if (rc == 0 && FCGX_FFlush(r->out) != 0)
		rc = -1;
	if (rc != 0)
		log_warnx("response to nginx not written: %s",
		          strerror(FCGX_GetError(r->out) > 0
		                       ? FCGX_GetError(r->out)
		                       : EIO));
	return rc;
}

/* Make a request id when nginx did not pass one. */
static void
worker_reqid(struct request *req)
{
	uint8_t raw[8];
	static const char hex[] = "0123456789abcdef";

	if (req->reqid[0] != '\0')
		return;
	if (crypto_random(raw, sizeof(raw)) != GC_OK)
		memset(raw, 0, sizeof(raw));
	for (size_t i = 0; i < sizeof(raw); i++) {
		req->reqid[2 * i] = hex[raw[i] >> 4];
		req->reqid[2 * i + 1] = hex[raw[i] & 0xf];
	}
	req->reqid[2 * sizeof(raw)] = '\0';
}

static void
worker_serve(FCGX_Request *r, const struct app_config *cfg, struct store *st,
             struct engine *eng, int control)
{
	int nlabels;
	struct request req;
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	memset(&req, 0, sizeof(req));
	req.param = fcgi_param;
	req.read = fcgi_read;
	req.io_ctx = r;
	req.cfg = cfg;
	req.st = st;
	req.eng = eng;
	req.control_plane = control;
	if (request_init(&req) != GC_OK) {
		worker_reqid(&req);
		request_problem(&req, 400, "bad_request",
		                "request method or URI missing or too long",
		                NULL);
	} else {
		worker_reqid(&req);
		log_set_reqid(req.reqid);
		router_dispatch(&req);
	}
	if (req.status == 0)
		request_problem(&req, 500, "internal", "no response", NULL);
	request_header(&req, "X-Request-Id", req.reqid);
	(void)worker_respond(r, &req);
	router_labels(&nlabels); /* the last label is "unmatched" */
	metrics_request(req.route_index < 0 ? nlabels - 1 : req.route_index,
	                req.status);
	log_request(req.method ? req.method : "-", req.route, req.status,
	            elapsed_ms(&t0));
	log_set_reqid(NULL);
	request_fini(&req);
}

/* See worker.h. */
void
worker_main(const struct app_config *cfg, int listen_fd, int control)
{
	FCGX_Request r;
	struct store *st;
	struct engine *eng;
	sigset_t stop;
	char why[512];
	int rc;

	log_init(control ? "control" : "worker", cfg->log_level);
	if (store_open(cfg, &st, why, sizeof(why)) != GC_OK)
		fatalx("store: %s", why);
	if ((eng = engine_alloc(cfg, st, 0)) == NULL)
		fatalx("engine: out of memory");
	if (FCGX_Init() != 0 ||
	    FCGX_InitRequest(&r, listen_fd, FCGI_FAIL_ACCEPT_ON_INTR) != 0)
		fatalx("FCGX_Init failed");
	/*
	 * SIGTERM, SIGINT and SIGUSR1 are blocked while a request is served, so
	 * no read or write of it is cut short; a stop that comes meanwhile is
	 * delivered when the request is finished.  Between requests they
	 * are unblocked and the handler closes the listener.
	 */
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGUSR1);
	sigprocmask(SIG_BLOCK, &stop, NULL);
	worker_listen_fd = listen_fd;
	for (;;) {
		sigprocmask(SIG_UNBLOCK, &stop, NULL);
		if (worker_stop)
			break;
		rc = FCGX_Accept_r(&r);
		sigprocmask(SIG_BLOCK, &stop, NULL);
		if (rc < 0) {
			if (worker_stop)
				break;
			errno = rc > -9998 ? -rc : EIO;
			log_warn("accept");
			usleep(100 * 1000);
			continue;
		}
		worker_serve(&r, cfg, st, eng, control);
		FCGX_Finish_r(&r);
	}
	FCGX_Free(&r, 1);
	engine_free(eng);
	store_close(st);
	log_info("worker stopped");
	exit(0);
}
