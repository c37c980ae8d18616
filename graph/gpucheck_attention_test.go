package graph

import (
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// GPURelErr: equal infinities agree and count in neither norm; an
// infinity against anything else is +Inf.
func TestGPURelErrInfinities(t *testing.T) {
	inf := math.Inf(1)
	for _, c := range []struct {
		got  []float32
		want []float64
		err  float64
	}{
		{[]float32{float32(-inf), 3}, []float64{-inf, 3}, 0},
		{[]float32{float32(-inf), 3.3}, []float64{-inf, 3}, 0.1},
		{[]float32{float32(inf), 3}, []float64{-inf, 3}, inf},
		{[]float32{0, 3}, []float64{-inf, 3}, inf},
		{[]float32{float32(-inf), 3}, []float64{0, 3}, inf},
		{[]float32{float32(-inf)}, []float64{-inf}, 0},
	} {
		if e := GPURelErr(c.got, c.want); math.Abs(e-c.err) > 1e-6 && e != c.err {
			t.Errorf("GPURelErr(%v, %v) = %g, want %g", c.got, c.want, e, c.err)
		}
	}
	if e := GPURelErr([]float32{float32(math.NaN())}, []float64{1}); !math.IsNaN(e) {
		t.Errorf("NaN against 1: %g, want NaN (which fails every bound)", e)
	}
}

// gpuOf is the gpu kernel of the op whose name starts with prefix.
func gpuOf(g *G.ExprGraph, prefix string) (k *gpuKernel, found bool) {
	for _, n := range g.AllNodes() {
		if o, ok := n.Op().(*op); ok && strings.HasPrefix(o.name, prefix) {
			return o.gpu, true
		}
	}
	return nil, false
}

// The forward and the backward op of a core get the GPU path together:
// the dense core with no pattern and the flash core with no pattern or the
// full one, for the instantiated head dims (HeadDim = ValueDim in 16, 32,
// 64, 128); other dims and sparse patterns get none (TestAttentionGPUPaths
// checks the forward op for more patterns).
func TestAttentionGPUPathBothDirections(t *testing.T) {
	for _, c := range []struct {
		d, dv   int
		flash   bool
		pattern string // "", "full" or "window"
		want    bool
	}{
		{32, 0, false, "", true},
		{64, 0, true, "", true},
		{16, 0, true, "full", true},
		{128, 0, false, "", true},
		{24, 0, false, "", false},
		{32, 16, false, "", false},
		{32, 0, true, "window", false},
		{32, 0, false, "window", false},
	} {
		s := AttentionShape{Batch: 1, QLen: 8, KLen: 8, Heads: 2, KVHeads: 1, HeadDim: c.d, ValueDim: c.dv, Causal: true}
		g := G.NewGraph()
		q := G.NewMatrix(g, tensor.Float32, G.WithShape(8, 2*c.d), G.WithName("q"), G.WithInit(G.Zeroes()))
		k := G.NewMatrix(g, tensor.Float32, G.WithShape(8, c.d), G.WithName("k"), G.WithInit(G.Zeroes()))
		v := G.NewMatrix(g, tensor.Float32, G.WithShape(8, s.VDim()), G.WithName("v"), G.WithInit(G.Zeroes()))
		var p *Pattern
		switch c.pattern {
		case "full":
			p = FullPattern(s, 4)
		case "window":
			p = MaskPattern(blockmask.SlidingWindow(8, 4, 2, true))
		}
		core, prefix := DenseAttentionLSE, "Attention("
		if c.flash {
			core, prefix = TiledAttentionLSE, "TiledAttention("
		}
		o, _, err := core(q, k, v, nil, s, p)
		if err != nil {
			t.Fatal(err)
		}
		loss, err := G.Sum(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := G.Grad(loss, q, k, v); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("d=%d dv=%d flash=%t pattern=%q", c.d, c.dv, c.flash, c.pattern)
		fwd, ok := gpuOf(g, prefix)
		bwd, okb := gpuOf(g, "Grad"+prefix)
		if !ok || !okb {
			t.Fatalf("%s: the core's ops not found", name)
		}
		if (fwd != nil) != c.want || (bwd != nil) != c.want {
			t.Errorf("%s: GPU path forward %t, backward %t; want %t", name, fwd != nil, bwd != nil, c.want)
		}
	}
}

// planLauncher records the launches of a gpuKernel with symbolic buffers.
type planLauncher struct{ launches []string }

func (l *planLauncher) Launch(kernel string, blocks, threads, shared int, args ...any) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s<<<%d,%d>>>", kernel, blocks, threads)
	for _, a := range args {
		switch v := a.(type) {
		case uintptr:
			if v == 0 {
				b.WriteString(" nil")
			} else {
				fmt.Fprintf(&b, " b%d+%d", v>>40, v&(1<<40-1))
			}
		default:
			fmt.Fprintf(&b, " %v", v)
		}
	}
	l.launches = append(l.launches, b.String())
	return nil
}

func (l *planLauncher) Gemm(bool, bool, int, int, int, float32, gpuBuf, int, gpuBuf, int, float32, gpuBuf, int) error {
	return fmt.Errorf("no products")
}

// The launches for one shape: the kernels, grids and the offsets of L, dL,
// dk and dv in the packed buffers (buffer n is b n).
func TestAttentionGPULaunches(t *testing.T) {
	s := AttentionShape{Batch: 2, QLen: 100, KLen: 300, Heads: 4, KVHeads: 2, HeadDim: 32, Causal: true, ALiBi: true}
	gk := attentionGPU(s, true)
	buf := func(n int) gpuBuf { return gpuBuf{ptr: uintptr(n) << 40} }
	in := []gpuBuf{buf(1), buf(2), buf(3), buf(4)}
	var l planLauncher
	if err := gk.forward.launch(&l, buf(5), in); err != nil {
		t.Fatal(err)
	}
	if err := gk.backward.launch(&l, buf(8), append(in, buf(5), buf(6))); err != nil {
		t.Fatal(err)
	}
	nOut := 2 * 100 * 4 * 32
	nq, nk := nOut, 2*300*2*32
	want := []string{
		fmt.Sprintf("attention.attn_fwd_d32<<<8,128>>> b1+0 b2+0 b3+0 b4+0 b5+0 b5+%d 2 100 300 4 2 1 1 %v", 4*nOut, float32(math.Log2E/math.Sqrt(32))),
		fmt.Sprintf("attention.attn_bwd_prep<<<4,256>>> b5+0 b6+0 b6+%d b8+0 2 100 4 32 32", 4*nOut),
		fmt.Sprintf("attention.attn_bwd_dkdv_d32<<<12,128>>> b1+0 b2+0 b3+0 b4+0 b5+%d b6+0 b8+0 b8+%d b8+%d 2 100 300 4 2 1 1 %v %v",
			4*nOut, 4*nq, 4*(nq+nk), float32(math.Log2E/math.Sqrt(32)), float32(1/math.Sqrt(32))),
		fmt.Sprintf("attention.attn_bwd_dq_d32<<<8,128>>> b1+0 b2+0 b3+0 b4+0 b5+%d b6+0 b8+0 b8+%d b8+%d 2 100 300 4 2 1 1 %v %v",
			4*nOut, 4*nq, 4*(nq+nk), float32(math.Log2E/math.Sqrt(32)), float32(1/math.Sqrt(32))),
	}
	if len(l.launches) != len(want) {
		t.Fatalf("launches:\n%s", strings.Join(l.launches, "\n"))
	}
	for i := range want {
		if l.launches[i] != want[i] {
			t.Errorf("launch %d:\n got %s\nwant %s", i, l.launches[i], want[i])
		}
	}
	// Sizes past int32 are refused before any launch.
	big := AttentionShape{Batch: 1 << 16, QLen: 1 << 10, KLen: 1 << 10, Heads: 4, KVHeads: 4, HeadDim: 32}
	l.launches = nil
	if err := attentionGPU(big, false).forward.launch(&l, buf(5), in[:3]); err == nil || len(l.launches) != 0 {
		t.Errorf("a shape of 2^33 elements: err %v, %d launches", err, len(l.launches))
	}
}

// attnConfigs repeat graph/cuda/attention.cu's ATTN_INSTANCE lines (the
// kernels assume the block shapes they were compiled for), and every
// instantiation's kernels are in the generated graph/ptx_cuda.go (run
// scripts/gen-ptx.sh after editing the .cu).
func TestAttentionConfigsMatchTheKernels(t *testing.T) {
	src, err := os.ReadFile("cuda/attention.cu")
	if err != nil {
		t.Fatal(err)
	}
	ptx, err := os.ReadFile("ptx_cuda.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^ATTN_INSTANCE\(([0-9, ]+)\)`)
	seen := map[int]bool{}
	for _, m := range re.FindAllStringSubmatch(string(src), -1) {
		var v []int
		for _, f := range strings.Split(m[1], ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				t.Fatal(err)
			}
			v = append(v, n)
		}
		if len(v) != 15 {
			t.Fatalf("ATTN_INSTANCE(%s): want 15 numbers", m[1])
		}
		d := v[0]
		seen[d] = true
		want := attnConfig{fwd: attnBlock{v[3], v[1], v[2]}, kv: attnBlock{v[7], v[5], v[6]}, dq: attnBlock{v[12], v[10], v[11]}}
		if got, ok := attnConfigs[d]; !ok || got != want {
			t.Errorf("d%d: attnConfigs has %+v (%t), attention.cu %+v", d, got, ok, want)
		}
		for _, k := range []string{"attn_fwd", "attn_bwd_dkdv", "attn_bwd_dq"} {
			if name := fmt.Sprintf("%q", k+"_d"+strconv.Itoa(d)); !strings.Contains(string(ptx), name) {
				t.Errorf("graph/ptx_cuda.go has no %s: run scripts/gen-ptx.sh", name)
			}
		}
	}
	for d := range attnConfigs {
		if !seen[d] {
			t.Errorf("attnConfigs has d%d, attention.cu does not instantiate it", d)
		}
	}
}
