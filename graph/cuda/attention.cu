// The dense/flash attention cores' CUDA kernels (graph.Attention,
// DenseAttention and TiledAttention with no pattern, FlashAttention):
// FlashAttention-2 (Dao 2023) on the fp32 CUDA cores, fused: no QLen x KLen
// buffer exists anywhere, forward or backward. graph/gpu_attention.go
// launches them (module "attention"). float32 only; every size is an int32
// argument (graph/gpu_attention.go checks that each tensor's element count
// fits).
//
// Notation (Dao et al. 2022, Dao 2023), per sequence b and query head h,
// with kv head kh = h / (H / KVH) (GQA):
//   S_ij = scale q_i . k_j + bias_ij, bias_ij = -slope_h |i + KLen - QLen - j|
//          with ALiBi, 0 without; S_ij = -Inf where key j is hidden: padded
//          (mask[b, j] == 0) or, causal, j > i + KLen - QLen.
//   P = softmax_j(S), O_i = sum_j P_ij v_j, L_i = logsumexp_j S_ij;
//   a query that sees no key has O_i = 0, L_i = -Inf.
//   Backward, given dO and dL: D_i = dO_i . O_i - dL_i,
//   dV_j = sum_i P_ij dO_i, dP_ij = dO_i . v_j, dS_ij = P_ij (dP_ij - D_i),
//   dQ_i = scale sum_j dS_ij k_j, dK_j = scale sum_i dS_ij q_i; with GQA
//   dK and dV of a kv head sum over the H / KVH query heads of its group.
//
// Layouts (row-major, as the graph package): q [B*QLen, H*HD],
// k [B*KLen, KVH*HD], v [B*KLen, KVH*DV], mask [B*KLen] or null,
// O [B*QLen, H*DV], L [B*H, QLen] (row b*H + h). The head dims HD and DV are
// template parameters, so that each thread's rows stay in registers.
//
// Exponentials are base 2: the kernels work on S2 = log2(e) S (scale2 =
// log2(e) scale, slope2 = log2(e) slope), P = 2^(S2 - max) as
// 2^(S - max) = e^(...) would be, and write L = ln(2) (m2 + log2 l).
//
// Work split: each kernel keeps its "own" rows in registers (the forward
// and dQ kernels query rows, the dK/dV kernel key rows) and streams the
// other side's rows through shared memory in tiles, so that a thread is
// the paper's inner loop for its rows. A thread holds RT rows (RT = QR or
// KR: rows r, r + BQ/RT, ...), and each row may be split over S adjacent
// lanes (lane part p holds the dims 4(cS + p) .. 4(cS + p) + 3 for
// c = 0, 1, ...; the partial dot products are summed over the S lanes by
// shuffles). RT > 1 reuses every value read from shared memory for RT
// rows; S > 1 keeps the per-thread arrays in registers for the wider
// heads and gives more threads. All lanes of a warp read the same staged
// row at a time: a broadcast, the S lanes of a row reading S adjacent
// float4 (LDS.128, no bank conflict). The tiles are double-buffered: tile
// t+1 is copied global -> shared with cp.async (4 bytes a thread and
// copy: no alignment assumed) while tile t is computed. Causal tiles that
// no row of the block can see are never visited, and only the tiles that
// need it (the diagonal, the last partial tile, any tile with padding or
// ALiBi) are masked element by element.
//
// Kernels, for instantiation dN (HD = DV = N):
//   attn_fwd_dN          forward: O and L.
//   attn_bwd_prep        D_i, into the first element of dq's row (b, i, h).
//   attn_bwd_dkdv_dN     dK, dV (reads the D_i that attn_bwd_prep left).
//   attn_bwd_dq_dN       dQ (reads its row's D_i, then overwrites the row).
// The backward runs the three in this order, with no atomics: every output
// element is computed by one thread, in a fixed order, so results are
// reproducible run to run. It recomputes S (and P) in both kernels: 9
// products of T x T x d per head (halved when causal) forward and backward
// (forward QK^T, PV; dK/dV QK^T, dO V^T, P^T dO, dS^T Q; dQ QK^T, dO V^T,
// dS K), where FlashAttention-2 with an atomic dQ does 7.
//
// Block shapes per instantiation are listed at the end of the file, with
// their register counts; graph/gpu_attention.go's attnConfigs must match
// them.

#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_LN2 0.69314718055994531f

// The ALiBi slope of head h of n, times log2(e): graph.ALiBiSlopes, the
// sequence 2^(-8/p), 2^(-16/p), ... for the largest power of two p <= n,
// then every other term of the sequence for 2p. In double, as the CPU.
__device__ float attn_slope2(int h, int n) {
	int p = 1;
	while (p * 2 <= n) {
		p *= 2;
	}
	double e = h < p ? -8.0 * (h + 1) / p : -8.0 * (2 * (h - p) + 1) / (2.0 * p);
	return (float)(exp2(e) * 1.4426950408889634);
}

// The sum of x over the S adjacent lanes of a row (S a power of two <= 32);
// every lane of the warp must call it.
template <int S>
__device__ __forceinline__ float attn_rowsum(float x) {
#pragma unroll
	for (int o = 1; o < S; o <<= 1) {
		x += __shfl_xor_sync(0xffffffffu, x, o);
	}
	return x;
}

// Starts copying rows r0 .. r0+R-1 of the matrix g (leading dimension
// ld, W columns read from each row) into sm [R][W], asynchronously
// (cp.async, 4 bytes a thread and copy, so that no alignment of g is
// assumed; a warp copies W contiguous floats of a row at a time); rows
// >= n are filled with zeros. All NT threads of the block call it, then
// attn_commit; the data may be read after attn_wait and a barrier.
template <int R, int W, int NT>
__device__ __forceinline__ void attn_stage(float *sm, const float *__restrict__ g, int ld, int r0, int n) {
#pragma unroll 4
	for (int x = threadIdx.x; x < R * W; x += NT) {
		int r = r0 + x / W, c = x % W;
		const float *src = g + (size_t)min(r, n - 1) * ld + c;
		unsigned dst = (unsigned)__cvta_generic_to_shared(sm + x);
		asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(dst), "l"(src), "r"(r < n ? 4 : 0) : "memory");
	}
}

// Closes the group of copies this thread started since the last commit.
__device__ __forceinline__ void attn_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }

// Waits until at most one of this thread's committed groups is in flight
// (the next tile's, while the current one is computed).
__device__ __forceinline__ void attn_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }

// The key bias of a raw mask value (1 where there is no mask; 0 past
// KLen): 0 for a real key, -Inf for a padded one.
__device__ __forceinline__ float attn_kbias(float m) { return m != 0.0f ? 0.0f : -INFINITY; }

// The mask value of key j of the sequence (mg: its mask, null for none).
__device__ __forceinline__ float attn_kmask(const float *__restrict__ mg, int j, int KL) {
	return j < KL ? (mg != nullptr ? mg[j] : 1.0f) : 0.0f;
}

// Loads a row's dims held by lane part (see above) from global memory.
template <int N, int S>
__device__ __forceinline__ void attn_load_row(float (&dst)[N / S], const float *__restrict__ row, int part, bool ok) {
#pragma unroll
	for (int c = 0; c < N / S / 4; c++) {
#pragma unroll
		for (int e = 0; e < 4; e++) {
			dst[4 * c + e] = ok ? row[4 * (c * S + part) + e] : 0.0f;
		}
	}
}

template <int N, int S>
__device__ __forceinline__ void attn_store_row(float *row, const float (&src)[N / S], int part, float mul) {
#pragma unroll
	for (int c = 0; c < N / S / 4; c++) {
#pragma unroll
		for (int e = 0; e < 4; e++) {
			row[4 * (c * S + part) + e] = src[4 * c + e] * mul;
		}
	}
}

// acc += dot(chunk c of the array r, f) for a float4 f.
#define ATTN_DOT4(acc, r, c, f) \
	acc = fmaf((r)[4 * (c)], (f).x, acc); \
	acc = fmaf((r)[4 * (c) + 1], (f).y, acc); \
	acc = fmaf((r)[4 * (c) + 2], (f).z, acc); \
	acc = fmaf((r)[4 * (c) + 3], (f).w, acc)

// chunk c of the array r += a f for a float4 f.
#define ATTN_AXPY4(r, c, a, f) \
	(r)[4 * (c)] = fmaf(a, (f).x, (r)[4 * (c)]); \
	(r)[4 * (c) + 1] = fmaf(a, (f).y, (r)[4 * (c) + 1]); \
	(r)[4 * (c) + 2] = fmaf(a, (f).z, (r)[4 * (c) + 2]); \
	(r)[4 * (c) + 3] = fmaf(a, (f).w, (r)[4 * (c) + 3])

// A float4 load from shared memory (16-byte aligned). Through volatile asm
// so that the compiler cannot merge two loads of the same element: the
// backward kernels read each staged row twice (for S or dP, then for the
// accumulation), and keeping a group's rows live in registers between the
// two uses would spill.
__device__ __forceinline__ float4 attn_lds4(const float *p) {
	float4 r;
	unsigned a = (unsigned)__cvta_generic_to_shared(p);
	asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];" : "=f"(r.x), "=f"(r.y), "=f"(r.z), "=f"(r.w) : "r"(a));
	return r;
}

#define ATTN_LD4(p) attn_lds4(p)

// ---------------------------------------------------------------------------
// Forward.

// One key tile (BK keys staged in ks [BK][D], vs [BK][DV], kb [BK]: 0 for a
// real key, -Inf for a padded one or one past KLen) for the thread's QR
// query rows: the online softmax of Dao 2023, Algorithm 1, lines 8-10. S2
// for the tile's keys (in registers; each staged key row, read once, serves
// the QR rows), each row's maximum m updated, its accumulator and sum
// rescaled by 2^(m_old - m_new), then acc += P v. MASKED applies kb, the
// ALiBi bias (slope2 != 0; fpos[r] = row r's query position minus j0) and
// the causal bound (key jj visible to row r iff jj <= lim[r]); a tile
// without any of them (fully visible, inside KLen) skips the masking.
template <int D, int DV, int S, int QR, int BK, bool MASKED>
__device__ __forceinline__ void attn_fwd_tile(const float *ks, const float *vs, const float *kb, const float (&qr)[QR][D / S],
                                              float (&acc)[QR][DV / S], float (&m)[QR], float (&l)[QR], int part, float scale2,
                                              const int (&lim)[QR], float slope2, const float (&fpos)[QR]) {
	float s[QR][BK];
#pragma unroll
	for (int r = 0; r < QR; r++) {
#pragma unroll
		for (int jj = 0; jj < BK; jj++) {
			s[r][jj] = 0.0f;
		}
	}
#pragma unroll
	for (int c = 0; c < D / S / 4; c++) {
#pragma unroll
		for (int jj = 0; jj < BK; jj++) {
			float4 kk = ATTN_LD4(ks + jj * D + 4 * (c * S + part));
#pragma unroll
			for (int r = 0; r < QR; r++) {
				ATTN_DOT4(s[r][jj], qr[r], c, kk);
			}
		}
	}
	float mu[QR], alpha[QR];
#pragma unroll
	for (int r = 0; r < QR; r++) {
		float mt = -INFINITY;
#pragma unroll
		for (int jj = 0; jj < BK; jj++) {
			float x = attn_rowsum<S>(s[r][jj]) * scale2;
			if (MASKED) {
				x += kb[jj];
				x = fmaf(-slope2, fabsf(fpos[r] - (float)jj), x);
				x = jj > lim[r] ? -INFINITY : x;
			}
			s[r][jj] = x;
			mt = fmaxf(mt, x);
		}
		float mn = fmaxf(m[r], mt);
		mu[r] = mn == -INFINITY ? 0.0f : mn; // nothing visible yet: every p is 0
		alpha[r] = exp2f(m[r] - mu[r]);      // 0 for m = -Inf, 1 for mn == m
		m[r] = mn;
#pragma unroll
		for (int a = 0; a < DV / S; a++) {
			acc[r][a] *= alpha[r];
		}
	}
	float lt[QR];
#pragma unroll
	for (int r = 0; r < QR; r++) {
		lt[r] = 0.0f;
	}
#pragma unroll
	for (int jj = 0; jj < BK; jj++) {
		float p[QR];
#pragma unroll
		for (int r = 0; r < QR; r++) {
			p[r] = exp2f(s[r][jj] - mu[r]);
			lt[r] += p[r];
		}
#pragma unroll
		for (int c = 0; c < DV / S / 4; c++) {
			float4 vv = ATTN_LD4(vs + jj * DV + 4 * (c * S + part));
#pragma unroll
			for (int r = 0; r < QR; r++) {
				ATTN_AXPY4(acc[r], c, p[r], vv);
			}
		}
	}
#pragma unroll
	for (int r = 0; r < QR; r++) {
		l[r] = l[r] * alpha[r] + lt[r];
	}
}

// Forward, Dao 2023 Algorithm 1 with the loop order of FlashAttention-2:
// block = BQ query rows (of one sequence b and head h), QR rows a thread
// (rows i0 + t/S + r BQ/QR), each split over S lanes; the q rows stay in
// registers with their output accumulators and running max m and sum l;
// the key/value tiles K_j, V_j (BK rows) are staged through shared memory
// by the whole block, in order, double-buffered; causal tiles past the
// block's last query are not visited, and only tiles that cross the
// diagonal, the last partial one or any with padding or ALiBi are masked
// element by element. At the end O_i = acc / l, L_i = ln 2 (m + log2 l);
// O_i = 0, L_i = -Inf for a row that saw no key.
// Grid: ceil(QLen/BQ) x B*H blocks of BQ/QR*S threads, block x = (tile,
// bh) with bh fastest and the tiles in reverse order (causal: the longest
// rows start first). Time: (visible keys) x (HD + DV) FMAs per row;
// memory: the inputs, O and L; shared 2 BK (HD + DV + 1) floats.
template <int D, int DV, int S, int QR, int BQ, int BK>
__device__ __forceinline__ void attn_fwd(const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
                                         const float *__restrict__ mask, float *__restrict__ out, float *__restrict__ lse,
                                         int B, int QL, int KL, int H, int KVH, int causal, int alibi, float scale2) {
	static_assert(D % (4 * S) == 0 && DV % (4 * S) == 0, "head dims must be multiples of 4 S");
	static_assert(BQ % QR == 0, "rows per thread must divide the tile");
	constexpr int NT = BQ / QR * S, RS = BQ / QR; // threads; row stride between a thread's rows
	static_assert(NT >= BK, "the key bias is staged one key a thread");
	__shared__ __align__(16) float ks[2][BK * D];
	__shared__ __align__(16) float vs[2][BK * DV];
	__shared__ float kb[2][BK];
	const int BH = B * H, nqt = (QL + BQ - 1) / BQ;
	const int bh = blockIdx.x % BH, qt = nqt - 1 - blockIdx.x / BH;
	const int b = bh / H, h = bh % H, kh = h / (H / KVH);
	const int part = threadIdx.x % S, i0 = qt * BQ, ia = i0 + threadIdx.x / S; // rows ia + r RS, r < QR
	const int shift = KL - QL;
	const float slope2 = alibi ? attn_slope2(h, H) : 0.0f;

	const float *kg = k + (size_t)b * KL * (KVH * D) + kh * D;
	const float *vg = v + (size_t)b * KL * (KVH * DV) + kh * DV;
	const float *mg = mask ? mask + (size_t)b * KL : nullptr;
	// Tile 0 is requested first; the q row loads overlap it.
	attn_stage<BK, D, NT>(ks[0], kg, KVH * D, 0, KL);
	attn_stage<BK, DV, NT>(vs[0], vg, KVH * DV, 0, KL);
	attn_commit();
	if (threadIdx.x < BK) {
		kb[0][threadIdx.x] = attn_kbias(attn_kmask(mg, threadIdx.x, KL));
	}

	float qr[QR][D / S], acc[QR][DV / S], m[QR], l[QR];
#pragma unroll
	for (int r = 0; r < QR; r++) {
		const int i = ia + r * RS;
		attn_load_row<D, S>(qr[r], q + (size_t)(b * QL + min(i, QL - 1)) * (H * D) + h * D, part, i < QL);
#pragma unroll
		for (int a = 0; a < DV / S; a++) {
			acc[r][a] = 0.0f;
		}
		m[r] = -INFINITY;
		l[r] = 0.0f;
	}

	// Keys [0, kend) are visited; tiles ending at or before jfull need no
	// masking (inside KLen, no padding or ALiBi, below the causal bound of
	// the block's first query).
	const int kend = causal ? min(KL, i0 + BQ + shift) : KL;
	const int jfull = mg == nullptr && !alibi ? min(KL, causal ? i0 + shift + 1 : KL) : 0;
	const int ntiles = (kend + BK - 1) / BK;
	for (int t = 0; t < ntiles; t++) {
		const int j0 = t * BK, cur = t & 1, nxt = cur ^ 1;
		// Request tile t+1 into the other buffer (free: the barrier that
		// ended iteration t-1 follows its last reads).
		float mnext = 0.0f;
		if (t + 1 < ntiles) {
			attn_stage<BK, D, NT>(ks[nxt], kg, KVH * D, j0 + BK, KL);
			attn_stage<BK, DV, NT>(vs[nxt], vg, KVH * DV, j0 + BK, KL);
			if (threadIdx.x < BK) {
				mnext = attn_kmask(mg, j0 + BK + threadIdx.x, KL);
			}
		}
		attn_commit();
		attn_wait1(); // this thread's copies of tile t have landed
		__syncthreads(); // ... and every thread's
		int lim[QR];
		float fpos[QR];
#pragma unroll
		for (int r = 0; r < QR; r++) {
			const int pos = ia + r * RS + shift; // the row's position among the keys
			lim[r] = causal ? pos - j0 : BK;
			fpos[r] = (float)(pos - j0);
		}
		if (j0 + BK <= jfull) {
			attn_fwd_tile<D, DV, S, QR, BK, false>(ks[cur], vs[cur], kb[cur], qr, acc, m, l, part, scale2, lim, 0.0f, fpos);
		} else {
			attn_fwd_tile<D, DV, S, QR, BK, true>(ks[cur], vs[cur], kb[cur], qr, acc, m, l, part, scale2, lim, slope2, fpos);
		}
		if (threadIdx.x < BK) {
			kb[nxt][threadIdx.x] = attn_kbias(mnext);
		}
		__syncthreads(); // tile t is consumed
	}
#pragma unroll
	for (int r = 0; r < QR; r++) {
		const int i = ia + r * RS;
		if (i < QL) {
			attn_store_row<DV, S>(out + (size_t)(b * QL + i) * (H * DV) + h * DV, acc[r], part, l[r] > 0.0f ? 1.0f / l[r] : 0.0f);
			if (part == 0) {
				lse[(size_t)bh * QL + i] = l[r] > 0.0f ? (m[r] + log2f(l[r])) * ATTN_LN2 : -INFINITY;
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Backward.

// D_i = dO_i . O_i - dL_i (Dao 2023 Algorithm 2, line 4, with the gradient
// of L), one thread per row (b, i, h) of O: written into dq's first element
// of the same row (b, i, h), which attn_bwd_dkdv reads and attn_bwd_dq
// reads before it overwrites the row (there is no other scratch: the
// backward's output is dq | dk | dv). n = B*QLen*H threads.
extern "C" __global__ void attn_bwd_prep(const float *__restrict__ o, const float *__restrict__ dout, const float *__restrict__ dlse,
                                         float *__restrict__ dq, int B, int QL, int H, int HD, int DV) {
	int x = blockIdx.x * blockDim.x + threadIdx.x;
	if (x >= B * QL * H) {
		return;
	}
	int h = x % H, row = x / H, b = row / QL, i = row % QL;
	const float *orow = o + (size_t)x * DV, *grow = dout + (size_t)x * DV;
	float d = 0.0f;
	for (int c = 0; c < DV; c++) {
		d = fmaf(orow[c], grow[c], d);
	}
	dq[(size_t)x * HD] = d - dlse[(size_t)(b * H + h) * QL + i];
}

// One staged query tile (BQT rows: qs [BQT][D], dos [BQT][DV], ls = L2 of
// each row, +Inf for a row that saw no key or one past QLen so that its P
// is 0; dls = D_i) for the thread's KR key rows (k, v in registers), in
// groups of R query rows: S2 and dP for the group, P = 2^(S2 - L2),
// dS = P (dP - D), then dv += P dO_i and dk += dS q_i (Dao 2023 Algorithm
// 2, lines 11-15, for KR columns of the tile; each staged row, read twice,
// serves the KR keys). MASKED adds the ALiBi bias (slope2 != 0;
// fd[k] = i0 + KLen - QLen - j_k) and the causal bound (row rr visible to
// key k iff rr >= lim[k] = j_k - (KLen - QLen) - i0).
template <int D, int DV, int S, int KR, int BQT, int R, bool MASKED>
__device__ __forceinline__ void attn_dkdv_tile(const float *qs, const float *dos, const float *ls, const float *dls,
                                               const float (&kr)[KR][D / S], const float (&vr)[KR][DV / S],
                                               float (&dk)[KR][D / S], float (&dv)[KR][DV / S], int part, float scale2,
                                               const int (&lim)[KR], float slope2, const float (&fd)[KR]) {
#pragma unroll 1
	for (int r0 = 0; r0 < BQT; r0 += R) {
		float s[KR][R], dp[KR][R];
#pragma unroll
		for (int k = 0; k < KR; k++) {
#pragma unroll
			for (int rr = 0; rr < R; rr++) {
				s[k][rr] = 0.0f;
				dp[k][rr] = 0.0f;
			}
		}
#pragma unroll
		for (int c = 0; c < D / S / 4; c++) {
#pragma unroll
			for (int rr = 0; rr < R; rr++) {
				float4 qq = ATTN_LD4(qs + (r0 + rr) * D + 4 * (c * S + part));
#pragma unroll
				for (int k = 0; k < KR; k++) {
					ATTN_DOT4(s[k][rr], kr[k], c, qq);
				}
			}
		}
#pragma unroll
		for (int c = 0; c < DV / S / 4; c++) {
#pragma unroll
			for (int rr = 0; rr < R; rr++) {
				float4 oo = ATTN_LD4(dos + (r0 + rr) * DV + 4 * (c * S + part));
#pragma unroll
				for (int k = 0; k < KR; k++) {
					ATTN_DOT4(dp[k][rr], vr[k], c, oo);
				}
			}
		}
#pragma unroll
		for (int k = 0; k < KR; k++) {
			const float fdr = fd[k] + (float)r0;
			const int limr = lim[k] - r0;
#pragma unroll
			for (int rr = 0; rr < R; rr++) {
				float x = attn_rowsum<S>(s[k][rr]) * scale2;
				float y = attn_rowsum<S>(dp[k][rr]);
				if (MASKED) {
					x = fmaf(-slope2, fabsf(fdr + (float)rr), x);
					x = rr < limr ? -INFINITY : x;
				}
				float p = exp2f(x - ls[r0 + rr]);
				s[k][rr] = p;
				dp[k][rr] = p * (y - dls[r0 + rr]);
			}
		}
#pragma unroll
		for (int rr = 0; rr < R; rr++) {
#pragma unroll
			for (int c = 0; c < DV / S / 4; c++) {
				float4 oo = ATTN_LD4(dos + (r0 + rr) * DV + 4 * (c * S + part));
#pragma unroll
				for (int k = 0; k < KR; k++) {
					ATTN_AXPY4(dv[k], c, s[k][rr], oo);
				}
			}
#pragma unroll
			for (int c = 0; c < D / S / 4; c++) {
				float4 qq = ATTN_LD4(qs + (r0 + rr) * D + 4 * (c * S + part));
#pragma unroll
				for (int k = 0; k < KR; k++) {
					ATTN_AXPY4(dk[k], c, dp[k][rr], qq);
				}
			}
		}
	}
}

// dK and dV, Dao 2023 Algorithm 2 (the outer loop over key tiles, each
// block owning its dK_j, dV_j, so no atomics), without dQ: block = BKV key
// rows (of one sequence b and kv head kh), KR rows a thread (rows
// j0 + t/S + k BKV/KR), each split over S lanes; k_j, v_j, dk_j, dv_j in
// registers; for each query head of the group and each query tile Q_i
// (BQT rows) that can see the block's keys (causal: from the first query
// whose position reaches the block's first key), q_i, dO_i, L_i and D_i
// are staged in shared memory (double-buffered: tile t+1 is copied while
// tile t is computed) and P recomputed from L. A padded key's dk, dv are
// 0. Written: dk = scale sum dS q, dv = sum P dO (every row < KLen).
// Grid: ceil(KLen/BKV) x B*KVH blocks, bk fastest (causal: the first key
// tiles, seen by the most queries, start first). Time: (visible pairs) x
// 2 (HD + DV) FMAs; shared 2 BQT (HD + DV + 2) floats.
template <int D, int DV, int S, int KR, int BKV, int BQT, int R>
__device__ __forceinline__ void attn_bwd_dkdv(const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
                                              const float *__restrict__ mask, const float *__restrict__ lse,
                                              const float *__restrict__ dout, const float *__restrict__ dsum,
                                              float *__restrict__ dk, float *__restrict__ dv, int B, int QL, int KL, int H,
                                              int KVH, int causal, int alibi, float scale2, float scale) {
	static_assert(D % (4 * S) == 0 && DV % (4 * S) == 0 && BQT % R == 0 && BKV % KR == 0, "bad tile");
	constexpr int NT = BKV / KR * S, RS = BKV / KR; // threads; row stride between a thread's keys
	static_assert(NT >= BQT, "L and D are staged one row a thread");
	__shared__ __align__(16) float qs[2][BQT * D];
	__shared__ __align__(16) float dos[2][BQT * DV];
	__shared__ float ls[2][BQT], dls[2][BQT];
	const int BK = B * KVH;
	const int bk = blockIdx.x % BK, kt = blockIdx.x / BK;
	const int b = bk / KVH, kh = bk % KVH, G = H / KVH;
	const int part = threadIdx.x % S, j0 = kt * BKV, ja = j0 + threadIdx.x / S; // keys ja + k RS, k < KR
	const int shift = KL - QL;

	// The query tiles: for each head h of the group, rows from istart on
	// (causal: query i sees key j0 iff i >= j0 - shift; earlier queries
	// see none of the block's keys), nqt tiles of BQT; tile t is head
	// kh G + t / nqt, rows from istart + (t % nqt) BQT.
	const int istart = causal ? max(0, j0 - shift) / BQT * BQT : 0;
	const int nqt = (QL - istart + BQT - 1) / BQT, ntiles = G * nqt;
	// stage requests tile t's q and dO rows and loads (into registers) the
	// L and D of its row threadIdx.x, which store puts in shared memory:
	// L2 = log2(e) L, +Inf for a row that saw no key or one past QLen (P
	// is then 0), and D_i from dq's row (attn_bwd_prep).
	float Lnext = -INFINITY, Dnext = 0.0f;
	auto stage = [&](int t, int buf) {
		const int h = kh * G + t / nqt, i0 = istart + t % nqt * BQT;
		attn_stage<BQT, D, NT>(qs[buf], q + (size_t)b * QL * (H * D) + h * D, H * D, i0, QL);
		attn_stage<BQT, DV, NT>(dos[buf], dout + (size_t)b * QL * (H * DV) + h * DV, H * DV, i0, QL);
		const int i = i0 + threadIdx.x;
		if (threadIdx.x < BQT && i < QL) {
			Lnext = lse[(size_t)(b * H + h) * QL + i];
			Dnext = dsum[((size_t)(b * QL + i) * H + h) * D];
		} else {
			Lnext = -INFINITY;
			Dnext = 0.0f;
		}
	};
	auto store = [&](int buf) {
		if (threadIdx.x < BQT) {
			ls[buf][threadIdx.x] = Lnext == -INFINITY ? INFINITY : Lnext * ATTN_LOG2E;
			dls[buf][threadIdx.x] = Dnext;
		}
	};
	if (ntiles > 0) {
		stage(0, 0);
		store(0);
	}
	attn_commit();

	float kr[KR][D / S], vr[KR][DV / S], dkr[KR][D / S], dvr[KR][DV / S];
	bool real[KR];
#pragma unroll
	for (int kk = 0; kk < KR; kk++) {
		const int j = ja + kk * RS, jr = min(j, KL - 1);
		attn_load_row<D, S>(kr[kk], k + (size_t)(b * KL + jr) * (KVH * D) + kh * D, part, j < KL);
		attn_load_row<DV, S>(vr[kk], v + (size_t)(b * KL + jr) * (KVH * DV) + kh * DV, part, j < KL);
		real[kk] = j < KL && (mask == nullptr || mask[(size_t)b * KL + jr] != 0.0f);
#pragma unroll
		for (int a = 0; a < D / S; a++) {
			dkr[kk][a] = 0.0f;
		}
#pragma unroll
		for (int a = 0; a < DV / S; a++) {
			dvr[kk][a] = 0.0f;
		}
	}
	for (int t = 0; t < ntiles; t++) {
		const int cur = t & 1, nxt = cur ^ 1;
		const int h = kh * G + t / nqt, i0 = istart + t % nqt * BQT;
		if (t + 1 < ntiles) {
			stage(t + 1, nxt);
		}
		attn_commit();
		attn_wait1();
		__syncthreads();
		int lim[KR];
		float fd[KR];
#pragma unroll
		for (int kk = 0; kk < KR; kk++) {
			const int j = ja + kk * RS;
			lim[kk] = causal ? j - shift - i0 : 0;
			fd[kk] = (float)(i0 + shift - j);
		}
		if (!alibi && (!causal || i0 + shift >= j0 + BKV - 1)) {
			// every query of the tile sees every key of the block
			attn_dkdv_tile<D, DV, S, KR, BQT, R, false>(qs[cur], dos[cur], ls[cur], dls[cur], kr, vr, dkr, dvr, part, scale2, lim,
			                                            0.0f, fd);
		} else {
			attn_dkdv_tile<D, DV, S, KR, BQT, R, true>(qs[cur], dos[cur], ls[cur], dls[cur], kr, vr, dkr, dvr, part, scale2, lim,
			                                           alibi ? attn_slope2(h, H) : 0.0f, fd);
		}
		if (t + 1 < ntiles) {
			store(nxt);
		}
		__syncthreads();
	}
#pragma unroll
	for (int kk = 0; kk < KR; kk++) {
		const int j = ja + kk * RS;
		if (j < KL) {
			// A padded key's P was computed but is not P (its S is not in L,
			// so it may even overflow): its rows are set to 0, not
			// multiplied by 0.
#pragma unroll
			for (int a = 0; a < D / S; a++) {
				dkr[kk][a] = real[kk] ? dkr[kk][a] : 0.0f;
			}
#pragma unroll
			for (int a = 0; a < DV / S; a++) {
				dvr[kk][a] = real[kk] ? dvr[kk][a] : 0.0f;
			}
			attn_store_row<D, S>(dk + (size_t)(b * KL + j) * (KVH * D) + kh * D, dkr[kk], part, scale);
			attn_store_row<DV, S>(dv + (size_t)(b * KL + j) * (KVH * DV) + kh * DV, dvr[kk], part, 1.0f);
		}
	}
}

// One staged key tile (as attn_fwd_tile's) for the thread's QR query rows
// (q, dO, L2, D in registers), in groups of R keys: S2 and dP,
// P = 2^(S2 - L2), dS = P (dP - D), dq += dS k_j (Dao 2023 Algorithm 2,
// lines 11-13 and 16, for QR rows of the tile; each staged key row, read
// twice, serves the QR rows). MASKED as attn_fwd_tile.
template <int D, int DV, int S, int QR, int BK, int R, bool MASKED>
__device__ __forceinline__ void attn_dq_tile(const float *ks, const float *vs, const float *kb, const float (&qr)[QR][D / S],
                                             const float (&gr)[QR][DV / S], float (&dq)[QR][D / S], const float (&L2)[QR],
                                             const float (&Di)[QR], int part, float scale2, const int (&lim)[QR], float slope2,
                                             const float (&fpos)[QR]) {
#pragma unroll 1
	for (int c0 = 0; c0 < BK; c0 += R) {
		float s[QR][R], dp[QR][R];
#pragma unroll
		for (int r = 0; r < QR; r++) {
#pragma unroll
			for (int rr = 0; rr < R; rr++) {
				s[r][rr] = 0.0f;
				dp[r][rr] = 0.0f;
			}
		}
#pragma unroll
		for (int c = 0; c < D / S / 4; c++) {
#pragma unroll
			for (int rr = 0; rr < R; rr++) {
				float4 kk = ATTN_LD4(ks + (c0 + rr) * D + 4 * (c * S + part));
#pragma unroll
				for (int r = 0; r < QR; r++) {
					ATTN_DOT4(s[r][rr], qr[r], c, kk);
				}
			}
		}
#pragma unroll
		for (int c = 0; c < DV / S / 4; c++) {
#pragma unroll
			for (int rr = 0; rr < R; rr++) {
				float4 vv = ATTN_LD4(vs + (c0 + rr) * DV + 4 * (c * S + part));
#pragma unroll
				for (int r = 0; r < QR; r++) {
					ATTN_DOT4(dp[r][rr], gr[r], c, vv);
				}
			}
		}
#pragma unroll
		for (int r = 0; r < QR; r++) {
			const float fpc = fpos[r] - (float)c0;
			const int limc = lim[r] - c0;
#pragma unroll
			for (int rr = 0; rr < R; rr++) {
				float x = attn_rowsum<S>(s[r][rr]) * scale2;
				float y = attn_rowsum<S>(dp[r][rr]);
				if (MASKED) {
					x += kb[c0 + rr];
					x = fmaf(-slope2, fabsf(fpc - (float)rr), x);
					x = rr > limc ? -INFINITY : x;
				}
				float p = exp2f(x - L2[r]);
				s[r][rr] = p * (y - Di[r]);
			}
		}
#pragma unroll
		for (int rr = 0; rr < R; rr++) {
#pragma unroll
			for (int c = 0; c < D / S / 4; c++) {
				float4 kk = ATTN_LD4(ks + (c0 + rr) * D + 4 * (c * S + part));
#pragma unroll
				for (int r = 0; r < QR; r++) {
					ATTN_AXPY4(dq[r], c, s[r][rr], kk);
				}
			}
		}
	}
}

// dQ: the forward's loop (block = BQ query rows, QR a thread, each split
// over S lanes; key tiles staged, double-buffered; the same tiles visited
// and masked) with q_i, dO_i, L_i, D_i and the dq accumulator in
// registers; D_i is read from the row's first element, where
// attn_bwd_prep put it, before the row is overwritten with
// dq = scale sum dS k. Grid and order as attn_fwd. Time: (visible keys) x
// (2 HD + DV) FMAs per row; shared 2 BK (HD + DV + 1) floats.
template <int D, int DV, int S, int QR, int BQ, int BK, int R>
__device__ __forceinline__ void attn_bwd_dq(const float *__restrict__ q, const float *__restrict__ k, const float *__restrict__ v,
                                            const float *__restrict__ mask, const float *__restrict__ lse,
                                            const float *__restrict__ dout, float *__restrict__ dq, int B, int QL, int KL,
                                            int H, int KVH, int causal, int alibi, float scale2, float scale) {
	static_assert(D % (4 * S) == 0 && DV % (4 * S) == 0 && BK % R == 0 && BQ % QR == 0, "bad tile");
	constexpr int NT = BQ / QR * S, RS = BQ / QR; // threads; row stride between a thread's rows
	static_assert(NT >= BK, "the key bias is staged one key a thread");
	__shared__ __align__(16) float ks[2][BK * D];
	__shared__ __align__(16) float vs[2][BK * DV];
	__shared__ float kb[2][BK];
	const int BH = B * H, nqt = (QL + BQ - 1) / BQ;
	const int bh = blockIdx.x % BH, qt = nqt - 1 - blockIdx.x / BH;
	const int b = bh / H, h = bh % H, kh = h / (H / KVH);
	const int part = threadIdx.x % S, i0 = qt * BQ, ia = i0 + threadIdx.x / S; // rows ia + r RS, r < QR
	const int shift = KL - QL;
	const float slope2 = alibi ? attn_slope2(h, H) : 0.0f;

	const float *kg = k + (size_t)b * KL * (KVH * D) + kh * D;
	const float *vg = v + (size_t)b * KL * (KVH * DV) + kh * DV;
	const float *mg = mask ? mask + (size_t)b * KL : nullptr;
	attn_stage<BK, D, NT>(ks[0], kg, KVH * D, 0, KL);
	attn_stage<BK, DV, NT>(vs[0], vg, KVH * DV, 0, KL);
	attn_commit();
	if (threadIdx.x < BK) {
		kb[0][threadIdx.x] = attn_kbias(attn_kmask(mg, threadIdx.x, KL));
	}

	float qr[QR][D / S], gr[QR][DV / S], dqr[QR][D / S], L2[QR], Di[QR];
#pragma unroll
	for (int r = 0; r < QR; r++) {
		const int i = ia + r * RS, ir = min(i, QL - 1);
		attn_load_row<D, S>(qr[r], q + (size_t)(b * QL + ir) * (H * D) + h * D, part, i < QL);
		attn_load_row<DV, S>(gr[r], dout + (size_t)(b * QL + ir) * (H * DV) + h * DV, part, i < QL);
		const float L = i < QL ? lse[(size_t)bh * QL + i] : -INFINITY;
		L2[r] = L == -INFINITY ? INFINITY : L * ATTN_LOG2E; // +Inf: every p is 0
		Di[r] = i < QL ? dq[(size_t)(b * QL + ir) * (H * D) + h * D] : 0.0f;
#pragma unroll
		for (int a = 0; a < D / S; a++) {
			dqr[r][a] = 0.0f;
		}
	}
	__syncthreads(); // every lane has read its rows' D_i before lane 0 overwrites them

	const int kend = causal ? min(KL, i0 + BQ + shift) : KL;
	const int jfull = mg == nullptr && !alibi ? min(KL, causal ? i0 + shift + 1 : KL) : 0;
	const int ntiles = (kend + BK - 1) / BK;
	for (int t = 0; t < ntiles; t++) {
		const int j0 = t * BK, cur = t & 1, nxt = cur ^ 1;
		float mnext = 0.0f;
		if (t + 1 < ntiles) {
			attn_stage<BK, D, NT>(ks[nxt], kg, KVH * D, j0 + BK, KL);
			attn_stage<BK, DV, NT>(vs[nxt], vg, KVH * DV, j0 + BK, KL);
			if (threadIdx.x < BK) {
				mnext = attn_kmask(mg, j0 + BK + threadIdx.x, KL);
			}
		}
		attn_commit();
		attn_wait1();
		__syncthreads();
		int lim[QR];
		float fpos[QR];
#pragma unroll
		for (int r = 0; r < QR; r++) {
			const int pos = ia + r * RS + shift;
			lim[r] = causal ? pos - j0 : BK;
			fpos[r] = (float)(pos - j0);
		}
		if (j0 + BK <= jfull) {
			attn_dq_tile<D, DV, S, QR, BK, R, false>(ks[cur], vs[cur], kb[cur], qr, gr, dqr, L2, Di, part, scale2, lim, 0.0f, fpos);
		} else {
			attn_dq_tile<D, DV, S, QR, BK, R, true>(ks[cur], vs[cur], kb[cur], qr, gr, dqr, L2, Di, part, scale2, lim, slope2, fpos);
		}
		if (threadIdx.x < BK) {
			kb[nxt][threadIdx.x] = attn_kbias(mnext);
		}
		__syncthreads();
	}
#pragma unroll
	for (int r = 0; r < QR; r++) {
		const int i = ia + r * RS;
		if (i < QL) {
			attn_store_row<D, S>(dq + (size_t)(b * QL + i) * (H * D) + h * D, dqr[r], part, scale);
		}
	}
}

// ---------------------------------------------------------------------------
// Instantiations: ATTN_INSTANCE(N; forward S, QR, BQ, BK; dK/dV S, KR, BKV,
// BQT, R; dQ S, QR, BQ, BK, R) for HD = DV = N: S lanes a row, QR/KR rows
// a thread, BQ/BKV rows a block, BK/BQT rows a staged tile, R rows a group.
// Threads per block: BQ/QR*S (forward, dQ), BKV/KR*S (dK/dV).
// graph/gpu_attention.go's attnConfigs repeats these numbers (a test checks).
// Chosen by timing variants on an H200 (2026-12-01, B 1, 4 heads, causal,
// T 16384; T 8192 for N = 128), each variant also checked on every
// attentionGPUCases case of its N.
//
// Registers per thread, forward / dK,dV / dQ, from nvcc 11.8's ptxas
// (-arch=sm_90 -cubin) and from the driver's JIT of the PTX (580.x, what
// the CUDA build runs): no spills, no stack frame in either.
//   d16    230 / 128 / 230    JIT 168 / 128 / 234
//   d32    244 / 241 / 179    JIT 244 / 239 / 184
//   d64    241 / 254 / 246    JIT 241 / 255 / 244
//   d128   254 / 254 / 255    JIT 254 / 244 / 246
// Shared memory (static, double-buffered): at most 33.8 KB a block.
//
// Times there (ms; forward, dK/dV, dQ; attn_bwd_prep adds 0.01-0.04):
//   d16  T 16384   1.74, 2.54, 1.79
//   d32  T 16384   2.45, 3.85, 3.14: 9.46 forward + backward, 25.4 TFLOP/s
//                  counted as 4 T^2 d H / 2 x 3.5 (PyTorch 2.11 SDPA fp32:
//                  14.6 ms, 16.5 TFLOP/s)
//   d64  T 16384   4.49, 8.65, 7.28: 20.5 (SDPA fp32 16.1)
//   d128 T 8192    2.92, 5.20, 4.39
//   d32  T 8192, bidirectional: 1.25 forward, 3.59 backward (SDPA 6.3 both)

#define ATTN_ARGS_FWD                                                                                                       \
	const float *q, const float *k, const float *v, const float *mask, float *out, float *lse, int B, int QL, int KL, int H, \
	    int KVH, int causal, int alibi, float scale2
#define ATTN_ARGS_BWD                                                                                                       \
	const float *q, const float *k, const float *v, const float *mask, const float *lse, const float *dout, float *dq,     \
	    float *dk, float *dv, int B, int QL, int KL, int H, int KVH, int causal, int alibi, float scale2, float scale

#define ATTN_INSTANCE(N, FS, FQR, FBQ, FBK, KS, KKR, KBKV, KBQT, KR, QS, QQR, QBQ, QBK, QR)                           \
	extern "C" __global__ void __launch_bounds__(FBQ / FQR * FS) attn_fwd_d##N(ATTN_ARGS_FWD) {                           \
		attn_fwd<N, N, FS, FQR, FBQ, FBK>(q, k, v, mask, out, lse, B, QL, KL, H, KVH, causal, alibi, scale2);         \
	}                                                                                                                 \
	extern "C" __global__ void __launch_bounds__(KBKV / KKR * KS) attn_bwd_dkdv_d##N(ATTN_ARGS_BWD) {                     \
		attn_bwd_dkdv<N, N, KS, KKR, KBKV, KBQT, KR>(q, k, v, mask, lse, dout, dq, dk, dv, B, QL, KL, H, KVH, causal,   \
		                                             alibi, scale2, scale);                                           \
	}                                                                                                                 \
	extern "C" __global__ void __launch_bounds__(QBQ / QQR * QS) attn_bwd_dq_d##N(ATTN_ARGS_BWD) {                        \
		attn_bwd_dq<N, N, QS, QQR, QBQ, QBK, QR>(q, k, v, mask, lse, dout, dq, B, QL, KL, H, KVH, causal, alibi, scale2, \
		                                         scale);                                                              \
	}

#ifndef ATTN_NO_INSTANCES
ATTN_INSTANCE(16, 1, 1, 128, 64, 1, 1, 128, 64, 16, 2, 2, 128, 64, 16)
ATTN_INSTANCE(32, 2, 2, 128, 32, 1, 1, 128, 64, 8, 1, 1, 128, 64, 16)
ATTN_INSTANCE(64, 2, 2, 128, 16, 2, 1, 128, 32, 8, 4, 2, 128, 32, 8)
ATTN_INSTANCE(128, 2, 1, 64, 16, 8, 2, 64, 16, 8, 8, 2, 64, 16, 8)
#endif
