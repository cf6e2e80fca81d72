#include <errno.h>
#include <grp.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "mono.h"
#include "supervisor.h"
#include "worker.h"

/* Workers (max 256), control workers (max 16), dispatchers (max 16). */
#define MAX_CHILDREN   (256 + 16 + 16)
#define CRASH_WINDOW_S 5 /* a child dying sooner than this "crashed" */
#define MAX_BACKOFF_S  30

enum child_kind { CHILD_WORKER, CHILD_CONTROL, CHILD_DISPATCHER, CHILD__MAX };

static const char *const child_names[] = {
    [CHILD_WORKER] = "worker",
    [CHILD_CONTROL] = "control worker",
    [CHILD_DISPATCHER] = "dispatcher",
};
_Static_assert(sizeof(child_names) / sizeof(child_names[0]) == CHILD__MAX,
               "child_names[] out of step");
_Static_assert((int)CHILD__MAX == (int)M_CHILD__MAX &&
                   (int)CHILD_DISPATCHER == (int)M_CHILD_DISPATCHER,
               "enum child_kind out of step with enum m_child");

struct child {
	pid_t pid; /* 0 when not running */
	enum child_kind kind;
	unsigned generation; /* config generation it was started with */
	/* Times are master_now() seconds (monotonic). */
	time_t started;
	int crashes;       /* consecutive quick abnormal exits */
	time_t respawn_at; /* when pid == 0: when to start it */
	time_t first_at;   /* ... when it is the last of its kind */
};

struct master {
	struct app_config *cfg;
	int listen_fd;  /* data plane: every route */
	int control_fd; /* control plane: /healthz, /metrics, /admin */
	unsigned generation;
	struct child slots[MAX_CHILDREN]; /* current generation */
	int nslots;
	pid_t old[MAX_CHILDREN * 4]; /* older generations, stopping */
	int nold;
	time_t old_kill_at; /* old children still alive then get SIGKILL */
	pid_t master_pid;
};

static volatile sig_atomic_t got_chld, got_hup, got_term, got_alrm;

/*
 * Seconds on the monotonic clock, for the crash window, the backoff and
 * the grace periods: a step of the wall clock must neither make a child
 * wait hours for its respawn nor cut the grace of a stop short.
 */
static time_t
master_now(void)
{
	return (time_t)(mono_ms() / 1000);
}

static void
master_on_signal(int sig)
{
	switch (sig) {
	case SIGCHLD:
		got_chld = 1;
		break;
	case SIGHUP:
		got_hup = 1;
		break;
	case SIGALRM:
		got_alrm = 1;
		break;
	default:
		got_term = 1;
	}
}

/* Install handlers and block the signals outside sigsuspend. */
static void
master_signals(sigset_t *waitmask)
{
	struct sigaction sa;
	sigset_t block;
	int sigs[] = {SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGALRM};

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = master_on_signal;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&block);
	/* Without its handlers the master would miss exits and stops. */
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		if (sigaction(sigs[i], &sa, NULL) != 0)
			fatal("sigaction %d", sigs[i]);
		sigaddset(&block, sigs[i]);
	}
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR ||
	    sigprocmask(SIG_BLOCK, &block, waitmask) != 0)
		fatal("signal mask");
	sigdelset(waitmask, SIGCHLD);
	sigdelset(waitmask, SIGHUP);
	sigdelset(waitmask, SIGTERM);
	sigdelset(waitmask, SIGINT);
	sigdelset(waitmask, SIGALRM);
}

/*
 * Listening sockets handed to us: systemd's LISTEN_FDS (fd 3 the data
 * socket, fd 4 the control socket when there are two) or one socket on
 * fd 0 (spawn-fcgi, StandardInput=socket).  Fills fds[] and returns how
 * many were inherited: 0, 1 or 2.
 */
static int
listen_inherited(int fds[2])
{
	const char *pid = getenv("LISTEN_PID"), *nfds = getenv("LISTEN_FDS");
	int acc = 0;
	long n;
	socklen_t len = sizeof(acc);

	n = nfds != NULL ? strtol(nfds, NULL, 10) : 0;
	if (pid != NULL && strtol(pid, NULL, 10) == getpid() && n >= 1) {
		unsetenv("LISTEN_PID");
		unsetenv("LISTEN_FDS");
		unsetenv("LISTEN_FDNAMES");
		fds[0] = 3; /* SD_LISTEN_FDS_START */
		fds[1] = 4;
		if (n > 2)
			log_warnx("LISTEN_FDS=%ld: using fds 3 and 4 only", n);
		return n >= 2 ? 2 : 1;
	}
	if (getsockopt(0, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) == 0 && acc) {
		fds[0] = 0;
		return 1;
	}
	return 0;
}

/* A unix socket at path with listen.mode, listen.group and the backlog. */
static int
listen_unix(const struct app_config *cfg, const char *path, char *why,
            size_t whysz)
{
	struct sockaddr_un sun;
	struct group *gr;
	int fd;

	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		goto fail;
	if (unlink(path) != 0 && errno != ENOENT)
		goto fail;
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 ||
	    chmod(path, cfg->listen_mode) != 0)
		goto fail;
	if (cfg->listen_group != NULL) {
		if ((gr = getgrnam(cfg->listen_group)) == NULL) {
			snprintf(why, whysz, "listen.group %s: no such group",
			         cfg->listen_group);
			close(fd);
			return -1;
		}
		if (chown(path, (uid_t)-1, gr->gr_gid) != 0)
			goto fail;
	}
	if (listen(fd, cfg->listen_backlog) != 0)
		goto fail;
	return fd;
fail:
	snprintf(why, whysz, "listen on %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static int
listen_tcp(const struct app_config *cfg, int port, char *why, size_t whysz)
{
	struct sockaddr_in sin;
	int fd, one = 1;

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
	    bind(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
	    listen(fd, cfg->listen_backlog) != 0) {
		snprintf(why, whysz, "listen on 127.0.0.1:%d: %s", port,
		         strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Open the unix socket at path, else TCP on port; *created when a file. */
static int
listen_one(const struct app_config *cfg, const char *path, int port,
           int *created, char *why, size_t whysz)
{
	int fd;

	if (path == NULL)
		return listen_tcp(cfg, port, why, whysz);
	if ((fd = listen_unix(cfg, path, why, whysz)) >= 0)
		*created = 1;
	return fd;
}

/* See supervisor.h. */
int
supervisor_listen(const struct app_config *cfg, int fds[2], int created[2],
                  char *why, size_t whysz)
{
	int n;

	created[0] = created[1] = 0;
	n = listen_inherited(fds);
	for (int i = 0; i < n; i++)
		log_info("using the inherited %s listening socket on fd %d",
		         i == 0 ? "data" : "control", fds[i]);
	if (n < 1 &&
	    (fds[0] = listen_one(cfg, cfg->listen_socket, cfg->listen_port,
	                         &created[0], why, whysz)) < 0)
		return -1;
	if (n < 2 &&
	    (fds[1] = listen_one(cfg, cfg->control_socket, cfg->control_port,
	                         &created[1], why, whysz)) < 0) {
		if (created[0])
			unlink(cfg->listen_socket);
		if (n < 1)
			close(fds[0]);
		return -1;
	}
	return 0;
}

static void
child_start(struct master *m, struct child *c)
{
	pid_t pid;

	if ((pid = fork()) < 0) {
		log_warn("fork");
		c->respawn_at = c->first_at = master_now() + 1;
		return;
	}
	if (pid == 0) {
		/* A child never outlives its master (e.g. after SIGKILL). */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != m->master_pid)
			_exit(0);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGHUP, SIG_IGN);
		signal(SIGALRM, SIG_DFL);
		worker_signals();
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* Each child keeps only the listener it serves. */
		if (c->kind != CHILD_WORKER)
			close(m->listen_fd);
		if (c->kind != CHILD_CONTROL)
			close(m->control_fd);
		if (c->kind == CHILD_WORKER)
			worker_main(m->cfg, m->listen_fd, 0);
		if (c->kind == CHILD_CONTROL)
			worker_main(m->cfg, m->control_fd, 1);
		dispatcher_main(m->cfg);
	}
	c->pid = pid;
	c->generation = m->generation;
	c->started = master_now();
	c->respawn_at = 0;
}

/* (Re)build the slot table for the current config and start everyone. */
static void
master_spawn_all(struct master *m)
{
	const struct app_config *cfg = m->cfg;
	int want =
	    cfg->workers + cfg->control_workers + cfg->delivery_dispatchers;

	for (int i = 0; i < want; i++) {
		struct child *c = &m->slots[i];
		memset(c, 0, sizeof(*c));
		if (i < cfg->workers)
			c->kind = CHILD_WORKER;
		else if (i < cfg->workers + cfg->control_workers)
			c->kind = CHILD_CONTROL;
		else
			c->kind = CHILD_DISPATCHER;
		child_start(m, c);
	}
	m->nslots = want;
	log_info("started %d workers, %d control workers and %d dispatchers "
	         "(generation %u)",
	         cfg->workers, cfg->control_workers, cfg->delivery_dispatchers,
	         m->generation);
}

static void
log_exit(pid_t pid, int status, const char *what)
{
	if (WIFSIGNALED(status))
		log_warnx("%s %ld killed by signal %d", what, (long)pid,
		          WTERMSIG(status));
	else if (WEXITSTATUS(status) != 0)
		log_warnx("%s %ld exited with status %d", what, (long)pid,
		          WEXITSTATUS(status));
	else
		log_info("%s %ld exited", what, (long)pid);
}

/* A current-generation child died: schedule its replacement. */
static void
master_child_died(struct child *c, int status, int stopping)
{
	time_t now = master_now();
	int abnormal = WIFSIGNALED(status) || WEXITSTATUS(status) != 0;

	log_exit(c->pid, status, child_names[c->kind]);
	c->pid = 0;
	if (stopping)
		return;
	metrics_child_restart();
	if (abnormal && now - c->started < CRASH_WINDOW_S)
		c->crashes++;
	else
		c->crashes = 0;
	c->respawn_at = now;
	/*
	 * Were it the last of its kind, it comes back at once when killed
	 * (SIGKILL comes from outside: an operator, the OOM killer), else
	 * within a second: a crash loop forks once a second at most.
	 */
	c->first_at =
	    WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL ? now : now + 1;
	/* The first quick death respawns at once; repeats back off. */
	if (c->crashes > 1) {
		int delay = 1 << (c->crashes > 6 ? 5 : c->crashes - 2);
		c->respawn_at += delay > MAX_BACKOFF_S ? MAX_BACKOFF_S : delay;
		log_warnx("child keeps crashing; respawning in %d s",
		          (int)(c->respawn_at - now));
	}
}

static void
master_reap(struct master *m, int stopping)
{
	pid_t pid;
	int status, i;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (i = 0; i < m->nslots; i++)
			if (m->slots[i].pid == pid) {
				master_child_died(&m->slots[i], status,
				                  stopping);
				break;
			}
		if (i < m->nslots)
			continue;
		for (i = 0; i < m->nold; i++)
			if (m->old[i] == pid) {
				log_exit(pid, status, "old child");
				m->old[i] = m->old[--m->nold];
				break;
			}
	}
}

/*
 * Start children whose respawn time has come; returns the next due time.
 * The backoff never leaves a kind without a child: the first of a kind
 * with none running is due at its first_at.
 */
static time_t
master_respawn(struct master *m)
{
	time_t now = master_now(), next = 0, due;
	int alive[CHILD__MAX] = {0};

	for (int i = 0; i < m->nslots; i++)
		if (m->slots[i].pid != 0)
			alive[m->slots[i].kind]++;
	for (int i = 0; i < m->nslots; i++) {
		struct child *c = &m->slots[i];
		if (c->pid != 0)
			continue;
		due = c->respawn_at;
		if (alive[c->kind] == 0 && c->first_at < due)
			due = c->first_at;
		alive[c->kind]++;
		if (due <= now)
			child_start(m, c);
		else if (next == 0 || due < next)
			next = due;
	}
	return next;
}

/* Publish how many children of each kind run, for /metrics. */
static void
master_publish(const struct master *m)
{
	int live[CHILD__MAX] = {0}, want[CHILD__MAX] = {0};

	for (int i = 0; i < m->nslots; i++) {
		want[m->slots[i].kind]++;
		if (m->slots[i].pid != 0)
			live[m->slots[i].kind]++;
	}
	for (int k = 0; k < CHILD__MAX; k++)
		metrics_children((enum m_child)k, live[k], want[k]);
}

static int
same_str(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static int
same_listen(const struct app_config *a, const struct app_config *b)
{
	return same_str(a->listen_socket, b->listen_socket) &&
	       a->listen_port == b->listen_port &&
	       same_str(a->control_socket, b->control_socket) &&
	       a->control_port == b->control_port;
}

/* SIGHUP: validate the new config; on success replace the workers. */
static void
master_reload(struct master *m)
{
	struct app_config *ncfg;
	char err[512];

	if ((ncfg = malloc(sizeof(*ncfg))) == NULL) {
		log_warnx("reload: out of memory; keeping the old config");
		return;
	}
	if (cfg_load(m->cfg->path, ncfg, err, sizeof(err)) != GC_OK) {
		log_errorx("reload failed, keeping the old config: %s", err);
		free(ncfg);
		return;
	}
	if (!same_listen(m->cfg, ncfg))
		log_warnx("reload: listen settings changed; they take effect "
		          "after a restart");
	log_set_level(ncfg->log_level);
	for (int i = 0; i < m->nslots; i++) {
		if (m->slots[i].pid == 0)
			continue;
		kill(m->slots[i].pid, SIGTERM);
		if (m->nold < (int)(sizeof(m->old) / sizeof(m->old[0])))
			m->old[m->nold++] = m->slots[i].pid;
		else
			kill(m->slots[i].pid, SIGKILL);
	}
	m->old_kill_at = master_now() + m->cfg->shutdown_grace_s;
	cfg_fini(m->cfg);
	free(m->cfg);
	m->cfg = ncfg;
	m->generation++;
	log_info("reloaded %s", ncfg->path);
	master_spawn_all(m);
}

static int
master_alive(struct master *m)
{
	int n = m->nold;

	for (int i = 0; i < m->nslots; i++)
		if (m->slots[i].pid != 0)
			n++;
	return n;
}

static void
master_signal_all(struct master *m, int sig)
{
	for (int i = 0; i < m->nslots; i++)
		if (m->slots[i].pid != 0)
			kill(m->slots[i].pid, sig);
	for (int i = 0; i < m->nold; i++)
		kill(m->old[i], sig);
}

static void
arm_timer(long ms)
{
	struct itimerval it;

	memset(&it, 0, sizeof(it));
	it.it_value.tv_sec = ms / 1000;
	it.it_value.tv_usec = (ms % 1000) * 1000;
	setitimer(ITIMER_REAL, &it, NULL);
}

/*
 * Graceful stop: SIGTERM everyone once, SIGKILL after the grace period.
 * Once is enough: a worker blocks SIGTERM while it serves a request and
 * notices it afterwards; an idle one has its accept() ended by it.
 */
static void
master_stop(struct master *m, const sigset_t *waitmask)
{
	time_t deadline = master_now() + m->cfg->shutdown_grace_s;

	log_info("stopping: waiting for in-flight requests");
	master_signal_all(m, SIGTERM);
	while (master_alive(m) > 0) {
		if (master_now() >= deadline) {
			log_warnx("grace period over; killing %d children",
			          master_alive(m));
			master_signal_all(m, SIGKILL);
			deadline = master_now() + 3600;
		}
		arm_timer(1000);
		got_alrm = 0;
		while (!got_chld && !got_alrm)
			sigsuspend(waitmask);
		got_chld = 0;
		master_reap(m, 1);
	}
	arm_timer(0);
}

/*
 * Old-generation children got SIGTERM at the reload and are finishing
 * their last request; SIGKILL ends them after the grace period.  Returns
 * 1 while any is left.
 */
static int
master_nudge_old(struct master *m)
{
	if (m->nold == 0)
		return 0;
	if (master_now() < m->old_kill_at)
		return 1;
	for (int i = 0; i < m->nold; i++)
		kill(m->old[i], SIGKILL);
	log_warnx("killed %d old children after the grace period", m->nold);
	return 1;
}

/* See supervisor.h. */
int
supervisor_run(struct app_config *cfg, const int fds[2])
{
	struct master m;
	sigset_t waitmask;
	time_t next;

	memset(&m, 0, sizeof(m));
	m.cfg = cfg;
	m.listen_fd = fds[0];
	m.control_fd = fds[1];
	m.master_pid = getpid();
	master_signals(&waitmask);
	master_spawn_all(&m);
	for (;;) {
		if (got_term)
			break;
		if (got_chld) {
			got_chld = 0;
			master_reap(&m, 0);
		}
		if (got_hup) {
			got_hup = 0;
			master_reload(&m);
		}
		got_alrm = 0;
		next = master_respawn(&m);
		master_publish(&m);
		if (master_nudge_old(&m))
			arm_timer(1000);
		else
			arm_timer(next ? (long)(next - master_now()) * 1000 + 10
			               : 0);
		if (!got_chld && !got_hup && !got_term && !got_alrm)
			sigsuspend(&waitmask);
	}
	master_stop(&m, &waitmask);
	log_info("stopped");
	cfg_fini(m.cfg);
	free(m.cfg);
	return 0;
}
