#include <sys/stat.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libconfig.h>
#include <openssl/crypto.h>

#include "app_config.h"
#include "log.h"

const char *const admin_role_names[] = {
    [ROLE_READ] = "read",
    [ROLE_WRITE] = "write",
};
_Static_assert(sizeof(admin_role_names) / sizeof(admin_role_names[0]) ==
                   ROLE__MAX,
               "admin_role_names[] out of step");

static const char *const durability_names[] = {
    [DURABILITY_NORMAL] = "normal",
    [DURABILITY_FULL] = "full",
};
_Static_assert(sizeof(durability_names) / sizeof(durability_names[0]) ==
                   DURABILITY__MAX,
               "durability_names[] out of step");

/* Every setting gcrelay knows; anything else is a typo and an error. */
static const char *const known[] = {
    "listen",
    "listen.socket",
    "listen.port",
    "listen.mode",
    "listen.group",
    "listen.backlog",
    "listen.control_socket",
    "listen.control_port",
    "workers",
    "control_workers",
    "log_level",
    "shutdown_grace_s",
    "store",
    "store.path",
    "store.backend",
    "store.url",
    "store.password_file",
    "store.durability",
    "store.busy_timeout_ms",
    "store.retention_days",
    "secrets_key_file",
    "limits",
    "limits.max_body_bytes",
    "webhook",
    "webhook.secrets",
    "webhook.tolerance_s",
    "admin",
    "admin.keys",
    "admin.tolerance_s",
    "http",
    "http.connect_timeout_ms",
    "http.timeout_ms",
    "http.max_response_bytes",
    "http.ca_file",
    "delivery",
    "delivery.budget_ms",
    "delivery.sync_budget_ms",
    "delivery.sync_workers",
    "delivery.concurrency",
    "delivery.dispatchers",
    "delivery.circuit_failures",
    "delivery.circuit_open_s",
    "delivery.retry_schedule",
    "retrier",
    "retrier.interval_ms",
    "retrier.batch",
    "emarsys",
    "emarsys.token_url",
    "emarsys.api_base",
    "yotpo",
    "yotpo.api_base",
    "yotpo.default_max_rps",
    "yotpo.reconcile_after_s",
    "yotpo.reconcile_reads",
    "yotpo.reconcile_window_s",
};

/* About 3 days in all: DESIGN.md, Delivery semantics. */
static const long default_schedule[] = {
    30, 120, 600, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 86400,
};

struct cfg_ctx {
	config_t lc;
	const char *file;
	char *err;
	size_t errsz;
	int failed;
};

/* Record the first error as "file:line: message". */
static void
cfg_error(struct cfg_ctx *c, const config_setting_t *s, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (c->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errsz, "%s:%d: %s", c->file,
	         s ? (int)config_setting_source_line(s) : 0, msg);
	c->failed = 1;
}

/* Full dotted path of s into out, list elements as name[i]. */
static void
cfg_path(const config_setting_t *s, char *out, size_t n)
{
	const config_setting_t *p = config_setting_parent(s);
	char head[128];

	if (p == NULL || config_setting_is_root(p)) {
		snprintf(out, n, "%s",
		         config_setting_name(s) ? config_setting_name(s) : "");
		return;
	}
	cfg_path(p, head, sizeof(head));
	if (config_setting_name(s) != NULL)
		snprintf(out, n, "%s.%s", head, config_setting_name(s));
	else
		snprintf(out, n, "%s[%d]", head, config_setting_index(s));
}

static int
cfg_is_known(const char *path)
{
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (strcmp(known[i], path) == 0)
			return 1;
	return 0;
}

/* Reject settings gcrelay does not know (admin.keys members excepted). */
static void
cfg_check_unknown(struct cfg_ctx *c, const config_setting_t *group)
{
	char path[160];
	int n = config_setting_length(group);

	for (int i = 0; i < n && !c->failed; i++) {
		config_setting_t *s = config_setting_get_elem(group, i);
		cfg_path(s, path, sizeof(path));
		if (!cfg_is_known(path)) {
			cfg_error(c, s, "unknown setting '%s'", path);
			return;
		}
		if (config_setting_is_group(s))
			cfg_check_unknown(c, s);
	}
}

/*
 * Integer at path within [min, max], default def when absent.  Accepts
 * libconfig int and int64 values only.
 */
static long long
cfg_int(struct cfg_ctx *c, const char *path, long long min, long long max,
        long long def)
{
	config_setting_t *s = config_lookup(&c->lc, path);
	long long v;

	if (s == NULL)
		return def;
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64) {
		cfg_error(c, s, "%s must be an integer", path);
		return def;
	}
	v = config_setting_get_int64(s);
	if (v < min || v > max) {
		cfg_error(c, s, "%s must be between %lld and %lld (got %lld)",
		          path, min, max, v);
		return def;
	}
	return v;
}

/*
 * Copy of the string at path, or of def (may be NULL) when absent.
 * Caller frees.  Empty strings are errors unless allow_empty.
 */
static char *
cfg_str(struct cfg_ctx *c, const char *path, const char *def)
{
	config_setting_t *s = config_lookup(&c->lc, path);
	const char *v;
	char *copy;

	if (s == NULL)
		return def ? strdup(def) : NULL;
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		cfg_error(c, s, "%s must be a string", path);
		return NULL;
	}
	v = config_setting_get_string(s);
	if (v[0] == '\0') {
		cfg_error(c, s, "%s must not be empty", path);
		return NULL;
	}
	if ((copy = strdup(v)) == NULL)
		cfg_error(c, s, "out of memory");
	return copy;
}

/* Index of the string at path in names[n], def when absent. */
static int
cfg_enum(struct cfg_ctx *c, const char *path, const char *const *names, int n,
         int def)
{
	config_setting_t *s = config_lookup(&c->lc, path);
	const char *v;

	if (s == NULL)
		return def;
	if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		v = config_setting_get_string(s);
		for (int i = 0; i < n; i++)
			if (strcmp(v, names[i]) == 0)
				return i;
	}
	char allowed[128] = "";
	size_t used = 0;
	for (int i = 0; i < n && used < sizeof(allowed); i++)
		used += (size_t)snprintf(allowed + used, sizeof(allowed) - used,
		                         "%s\"%s\"", i ? ", " : "", names[i]);
	cfg_error(c, s, "%s must be one of %s", path, allowed);
	return def;
}

/* A URL setting that must use https://. */
static char *
cfg_url(struct cfg_ctx *c, const char *path, const char *def)
{
	char *v = cfg_str(c, path, def);

	if (v != NULL && strncmp(v, "https://", 8) != 0) {
		cfg_error(c, config_lookup(&c->lc, path),
		          "%s must be an https:// URL", path);
		free(v);
		return NULL;
	}
	return v;
}

/*
 * Default control socket beside the data socket: "x.sock" becomes
 * "x-control.sock", any other path gets "-control" appended.
 */
static char *
cfg_control_path(const char *data)
{
	size_t n = strlen(data);
	char *p;

	if (n > 5 && strcmp(data + n - 5, ".sock") == 0)
		n -= 5;
	if ((p = malloc(n + sizeof("-control.sock"))) == NULL)
		return NULL;
	snprintf(p, n + sizeof("-control.sock"), "%.*s-control%s", (int)n, data,
	         n < strlen(data) ? ".sock" : "");
	return p;
}

/*
 * The control plane's listener (/healthz, /metrics, /admin): a unix
 * socket or 127.0.0.1:port, by default beside the data listener.
 */
static void
cfg_control(struct cfg_ctx *c, struct app_config *cfg)
{
	config_setting_t *s = config_lookup(&c->lc, "listen.control_socket");

	cfg->control_socket = cfg_str(c, "listen.control_socket", NULL);
	cfg->control_port = (int)cfg_int(c, "listen.control_port", 1, 65535, 0);
	if (c->failed)
		return;
	if (cfg->control_socket != NULL && cfg->control_port != 0) {
		cfg_error(c, config_lookup(&c->lc, "listen.control_port"),
		          "set listen.control_socket or listen.control_port, "
		          "not both");
		return;
	}
	if (cfg->control_socket == NULL && cfg->control_port == 0) {
		s = config_lookup(&c->lc, "listen");
		if (cfg->listen_socket != NULL) {
			if ((cfg->control_socket =
			         cfg_control_path(cfg->listen_socket)) == NULL)
				cfg_error(c, s, "out of memory");
		} else if (cfg->listen_port < 65535)
			cfg->control_port = cfg->listen_port + 1;
		else
			cfg_error(c, config_lookup(&c->lc, "listen.port"),
			          "listen.port 65535 leaves no default "
			          "listen.control_port; set one");
	}
	if (cfg->control_socket != NULL && strlen(cfg->control_socket) >= 100)
		cfg_error(c, s,
		          "listen.control_socket path %s is too long (max 99)",
		          cfg->control_socket);
	else if (cfg->control_socket != NULL && cfg->listen_socket != NULL &&
	         strcmp(cfg->control_socket, cfg->listen_socket) == 0)
		cfg_error(c, s,
		          "listen.control_socket must differ from "
		          "listen.socket");
	else if (cfg->control_port != 0 &&
	         cfg->control_port == cfg->listen_port)
		cfg_error(c, config_lookup(&c->lc, "listen.control_port"),
		          "listen.control_port must differ from listen.port");
}

static void
cfg_listen(struct cfg_ctx *c, struct app_config *cfg)
{
	config_setting_t *mode;
	const char *ms;
	char *end;
	unsigned long m;

	cfg->listen_socket = cfg_str(c, "listen.socket", NULL);
	cfg->listen_port = (int)cfg_int(c, "listen.port", 1, 65535, 0);
	if (cfg->listen_socket == NULL && cfg->listen_port == 0 && !c->failed)
		cfg->listen_socket = strdup("/run/gcrelay/gcrelay.sock");
	if (cfg->listen_socket != NULL && cfg->listen_port != 0)
		cfg_error(c, config_lookup(&c->lc, "listen.port"),
		          "set listen.socket or listen.port, not both");
	if (cfg->listen_socket != NULL && strlen(cfg->listen_socket) >= 100)
		cfg_error(c, config_lookup(&c->lc, "listen.socket"),
		          "listen.socket path is too long (max 99)");
	cfg->listen_mode = 0660;
	if ((mode = config_lookup(&c->lc, "listen.mode")) != NULL) {
		ms = config_setting_get_string(mode);
		errno = 0;
		m = ms ? strtoul(ms, &end, 8) : 0;
		if (ms == NULL || *ms == '\0' || *end != '\0' || errno ||
		    m > 0777)
			cfg_error(c, mode,
			          "listen.mode must be an octal string such "
			          "as \"0660\"");
		else
			cfg->listen_mode = (unsigned)m;
	}
	cfg->listen_group = cfg_str(c, "listen.group", NULL);
	cfg->listen_backlog = (int)cfg_int(c, "listen.backlog", 1, 65535, 128);
	cfg_control(c, cfg);
}

static const char *const backend_names[] = {
    [STORE_SQLITE] = "sqlite",
    [STORE_POSTGRESQL] = "postgresql",
};
_Static_assert(sizeof(backend_names) / sizeof(backend_names[0]) == STORE__MAX,
               "backend_names[] out of step");

static void
cfg_store(struct cfg_ctx *c, struct app_config *cfg)
{
	cfg->store_backend = cfg_enum(c, "store.backend", backend_names,
	                              STORE__MAX, STORE_SQLITE);
	cfg->store_path =
	    cfg_str(c, "store.path", "/var/lib/gcrelay/gcrelay.db");
	cfg->store_url = cfg_str(c, "store.url", NULL);
	cfg->store_password_file = cfg_str(c, "store.password_file", NULL);
	if (cfg->store_backend == STORE_POSTGRESQL && cfg->store_url == NULL)
		cfg_error(c, config_lookup(&c->lc, "store.backend"),
		          "store.backend \"postgresql\" needs store.url (a "
		          "libpq connection string or URI)");

	cfg->durability = cfg_enum(c, "store.durability", durability_names,
	                           DURABILITY__MAX, DURABILITY_NORMAL);
	cfg->busy_timeout_ms =
	    (int)cfg_int(c, "store.busy_timeout_ms", 100, 60000, 5000);
	cfg->retention_days =
	    (int)cfg_int(c, "store.retention_days", 1, 3650, 30);
}

static void
cfg_webhook(struct cfg_ctx *c, struct app_config *cfg)
{
	config_setting_t *s = config_lookup(&c->lc, "webhook.secrets");
	int n;

	cfg->webhook_tolerance_s =
	    cfg_int(c, "webhook.tolerance_s", 1, 3600, 300);
	if (s == NULL) {
		cfg_error(c, config_lookup(&c->lc, "webhook"),
		          "webhook.secrets: at least one whsec_ secret is "
		          "required");
		return;
	}
	if (!config_setting_is_array(s) && !config_setting_is_list(s)) {
		cfg_error(c, s, "webhook.secrets must be a list of strings");
		return;
	}
	n = config_setting_length(s);
	if (n < 1 || n > CFG_MAX_KEYS) {
		cfg_error(c, s, "webhook.secrets must hold 1 to %d secrets",
		          CFG_MAX_KEYS);
		return;
	}
	for (int i = 0; i < n; i++) {
		config_setting_t *e = config_setting_get_elem(s, i);
		const char *v = config_setting_get_string(e);
		if (v == NULL ||
		    webhook_key_parse(v, &cfg->webhook_keys[i]) != GC_OK) {
			cfg_error(c, e,
			          "webhook.secrets[%d] must be \"whsec_\" "
			          "followed by base64 of 24 to 64 bytes",
			          i);
			return;
		}
	}
	cfg->nwebhook_keys = (size_t)n;
}

static void
cfg_admin_key_one(struct cfg_ctx *c, config_setting_t *k, int i,
                  struct admin_key *out)
{
	const char *id = NULL, *secret = NULL, *role = NULL;
	int r;

	if (!config_setting_is_group(k)) {
		cfg_error(c, k, "admin.keys[%d] must be a group", i);
		return;
	}
	for (int j = 0; j < config_setting_length(k); j++) {
		const char *name =
		    config_setting_name(config_setting_get_elem(k, j));
		if (strcmp(name, "id") && strcmp(name, "secret") &&
		    strcmp(name, "role")) {
			cfg_error(c, config_setting_get_elem(k, j),
			          "unknown setting 'admin.keys[%d].%s'", i,
			          name);
			return;
		}
	}
	config_setting_lookup_string(k, "id", &id);
	config_setting_lookup_string(k, "secret", &secret);
	config_setting_lookup_string(k, "role", &role);
	if (id == NULL || id[0] == '\0' || strlen(id) > 64) {
		cfg_error(c, k, "admin.keys[%d].id must be 1 to 64 characters",
		          i);
		return;
	}
	if (secret == NULL || strlen(secret) < 32) {
		cfg_error(
		    c, k,
		    "admin.keys[%d].secret must be at least 32 characters", i);
		return;
	}
	for (r = 0; r < ROLE__MAX; r++)
		if (role != NULL && strcmp(role, admin_role_names[r]) == 0)
			break;
	if (r == ROLE__MAX) {
		cfg_error(c, k,
		          "admin.keys[%d].role must be \"read\" or \"write\"",
		          i);
		return;
	}
	out->id = strdup(id);
	out->secret = strdup(secret);
	out->role = (enum admin_role)r;
	if (out->id == NULL || out->secret == NULL)
		cfg_error(c, k, "out of memory");
}

static void
cfg_admin(struct cfg_ctx *c, struct app_config *cfg)
{
	config_setting_t *s = config_lookup(&c->lc, "admin.keys");
	int n;

	cfg->admin_tolerance_s = cfg_int(c, "admin.tolerance_s", 1, 3600, 300);
	if (s == NULL)
		return; /* no keys: the admin API answers 401 to everyone */
	if (!config_setting_is_list(s)) {
		cfg_error(c, s, "admin.keys must be a list ( {...}, ... )");
		return;
	}
	n = config_setting_length(s);
	if (n > CFG_MAX_KEYS) {
		cfg_error(c, s, "admin.keys holds at most %d keys",
		          CFG_MAX_KEYS);
		return;
	}
	for (int i = 0; i < n && !c->failed; i++) {
		cfg_admin_key_one(c, config_setting_get_elem(s, i), i,
		                  &cfg->admin_keys[i]);
		cfg->nadmin_keys = (size_t)i + 1;
		for (int j = 0; j < i && !c->failed; j++)
			if (strcmp(cfg->admin_keys[j].id,
			           cfg->admin_keys[i].id) == 0)
				cfg_error(
				    c, config_setting_get_elem(s, i),
				    "admin.keys[%d].id \"%s\" is used twice", i,
				    cfg->admin_keys[i].id);
	}
}

static void
cfg_delivery(struct cfg_ctx *c, struct app_config *cfg)
{
	config_setting_t *s = config_lookup(&c->lc, "delivery.retry_schedule");
	int n;

	cfg->delivery_budget_ms =
	    cfg_int(c, "delivery.budget_ms", 1000, 120000, 20000);
	cfg->retrier_interval_ms =
	    cfg_int(c, "retrier.interval_ms", 50, 60000, 1000);
	cfg->retrier_batch = (int)cfg_int(c, "retrier.batch", 1, 1000, 20);
	cfg->delivery_sync_budget_ms =
	    cfg_int(c, "delivery.sync_budget_ms", 0, 120000, 3000);
	cfg->delivery_concurrency =
	    (int)cfg_int(c, "delivery.concurrency", 1, 1024, 64);
	cfg->delivery_dispatchers =
	    (int)cfg_int(c, "delivery.dispatchers", 1, 16, 1);
	cfg->circuit_failures =
	    (int)cfg_int(c, "delivery.circuit_failures", 1, 1000, 5);
	cfg->circuit_open_ms =
	    cfg_int(c, "delivery.circuit_open_s", 1, 3600, 5) * 1000;
	if (s == NULL) {
		cfg->nretry_schedule =
		    sizeof(default_schedule) / sizeof(default_schedule[0]);
		memcpy(cfg->retry_schedule, default_schedule,
		       sizeof(default_schedule));
		return;
	}
	n = config_setting_length(s);
	if (!config_setting_is_array(s) || n < 1 || n > CFG_MAX_SCHEDULE) {
		cfg_error(c, s,
		          "delivery.retry_schedule must be an array of 1 to "
		          "%d delays in seconds",
		          CFG_MAX_SCHEDULE);
		return;
	}
	for (int i = 0; i < n; i++) {
		config_setting_t *e = config_setting_get_elem(s, i);
		long long v = config_setting_get_int64(e);
		if ((config_setting_type(e) != CONFIG_TYPE_INT &&
		     config_setting_type(e) != CONFIG_TYPE_INT64) ||
		    v < 1 || v > 7 * 86400) {
			cfg_error(c, e,
			          "delivery.retry_schedule[%d] must be 1 to "
			          "604800 seconds",
			          i);
			return;
		}
		cfg->retry_schedule[i] = (long)v;
	}
	cfg->nretry_schedule = (size_t)n;
}

static void
cfg_remote(struct cfg_ctx *c, struct app_config *cfg)
{
	cfg->http_connect_timeout_ms =
	    cfg_int(c, "http.connect_timeout_ms", 100, 60000, 5000);
	cfg->http_timeout_ms =
	    cfg_int(c, "http.timeout_ms", 100, 120000, 10000);
	cfg->http_max_response_bytes = (size_t)cfg_int(
	    c, "http.max_response_bytes", 1024, 64 << 20, 1 << 20);
	cfg->http_ca_file = cfg_str(c, "http.ca_file", NULL);
	cfg->emarsys_token_url = cfg_url(
	    c, "emarsys.token_url", "https://auth.emarsys.net/oauth2/token");
	cfg->emarsys_api_base =
	    cfg_url(c, "emarsys.api_base", "https://api.emarsys.net/api/v3/");
	cfg->yotpo_api_base =
	    cfg_url(c, "yotpo.api_base", "https://loyalty.yotpo.com/api/v2");
	cfg->yotpo_default_max_rps =
	    (int)cfg_int(c, "yotpo.default_max_rps", 1, 100, 5);
	cfg->yotpo_reconcile_after_s =
	    cfg_int(c, "yotpo.reconcile_after_s", 0, 86400, 60);
	cfg->yotpo_reconcile_reads =
	    (int)cfg_int(c, "yotpo.reconcile_reads", 1, 20, 3);
	cfg->yotpo_reconcile_window_s =
	    cfg_int(c, "yotpo.reconcile_window_s", 0, 7 * 86400,
	            cfg->yotpo_reconcile_after_s * 3);
	if (cfg->yotpo_reconcile_window_s < cfg->yotpo_reconcile_after_s)
		cfg_error(c, config_lookup(&c->lc, "yotpo.reconcile_window_s"),
		          "yotpo.reconcile_window_s must be at least "
		          "yotpo.reconcile_after_s (%ld)",
		          cfg->yotpo_reconcile_after_s);
}

/*
 * Refuse a file whose mode has any of the bits in deny, as ssh refuses a
 * private key others can read: what is named `what` in the message.
 */
static void
cfg_file_mode(struct cfg_ctx *c, const config_setting_t *s, const char *path,
              mode_t deny, const char *what)
{
	struct stat st;

	if (stat(path, &st) == -1) {
		cfg_error(c, s, "cannot read %s %s: %s", what, path,
		          strerror(errno));
		return;
	}
	if ((st.st_mode & deny) == 0)
		return;
	cfg_error(c, s, "%s %s has mode %04o: it must not be %s", what, path,
	          (unsigned int)(st.st_mode & 07777),
	          (deny & S_IROTH) ? "readable by others nor writable by "
	                             "group or others (e.g. 0440 root:gcrelay)"
	                           : "writable by group or others (e.g. "
	                             "0640 root:gcrelay)");
}

static void
cfg_secrets_key(struct cfg_ctx *c, struct app_config *cfg)
{
	char why[256];

	cfg->secrets_key_file = cfg_str(c, "secrets_key_file", NULL);
	if (c->failed)
		return;
	if (cfg->secrets_key_file == NULL) {
		cfg_error(c, NULL,
		          "secrets_key_file is required (32 random bytes, "
		          "e.g. `openssl rand -hex 32`)");
		return;
	}
	cfg_file_mode(c, config_lookup(&c->lc, "secrets_key_file"),
	              cfg->secrets_key_file, S_IRWXO | S_IWGRP, "key file");
	if (c->failed)
		return;
	if (crypto_key_load(cfg->secrets_key_file, cfg->secrets_key, why,
	                    sizeof(why)) != GC_OK)
		cfg_error(c, config_lookup(&c->lc, "secrets_key_file"), "%s",
		          why);
}

/* The PostgreSQL password, from a file only its owner and group read. */
static void
cfg_store_password(struct cfg_ctx *c, struct app_config *cfg)
{
	const config_setting_t *s =
	    config_lookup(&c->lc, "store.password_file");
	FILE *fp;
	char buf[1024];
	size_t n;

	if (cfg->store_password_file == NULL || c->failed)
		return;
	cfg_file_mode(c, s, cfg->store_password_file, S_IRWXO | S_IWGRP,
	              "password file");
	if (c->failed)
		return;
	if ((fp = fopen(cfg->store_password_file, "re")) == NULL) {
		cfg_error(c, s, "cannot read %s: %s", cfg->store_password_file,
		          strerror(errno));
		return;
	}
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	cfg->store_password = strdup(buf);
	OPENSSL_cleanse(buf, sizeof(buf));
}

static void
cfg_all(struct cfg_ctx *c, struct app_config *cfg)
{
	int lvl;
	char *level;

	cfg_check_unknown(c, config_root_setting(&c->lc));
	cfg_listen(c, cfg);
	cfg->workers = (int)cfg_int(c, "workers", 1, 256, 4);
	cfg->control_workers = (int)cfg_int(c, "control_workers", 1, 16, 1);
	/* Default: all but one worker may deliver synchronously. */
	cfg->delivery_sync_workers =
	    (int)cfg_int(c, "delivery.sync_workers", 0, 256,
	                 cfg->workers > 1 ? cfg->workers - 1 : 1);
	cfg->shutdown_grace_s = (int)cfg_int(c, "shutdown_grace_s", 1, 600, 30);
	level = cfg_str(c, "log_level", "info");
	if (level != NULL && (lvl = log_level_parse(level)) < 0)
		cfg_error(c, config_lookup(&c->lc, "log_level"),
		          "log_level must be one of \"debug\", \"info\", "
		          "\"warn\", \"error\"");
	else
		cfg->log_level = level ? lvl : 1;
	free(level);
	cfg_store(c, cfg);
	cfg->max_body_bytes = (size_t)cfg_int(c, "limits.max_body_bytes", 256,
	                                      16 << 20, 64 << 10);
	cfg_webhook(c, cfg);
	cfg_admin(c, cfg);
	cfg_delivery(c, cfg);
	cfg_remote(c, cfg);
	cfg_secrets_key(c, cfg);
	cfg_store_password(c, cfg);
}

/* See app_config.h. */
enum gc_err
cfg_load(const char *path, struct app_config *cfg, char *err, size_t errsz)
{
	struct cfg_ctx c = {.file = path, .err = err, .errsz = errsz};

	memset(cfg, 0, sizeof(*cfg));
	config_init(&c.lc);
	if (config_read_file(&c.lc, path) != CONFIG_TRUE) {
		if (config_error_type(&c.lc) == CONFIG_ERR_FILE_IO)
			snprintf(err, errsz, "%s:0: cannot read: %s", path,
			         strerror(errno));
		else
			snprintf(
			    err, errsz, "%s:%d: %s",
			    config_error_file(&c.lc) ? config_error_file(&c.lc)
			                             : path,
			    config_error_line(&c.lc), config_error_text(&c.lc));
		config_destroy(&c.lc);
		return GC_ECONFIG;
	}
	cfg->path = strdup(path);
	/* Whoever may write the config may point the key file anywhere. */
	cfg_file_mode(&c, NULL, path, S_IWGRP | S_IWOTH, "config file");
	if (!c.failed)
		cfg_all(&c, cfg);
	config_destroy(&c.lc);
	if (c.failed || cfg->path == NULL) {
		cfg_fini(cfg);
		return GC_ECONFIG;
	}
	return GC_OK;
}

/* See app_config.h. */
void
cfg_fini(struct app_config *cfg)
{
	free(cfg->path);
	free(cfg->listen_socket);
	free(cfg->listen_group);
	free(cfg->control_socket);
	free(cfg->store_path);
	free(cfg->store_url);
	free(cfg->store_password_file);
	if (cfg->store_password != NULL) {
		OPENSSL_cleanse(cfg->store_password,
		                strlen(cfg->store_password));
		free(cfg->store_password);
	}
	free(cfg->secrets_key_file);
	for (size_t i = 0; i < cfg->nadmin_keys; i++) {
		free(cfg->admin_keys[i].id);
		if (cfg->admin_keys[i].secret != NULL) {
			OPENSSL_cleanse(cfg->admin_keys[i].secret,
			                strlen(cfg->admin_keys[i].secret));
			free(cfg->admin_keys[i].secret);
		}
	}
	free(cfg->http_ca_file);
	free(cfg->emarsys_token_url);
	free(cfg->emarsys_api_base);
	free(cfg->yotpo_api_base);
	OPENSSL_cleanse(cfg, sizeof(*cfg));
	memset(cfg, 0, sizeof(*cfg));
}

/* See app_config.h. */
const struct admin_key *
cfg_admin_key(const struct app_config *cfg, const char *id)
{
	for (size_t i = 0; i < cfg->nadmin_keys; i++)
		if (strcmp(cfg->admin_keys[i].id, id) == 0)
			return &cfg->admin_keys[i];
	return NULL;
}
