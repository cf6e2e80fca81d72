/*
 * Prometheus metrics shared by every gcrelay process: counters live in an
 * anonymous shared mapping created by the master before it forks, and are
 * updated with atomic adds, so /metrics on any worker shows the totals.
 */
#ifndef GC_METRICS_H
#define GC_METRICS_H

#include "buf.h"
#include "gc_err.h"

enum m_dest { M_DEST_EMARSYS, M_DEST_YOTPO, M_DEST__MAX };
extern const char *const m_dest_names[M_DEST__MAX];

enum m_outcome {
	M_OUT_DELIVERED,
	M_OUT_WARNING,
	M_OUT_SKIPPED,
	M_OUT_RETRYING,
	M_OUT_FAILED,
	M_OUT_DEAD,
	M_OUT__MAX
};
extern const char *const m_outcome_names[M_OUT__MAX];

enum m_event_result { M_EV_ACCEPTED, M_EV_DUPLICATE, M_EV_REJECTED, M_EV__MAX };

enum m_auth { M_AUTH_WEBHOOK, M_AUTH_ADMIN, M_AUTH__MAX };

/* The supervisor's children, in the order of its own enum child_kind. */
enum m_child {
	M_CHILD_WORKER,
	M_CHILD_CONTROL,
	M_CHILD_DISPATCHER,
	M_CHILD__MAX
};

/* Create the shared mapping; call once in the master before forking. */
enum gc_err metrics_init(void);

/* An answered request: route label (static string) and status. */
void metrics_request(int route, int status);
/* An event seen at intake, by kind (enum ev_kind, or -1 when unknown). */
void metrics_event(int kind, enum m_event_result res);
void metrics_delivery(enum m_dest d, enum m_outcome o);
/* One HTTP call to a remote API and its latency; status 0 = transport. */
void metrics_upstream(enum m_dest d, long status, double seconds);
/* A rejected signature (reason index within its family). */
void metrics_auth_failure(enum m_auth family, int reason);
void metrics_child_restart(void);
/* The master's count of children of a kind: running now, and wanted. */
void metrics_children(enum m_child kind, int live, int configured);
void metrics_yotpo_reconcile(int found);
/* One request sent to the store's server and waited for (PostgreSQL). */
void metrics_store_round_trip(void);

/*
 * Append the text exposition to out; route_names has nroutes labels and
 * outbox_depth is read from the store by the caller.
 */
enum gc_err metrics_render(struct buf *out, const char *const *route_names,
                           int nroutes, long outbox_depth);

#endif
