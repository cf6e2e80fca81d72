/*
 * Limits shared by every gcrelay process on this host: per-account holds
 * (a 429's reset, Emarsys's live limit), circuits per (brand, destination),
 * how many workers are delivering synchronously, the dispatcher's
 * heartbeat and its wake-up pipe.  The state lives in an anonymous shared
 * mapping made by the master before it forks (like the metrics); a robust
 * process-shared mutex guards the tables, so a process killed while
 * holding it cannot wedge the others.
 *
 * Times are milliseconds on the monotonic clock (mono.h), which is one
 * clock for the whole host: a step of the wall clock neither stretches
 * nor cuts a hold, a pacing slot or an open circuit.  A remote's reset
 * (a wall-clock time) is converted once, where the reply is read.
 */
#ifndef GC_DELIVERY_LIMITS_H
#define GC_DELIVERY_LIMITS_H

#include <stdint.h>

#include "gc_err.h"
#include "metrics.h"

enum circuit_state {
	CIRCUIT_CLOSED,
	CIRCUIT_OPEN,      /* failing: intake skips it, nothing is called */
	CIRCUIT_HALF_OPEN, /* open period over: the next call is a probe */
	CIRCUIT__MAX
};
extern const char *const circuit_state_names[CIRCUIT__MAX];

/*
 * Create the shared state and the wake-up pipe; once in the master before
 * forking.  Without it (unit tests, tools) the state is per process.
 */
enum gc_err limits_init(void);

/*
 * No call to account before the returned time (0 when free).  account is
 * "emarsys:<client id>" or "yotpo:<brand>".
 */
int64_t limits_hold_until(const char *account);
/* Hold account until until_ms (a later hold wins). */
void limits_hold(const char *account, int64_t until_ms);

/*
 * What a reply said of the account's rate limit: per_minute (0: not
 * said), the calls left in this window (-1: not said) and when it resets.
 * No call goes out after the window is used up until it resets.
 */
void limits_learn(const char *account, int per_minute, int remaining,
                  int64_t reset_ms);

/*
 * Pace calls to account at its learned per-minute limit (less 10%):
 * reserve the next slot when it falls within horizon_ms of now and return
 * 1, with *slot_ms when the call may go; return 0 (nothing reserved, and
 * *slot_ms when to ask again) when the next slot is further off.  An
 * account whose limit is not known is not paced.
 */
int limits_pace(const char *account, int64_t now_ms, int64_t horizon_ms,
                int64_t *slot_ms);
/*
 * Pace calls to account (a brand's Yotpo calls on one host) interval_us
 * apart, on the monotonic clock: as limits_pace, reserve the next slot
 * when it falls within horizon_ms of now and return 1, else return 0
 * with *slot_ms when to ask again.
 */
int limits_pace_every(const char *account, int64_t interval_us, int64_t now_ms,
                      int64_t horizon_ms, int64_t *slot_ms);
/* The per-minute limit learned for account; 0 when none is known. */
int limits_per_minute(const char *account);

/* The state of (brand, d) now; an open circuit past its time is half-open. */
enum circuit_state limits_circuit(const char *brand, enum m_dest d,
                                  int64_t now_ms);
/*
 * Record the result of a call to (brand, d): ok closes the circuit;
 * a failure (timeout, 5xx, transport) counts towards threshold; trip (a
 * 429) opens it at once.  An opened circuit stays open for open_ms.
 */
void limits_circuit_result(const char *brand, enum m_dest d, int ok, int trip,
                           int threshold, int64_t open_ms, int64_t now_ms);
/* Call fn for every circuit that is not closed (for /metrics, /healthz). */
void limits_circuit_foreach(int64_t now_ms,
                            void (*fn)(void *arg, const char *brand,
                                       enum m_dest d, enum circuit_state s),
                            void *arg);

/*
 * Take a synchronous-delivery slot for this process when fewer than max
 * are taken: 1 on success (release with limits_sync_leave), 0 when all
 * are busy.  The slot of a process that died holding it is free again.
 */
int limits_sync_enter(int max);
void limits_sync_leave(void);

/* The dispatcher is alive (called from its loop). */
void limits_dispatcher_beat(int64_t now_ms);
/* Milliseconds since the last beat; -1 when there never was one. */
int64_t limits_dispatcher_age_ms(int64_t now_ms);

/* Wake the dispatcher now (a worker handed it work); never blocks. */
void limits_wake(void);
/* The fd the dispatcher polls for wake-ups (-1 without limits_init). */
int limits_wake_fd(void);
/* Read every pending wake-up byte. */
void limits_wake_drain(void);

#endif
