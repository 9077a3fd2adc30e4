//go:build !unix

package health

import "os/exec"

// killGroupOnCancel leaves exec's default: kill the process itself.
func killGroupOnCancel(*exec.Cmd) {}
