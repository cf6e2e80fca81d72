/*
 * Child processes: FastCGI workers and the dispatchers.  Both run until told
 * to stop (SIGTERM/SIGINT) and then exit(0) after finishing the work in
 * hand.
 */
#ifndef GC_WORKER_H
#define GC_WORKER_H

#include <signal.h>

#include "app_config.h"

/*
 * Serve FastCGI requests on listen_fd.  A control worker (control != 0)
 * serves only /healthz, /metrics and /admin; other routes get 404.
 * Never returns.
 */
void worker_main(const struct app_config *cfg, int listen_fd, int control)
    __attribute__((noreturn));

/* Deliver due deliveries from the outbox, many at once.  Never returns. */
void dispatcher_main(const struct app_config *cfg) __attribute__((noreturn));

/* Set by the SIGTERM/SIGINT handler of a child. */
extern volatile sig_atomic_t worker_stop;

/* Install the child's signal handlers (stop flag, SIGPIPE ignored). */
void worker_signals(void);

#endif
