/*
 * util.c
 *		What every file of the glue uses: raising the core's errors (one
 *		pepnet_report, with an optional row context), SQLSTATEs of core
 *		errors, model names, text in the server encoding, NULL arguments,
 *		interrupts, and the core's allocation hooks (palloc).
 *
 * Depends on nothing of pepnet's but the core (pncore.h).
 */
#include "pepnet.h"

#include "executor/spi.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "parser/scansup.h"
#include "postmaster/postmaster.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

/* Core allocations land in the current memory context; NULL on failure */
static void *
pepnet_core_alloc(size_t size)
{
	return MemoryContextAllocExtended(CurrentMemoryContext, size,
									  MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
}

/* Core frees are pfree */
static void
pepnet_core_free(void *ptr)
{
	pfree(ptr);
}

/*
 * The SQLSTATE of a core error: bad config or input 22023, a size limit
 * 54000, out of memory 53200, a non-finite value in training 22P01;
 * malformed weights format_code (22P03 for input, XX001 for stored), any
 * other failure (the engine's) other_code.
 */
int
pepnet_sqlstate(const PnError *err, int format_code, int other_code)
{
	switch (err->code)
	{
		case PN_ECONFIG:
		case PN_EINPUT:
			return ERRCODE_INVALID_PARAMETER_VALUE;
		case PN_EFORMAT:
			return format_code;
		case PN_ETOOBIG:
			return ERRCODE_PROGRAM_LIMIT_EXCEEDED;
		case PN_ENOMEM:
			return ERRCODE_OUT_OF_MEMORY;
		case PN_ENUMERIC:
			return ERRCODE_FLOATING_POINT_EXCEPTION;
		default:
			return other_code;
	}
}

/*
 * Raise a core error as an ERROR with a fitting SQLSTATE.  format_code is
 * the SQLSTATE for malformed weights (22P03 for input, XX001 for stored).
 */
void
pepnet_report(PnError *err, int format_code)
{
	pepnet_report_rows(err, format_code, ERRCODE_INTERNAL_ERROR, NULL, NULL);
}

/*
 * Raise a core error: pepnet_sqlstate's code (other_code for the engine's
 * failures), message and detail in the server encoding, an optional hint.
 * The row the core blames is named by rowctx where given (an error context
 * callback that names a row of a query, pushed here), else as a candidate
 * of the request.
 */
void
pepnet_report_rows(PnError *err, int format_code, int other_code, const char *hint,
				   ErrorContextCallback *rowctx)
{
	int			code = pepnet_sqlstate(err, format_code, other_code);

	if (rowctx)
	{
		rowctx->previous = error_context_stack;
		error_context_stack = rowctx;
	}
	ereport(ERROR,
			(errcode(code),
			 errmsg("%s", (pepnet_fix_encoding(err->msg), err->msg)),
			 err->detail[0] ? errdetail("%s", (pepnet_fix_encoding(err->detail), err->detail)) : 0,
			 hint ? errhint("%s", hint) : 0,
			 (err->row >= 0 && rowctx == NULL) ?
			 errcontext("candidate %lld of the request", (long long) err->row + 1) : 0));
}

/* CHECK_FOR_INTERRUPTS for the core's long loops (the engine calls it once per tile) */
void
pepnet_interrupt_check(void)
{
	CHECK_FOR_INTERRUPTS();
}

/* Error for a NULL argument */
void
pepnet_null_arg(const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
			 errmsg("%s must not be NULL", what)));
}

/* A model name: 1 to 63 characters (not bytes), no '@' */
void
pepnet_check_name(const char *name)
{
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name must not be empty")));
	if (strchr(name, '@') != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("model name \"%s\" must not contain \"@\"", name),
				 errhint("\"@\" separates a name from a version in a model reference, as in 'ctr@7'.")));
	if (strlen(name) >= PEPNET_NAMELEN || pg_mbstrlen(name) > PEPNET_NAME_MAXCHARS)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("model name \"%s\" is longer than %d characters", pepnet_clip(name, 20), PEPNET_NAME_MAXCHARS)));
}

/*
 * s cut to at most maxchars characters of the server encoding, on a
 * character boundary, with "..." appended when cut (s itself if short).
 */
const char *
pepnet_clip(const char *s, int maxchars)
{
	int			len = strlen(s);
	int			cut = pg_mbcharcliplen(s, len, maxchars);
	char	   *r;

	if (cut >= len)
		return s;
	r = palloc(cut + 4);
	memcpy(r, s, cut);
	strcpy(r + cut, "...");
	return r;
}

/*
 * Make a message valid in the server encoding, in place: each byte that
 * does not start a valid character becomes '?'.  The core cuts its strings
 * on UTF-8 boundaries and quotes bytes from user input (safetensors
 * headers), so this is a backstop: a client whose encoding differs must
 * get the real error, not an encoding-conversion error (22021).
 */
void
pepnet_fix_encoding(char *s)
{
	int			enc = GetDatabaseEncoding();
	int			len = strlen(s);

	while (len > 0)
	{
		int			l = pg_encoding_verifymbchar(enc, s, len);

		if (l <= 0)
		{
			*s = '?';
			l = 1;
		}
		s += l;
		len -= l;
	}
}

/*
 * A name of a config (what names it in the message) with more than
 * PN_MAX_NAME - 1 bytes of UTF-8: PN_ECONFIG in err, as the core reports a
 * name of too many bytes.  The core counts the bytes it is given, which
 * are the server encoding's; a name of 63 bytes of a single-byte encoding
 * (LATIN1: 'é' is one byte, two in UTF-8) can be longer in UTF-8.
 */
static int
name_utf8(const char *name, const char *what, PnError *err)
{
	int			len = strlen(name),
				enc = GetDatabaseEncoding(),
				u;
	char	   *conv;

	if (len == 0 || enc == PG_UTF8 || enc == PG_SQL_ASCII)
		return PN_OK;			/* the core's count is UTF-8's (SQL_ASCII: bytes, unconverted) */
	conv = pg_server_to_any(name, len, PG_UTF8);
	u = strlen(conv);
	if (conv != name)
		pfree(conv);
	if (u < PN_MAX_NAME)
		return PN_OK;
	pn_seterr(err, PN_ECONFIG, "config %s \"%s\" must have 1 to %d bytes (UTF-8)", what,
			  pepnet_clip(name, 30), PN_MAX_NAME - 1);
	pn_setdetail(err, "It has %d bytes in UTF-8 (%d in the database's encoding %s). Names count bytes of UTF-8, "
				 "as the Python package and a UTF-8 database count them, so that a model moves between databases "
				 "of any encoding.", u, len, GetDatabaseEncodingName());
	return PN_ECONFIG;
}

/*
 * pn_config_parse of a config's JSON text (in the server encoding) with
 * the limit max_bytes, and every name of the config (fields' and their
 * weights columns, dense fields', "domain_column", tasks) at most 63 bytes
 * of UTF-8 in any database encoding (docs/model.md).  On an error cfg is
 * freed and err says why (PN_ECONFIG for a name, as the core's).
 */
int
pepnet_config_parse(const char *text, int64 max_bytes, PnConfig *cfg, PnError *err)
{
	char		what[96];
	int			rc = pn_config_parse(text, strlen(text), max_bytes, cfg, err),
				i;

	if (rc != PN_OK)
		return rc;
	for (i = 0; rc == PN_OK && i < cfg->nfeat + cfg->npers; i++)
	{
		const PnField *f = i < cfg->nfeat ? &cfg->feat[i] : &cfg->pers[i - cfg->nfeat];
		const char *key = i < cfg->nfeat ? "features" : "persona";
		int			j = i < cfg->nfeat ? i : i - cfg->nfeat;

		snprintf(what, sizeof(what), "\"%s\"[%d].name", key, j);
		rc = name_utf8(f->name, what, err);
		snprintf(what, sizeof(what), "\"%s\"[%d].weights", key, j);
		if (rc == PN_OK)
			rc = name_utf8(f->weights, what, err);
	}
	for (i = 0; rc == PN_OK && cfg->dfield != NULL && i < cfg->dense; i++)
	{
		snprintf(what, sizeof(what), "\"dense\"[%d].name", i);
		rc = name_utf8(cfg->dfield[i].name, what, err);
	}
	if (rc == PN_OK)
		rc = name_utf8(cfg->domain_column, "\"domain_column\"", err);
	for (i = 0; rc == PN_OK && i < cfg->ntasks; i++)
		rc = name_utf8(cfg->tasks[i], "task name", err);
	if (rc != PN_OK)
		pn_config_free(cfg);
	return rc;
}

/* Point the core's allocations at palloc; called by _PG_init */
void
pepnet_util_init(void)
{
	pn_alloc_hook = pepnet_core_alloc;
	pn_free_hook = pepnet_core_free;
}

/*
 * Is the statement being run COPY [pepnet.]table ... (pg_restore loading
 * data, which brings its own history)?
 */
bool
pepnet_copy_into(const char *table)
{
	const char *q = debug_query_string;
	size_t		n = strlen(table);

	if (q == NULL)
		return false;
	while (scanner_isspace(*q))
		q++;
	if (pg_strncasecmp(q, "copy", 4) != 0 || !scanner_isspace(q[4]))
		return false;
	q += 4;
	while (scanner_isspace(*q))
		q++;
	if (pg_strncasecmp(q, "pepnet.", 7) == 0)
		q += 7;
	else if (strncmp(q, "\"pepnet\".", 9) == 0)
		q += 9;
	if (*q == '"')
		q++;
	return pg_strncasecmp(q, table, n) == 0 &&
		(q[n] == '\0' || q[n] == '"' || q[n] == '(' || q[n] == ';' || scanner_isspace(q[n]));
}

/* SPI_connect, or an ERROR */
void
pepnet_spi_connect(void)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

/* This node's name in messages: cluster_name, else the port */
char *
node_label(void)
{
	const char *cn = GetConfigOption("cluster_name", true, false);

	if (cn && cn[0])
		return psprintf("\"%s\"", cn);
	return psprintf("on port %d", PostPortNumber);
}
