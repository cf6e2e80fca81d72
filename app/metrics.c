#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "metrics.h"
#include "webhook.h"

#define M_ROUTES   24
#define M_STATUSES 15
#define M_EVKINDS  3 /* consent_intent, offer_claimed, unknown */
#define M_BUCKETS  10
#define M_REASONS  16

const char *const m_dest_names[] = {
    [M_DEST_EMARSYS] = "emarsys",
    [M_DEST_YOTPO] = "yotpo",
};
_Static_assert(sizeof(m_dest_names) / sizeof(m_dest_names[0]) == M_DEST__MAX,
               "m_dest_names[] out of step");

const char *const m_outcome_names[] = {
    [M_OUT_DELIVERED] = "delivered", [M_OUT_WARNING] = "warning",
    [M_OUT_SKIPPED] = "skipped",     [M_OUT_RETRYING] = "retrying",
    [M_OUT_FAILED] = "failed",       [M_OUT_DEAD] = "dead",
};
_Static_assert(sizeof(m_outcome_names) / sizeof(m_outcome_names[0]) ==
                   M_OUT__MAX,
               "m_outcome_names[] out of step");

static const char *const ev_result_names[] = {
    [M_EV_ACCEPTED] = "accepted",
    [M_EV_DUPLICATE] = "duplicate",
    [M_EV_REJECTED] = "rejected",
};
_Static_assert(sizeof(ev_result_names) / sizeof(ev_result_names[0]) ==
                   M_EV__MAX,
               "ev_result_names[] out of step");

static const char *const ev_kind_labels[M_EVKINDS] = {
    "consent_intent", "offer_claimed", "unknown"};

/* Status codes with their own label; anything else counts as "other". */
static const int statuses[M_STATUSES - 1] = {200, 201, 202, 204, 400, 401, 403,
                                             404, 405, 409, 413, 415, 500, 503};

/* Short labels for enum webhook_fail. */
static const char *const sig_reasons[] = {
    "ok",
    "missing_id",
    "missing_timestamp",
    "missing_signature",
    "bad_timestamp",
    "stale",
    "future",
    "bad_signature_header",
    "no_match",
};
_Static_assert(sizeof(sig_reasons) / sizeof(sig_reasons[0]) == WEBHOOK__MAX,
               "sig_reasons[] out of step with enum webhook_fail");

static const char *const child_labels[] = {
    [M_CHILD_WORKER] = "worker",
    [M_CHILD_CONTROL] = "control",
    [M_CHILD_DISPATCHER] = "dispatcher",
};
_Static_assert(sizeof(child_labels) / sizeof(child_labels[0]) == M_CHILD__MAX,
               "child_labels[] out of step");

static const double bucket_le[M_BUCKETS - 1] = {0.025, 0.05, 0.1, 0.25, 0.5,
                                                1,     2.5,  5,   10};

struct m_shared {
	uint64_t requests[M_ROUTES][M_STATUSES];
	uint64_t events[M_EVKINDS][M_EV__MAX];
	uint64_t deliveries[M_DEST__MAX][M_OUT__MAX];
	uint64_t upstream[M_DEST__MAX][6]; /* 0=transport, 2xx..5xx, other */
	uint64_t latency_bucket[M_DEST__MAX][M_BUCKETS];
	uint64_t latency_sum_us[M_DEST__MAX];
	uint64_t auth_fail[M_AUTH__MAX][M_REASONS];
	uint64_t child_restarts;
	int64_t children[M_CHILD__MAX][2]; /* live, configured */
	uint64_t reconcile[2];
	uint64_t store_round_trips;
};

static struct m_shared *shm;
static struct m_shared fallback; /* unit tests, tools: not shared */

#define ADD(x) __atomic_fetch_add(&(x), 1, __ATOMIC_RELAXED)
#define GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static struct m_shared *
m(void)
{
	return shm ? shm : &fallback;
}

/* See metrics.h. */
enum gc_err
metrics_init(void)
{
	void *p = mmap(NULL, sizeof(struct m_shared), PROT_READ | PROT_WRITE,
	               MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return GC_ESYS;
	shm = p;
	return GC_OK;
}

/* See metrics.h. */
void
metrics_request(int route, int status)
{
	int s = M_STATUSES - 1;

	for (int i = 0; i < M_STATUSES - 1; i++)
		if (statuses[i] == status)
			s = i;
	if (route < 0 || route >= M_ROUTES)
		route = M_ROUTES - 1;
	ADD(m()->requests[route][s]);
}

/* See metrics.h. */
void
metrics_event(int kind, enum m_event_result res)
{
	if (kind < 0 || kind >= M_EVKINDS - 1)
		kind = M_EVKINDS - 1;
	ADD(m()->events[kind][res]);
}

/* See metrics.h. */
void
metrics_delivery(enum m_dest d, enum m_outcome o)
{
	ADD(m()->deliveries[d][o]);
}

/* See metrics.h. */
void
metrics_upstream(enum m_dest d, long status, double seconds)
{
	int cls = status == 0                       ? 0
	          : (status >= 200 && status < 600) ? (int)(status / 100) - 1
	                                            : 5;
	int b = M_BUCKETS - 1;

	ADD(m()->upstream[d][cls]);
	for (int i = M_BUCKETS - 2; i >= 0; i--)
		if (seconds <= bucket_le[i])
			b = i;
	ADD(m()->latency_bucket[d][b]);
	__atomic_fetch_add(&m()->latency_sum_us[d], (uint64_t)(seconds * 1e6),
	                   __ATOMIC_RELAXED);
}

/* See metrics.h. */
void
metrics_auth_failure(enum m_auth family, int reason)
{
	if (reason < 0 || reason >= M_REASONS)
		reason = M_REASONS - 1;
	ADD(m()->auth_fail[family][reason]);
}

/* See metrics.h. */
void
metrics_child_restart(void)
{
	ADD(m()->child_restarts);
}

/* See metrics.h. */
void
metrics_children(enum m_child kind, int live, int configured)
{
	__atomic_store_n(&m()->children[kind][0], live, __ATOMIC_RELAXED);
	__atomic_store_n(&m()->children[kind][1], configured, __ATOMIC_RELAXED);
}

/* See metrics.h. */
void
metrics_yotpo_reconcile(int found)
{
	ADD(m()->reconcile[found ? 1 : 0]);
}

/* See metrics.h. */
void
metrics_store_round_trip(void)
{
	ADD(m()->store_round_trips);
}

/*
 * Count of requests with the route label of route r and status index i,
 * summed over every route sharing that label (GET, PUT and DELETE of a
 * brand are one "admin_brand"): one series per label, never two.
 */
static uint64_t
route_count(const char *const *routes, int nroutes, int r, int i)
{
	uint64_t v = 0;

	for (int k = r; k < nroutes && k < M_ROUTES; k++)
		if (strcmp(routes[k], routes[r]) == 0)
			v += GET(m()->requests[k][i]);
	return v;
}

static int
route_seen(const char *const *routes, int r)
{
	for (int k = 0; k < r; k++)
		if (strcmp(routes[k], routes[r]) == 0)
			return 1;
	return 0;
}

static void
render_requests(struct buf *out, const char *const *routes, int nroutes)
{
	buf_puts(out, "# HELP gcrelay_http_requests_total Requests answered, "
	              "by route and status.\n"
	              "# TYPE gcrelay_http_requests_total counter\n");
	for (int r = 0; r < nroutes && r < M_ROUTES; r++) {
		if (route_seen(routes, r))
			continue;
		for (int i = 0; i < M_STATUSES; i++) {
			uint64_t v = route_count(routes, nroutes, r, i);
			char status[16];

			if (v == 0)
				continue;
			if (i < M_STATUSES - 1)
				snprintf(status, sizeof(status), "%d",
				         statuses[i]);
			else
				snprintf(status, sizeof(status), "other");
			buf_printf(out,
			           "gcrelay_http_requests_total{route=\"%s\","
			           "status=\"%s\"} %llu\n",
			           routes[r], status, (unsigned long long)v);
		}
	}
}

static void
render_events(struct buf *out)
{
	struct m_shared *s = m();

	buf_puts(out, "# HELP gcrelay_events_total Events received, by kind "
	              "and result.\n"
	              "# TYPE gcrelay_events_total counter\n");
	for (int k = 0; k < M_EVKINDS; k++)
		for (int r = 0; r < M_EV__MAX; r++)
			buf_printf(out,
			           "gcrelay_events_total{kind=\"%s\","
			           "result=\"%s\"} %llu\n",
			           ev_kind_labels[k], ev_result_names[r],
			           (unsigned long long)GET(s->events[k][r]));
	buf_puts(out, "# HELP gcrelay_deliveries_total Delivery outcomes, by "
	              "destination.\n"
	              "# TYPE gcrelay_deliveries_total counter\n");
	for (int d = 0; d < M_DEST__MAX; d++)
		for (int o = 0; o < M_OUT__MAX; o++)
			buf_printf(
			    out,
			    "gcrelay_deliveries_total{destination=\"%s\","
			    "outcome=\"%s\"} %llu\n",
			    m_dest_names[d], m_outcome_names[o],
			    (unsigned long long)GET(s->deliveries[d][o]));
}

static void
render_upstream(struct buf *out)
{
	static const char *const cls[] = {"transport", "2xx", "3xx",
	                                  "4xx",       "5xx", "other"};
	struct m_shared *s = m();

	buf_puts(out, "# HELP gcrelay_upstream_requests_total Calls to remote "
	              "APIs, by destination and status class.\n"
	              "# TYPE gcrelay_upstream_requests_total counter\n");
	for (int d = 0; d < M_DEST__MAX; d++)
		for (int c = 0; c < 6; c++)
			buf_printf(
			    out,
			    "gcrelay_upstream_requests_total{destination="
			    "\"%s\",class=\"%s\"} %llu\n",
			    m_dest_names[d], cls[c],
			    (unsigned long long)GET(s->upstream[d][c]));
	buf_puts(out, "# HELP gcrelay_upstream_latency_seconds Latency of "
	              "calls to remote APIs.\n"
	              "# TYPE gcrelay_upstream_latency_seconds histogram\n");
	for (int d = 0; d < M_DEST__MAX; d++) {
		uint64_t cum = 0;
		for (int b = 0; b < M_BUCKETS; b++) {
			cum += GET(s->latency_bucket[d][b]);
			if (b < M_BUCKETS - 1)
				buf_printf(
				    out,
				    "gcrelay_upstream_latency_seconds_bucket{"
				    "destination=\"%s\",le=\"%g\"} %llu\n",
				    m_dest_names[d], bucket_le[b],
				    (unsigned long long)cum);
			else
				buf_printf(
				    out,
				    "gcrelay_upstream_latency_seconds_bucket{"
				    "destination=\"%s\",le=\"+Inf\"} %llu\n",
				    m_dest_names[d], (unsigned long long)cum);
		}
		buf_printf(out,
		           "gcrelay_upstream_latency_seconds_sum{destination="
		           "\"%s\"} %.6f\n"
		           "gcrelay_upstream_latency_seconds_count{destination="
		           "\"%s\"} %llu\n",
		           m_dest_names[d],
		           (double)GET(s->latency_sum_us[d]) / 1e6,
		           m_dest_names[d], (unsigned long long)cum);
	}
}

static void
render_misc(struct buf *out, long outbox_depth)
{
	struct m_shared *s = m();

	buf_puts(out, "# HELP gcrelay_signature_failures_total Rejected "
	              "webhook signatures, by reason.\n"
	              "# TYPE gcrelay_signature_failures_total counter\n");
	for (int r = 1; r < WEBHOOK__MAX; r++)
		buf_printf(
		    out,
		    "gcrelay_signature_failures_total{reason=\"%s\"} "
		    "%llu\n",
		    sig_reasons[r],
		    (unsigned long long)GET(s->auth_fail[M_AUTH_WEBHOOK][r]));
	uint64_t admin = 0;
	for (int r = 0; r < M_REASONS; r++)
		admin += GET(s->auth_fail[M_AUTH_ADMIN][r]);
	buf_printf(out,
	           "# HELP gcrelay_admin_auth_failures_total Rejected admin "
	           "requests.\n"
	           "# TYPE gcrelay_admin_auth_failures_total counter\n"
	           "gcrelay_admin_auth_failures_total %llu\n"
	           "# HELP gcrelay_outbox_depth Deliveries waiting for a "
	           "retry.\n"
	           "# TYPE gcrelay_outbox_depth gauge\n"
	           "gcrelay_outbox_depth %ld\n"
	           "# HELP gcrelay_child_restarts_total Workers or dispatchers "
	           "replaced after dying.\n"
	           "# TYPE gcrelay_child_restarts_total counter\n"
	           "gcrelay_child_restarts_total %llu\n"
	           "# HELP gcrelay_yotpo_reconciliations_total Unknown Yotpo "
	           "outcomes checked against the customer history.\n"
	           "# TYPE gcrelay_yotpo_reconciliations_total counter\n"
	           "gcrelay_yotpo_reconciliations_total{found=\"false\"} %llu\n"
	           "gcrelay_yotpo_reconciliations_total{found=\"true\"} %llu\n"
	           "# HELP gcrelay_store_round_trips_total Requests sent to "
	           "the store's server and waited for (PostgreSQL; SQLite is "
	           "in-process: 0).\n"
	           "# TYPE gcrelay_store_round_trips_total counter\n"
	           "gcrelay_store_round_trips_total %llu\n",
	           (unsigned long long)admin, outbox_depth,
	           (unsigned long long)GET(s->child_restarts),
	           (unsigned long long)GET(s->reconcile[0]),
	           (unsigned long long)GET(s->reconcile[1]),
	           (unsigned long long)GET(s->store_round_trips));
}

/* Set by the master, so a dead pool shows even while /metrics answers. */
static void
render_children(struct buf *out)
{
	static const char *const what[] = {"", "_configured"};
	static const char *const help[] = {
	    "Child processes running now, by kind.",
	    "Child processes the configuration asks for, by kind."};

	for (int w = 0; w < 2; w++) {
		buf_printf(out,
		           "# HELP gcrelay_children%s %s\n"
		           "# TYPE gcrelay_children%s gauge\n",
		           what[w], help[w], what[w]);
		for (int k = 0; k < M_CHILD__MAX; k++)
			buf_printf(out,
			           "gcrelay_children%s{kind=\"%s\"} %lld\n",
			           what[w], child_labels[k],
			           (long long)GET(m()->children[k][w]));
	}
}

/* See metrics.h. */
enum gc_err
metrics_render(struct buf *out, const char *const *route_names, int nroutes,
               long outbox_depth)
{
	render_requests(out, route_names, nroutes);
	render_events(out);
	render_upstream(out);
	render_misc(out, outbox_depth);
	render_children(out);
	return out->ptr != NULL ? GC_OK : GC_ENOMEM;
}
