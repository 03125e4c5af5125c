/*
 * plan.h
 *		The layer plan of a model (plan.c): the one description of the
 *		forward pass of docs/model.md that every path reads, made once per
 *		model from its config and tensor layout (PnModel.plan):
 *
 *		- the input plan: the segments of x0 in order (each feature field,
 *		  one id or a pooled bag; the dense block; the domain_input tail) and
 *		  of pv (each persona field), the one place their layout is defined;
 *		- the layer list: every matmul of the forward pass in execution
 *		  order with its part, its input activation, widths, tensors, post-op
 *		  and the gate that multiplies its output;
 *		- the size table: every activation's width per row.
 */
#ifndef PN_PLAN_H
#define PN_PLAN_H

#include "pncore.h"

/* a segment of x0 or pv */
#define PN_SEG_ID 0				/* a field of one id: the embedding row */
#define PN_SEG_BAG 1			/* a multi-valued field: its pooled bag (bag.c) */
#define PN_SEG_DENSE 2			/* the dense values */
#define PN_SEG_DOMAIN 3			/* domain_input: the domain embedding dv */

typedef struct PnSeg
{
	int			kind;			/* PN_SEG_* */
	int			field;			/* index of the feature / persona field (ID, BAG), else -1 */
	int			table;			/* tensor of its embedding table (ID, BAG, DOMAIN), else -1 */
	int			off;			/* first column */
	int			width;			/* columns: k, or Nd for the dense block */
} PnSeg;

/* the activations of the forward pass (per row), indexes of the size table */
typedef enum PnAct
{
	PN_ACT_NONE = -1,
	PN_ACT_DV = 0,				/* [k] the domain embedding */
	PN_ACT_PV,					/* [P*k] the persona embeddings */
	PN_ACT_X0,					/* [n0] the input */
	PN_ACT_IN_E,				/* [k + n0] = [dv ; x0]: EPNet's gate and aux's input */
	PN_ACT_EH,					/* [he] EPNet's gate hidden */
	PN_ACT_X,					/* [n0] EPNet's output */
	PN_ACT_XN,					/* [n0] PN's output */
	PN_ACT_IN_P,				/* [P*k + n0] = [pv ; x]: the PPNet gates' input */
	PN_ACT_A,					/* [T h_l] tower layer l of every task (widest l) */
	PN_ACT_GH,					/* [T h_l] gate l's hidden (widest l) */
	PN_ACT_G,					/* [T h_l] gate l (widest l) */
	PN_ACT_AH,					/* [ha] aux hidden */
	PN_ACT_LOGIT,				/* [T] */
	PN_ACT_COUNT
} PnAct;

/* the parts of the model a layer belongs to */
typedef enum PnPart
{
	PN_PART_EPNET,				/* step 1: eh = relu(W1 [dv ; x0] + b1), 2: x = gate(W2 eh + b2) ⊙ x0 */
	PN_PART_TOWER,				/* task's hidden layer l = 1..L */
	PN_PART_OUTPUT,				/* task's output layer (l = L + 1, width 1) */
	PN_PART_PPNET,				/* gate l (0-based), step 1: relu(W1 [pv ; x] + b1), 2: gate(W2 gh + b2) */
	PN_PART_AUX					/* step 1: relu(V1 [dv ; x0] + e1), 2: V2 ah + e2 added to the logits */
} PnPart;

/* a layer's post-op (the values of pn_gemm_panels' PN_EPI_*, which the fallback passes on) */
#define PN_POST_NONE 0
#define PN_POST_RELU 1
#define PN_POST_GATE 2			/* gamma * sigmoid (PN_EPI_GATE: and times its mul input) */

/* what a layer's output multiplies (after its post-op) */
#define PN_MUL_NONE 0
#define PN_MUL_X0 1				/* EPNet step 2: times x0 */
#define PN_MUL_TOWER 2			/* PPNet step 2 of gate l: times tower layer l + 1 of every task */

typedef struct PnLayer
{
	PnPart		part;
	int			step;			/* EPNet, PPNet, aux: 1 or 2; towers: 0 */
	int			task;			/* towers and outputs: the task, else -1 */
	int			layer;			/* towers: 1..L (output L + 1); PPNet: the gate 0..L-1; else 0 */
	PnAct		in;				/* the activation read (past the prefix) */
	int			in_layer;		/* in = PN_ACT_A / PN_ACT_GH: its layer (1-based tower layer, 0-based gate) */
	PnAct		pre;			/* the activation concatenated before in (DV or PV), PN_ACT_NONE */
	int			npre;			/* its width: the weight's first npre columns (a bias at inference) */
	int			nin;			/* width of in: the weight's columns past the prefix */
	int			nout;			/* output width (rows of the weight) */
	int			ldw;			/* columns of the weight tensor = npre + nin */
	int			w,
				b;				/* shared weight and bias tensors */
	int			dw,
				db;				/* STAR domain parts [D, nout, nin], [D, nout]; -1 */
	int			post;			/* PN_POST_* */
	int			mul;			/* PN_MUL_* */
	PnAct		out;			/* the activation written (towers: PN_ACT_A of layer) */
	int			gate;			/* a tower hidden layer with PPNet: the plan index of the gate (step 2) that multiplies it, else -1 */
} PnLayer;

struct PnPlan
{
	int			nx0seg;			/* x0's segments, tiling [0, n0) in order */
	PnSeg	   *x0seg;
	int			npvseg;			/* pv's segments, tiling [0, P*k) */
	PnSeg	   *pvseg;
	int			nlayers;		/* every matmul, in execution order (see plan.c) */
	PnLayer    *layers;
	int			width[PN_ACT_COUNT];	/* the size table: floats per row of each activation */
	int			hmax;			/* the widest tower layer */
	int			wide;			/* T * hmax */
};

int			pn_plan_build(const PnModel *m, PnPlan **out, PnError *err);
void		pn_plan_free(PnPlan *p);
/* the plan index of a layer by part, step, task and layer; -1 when the model has none */
int			pn_plan_find(const PnPlan *p, PnPart part, int step, int task, int layer);
/*
 * The layers that read activation `in` (and, for PN_ACT_A / PN_ACT_GH,
 * its layer in_layer; else ignored), in plan order, into idx (room for
 * p->nlayers); returns their number.  The engine's fallback merges them
 * into one matmul over the input.
 */
int			pn_plan_readers(const PnPlan *p, PnAct in, int in_layer, int *idx);
/* the plan's layer i */
#define PN_LAYER(m, i) (&(m)->plan->layers[i])

#endif							/* PN_PLAN_H */
