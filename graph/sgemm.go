package graph

import (
	"fmt"
	"math/bits"
	"runtime"
	"sync"
	"unsafe"
)

// This file is attnlab's single-precision matrix multiply, used by both
// builds where the CPU has AVX2 or AVX-512 (blas_default.go,
// blas_openblas.go). gonum's Sgemm, Gorgonia's default, runs 8-9x below
// OpenBLAS on this hardware; this one follows the GotoBLAS/BLIS structure instead: op(B) is packed into
// panels of kc rows by nr-column slivers, and a register micro-kernel
// computes each mr x nr tile of C from mr rows of op(A) and one B sliver.
// op(A) is read in place through its row and column strides (packing it, as
// BLIS does, cost a third of the time at these sizes); only a ragged last
// row block is copied into a zero-padded sliver. The micro-kernels are Go
// assembly for AVX-512 and AVX2+FMA (sgemm_amd64.s), plus a portable Go one
// that the tests cover but the builds do not pick (gonum's Sgemm is faster);
// every kernel is tested against a naive triple loop over edge shapes,
// transposes, strides, alpha and beta.
//
// Time O(m n k); extra memory: one packed B panel (kc x nc floats) per call,
// reused through a sync.Pool.

// sgemmKernel computes C[0:mr, 0:nr] = alpha A B, plus C's old value if add,
// for one tile: A's element (r, p) is a[r*rs+p*cs], B is k rows of nr packed
// columns (b[p*nr+j]), c points at the tile's top-left element and ldc is C's
// row stride. Without add, C is not read (beta = 0 overwrites NaNs too).
//
// The kernels are called through sgemmKernel.tile, a switch on id rather
// than a func value, so that escape analysis keeps the callers' stack
// buffers on the stack.
type sgemmKernel struct {
	name   string
	id     sgemmKernelID
	mr, nr int
}

type sgemmKernelID int

const (
	goKernel sgemmKernelID = iota
	avx512Kernel
	avx2Kernel
)

// Blocking: kc rows of B per panel, so that one B sliver (kc x nr) stays in
// L1 while the kernel walks down A's rows, and nc columns of B per panel.
const (
	sgemmKC = 256
	sgemmNC = 2048
	// sgemmMCRows is the height of the row blocks the work is split into,
	// in units of mr.
	sgemmMCRows = 16
	// sgemmParallelWork is the m*n*k above which a multiply is split over
	// row blocks run in parallel.
	sgemmParallelWork = 1 << 19
	// A parallel multiply with at most sgemmSplitMN elements of C and a k
	// of at least 2 sgemmSplitK (a weight gradient: X^T dY over every
	// token) is split over k instead, in chunks of sgemmSplitK: its few
	// row blocks would leave workers idle while one packs each k panel.
	sgemmSplitMN = 256 * 256
	sgemmSplitK  = 1024
)

// sgemmBufs pools the packed-B buffers by size class: class c holds
// buffers of 2^c floats, so that multiplies of different sizes do not keep
// replacing each other's buffers.
var sgemmBufs [32]sync.Pool

func getSgemmBuf(n int) (*[]float32, int) {
	c := bits.Len(uint(n - 1))
	if p, ok := sgemmBufs[c].Get().(*[]float32); ok {
		*p = (*p)[:n]
		return p, c
	}
	s := make([]float32, n, 1<<c)
	return &s, c
}

// sgemm computes C = alpha op(A) op(B) + beta C for row-major float32
// matrices with the best micro-kernel this CPU supports.
func sgemm(tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	sgemmWith(bestSgemmKernel, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func sgemmWith(kn *sgemmKernel, tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	checkGemmArgs(tA, tB, m, n, k, len(a), lda, len(b), ldb, len(c), ldc)
	if m*n*k >= sgemmParallelWork && m*n <= sgemmSplitMN && k >= 2*sgemmSplitK && alpha != 0 {
		sgemmSplitOverK(kn, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
		return
	}
	sgemmRun(kn, m*n*k >= sgemmParallelWork, tA, tB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// sgemmSplitOverK computes the product as the sum of the products of
// k chunks of sgemmSplitK, each on one worker into a C of its own, added
// in chunk order: the result does not depend on the number of threads.
func sgemmSplitOverK(kn *sgemmKernel, tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	chunks := (k + sgemmSplitK - 1) / sgemmSplitK
	parts, class := getSgemmBuf(chunks * m * n)
	defer sgemmBufs[class].Put(parts)
	parallelFor(chunks, m*n*sgemmSplitK, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			p0 := ch * sgemmSplitK
			kk := min(sgemmSplitK, k-p0)
			// op(A)'s columns p0.. and op(B)'s rows p0..
			ac, bc := a[p0:], b[p0:]
			if tA {
				ac = a[p0*lda:]
			}
			if !tB {
				bc = b[p0*ldb:]
			}
			sgemmRun(kn, false, tA, tB, m, n, kk, alpha, ac, lda, bc, ldb, 0, (*parts)[ch*m*n:(ch+1)*m*n], n)
		}
	})
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		switch beta {
		case 0:
			clear(row)
		case 1:
		default:
			for j := range row {
				row[j] *= beta
			}
		}
		for ch := 0; ch < chunks; ch++ {
			part := (*parts)[ch*m*n+i*n : ch*m*n+(i+1)*n]
			for j, v := range part {
				row[j] += v
			}
		}
	}
}

// sgemmRun is sgemmWith on checked arguments, over row blocks in parallel
// when parallel is set.
func sgemmRun(kn *sgemmKernel, parallel bool, tA, tB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	// The first k panel overwrites C when beta is 0; otherwise C is scaled
	// by beta first and every panel adds.
	overwrite := beta == 0 && k > 0 && alpha != 0
	if beta != 1 && !overwrite {
		for i := 0; i < m; i++ {
			row := c[i*ldc : i*ldc+n]
			if beta == 0 {
				clear(row)
				continue
			}
			for j := range row {
				row[j] *= beta
			}
		}
	}
	if k == 0 || alpha == 0 {
		return
	}
	mr, nr := kn.mr, kn.nr
	kc := min(k, sgemmKC)
	nc := min(roundUp(n, nr), sgemmNC)
	mc := mr * sgemmMCRows
	if parallel {
		// Enough row blocks for every worker: parallelFor hands each
		// goroutine a contiguous run of blocks.
		workers := runtime.GOMAXPROCS(0)
		mc = min(mc, max(roundUp((m+workers-1)/workers, mr), mr))
	}
	// op(A)'s element (i, p) is a[i*rs+p*cs].
	rs, cs := lda, 1
	if tA {
		rs, cs = 1, lda
	}
	bp, class := getSgemmBuf(kc * nc)
	defer sgemmBufs[class].Put(bp)
	for jc := 0; jc < n; jc += nc {
		ncur := min(nc, n-jc)
		for pc := 0; pc < k; pc += kc {
			kcur := min(kc, k-pc)
			packB(tB, b, ldb, pc, jc, kcur, ncur, nr, *bp)
			add := !overwrite || pc > 0
			if !parallel {
				for ic := 0; ic < m; ic += mc {
					macroKernel(kn, min(mc, m-ic), ncur, kcur, a[ic*rs+pc*cs:], rs, cs, alpha, *bp, c[ic*ldc+jc:], ldc, add)
				}
				continue
			}
			macroKernelsParallel(kn, m, mc, ncur, kcur, a[pc*cs:], rs, cs, alpha, *bp, c[jc:], ldc, add)
		}
	}
}

// macroKernelsParallel runs macroKernel over the row blocks of mc rows in
// parallel. It is a function of its own so that the variables its closure
// captures escape to the heap only on this path, not on every small multiply.
func macroKernelsParallel(kn *sgemmKernel, m, mc, ncur, kcur int, a []float32, rs, cs int, alpha float32, bp, c []float32, ldc int, add bool) {
	parallelFor((m+mc-1)/mc, mc*ncur*kcur, func(lo, hi int) {
		for ib := lo; ib < hi; ib++ {
			ic := ib * mc
			macroKernel(kn, min(mc, m-ic), ncur, kcur, a[ic*rs:], rs, cs, alpha, bp, c[ic*ldc:], ldc, add)
		}
	})
}

// macroKernel runs the micro-kernel over mcur rows of op(A) (element (i, p)
// at a[i*rs+p*cs]) and one packed B panel (kcur x ncur), adding alpha times
// the product into c (row stride ldc), or storing it when add is false. A
// ragged last row block goes through a zero-padded copy (raggedRows) and
// ragged tiles of C through a buffer (edgeTile), so that the kernel never
// reads or writes outside the slices; their stack buffers live in those
// functions so that the common case does not zero them on every call.
func macroKernel(kn *sgemmKernel, mcur, ncur, kcur int, a []float32, rs, cs int, alpha float32, bp, c []float32, ldc int, add bool) {
	mr, nr := kn.mr, kn.nr
	full := mcur / mr * mr
	for jr := 0; jr < ncur; jr += nr {
		nb := &bp[(jr/nr)*nr*kcur]
		w := min(nr, ncur-jr)
		for ir := 0; ir < full; ir += mr {
			if w == nr {
				kn.tile(kcur, &a[ir*rs], rs, cs, nb, &c[ir*ldc+jr], ldc, alpha, add)
			} else {
				edgeTile(kn, mr, w, kcur, &a[ir*rs], rs, cs, nb, c[ir*ldc+jr:], ldc, alpha, add)
			}
		}
	}
	if full < mcur {
		raggedRows(kn, mcur-full, ncur, kcur, a[full*rs:], rs, cs, alpha, bp, c[full*ldc:], ldc, add)
	}
}

// raggedRows is macroKernel for the last h < mr rows, copied into a
// zero-padded sliver.
func raggedRows(kn *sgemmKernel, h, ncur, kcur int, a []float32, rs, cs int, alpha float32, bp, c []float32, ldc int, add bool) {
	mr, nr := kn.mr, kn.nr
	var buf [8 * sgemmKC]float32
	sliver := buf[:mr*kcur]
	for r := 0; r < h; r++ {
		for p := 0; p < kcur; p++ {
			sliver[r+p*mr] = a[r*rs+p*cs]
		}
	}
	for jr := 0; jr < ncur; jr += nr {
		edgeTile(kn, h, min(nr, ncur-jr), kcur, &sliver[0], 1, mr, &bp[(jr/nr)*nr*kcur], c[jr:], ldc, alpha, add)
	}
}

// edgeTile runs the kernel into a buffer and adds (or stores) its top-left
// h x w corner into c.
func edgeTile(kn *sgemmKernel, h, w, kcur int, a *float32, rs, cs int, b *float32, c []float32, ldc int, alpha float32, add bool) {
	nr := kn.nr
	var buf [8 * 32]float32
	t := buf[:kn.mr*nr]
	kn.tile(kcur, a, rs, cs, b, &t[0], nr, alpha, false)
	for r := 0; r < h; r++ {
		row := c[r*ldc : r*ldc+w]
		if !add {
			copy(row, t[r*nr:])
			continue
		}
		for j := range row {
			row[j] += t[r*nr+j]
		}
	}
}

// packB copies op(B)[pc:pc+kcur, jc:jc+ncur] into dst as nr-column slivers,
// each kcur rows of nr values, zero-padding the last sliver.
func packB(tB bool, b []float32, ldb, pc, jc, kcur, ncur, nr int, dst []float32) {
	for jr := 0; jr < ncur; jr += nr {
		s := dst[(jr/nr)*nr*kcur : (jr/nr+1)*nr*kcur]
		w := min(nr, ncur-jr)
		if w < nr {
			clear(s)
		}
		if !tB {
			for p := 0; p < kcur; p++ {
				off := (pc+p)*ldb + jc + jr
				copy(s[p*nr:p*nr+w], b[off:off+w])
			}
			continue
		}
		for j := 0; j < w; j++ {
			col := b[(jc+jr+j)*ldb+pc : (jc+jr+j)*ldb+pc+kcur]
			for p, v := range col {
				s[p*nr+j] = v
			}
		}
	}
}

func roundUp(x, to int) int { return (x + to - 1) / to * to }

// storedShapes are the rows and columns of a and b as stored, for op(a)
// [m, k] and op(b) [k, n].
func storedShapes(tA, tB bool, m, n, k int) (ar, ac, br, bc int) {
	ar, ac, br, bc = m, k, k, n
	if tA {
		ar, ac = k, m
	}
	if tB {
		br, bc = n, k
	}
	return ar, ac, br, bc
}

// checkGemmArgs panics, as a BLAS does, when a slice is too short for the
// shapes: the kernels write through pointers and must not run past a slice.
func checkGemmArgs(tA, tB bool, m, n, k, na, lda, nb, ldb, nc, ldc int) {
	ar, ac, br, bc := storedShapes(tA, tB, m, n, k)
	switch {
	case lda < max(ac, 1) || (ar > 0 && ac > 0 && na < (ar-1)*lda+ac):
		panic(fmt.Sprintf("sgemm: A of %d elements too short for %dx%d, lda %d", na, ar, ac, lda))
	case ldb < max(bc, 1) || (br > 0 && bc > 0 && nb < (br-1)*ldb+bc):
		panic(fmt.Sprintf("sgemm: B of %d elements too short for %dx%d, ldb %d", nb, br, bc, ldb))
	case ldc < max(n, 1) || nc < (m-1)*ldc+n:
		panic(fmt.Sprintf("sgemm: C of %d elements too short for %dx%d, ldc %d", nc, m, n, ldc))
	}
}

// goSgemmKernel is the portable micro-kernel: a 4 x 8 tile held in locals.
var goSgemmKernel = &sgemmKernel{name: "go", id: goKernel, mr: 4, nr: 8}

func goTile4x8(k int, a *float32, rs, cs int, b, c *float32, ldc int, alpha float32, add bool) {
	as := unsafe.Slice(a, 3*rs+(k-1)*cs+1)
	bs := unsafe.Slice(b, 8*k)
	var acc [4][8]float32
	for p := 0; p < k; p++ {
		bv := (*[8]float32)(bs[p*8 : p*8+8])
		for r := 0; r < 4; r++ {
			x := as[r*rs+p*cs]
			acc[r][0] += x * bv[0]
			acc[r][1] += x * bv[1]
			acc[r][2] += x * bv[2]
			acc[r][3] += x * bv[3]
			acc[r][4] += x * bv[4]
			acc[r][5] += x * bv[5]
			acc[r][6] += x * bv[6]
			acc[r][7] += x * bv[7]
		}
	}
	cs2 := unsafe.Slice(c, 3*ldc+8)
	for r := 0; r < 4; r++ {
		row := (*[8]float32)(cs2[r*ldc : r*ldc+8])
		for j := range row {
			if add {
				row[j] += alpha * acc[r][j]
			} else {
				row[j] = alpha * acc[r][j]
			}
		}
	}
}

// bestSgemmKernel is the fastest micro-kernel the CPU supports, chosen once.
var bestSgemmKernel = sgemmKernels()[0]
