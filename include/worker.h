/*
 * Child processes: FastCGI workers and the retrier.  Both run until told
 * to stop (SIGTERM/SIGINT) and then exit(0) after finishing the work in
 * hand.
 */
#ifndef GC_WORKER_H
#define GC_WORKER_H

#include <signal.h>

#include "app_config.h"

/* Serve FastCGI requests on listen_fd.  Never returns. */
void worker_main(const struct app_config *cfg, int listen_fd)
    __attribute__((noreturn));

/* Deliver due deliveries from the outbox, many at once.  Never returns. */
void dispatcher_main(const struct app_config *cfg) __attribute__((noreturn));

/* Set by the SIGTERM/SIGINT handler of a child. */
extern volatile sig_atomic_t worker_stop;

/* Install the child's signal handlers (stop flag, SIGPIPE ignored). */
void worker_signals(void);

#endif
