#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "jsonutil.h"
#include "log.h"

static const char *const names[] = {
    [LOG_LEVEL_DEBUG] = "debug",
    [LOG_LEVEL_INFO] = "info",
    [LOG_LEVEL_WARN] = "warn",
    [LOG_LEVEL_ERROR] = "error",
};
_Static_assert(sizeof(names) / sizeof(names[0]) == LOG_LEVEL__MAX,
               "log level names[] out of step");

static const char *log_role = "gcrelay";
static enum log_level log_min = LOG_LEVEL_INFO;
static char log_reqid[80];

/* See log.h. */
void
log_init(const char *role, enum log_level min)
{
	log_role = role;
	log_min = min;
}

/* See log.h. */
void
log_set_level(enum log_level min)
{
	log_min = min;
}

/* See log.h. */
int
log_level_parse(const char *s)
{
	for (int i = 0; i < LOG_LEVEL__MAX; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

/* See log.h. */
void
log_set_reqid(const char *id)
{
	if (id == NULL)
		log_reqid[0] = '\0';
	else
		snprintf(log_reqid, sizeof(log_reqid), "%s", id);
}

/* Start a line: {"time":...,"level":...,"pid":...,"role":...[,"req":...] */
static void
log_head(struct buf *b, enum log_level lvl)
{
	struct timeval tv;
	struct tm tm;
	char ts[32];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
	buf_printf(b,
	           "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\",\"pid\":%ld,"
	           "\"role\":\"%s\"",
	           ts, (long)(tv.tv_usec / 1000), names[lvl], (long)getpid(),
	           log_role);
	if (log_reqid[0] != '\0') {
		buf_puts(b, ",\"req\":");
		jsonutil_escape(b, log_reqid);
	}
}

/* Write b plus "}\n" to stderr in one write so lines never interleave. */
static void
log_emit(struct buf *b)
{
	const char *p;
	size_t left;
	ssize_t n;

	if (buf_puts(b, "}\n") != GC_OK)
		return;
	p = b->ptr;
	left = b->len;
	while (left > 0) {
		n = write(STDERR_FILENO, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		p += n;
		left -= (size_t)n;
	}
	buf_free(b);
}

static void
log_vmsg(enum log_level lvl, int errnum, const char *fmt, va_list ap)
{
	struct buf b, msg;

	if (lvl < log_min)
		return;
	buf_init(&b, 0);
	buf_init(&msg, 0);
	buf_vprintf(&msg, fmt, ap);
	if (errnum != 0)
		buf_printf(&msg, ": %s", strerror(errnum));
	log_head(&b, lvl);
	buf_puts(&b, ",\"msg\":");
	jsonutil_escape(&b, buf_str(&msg));
	buf_free(&msg);
	log_emit(&b);
}

#define LOG_FN(name, lvl, with_errno)                                          \
	void name(const char *fmt, ...)                                        \
	{                                                                      \
		int saved = errno;                                             \
		va_list ap;                                                    \
		va_start(ap, fmt);                                             \
		log_vmsg(lvl, with_errno ? saved : 0, fmt, ap);                \
		va_end(ap);                                                    \
		errno = saved;                                                 \
	}

LOG_FN(log_debug, LOG_LEVEL_DEBUG, 0)
LOG_FN(log_info, LOG_LEVEL_INFO, 0)
LOG_FN(log_warn, LOG_LEVEL_WARN, 1)
LOG_FN(log_warnx, LOG_LEVEL_WARN, 0)
LOG_FN(log_errorx, LOG_LEVEL_ERROR, 0)

/* See log.h. */
void
fatal(const char *fmt, ...)
{
	int saved = errno;
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_ERROR, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

/* See log.h. */
void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(LOG_LEVEL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}

/* See log.h. */
void
log_request(const char *method, const char *route, int status,
            double duration_ms)
{
	struct buf b;
	enum log_level lvl = status >= 500 ? LOG_LEVEL_WARN : LOG_LEVEL_INFO;

	if (lvl < log_min)
		return;
	buf_init(&b, 0);
	log_head(&b, lvl);
	buf_puts(&b, ",\"msg\":\"request\",\"method\":");
	jsonutil_escape(&b, method);
	buf_puts(&b, ",\"route\":");
	jsonutil_escape(&b, route);
	buf_printf(&b, ",\"status\":%d,\"duration_ms\":%.1f", status,
	           duration_ms);
	log_emit(&b);
}

/* See log.h. */
void
log_attempt(const char *dest, const char *event_id, const char *step,
            long http_status, const char *reply_code, double latency_ms)
{
	struct buf b;

	if (LOG_LEVEL_INFO < log_min)
		return;
	buf_init(&b, 0);
	log_head(&b, LOG_LEVEL_INFO);
	buf_puts(&b, ",\"msg\":\"attempt\",\"destination\":");
	jsonutil_escape(&b, dest);
	buf_puts(&b, ",\"event\":");
	jsonutil_escape(&b, event_id);
	buf_puts(&b, ",\"step\":");
	jsonutil_escape(&b, step);
	buf_printf(&b, ",\"http_status\":%ld", http_status);
	if (reply_code != NULL) {
		buf_puts(&b, ",\"reply_code\":");
		jsonutil_escape(&b, reply_code);
	}
	buf_printf(&b, ",\"latency_ms\":%.1f", latency_ms);
	log_emit(&b);
}
