/*
 * sigmoid8.h
 *		gamma * sigmoid(v) on 8 AVX2 lanes: pn_sigmoid_scale's operations
 *		(vmath.h) in its order.  PN_DEFINE_SIGMOID8(name, attrs) defines a
 *		static inline function with the given target attributes: gemm.c's
 *		with FMA allowed, quant.c's without FMA, so that nothing is contracted
 *		and the int8 epilogue's bits equal its scalar code.
 */
#ifndef PN_SIGMOID8_H
#define PN_SIGMOID8_H

#include <immintrin.h>

#define PN_DEFINE_SIGMOID8(name, attrs) \
static inline __attribute__((always_inline)) attrs __m256 \
name(__m256 v, __m256 gamma) \
{ \
	const __m256 one = _mm256_set1_ps(1.0f); \
	__m256		t, \
				fn, \
				r, \
				r2, \
				p, \
				scale; \
	__m256i		n; \
 \
	v = _mm256_max_ps(_mm256_set1_ps(-87.0f), v); \
	v = _mm256_min_ps(_mm256_set1_ps(87.0f), v); \
	v = _mm256_sub_ps(_mm256_setzero_ps(), v); \
	t = _mm256_mul_ps(v, _mm256_set1_ps(1.44269504088896341f)); \
	n = _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_blendv_ps(_mm256_set1_ps(-0.5f), _mm256_set1_ps(0.5f), \
															   _mm256_cmp_ps(t, _mm256_setzero_ps(), _CMP_GE_OQ)))); \
	fn = _mm256_cvtepi32_ps(n); \
	r = _mm256_add_ps(_mm256_sub_ps(v, _mm256_mul_ps(fn, _mm256_set1_ps(0.693359375f))), \
					  _mm256_mul_ps(fn, _mm256_set1_ps(2.12194440e-4f))); \
	r2 = _mm256_mul_ps(r, r); \
	p = _mm256_set1_ps(1.9875691500e-4f); \
	p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f)); \
	p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f)); \
	p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f)); \
	p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f)); \
	p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f)); \
	p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, r2), r), one); \
	scale = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23)); \
	return _mm256_div_ps(gamma, _mm256_add_ps(one, _mm256_mul_ps(p, scale))); \
}

#endif							/* PN_SIGMOID8_H */
