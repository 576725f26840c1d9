// Package secretfile reads files that hold secrets (tokens, passwords),
// refusing any that others than the owner may read, as ssh does for keys.
package secretfile

import (
	"fmt"
	"os"
)

// Read returns the contents of name, or an error if its mode lets the group
// or others read it.
func Read(name string) ([]byte, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is readable by others (mode %v): chmod 600 it", name, fi.Mode().Perm())
	}
	return os.ReadFile(name)
}
