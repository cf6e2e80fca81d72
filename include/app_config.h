/*
 * gcrelay's configuration: one libconfig file parsed and validated into
 * struct app_config.  The master parses it once before forking; workers
 * treat it as read-only.  Every string is owned by the struct.
 */
#ifndef GC_APP_CONFIG_H
#define GC_APP_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "crypto.h"
#include "gc_err.h"
#include "webhook.h"

#define CFG_MAX_KEYS     16
#define CFG_MAX_SCHEDULE 32

enum admin_role { ROLE_READ, ROLE_WRITE, ROLE__MAX };
extern const char *const admin_role_names[ROLE__MAX];

struct admin_key {
	char *id;
	char *secret; /* HMAC key: the configured bytes */
	enum admin_role role;
};

enum store_durability { DURABILITY_NORMAL, DURABILITY_FULL, DURABILITY__MAX };

enum store_backend { STORE_SQLITE, STORE_POSTGRESQL, STORE__MAX };

struct app_config {
	char *path; /* the file this came from */

	/* listen: unix socket, or TCP on 127.0.0.1 */
	char *listen_socket;  /* NULL when listen_port is used */
	int listen_port;      /* 0 when listen_socket is used */
	unsigned listen_mode; /* unix socket permissions */
	char *listen_group;   /* NULL: leave the group alone */
	int listen_backlog;

	int workers;
	int control_workers;  /* serve /healthz, /metrics, /admin only */
	char *control_socket; /* NULL when control_port is used */
	int control_port;     /* TCP on 127.0.0.1; 0 with control_socket */
	int log_level;        /* enum log_level */
	int shutdown_grace_s;

	enum store_backend store_backend;
	char *store_path;          /* sqlite: the database file */
	char *store_url;           /* postgresql: libpq conninfo or URI */
	char *store_password_file; /* postgresql: NULL for none */
	char *store_password;      /* read from it by cfg_load */
	enum store_durability durability;
	int busy_timeout_ms;
	int retention_days;

	char *secrets_key_file;
	uint8_t secrets_key[CRYPTO_KEY_LEN]; /* loaded by cfg_load */

	size_t max_body_bytes;

	struct webhook_key webhook_keys[CFG_MAX_KEYS];
	size_t nwebhook_keys;
	long webhook_tolerance_s;

	struct admin_key admin_keys[CFG_MAX_KEYS];
	size_t nadmin_keys;
	long admin_tolerance_s;

	long http_connect_timeout_ms;
	long http_timeout_ms;
	size_t http_max_response_bytes;
	char *http_ca_file; /* NULL: the system bundle */

	long delivery_budget_ms;      /* one dispatcher run of a delivery */
	long delivery_sync_budget_ms; /* intake's synchronous attempt */
	int delivery_sync_workers;    /* workers delivering at once at intake */
	int delivery_concurrency;     /* deliveries in flight per dispatcher */
	int delivery_dispatchers;     /* dispatcher processes */
	int circuit_failures; /* consecutive failures that open a circuit */
	long circuit_open_ms; /* how long an open circuit waits for a probe */
	long retry_schedule[CFG_MAX_SCHEDULE]; /* seconds */
	size_t nretry_schedule;
	long retrier_interval_ms;
	int retrier_batch;

	char *emarsys_token_url;
	char *emarsys_api_base;

	char *yotpo_api_base;
	int yotpo_default_max_rps;
	long yotpo_reconcile_after_s;
	int yotpo_reconcile_reads;     /* reads that must all miss ... */
	long yotpo_reconcile_window_s; /* ... spread over this, from the call */
};

/*
 * Parse and validate path into cfg (zeroed first) and load the secrets
 * key.  On error returns GC_ECONFIG (or GC_ENOMEM) and writes
 * "file:line: message" into err; cfg is then empty.
 */
enum gc_err cfg_load(const char *path, struct app_config *cfg, char *err,
                     size_t errsz);

/* Free what cfg owns (wiping secrets) and zero it. */
void cfg_fini(struct app_config *cfg);

/* Borrowed key with this id, or NULL. */
const struct admin_key *cfg_admin_key(const struct app_config *cfg,
                                      const char *id);

#endif
