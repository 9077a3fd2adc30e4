//go:build !linux

package supervisor

import (
	"context"
	"fmt"
)

// BecomeSubreaper is only supported on Linux; elsewhere it returns
// ErrUnsupported.
func BecomeSubreaper() error { return ErrUnsupported }

// Exec is the exec driver; on systems other than Linux it cannot be created.
type Exec struct{}

// NewExec returns ErrUnsupported on systems other than Linux.
func NewExec(cfg ExecConfig) (*Exec, error) {
	return nil, fmt.Errorf("exec driver: %w", ErrUnsupported)
}

// Start returns ErrUnsupported.
func (d *Exec) Start(ctx context.Context, t Task) (Handle, error) { return nil, ErrUnsupported }

// Adopt returns ErrUnsupported.
func (d *Exec) Adopt(s State) (Handle, error) { return nil, ErrUnsupported }

// Alive is false on systems other than Linux.
func (s State) Alive() bool { return false }
