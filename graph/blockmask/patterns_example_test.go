package blockmask_test

import (
	"fmt"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// BigBird over 6 blocks of 4 positions: a window of 3 blocks, block 0
// global (its row and column are full) and one random block per row (as
// RandomBlocks(6, 3, 1, 1, rng) might draw them). Every listed tile is Full:
// the pattern is defined on blocks, and the blocks are the tiles.
func ExampleBigBird() {
	random := [][]int32{nil, {4}, {5}, {1}, {1}, {2}}
	m := blockmask.BigBird(24, 4, 3, 1, random)
	fmt.Println(m.Name)
	for qt := 0; qt < m.QueryTiles(); qt++ {
		tiles, _ := m.Row(qt)
		fmt.Printf("query block %d: %v\n", qt, tiles)
	}
	fmt.Printf("visits %.2f of the tiles\n", m.VisitedFraction())
	// Output:
	// bigbird(window=3,global=1,random=5@fnvce677f4b155ce52a)
	// query block 0: [0 1 2 3 4 5]
	// query block 1: [0 1 2 4]
	// query block 2: [0 1 2 3 5]
	// query block 3: [0 1 2 3 4]
	// query block 4: [0 1 3 4 5]
	// query block 5: [0 2 4 5]
	// visits 0.81 of the tiles
}

// LongNet segments of 6 positions in tiles of 4: a segment boundary that
// crosses a tile makes it Partial.
func ExampleSegments() {
	m := blockmask.Segments(12, 4, 6)
	names := map[blockmask.Kind]string{blockmask.Full: "full", blockmask.Partial: "partial"}
	for qt := 0; qt < m.QueryTiles(); qt++ {
		tiles, kinds := m.Row(qt)
		fmt.Printf("query tile %d:", qt)
		for i, kt := range tiles {
			fmt.Printf(" %d (%s)", kt, names[kinds[i]])
		}
		fmt.Println()
	}
	// Output:
	// query tile 0: 0 (full) 1 (partial)
	// query tile 1: 0 (partial) 1 (partial) 2 (partial)
	// query tile 2: 1 (partial) 2 (full)
}
