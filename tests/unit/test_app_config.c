/*
 * cfg_load: the listen settings of the data and the control socket, their
 * defaults and the combinations that are errors.  Each row is one config
 * file: the listen group and control_workers as given, the rest fixed.
 */
#include <sys/stat.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "app_config.h"

#define WHSEC "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define LONG                                                                   \
	"/run/a-path-that-is-ninety-four-bytes-long/"                          \
	"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.sock"

struct listen_row {
	int line;
	const char *text;    /* settings for the file */
	const char *err;     /* substring of the error, NULL: loads */
	const char *sock;    /* want control_socket (NULL: none) */
	int port;            /* want control_port */
	int control_workers; /* want control_workers */
};

static const struct listen_row listen_rows[] = {
    {__LINE__, "", NULL, "/run/gcrelay/gcrelay-control.sock", 0, 1},
    {__LINE__, "listen = { socket = \"/tmp/x.sock\"; };", NULL,
     "/tmp/x-control.sock", 0, 1},
    {__LINE__, "listen = { socket = \"/tmp/fcgi\"; };", NULL,
     "/tmp/fcgi-control", 0, 1},
    {__LINE__, "listen = { socket = \"/tmp/.sock\"; };", NULL,
     "/tmp/-control.sock", 0, 1},
    {__LINE__, "listen = { socket = \".sock\"; };", NULL, ".sock-control", 0,
     1},
    {__LINE__,
     "listen = { socket = \"/tmp/d.sock\"; control_socket = \"/tmp/c\"; };",
     NULL, "/tmp/c", 0, 1},
    {__LINE__, "listen = { socket = \"/tmp/d.sock\"; control_port = 9001; };",
     NULL, NULL, 9001, 1},
    {__LINE__, "listen = { port = 9000; };", NULL, NULL, 9001, 1},
    {__LINE__, "listen = { port = 65534; };", NULL, NULL, 65535, 1},
    {__LINE__, "listen = { port = 9000; control_port = 7000; };", NULL, NULL,
     7000, 1},
    {__LINE__, "listen = { port = 9000; control_socket = \"/tmp/c\"; };", NULL,
     "/tmp/c", 0, 1},
    {__LINE__, "listen = { port = 65535; control_port = 9; };", NULL, NULL, 9,
     1},
    {__LINE__, "control_workers = 16;", NULL,
     "/run/gcrelay/gcrelay-control.sock", 0, 16},
    /* errors */
    {__LINE__, "listen = { port = 65535; };",
     "leaves no default listen.control_port", NULL, 0, 0},
    {__LINE__,
     "listen = { control_socket = \"/tmp/c\"; control_port = 9001; };",
     "set listen.control_socket or listen.control_port, not both", NULL, 0, 0},
    {__LINE__,
     "listen = { socket = \"/tmp/d.sock\"; control_socket = "
     "\"/tmp/d.sock\"; };",
     "listen.control_socket must differ from listen.socket", NULL, 0, 0},
    {__LINE__, "listen = { port = 9000; control_port = 9000; };",
     "listen.control_port must differ from listen.port", NULL, 0, 0},
    {__LINE__, "listen = { control_socket = \"" LONG ".control\"; };",
     "is too long (max 99)", NULL, 0, 0},
    /* the data path fits, its default control path does not */
    {__LINE__, "listen = { socket = \"" LONG "\"; };",
     "-control.sock is too long (max 99)", NULL, 0, 0},
    {__LINE__, "listen = { control_socket = \"\"; };", "must not be empty",
     NULL, 0, 0},
    {__LINE__, "listen = { control_port = 0; };",
     "listen.control_port must be between 1 and 65535", NULL, 0, 0},
    {__LINE__, "listen = { control_port = \"9001\"; };",
     "listen.control_port must be an integer", NULL, 0, 0},
    {__LINE__, "control_workers = 0;",
     "control_workers must be between 1 and 16", NULL, 0, 0},
    {__LINE__, "control_workers = 17;",
     "control_workers must be between 1 and 16", NULL, 0, 0},
};

static char dir[] = "/tmp/gcrelay-cfg-XXXXXX";
static char keypath[64], confpath[64];

static int
setup(void **state)
{
	FILE *f;

	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(keypath, sizeof(keypath), "%s/key", dir);
	snprintf(confpath, sizeof(confpath), "%s/gcrelay.conf", dir);
	if ((f = fopen(keypath, "w")) == NULL)
		return -1;
	fprintf(f, "%s\n",
	        "00112233445566778899aabbccddeeff"
	        "00112233445566778899aabbccddeeff");
	fclose(f);
	/* A key file others may read is refused, like ssh's keys. */
	return chmod(keypath, 0400);
}

static int
teardown(void **state)
{
	(void)state;
	unlink(keypath);
	unlink(confpath);
	rmdir(dir);
	return 0;
}

static void
write_conf(const char *text)
{
	FILE *f = fopen(confpath, "w");

	assert_non_null(f);
	fprintf(f,
	        "secrets_key_file = \"%s\";\n"
	        "webhook = { secrets = [ \"%s\" ]; };\n%s\n",
	        keypath, WHSEC, text);
	fclose(f);
}

static void
test_listen(void **state)
{
	struct app_config cfg;
	char err[512];
	enum gc_err rc;
	int bad = 0;

	(void)state;
	for (size_t i = 0; i < sizeof(listen_rows) / sizeof(listen_rows[0]);
	     i++) {
		const struct listen_row *r = &listen_rows[i];
		err[0] = '\0';
		write_conf(r->text);
		rc = cfg_load(confpath, &cfg, err, sizeof(err));
		if (r->err != NULL) {
			if (rc == GC_OK || strstr(err, r->err) == NULL) {
				fprintf(stderr,
				        "%s:%d: have %d \"%s\", want error "
				        "\"%s\"\n",
				        __FILE__, r->line, rc, err, r->err);
				bad++;
			}
			if (rc == GC_OK)
				cfg_fini(&cfg);
			continue;
		}
		if (rc != GC_OK) {
			fprintf(stderr, "%s:%d: have error \"%s\", want ok\n",
			        __FILE__, r->line, err);
			bad++;
			continue;
		}
		if ((r->sock == NULL) != (cfg.control_socket == NULL) ||
		    (r->sock != NULL &&
		     strcmp(r->sock, cfg.control_socket) != 0) ||
		    r->port != cfg.control_port ||
		    r->control_workers != cfg.control_workers) {
			fprintf(stderr,
			        "%s:%d: have socket %s port %d workers %d, "
			        "want socket %s port %d workers %d\n",
			        __FILE__, r->line,
			        cfg.control_socket ? cfg.control_socket
			                           : "(null)",
			        cfg.control_port, cfg.control_workers,
			        r->sock ? r->sock : "(null)", r->port,
			        r->control_workers);
			bad++;
		}
		cfg_fini(&cfg);
	}
	assert_int_equal(bad, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_listen),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
