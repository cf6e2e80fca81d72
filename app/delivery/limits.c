/*
 * Limits shared by every process of one host (include/limits.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "delivery_limits.h"
#include "mono.h"

#define HOLDS    1024 /* accounts held or paced at once */
#define CIRCUITS 512  /* (brand, destination) pairs with failures */
#define KEYLEN   160
#define SYNCERS  256 /* workers at most */

const char *const circuit_state_names[] = {
    [CIRCUIT_CLOSED] = "closed",
    [CIRCUIT_OPEN] = "open",
    [CIRCUIT_HALF_OPEN] = "half_open",
};
_Static_assert(sizeof(circuit_state_names) / sizeof(circuit_state_names[0]) ==
                   CIRCUIT__MAX,
               "circuit_state_names[] out of step");

/*
 * An account's hold and its pace: Emarsys's learned limit (limits_pace)
 * or a fixed interval (limits_pace_every: a brand's Yotpo max_rps).
 */
struct hold {
	uint32_t hash; /* of account: compared before the string */
	char account[KEYLEN];
	int64_t until_ms;
	int per_minute;     /* the account's live limit, 0: not known */
	int64_t learned_ms; /* when per_minute was last heard (monotonic) */
	int64_t next_us;    /* pacing: the next free call slot */
};

struct circuit {
	uint32_t hash;      /* of brand and dest */
	char brand[KEYLEN]; /* "" when the slot is free */
	int dest;
	int failures;       /* consecutive */
	int64_t open_until; /* 0 when closed */
};

struct l_shared {
	pthread_mutex_t lock;
	struct hold holds[HOLDS];
	struct circuit circuits[CIRCUITS];
	pid_t syncing[SYNCERS]; /* workers delivering at intake; 0: free */
	int64_t beat_ms;
};

static struct l_shared *shm;
static struct l_shared local; /* unit tests, tools: not shared */
static int wake_pipe[2] = {-1, -1};

/* FNV-1a of s, mixed with salt. */
static uint32_t
l_hash(const char *s, uint32_t salt)
{
	uint32_t h = 2166136261u ^ salt;

	for (; *s != '\0'; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

static struct l_shared *
L(void)
{
	return shm ? shm : &local;
}

static void
l_lock(void)
{
	if (shm == NULL)
		return;
	/* A holder killed mid-update: the tables stay usable (each entry
	 * is written field by field; the worst is one stale entry). */
	if (pthread_mutex_lock(&shm->lock) == EOWNERDEAD)
		pthread_mutex_consistent(&shm->lock);
}

static void
l_unlock(void)
{
	if (shm != NULL)
		pthread_mutex_unlock(&shm->lock);
}

/* See limits.h. */
enum gc_err
limits_init(void)
{
	pthread_mutexattr_t a;
	void *p;

	p = mmap(NULL, sizeof(struct l_shared), PROT_READ | PROT_WRITE,
	         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return GC_ESYS;
	if (pthread_mutexattr_init(&a) != 0 ||
	    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED) != 0 ||
	    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST) != 0 ||
	    pthread_mutex_init(&((struct l_shared *)p)->lock, &a) != 0) {
		munmap(p, sizeof(struct l_shared));
		return GC_ESYS;
	}
	pthread_mutexattr_destroy(&a);
	if (pipe2(wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0) {
		munmap(p, sizeof(struct l_shared));
		return GC_ESYS;
	}
	shm = p;
	return GC_OK;
}

/* The entry of account, NULL when it has none. */
static struct hold *
hold_find(struct l_shared *s, const char *account)
{
	uint32_t h = l_hash(account, 0);

	for (int i = 0; i < HOLDS; i++)
		if (s->holds[i].hash == h &&
		    strcmp(s->holds[i].account, account) == 0)
			return &s->holds[i];
	return NULL;
}

/*
 * Until when an entry matters: its hold, its next slot, or the moment
 * its limit was last heard (on PostgreSQL an account is paced in the
 * store, and its entry keeps only the limit: that must not make it the
 * first to go).
 */
static int64_t
hold_live_ms(const struct hold *h)
{
	int64_t live =
	    h->until_ms > h->learned_ms ? h->until_ms : h->learned_ms;

	return live > h->next_us / 1000 ? live : h->next_us / 1000;
}

/*
 * The entry of account, taking a new one if it has none: a free one, or
 * else the one that has mattered least recently (hold_live_ms).
 */
static struct hold *
hold_slot(struct l_shared *s, const char *account)
{
	struct hold *h = hold_find(s, account);

	if (h != NULL)
		return h;
	h = &s->holds[0];
	for (int i = 1; i < HOLDS; i++)
		if (hold_live_ms(&s->holds[i]) < hold_live_ms(h))
			h = &s->holds[i];
	memset(h, 0, sizeof(*h));
	h->hash = l_hash(account, 0);
	snprintf(h->account, sizeof(h->account), "%s", account);
	return h;
}

/* See limits.h. */
int64_t
limits_hold_until(const char *account)
{
	struct hold *h;
	int64_t until;

	l_lock();
	h = hold_find(L(), account);
	until = h != NULL ? h->until_ms : 0;
	l_unlock();
	return until;
}

/* See limits.h. */
void
limits_hold(const char *account, int64_t until_ms)
{
	struct hold *h;

	l_lock();
	h = hold_slot(L(), account);
	if (until_ms > h->until_ms)
		h->until_ms = until_ms;
	l_unlock();
}

/* See limits.h. */
void
limits_learn(const char *account, int per_minute, int remaining,
             int64_t reset_ms)
{
	struct hold *h;

	l_lock();
	h = hold_slot(L(), account);
	if (per_minute > 0) {
		h->per_minute = per_minute;
		h->learned_ms = mono_ms();
	}
	/* The window is used up: nobody calls before it resets. */
	if (remaining == 0 && reset_ms > h->until_ms)
		h->until_ms = reset_ms;
	l_unlock();
}

/* See limits.h. */
int
limits_pace(const char *account, int64_t now_ms, int64_t horizon_ms,
            int64_t *slot_ms)
{
	struct hold *h;
	int64_t now_us = now_ms * 1000, interval, next;
	int taken = 1;

	*slot_ms = now_ms;
	l_lock();
	h = hold_find(L(), account);
	if (h != NULL && h->per_minute > 0) {
		/* 10% under the limit: calls leave a little after their slot.
		 */
		interval = 66000000LL / h->per_minute;
		next = h->next_us > now_us ? h->next_us : now_us;
		if (next > now_us + horizon_ms * 1000)
			taken = 0;
		else
			h->next_us = next + interval;
		*slot_ms = next / 1000;
	}
	l_unlock();
	return taken;
}

/* See limits.h. */
int
limits_pace_every(const char *account, int64_t interval_us, int64_t now_ms,
                  int64_t horizon_ms, int64_t *slot_ms)
{
	struct hold *p;
	int64_t now_us = now_ms * 1000, next;
	int taken;

	l_lock();
	p = hold_slot(L(), account);
	next = p->next_us > now_us ? p->next_us : now_us;
	taken = next <= now_us + horizon_ms * 1000;
	if (taken)
		p->next_us = next + interval_us;
	l_unlock();
	*slot_ms = next / 1000;
	return taken;
}

/* See limits.h. */
int
limits_per_minute(const char *account)
{
	struct hold *h;
	int per_minute;

	l_lock();
	h = hold_find(L(), account);
	per_minute = h != NULL ? h->per_minute : 0;
	l_unlock();
	return per_minute;
}

static struct circuit *
circuit_find(struct l_shared *s, const char *brand, enum m_dest d)
{
	uint32_t h = l_hash(brand, (uint32_t)d);

	for (int i = 0; i < CIRCUITS; i++)
		if (s->circuits[i].hash == h && s->circuits[i].dest == (int)d &&
		    strcmp(s->circuits[i].brand, brand) == 0)
			return &s->circuits[i];
	return NULL;
}

static enum circuit_state
circuit_state(const struct circuit *c, int64_t now_ms)
{
	if (c == NULL || c->open_until == 0)
		return CIRCUIT_CLOSED;
	return now_ms < c->open_until ? CIRCUIT_OPEN : CIRCUIT_HALF_OPEN;
}

/* See limits.h. */
enum circuit_state
limits_circuit(const char *brand, enum m_dest d, int64_t now_ms)
{
	enum circuit_state st;

	l_lock();
	st = circuit_state(circuit_find(L(), brand, d), now_ms);
	l_unlock();
	return st;
}

/* A slot for (brand, d): its own, a free one, or NULL when full. */
static struct circuit *
circuit_slot(struct l_shared *s, const char *brand, enum m_dest d)
{
	struct circuit *c = circuit_find(s, brand, d);

	for (int i = 0; i < CIRCUITS && c == NULL; i++)
		if (s->circuits[i].brand[0] == '\0' ||
		    (s->circuits[i].failures == 0 &&
		     s->circuits[i].open_until == 0))
			c = &s->circuits[i];
	if (c != NULL && strcmp(c->brand, brand) != 0) {
		c->hash = l_hash(brand, (uint32_t)d);
		snprintf(c->brand, sizeof(c->brand), "%s", brand);
		c->dest = (int)d;
		c->failures = 0;
		c->open_until = 0;
	}
	return c;
}

/* See limits.h. */
void
limits_circuit_result(const char *brand, enum m_dest d, int ok, int trip,
                      int threshold, int64_t open_ms, int64_t now_ms)
{
	struct l_shared *s = L();
	struct circuit *c;

	l_lock();
	if (ok) {
		if ((c = circuit_find(s, brand, d)) != NULL) {
			c->failures = 0;
			c->open_until = 0;
		}
	} else if ((c = circuit_slot(s, brand, d)) != NULL) {
		c->failures++;
		/* A failed probe, a 429 or too many failures: (re)open. */
		if (trip || c->failures >= threshold || c->open_until != 0)
			c->open_until = now_ms + open_ms;
	}
	l_unlock();
}

/* See limits.h. */
void
limits_circuit_foreach(int64_t now_ms,
                       void (*fn)(void *arg, const char *brand, enum m_dest d,
                                  enum circuit_state s),
                       void *arg)
{
	struct l_shared *s = L();
	struct circuit copy[CIRCUITS];
	int n = 0;

	/* Copy under the lock; call back outside it. */
	l_lock();
	for (int i = 0; i < CIRCUITS; i++)
		if (circuit_state(&s->circuits[i], now_ms) != CIRCUIT_CLOSED)
			copy[n++] = s->circuits[i];
	l_unlock();
	for (int i = 0; i < n; i++)
		fn(arg, copy[i].brand, (enum m_dest)copy[i].dest,
		   circuit_state(&copy[i], now_ms));
}

/* Whether the slot's worker still lives (one killed mid-delivery). */
static int
sync_live(pid_t pid)
{
	return pid > 0 && (kill(pid, 0) == 0 || errno != ESRCH);
}

/* See limits.h. */
int
limits_sync_enter(int max)
{
	struct l_shared *s = L();
	int busy = 0, mine = -1;
	pid_t me = getpid();

	l_lock();
	for (int i = 0; i < SYNCERS; i++) {
		if (sync_live(s->syncing[i]))
			busy++;
		else if (mine < 0)
			mine = i;
	}
	if (busy < max && mine >= 0)
		s->syncing[mine] = me;
	else
		mine = -1;
	l_unlock();
	return mine >= 0;
}

/* See limits.h. */
void
limits_sync_leave(void)
{
	struct l_shared *s = L();
	pid_t me = getpid();

	l_lock();
	for (int i = 0; i < SYNCERS; i++)
		if (s->syncing[i] == me) {
			s->syncing[i] = 0;
			break;
		}
	l_unlock();
}

/* See limits.h. */
void
limits_dispatcher_beat(int64_t now_ms)
{
	__atomic_store_n(&L()->beat_ms, now_ms, __ATOMIC_RELAXED);
}

/* See limits.h. */
int64_t
limits_dispatcher_age_ms(int64_t now_ms)
{
	int64_t b = __atomic_load_n(&L()->beat_ms, __ATOMIC_RELAXED);

	return b == 0 ? -1 : now_ms - b;
}

/* See limits.h. */
void
limits_wake(void)
{
	char c = 1;

	/* A full pipe already means "wake up": EAGAIN is fine. */
	if (wake_pipe[1] >= 0 && write(wake_pipe[1], &c, 1) < 0 &&
	    errno != EAGAIN)
		return;
}

/* See limits.h. */
int
limits_wake_fd(void)
{
	return wake_pipe[0];
}

/* See limits.h. */
void
limits_wake_drain(void)
{
	char b[256];

	while (wake_pipe[0] >= 0 && read(wake_pipe[0], b, sizeof(b)) > 0)
		;
}
