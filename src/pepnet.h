/*
 * pepnet.h
 *		What the files of the glue share: settings, the backend cache's entry
 *		of a model version, model references, and each file's entry points
 *		(in layer order, see docs/source-layout.md).
 */
#ifndef PEPNET_H
#define PEPNET_H

#include "postgres.h"

#include "pncore.h"
#include "common/cryptohash.h"
#include "utils/jsonb.h"
#include "utils/portal.h"
#include "utils/timestamp.h"

/* settings, each defined by the file that owns it */
extern char *pepnet_default_model;	/* score.c */
extern int	pepnet_cache_size_mb;	/* cache.c */
extern int	pepnet_max_model_size_mb;	/* models.c */
extern int	pepnet_precision;		/* PN_FP32, PN_BF16 or PN_INT8 (score.c) */

/*
 * A model name has 1 to 63 characters (not bytes: repeat('é', 32) is a valid
 * name); buffers hold 63 characters of the widest server encoding (4 bytes).
 */
#define PEPNET_NAME_MAXCHARS 63
#define PEPNET_NAMELEN (PEPNET_NAME_MAXCHARS * 4 + 4)

/* the fingerprint of a version: SHA-256 (fingerprint.c), in hex in messages and pinned references */
#define FP_LEN 32
#define FP_HEX (2 * FP_LEN)

/*
 * The first key of the transaction-level advisory lock that serializes the
 * writers of one model name (the second is hashtext(name)).
 */
#define PEPNET_LOCK_KEY 1885695342

/* candidates pepnet_predict's workspace holds (one per call) */
#define PEPNET_BLOCK 1

/* one model version held by this backend */
typedef struct PepnetEntry
{
	char		name[PEPNET_NAMELEN];	/* hash key: name (zero-padded) and version */
	int32		version;
	TransactionId xmin;			/* of the row, to notice a re-created version */
	MemoryContext cxt;			/* owns everything below */
	PnModel    *model;
	PnDomainCache **domains;	/* [D], built on first use */
	int			ndomains;
	PnWork	   *work;			/* pepnet_predict's workspace (GEMV) */
	PnEngine   *engine[3];		/* batched scoring per precision (PN_FP32, PN_BF16, PN_INT8), made on first use */
	PnPersona  *persona;		/* pepnet_score's last persona, reused while it repeats */
	int64	   *persona_ids;	/* its ids [npers] */
	Size		bytes;
	int64		hits;
	TimestampTz built_at;
	uint64		lru;
	int			sh_slot;		/* entry of the shared cache (shcache.c), -1 when private */
	uint64		sh_gen;
	/* the statement that used it last: never freed while that statement runs */
	LocalTransactionId pin_lxid;
	TimestampTz pin_stmt;
	bool		stale;			/* cleared while in use: dropped once the statement is over */
} PepnetEntry;

/* a resolved model reference */
typedef struct PepnetRef
{
	char		name[PEPNET_NAMELEN];
	int32		version;
	TransactionId xmin;
} PepnetRef;

/* pepnet's registry tables as this backend found them by name (cache.c) */
typedef struct PepnetTables
{
	Oid			nsp;			/* schema pepnet */
	Oid			models;
	Oid			deployments;	/* InvalidOid when missing */
	bool		valid;			/* cleared by invalidation messages naming them */
} PepnetTables;

/* the files in layer order, each using only those above it (docs/source-layout.md) */

/* util.c */
extern void pepnet_util_init(void);
extern void pepnet_report(PnError *err, int sqlstate_format);
extern void pepnet_report_rows(PnError *err, int format_code, int other_code, const char *hint,
							   ErrorContextCallback *rowctx) pg_attribute_noreturn();
extern int	pepnet_sqlstate(const PnError *err, int format_code, int other_code);
extern void pepnet_check_name(const char *name);
extern int	pepnet_config_parse(const char *text, int64 max_bytes, PnConfig *cfg, PnError *err);
extern void pepnet_null_arg(const char *what) pg_attribute_noreturn();
extern void pepnet_interrupt_check(void);
extern const char *pepnet_clip(const char *s, int maxchars);
extern void pepnet_fix_encoding(char *s);
extern bool pepnet_copy_into(const char *table);
extern void pepnet_spi_connect(void);
extern char *node_label(void);

/* fingerprint.c */
extern pg_cryptohash_ctx *fp_begin(const char *canon);
extern void hash_slices(pg_cryptohash_ctx *ctx, const uint8 *p, uint64 n);
extern void fp_end(pg_cryptohash_ctx *ctx, uint8 *out);
extern char *canonical_config(const char *config_json);
extern void fingerprint(Jsonb *config, bytea *weights, uint8 *out);
extern bool stored_fingerprint(const char *name, int32 version, uint8 *fp);
extern char *fp_hex(const uint8 *fp);

/* reader.c (the data-query reader itself: reader.h) */
extern struct _SPI_plan *pepnet_prepare_select(const char *query, const char *what, const char *hint);

/* chunks.c */
extern int	pepnet_chunk_size;
extern void pepnet_chunks_init(void);
extern bool pepnet_chunked_schema(void);
extern int32 pepnet_store_chunked(const char *name, int32 version, const char *config_json, const PnModel *m,
								  const uint8 *bytes, uint64 len, const char *metrics_json, int32 parent,
								  const char *bundle_header, uint8 *fp_out);
extern uint64 pepnet_weights_size(const char *name, int32 version);
typedef void *(*PepnetWeightsAlloc) (void *arg, uint64 len);
extern uint8 *pepnet_stream_weights(const char *name, int32 version, uint64 maxlen,
									PepnetWeightsAlloc alloc, void *arg, uint64 *len);
extern uint8 *pepnet_read_weights(const char *name, int32 version, size_t room, uint64 maxlen, uint64 *len);
extern void pepnet_scatter_weights(const char *name, int32 version, PnModel *m);
extern bool pepnet_optimizer_chunked(void);
extern void pepnet_write_moment_chunks(const char *name, int32 version, int moment, const PnModel *mm);
extern bool pepnet_read_moment_chunks(const char *name, int32 version, int moment, PnModel *mm);

/* chunks.c, for transfer.c: the weights being written, from a model (serialized piece by piece) or as given bytes */
typedef struct WeightSource
{
	const PnModel *m;
	uint8	   *prefix;			/* the model's length and header */
	size_t		plen;
	const uint8 *bytes;
	uint64		len;
} WeightSource;

typedef void (*EmitFn) (void *arg, const uint8 *p, size_t n);
extern void source_init(WeightSource *s, const PnModel *m, const uint8 *bytes, uint64 len);
extern void source_range(const WeightSource *s, uint64 off, size_t n, uint8 *out);
extern Portal chunk_cursor(const char *name, int32 version);
extern bool weights_where(const char *name, int32 version, MemoryContext cxt, bytea **inline_w, uint64 *len);
extern uint64 stream_chunks(const char *name, int32 version, uint64 len, EmitFn emit, void *arg);

/* models.c */
extern void pepnet_lookup_ref(const char *name, int32 version, const PepnetTables *tables, PepnetRef *out);
extern PnModel *pepnet_load_model(const PepnetRef *ref, char *name, int32 *version);
extern PnModel *pepnet_load_layout(const PepnetRef *ref, char *name, int32 *version);
extern int32 pepnet_insert_version(const char *name, const char *config_json, const PnModel *model,
								   const char *metrics_json, int32 parent);
extern bytea *model_to_bytea(const PnModel *m);
extern int32 pepnet_store_model(const char *name, const PnModel *m, const char *metrics_json, int32 parent);
extern bool pepnet_read_only;
extern void pepnet_registry_init(void);
extern void pepnet_check_writable(const char *what);
extern void pepnet_require_writable(const char *what);
extern int64 pepnet_max_model_bytes(void);

/* cache.c */
extern void pepnet_cache_init(void);
extern void pepnet_resolve(const char *ref, PepnetRef *out);
extern PepnetEntry *pepnet_cache_get(const PepnetRef *ref);
extern PnDomainCache *pepnet_cache_domain(PepnetEntry *e, int domain);
extern PnEngine *pepnet_cache_engine(PepnetEntry *e, int precision, PnDomainCache *dc);
extern const PnPersona *pepnet_cache_persona(PepnetEntry *e, const int64 *persona);
extern void pepnet_check_precision(int precision);

/* score.c */
extern void pepnet_score_init(void);
extern struct ArrayType *scores_array(int T);

/*
 * A call site's model reference (both pepnet_predict forms keep one in
 * fn_extra): resolved once per statement, again only when the text changes.
 */
typedef struct PredictRef
{
	char	   *ref;			/* reference text resolved */
	PepnetRef	pr;				/* its version */
	LocalTransactionId lxid;	/* the statement it was resolved in */
	TimestampTz stmt_start;
} PredictRef;
extern bool pepnet_predict_resolve(PredictRef *p, MemoryContext mcxt, const char *ref);

/* scaleout.c */
extern void pepnet_pinned_init(void);

/* training.c */
extern void pepnet_training_init(void);

#endif							/* PEPNET_H */
