package spec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/imagegen/imagegen/internal/strictyaml"
)

// OpenRepo returns an fs.FS over the local directory dir that refuses paths
// and symlinks leading out of it, so a spec cannot read the host's files.
func OpenRepo(dir string) (fs.FS, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("open repository: %w", err)
	}
	return root.FS(), nil
}

// readLimited reads name from repo, refusing files over MaxFileSize without
// reading them whole, and symlinks out of the repository.
func readLimited(repo fs.FS, name string) ([]byte, error) {
	if repo == nil {
		return nil, errors.New("no repository to read it from")
	}
	if !fs.ValidPath(name) {
		return nil, fmt.Errorf("%q is not a path inside the repository", name)
	}
	f, err := repo.Open(name)
	if err != nil {
		return nil, describeOpenErr(repo, name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, errors.New("is a directory, not a file")
	}
	if fi.Size() > MaxFileSize {
		return nil, tooLarge(fi.Size())
	}
	// Stat may lie (a file still growing): cap the read itself too.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, tooLarge(int64(len(data)))
	}
	return data, nil
}

func tooLarge(n int64) error {
	return errors.New(strictyaml.TooLarge(n, MaxFileSize) + ": have the script download large content instead")
}

func describeOpenErr(repo fs.FS, name string, err error) error {
	if fi, lerr := fs.Lstat(repo, name); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 && !errors.Is(err, fs.ErrNotExist) {
		return errors.New("is a symlink leading out of the repository: imagegen reads only files inside it")
	}
	if strings.Contains(err.Error(), "escapes") {
		return errors.New("leads out of the repository through a symlink: imagegen reads only files inside it")
	}
	if errors.Is(err, fs.ErrNotExist) {
		return errors.New("does not exist in the repository")
	}
	return err
}
