/*
 * vmath.h
 *		Vectorizable elementwise functions of the core: the logistic function
 *		over arrays (GateNU's gamma * sigmoid), built from a Cephes-style expf
 *		(relative error about 1e-7, i.e. float rounding) so that the compiler
 *		can vectorize the loops that glibc's scalar expf kept scalar.
 */
#ifndef PN_VMATH_H
#define PN_VMATH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* exp(x), |x| <= 87.3 (callers clamp); Cody-Waite reduction, degree-6 polynomial */
static inline float
pn_expf(float x)
{
	float		t = x * 1.44269504088896341f;
	int32_t		n = (int32_t) (t + (t >= 0.0f ? 0.5f : -0.5f));
	float		fn = (float) n;
	float		r = (x - fn * 0.693359375f) + fn * 2.12194440e-4f;
	float		r2 = r * r;
	float		p = 1.9875691500e-4f;
	int32_t		bits = (n + 127) << 23;
	float		scale;

	p = p * r + 1.3981999507e-3f;
	p = p * r + 8.3334519073e-3f;
	p = p * r + 4.1665795894e-2f;
	p = p * r + 1.6666665459e-1f;
	p = p * r + 5.0000001201e-1f;
	p = p * r2 + r + 1.0f;
	memcpy(&scale, &bits, sizeof(scale));
	return p * scale;
}

/* y[i] = gamma * sigmoid(y[i]) over an array */
static inline void
pn_sigmoid_scale(float *restrict y, size_t n, float gamma)
{
	size_t		i;

	for (i = 0; i < n; i++)
	{
		float		v = y[i];

		v = v < -87.0f ? -87.0f : (v > 87.0f ? 87.0f : v);
		y[i] = gamma / (1.0f + pn_expf(-v));
	}
}

/* y[i] = max(y[i], 0) */
static inline void
pn_relu(float *restrict y, size_t n)
{
	size_t		i;

	for (i = 0; i < n; i++)
		y[i] = y[i] > 0.0f ? y[i] : 0.0f;
}

#endif							/* PN_VMATH_H */
