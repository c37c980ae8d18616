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
