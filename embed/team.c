/* A team of threads sharing one forward pass (forward.c, vit.c): each step
 * is split among the members (products by output columns, LayerNorm by
 * rows, attention by sequence or image and head) and a barrier separates
 * dependent steps. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "common/common.h"
#include "embed/embed_impl.h"

typedef struct {
	embed_team_t *t;
	void (*fn)(void *arg, uint32_t tid);
	void *arg;
	uint32_t tid;
} member_t;

static void *member_main(void *p)
{
	member_t *mb = p;
	while (!atomic_load_explicit(&mb->t->go, memory_order_acquire))
		sched_yield();
	mb->fn(mb->arg, mb->tid);
	return NULL;
}

void embed_team_run(embed_team_t *t, void (*member)(void *arg, uint32_t tid), void *arg)
{
	atomic_init(&t->arrived, 0);
	atomic_init(&t->phase, 0);
	atomic_init(&t->go, 0);
	pthread_t tid[EMBED_THREADS_MAX];
	member_t mb[EMBED_THREADS_MAX];
	uint32_t started = 1;
	for (; started < t->size && started < EMBED_THREADS_MAX; started++) {
		mb[started] = (member_t){t, member, arg, started};
		if (pthread_create(&tid[started], NULL, member_main, &mb[started]) != 0)
			break;
	}
	t->size = started; /* fewer threads when one could not start: slower, not wrong */
	atomic_store_explicit(&t->go, 1, memory_order_release);
	member(arg, 0);
	for (uint32_t i = 1; i < started; i++)
		pthread_join(tid[i], NULL);
}

/* Sense-counting barrier: spin briefly (steps are short), then yield. */
void embed_team_sync(embed_team_t *t)
{
	if (t->size == 1)
		return;
	unsigned ph = atomic_load_explicit(&t->phase, memory_order_acquire);
	if (atomic_fetch_add_explicit(&t->arrived, 1, memory_order_acq_rel) == t->size - 1) {
		atomic_store_explicit(&t->arrived, 0, memory_order_relaxed);
		atomic_fetch_add_explicit(&t->phase, 1, memory_order_release);
		return;
	}
	for (unsigned spins = 0; atomic_load_explicit(&t->phase, memory_order_acquire) == ph;
	     spins++) {
		if (spins < 4096)
			__builtin_ia32_pause();
		else
			sched_yield();
	}
}

void embed_team_share(const embed_team_t *t, uint32_t tid, uint32_t n, uint32_t align,
		      uint32_t *lo, uint32_t *hi)
{
	uint32_t per = (n + t->size - 1) / t->size;
	per = (per + align - 1) / align * align;
	*lo = tid * per < n ? tid * per : n;
	*hi = *lo + per < n ? *lo + per : n;
}
