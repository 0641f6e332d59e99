/* The encoder stage (DESIGN §7): EMBED, HSET of a field that is the SOURCE
 * of a computed vector, FT.SEARCH ... EMBED param and FT.CREATE with MODEL
 * go through here before the writer or the search workers.
 *
 * Two threads, as TEI's queue and backend (reference/embeddings §3.4):
 *  - the former takes requests in arrival order, loads their models on first
 *    use, tokenizes, and packs requests into a batch until the next one would
 *    pass `embed-batch-tokens` (no timer: a batch closes on the budget or when
 *    the queue is empty);
 *  - the runner embeds a batch (one packed forward pass per model: no padding,
 *    attention per sequence; Prepacking, arXiv 2404.09529) while the former
 *    forms the next, then finishes the requests in order: replies, or the
 *    rewritten command handed to the writer / search workers.
 * One runner keeps the order of a client's forwarded commands; requests the
 * former refuses (bad text, unknown model) have no effect, so answering them
 * early cannot reorder anything a client can see.
 */
#define _GNU_SOURCE /* memmem */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "embed/embed.h"
#include "quant/quant.h"
#include "server/srv_int.h"

#define EMBED_MODELS_MAX 16u
/** Texts one EMBED command may carry. */
#define EMBED_TEXTS_MAX 4096u
/** What an image counts for against embed-batch-tokens (ViT-B/32: 50 tokens). */
#define EMBED_IMAGE_TOKENS 64u
/** Widest vector EMBED replies as a blob (the stack buffer it goes through). */
#define EMBED_DIM_REPLY_MAX 8192u

enum er_kind { ER_EMBED, ER_WRITE, ER_SEARCH, ER_CREATE };

/** One text to embed and where its vector goes. */
typedef struct er_item {
	char *model;      /**< owned */
	int arg;          /**< argv index of the text */
	int32_t mi;       /**< registry slot, once resolved */
	uint32_t dim;     /**< expected output dimension (0: the model's) */
	vela_vec_type_t vtype;
	char *field;      /**< ER_WRITE: the vector's hash field (owned) */
	int32_t *ids;     /**< text: tokens, [CLS] .. [SEP] */
	uint32_t n_ids;
	bool ready;       /**< tokenized (text) or decoded (image): goes in the batch */
	uint8_t *rgb;     /**< image: decoded RGB8 (owned) */
	uint32_t w, h;
	float *vec;       /**< the result (points into the batch's output) */
} er_item_t;

typedef struct er_req {
	struct er_req *next;
	srv_job_t *job;
	int kind;
	er_item_t *items;
	size_t n_items;
	bool as_array;   /**< EMBED ... FORMAT ARRAY */
	int payload;     /**< EMBED: 1 TEXT, 2 IMAGE (must match the model); 0 any */
	int embed_opt;   /**< ER_SEARCH: argv index of the EMBED option */
	int param_key;   /**< ER_SEARCH: argv index of the parameter's name */
	uint64_t tokens;
	bool prepared;
	char err[768];   /**< set: the request fails with this reply */
} er_req_t;

/** A loaded model: a text encoder or an image encoder (the model's
 * config.json decides, so a payload is never guessed from its bytes). */
typedef struct er_model {
	char name[VELA_MODEL_NAME_MAX + 1];
	embed_model_t *m;         /**< text, or NULL */
	embed_image_model_t *im;  /**< image, or NULL */
	uint64_t texts;
} er_model_t;

typedef struct er_batch {
	er_req_t *head, *tail;
	uint64_t tokens;
} er_batch_t;

typedef struct srv_embed srv_embed_t;

/** A back-fill walk over one index's documents (vela_embed_missing). */
typedef struct er_fill {
	struct er_fill *next;
	char *index;
	void *cursor;
	size_t cursor_len;
} er_fill_t;

/** Documents one back-fill step visits (the engine's read lock is held meanwhile). */
#define EMBED_FILL_STEP_DOCS 256u

struct srv_embed {
	pthread_mutex_t mu;
	pthread_cond_t cv;       /**< queue non-empty, slot free/full, stop */
	er_req_t *qhead, *qtail; /**< waiting for the former */
	size_t qlen;
	er_batch_t slot;         /**< formed, waiting for the runner */
	bool slot_full, stop, former_done;
	pthread_t former, runner;
	bool started;
	er_model_t models[EMBED_MODELS_MAX]; /**< under mu; loaded by the former only */
	er_fill_t *fills;        /**< back-fill walks to do (under mu) */
	uint32_t n_models;
	/* stats (under mu) */
	uint64_t requests, texts, tokens, batches, failures, compute_ns, backfill_queued;
};

/* ------------------------------------------------------------ requests */

void embedq_req_free(void *p)
{
	er_req_t *r = p;
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->n_items; i++) {
		free(r->items[i].model);
		free(r->items[i].field);
		free(r->items[i].ids);
		free(r->items[i].rgb);
	}
	free(r->items);
	free(r);
}

static er_req_t *req_new(int kind, size_t n_items)
{
	er_req_t *r = calloc(1, sizeof(*r));
	if (r && n_items && (r->items = calloc(n_items, sizeof(er_item_t))) == NULL) {
		free(r);
		return NULL;
	}
	if (r) {
		r->kind = kind;
		r->n_items = n_items;
		for (size_t i = 0; i < n_items; i++)
			r->items[i].mi = -1;
	}
	return r;
}

static char *strndup_arg(const resp_arg_t *a)
{
	return strndup(a->p, a->len);
}

/* HSET/HMSET key f v [f v ...]: one item per computed vector. */
static int route_hset(srv_t *s, int argc, const resp_arg_t *argv, er_req_t **out,
		      resp_out_t *o)
{
	if (argc < 4 || argc % 2)
		return 0; /* the handler answers the arity error */
	size_t n = (size_t)(argc - 2) / 2;
	vela_kv_t kv[n];
	for (size_t i = 0; i < n; i++)
		kv[i] = (vela_kv_t){argv[2 + 2 * i].p, argv[2 + 2 * i].len, argv[3 + 2 * i].p,
				    argv[3 + 2 * i].len};
	vela_embed_target_t *t;
	size_t nt;
	vela_err_t err = {0};
	if (vela_embed_targets(s->db, argv[1].p, argv[1].len, kv, n, &t, &nt, &err)) {
		resp_errorf(o, "ERR %s", err.msg);
		return -1;
	}
	if (nt == 0)
		return 0;
	er_req_t *r = req_new(ER_WRITE, nt);
	for (size_t i = 0; r && i < nt; i++) {
		er_item_t *it = &r->items[i];
		it->model = t[i].model;
		it->field = t[i].field;
		t[i].model = t[i].field = NULL;
		it->arg = 3 + 2 * (int)t[i].source;
		it->dim = t[i].dim;
		it->vtype = t[i].vec_type;
	}
	vela_embed_targets_free(t, nt);
	if (r == NULL) {
		resp_error(o, "OOM out of memory");
		return -1;
	}
	*out = r;
	return 1;
}

/* EMBED model [FORMAT BLOB|ARRAY] TEXT t [t ...] */
static int route_embed(int argc, const resp_arg_t *argv, er_req_t **out, resp_out_t *o)
{
	int i = 2;
	bool as_array = false;
	if (i + 1 < argc && arg_eq(&argv[i], "FORMAT")) {
		if (!arg_eq(&argv[i + 1], "BLOB") && !arg_eq(&argv[i + 1], "ARRAY")) {
			resp_error(o, "ERR EMBED FORMAT must be BLOB or ARRAY");
			return -1;
		}
		as_array = arg_eq(&argv[i + 1], "ARRAY");
		i += 2;
	}
	if (i + 1 >= argc || !(arg_eq(&argv[i], "TEXT") || arg_eq(&argv[i], "IMAGE"))) {
		resp_error(o, "ERR syntax: EMBED model [FORMAT BLOB|ARRAY] TEXT text [text ...] | "
			      "IMAGE bytes [bytes ...]");
		return -1;
	}
	int payload = arg_eq(&argv[i], "TEXT") ? 1 : 2;
	if (argv[1].len == 0 || argv[1].len > VELA_MODEL_NAME_MAX) {
		resp_error(o, "ERR EMBED: bad model name");
		return -1;
	}
	size_t n = (size_t)(argc - i - 1);
	if (n > EMBED_TEXTS_MAX) {
		resp_errorf(o, "ERR EMBED takes at most %u texts", EMBED_TEXTS_MAX);
		return -1;
	}
	er_req_t *r = req_new(ER_EMBED, n);
	for (size_t k = 0; r && k < n; k++) {
		r->items[k].arg = i + 1 + (int)k;
		r->items[k].vtype = VELA_VEC_FLOAT32;
		if ((r->items[k].model = strndup_arg(&argv[1])) == NULL) {
			embedq_req_free(r);
			r = NULL;
		}
	}
	if (r == NULL) {
		resp_error(o, "OOM out of memory");
		return -1;
	}
	r->as_array = as_array;
	r->payload = payload;
	*out = r;
	return 1;
}

/* FT.SEARCH idx query ... PARAMS n k v ... EMBED k: the parameter's text. */
/* FT.PROFILE index SEARCH [LIMITED] QUERY q [options]: the position of q
 * (0 when the layout is wrong: the handler answers that). */
static int profile_query_pos(int argc, const resp_arg_t *argv)
{
	int i = 3;
	if (argc < 5 || !arg_eq(&argv[2], "SEARCH"))
		return 0;
	i += arg_eq(&argv[i], "LIMITED");
	return i + 1 < argc && arg_eq(&argv[i], "QUERY") ? i + 1 : 0;
}

/* ft_search_embed_args on FT.PROFILE's arguments, through the FT.SEARCH
 * view (name, index, query, options) its handler builds; the positions
 * found are mapped back onto the FT.PROFILE arguments. */
static int profile_embed_args(int argc, const resp_arg_t *argv, int *opt, int *key, int *val)
{
	int q = profile_query_pos(argc, argv);
	if (q == 0)
		return 0;
	int vc = argc - (q - 2);
	resp_arg_t *v = malloc((size_t)vc * sizeof(*v));
	if (v == NULL)
		return 0; /* the handler runs it and answers (EMBED refused) */
	v[0] = argv[0];
	v[1] = argv[1];
	memcpy(v + 2, argv + q, (size_t)(argc - q) * sizeof(*v));
	int rc = ft_search_embed_args(vc, v, opt, key, val);
	free(v);
	*opt += q - 2;
	*key += q - 2;
	*val += q - 2;
	return rc;
}

static int route_search(int argc, const resp_arg_t *argv, bool profile, er_req_t **out,
			resp_out_t *o)
{
	int opt = 0, key = 0, val = 0;
	int rc = profile ? profile_embed_args(argc, argv, &opt, &key, &val)
			 : ft_search_embed_args(argc, argv, &opt, &key, &val);
	if (rc <= 0)
		return rc == 0 ? 0 : (resp_error(o, "ERR EMBED names a parameter that PARAMS "
						     "does not give"), -1);
	er_req_t *r = req_new(ER_SEARCH, 1);
	if (r == NULL) {
		resp_error(o, "OOM out of memory");
		return -1;
	}
	r->embed_opt = opt;
	r->param_key = key;
	r->items[0].arg = val;
	*out = r;
	return 1;
}

/* FT.CREATE ... MODEL m ...: every model named, loaded (and so checked)
 * before the writer creates the index; its handler then checks DIM. */
static int route_create(int argc, const resp_arg_t *argv, er_req_t **out, resp_out_t *o)
{
	size_t n = 0;
	for (int i = 3; i + 1 < argc; i++)
		n += arg_eq(&argv[i], "MODEL");
	if (n == 0)
		return 0;
	er_req_t *r = req_new(ER_CREATE, n);
	for (int i = 3, k = 0; r && i + 1 < argc; i++) {
		if (!arg_eq(&argv[i], "MODEL"))
			continue;
		r->items[k].arg = -1;
		if ((r->items[k++].model = strndup_arg(&argv[i + 1])) == NULL) {
			embedq_req_free(r);
			r = NULL;
		}
	}
	if (r == NULL) {
		resp_error(o, "OOM out of memory");
		return -1;
	}
	*out = r;
	return 1;
}

int embedq_route(srv_t *s, const srv_command_t *cmd, int argc, const resp_arg_t *argv,
		 void **req, resp_out_t *o)
{
	er_req_t *r = NULL;
	int rc = 0;
	*req = NULL;
	if (strcmp(cmd->name, "hset") == 0 || strcmp(cmd->name, "hmset") == 0 ||
	    strcmp(cmd->name, "hsetnx") == 0)
		rc = route_hset(s, argc, argv, &r, o);
	else if (strcmp(cmd->name, "embed") == 0)
		rc = route_embed(argc, argv, &r, o);
	else if (strcmp(cmd->name, "ft.search") == 0 || strcmp(cmd->name, "ft.profile") == 0 ||
		 strcmp(cmd->name, "ft.explain") == 0) /* explain: FT.SEARCH's argument layout */
		rc = route_search(argc, argv, cmd->name[3] == 'p', &r, o);
	else if (strcmp(cmd->name, "ft.create") == 0)
		rc = route_create(argc, argv, &r, o);
	if (rc <= 0)
		return rc;
	*req = r;
	return (int)(CMD_EMBED | (cmd->flags & (CMD_WRITE | CMD_SEARCH)));
}

void embedq_submit(srv_t *s, srv_job_t *j, void *req)
{
	srv_embed_t *e = s->embed;
	er_req_t *r = req;
	r->job = j;
	pthread_mutex_lock(&e->mu);
	if (e->qtail)
		e->qtail->next = r;
	else
		e->qhead = r;
	e->qtail = r;
	e->qlen++;
	e->requests++;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

bool embedq_full(srv_t *s)
{
	pthread_mutex_lock(&s->embed->mu);
	bool full = s->embed->qlen >= SRV_EMBED_QUEUE_MAX;
	pthread_mutex_unlock(&s->embed->mu);
	return full;
}

/* ------------------------------------------------------------ models */

static uint32_t model_dim(const er_model_t *m)
{
	return m->m ? embed_model_dim(m->m) : embed_image_model_dim(m->im);
}

static const char *model_kernel(const er_model_t *m)
{
	return m->m ? embed_model_kernel_name(m->m) : embed_image_model_kernel_name(m->im);
}

/* Open `dir` as a text encoder, else as an image encoder (a text model's
 * loader refuses another architecture with VELA_EUNSUPPORTED). */
static int model_open(srv_t *s, const char *name, const char *dir, er_model_t *out, char *err,
		      size_t cap)
{
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t threads = s->cfg.embed_threads ? s->cfg.embed_threads
						: (uint32_t)(ncpu > 0 ? ncpu : 1);
	if (threads > EMBED_THREADS_MAX)
		threads = EMBED_THREADS_MAX;
	embed_model_opts_t to = {.threads = threads,
				 .device = (embed_device_t)s->cfg.embed_device};
	embed_image_opts_t io = {.threads = threads};
	vela_err_t te = {0}, ie = {0};
	uint64_t t0 = vela_now_ns();
	int rc = embed_model_open_opts(dir, &to, &out->m, &te);
	if (rc && embed_image_model_open(dir, &io, &out->im, &ie) == 0)
		rc = 0;
	if (rc) {
		snprintf(err, cap, "ERR cannot load model '%.128s' from %.160s: %.150s%s%.150s",
			 name, dir, te.msg, ie.msg[0] ? "; as an image model: " : "", ie.msg);
		vela_warn("embed: %s", err + 4);
		return -1;
	}
	const char *gpu = out->m ? embed_model_gpu_name(out->m) : NULL;
	vela_info("embed: %s model '%s' loaded from %s in %.2f s (%u dims, %s%s, %s kernels, "
		  "%u threads)", out->m ? "text" : "image", name, dir,
		  (double)(vela_now_ns() - t0) / 1e9, model_dim(out), gpu ? "GPU " : "CPU",
		  gpu ? gpu : "", model_kernel(out), threads);
	return 0;
}

/* Registry slot of `name`, loading it on first use (former thread only:
 * nothing else adds models, so the slow load runs without the lock). */
static int32_t model_get(srv_t *s, const char *name, char *err, size_t cap)
{
	srv_embed_t *e = s->embed;
	pthread_mutex_lock(&e->mu);
	for (uint32_t i = 0; i < e->n_models; i++)
		if (strcmp(e->models[i].name, name) == 0) {
			pthread_mutex_unlock(&e->mu);
			return (int32_t)i;
		}
	uint32_t n = e->n_models;
	pthread_mutex_unlock(&e->mu);
	if (strlen(name) > VELA_MODEL_NAME_MAX || strchr(name, '/') || name[0] == '.' ||
	    name[0] == '\0') {
		snprintf(err, cap, "ERR bad model name '%.128s'", name);
		return -1;
	}
	if (n == EMBED_MODELS_MAX) {
		snprintf(err, cap, "ERR at most %u models can be loaded", EMBED_MODELS_MAX);
		return -1;
	}
	char dir[4096];
	pthread_mutex_lock(&s->cfg_mu);
	snprintf(dir, sizeof(dir), "%s/%s", s->cfg.model_dir, name);
	pthread_mutex_unlock(&s->cfg_mu);
	er_model_t loaded = {0};
	if (model_open(s, name, dir, &loaded, err, cap))
		return -1;
	pthread_mutex_lock(&e->mu);
	e->models[e->n_models] = loaded;
	snprintf(e->models[e->n_models].name, sizeof(loaded.name), "%s", name);
	e->n_models++;
	pthread_mutex_unlock(&e->mu);
	return (int32_t)n;
}

uint32_t embedq_model_dim(srv_t *s, const char *name)
{
	srv_embed_t *e = s->embed;
	uint32_t dim = 0;
	pthread_mutex_lock(&e->mu);
	for (uint32_t i = 0; i < e->n_models; i++)
		if (strcmp(e->models[i].name, name) == 0)
			dim = model_dim(&e->models[i]);
	pthread_mutex_unlock(&e->mu);
	return dim;
}

/* Does the query say `@alias $key` (the KNN clause's field and vector)? */
static bool query_uses(const resp_arg_t *q, const char *alias, const resp_arg_t *key)
{
	char pat[1024];
	int n = snprintf(pat, sizeof(pat), "@%s", alias);
	const char *end = q->p + q->len;
	for (const char *p = q->p; n > 0 && (size_t)n < sizeof(pat) &&
				    (p = memmem(p, (size_t)(end - p), pat, (size_t)n)) != NULL;
	     p += n) {
		const char *c = p + n;
		while (c < end && *c == ' ')
			c++;
		if (c < end && *c == '$' && (size_t)(end - c - 1) >= key->len &&
		    memcmp(c + 1, key->p, key->len) == 0)
			return true;
	}
	return false;
}

/* The model of the vector field an FT.SEARCH's EMBED parameter is for: the
 * index's only field with a MODEL, else the one the query pairs with it. */
static int search_model(srv_t *s, er_req_t *r, char *err, size_t cap)
{
	const resp_arg_t *argv = r->job->argv;
	vela_index_def_t *def;
	vela_err_t ve = {0};
	if (vela_index_describe(s->db, argv[1].p, &def, &ve)) {
		snprintf(err, cap, "%s", ve.msg[0] ? ve.msg : "Unknown index name");
		return -1;
	}
	const vela_field_def_t *only = NULL, *used = NULL;
	size_t with_model = 0;
	for (uint32_t i = 0; i < def->n_fields; i++) {
		const vela_field_def_t *f = &def->fields[i];
		if (f->model == NULL)
			continue;
		with_model++;
		only = f;
		if (query_uses(&argv[2], f->alias ? f->alias : f->name, &argv[r->param_key]))
			used = f;
	}
	const vela_field_def_t *pick = with_model == 1 ? only : used;
	int rc = 0;
	if (pick == NULL)
		rc = -1, snprintf(err, cap, with_model ? "ERR EMBED: no vector field with a MODEL "
					      "is paired with $%s in the query"
					    : "ERR EMBED: index has no vector field with a MODEL%s",
				  with_model ? argv[r->param_key].p : "");
	else if ((r->items[0].model = strdup(pick->model)) == NULL)
		rc = -1, snprintf(err, cap, "OOM out of memory");
	if (rc == 0) {
		r->items[0].dim = pick->dim;
		r->items[0].vtype = pick->vec_type;
	}
	vela_index_def_free(def);
	return rc;
}

/* ------------------------------------------------------------ the former */

static int item_tokenize(srv_t *s, er_req_t *r, er_item_t *it)
{
	embed_model_t *m = s->embed->models[it->mi].m; /* slots never move */
	const resp_arg_t *a = &r->job->argv[it->arg];
	vela_err_t ve = {0};
	if (m == NULL) { /* an image: decoded here, so a bad one fails alone */
		if (embed_image_decode(a->p, a->len, &it->rgb, &it->w, &it->h, &ve))
			return snprintf(r->err, sizeof(r->err), "ERR argument %d: %.700s", it->arg,
					ve.msg), -1;
		it->ready = true;
		r->tokens += EMBED_IMAGE_TOKENS;
		return 0;
	}
	uint32_t max = embed_model_max_seq(m);
	size_t n = 0;
	if ((it->ids = malloc(max * sizeof(int32_t))) == NULL)
		return snprintf(r->err, sizeof(r->err), "OOM out of memory"), -1;
	if (embed_tokenize(embed_model_vocab(m), a->p, a->len, it->ids, max, &n, &ve))
		return snprintf(r->err, sizeof(r->err), "ERR argument %d: %s", it->arg, ve.msg), -1;
	it->n_ids = (uint32_t)n;
	it->ready = true;
	r->tokens += n;
	return 0;
}

/* Resolve the models and tokenize; on failure r->err says why. */
static void req_prepare(srv_t *s, er_req_t *r)
{
	r->prepared = true;
	if (r->kind == ER_SEARCH && search_model(s, r, r->err, sizeof(r->err)))
		return;
	for (size_t i = 0; i < r->n_items; i++) {
		er_item_t *it = &r->items[i];
		if ((it->mi = model_get(s, it->model, r->err, sizeof(r->err))) < 0)
			return;
		const er_model_t *m = &s->embed->models[it->mi];
		if (r->payload && (r->payload == 2) != (m->im != NULL)) {
			snprintf(r->err, sizeof(r->err), "ERR model '%s' embeds %s: use EMBED %s %s",
				 it->model, m->im ? "images" : "text", it->model,
				 m->im ? "IMAGE" : "TEXT");
			return;
		}
		uint32_t d = model_dim(m);
		if (it->dim && it->dim != d) {
			snprintf(r->err, sizeof(r->err), "ERR model '%s' gives %u dimensions, the "
				 "field has DIM %u", it->model, d, it->dim);
			return;
		}
		it->dim = d;
		if (it->arg >= 0 && item_tokenize(s, r, it))
			return;
	}
}

static void req_fail(srv_t *s, er_req_t *r)
{
	resp_error(&r->job->out, r->err);
	srv_job_t *j = r->job;
	pthread_mutex_lock(&s->embed->mu);
	s->embed->failures++;
	pthread_mutex_unlock(&s->embed->mu);
	embedq_req_free(r);
	exec_job_done(s, j);
}

/* ------------------------------------------------------------ back-filling */

static void cmd_embedfill(cmd_ctx_t *x);
/* The internal write of a back-filled vector (never in the command table):
 * EMBEDFILL key source text field vector. */
static const srv_command_t fill_cmd = {"embedfill", 6, CMD_WRITE, cmd_embedfill};

/* On the writer: the vector, unless the text changed since it was read. */
static void cmd_embedfill(cmd_ctx_t *x)
{
	const resp_arg_t *a = x->argv;
	vela_kv_t cond = {a[2].p, a[2].len, a[3].p, a[3].len};
	vela_kv_t set = {a[4].p, a[4].len, a[5].p, a[5].len};
	int applied = 0;
	vela_err_t err = {0};
	if (x->argc != 6 || vela_batch_hset_if(x->batch, a[1].p, a[1].len, &cond, &set, 1,
					       &applied, &err))
		resp_errorf(x->out, "ERR back-fill: %s", err.msg);
	else
		resp_int(x->out, applied);
}

void embedq_backfill(srv_t *s, const char *name)
{
	srv_embed_t *e = s->embed;
	er_fill_t *f = calloc(1, sizeof(*f));
	if (f == NULL || (f->index = strdup(name)) == NULL) {
		free(f);
		vela_error("embed: out of memory: index '%s' will not be back-filled", name);
		return;
	}
	pthread_mutex_lock(&e->mu);
	f->next = e->fills;
	e->fills = f;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

struct fill_ctx {
	er_req_t *head, *tail;
	size_t n;
};

/* One missing vector: an internal request whose job writes it back. */
static int fill_found(void *ctx, const void *key, size_t klen, const vela_embed_target_t *t,
		      const char *source, const void *text, size_t tlen)
{
	struct fill_ctx *fc = ctx;
	resp_arg_t argv[4] = {{"EMBEDFILL", 9}, {key, klen}, {source, strlen(source)},
			      {text, tlen}};
	er_req_t *r = req_new(ER_WRITE, 1);
	srv_job_t *j = r ? job_new(NULL, &fill_cmd, 4, argv, 2) : NULL;
	if (j == NULL || (r->items[0].model = strdup(t->model)) == NULL ||
	    (r->items[0].field = strdup(t->field)) == NULL) {
		job_free(j);
		embedq_req_free(r);
		return VELA_ENOMEM;
	}
	j->backfill = true;
	r->job = j;
	r->items[0].arg = 3;
	r->items[0].dim = t->dim;
	r->items[0].vtype = t->vec_type;
	if (fc->tail)
		fc->tail->next = r;
	else
		fc->head = r;
	fc->tail = r;
	fc->n++;
	return 0;
}

/* The queue is empty: one step of the oldest back-fill walk. Returns the
 * requests it made (NULL when there is nothing to do). */
static er_req_t *fill_step(srv_t *s)
{
	srv_embed_t *e = s->embed;
	pthread_mutex_lock(&e->mu);
	er_fill_t *f = e->fills;
	while (f && f->next) /* the oldest: walks finish in the order they began */
		f = f->next;
	pthread_mutex_unlock(&e->mu);
	if (f == NULL)
		return NULL;
	struct fill_ctx fc = {0};
	bool done = false;
	vela_err_t err = {0};
	int rc = vela_embed_missing(s->db, f->index, &f->cursor, &f->cursor_len,
				    EMBED_FILL_STEP_DOCS, fill_found, &fc, &done, &err);
	if (rc && rc != VELA_ENOTFOUND)
		vela_warn("embed: back-fill of index '%s' stopped: %s", f->index, err.msg);
	if (rc || done) {
		if (rc == 0)
			vela_info("embed: back-fill of index '%s' queued its last vectors", f->index);
		pthread_mutex_lock(&e->mu); /* unlink: new walks may have gone in front */
		for (er_fill_t **pp = &e->fills; *pp; pp = &(*pp)->next)
			if (*pp == f) {
				*pp = f->next;
				break;
			}
		pthread_mutex_unlock(&e->mu);
		free(f->index);
		free(f->cursor);
		free(f);
	}
	pthread_mutex_lock(&e->mu);
	e->backfill_queued += fc.n;
	pthread_mutex_unlock(&e->mu);
	return fc.head;
}

/* Next request in arrival order; NULL once stopping and drained. */
static er_req_t *former_take(srv_embed_t *e, bool wait)
{
	pthread_mutex_lock(&e->mu);
	while (wait && e->qhead == NULL && !e->stop && e->fills == NULL)
		pthread_cond_wait(&e->cv, &e->mu);
	er_req_t *r = e->qhead;
	if (r) {
		e->qhead = r->next;
		if (e->qhead == NULL)
			e->qtail = NULL;
		e->qlen--;
		r->next = NULL;
	}
	pthread_mutex_unlock(&e->mu);
	return r;
}

static bool former_stopping(srv_embed_t *e)
{
	pthread_mutex_lock(&e->mu);
	bool stop = e->stop && e->qhead == NULL;
	pthread_mutex_unlock(&e->mu);
	return stop;
}

static void batch_add(er_batch_t *b, er_req_t *r)
{
	if (b->tail)
		b->tail->next = r;
	else
		b->head = r;
	b->tail = r;
	b->tokens += r->tokens;
}

/* Hand a batch to the runner once its slot is free. */
static void batch_hand(srv_embed_t *e, er_batch_t *b)
{
	pthread_mutex_lock(&e->mu);
	while (e->slot_full)
		pthread_cond_wait(&e->cv, &e->mu);
	e->slot = *b;
	e->slot_full = true;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	*b = (er_batch_t){0};
}

static er_req_t *pend_pop(er_req_t **pend)
{
	er_req_t *r = *pend;
	if (r) {
		*pend = r->next;
		r->next = NULL;
	}
	return r;
}

static bool former_stop_asked(srv_embed_t *e)
{
	pthread_mutex_lock(&e->mu);
	bool stop = e->stop;
	pthread_mutex_unlock(&e->mu);
	return stop;
}

static void *former_main(void *arg)
{
	srv_t *s = arg;
	srv_embed_t *e = s->embed;
	er_req_t *pend = NULL; /* before the queue: a request that did not fit the
				* last batch, then the requests of a back-fill step */
	uint64_t budget = s->cfg.embed_batch_tokens;
	for (;;) {
		er_req_t *r = pend ? pend_pop(&pend) : former_take(e, true);
		if (r == NULL && !former_stop_asked(e) && (pend = fill_step(s)) != NULL)
			r = pend_pop(&pend); /* idle: back-fill (user requests come first) */
		if (r == NULL && former_stopping(e))
			break; /* stopping, and nothing is left */
		er_batch_t b = {0};
		while (r) {
			if (!r->prepared)
				req_prepare(s, r);
			if (r->err[0]) {
				req_fail(s, r);
			} else if (b.head && b.tokens + r->tokens > budget) {
				r->next = pend;
				pend = r;
				break;
			} else {
				batch_add(&b, r);
			}
			r = pend ? pend_pop(&pend) : former_take(e, false);
		}
		if (b.head)
			batch_hand(e, &b);
	}
	pthread_mutex_lock(&e->mu);
	e->former_done = true;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	return NULL;
}

/* ------------------------------------------------------------ the runner */

/* Text: one packed forward pass over the items' tokens (no padding). */
static int run_text(const embed_model_t *m, er_item_t **v, size_t n, size_t ntok, float *out,
		    vela_err_t *ve)
{
	int32_t *ids = malloc(ntok * sizeof(int32_t) + 1);
	uint32_t *lens = malloc(n * sizeof(uint32_t) + 1);
	int rc = ids && lens ? 0 : vela_err_set(ve, VELA_ENOMEM, "out of memory");
	for (size_t k = 0, t = 0; rc == 0 && k < n; t += v[k]->n_ids, k++) {
		memcpy(ids + t, v[k]->ids, v[k]->n_ids * sizeof(int32_t));
		lens[k] = v[k]->n_ids;
	}
	if (rc == 0)
		rc = embed_ids_batch(m, ids, lens, n, out, ve);
	free(ids);
	free(lens);
	return rc;
}

/* Images: decoded by the former (a bad one fails alone), one batch here. */
static int run_image(const embed_image_model_t *m, er_item_t **v, size_t n, float *out,
		     vela_err_t *ve)
{
	const uint8_t **rgb = malloc(n * sizeof(*rgb) + 1);
	uint32_t *w = malloc(n * sizeof(*w) + 1), *h = malloc(n * sizeof(*h) + 1);
	int rc = rgb && w && h ? 0 : vela_err_set(ve, VELA_ENOMEM, "out of memory");
	for (size_t k = 0; rc == 0 && k < n; k++) {
		rgb[k] = v[k]->rgb;
		w[k] = v[k]->w;
		h[k] = v[k]->h;
	}
	if (rc == 0)
		rc = embed_image_batch_rgb(m, rgb, w, h, n, out, ve);
	free(rgb);
	free(w);
	free(h);
	return rc;
}

/* Every ready item of model `mi` in the batch, embedded together. */
static int batch_embed_model(srv_t *s, er_batch_t *b, int32_t mi, float **outs, char *err,
			     size_t cap)
{
	er_model_t *em = &s->embed->models[mi]; /* slots never move */
	size_t n = 0, ntok = 0;
	for (er_req_t *r = b->head; r; r = r->next)
		for (size_t i = 0; i < r->n_items; i++)
			n += r->items[i].mi == mi && r->items[i].ready;
	uint32_t dim = model_dim(em);
	er_item_t **v = malloc(n * sizeof(*v) + 1);
	float *out = malloc(n * dim * sizeof(float) + 1);
	*outs = out;
	if (!v || !out) {
		free(v);
		return snprintf(err, cap, "OOM out of memory"), -1;
	}
	size_t k = 0;
	for (er_req_t *r = b->head; r; r = r->next)
		for (size_t i = 0; i < r->n_items; i++)
			if (r->items[i].mi == mi && r->items[i].ready) {
				v[k] = &r->items[i];
				v[k]->vec = out + k * dim;
				ntok += v[k++]->n_ids;
			}
	vela_err_t ve = {0};
	int rc = em->m ? run_text(em->m, v, n, ntok, out, &ve) : run_image(em->im, v, n, out, &ve);
	free(v);
	pthread_mutex_lock(&s->embed->mu);
	em->texts += n;
	s->embed->texts += n;
	s->embed->tokens += ntok;
	pthread_mutex_unlock(&s->embed->mu);
	return rc ? (snprintf(err, cap, "ERR embedding failed: %.700s", ve.msg), -1) : 0;
}

static void embedq_finish(srv_t *s, er_req_t *r);

static void batch_run(srv_t *s, er_batch_t *b)
{
	float *outs[EMBED_MODELS_MAX] = {0};
	char err[sizeof(((er_req_t *)0)->err)] = "";
	uint64_t t0 = vela_now_ns();
	for (int32_t mi = 0; mi < (int32_t)EMBED_MODELS_MAX && err[0] == '\0'; mi++) {
		bool used = false;
		for (er_req_t *r = b->head; r && !used; r = r->next)
			for (size_t i = 0; i < r->n_items; i++)
				used |= r->items[i].mi == mi && r->items[i].ready;
		if (used)
			batch_embed_model(s, b, mi, &outs[mi], err, sizeof(err));
	}
	pthread_mutex_lock(&s->embed->mu);
	s->embed->batches++;
	s->embed->compute_ns += vela_now_ns() - t0;
	pthread_mutex_unlock(&s->embed->mu);
	for (er_req_t *r = b->head, *n; r; r = n) {
		n = r->next;
		if (err[0])
			snprintf(r->err, sizeof(r->err), "%s", err);
		embedq_finish(s, r);
	}
	for (size_t i = 0; i < EMBED_MODELS_MAX; i++)
		free(outs[i]);
}

static void *runner_main(void *arg)
{
	srv_t *s = arg;
	srv_embed_t *e = s->embed;
	for (;;) {
		pthread_mutex_lock(&e->mu);
		while (!e->slot_full && !e->former_done)
			pthread_cond_wait(&e->cv, &e->mu);
		if (!e->slot_full) {
			pthread_mutex_unlock(&e->mu);
			break;
		}
		er_batch_t b = e->slot;
		e->slot_full = false;
		pthread_cond_broadcast(&e->cv);
		pthread_mutex_unlock(&e->mu);
		batch_run(s, &b);
	}
	return NULL;
}

/* ------------------------------------------------------------ finishing */

/* The vector as the field stores it: FLOAT32 or FLOAT16, little-endian. */
static size_t vec_bytes(const er_item_t *it, uint8_t *dst)
{
	/* Blobs are little-endian: vela targets x86-64 (DESIGN §10). */
	if (it->vtype == VELA_VEC_FLOAT16) {
		for (uint32_t i = 0; i < it->dim; i++) {
			uint16_t h = quant_f32_to_f16_one(it->vec[i]);
			memcpy(dst + 2 * i, &h, 2);
		}
		return (size_t)it->dim * 2;
	}
	memcpy(dst, it->vec, (size_t)it->dim * 4);
	return (size_t)it->dim * 4;
}

/* Replace the job's arguments: argv[0..argc) minus `drop` (-1: none, else it
 * and the next), with argv[`swap`] replaced by `swap_val`, then `extra`
 * pairs appended (field, vector). One allocation, owned by the job. */
static int job_rewrite(srv_job_t *j, int drop, int swap, const er_item_t *swap_it,
		       const er_item_t *extra, size_t n_extra)
{
	size_t bytes = 0, argc = 0;
	for (int i = 0; i < j->argc; i++)
		bytes += j->argv[i].len + 1;
	for (size_t i = 0; i < n_extra; i++)
		bytes += strlen(extra[i].field) + 1 + (size_t)extra[i].dim * 4 + 1;
	if (swap_it)
		bytes += (size_t)swap_it->dim * 4 + 1;
	size_t cap = (size_t)j->argc + 2 * n_extra;
	resp_arg_t *v = malloc(cap * sizeof(*v) + bytes);
	if (v == NULL)
		return VELA_ENOMEM;
	uint8_t *p = (uint8_t *)(v + cap);
	for (int i = 0; i < j->argc; i++) {
		if (drop >= 0 && (i == drop || i == drop + 1))
			continue;
		size_t len = i == swap ? vec_bytes(swap_it, p) : j->argv[i].len;
		if (i != swap)
			memcpy(p, j->argv[i].p, len);
		p[len] = 0;
		v[argc++] = (resp_arg_t){(const char *)p, len};
		p += len + 1;
	}
	for (size_t i = 0; i < n_extra; i++) {
		size_t len = strlen(extra[i].field);
		memcpy(p, extra[i].field, len + 1);
		v[argc++] = (resp_arg_t){(const char *)p, len};
		p += len + 1;
		len = vec_bytes(&extra[i], p);
		p[len] = 0;
		v[argc++] = (resp_arg_t){(const char *)p, len};
		p += len + 1;
	}
	free(j->argv_own);
	j->argv_own = v;
	j->argv = v;
	j->argc = (int)argc;
	return VELA_OK;
}

static void reply_vectors(er_req_t *r)
{
	resp_out_t *o = &r->job->out;
	resp_array(o, r->n_items);
	for (size_t i = 0; i < r->n_items; i++) {
		const er_item_t *it = &r->items[i];
		if (r->as_array) {
			resp_array(o, it->dim);
			for (uint32_t k = 0; k < it->dim; k++)
				resp_double(o, it->vec[k]);
			continue;
		}
		uint8_t buf[4 * EMBED_DIM_REPLY_MAX];
		size_t n = it->dim <= EMBED_DIM_REPLY_MAX ? vec_bytes(it, buf) : 0;
		resp_bulk(o, buf, n);
	}
}

/* Reply, or hand the rewritten command on (to the writer or the workers). */
static void embedq_finish(srv_t *s, er_req_t *r)
{
	srv_job_t *j = r->job;
	int rc = VELA_OK;
	if (r->err[0]) {
		req_fail(s, r);
		return;
	}
	switch (r->kind) {
	case ER_EMBED:
		reply_vectors(r);
		embedq_req_free(r);
		exec_job_done(s, j);
		return;
	case ER_WRITE:
		rc = job_rewrite(j, -1, -1, NULL, r->items, r->n_items);
		break;
	case ER_SEARCH:
		rc = job_rewrite(j, r->embed_opt, r->items[0].arg, &r->items[0], NULL, 0);
		break;
	default:
		break;
	}
	if (rc) {
		snprintf(r->err, sizeof(r->err), "OOM out of memory");
		req_fail(s, r);
		return;
	}
	int kind = r->kind;
	embedq_req_free(r);
	jobq_push(kind == ER_SEARCH ? &s->searchq : &s->writeq, j);
}

/* Only reached where the encoder cannot run (embed_route refuses EMBED
 * inside MULTI, so this is a guard, not a path). */
void cmd_embed(cmd_ctx_t *x)
{
	resp_error(x->out, "ERR EMBED cannot run here (inside MULTI)");
}

/* ------------------------------------------------------------ start / stop */

/* At start: an earlier back-fill may have stopped with the server, so every
 * index with a MODEL field is walked again (cheap where nothing is missing). */
static void backfill_all(srv_t *s)
{
	char **names = NULL;
	size_t n = 0;
	if (vela_index_list(s->db, &names, &n))
		return;
	for (size_t i = 0; i < n; i++) {
		vela_index_def_t *d;
		if (vela_index_describe(s->db, names[i], &d, NULL))
			continue;
		bool computed = false;
		for (uint32_t k = 0; k < d->n_fields; k++)
			computed |= d->fields[k].model != NULL;
		vela_index_def_free(d);
		if (computed)
			embedq_backfill(s, names[i]);
	}
	vela_strv_free(names, n);
}

int embedq_start(srv_t *s)
{
	srv_embed_t *e = calloc(1, sizeof(*e));
	if (e == NULL)
		return VELA_ENOMEM;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	s->embed = e;
	if (pthread_create(&e->former, NULL, former_main, s))
		return VELA_ENOMEM;
	if (pthread_create(&e->runner, NULL, runner_main, s)) {
		pthread_mutex_lock(&e->mu);
		e->stop = true;
		pthread_cond_broadcast(&e->cv);
		pthread_mutex_unlock(&e->mu);
		pthread_join(e->former, NULL);
		return VELA_ENOMEM;
	}
	e->started = true;
	backfill_all(s);
	return VELA_OK;
}

/* Every queued request is finished or forwarded before this returns, so the
 * writer, stopped after it, commits every write that was accepted. */
void embedq_stop(srv_t *s)
{
	srv_embed_t *e = s->embed;
	if (e == NULL || !e->started)
		return;
	pthread_mutex_lock(&e->mu);
	e->stop = true;
	pthread_cond_broadcast(&e->cv);
	pthread_mutex_unlock(&e->mu);
	pthread_join(e->former, NULL);
	pthread_join(e->runner, NULL);
	e->started = false;
}

void embedq_free(srv_t *s)
{
	srv_embed_t *e = s->embed;
	if (e == NULL)
		return;
	embedq_stop(s);
	for (uint32_t i = 0; i < e->n_models; i++) {
		embed_model_close(e->models[i].m);
		embed_image_model_close(e->models[i].im);
	}
	for (er_fill_t *f = e->fills, *n; f; f = n) {
		n = f->next;
		free(f->index);
		free(f->cursor);
		free(f);
	}
	pthread_mutex_destroy(&e->mu);
	pthread_cond_destroy(&e->cv);
	free(e);
	s->embed = NULL;
}

void embedq_stats(srv_t *s, srv_embed_stats_t *st)
{
	srv_embed_t *e = s->embed;
	memset(st, 0, sizeof(*st));
	st->device = embed_device_name((embed_device_t)s->cfg.embed_device);
	if (e == NULL)
		return;
	pthread_mutex_lock(&e->mu);
	st->requests = e->requests;
	st->texts = e->texts;
	st->tokens = e->tokens;
	st->batches = e->batches;
	st->failures = e->failures;
	st->compute_ns = e->compute_ns;
	st->queued = e->qlen;
	st->backfill_queued = e->backfill_queued;
	for (er_fill_t *f = e->fills; f; f = f->next)
		st->backfill_tasks++;
	st->n_models = e->n_models;
	for (uint32_t i = 0; i < e->n_models && i < SRV_EMBED_STATS_MODELS; i++) {
		snprintf(st->models[i].name, sizeof(st->models[i].name), "%s", e->models[i].name);
		st->models[i].dim = model_dim(&e->models[i]);
		st->models[i].texts = e->models[i].texts;
		st->models[i].kernel = model_kernel(&e->models[i]);
		/* Images always run on the CPU (embed.h: only the text encoder has a GPU path). */
		const embed_model_t *tm = e->models[i].m;
		const char *gpu = tm ? embed_model_gpu_name(tm) : NULL;
		st->models[i].device = tm ? embed_model_device(tm) : "cpu";
		snprintf(st->models[i].gpu, sizeof(st->models[i].gpu), "%s", gpu ? gpu : "");
	}
	pthread_mutex_unlock(&e->mu);
}
