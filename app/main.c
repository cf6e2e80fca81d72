/*
 * gcrelay: delivers Gocertify events to Emarsys and Yotpo Loyalty.
 *
 *   gcrelay -c FILE      run the master (it never serves; see supervisor.c)
 *   gcrelay -t -c FILE   check the config and exit
 *   gcrelay migrate -c FILE   apply pending store migrations and exit
 *   gcrelay store copy --from FILE.db --to URL [--password-file FILE]
 *                        copy a SQLite store into an empty PostgreSQL one
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <curl/curl.h>

#include "app_config.h"
#include "delivery_limits.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "supervisor.h"

#ifndef GCRELAY_VERSION
#define GCRELAY_VERSION "0.1.0"
#endif

static void
usage(void)
{
	fprintf(stderr, "usage: gcrelay [-t] -c FILE\n"
	                "       gcrelay migrate -c FILE\n"
	                "       gcrelay store copy --from FILE.db --to URL "
	                "[--password-file FILE]\n"
	                "       gcrelay -V\n");
	exit(2);
}

/* Run migrations once in the master so workers find the schema ready. */
static void
prepare_store(const struct app_config *cfg)
{
	struct store *st;
	char why[512];

	if (store_open(cfg, &st, why, sizeof(why)) != GC_OK)
		fatalx("store: %s", why);
	/* Not the URL: it may carry a password. */
	log_info("store %s ready (schema %d)",
	         cfg->store_backend == STORE_POSTGRESQL ? "(postgresql)"
	                                                : cfg->store_path,
	         store_schema_version(st));
	store_close(st);
}

/* The first line of path (a password), or NULL; caller frees. */
static char *
read_secret_line(const char *path)
{
	char buf[1024];
	FILE *fp;
	size_t n;

	if ((fp = fopen(path, "re")) == NULL)
		return NULL;
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	return strdup(buf);
}

/* gcrelay store copy: argv after "copy". */
static int
store_copy_main(int argc, char *argv[])
{
	struct app_config from = {0}, to = {0};
	const char *pwfile = NULL;
	char why[512];
	int rc;

	for (int i = 0; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--from") == 0)
			from.store_path = argv[i + 1];
		else if (strcmp(argv[i], "--to") == 0)
			to.store_url = argv[i + 1];
		else if (strcmp(argv[i], "--password-file") == 0)
			pwfile = argv[i + 1];
		else
			usage();
	}
	if (from.store_path == NULL || to.store_url == NULL || argc % 2 != 0)
		usage();
	from.store_backend = STORE_SQLITE;
	from.busy_timeout_ms = to.busy_timeout_ms = 5000;
	to.store_backend = STORE_POSTGRESQL;
	if (pwfile != NULL &&
	    (to.store_password = read_secret_line(pwfile)) == NULL) {
		fprintf(stderr, "gcrelay: cannot read %s\n", pwfile);
		return 1;
	}
	log_init("copy", 1);
	rc = store_copy(&from, &to, why, sizeof(why)) == GC_OK ? 0 : 1;
	if (rc != 0)
		fprintf(stderr, "gcrelay: store copy: %s\n", why);
	free(to.store_password);
	return rc;
}

int
main(int argc, char *argv[])
{
	struct app_config *cfg;
	const char *path = NULL;
	char err[512];
	char *sock[2];
	int ch, test = 0, migrate = 0, fds[2], created[2];

	if (argc > 2 && strcmp(argv[1], "store") == 0 &&
	    strcmp(argv[2], "copy") == 0)
		return store_copy_main(argc - 3, argv + 3);
	if (argc > 1 && strcmp(argv[1], "migrate") == 0) {
		migrate = 1;
		argv++;
		argc--;
	}
	while ((ch = getopt(argc, argv, "c:tV")) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 't':
			test = 1;
			break;
		case 'V':
			printf("gcrelay %s\n", GCRELAY_VERSION);
			return 0;
		default:
			usage();
		}
	}
	if (path == NULL || optind != argc)
		usage();
	if ((cfg = malloc(sizeof(*cfg))) == NULL)
		return 1;
	if (cfg_load(path, cfg, err, sizeof(err)) != GC_OK) {
		fprintf(stderr, "%s\n", err);
		free(cfg);
		return 1;
	}
	if (test) {
		printf("%s: configuration ok\n", path);
		cfg_fini(cfg);
		free(cfg);
		return 0;
	}
	if (geteuid() == 0 || getuid() == 0) {
		fprintf(stderr, "gcrelay: refusing to run as root; run it as "
		                "its own unprivileged user (see "
		                "the gcrelay.service unit)\n");
		cfg_fini(cfg);
		free(cfg);
		return 1;
	}
	log_init("master", cfg->log_level);
	if (migrate) {
		/* store_open applies them, one host at a time. */
		prepare_store(cfg);
		cfg_fini(cfg);
		free(cfg);
		return 0;
	}
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		fatalx("curl_global_init failed");
	prepare_store(cfg);
	if (metrics_init() != GC_OK)
		fatal("metrics: shared memory");
	if (store_shared_init() != GC_OK)
		fatal("store: shared memory");
	if (limits_init() != GC_OK)
		fatal("limits: shared memory or wake-up pipe");
	if (supervisor_listen(cfg, fds, created, err, sizeof(err)) != 0)
		fatalx("%s", err);
	log_info("gcrelay %s listening on %s, control on %s", GCRELAY_VERSION,
	         created[0] ? cfg->listen_socket : "an inherited or TCP socket",
	         created[1] ? cfg->control_socket
	                    : "an inherited or TCP socket");
	/* Copies: a SIGHUP reload frees the config these came from. */
	for (int i = 0; i < 2; i++)
		sock[i] = created[i] ? strdup(i ? cfg->control_socket
		                                : cfg->listen_socket)
		                     : NULL;
	ch = supervisor_run(cfg, fds);
	for (int i = 0; i < 2; i++) {
		if (sock[i] != NULL)
			unlink(sock[i]);
		free(sock[i]);
	}
	curl_global_cleanup();
	return ch;
}
