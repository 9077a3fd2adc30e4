// Package supervisor runs the instances allocated to this node as local
// processes, keeps them running, and stops them completely.
//
// # Drivers and tasks
//
// A Task is plain data: the command, environment, working directory and user
// of one instance, the ports allocated to it, its memory limit, where its
// logs go and how long it gets to stop. A Driver turns a Task into a running
// process group and returns a Handle to watch and stop it. The exec driver
// (Exec) runs the command directly; a container driver can implement the
// same two methods later.
//
// # Process groups and the subreaper
//
// The exec driver starts every task in a process group of its own, whose id
// is the leader's pid. Whatever the program forks stays in that group unless
// it deliberately leaves it (setsid, setpgid), so one kill(-pgid, sig)
// reaches the whole tree: shells, workers, background helpers.
//
// The agent makes itself a child subreaper once at start-up
// (BecomeSubreaper). A process whose parent exits, such as a daemon that
// double-forks, is then reparented to the agent instead of to init. The
// driver reaps the members of each group that end up as its children, with
// wait4(-pgid), so they do not linger as zombies, and it can tell when a
// group is really empty.
//
// # Output
//
// The process writes its stdout and stderr straight to <id>.stdout.log and
// <id>.stderr.log in the task's log directory, opened for appending; stdin
// is /dev/null. Output does not flow through the agent, so a process keeps
// logging while the agent restarts. Every poll (500 ms by default) the
// driver rotates a file past the size limit: it copies it to .1 (older
// copies move to .2 and so on; the oldest is dropped) and truncates it in
// place. Lines written between the copy and the truncation are lost.
//
// # Limits
//
// Each process gets RLIMIT_NOFILE 65536 (capped at the agent's own hard
// limit) and no core dumps. Memory is enforced by watching: RLIMIT_RSS does
// nothing on Linux, so the driver sums the resident memory of every process
// of the group from /proc at every poll, and kills the group with SIGKILL
// when it exceeds Task.MemoryMB, reporting "memory limit 256 MB exceeded
// (RSS 300 MB)". A process that grows faster than the poll can go over the
// limit between two looks, and pages shared by several processes of the
// group (a forking server's workers) count once per process, so the sum errs
// on the high side. CPU is used for placement only.
//
// # Stopping
//
// Handle.Stop sends SIGTERM to the whole group, waits up to the task's
// StopTimeout (10 s by default) for the group to empty, then sends SIGKILL
// to the group, and returns only once no process of the group remains:
// kill(-pgid, 0) fails with ESRCH, which also means every zombie has been
// reaped. When the leader ends by itself the same sequence ends whatever it
// left behind, so an Exit always means nothing of the task still runs and
// its ports are free.
//
// # Restarts
//
// The Supervisor keeps a desired set of tasks (Apply) running, with one
// goroutine per task. A process that ends without being asked to is started
// again on this node after an exponential backoff: 500 ms ±20% at first
// (so always within a second), doubling up to a cap (30 s by default). A
// process that ran for StableAfter (10 s) resets the backoff and the count.
// After MaxFailures ends within Window (5 in a minute) the supervisor stops
// trying and reports EventFailed, so the scheduler can place the instance
// elsewhere; a start that cannot succeed on this node (an invalid task, an
// unknown user) fails at once. Events (started, exited, failed, stopped)
// go to Config.OnEvent.
//
// Apply stops a task that left the desired set at once: draining it first
// (taking it out of every proxy's view, waiting for in-flight requests) is
// the caller's work, done before the Apply that drops it.
//
// # Adoption
//
// Processes outlive the agent: when Run ends, the supervisor leaves them
// running, and StopAll is the agent's explicit choice. The agent keeps each
// process's State (Supervisor.States), which records the leader's pid, its
// process group, its start time in clock ticks since boot
// (/proc/<pid>/stat field 22) and the kernel's boot id. An agent that
// restarts passes those States to Supervisor.Adopt with its current
// allocations: Orphans sorts them into the processes still allocated
// unchanged, which are watched again, and the others, which are stopped.
// A pid that now belongs to another process has another start time, and a
// reboot changes the boot id, so Adopt refuses both (ErrGone) and never
// signals a stranger. An adopted process is no longer the agent's child
// (it was reparented when the old agent exited), so its end is noticed by
// polling /proc and its exit status is unknown.
//
// For processes to outlive the agent, whatever runs the agent must not kill
// them with it: under systemd, the agent's unit needs KillMode=process (the
// default, control-group, kills every process of the unit's cgroup when the
// agent stops).
//
// # Limitations
//
// A process that leaves its process group escapes both the stop sequence
// and the memory accounting; cgroups would close that gap. A group whose
// leader died while the agent was down is refused by Adopt, and whatever
// else was in it is left running (the error names those pids): after the
// leader's death the group's number could in principle belong to a later
// group, so the driver does not signal it.
package supervisor
