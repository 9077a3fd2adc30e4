package supervisor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// rotateLog rotates the log file at path if it has grown past max bytes: its
// content is copied aside and the file truncated to zero, then the backups
// path.1 … path.<keep> move up by one (the oldest is dropped) and the copy
// becomes path.1. With keep <= 0 the file is only truncated.
//
// The process keeps writing to its own descriptor, opened with O_APPEND, so
// the file is copied and truncated in place rather than renamed: a renamed
// file would still receive the writes, and an agent that restarts must be
// able to go on rotating the logs of a process it adopts. What the process
// writes between the end of the copy and the truncation, a few system calls
// apart, is lost; rotation happens at most once per check.
func rotateLog(path string, max int64, keep int) (bool, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rotate log: %w", err)
	}
	if fi.Size() <= max {
		return false, nil
	}
	if keep <= 0 {
		if err := os.Truncate(path, 0); err != nil {
			return false, fmt.Errorf("rotate log: %w", err)
		}
		return true, nil
	}
	// Copy first and truncate at once, so the window in which writes are
	// lost is as short as possible; then shift the backups.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".rotating")
	if err := copyFile(path, tmp); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("rotate log %s: %w", path, err)
	}
	if err := os.Truncate(path, 0); err != nil {
		os.Remove(tmp)
		return false, fmt.Errorf("rotate log: %w", err)
	}
	for i := keep - 1; i >= 1; i-- {
		err := os.Rename(path+"."+strconv.Itoa(i), path+"."+strconv.Itoa(i+1))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, fmt.Errorf("rotate log: %w", err)
		}
	}
	if err := os.Rename(tmp, path+".1"); err != nil {
		return false, fmt.Errorf("rotate log: %w", err)
	}
	return true, nil
}

// copyFile copies src to dst, which it creates or truncates.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
