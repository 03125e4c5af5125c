/*
 * pncore.h
 *		The numeric core of pepnet: configuration, hashing, weight format,
 *		inference and training of the STAR-PEPNet model (docs/model.md).
 *
 * Plain C99 without PostgreSQL headers, so that it can be unit-tested,
 * fuzzed and benchmarked alone.  Every allocation goes through pn_alloc /
 * pn_free, which the PostgreSQL glue points at palloc in a memory context.
 * Every function that can fail returns 0 on success or a PN_E* code and
 * fills a PnError; the glue turns that into ereport(ERROR).
 */
#ifndef PNCORE_H
#define PNCORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* limits checked before anything is allocated */
#define PN_MAX_NAME 64
#define PN_MAX_FIELDS 1024
#define PN_MAX_TASKS 64
#define PN_MAX_LAYERS 8
#define PN_MAX_DOMAINS 100000
#define PN_MAX_WIDTH 65536
#define PN_MAX_EMB_DIM 1024
#define PN_MAX_DENSE 65536
#define PN_MAX_BUCKETS ((int64_t) 1 << 31)
#define PN_MAX_TENSORS (4 + 4 * PN_MAX_FIELDS + 8 * PN_MAX_TASKS * (PN_MAX_LAYERS + 1) + 8 * PN_MAX_LAYERS + 16)

/* error classes; the glue maps each to a SQLSTATE */
#define PN_OK 0
#define PN_ECONFIG 1			/* invalid configuration */
#define PN_EINPUT 2				/* invalid scoring / training input */
#define PN_EFORMAT 3			/* malformed or mismatched weights */
#define PN_ETOOBIG 4			/* exceeds a size limit */
#define PN_ENOMEM 5				/* allocation failed */
#define PN_ENUMERIC 6			/* training produced a non-finite value (diverged) */
#define PN_EENGINE 7			/* the matmul engine (oneDNN) failed */
#define PN_EUNSUPPORTED 8		/* not available on this CPU */

typedef struct PnError
{
	int			code;
	char		msg[256];
	char		detail[256];
	int64_t		row;			/* 0-based row of a block the error is about, or -1 */
} PnError;

int			pn_utf8_prefix(const char *s, int maxchars);
int			pn_seterr(PnError *err, int code, const char *fmt,...)
#if defined(__GNUC__)
			__attribute__((format(printf, 3, 4)))
#endif
			;
void		pn_setdetail(PnError *err, const char *fmt,...)
#if defined(__GNUC__)
			__attribute__((format(printf, 2, 3)))
#endif
			;

/* allocation hooks: return NULL on failure (never longjmp) */
extern void *(*pn_alloc_hook) (size_t size);
extern void (*pn_free_hook) (void *ptr);
void	   *pn_alloc(size_t size);
void	   *pn_alloc0(size_t size);
void		pn_free(void *ptr);

/* ---- JSON (config text, safetensors header) ---- */
typedef enum PnJsonType
{
	PNJ_NULL, PNJ_BOOL, PNJ_NUMBER, PNJ_STRING, PNJ_ARRAY, PNJ_OBJECT
} PnJsonType;

typedef struct PnJson
{
	PnJsonType	type;
	bool		boolean;
	bool		is_int;			/* number written without fraction/exponent, fits int64 */
	int64_t		ival;
	double		num;
	char	   *str;			/* STRING: value; members: key */
	char	   *key;
	int			n;				/* ARRAY/OBJECT: number of children */
	struct PnJson **items;
} PnJson;

int			pn_json_parse(const char *text, size_t len, PnJson **out, PnError *err);
void		pn_json_free(PnJson *j);
const PnJson *pn_json_get(const PnJson *obj, const char *key);

/* ---- configuration ---- */
typedef struct PnField
{
	char		name[PN_MAX_NAME];
	int64_t		buckets;
	bool		hash;
	/*
	 * the named form ("inputs": "columns"): the field's table has a missing
	 * row at index buckets, and the ids the core is given for it are rows
	 * the glue resolved (pn_field_row); arrays form: false
	 */
	bool		named;
	bool		nullable;		/* named form: NULL uses the missing row (else an error) */
	int			id;				/* named form: the id kind it was trained with, PN_ID_* */
	/*
	 * named form, "min_count": k (0: none): the field's ids map through its
	 * vocabulary, V ascending unique ids (tensor "vocab.feature.{i}" /
	 * "vocab.persona.{j}", int64) to rows 0..V-1; every other id to the
	 * out-of-vocabulary row V = buckets - 1.  vocab points into the model's
	 * data (pn_model_attach_vocab), NULL while the model has none.
	 */
	int64_t		min_count;
	const int64_t *vocab;
	int64_t		nvocab;
	/*
	 * a named dense field's transforms (docs/model.md "Named inputs", dense transforms),
	 * applied by the glue in the order log1p, clip, zscore
	 */
	bool		log1p;
	bool		clip;
	float		clip_lo,
				clip_hi;
	bool		zscore;
	bool		stats;			/* zscore: mean and std are set (stored or computed) */
	float		mean,
				std;
	/*
	 * a multi-valued field (named form, "pooling"): PN_POOL_SUM or
	 * PN_POOL_MEAN of the embedding rows of its ids, weighted by the column
	 * weights ("" = every weight 1); its ids reach the core as a PnBag
	 */
	int			pooling;
	char		weights[PN_MAX_NAME];
} PnField;

/* a field's "pooling": single-valued, or a multi-valued field's combiner */
#define PN_POOL_NONE 0
#define PN_POOL_SUM 1
#define PN_POOL_MEAN 2
/* the most ids a multi-valued field takes in one row */
#define PN_MAX_BAG 10000

/* a named field's "id": not fixed yet (absent), "integer" or "text" */
#define PN_ID_ANY 0
#define PN_ID_INTEGER 1
#define PN_ID_TEXT 2

/* "inputs": the positional 0.2 form or the named form (docs/model.md "Named inputs") */
#define PN_INPUTS_ARRAYS 0
#define PN_INPUTS_COLUMNS 1

typedef struct PnConfig
{
	int			inputs;			/* PN_INPUTS_ARRAYS or PN_INPUTS_COLUMNS */
	char		domain_column[PN_MAX_NAME];	/* named form: the domain's column */
	PnField    *dfield;			/* named form: the dense columns [dense] (names only), else NULL */
	int			domains;
	int			nfeat;
	PnField    *feat;
	int			npers;
	PnField    *pers;
	int			dense;
	int			emb_dim;
	int			ntasks;
	char		tasks[PN_MAX_TASKS][PN_MAX_NAME];
	int			nhidden;
	int			hidden[PN_MAX_LAYERS];
	float		gamma;
	bool		epnet;
	int			epnet_hidden;	/* resolved: n0 when null */
	bool		ppnet;
	bool		pn;
	bool		star;
	bool		aux;
	int			aux_hidden;
	float		l2;
	/*
	 * negative down-sampling: the rate w_d at which domain d's negatives
	 * were kept in training, [domains], NULL when none; scoring returns
	 * sigmoid(logit + ln w_d) = q / (q + (1 - q) / w_d)
	 */
	float	   *neg_rate;
	/*
	 * the shared-bottom input: x0 ends with the domain embedding dv,
	 * x0 = [features ; dense ; dv] (docs/model.md step 1)
	 */
	bool		domain_input;
	/* derived */
	int			n0;				/* nfeat * emb_dim + dense (+ emb_dim with domain_input) */
	int			pk;				/* npers * emb_dim */
	bool		bags;			/* some feature or persona field is multi-valued */
} PnConfig;

int			pn_config_parse(const char *text, size_t len, int64_t max_bytes,
							PnConfig *cfg, PnError *err);
void		pn_config_free(PnConfig *cfg);
/* canonical JSON of a config with every default filled in (pn_alloc'd) */
char	   *pn_config_to_json(const PnConfig *cfg);

/* ---- hashing ---- */
uint64_t	pn_splitmix64(uint64_t z);
/*
 * slot of an id in field i; -1 when a non-hashed id is out of range.  For a
 * named field the id given is already its row (pn_field_row), in [0, buckets].
 */
int64_t		pn_slot(const PnField *f, int field_index, int64_t id);
/*
 * embedding row of an id in field i, hashed, not hashed or through the
 * field's vocabulary (min_count); -1 when a non-hashed id is out of range
 * or a vocabulary field has no vocabulary attached
 */
int64_t		pn_field_row(const PnField *f, int field_index, int64_t id);
/* a vocabulary field's out-of-vocabulary row (ids not in its vocabulary) */
#define PN_OOV_ROW(f) ((f)->buckets - 1)
/* a named field's missing row (NULL ids) */
#define PN_MISSING_ROW(f) ((f)->buckets)
/* rows of a field's embedding table: buckets, + 1 (the missing row) in the named form */
#define PN_FIELD_ROWS(f) ((f)->buckets + ((f)->named ? 1 : 0))
/* the int64 id of a text id from its UTF-8 bytes (docs/model.md "Text ids", textid.c) */
int64_t		pn_text_id(const char *utf8, size_t len);

/*
 * The ids of one multi-valued field ("pooling") for a block of rows, as a
 * CSR: row r's embedding rows (resolved by pn_field_row, like a single id
 * of the field) are rows[off[r] .. off[r + 1]), with weights[j] (finite,
 * >= 0) or, when weights is NULL, weight 1.  off need not start at 0, so
 * &off[r0] is the view of rows r0.. of the same block.  Pooled with
 * weights w_j: sum = sum_j w_j E[rows_j], mean = that / sum_j w_j; a row
 * without ids, or with total weight 0, takes the field's empty row (its
 * missing row, index buckets).  Scoring and training calls take the bags
 * of a block as an array indexed by field (feature or persona), NULL when
 * the config has no multi-valued field; entries of single-valued fields
 * are not read, nor are a multi-valued field's entries of the features /
 * persona id arrays.
 */
typedef struct PnBag
{
	const int64_t *off;			/* [n + 1] */
	const int64_t *rows;
	const float *weights;		/* or NULL */
} PnBag;

/*
 * Pool row r of a multi-valued field f (index i, kind "feature" or
 * "persona" for errors) into out [k] from its table; an out-of-range row
 * is PN_EINPUT.  *scale_out (may be NULL) gets the factor of every id's
 * weight in the pooled value (1 for sum, 1 / sum w for mean; 0 when the
 * empty row was used).
 */
int			pn_bag_pool(const PnField *f, int i, const char *kind, const float *table, int k,
						const PnBag *bag, int64_t r, float *out, PnError *err);

/* ---- model: every tensor in one float array, docs/model.md's names ---- */
typedef enum PnKind
{
	PNT_EMBED,					/* embedding table: sparse (lazy) updates */
	PNT_WEIGHT,					/* shared matrix: takes L2 */
	PNT_OTHER					/* biases, domain weights, PN parameters */
} PnKind;

typedef struct PnTensor
{
	char		name[48];
	int			ndim;
	int64_t		shape[3];
	int64_t		offset;			/* in floats, into PnModel.data */
	int64_t		numel;
	PnKind		kind;
	bool		trainable;		/* false for PN running statistics */
	bool		optional;		/* may be absent from a safetensors blob (then 0) */
	/*
	 * int64 (safetensors dtype I64): a vocabulary, numel int64 values at
	 * data + offset (8-byte aligned, 2 floats each); never trained, last in
	 * the layout
	 */
	bool		i64;
} PnTensor;

/* bytes of a tensor's values */
#define PN_TENSOR_BYTES(t) ((uint64_t) (t)->numel * ((t)->i64 ? 8 : 4))

/* index of tower tensors: task t (0-based), layer l (1..L+1) */
#define PN_TW(cfg, t, l) ((t) * ((cfg)->nhidden + 1) + (l) - 1)

/* the layer plan of a model (plan.h), made with its layout */
typedef struct PnPlan PnPlan;

typedef struct PnModel
{
	PnConfig	cfg;
	PnPlan	   *plan;			/* the forward pass's layers, inputs and sizes (plan.c) */
	int			ntensors;		/* every tensor, the nvocab int64 tensors last */
	PnTensor   *tensors;
	int			nvocab;			/* int64 tensors (vocabularies), tensors[ntensors - nvocab ..] */
	int64_t		total;			/* floats (an int64 counts as 2) */
	float	   *data;
	bool		borrowed;		/* data points into a blob the model does not own */
	int			nabsent;		/* optional tensors the blob read lacked (set to 0) */
	/* tensor indices, -1 when the part is off */
	int		   *t_emb_feat;
	int		   *t_emb_pers;
	int			t_emb_dom;
	int			t_ep_w1, t_ep_b1, t_ep_w2, t_ep_b2;
	int			t_pn_gamma, t_pn_beta, t_pn_dgamma, t_pn_dbeta, t_pn_rmean, t_pn_rvar;
	int			t_pn_count;		/* pn.num_batches_tracked [D] (docs/model.md 0.2) */
	int		   *t_tw_w, *t_tw_b, *t_tw_dw, *t_tw_db;	/* [T*(L+1)] */
	int			t_pp_w1[PN_MAX_LAYERS], t_pp_b1[PN_MAX_LAYERS],
				t_pp_w2[PN_MAX_LAYERS], t_pp_b2[PN_MAX_LAYERS];
	int			t_aux_w1, t_aux_b1, t_aux_w2, t_aux_b2;
	int		   *t_vocab_feat;	/* [F] vocab.feature.{i}, -1 without min_count */
	int		   *t_vocab_pers;	/* [P] */
} PnModel;

#define PN_T(m, idx) ((m)->data + (m)->tensors[idx].offset)

/* number of float parameters the config needs; -1 on overflow */
int64_t		pn_config_numel(const PnConfig *cfg);
/* lay out the tensors of cfg (copied) and allocate data (zeroed) */
int			pn_model_new(const PnConfig *cfg, PnModel **out, PnError *err);
/* the layout only, no storage: for pn_safetensors_read to point into its blob */
int			pn_model_layout(const PnConfig *cfg, PnModel **out, PnError *err);
void		pn_model_free(PnModel *m);
/* point the vocabulary fields of m->cfg at their tensors in m->data (after data is set) */
void		pn_model_attach_vocab(PnModel *m);
/* tensors trained or stored as float32 (the vocabularies excluded) */
#define PN_NFLOAT(m) ((m)->ntensors - (m)->nvocab)
int			pn_model_find(const PnModel *m, const char *name);
/* deterministic initialisation from a seed (scheme in README.md) */
void		pn_model_init(PnModel *m, uint64_t seed);

/* ---- weights as safetensors ---- */
/* the longest safetensors header read (real headers take ~100 bytes a tensor) */
#define PN_MAX_HEADER (8 * 1024 * 1024)
/* check blob against m's layout and copy every tensor into m->data */
int			pn_safetensors_read(PnModel *m, const uint8_t *blob, size_t len, PnError *err);
/* where a tensor's bytes are in a safetensors blob's data */
typedef struct PnStSpan
{
	uint64_t	begin,
				end;
	int			tensor;
} PnStSpan;
/*
 * pn_safetensors_read in steps, for a blob read piece by piece: check its
 * header (its first headlen bytes) against m's layout and get the sorted
 * spans of the tensors' bytes (pn_alloc'd; offsets into the data, which
 * starts at *data_start); once the bytes are in m->data, zero absent
 * optional tensors and check for non-finite values.
 */
int			pn_safetensors_plan(PnModel *m, const uint8_t *blob, size_t headlen, uint64_t len,
								PnStSpan **spans, int *nspans, uint64_t *data_start, PnError *err);
int			pn_safetensors_check(PnModel *m, const PnStSpan *spans, int nspans, PnError *err);
/* PN statistics without pn.num_batches_tracked in the header at p (0.1.0's weights) */
bool		pn_safetensors_lacks_count(const uint8_t *p, size_t len);
/* size of the blob pn_safetensors_write produces */
size_t		pn_safetensors_size(const PnModel *m);
void		pn_safetensors_write(const PnModel *m, uint8_t *out);
/*
 * The blob in pieces (chunked storage): pn_safetensors_prefix writes its
 * first bytes, the length and the JSON header (out NULL: only measures);
 * pn_safetensors_write_range writes bytes [off, off + len) of the blob given
 * that prefix.  Concatenated ranges equal pn_safetensors_write's output.
 */
size_t		pn_safetensors_prefix(const PnModel *m, uint8_t *out);
void		pn_safetensors_write_range(const PnModel *m, const uint8_t *prefix, size_t prefixlen,
									   uint64_t off, size_t len, uint8_t *out);

/* ---- inference ---- */

/* per (version, domain): fused STAR matrices, PN folded, domain biases */
typedef struct PnDomainCache
{
	int			domain;
	float	   *ep_bias;		/* [he] W1[:, :k] dv + b1 */
	float	   *aux_bias;		/* [ha] V1[:, :k] dv + e1 */
	float	   *w1;				/* [T*h1, n0] first layer of every task, PN folded */
	float	   *b1;				/* [T*h1] */
	int			nw;				/* T*(L+1) */
	float	  **w;				/* [nw] fused W of layer l >= 2 (NULL for l = 1) */
	float	  **b;
	size_t		bytes;
} PnDomainCache;

/* per request: embeddings of the persona and the PPNet gate biases */
typedef struct PnPersona
{
	float	   *pv;				/* [P*k] */
	float	   *gbias[PN_MAX_LAYERS];	/* [T*h_l] W1[:, :Pk] pv + b1 */
} PnPersona;

int			pn_domain_build(const PnModel *m, int domain, PnDomainCache **out, PnError *err);
/*
 * The arrays of a domain cache sized by the model's plan, in the order
 * pn_domain_build fills them and the server's shared cache copies them:
 * floats[i] each one's floats, slot[i] (with dc) the address of dc's
 * pointer to it; returns their number, at most PN_DOMAIN_MAX_ARRAYS(cfg)
 */
#define PN_DOMAIN_MAX_ARRAYS(cfg) (4 + 2 * (cfg)->ntasks * ((cfg)->nhidden + 1))
int			pn_domain_arrays(const PnModel *m, PnDomainCache *dc, float ***slot, size_t *floats);
void		pn_domain_free(PnDomainCache *dc);
int			pn_persona_build(const PnModel *m, const int64_t *persona, PnPersona **out, PnError *err);
/* the same with the persona's multi-valued fields: pbag [P] (row 0 of each), NULL when none */
int			pn_persona_build_bags(const PnModel *m, const int64_t *persona, const PnBag *pbag,
								  PnPersona **out, PnError *err);
void		pn_persona_free(PnPersona *p);

/*
 * Scoring of one candidate at a time (pepnet_predict): OpenBLAS GEMVs.
 * Workspace for up to nmax candidates; pn_score scores n <= nmax
 * candidates: features [n, F] ids, dense [n, Nd] (NULL when Nd = 0),
 * probabilities out [n, T].  Agrees with pn_engine_score to float rounding
 * (another summation order), not bit for bit.
 */
typedef struct PnWork PnWork;
PnWork	   *pn_work_new(const PnModel *m, int nmax);
/*
 * C [M, N] += A [M, K] W [N, K]^T (row strides lda, ldw, ldc), every
 * element summed in an order that depends on K only (infer.c); AVX2 + FMA
 * kernels where pn_gemm_rows_avx2(), else fmaf in the same order.
 */
void		pn_gemm_rows(int M, int N, int K, const float *A, int lda, const float *W, int ldw,
						 float *C, int ldc);
bool		pn_gemm_rows_avx2(void);
/*
 * The fallback engine's matmul (gemm.c): C [M, N] = epi(bias + A [M, K]
 * W [N, K]^T) with W packed by pn_panels_pack into pn_panels_floats(N, K)
 * floats (32-byte aligned) of 16-column panels; epi PN_EPI_NONE, PN_EPI_RELU
 * or PN_EPI_GATE (gamma * sigmoid(.) * X [M, N], row stride ldx; C may be
 * X).  Every element is summed in an order that depends on K only.
 */
#define PN_EPI_NONE 0
#define PN_EPI_RELU 1
#define PN_EPI_GATE 2
size_t		pn_panels_floats(int N, int K);
void		pn_panels_pack(int N, int K, const float *W, int ldw, float *Wp);
void		pn_gemm_panels(int M, int N, int K, const float *A, int lda, const float *Wp, const float *bias,
						   float *C, int ldc, int epi, float gamma, const float *X, int ldx);
void		pn_work_free(PnWork *w);
const float *pn_work_logits(const PnWork *w);
int			pn_score(const PnModel *m, const PnDomainCache *dc, const PnPersona *pp,
					 PnWork *w, int n, const int64_t *features, const float *dense,
					 double *out, PnError *err);
/* the same with the multi-valued feature fields' bags fbag [F] of the n rows (NULL when none) */
int			pn_score_bags(const PnModel *m, const PnDomainCache *dc, const PnPersona *pp,
						  PnWork *w, int n, const int64_t *features, const PnBag *fbag, const float *dense,
						  double *out, PnError *err);

/*
 * Batched scoring (engine.c): oneDNN matmuls over tiles of exactly `tile`
 * candidates (the last tile padded), so that a candidate's score depends
 * only on its own inputs: identical candidates get bit-identical scores
 * whatever their position and the request's size.  One engine per cached
 * version and precision; the tower weights of a domain are packed on its
 * first use.  Where oneDNN has no brgemm matmul (AVX2 CPUs), fp32 runs the
 * fallback: blocks of up to 64 candidates through pn_gemm_panels, no
 * padding, the same ties.  int8 always runs the fallback's blocks, its
 * matmuls through oneDNN's int8 primitives where they are exact (VNNI, AMX),
 * else pn_q8_gemm: the same bits everywhere (quant.c).
 * pn_engine_score: features [n, F], dense [n, Nd] or NULL,
 * out [n, T] probabilities; interrupt (may be NULL) is called per tile.
 */
#define PN_FP32 0
#define PN_BF16 1
#define PN_INT8 2				/* int8 weights and activations (quant.c, docs/model.md) */
#define PN_TILE 16				/* rows per tile (see BENCHMARKS.md) */
typedef struct PnEngine PnEngine;
/*
 * Packed weights shared between processes (the glue's shared model cache),
 * passed to pn_engine_new and pn_engine_prepare_domain: the engine asks
 * lookup for the packed weights of each matrix, by a key naming it ("ep1",
 * "g2.1", "d3.tw1", "d3.tw[4]", ...: unique per matrix) and its size, and
 * uses them in place when found (64-byte aligned; the provider's, never
 * freed by the engine, alive as long as the engine); a matrix it packs
 * itself it offers to publish (which copies it).  Neither may fail by
 * longjmp.  A NULL share: the engine packs its own.
 */
typedef struct PnPackShare
{
	const void *(*lookup) (void *arg, const char *key, size_t bytes);
	void		(*publish) (void *arg, const char *key, const void *packed, size_t bytes);
	void	   *arg;
} PnPackShare;
int			pn_engine_new(const PnModel *m, int precision, int tile, const PnPackShare *share, PnEngine **out,
						  PnError *err);
void		pn_engine_free(PnEngine *eng);
int			pn_engine_prepare_domain(PnEngine *eng, const PnDomainCache *dc, const PnPackShare *share,
									 PnError *err);
int			pn_engine_score(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
							const int64_t *features, const float *dense, double *out,
							void (*interrupt) (void), PnError *err);
/* the same, logits [n, T] (float, before the sigmoid) instead of probabilities */
int			pn_engine_logits(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
							 const int64_t *features, const float *dense, float *logits,
							 void (*interrupt) (void), PnError *err);
/* both with the multi-valued feature fields' bags fbag [F] of the n rows (NULL when none) */
int			pn_engine_score_bags(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
								 const int64_t *features, const PnBag *fbag, const float *dense, double *out,
								 void (*interrupt) (void), PnError *err);
int			pn_engine_logits_bags(PnEngine *eng, const PnDomainCache *dc, const PnPersona *pp, int64_t n,
								  const int64_t *features, const PnBag *fbag, const float *dense, float *logits,
								  void (*interrupt) (void), PnError *err);
int			pn_engine_tile(const PnEngine *eng);
bool		pn_engine_onednn(const PnEngine *eng);

/* whether oneDNN runs bf16 matmuls natively here; exact int8 ones (VNNI, AMX); the ISA it uses */
bool		pn_engine_bf16_supported(void);
bool		pn_engine_int8_supported(void);
/* whether pepnet's own int8 kernel runs AVX2 here (else portable C, the same bits) */
bool		pn_q8_avx2(void);
const char *pn_engine_isa(void);

/* ---- training ---- */

/* one batch of rows; labels [n, T] with NaN = no label for that task */
typedef struct PnBatch
{
	int			n;
	const int32_t *domain;		/* [n] */
	const int64_t *persona;		/* [n, P] */
	const int64_t *features;	/* [n, F] */
	const float *dense;			/* [n, Nd] or NULL when Nd = 0 */
	const float *labels;		/* [n, T] */
	const PnBag *fbag;			/* [F] multi-valued feature fields' bags, or NULL when none */
	const PnBag *pbag;			/* [P] multi-valued persona fields' bags, or NULL when none */
} PnBatch;

typedef struct PnTrainer PnTrainer;

int			pn_trainer_new(PnModel *m, int bmax, float lr, PnTrainer **out, PnError *err);
void		pn_trainer_free(PnTrainer *tr);
int64_t		pn_trainer_steps(const PnTrainer *tr);
/* Adam state, to store with a version and resume from: moments in model layout */
void		pn_trainer_set_steps(PnTrainer *tr, int64_t steps);
float	   *pn_trainer_moment(PnTrainer *tr, int which);	/* 1: first, 2: second */
/* learning rate of the next steps (schedules) */
void		pn_trainer_set_lr(PnTrainer *tr, float lr);
float	   *pn_trainer_grad(PnTrainer *tr);
int			pn_trainer_freeze_sg(PnTrainer *tr, bool on);
/*
 * With multi-valued fields a batch may grow the trainer's room for the rows
 * it touches (pn_alloc): call pn_train_grad, pn_train_step and
 * pn_train_predict where pn_alloc allocates for the trainer's lifetime.
 */
/* loss and gradients of a batch, no optimiser step */
int			pn_train_grad(PnTrainer *tr, const PnBatch *b, bool update_stats, double *loss, PnError *err);
/* the optimiser step for the gradients of the last pn_train_grad */
void		pn_train_apply(PnTrainer *tr);
/*
 * forward, backward and optimiser step.  A non-finite loss, batch statistic
 * or weight fails with PN_ENUMERIC (err->row names the batch row when one
 * is to blame); the trainer's model is then unusable.
 */
int			pn_train_step(PnTrainer *tr, const PnBatch *b, double *loss, PnError *err);
/* logits [n, T] in input order, inference mode */
int			pn_train_predict(PnTrainer *tr, const PnBatch *b, float *logits, PnError *err);

/*
 * Evaluation (evaluate.c): logits of a batch of rows by the scoring engine,
 * so that pepnet_evaluate judges the scores pepnet_score serves, and
 * identical rows get bit-identical logits (exact AUC on ties).  Rows are
 * grouped by (domain, persona); per-domain parts are built on first use.
 * precision: PN_FP32, PN_BF16 or PN_INT8.
 */
typedef struct PnEvaluator PnEvaluator;
int			pn_evaluator_new(const PnModel *m, int precision, PnEvaluator **out, PnError *err);
void		pn_evaluator_free(PnEvaluator *ev);
int			pn_evaluator_logits(PnEvaluator *ev, const PnBatch *b, float *logits,
								void (*interrupt) (void), PnError *err);

#endif							/* PNCORE_H */
