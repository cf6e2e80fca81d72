#include "handlers.h"
#include "log.h"
#include "store.h"

/* GET /healthz: 200 when the store answers, 503 otherwise. */
void
health_get(struct request *req)
{
	char why[256];

	if (store_ping(req->st, why, sizeof(why)) != GC_OK) {
		log_warnx("healthz: store unavailable: %s", why);
		request_json(req, 503,
		             json_pack("{s:s, s:s}", "status", "unavailable",
		                       "detail", why));
		return;
	}
	request_json(req, 200, json_pack("{s:s}", "status", "ok"));
}
