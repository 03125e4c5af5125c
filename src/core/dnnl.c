/*
 * dnnl.c
 *		oneDNN's process-wide objects for the core: the CPU engine and its
 *		stream (one of each, shared by the scoring engine and the trainer),
 *		thread pinning, and the brgemm-only filter of matmul primitives.
 */
#include "pncore.h"
#include "pndnnl.h"

#include <omp.h>
#include <string.h>

/*
 * oneDNN's process-wide primitive cache (1024 by default) keeps the JIT code
 * of primitives after their version left pepnet's cache; the engine and the
 * trainer hold their own primitives, so a few model shapes' worth is enough
 */
#define PN_PRIMITIVE_CACHE 128

dnnl_engine_t pn_dnnl_engine = NULL;
dnnl_stream_t pn_dnnl_stream = NULL;

void
pn_dnnl_pin_threads(void)
{
	omp_set_num_threads(1);
}

int
pn_dnnl_init(PnError *err)
{
	if (pn_dnnl_engine)
		return PN_OK;
	pn_dnnl_pin_threads();
	dnnl_set_primitive_cache_capacity(PN_PRIMITIVE_CACHE);
	if (dnnl_engine_create(&pn_dnnl_engine, dnnl_cpu, 0) != dnnl_success)
	{
		pn_dnnl_engine = NULL;
		return pn_seterr(err, PN_EENGINE, "could not create the oneDNN CPU engine");
	}
	if (dnnl_stream_create(&pn_dnnl_stream, pn_dnnl_engine, dnnl_stream_default_flags) != dnnl_success)
	{
		dnnl_engine_destroy(pn_dnnl_engine);
		pn_dnnl_engine = NULL;
		pn_dnnl_stream = NULL;
		return pn_seterr(err, PN_EENGINE, "could not create a oneDNN stream");
	}
	return PN_OK;
}

bool		pn_dnnl_any_impl = false;

bool
pn_dnnl_is_brgemm(const_dnnl_primitive_desc_t pd, const char **impl)
{
	*impl = NULL;
	return dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, impl) == dnnl_success &&
		*impl != NULL && (pn_dnnl_any_impl || strncmp(*impl, "brg", 3) == 0);
}
