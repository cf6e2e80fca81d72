/*
 * GET /healthz: the store, and how the dispatcher is doing.
 */
#include "delivery_limits.h"
#include "handlers.h"
#include "log.h"
#include "mono.h"
#include "store.h"

#define DISPATCHER_STALE_MS 30000 /* no heartbeat for this long: stuck */

static void
health_circuit(void *arg, const char *brand, enum m_dest d,
               enum circuit_state s)
{
	json_array_append_new(arg, json_pack("{s:s, s:s, s:s}", "brand", brand,
	                                     "destination", m_dest_names[d],
	                                     "state", circuit_state_names[s]));
}

/*
 * The dispatcher's part: alive (a heartbeat within 30 s; none yet while
 * it starts), the age of the oldest due delivery, the circuits not
 * closed.  Returns 0 when it looks stuck.
 */
static int
health_dispatcher(struct request *req, json_t *out)
{
	/* Stored times are wall-clock; the shared limits monotonic. */
	int64_t now = store_now_ms(), mono = mono_ms();
	int64_t beat = limits_dispatcher_age_ms(mono), due = 0;
	json_t *open = json_array();
	int alive = beat < DISPATCHER_STALE_MS;

	if (store_oldest_due(req->st, now, &due) != GC_OK)
		due = -1;
	limits_circuit_foreach(mono, health_circuit, open);
	json_object_set_new(out, "dispatcher",
	                    json_pack("{s:b, s:I, s:I}", "alive", alive,
	                              "heartbeat_age_ms", (json_int_t)beat,
	                              "oldest_due_age_ms", (json_int_t)due));
	json_object_set_new(out, "open_circuits", open);
	return alive;
}

/*
 * 200 when the store answers ("degraded" when the dispatcher looks
 * stuck: events are still recorded, and its supervisor restarts it),
 * 503 when the store does not.
 */
void
health_get(struct request *req)
{
	char why[256];
	json_t *out;

	if (store_health(req->st, why, sizeof(why)) != GC_OK) {
		request_json(req, 503,
		             json_pack("{s:s, s:s}", "status", "unavailable",
		                       "detail", why));
		return;
	}
	out = json_pack("{s:s}", "status", "ok");
	if (out != NULL && !health_dispatcher(req, out))
		json_object_set_new(out, "status", json_string("degraded"));
	request_json(req, 200, out);
}
