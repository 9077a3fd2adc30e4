package supervisor

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/prometheus/procfs"
	"golang.org/x/sys/unix"
)

// BecomeSubreaper makes the calling process a child subreaper
// (prctl PR_SET_CHILD_SUBREAPER): a process orphaned anywhere below it is
// reparented to it instead of to init, so the exec driver can reap the
// grandchildren of the processes it starts. The agent calls it once, early;
// the setting holds for the whole process.
func BecomeSubreaper() error {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("become child subreaper (prctl PR_SET_CHILD_SUBREAPER): %w", err)
	}
	return nil
}

// bootID returns the kernel's boot id, which changes at every boot.
func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// procInfo is what the driver reads from /proc/<pid>/stat.
type procInfo struct {
	pgrp      int
	startTime uint64 // clock ticks since boot (field 22)
	state     string // "R", "S", "Z"...
	rss       int64  // bytes
}

// readProc reads /proc/<pid>/stat; a pid that does not exist yields an
// error wrapping os.ErrNotExist.
func readProc(fs procfs.FS, pid int) (procInfo, error) {
	p, err := fs.Proc(pid)
	if err != nil {
		return procInfo{}, err
	}
	st, err := p.Stat()
	if err != nil {
		return procInfo{}, err
	}
	return procInfo{pgrp: st.PGRP, startTime: st.Starttime, state: st.State, rss: int64(st.ResidentMemory())}, nil
}

// groupRSS sums the resident memory of every process in each of the given
// process groups, in one pass over /proc.
func groupRSS(fs procfs.FS, pgids map[int]bool) (map[int]int64, error) {
	procs, err := fs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	sum := make(map[int]int64, len(pgids))
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue // it exited while we looked
		}
		if pgids[st.PGRP] {
			sum[st.PGRP] += int64(st.ResidentMemory())
		}
	}
	return sum, nil
}

// groupGone reports whether no process, zombies included, is left in
// process group pgid.
func groupGone(pgid int) bool {
	return errors.Is(unix.Kill(-pgid, 0), unix.ESRCH)
}

// Alive reports whether the process s describes still runs: the same boot,
// a live leader with the recorded start time, still leading its group. A
// process that is not the caller's child can be checked (and its group
// signalled) safely only after this says so: a pid or a group number may
// have been reused.
func (s State) Alive() bool {
	id, err := bootID()
	if err != nil || id != s.BootID || s.Pid <= 1 {
		return false
	}
	fs, err := procfs.NewFS(procfs.DefaultMountPoint)
	if err != nil {
		return false
	}
	info, err := readProc(fs, s.Pid)
	return err == nil && info.startTime == s.StartTime && info.pgrp == s.Pgid && info.state != "Z" && info.state != "X"
}
