/*
 * Logging: one JSON object per line on stderr with time, level, pid and the
 * current request id.  Messages are JSON-escaped, so text from the network
 * cannot forge fields or lines.  Never pass a secret, a signature, a token,
 * or an email or phone number.
 */
#ifndef GC_LOG_H
#define GC_LOG_H

#include <stddef.h>

enum log_level {
	LOG_LEVEL_DEBUG,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
	LOG_LEVEL__MAX
};

/* Set the process role ("master", "worker", ...) shown on every line. */
void log_init(const char *role, enum log_level min);
void log_set_level(enum log_level min);
/* Parse "debug", "info", "warn", "error"; -1 when unknown. */
int log_level_parse(const char *s);
/* Request id for following lines; copied; NULL clears it. */
void log_set_reqid(const char *id);

void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Like log_info at warn level, adding strerror(errno). */
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_errorx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log at error level (with strerror for fatal) and exit(1). */
void fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* One line per served request. */
void log_request(const char *method, const char *route, int status,
                 double duration_ms);

/*
 * One line per attempt to a remote API: destination, event id, step,
 * HTTP status (0 = none), the remote reply code (or NULL) and latency.
 */
void log_attempt(const char *dest, const char *event_id, const char *step,
                 long http_status, const char *reply_code, double latency_ms);

#endif
