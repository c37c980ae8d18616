package graph

import (
	"math"
	"strconv"
)

// coreGPU is an attention core's CUDA path: the kernels of its forward op
// (in: q, k, v[, mask]; out: the packed O | L) and of its backward op (in:
// q, k, v[, mask], packed, dpacked; out: dq | dk | dv). A nil *coreGPU is
// no GPU path.
type coreGPU struct {
	forward, backward *gpuKernel
}

func (c *coreGPU) forwardKernel() *gpuKernel {
	if c == nil {
		return nil
	}
	return c.forward
}

func (c *coreGPU) backwardKernel() *gpuKernel {
	if c == nil {
		return nil
	}
	return c.backward
}

// attnBlock is the block shape of one kernel: rows per block, lanes per
// row, rows per thread; rows / rows per thread x lanes threads.
type attnBlock struct{ rows, lanes, perThread int }

func (b attnBlock) threads() int { return b.rows / b.perThread * b.lanes }

// attnConfig is one instantiation of graph/cuda/attention.cu: the block
// shapes of its forward, dK/dV (key rows) and dQ (query rows) kernels,
// which must repeat its ATTN_INSTANCE line.
type attnConfig struct{ fwd, kv, dq attnBlock }

// attnConfigs are the instantiations, by head dim (HeadDim = ValueDim).
var attnConfigs = map[int]attnConfig{
	16:  {attnBlock{128, 1, 1}, attnBlock{128, 1, 1}, attnBlock{128, 2, 2}},
	32:  {attnBlock{128, 2, 2}, attnBlock{128, 1, 1}, attnBlock{128, 1, 1}},
	64:  {attnBlock{128, 2, 2}, attnBlock{128, 2, 1}, attnBlock{128, 4, 2}},
	128: {attnBlock{64, 2, 1}, attnBlock{64, 8, 2}, attnBlock{64, 8, 2}},
}

// attentionGPU is the CUDA path of the dense core and of the tiled core
// with the full (or causal) pattern, which compute the same function: the
// fused FlashAttention-2 kernels of graph/cuda/attention.cu (module
// "attention"), forward and backward. nil when the head dims have no
// instantiation (HeadDim = ValueDim in 16, 32, 64, 128).
func attentionGPU(s AttentionShape, masked bool) *coreGPU {
	if s.VDim() != s.HeadDim {
		return nil
	}
	cfg, ok := attnConfigs[s.HeadDim]
	if !ok {
		return nil
	}
	d := s.HeadDim
	name := func(kernel string) string { return "attention." + kernel + "_d" + strconv.Itoa(d) }
	fwdName, kvName, dqName := name("attn_fwd"), name("attn_bwd_dkdv"), name("attn_bwd_dq")
	causal, alibi := int32(0), int32(0)
	if s.Causal {
		causal = 1
	}
	if s.ALiBi {
		alibi = 1
	}
	scale := s.scale()
	scale2, scale32 := float32(scale*math.Log2E), float32(scale)
	nOut := s.Batch * s.QLen * s.Heads * s.VDim()
	nLSE := s.Batch * s.Heads * s.QLen
	nq, nk, nv := s.gradSizes()
	// sizes are every count the kernels compute in int32: the largest
	// element offset of any input or output is below one of these.
	sizes := func() ([]int32, error) {
		return int32s(s.Batch, s.QLen, s.KLen, s.Heads, s.KVHeads, nOut+nLSE, nq+nk+nv, s.Batch*s.KLen*s.KVHeads*d)
	}
	blocks := func(n, rows, groups int) int { return (n + rows - 1) / rows * groups }
	mask := func(in []gpuBuf) uintptr {
		if masked {
			return in[3].ptr
		}
		return 0
	}
	fwd := &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		sz, err := sizes()
		if err != nil {
			return err
		}
		o, lse := out.ptr, out.ptr+uintptr(4*nOut)
		return l.Launch(fwdName, blocks(s.QLen, cfg.fwd.rows, s.Batch*s.Heads), cfg.fwd.threads(), 0,
			in[0].ptr, in[1].ptr, in[2].ptr, mask(in), o, lse, sz[0], sz[1], sz[2], sz[3], sz[4], causal, alibi, scale2)
	}}
	bwd := &gpuKernel{launch: func(l gpuLauncher, out gpuBuf, in []gpuBuf) error {
		sz, err := sizes()
		if err != nil {
			return err
		}
		packed, dpacked := in[len(in)-2], in[len(in)-1]
		o, lse := packed.ptr, packed.ptr+uintptr(4*nOut)
		do, dlse := dpacked.ptr, dpacked.ptr+uintptr(4*nOut)
		dq, dk, dv := out.ptr, out.ptr+uintptr(4*nq), out.ptr+uintptr(4*(nq+nk))
		// D_i into dq's rows, then dK and dV (which read D), then dQ
		// (which reads its rows' D before it overwrites them).
		pb, pt := elementwiseGrid(nLSE)
		if err := l.Launch("attention.attn_bwd_prep", pb, pt, 0, o, do, dlse, dq, sz[0], sz[1], sz[3], int32(d), int32(d)); err != nil {
			return err
		}
		args := []any{in[0].ptr, in[1].ptr, in[2].ptr, mask(in), lse, do, dq, dk, dv, sz[0], sz[1], sz[2], sz[3], sz[4], causal, alibi, scale2, scale32}
		if err := l.Launch(kvName, blocks(s.KLen, cfg.kv.rows, s.Batch*s.KVHeads), cfg.kv.threads(), 0, args...); err != nil {
			return err
		}
		return l.Launch(dqName, blocks(s.QLen, cfg.dq.rows, s.Batch*s.Heads), cfg.dq.threads(), 0, args...)
	}}
	return &coreGPU{forward: fwd, backward: bwd}
}
