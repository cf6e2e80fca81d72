/*
 * The master process: owns the listening sockets, forks the FastCGI
 * workers, the control workers and the dispatchers, respawns them, reloads on
 * SIGHUP and stops gracefully on SIGTERM/SIGINT.  It never serves a request.
 */
#ifndef GC_SUPERVISOR_H
#define GC_SUPERVISOR_H

#include "app_config.h"

/*
 * Open the two listening sockets: fds[0] the data plane (every route),
 * fds[1] the control plane (/healthz, /metrics, /admin).  systemd's
 * LISTEN_FDS=2 hands both (fd 3 data, fd 4 control); LISTEN_FDS=1 or a
 * socket on fd 0 (spawn-fcgi, StandardInput=socket) hands the data socket
 * only.  What is not inherited is opened as cfg names it.  Returns 0, or
 * -1 with a reason in why.  created[i] is 1 when we made a unix socket
 * file for fds[i] that we should remove on exit.
 */
int supervisor_listen(const struct app_config *cfg, int fds[2], int created[2],
                      char *why, size_t whysz);

/*
 * Run the master loop until SIGTERM/SIGINT; takes ownership of cfg (which
 * a SIGHUP may replace).  fds as supervisor_listen filled them.  Returns
 * the process exit status.
 */
int supervisor_run(struct app_config *cfg, const int fds[2]);

#endif
