/*
 * gcrelayctl: the operators' command-line client for the gcrelay admin
 * API.  It signs each request (admin_sig.c) with a key id and secret from
 * its config file or the environment, and prints tables or --json.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libconfig.h>

#include "admin_sig.h"
#include "buf.h"
#include "httpc.h"
#include "jsonutil.h"
#include "webhook.h"

#define EXIT_USAGE 64

struct ctl {
	char *url;
	char *key_id;
	char *secret;
	char *ca_file;
	int json;
	struct httpc *http;
};

static void
usage(void)
{
	fprintf(
	    stderr,
	    "usage: gcrelayctl [--config FILE] [--url URL] [--json] COMMAND\n"
	    "\n"
	    "  brands list\n"
	    "  brands get SLUG\n"
	    "  brands put SLUG [FILE|-]     (JSON document; - or none: "
	    "stdin)\n"
	    "  brands delete SLUG\n"
	    "  brands check SLUG            (preflight against the real "
	    "APIs)\n"
	    "  brands redeliver SLUG [--since ISO] [--until ISO]\n"
	    "  events list [--brand B] [--status S] [--since ISO] "
	    "[--limit N] [--cursor C]\n"
	    "  events get ID\n"
	    "  events redeliver ID\n"
	    "  send-event --secret whsec_... [--id ID] [FILE|-]\n"
	    "                               (sign and POST an event to "
	    "/v1/events)\n"
	    "\n"
	    "Settings come from --config FILE (default "
	    "$GCRELAYCTL_CONFIG or\n"
	    "~/.config/gcrelay/gcrelayctl.conf) and the environment:\n"
	    "GCRELAY_URL, GCRELAY_KEY_ID, GCRELAY_KEY_SECRET, "
	    "GCRELAY_CA_FILE.\n");
	exit(EXIT_USAGE);
}

static void
set_str(char **dst, const char *v)
{
	if (v != NULL && *v != '\0') {
		free(*dst);
		*dst = strdup(v);
	}
}

/* Read the small libconfig file: url, key_id, secret, ca_file. */
static void
ctl_config(struct ctl *c, const char *path, int required)
{
	const char *keys[] = {"url", "key_id", "secret", "ca_file"};
	char **dst[] = {&c->url, &c->key_id, &c->secret, &c->ca_file};
	config_t lc;
	const char *v;

	config_init(&lc);
	if (config_read_file(&lc, path) != CONFIG_TRUE) {
		if (required || config_error_type(&lc) != CONFIG_ERR_FILE_IO) {
			fprintf(stderr, "gcrelayctl: %s:%d: %s\n", path,
			        config_error_line(&lc),
			        config_error_type(&lc) == CONFIG_ERR_FILE_IO
			            ? strerror(errno)
			            : config_error_text(&lc));
			exit(EXIT_USAGE);
		}
		config_destroy(&lc);
		return;
	}
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (config_lookup_string(&lc, keys[i], &v) == CONFIG_TRUE)
			set_str(dst[i], v);
	config_destroy(&lc);
}

static void
ctl_settings(struct ctl *c, const char *config_path)
{
	char def[1024];
	const char *home = getenv("HOME");

	if (config_path == NULL)
		config_path = getenv("GCRELAYCTL_CONFIG");
	if (config_path != NULL)
		ctl_config(c, config_path, 1);
	else if (home != NULL) {
		snprintf(def, sizeof(def), "%s/.config/gcrelay/gcrelayctl.conf",
		         home);
		ctl_config(c, def, 0);
	}
	set_str(&c->url, getenv("GCRELAY_URL"));
	set_str(&c->key_id, getenv("GCRELAY_KEY_ID"));
	set_str(&c->secret, getenv("GCRELAY_KEY_SECRET"));
	set_str(&c->ca_file, getenv("GCRELAY_CA_FILE"));
	if (c->url == NULL)
		c->url = strdup("http://127.0.0.1:8080");
}

/* Print a problem+json (or any error body) and return an exit code. */
static int
ctl_error(long status, const struct http_resp *r, const char *what)
{
	json_t *p = json_loadb(buf_str(&r->body), r->body.len, 0, NULL);
	const char *detail = jsonutil_str(p, "detail");
	json_t *errs = json_object_get(p, "errors"), *e;
	size_t i;

	if (status == 401 || status == 403)
		fprintf(stderr, "gcrelayctl: %s refused (%ld %s): %s\n", what,
		        status, status == 401 ? "unauthorized" : "forbidden",
		        detail ? detail : "no reason given");
	else if (status == 404)
		fprintf(stderr, "gcrelayctl: not found: %s\n",
		        detail ? detail : what);
	else
		fprintf(stderr, "gcrelayctl: %s failed (HTTP %ld): %s\n", what,
		        status, detail ? detail : buf_str(&r->body));
	json_array_foreach(errs, i, e)
	    fprintf(stderr, "  %s: %s\n", jsonutil_str(e, "field"),
	            jsonutil_str(e, "detail"));
	json_decref(p);
	return status == 404 ? 3 : status == 401 || status == 403 ? 4 : 1;
}

/* Send one request signed for timestamp now; r is filled (fini it). */
static void
ctl_send(struct ctl *c, const char *method, const char *uri, const char *body,
         time_t now, struct http_resp *r)
{
	struct http_req req;
	char ts[24], sig[ADMIN_SIG_LEN], h1[200], h2[64], h3[80];

	memset(&req, 0, sizeof(req));
	req.method = method;
	http_req_url(&req, "%s%s", c->url, uri); /* refused when too long */
	snprintf(ts, sizeof(ts), "%lld", (long long)now);
	if (admin_sig_sign(c->secret, method, uri, ts, body ? body : "",
	                   body ? strlen(body) : 0, sig) != GC_OK) {
		http_resp_init(r);
		r->result = HTTP_NOT_SENT;
		snprintf(r->error, sizeof(r->error),
		         "could not sign the request (OpenSSL failed)");
		return;
	}
	snprintf(h1, sizeof(h1), "X-Gcrelay-Key: %s", c->key_id);
	snprintf(h2, sizeof(h2), "X-Gcrelay-Timestamp: %s", ts);
	snprintf(h3, sizeof(h3), "X-Gcrelay-Signature: %s", sig);
	http_req_header(&req, h1);
	http_req_header(&req, h2);
	http_req_header(&req, h3);
	http_req_header(&req, "Accept: application/json");
	if (body != NULL) {
		http_req_header(&req, "Content-Type: application/json");
		req.body = body;
		req.bodylen = strlen(body);
	}
	httpc_perform(c->http, &req, r);
}

/*
 * Signed request to the admin API; *out is the parsed reply (NULL for an
 * empty body).  Returns 0 on a 2xx, else the exit code after reporting.
 */
static int
ctl_call(struct ctl *c, const char *method, const char *uri, const char *body,
         json_t **out)
{
	const struct timespec tick = {0, 50 * 1000 * 1000};
	struct http_resp r;
	time_t now = time(NULL);
	int rc = 0;

	*out = NULL;
	if (c->key_id == NULL || c->secret == NULL) {
		fprintf(stderr, "gcrelayctl: no key: set key_id and secret in "
		                "the config file or GCRELAY_KEY_ID and "
		                "GCRELAY_KEY_SECRET\n");
		return EXIT_USAGE;
	}
	ctl_send(c, method, uri, body, now, &r);
	if (r.result == HTTP_OK && r.status == 401) {
		/*
		 * Each signature is good once: the same request sent in the
		 * same second (a script calling us twice) is refused as a
		 * replay.  A 401 changed nothing, so sign again for the next
		 * second; a wrong key fails the same way twice.
		 */
		http_resp_fini(&r);
		/* At most a second, counted: a clock step cannot stretch it. */
		for (int i = 0; i < 21 && time(NULL) == now; i++)
			nanosleep(&tick, NULL);
		ctl_send(c, method, uri, body, now + 1, &r);
	}
	if (r.result != HTTP_OK) {
		fprintf(stderr, "gcrelayctl: cannot reach %s: %s\n", c->url,
		        r.error);
		rc = 2;
	} else if (r.status < 200 || r.status > 299)
		rc = ctl_error(r.status, &r, uri);
	else if (r.body.len > 0)
		*out = json_loadb(buf_str(&r.body), r.body.len, 0, NULL);
	http_resp_fini(&r);
	return rc;
}

static void
print_json(const json_t *j)
{
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);

	if (s != NULL)
		printf("%s\n", s);
	free(s);
}

static const char *
dest_state(const json_t *brand, const char *dest)
{
	json_t *d = json_object_get(brand, dest);

	if (d == NULL)
		return "-";
	return json_is_false(json_object_get(d, "enabled")) ? "paused"
	                                                    : "configured";
}

static void
print_brands(const json_t *reply)
{
	json_t *b;
	size_t i;

	printf("%-24s %-28s %-11s %-11s\n", "SLUG", "NAME", "EMARSYS", "YOTPO");
	json_array_foreach(json_object_get(reply, "brands"), i, b)
	    printf("%-24s %-28.28s %-11s %-11s\n", jsonutil_str(b, "slug"),
	           jsonutil_str(b, "name"), dest_state(b, "emarsys"),
	           dest_state(b, "yotpo"));
}

static void
print_events(const json_t *reply)
{
	json_t *e, *d;
	size_t i, k;
	const char *cur = jsonutil_str(reply, "next_cursor");

	printf("%-36s %-16s %-15s %-10s %-24s %s\n", "ID", "BRAND", "KIND",
	       "STATUS", "RECEIVED", "DELIVERIES");
	json_array_foreach(json_object_get(reply, "events"), i, e)
	{
		printf("%-36.36s %-16.16s %-15s %-10s %-24s ",
		       jsonutil_str(e, "id"), jsonutil_str(e, "brand"),
		       jsonutil_str(e, "kind"), jsonutil_str(e, "status"),
		       jsonutil_str(e, "received_at"));
		json_array_foreach(json_object_get(e, "deliveries"), k, d)
		    printf("%s%s=%s", k ? " " : "",
		           jsonutil_str(d, "destination"),
		           jsonutil_str(d, "status"));
		printf("\n");
	}
	if (cur != NULL)
		printf("(more: --cursor %s)\n", cur);
}

static void
print_outcome(const json_t *o)
{
	json_t *d;
	size_t i;

	if (jsonutil_str(o, "id"))
		printf("event %s: %s\n", jsonutil_str(o, "id"),
		       jsonutil_str(o, "status"));
	json_array_foreach(json_object_get(o, "deliveries"), i, d)
	{
		printf("  %-8s %-10s %s%s%s\n", jsonutil_str(d, "destination"),
		       jsonutil_str(d, "status"),
		       jsonutil_str(d, "reason") ? jsonutil_str(d, "reason")
		                                 : "",
		       jsonutil_str(d, "warning") ? " warning: " : "",
		       jsonutil_str(d, "warning") ? jsonutil_str(d, "warning")
		                                  : "");
	}
	json_array_foreach(json_object_get(o, "attempts"), i, d)
	{
		if (i == 0)
			printf("  attempts:\n");
		printf("    %s %-8s %-15s %-10s %4lld %s\n",
		       jsonutil_str(d, "at"), jsonutil_str(d, "destination"),
		       jsonutil_str(d, "step"), jsonutil_str(d, "outcome"),
		       (long long)json_integer_value(
		           json_object_get(d, "http_status")),
		       jsonutil_str(d, "reply_code")
		           ? jsonutil_str(d, "reply_code")
		           : "");
	}
}

/* Read a whole file (or stdin for "-" / NULL); caller frees. */
static char *
read_input(const char *path)
{
	FILE *fp =
	    (path == NULL || strcmp(path, "-") == 0) ? stdin : fopen(path, "r");
	struct buf b;
	char chunk[4096];
	size_t n;

	if (fp == NULL) {
		fprintf(stderr, "gcrelayctl: %s: %s\n", path, strerror(errno));
		exit(EXIT_USAGE);
	}
	buf_init(&b, 16 << 20);
	while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
		if (buf_append(&b, chunk, n) != GC_OK)
			break;
	if (fp != stdin)
		fclose(fp);
	return buf_steal(&b);
}

/* Append "&name=value" (escaped) to a query being built. */
static void
query_add(struct buf *q, const char *name, const char *value)
{
	if (value == NULL)
		return;
	buf_printf(q, "%c%s=", q->len == 0 ? '?' : '&', name);
	httpc_escape(q, value);
}

/* Parse --name value pairs after the positional arguments. */
static const char *
opt_value(int argc, char **argv, const char *name)
{
	for (int i = 0; i + 1 < argc; i++)
		if (strcmp(argv[i], name) == 0)
			return argv[i + 1];
	return NULL;
}

static int
cmd_brands(struct ctl *c, int argc, char **argv)
{
	char uri[256];
	json_t *out = NULL;
	char *body = NULL;
	int rc;

	if (argc < 1)
		usage();
	if (strcmp(argv[0], "list") == 0)
		rc = ctl_call(c, "GET", "/admin/v1/brands", NULL, &out);
	else if (argc < 2)
		usage();
	else {
		snprintf(uri, sizeof(uri), "/admin/v1/brands/%s", argv[1]);
		if (strcmp(argv[0], "get") == 0)
			rc = ctl_call(c, "GET", uri, NULL, &out);
		else if (strcmp(argv[0], "put") == 0) {
			body = read_input(argc > 2 ? argv[2] : NULL);
			rc = ctl_call(c, "PUT", uri, body, &out);
		} else if (strcmp(argv[0], "delete") == 0) {
			rc = ctl_call(c, "DELETE", uri, NULL, &out);
			if (rc == 0 && !c->json)
				printf("deleted brand %s\n", argv[1]);
		} else if (strcmp(argv[0], "check") == 0) {
			snprintf(uri, sizeof(uri), "/admin/v1/brands/%s/check",
			         argv[1]);
			rc = ctl_call(c, "POST", uri, "{}", &out);
		} else if (strcmp(argv[0], "redeliver") == 0) {
			json_t *q = json_object();
			const char *since = opt_value(argc, argv, "--since"),
			           *until = opt_value(argc, argv, "--until");
			if (since)
				json_object_set_new(q, "since",
				                    json_string(since));
			if (until)
				json_object_set_new(q, "until",
				                    json_string(until));
			body = jsonutil_compact(q);
			json_decref(q);
			snprintf(uri, sizeof(uri),
			         "/admin/v1/brands/%s/redeliver", argv[1]);
			rc = ctl_call(c, "POST", uri, body, &out);
		} else
			usage();
	}
	if (rc == 0 && out != NULL) {
		if (c->json || strcmp(argv[0], "list") != 0)
			print_json(out);
		else
			print_brands(out);
	}
	json_decref(out);
	free(body);
	return rc;
}

static int
cmd_events(struct ctl *c, int argc, char **argv)
{
	struct buf uri;
	json_t *out = NULL;
	int rc;

	if (argc < 1)
		usage();
	buf_init(&uri, 0);
	if (strcmp(argv[0], "list") == 0) {
		struct buf q;
		buf_init(&q, 0);
		query_add(&q, "brand", opt_value(argc, argv, "--brand"));
		query_add(&q, "status", opt_value(argc, argv, "--status"));
		query_add(&q, "since", opt_value(argc, argv, "--since"));
		query_add(&q, "limit", opt_value(argc, argv, "--limit"));
		query_add(&q, "cursor", opt_value(argc, argv, "--cursor"));
		buf_printf(&uri, "/admin/v1/events%s", buf_str(&q));
		buf_free(&q);
		rc = ctl_call(c, "GET", buf_str(&uri), NULL, &out);
		if (rc == 0 && out != NULL && !c->json)
			print_events(out);
	} else if (argc >= 2 && (strcmp(argv[0], "get") == 0 ||
	                         strcmp(argv[0], "redeliver") == 0)) {
		int redeliver = strcmp(argv[0], "redeliver") == 0;
		buf_puts(&uri, "/admin/v1/events/");
		httpc_escape(&uri, argv[1]);
		if (redeliver)
			buf_puts(&uri, "/redeliver");
		rc = ctl_call(c, redeliver ? "POST" : "GET", buf_str(&uri),
		              redeliver ? "{}" : NULL, &out);
		if (rc == 0 && out != NULL && !c->json)
			print_outcome(out);
	} else
		usage();
	if (rc == 0 && out != NULL && c->json)
		print_json(out);
	json_decref(out);
	buf_free(&uri);
	return rc;
}

/* Sign an event the Standard Webhooks way and POST it to /v1/events. */
static int
cmd_send_event(struct ctl *c, int argc, char **argv)
{
	const char *secret = opt_value(argc, argv, "--secret"),
	           *id = opt_value(argc, argv, "--id"), *file = NULL;
	struct webhook_key key;
	struct http_req req;
	struct http_resp r;
	char ts[24], sig[64], h1[300], h2[64], h3[96], gen[40];
	char *body;
	int rc = 0;

	for (int i = 0; i < argc; i++) {
		if (argv[i][0] == '-' && argv[i][1] == '-') {
			i++;
			continue;
		}
		file = argv[i];
	}
	if (secret == NULL)
		secret = getenv("GCRELAY_WEBHOOK_SECRET");
	if (secret == NULL || webhook_key_parse(secret, &key) != GC_OK) {
		fprintf(stderr,
		        "gcrelayctl: send-event needs --secret whsec_... "
		        "(or GCRELAY_WEBHOOK_SECRET)\n");
		return EXIT_USAGE;
	}
	if (id == NULL) {
		snprintf(gen, sizeof(gen), "msg_%lld_%d", (long long)time(NULL),
		         (int)(clock() % 100000));
		id = gen;
	}
	body = read_input(file);
	snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
	webhook_sign(&key, id, ts, body, strlen(body), sig, sizeof(sig));
	if (sig[0] == '\0') {
		fprintf(stderr, "gcrelayctl: could not sign the event\n");
		free(body);
		return 1;
	}
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	http_req_url(&req, "%s/v1/events", c->url); /* refused if too long */
	snprintf(h1, sizeof(h1), "webhook-id: %s", id);
	snprintf(h2, sizeof(h2), "webhook-timestamp: %s", ts);
	snprintf(h3, sizeof(h3), "webhook-signature: %s", sig);
	http_req_header(&req, h1);
	http_req_header(&req, h2);
	http_req_header(&req, h3);
	http_req_header(&req, "Content-Type: application/json");
	req.body = body;
	req.bodylen = strlen(body);
	httpc_perform(c->http, &req, &r);
	if (r.result != HTTP_OK) {
		fprintf(stderr, "gcrelayctl: cannot reach %s: %s\n", c->url,
		        r.error);
		rc = 2;
	} else {
		printf("HTTP %ld (webhook-id %s)\n%s", r.status, id,
		       buf_str(&r.body));
		rc = r.status >= 200 && r.status < 300 ? 0 : 1;
	}
	http_resp_fini(&r);
	free(body);
	return rc;
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"url", required_argument, NULL, 'u'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	struct ctl c;
	const char *config_path = NULL, *url = NULL;
	int ch, rc;

	memset(&c, 0, sizeof(c));
	/* "+": stop at the command so its own --options pass through. */
	while ((ch = getopt_long(argc, argv, "+c:u:jh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			config_path = optarg;
			break;
		case 'u':
			url = optarg;
			break;
		case 'j':
			c.json = 1;
			break;
		default:
			usage();
		}
	}
	argc -= optind;
	argv += optind;
	if (argc < 1)
		usage();
	ctl_settings(&c, config_path);
	set_str(&c.url, url);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		fprintf(stderr, "gcrelayctl: curl_global_init failed\n");
		return 1;
	}
	struct httpc_opts ho = {.connect_timeout_ms = 5000,
	                        .timeout_ms = 120000,
	                        .max_response_bytes = 64 << 20,
	                        .ca_file = c.ca_file,
	                        .allow_plain_http = 1};
	if ((c.http = httpc_alloc(&ho)) == NULL) {
		fprintf(stderr, "gcrelayctl: could not set up libcurl\n");
		return 1;
	}
	if (strcmp(argv[0], "brands") == 0)
		rc = cmd_brands(&c, argc - 1, argv + 1);
	else if (strcmp(argv[0], "events") == 0)
		rc = cmd_events(&c, argc - 1, argv + 1);
	else if (strcmp(argv[0], "send-event") == 0)
		rc = cmd_send_event(&c, argc - 1, argv + 1);
	else
		usage();
	httpc_free(c.http);
	curl_global_cleanup();
	free(c.url);
	free(c.key_id);
	free(c.secret);
	free(c.ca_file);
	return rc;
}
