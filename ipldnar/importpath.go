package ipldnar

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	ipld "github.com/ipfs/go-ipld-format"
	"github.com/nix-community/go-nix/pkg/wire"
)

// ImportPath imports the file, symlink or directory at path exactly as
// `nix-store --dump path` would serialise it: entries sorted by name bytes, a
// regular file executable iff its owner may execute it, symlinks stored as
// such (path itself is not followed either). Other file types (devices,
// sockets, FIFOs) are refused.
//
// The NAR is generated on a second goroutine and fed to Import through a pipe,
// so the result, hashes included, is by construction that of Import on the
// NAR nix-store would produce; the dump overlaps with the import.
func ImportPath(ctx context.Context, path string, dst ipld.DAGService) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	pr, pw := io.Pipe()
	dumpErr := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(pw, 256<<10)
		d := &dumper{ctx: ctx, w: bw}
		err := d.archive(path)
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err) // nil: the reader sees EOF
		dumpErr <- err
	}()
	res, err := Import(ctx, pr, dst)
	// Stop the dump if Import gave up first.
	pr.CloseWithError(errImportDone)
	if derr := <-dumpErr; derr != nil && !errors.Is(derr, errImportDone) {
		// Import failed reading the pipe: the dump's error is the cause
		// and names the file.
		return Result{}, derr
	}
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

var errImportDone = errors.New("import finished")

// dumper writes the NAR of a file system tree, as nix-store --dump does.
type dumper struct {
	ctx   context.Context
	w     *bufio.Writer
	names []string
}

func (d *dumper) fail(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Path: entryPath(d.names), Err: err}
}

func (d *dumper) str(ss ...string) error {
	for _, s := range ss {
		if err := wire.WriteString(d.w, s); err != nil {
			return err
		}
	}
	return nil
}

func (d *dumper) archive(path string) error {
	if err := d.str(narMagic); err != nil {
		return err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return d.fail(err)
	}
	return d.node(path, fi)
}

func (d *dumper) node(p string, fi fs.FileInfo) error {
	if err := d.ctx.Err(); err != nil {
		return d.fail(err)
	}
	var err error
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		err = d.regular(p, fi)
	case mode&fs.ModeSymlink != 0:
		err = d.symlink(p)
	case mode.IsDir():
		err = d.directory(p)
	default:
		err = fmt.Errorf("unsupported file type %s", mode.Type())
	}
	if err != nil {
		return d.fail(err)
	}
	return nil
}

func (d *dumper) regular(p string, fi fs.FileInfo) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi.Mode()&0o100 != 0 { // S_IXUSR, as nix-store --dump
		err = d.str("(", "type", "regular", "executable", "", "contents")
	} else {
		err = d.str("(", "type", "regular", "contents")
	}
	if err != nil {
		return err
	}
	size := fi.Size()
	if err := wire.WriteUint64(d.w, uint64(size)); err != nil {
		return err
	}
	// The size is already written: the file must still have exactly that
	// many bytes.
	n, err := io.Copy(d.w, io.LimitReader(f, size))
	if err != nil {
		return err
	}
	var one [1]byte
	if m, _ := f.Read(one[:]); n != size || m != 0 {
		return fmt.Errorf("file changed size while being read (expected %d bytes)", size)
	}
	if _, err := d.w.Write(zeros[:(8-size%8)%8]); err != nil {
		return err
	}
	return d.str(")")
}

func (d *dumper) symlink(p string) error {
	target, err := os.Readlink(p)
	if err != nil {
		return err
	}
	return d.str("(", "type", "symlink", "target", target, ")")
}

func (d *dumper) directory(p string) error {
	// os.ReadDir sorts by name, and Go compares strings bytewise.
	ents, err := os.ReadDir(p)
	if err != nil {
		return err
	}
	if err := d.str("(", "type", "directory"); err != nil {
		return err
	}
	for _, e := range ents {
		d.names = append(d.names, e.Name())
		fi, err := e.Info()
		if err != nil {
			return d.fail(err)
		}
		if err := d.str("entry", "(", "name", e.Name(), "node"); err != nil {
			return err
		}
		if err := d.node(filepath.Join(p, e.Name()), fi); err != nil {
			return err
		}
		if err := d.str(")"); err != nil {
			return err
		}
		d.names = d.names[:len(d.names)-1]
	}
	return d.str(")")
}
