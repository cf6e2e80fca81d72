/*
 * The monotonic clock.  Two clocks (STYLE.md): the wall clock
 * (store_now_ms) only for what is stored or shown; every deadline,
 * timeout, budget, wait, backoff and interval in a process on
 * CLOCK_MONOTONIC, so that a step of the wall clock (NTP, an operator, a
 * VM resumed) neither stretches nor cuts them.  CLOCK_MONOTONIC is one
 * clock for the whole host, so its values may be shared between the
 * processes of one host (delivery_limits.h).  Where a wall-clock time
 * becomes a deadline (a stored time, a remote's reset), it is converted
 * once, at that boundary: now_mono + (wall - now_wall).
 */
#ifndef GC_MONO_H
#define GC_MONO_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on the monotonic clock (since boot: never 0 in practice). */
static inline int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
