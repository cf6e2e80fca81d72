/*
 * The master process: owns the listening socket, forks the FastCGI
 * workers and the retrier, respawns them, reloads on SIGHUP and stops
 * gracefully on SIGTERM/SIGINT.  It never serves a request.
 */
#ifndef GC_SUPERVISOR_H
#define GC_SUPERVISOR_H

#include "app_config.h"

/*
 * Open the listening socket: a socket inherited from systemd (LISTEN_FDS)
 * or on fd 0 (spawn-fcgi, StandardInput=socket), else the one cfg names.
 * Returns the fd, or -1 with a reason in why.  *created is 1 when we made
 * a unix socket file that we should remove on exit.
 */
int supervisor_listen(const struct app_config *cfg, int *created, char *why,
                      size_t whysz);

/*
 * Run the master loop until SIGTERM/SIGINT; takes ownership of cfg (which
 * a SIGHUP may replace).  Returns the process exit status.
 */
int supervisor_run(struct app_config *cfg, int listen_fd);

#endif
