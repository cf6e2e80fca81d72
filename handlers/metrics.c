/*
 * GET /metrics: Prometheus text exposition.
 */
#include "delivery_limits.h"
#include "handlers.h"
#include "metrics.h"
#include "mono.h"
#include "store.h"

static void
metrics_circuit(void *arg, const char *brand, enum m_dest d,
                enum circuit_state s)
{
	/* Brand slugs are [a-z0-9-]: nothing to escape in a label. */
	buf_printf(arg,
	           "gcrelay_circuit_open{brand=\"%s\",destination=\"%s\","
	           "state=\"%s\"} 1\n",
	           brand, m_dest_names[d], circuit_state_names[s]);
}

/* The dispatcher and the circuits, from the shared limits. */
static void
metrics_delivery_state(struct request *req)
{
	/* Stored times are wall-clock; the shared limits monotonic. */
	int64_t now = store_now_ms(), mono = mono_ms(), due = 0;
	int64_t beat = limits_dispatcher_age_ms(mono);

	if (store_oldest_due(req->st, now, &due) != GC_OK)
		due = -1;
	buf_printf(&req->out,
	           "# HELP gcrelay_oldest_due_seconds How long the oldest "
	           "due delivery has waited for the dispatcher.\n"
	           "# TYPE gcrelay_oldest_due_seconds gauge\n"
	           "gcrelay_oldest_due_seconds %.3f\n"
	           "# HELP gcrelay_dispatcher_heartbeat_age_seconds Time "
	           "since the dispatcher's loop last ran (-1: not yet).\n"
	           "# TYPE gcrelay_dispatcher_heartbeat_age_seconds gauge\n"
	           "gcrelay_dispatcher_heartbeat_age_seconds %.3f\n"
	           "# HELP gcrelay_circuit_open Circuits per brand and "
	           "destination that are not closed (open or half_open).\n"
	           "# TYPE gcrelay_circuit_open gauge\n",
	           (double)due / 1000.0,
	           beat < 0 ? -1.0 : (double)beat / 1000.0);
	limits_circuit_foreach(mono, metrics_circuit, &req->out);
}

/* Whether the store answers, as /healthz judges it (503 there). */
static void
metrics_store(struct request *req)
{
	char why[256];
	int up = store_health(req->st, why, sizeof(why)) == GC_OK;

	buf_printf(&req->out,
	           "# HELP gcrelay_store_up Whether the store answers (1) or "
	           "not (0), as /healthz judges it.\n"
	           "# TYPE gcrelay_store_up gauge\n"
	           "gcrelay_store_up %d\n",
	           up);
}

/* See handlers.h. */
void
metrics_get(struct request *req)
{
	const char *const *labels;
	long depth = -1;
	int n;

	if (store_outbox_depth(req->st, &depth) != GC_OK)
		depth = -1;
	labels = router_labels(&n);
	buf_reset(&req->out);
	if (metrics_render(&req->out, labels, n, depth) != GC_OK) {
		request_problem(req, 500, "internal", "out of memory", NULL);
		return;
	}
	metrics_delivery_state(req);
	metrics_store(req);
	req->status = 200;
	req->content_type = "text/plain; version=0.0.4";
}
