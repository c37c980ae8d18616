package blockmask_test

import (
	"fmt"

	"github.com/attnlab/attnlab/graph/blockmask"
)

// A causal sliding window of 4 keys over 12 positions in tiles of 4: each
// query tile visits its own tile (partially: the diagonal) and the one
// before it (partially: the window's edge), and skips the rest.
func ExampleSlidingWindow() {
	m := blockmask.SlidingWindow(12, 4, 4, true)
	names := map[blockmask.Kind]string{blockmask.Full: "full", blockmask.Partial: "partial"}
	for qt := 0; qt < m.QueryTiles(); qt++ {
		tiles, kinds := m.Row(qt)
		fmt.Printf("query tile %d:", qt)
		for i, kt := range tiles {
			fmt.Printf(" %d (%s)", kt, names[kinds[i]])
		}
		fmt.Println()
	}
	fmt.Printf("visits %.2f of the tiles\n", m.VisitedFraction())
	// Output:
	// query tile 0: 0 (partial)
	// query tile 1: 0 (partial) 1 (partial)
	// query tile 2: 1 (partial) 2 (partial)
	// visits 0.56 of the tiles
}
