//go:build !unix

package train

import "os"

// TerminalWidth is 0 (unknown) where the terminal size is not read: the
// progress line then assumes 80 columns.
func TerminalWidth(*os.File) int { return 0 }
