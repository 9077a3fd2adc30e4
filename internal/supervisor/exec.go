package supervisor

import (
	"log/slog"
	"time"
)

// ExecConfig configures the exec driver. The zero value is usable.
type ExecConfig struct {
	// LogMaxBytes is the size past which a task's stdout or stderr log is
	// rotated; zero means 10 MiB.
	LogMaxBytes int64
	// LogBackups is how many rotated copies of each log are kept; zero
	// means 3, a negative value none.
	LogBackups int
	// PollInterval is how often the driver reads /proc for the memory of
	// each process group, checks log sizes and looks for the end of adopted
	// processes; zero means 500 ms.
	PollInterval time.Duration
	// NoFile is the RLIMIT_NOFILE (soft and hard) given to each process,
	// capped at the agent's own hard limit; zero means 65536.
	NoFile uint64
	// User runs a task that names no user as this user (a name or a
	// numeric uid); empty means the agent's own user.
	User string
	// DenyRoot refuses to run a task as root (uid 0), whether it names
	// root or names no user on an agent that runs as root with no User:
	// Start fails with ErrRootDenied.
	DenyRoot bool
	// Logger receives the driver's own messages; nil discards them.
	Logger *slog.Logger
}

func (c ExecConfig) withDefaults() ExecConfig {
	if c.LogMaxBytes <= 0 {
		c.LogMaxBytes = 10 << 20
	}
	if c.LogBackups == 0 {
		c.LogBackups = 3
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 500 * time.Millisecond
	}
	if c.NoFile == 0 {
		c.NoFile = 65536
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// ExecDriverName is State.Driver for processes the exec driver started.
const ExecDriverName = "exec"
