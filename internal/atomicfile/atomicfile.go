// Package atomicfile writes files so that readers never see half of one and a
// crash never leaves one: write a temporary file beside the target, fsync,
// rename.
package atomicfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is a temporary file that becomes path on Commit. Close without
// Commit removes it, leaving path untouched.
type File struct {
	*os.File
	path      string
	committed bool
}

// Create opens a temporary file beside path.
func Create(path string, perm os.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return &File{File: f, path: path}, nil
}

// Commit syncs the file and renames it into place.
func (f *File) Commit() error {
	if f.committed {
		return errors.New("atomicfile: committed twice")
	}
	err := f.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), f.path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", f.path, err)
	}
	f.committed = true
	return nil
}

// Close abandons an uncommitted file; after Commit it does nothing.
func (f *File) Close() error {
	if f.committed {
		return nil
	}
	f.File.Close()
	return os.Remove(f.Name())
}

// Sync fsyncs the file or directory at path. Syncing a directory makes the
// creations, renames and removals in it durable.
func Sync(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// WriteFile replaces path with data, atomically, with the given permissions.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Commit()
}
