/*
 * plan.c
 *		The layer plan of a model (plan.h): made once per model from its
 *		config and tensor layout (pn_model_new, pn_model_layout), freed with
 *		it.  It is the one description of docs/model.md's forward pass that
 *		the paths execute: the x0 / pv layout (pn_gather_x0, pn_x0_domain,
 *		pn_persona_build_bags, training's embed_forward / embed_backward), the
 *		matmuls with their shapes and tensors (infer.c's GEMV forward, the
 *		engine's oneDNN tiles and its fallback, which merges the layers that
 *		read the same input, train.c's forward and backward) and the widths
 *		of the activations their workspaces hold.
 *
 * The layers in execution order:
 *
 *   EPNet 1    [dv ; x0] -> eh        relu
 *   EPNet 2    eh -> x                gamma * sigmoid, times x0
 *   for l = 1..L:
 *     tower (t, l), t = 0..T-1        a_(l-1) -> a_l (a_0 = xn), relu, STAR-fused
 *     PPNet l 1  [pv ; x] -> gh_l     relu
 *     PPNet l 2  gh_l -> g_l          gamma * sigmoid, times every task's a_l
 *   output t, t = 0..T-1              a_L -> logit_t, STAR-fused
 *   aux 1      [dv ; x0] -> ah        relu
 *   aux 2      ah -> logit +=
 *
 * (parts switched off have no layers; without EPNet x = x0, without PN xn = x).
 */
#include "pninternal.h"

/* Release a plan */
void
pn_plan_free(PnPlan *p)
{
	if (p == NULL)
		return;
	pn_free(p->x0seg);
	pn_free(p->pvseg);
	pn_free(p->layers);
	pn_free(p);
}

/* append a layer; its fields not given are none (-1 / 0) */
static PnLayer *
add_layer(PnPlan *p, PnPart part, int step, int task, int layer, PnAct in, int in_layer, PnAct pre, int npre,
		  int nin, int nout, int w, int b, int post, int mul, PnAct out)
{
	PnLayer    *ly = &p->layers[p->nlayers++];

	ly->part = part;
	ly->step = step;
	ly->task = task;
	ly->layer = layer;
	ly->in = in;
	ly->in_layer = in_layer;
	ly->pre = pre;
	ly->npre = npre;
	ly->nin = nin;
	ly->nout = nout;
	ly->ldw = npre + nin;
	ly->w = w;
	ly->b = b;
	ly->dw = -1;
	ly->db = -1;
	ly->post = post;
	ly->mul = mul;
	ly->out = out;
	ly->gate = -1;
	return ly;
}

/* The plan of model m (its config and tensor indexes) */
int
pn_plan_build(const PnModel *m, PnPlan **out, PnError *err)
{
	const PnConfig *c = &m->cfg;
	int			k = c->emb_dim,
				n0 = c->n0,
				T = c->ntasks,
				L = c->nhidden,
				i,
				t,
				l,
				off;
	PnPlan	   *p;

	*out = NULL;
	p = pn_alloc0(sizeof(PnPlan));
	if (p == NULL)
		return pn_seterr(err, PN_ENOMEM, "out of memory building the layer plan");
	p->x0seg = pn_alloc0(sizeof(PnSeg) * (c->nfeat + 2));
	p->pvseg = pn_alloc0(sizeof(PnSeg) * (c->npers + 1));
	p->layers = pn_alloc0(sizeof(PnLayer) * (4 + (size_t) T * (L + 1) + 2 * (size_t) L + 2));
	if (!p->x0seg || !p->pvseg || !p->layers)
	{
		pn_plan_free(p);
		return pn_seterr(err, PN_ENOMEM, "out of memory building the layer plan");
	}

	/* the input plan: x0 = [e_0 ; ... ; e_(F-1) ; dense (; dv)], pv = [p_0 ; ... ; p_(P-1)] */
	off = 0;
	for (i = 0; i < c->nfeat; i++)
	{
		PnSeg	   *s = &p->x0seg[p->nx0seg++];

		s->kind = c->feat[i].pooling != PN_POOL_NONE ? PN_SEG_BAG : PN_SEG_ID;
		s->field = i;
		s->table = m->t_emb_feat[i];
		s->off = off;
		s->width = k;
		off += k;
	}
	if (c->dense > 0)
	{
		PnSeg	   *s = &p->x0seg[p->nx0seg++];

		s->kind = PN_SEG_DENSE;
		s->field = -1;
		s->table = -1;
		s->off = off;
		s->width = c->dense;
		off += c->dense;
	}
	if (c->domain_input)
	{
		PnSeg	   *s = &p->x0seg[p->nx0seg++];

		s->kind = PN_SEG_DOMAIN;
		s->field = -1;
		s->table = m->t_emb_dom;
		s->off = off;
		s->width = k;
		off += k;
	}
	if (off != n0)
	{
		pn_plan_free(p);
		return pn_seterr(err, PN_ECONFIG, "the input segments cover %d columns, the model's input has %d", off, n0);
	}
	off = 0;
	for (i = 0; i < c->npers; i++)
	{
		PnSeg	   *s = &p->pvseg[p->npvseg++];

		s->kind = c->pers[i].pooling != PN_POOL_NONE ? PN_SEG_BAG : PN_SEG_ID;
		s->field = i;
		s->table = m->t_emb_pers[i];
		s->off = off;
		s->width = k;
		off += k;
	}

	/* the layers */
	if (c->epnet)
	{
		add_layer(p, PN_PART_EPNET, 1, -1, 0, PN_ACT_X0, 0, PN_ACT_DV, k, n0, c->epnet_hidden,
				  m->t_ep_w1, m->t_ep_b1, PN_POST_RELU, PN_MUL_NONE, PN_ACT_EH);
		add_layer(p, PN_PART_EPNET, 2, -1, 0, PN_ACT_EH, 0, PN_ACT_NONE, 0, c->epnet_hidden, n0,
				  m->t_ep_w2, m->t_ep_b2, PN_POST_GATE, PN_MUL_X0, PN_ACT_X);
	}
	for (l = 1; l <= L; l++)
	{
		int			h = c->hidden[l - 1],
					prev = l == 1 ? n0 : c->hidden[l - 2],
					first = p->nlayers;

		for (t = 0; t < T; t++)
		{
			int			x = PN_TW(c, t, l);
			PnLayer    *ly = add_layer(p, PN_PART_TOWER, 0, t, l, l == 1 ? PN_ACT_XN : PN_ACT_A, l - 1,
									   PN_ACT_NONE, 0, prev, h, m->t_tw_w[x], m->t_tw_b[x], PN_POST_RELU,
									   PN_MUL_NONE, PN_ACT_A);

			ly->dw = m->t_tw_dw[x];
			ly->db = m->t_tw_db[x];
		}
		if (c->ppnet)
		{
			add_layer(p, PN_PART_PPNET, 1, -1, l - 1, PN_ACT_X, 0, PN_ACT_PV, c->pk, n0, T * h,
					  m->t_pp_w1[l - 1], m->t_pp_b1[l - 1], PN_POST_RELU, PN_MUL_NONE, PN_ACT_GH);
			add_layer(p, PN_PART_PPNET, 2, -1, l - 1, PN_ACT_GH, l - 1, PN_ACT_NONE, 0, T * h, T * h,
					  m->t_pp_w2[l - 1], m->t_pp_b2[l - 1], PN_POST_GATE, PN_MUL_TOWER, PN_ACT_G);
			for (i = first; i < first + T; i++)
				p->layers[i].gate = p->nlayers - 1;
		}
	}
	for (t = 0; t < T; t++)
	{
		int			x = PN_TW(c, t, L + 1);
		PnLayer    *ly = add_layer(p, PN_PART_OUTPUT, 0, t, L + 1, PN_ACT_A, L, PN_ACT_NONE, 0, c->hidden[L - 1], 1,
								   m->t_tw_w[x], m->t_tw_b[x], PN_POST_NONE, PN_MUL_NONE, PN_ACT_LOGIT);

		ly->dw = m->t_tw_dw[x];
		ly->db = m->t_tw_db[x];
	}
	if (c->aux)
	{
		add_layer(p, PN_PART_AUX, 1, -1, 0, PN_ACT_X0, 0, PN_ACT_DV, k, n0, c->aux_hidden,
				  m->t_aux_w1, m->t_aux_b1, PN_POST_RELU, PN_MUL_NONE, PN_ACT_AH);
		add_layer(p, PN_PART_AUX, 2, -1, 0, PN_ACT_AH, 0, PN_ACT_NONE, 0, c->aux_hidden, T,
				  m->t_aux_w2, m->t_aux_b2, PN_POST_NONE, PN_MUL_NONE, PN_ACT_LOGIT);
	}

	/* the size table */
	p->hmax = pn_max_hidden(c);
	p->wide = T * p->hmax;
	p->width[PN_ACT_DV] = k;
	p->width[PN_ACT_PV] = c->pk;
	p->width[PN_ACT_X0] = n0;
	p->width[PN_ACT_IN_E] = k + n0;
	p->width[PN_ACT_EH] = c->epnet ? c->epnet_hidden : 0;
	p->width[PN_ACT_X] = n0;
	p->width[PN_ACT_XN] = n0;
	p->width[PN_ACT_IN_P] = c->pk + n0;
	p->width[PN_ACT_A] = p->wide;
	p->width[PN_ACT_GH] = c->ppnet ? p->wide : 0;
	p->width[PN_ACT_G] = c->ppnet ? p->wide : 0;
	p->width[PN_ACT_AH] = c->aux ? c->aux_hidden : 0;
	p->width[PN_ACT_LOGIT] = T;
	*out = p;
	return PN_OK;
}

int
pn_plan_find(const PnPlan *p, PnPart part, int step, int task, int layer)
{
	int			i;

	for (i = 0; i < p->nlayers; i++)
	{
		const PnLayer *ly = &p->layers[i];

		if (ly->part == part && ly->step == step && ly->task == task && ly->layer == layer)
			return i;
	}
	return -1;
}

int
pn_plan_readers(const PnPlan *p, PnAct in, int in_layer, int *idx)
{
	int			i,
				n = 0;

	for (i = 0; i < p->nlayers; i++)
	{
		const PnLayer *ly = &p->layers[i];

		if (ly->in != in)
			continue;
		if ((in == PN_ACT_A || in == PN_ACT_GH) && ly->in_layer != in_layer)
			continue;
		idx[n++] = i;
	}
	return n;
}
