// attnlab's CUDA kernels for the graph package's ops (graph/op_cuda.go
// launches them by name). float32 only; one thread per element unless a
// kernel says otherwise. Compiled to PTX by scripts/gen-ptx.sh into
// graph/ptx_cuda.go (committed, so a build needs no nvcc).

// Exact GELU, as graph.Activate: y = x/2 (1 + erf(x / sqrt 2)).
extern "C" __global__ void gelu_f32(const float *x, float *y, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		float v = x[i];
		y[i] = 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
	}
}

// dx = dy (Phi(x) + x phi(x)).
extern "C" __global__ void gelu_grad_f32(const float *x, const float *dy, float *dx, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		float v = x[i];
		float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
		float pdf = expf(-0.5f * v * v) * 0.39894228040143268f;
		dx[i] = dy[i] * (cdf + v * pdf);
	}
}

// ReLU, as graph.Activate: max(x, 0), NaN kept.
extern "C" __global__ void relu_f32(const float *x, float *y, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		float v = x[i];
		y[i] = (v > 0.0f || v != v) ? v : 0.0f;
	}
}

extern "C" __global__ void relu_grad_f32(const float *x, const float *dy, float *dx, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
	}
}

// y[0:n] = 0.
extern "C" __global__ void zero_f32(float *y, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		y[i] = 0.0f;
	}
}

// The sum of v over the block, returned to every thread. blockDim.x is a
// multiple of 32, at most 1024; shm holds 32 floats. Every thread of the
// block must call it.
__device__ float block_sum(float v, float *shm) {
	for (int o = 16; o > 0; o >>= 1) {
		v += __shfl_xor_sync(0xffffffff, v, o);
	}
	__syncthreads(); // shm may still be read from the previous call
	if ((threadIdx.x & 31) == 0) {
		shm[threadIdx.x >> 5] = v;
	}
	__syncthreads();
	if (threadIdx.x < 32) {
		v = threadIdx.x < (blockDim.x >> 5) ? shm[threadIdx.x] : 0.0f;
		for (int o = 16; o > 0; o >>= 1) {
			v += __shfl_xor_sync(0xffffffff, v, o);
		}
		if (threadIdx.x == 0) {
			shm[0] = v;
		}
	}
	__syncthreads();
	return shm[0];
}

// The mean (0 unless centered: RMSNorm) and the inverse standard deviation
// (root mean square for RMSNorm) of the row xr of length d, eps inside the
// square root, as graph.rowStats.
__device__ void row_stats(const float *xr, int d, float eps, int centered, float *shm, float *mean, float *rstd) {
	float m = 0.0f;
	if (centered) {
		float s = 0.0f;
		for (int j = threadIdx.x; j < d; j += blockDim.x) {
			s += xr[j];
		}
		m = block_sum(s, shm) / d;
	}
	float q = 0.0f;
	for (int j = threadIdx.x; j < d; j += blockDim.x) {
		float c = xr[j] - m;
		q += c * c;
	}
	*mean = m;
	*rstd = 1.0f / sqrtf(block_sum(q, shm) / d + eps);
}

// LayerNorm (centered, beta given) or RMSNorm (beta null) of x [n, d]:
// y = (x - mean) rstd gamma (+ beta). One block per row.
extern "C" __global__ void norm_f32(const float *x, const float *gamma, const float *beta, float *y, int n, int d, float eps, int centered) {
	__shared__ float shm[32];
	const float *xr = x + (size_t)blockIdx.x * d;
	float *yr = y + (size_t)blockIdx.x * d;
	float mean, rstd;
	row_stats(xr, d, eps, centered, shm, &mean, &rstd);
	for (int j = threadIdx.x; j < d; j += blockDim.x) {
		float v = (xr[j] - mean) * rstd * gamma[j];
		yr[j] = beta ? v + beta[j] : v;
	}
}

// dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma, xhat = (x -
// mean) rstd; mean(g) is dropped for RMSNorm. One block per row.
extern "C" __global__ void norm_grad_x_f32(const float *x, const float *gamma, const float *dy, float *dx, int n, int d, float eps, int centered) {
	__shared__ float shm[32];
	size_t off = (size_t)blockIdx.x * d;
	const float *xr = x + off, *gr = dy + off;
	float mean, rstd;
	row_stats(xr, d, eps, centered, shm, &mean, &rstd);
	float sg = 0.0f, sgx = 0.0f;
	for (int j = threadIdx.x; j < d; j += blockDim.x) {
		float g = gr[j] * gamma[j];
		sg += g;
		sgx += g * (xr[j] - mean) * rstd;
	}
	sg = centered ? block_sum(sg, shm) / d : 0.0f;
	sgx = block_sum(sgx, shm) / d;
	for (int j = threadIdx.x; j < d; j += blockDim.x) {
		float g = gr[j] * gamma[j];
		float xhat = (xr[j] - mean) * rstd;
		dx[off + j] = rstd * (g - sg - xhat * sgx);
	}
}

// dgamma += sum over rows of dy xhat, for the rows_per_block rows of this
// block (dgamma zeroed first by zero_f32): each thread keeps its columns'
// partial sums in dynamic shared memory (d floats), then adds them into
// dgamma atomically.
extern "C" __global__ void norm_grad_gamma_f32(const float *x, const float *dy, float *dgamma, int n, int d, float eps, int centered, int rows_per_block) {
	__shared__ float shm[32];
	extern __shared__ float part[];
	for (int j = threadIdx.x; j < d; j += blockDim.x) {
		part[j] = 0.0f;
	}
	int r0 = blockIdx.x * rows_per_block;
	int r1 = min(n, r0 + rows_per_block);
	for (int r = r0; r < r1; r++) {
		const float *xr = x + (size_t)r * d, *gr = dy + (size_t)r * d;
		float mean, rstd;
		row_stats(xr, d, eps, centered, shm, &mean, &rstd);
		for (int j = threadIdx.x; j < d; j += blockDim.x) {
			part[j] += gr[j] * (xr[j] - mean) * rstd;
		}
	}
	for (int j = threadIdx.x; j < d; j += blockDim.x) {
		atomicAdd(&dgamma[j], part[j]);
	}
}

// y [d] = the sum of the rows of x [n, d]: one thread per column.
extern "C" __global__ void col_sum_f32(const float *x, float *y, int n, int d) {
	int j = blockIdx.x * blockDim.x + threadIdx.x;
	if (j < d) {
		float s = 0.0f;
		for (int r = 0; r < n; r++) {
			s += x[(size_t)r * d + j];
		}
		y[j] = s;
	}
}

// y [n/d, d] = b [d] in every row (n = rows x d): Linear's bias, onto
// which cuBLAS then accumulates x W.
extern "C" __global__ void rows_copy_f32(const float *b, float *y, int n, int d) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		y[i] = b[i % d];
	}
}

// table_row sets *id to the row the float id f names and reports whether
// it is one: an integer in [0, v), as the CPU op requires.
__device__ bool table_row(float f, int v, int *id) {
	*id = (int)f;
	return f == (float)*id && *id >= 0 && *id < v;
}

// out [n, d] = table [v, d] rows picked by ids [n] (float ids, as the CPU
// op): one thread per output element. An id that is not an integer in
// [0, v) gives a row of NaN (the CPU op returns an error; here the loss
// turns NaN and training stops naming the step).
extern "C" __global__ void embedding_f32(const float *ids, const float *table, float *out, int n, int v, int d) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (e >= (long long)n * d) {
		return;
	}
	int id;
	out[e] = table_row(ids[e / d], v, &id) ? table[(long long)id * d + e % d] : __int_as_float(0x7fc00000);
}

// dtable [v, d] += dy's rows scattered by ids (dtable zeroed first by
// zero_f32): one thread per element of dy, added atomically (ids repeat).
extern "C" __global__ void embedding_grad_f32(const float *ids, const float *dy, float *dtable, int n, int v, int d) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (e >= (long long)n * d) {
		return;
	}
	int id;
	if (table_row(ids[e / d], v, &id)) {
		atomicAdd(&dtable[(long long)id * d + e % d], dy[e]);
	}
}

// dst[0:n] = src[0:n]: Slice and View (src offset by the caller), Place
// (dst offset, after zero_f32).
extern "C" __global__ void copy_f32(const float *src, float *dst, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		dst[i] = src[i];
	}
}

// The maximum of v over the block, returned to every thread, as block_sum.
__device__ float block_max(float v, float *shm) {
	for (int o = 16; o > 0; o >>= 1) {
		v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
	}
	__syncthreads();
	if ((threadIdx.x & 31) == 0) {
		shm[threadIdx.x >> 5] = v;
	}
	__syncthreads();
	if (threadIdx.x < 32) {
		v = threadIdx.x < (blockDim.x >> 5) ? shm[threadIdx.x] : -INFINITY;
		for (int o = 16; o > 0; o >>= 1) {
			v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
		}
		if (threadIdx.x == 0) {
			shm[0] = v;
		}
	}
	__syncthreads();
	return shm[0];
}

// The logsumexp of the row z [v], the maximum subtracted (as
// graph.crossEntropy), returned to every thread of the block.
__device__ float row_lse(const float *z, int v, float *shm) {
	float mx = -INFINITY;
	for (int j = threadIdx.x; j < v; j += blockDim.x) {
		mx = fmaxf(mx, z[j]);
	}
	mx = block_max(mx, shm);
	float s = 0.0f;
	for (int j = threadIdx.x; j < v; j += blockDim.x) {
		s += expf(z[j] - mx);
	}
	return mx + logf(block_sum(s, shm));
}

// The sum of x [n] over one block, returned to every thread.
__device__ float block_total(const float *x, int n, float *shm) {
	float s = 0.0f;
	for (int i = threadIdx.x; i < n; i += blockDim.x) {
		s += x[i];
	}
	return block_sum(s, shm);
}

// dst[0] = the sum of x [n]: one block.
extern "C" __global__ void sum_f32(const float *x, float *dst, int n) {
	__shared__ float shm[32];
	float s = block_total(x, n, shm);
	if (threadIdx.x == 0) {
		dst[0] = s;
	}
}

// loss[0] += w_i (logsumexp(z_i) - z_i[t_i]) for the row i of this block,
// logits z [n, v], targets t and weights w [n] (loss zeroed first; rows of
// weight 0 add nothing; a target that is not a class id adds NaN, where
// the CPU op returns an error). sce_finish_f32 then divides by sum w.
extern "C" __global__ void sce_loss_rows_f32(const float *logits, const float *targets, const float *weights, float *loss, int n, int v) {
	__shared__ float shm[32];
	int i = blockIdx.x;
	float w = weights[i];
	if (w == 0.0f) {
		return; // the whole block: no barrier is skipped by part of it
	}
	const float *z = logits + (size_t)i * v;
	float lse = row_lse(z, v, shm);
	if (threadIdx.x == 0) {
		int t;
		float term = table_row(targets[i], v, &t) ? w * (lse - z[t]) : __int_as_float(0x7fc00000);
		atomicAdd(loss, term);
	}
}

// loss[0] = loss[0] / sum w, or 0 when no row is scored: one block.
extern "C" __global__ void sce_finish_f32(const float *weights, float *loss, int n) {
	__shared__ float shm[32];
	float s = block_total(weights, n, shm);
	if (threadIdx.x == 0) {
		loss[0] = s == 0.0f ? 0.0f : loss[0] / s;
	}
}

// grad_i = g w_i / W (softmax(z_i) - onehot(t_i)) for the row i = first +
// blockIdx.x, W = sum w, which sum_f32 left in grad[0]: the rows from 1 on
// are written first (first = 1), then row 0 (first = 0, one block), whose
// threads all read W before any writes it.
extern "C" __global__ void sce_grad_rows_f32(const float *logits, const float *targets, const float *weights, const float *g, float *grad, int first, int v) {
	__shared__ float shm[32];
	int i = first + blockIdx.x;
	float wsum = grad[0];
	__syncthreads();
	float w = weights[i];
	float *out = grad + (size_t)i * v;
	if (w == 0.0f || wsum == 0.0f) {
		for (int j = threadIdx.x; j < v; j += blockDim.x) {
			out[j] = 0.0f;
		}
		return;
	}
	const float *z = logits + (size_t)i * v;
	float lse = row_lse(z, v, shm);
	float scale = g[0] * w / wsum;
	int t;
	bool ok = table_row(targets[i], v, &t);
	for (int j = threadIdx.x; j < v; j += blockDim.x) {
		float p = expf(z[j] - lse) * scale;
		out[j] = !ok ? __int_as_float(0x7fc00000) : (j == t ? p - scale : p);
	}
}

// out[0] += the scored rows (w_i != 0) whose highest logit (ties: the
// lowest class) is t_i, out[1] += the scored rows: one thread per row, out
// zeroed first (graph.Accuracy).
extern "C" __global__ void correct_count_f32(const float *logits, const float *targets, const float *weights, float *out, int n, int v) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n || weights[i] == 0.0f) {
		return;
	}
	const float *z = logits + (size_t)i * v;
	int best = 0;
	for (int j = 1; j < v; j++) {
		if (z[j] > z[best]) {
			best = j;
		}
	}
	if ((float)best == targets[i]) {
		atomicAdd(&out[0], 1.0f);
	}
	atomicAdd(&out[1], 1.0f);
}

// out[0] = NaN when loss[0] is not finite: a step whose loss is NaN or
// infinite makes no update (adamw_f32), as on the CPU.
extern "C" __global__ void nonfinite_f32(const float *loss, float *out) {
	if (threadIdx.x == 0 && !isfinite(loss[0])) {
		out[0] = __int_as_float(0x7fc00000);
	}
}

// One AdamW step (Loshchilov & Hutter 2019) of w [n] in place with its
// gradient g and moments m, v, as train.adamw: the gradient scaled by
// clip / |g| when the global norm |g| = sqrt(sqnorm[0]) exceeds clip > 0;
// m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; w -= lr (wd w + (m/c1) /
// (sqrt(v/c2) + eps)). hyper = [lr, b1, b2, eps, c1, c2, clip] (c1, c2 the
// bias corrections of this step). Nothing changes when sqnorm is not
// finite. One thread per element.
extern "C" __global__ void adamw_f32(float *w, const float *g, float *m, float *v, const float *sqnorm, const float *hyper, float wd, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	float sq = sqnorm[0];
	if (i >= n || !isfinite(sq)) {
		return;
	}
	float lr = hyper[0], b1 = hyper[1], b2 = hyper[2], eps = hyper[3], c1 = hyper[4], c2 = hyper[5], clip = hyper[6];
	float norm = sqrtf(sq);
	float scale = (clip > 0.0f && norm > clip) ? clip / norm : 1.0f;
	float gi = g[i] * scale;
	float mi = b1 * m[i] + (1.0f - b1) * gi;
	float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
	m[i] = mi;
	v[i] = vi;
	float x = w[i];
	w[i] = x - lr * (wd * x + (mi / c1) / (sqrtf(vi / c2) + eps));
}

// out[0] += sum of x [n] times r [n]: grid-stride blocks adding their
// partial sums atomically (out zeroed first).
extern "C" __global__ void dot_f32(const float *x, const float *r, float *out, int n) {
	__shared__ float shm[32];
	float s = 0.0f;
	for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
		s += x[i] * r[i];
	}
	s = block_sum(s, shm);
	if (threadIdx.x == 0) {
		atomicAdd(out, s);
	}
}

// y [n] = x [n] times the scalar g[0].
extern "C" __global__ void scale_by_f32(const float *x, const float *g, float *y, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		y[i] = x[i] * g[0];
	}
}

// Rotary positions (RoPE, partial RoPE, xPos) as graph.Rotary: out [rows,
// heads*head_dim] from x, each head's pair (2i, 2i+1) of the first rot_dims
// dimensions at position n = row % seq_len rotated by n base^(-2i/rot_dims)
// (the opposite angle when transpose: the gradient), scaled by xPos's
// zeta_i^((n - seq_len/2)/xpos_base), zeta_i = (2i/rot_dims + gamma) / (1 +
// gamma) (its inverse for keys) when xpos_base
// > 0; the other dimensions copied. The factors are computed in double, as
// the CPU op's table, then rounded to float. One thread per element.
extern "C" __global__ void rotary_f32(const float *x, float *out, int rows, int seq_len, int heads, int head_dim, int rot_dims,
                                      double base, double xpos_base, double gamma, int query, int transpose) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	int width = heads * head_dim;
	if (e >= (long long)rows * width) {
		return;
	}
	int col = (int)(e % width), j = col % head_dim;
	if (j >= rot_dims) {
		out[e] = x[e];
		return;
	}
	int n = (int)((e / width) % seq_len), i = j / 2;
	double theta = pow(base, -2.0 * i / rot_dims);
	double scale = 1.0;
	if (xpos_base > 0) {
		double zeta = (2.0 * i / rot_dims + gamma) / (1.0 + gamma);
		double power = ((double)n - (double)(seq_len / 2)) / xpos_base;
		scale = pow(zeta, query ? power : -power);
	}
	float c = (float)(scale * cos((double)n * theta));
	float s = (float)(scale * sin((double)n * theta));
	if (transpose) {
		s = -s;
	}
	long long p = e - (j & 1); // the pair's first element
	float a = x[p], b = x[p + 1];
	out[e] = (j & 1) ? a * s + b * c : a * c - b * s;
}

// out [n] = alpha a + beta b (graph.Combine): one thread per element.
extern "C" __global__ void combine_f32(const float *a, const float *b, float *out, float alpha, float beta, int n) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) {
		out[i] = alpha * a[i] + beta * b[i];
	}
}

// out [n, heads*(da+db)]: head h of row r is [a_h ; b_h'], h' = h, or 0
// when hb = 1 (graph.ConcatHeads: a [n, heads*da], b [n, hb*db]). One
// thread per output element.
extern "C" __global__ void concat_heads_f32(const float *a, const float *b, float *out, int n, int heads, int da, int hb, int db) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	int w = heads * (da + db);
	if (e >= (long long)n * w) {
		return;
	}
	long long r = e / w;
	int c = (int)(e % w), h = c / (da + db), j = c % (da + db);
	out[e] = j < da ? a[r * heads * da + h * da + j] : b[r * hb * db + (hb == 1 ? 0 : h) * db + (j - da)];
}

// ConcatHeads's backward (graph.splitHeads): from g [n, heads*(da+db)],
// ga [n, heads*da] (g's a parts) then gb [n, hb*db] (its b parts, summed
// over the heads when hb = 1) packed in out. One thread per element of out.
extern "C" __global__ void split_heads_f32(const float *g, float *out, int n, int heads, int da, int hb, int db) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long na = (long long)n * heads * da;
	int w = heads * (da + db);
	if (e < na) {
		long long r = e / (heads * da);
		int c = (int)(e % (heads * da)), h = c / da, j = c % da;
		out[e] = g[r * w + h * (da + db) + j];
		return;
	}
	long long f = e - na;
	if (f >= (long long)n * hb * db) {
		return;
	}
	long long r = f / (hb * db);
	int c = (int)(f % (hb * db)), bh = c / db, j = c % db;
	if (hb != 1) {
		out[e] = g[r * w + bh * (da + db) + da + j];
		return;
	}
	float s = 0.0f;
	for (int h = 0; h < heads; h++) {
		s += g[r * w + h * (da + db) + da + j];
	}
	out[e] = s;
}

// out [n, heads*d]: head h of row r of o scaled by g[r, h] (graph.ScaleHeads).
// One thread per element.
extern "C" __global__ void scale_heads_f32(const float *o, const float *g, float *out, int n, int heads, int d) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (e >= (long long)n * heads * d) {
		return;
	}
	out[e] = g[e / d] * o[e]; // element e is in row e / (heads d), head (e / d) % heads
}

// out [n, heads] = the dot products of a's and b's heads, row by row
// (graph.headDots). One thread per output element.
extern "C" __global__ void head_dots_f32(const float *a, const float *b, float *out, int n, int heads, int d) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (e >= (long long)n * heads) {
		return;
	}
	const float *x = a + e * d, *y = b + e * d;
	float s = 0.0f;
	for (int c = 0; c < d; c++) {
		s += x[c] * y[c];
	}
	out[e] = s;
}

// The most heads moh_route handles (graph.mohMaxHeads repeats it).
#define MOH_MAX_HEADS 64

// softmax_into writes softmax(z[0:n]) to p, in double (graph.softmaxInto).
__device__ void softmax_into(const float *z, double *p, int n) {
	if (n == 0) {
		return;
	}
	double mx = -INFINITY, sum = 0.0;
	for (int i = 0; i < n; i++) {
		mx = fmax(mx, (double)z[i]);
	}
	for (int i = 0; i < n; i++) {
		p[i] = exp((double)z[i] - mx);
		sum += p[i];
	}
	for (int i = 0; i < n; i++) {
		p[i] /= sum;
	}
}

// moh_route is graph.route for one token's logits z: the shared and routed
// softmaxes in p, the active heads in on (the top_k routed by p, ties to
// the lower index), and the group weights.
__device__ void moh_route(const float *z, int heads, int shared, int top_k, double *p, bool *on, double *a1, double *a2) {
	softmax_into(z, p, shared);
	softmax_into(z + shared, p + shared, heads - shared);
	for (int h = 0; h < heads; h++) {
		on[h] = h < shared;
	}
	for (int k = 0; k < top_k; k++) {
		int best = -1;
		for (int h = shared; h < heads; h++) {
			if (!on[h] && (best < 0 || p[h] > p[best])) {
				best = h;
			}
		}
		on[best] = true;
	}
	if (shared == 0) {
		*a1 = 0.0, *a2 = 1.0;
		return;
	}
	if (shared == heads) {
		*a1 = 1.0, *a2 = 0.0;
		return;
	}
	double b1 = z[heads], b2 = z[heads + 1], mx = fmax(b1, b2);
	double e1 = exp(b1 - mx), e2 = exp(b2 - mx);
	*a1 = e1 / (e1 + e2), *a2 = e2 / (e1 + e2);
}

// g [n, heads]: Mixture-of-Head gates from router logits z [n, w]
// (graph.mohForward). One thread per token.
extern "C" __global__ void moh_gates_f32(const float *z, float *g, int n, int w, int heads, int shared, int top_k, int softmax) {
	int r = blockIdx.x * blockDim.x + threadIdx.x;
	if (r >= n) {
		return;
	}
	double p[MOH_MAX_HEADS], a1, a2;
	bool on[MOH_MAX_HEADS];
	moh_route(z + (size_t)r * w, heads, shared, top_k, p, on, &a1, &a2);
	float *gr = g + (size_t)r * heads;
	for (int h = 0; h < heads; h++) {
		gr[h] = !on[h] ? 0.0f : !softmax ? 1.0f : (float)((h < shared ? a1 : a2) * p[h]);
	}
}

// dz [n, w] from z and the gates' gradient dg [n, heads]: the softmax
// gates' gradient (graph.mohBackward; zeros for the none gate). One thread
// per token.
extern "C" __global__ void moh_gates_grad_f32(const float *z, const float *dg, float *dz, int n, int w, int heads, int shared, int top_k, int softmax) {
	int r = blockIdx.x * blockDim.x + threadIdx.x;
	if (r >= n) {
		return;
	}
	float *out = dz + (size_t)r * w;
	if (!softmax) {
		for (int c = 0; c < w; c++) {
			out[c] = 0.0f;
		}
		return;
	}
	double p[MOH_MAX_HEADS], a1, a2, da1 = 0.0, da2 = 0.0;
	bool on[MOH_MAX_HEADS];
	moh_route(z + (size_t)r * w, heads, shared, top_k, p, on, &a1, &a2);
	const float *d = dg + (size_t)r * heads;
	for (int h = 0; h < heads; h++) {
		if (h < shared) {
			da1 += p[h] * (double)d[h];
		} else if (on[h]) {
			da2 += p[h] * (double)d[h];
		}
	}
	for (int h = 0; h < heads; h++) {
		if (h < shared) {
			out[h] = (float)(a1 * p[h] * ((double)d[h] - da1));
		} else if (on[h]) {
			out[h] = (float)(a2 * p[h] * ((double)d[h] - da2));
		} else {
			out[h] = (float)(-a2 * p[h] * da2);
		}
	}
	if (w > heads) {
		double t = a1 * da1 + a2 * da2;
		out[heads] = (float)(a1 * (da1 - t));
		out[heads + 1] = (float)(a2 * (da2 - t));
	}
}
