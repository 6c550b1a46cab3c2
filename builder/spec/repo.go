package spec

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"

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

// readLimited reads name from repo: a regular file of at most MaxFileSize,
// inside the repository. Its size is checked before it is opened (a
// repository over the GitHub API reports sizes without downloading), and
// again while it is read.
func readLimited(repo fs.FS, name string) ([]byte, error) {
	if repo == nil {
		return nil, errors.New("no repository to read it from")
	}
	if !fs.ValidPath(name) {
		return nil, fmt.Errorf("%q is not a path inside the repository", name)
	}
	fi, err := fs.Stat(repo, name)
	if err != nil {
		return nil, describeOpenErr(repo, name, err)
	}
	switch {
	case fi.IsDir():
		return nil, errors.New("is a directory, not a file")
	case !fi.Mode().IsRegular():
		// A FIFO would block the read; a device is no script.
		return nil, fmt.Errorf("is not a regular file (%s): imagegen reads only regular files", fi.Mode().Type())
	case fi.Size() > MaxFileSize:
		return nil, tooLarge(fi.Size())
	}
	f, err := repo.Open(name)
	if err != nil {
		return nil, describeOpenErr(repo, name, err)
	}
	defer f.Close()
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

// describeOpenErr says why name cannot be opened, as the rest of a sentence
// that begins with the name.
func describeOpenErr(repo fs.FS, name string, err error) error {
	fi, lerr := fs.Lstat(repo, name)
	isLink := lerr == nil && fi.Mode()&fs.ModeSymlink != 0
	var pe *fs.PathError
	switch {
	case errors.Is(err, syscall.ELOOP) && isLink:
		return errors.New("is a symlink that leads back to itself: imagegen reads only regular files")
	case errors.Is(err, syscall.ELOOP):
		return errors.New("leads through a symlink that leads back to itself: imagegen reads only regular files")
	case isLink && !errors.Is(err, fs.ErrNotExist):
		return errors.New("is a symlink leading out of the repository: imagegen reads only files inside it")
	case strings.Contains(err.Error(), "escapes"):
		return errors.New("leads out of the repository through a symlink: imagegen reads only files inside it")
	case errors.Is(err, fs.ErrNotExist):
		return errors.New("does not exist in the repository")
	case errors.Is(err, fs.ErrPermission) && errors.As(err, &pe):
		if errno := syscall.Errno(0); errors.As(pe.Err, &errno) {
			return fmt.Errorf("cannot be read: %w", pe.Err)
		}
		// A refusal (a repository read over the GitHub API) says why itself.
		return pe.Err
	}
	return err
}
