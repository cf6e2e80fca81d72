#include "handlers.h"
#include "metrics.h"
#include "store.h"

/* GET /metrics: Prometheus text exposition. */
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
	req->status = 200;
	req->content_type = "text/plain; version=0.0.4";
}
