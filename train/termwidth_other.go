//go:build !unix

package train

import "io"

// terminalWidth is 0 (unknown) where the terminal size is not read: the
// progress line then assumes 80 columns.
func terminalWidth(io.Writer) int { return 0 }
