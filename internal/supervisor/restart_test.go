package supervisor

import (
	"testing"
	"time"
)

func TestRestartsBackoffAndGiveUp(t *testing.T) {
	p := RestartPolicy{Delay: 100 * time.Millisecond, MaxDelay: 400 * time.Millisecond, StableAfter: 10 * time.Second, MaxFailures: 5, Window: time.Minute}
	r := newRestarts(p)
	now := time.Unix(1000, 0)
	// Crashes one second after each start: the delay doubles to the cap.
	wantBase := []time.Duration{100, 200, 400, 400}
	for i, base := range wantBase {
		delay, giveUp := r.next(now, now.Add(time.Second))
		now = now.Add(time.Second + delay)
		lo, hi := base*time.Millisecond*8/10, base*time.Millisecond*12/10
		if giveUp || delay < lo || delay > hi {
			t.Fatalf("failure %d: delay %s giveUp %v, want %s-%s", i+1, delay, giveUp, lo, hi)
		}
		if r.count != i+1 {
			t.Errorf("count %d after %d restarts", r.count, i+1)
		}
	}
	if _, giveUp := r.next(now, now.Add(time.Second)); !giveUp {
		t.Error("5th failure within the window did not give up")
	}
}

func TestRestartsStableRunResets(t *testing.T) {
	r := newRestarts(RestartPolicy{Delay: 100 * time.Millisecond, StableAfter: 10 * time.Second, MaxFailures: 3})
	now := time.Unix(1000, 0)
	r.next(now, now)
	r.next(now, now)
	// A long run forgets the crash loop: the delay is back to the first.
	delay, giveUp := r.next(now, now.Add(time.Minute))
	if giveUp || delay > 120*time.Millisecond {
		t.Errorf("after a stable run: delay %s giveUp %v", delay, giveUp)
	}
}

func TestRestartsWindowForgetsOldFailures(t *testing.T) {
	r := newRestarts(RestartPolicy{StableAfter: time.Hour, MaxFailures: 3, Window: time.Minute})
	now := time.Unix(1000, 0)
	for i := range 10 {
		// Two failures a minute apart never make three within a minute.
		if _, giveUp := r.next(now, now); giveUp {
			t.Fatalf("gave up at failure %d", i+1)
		}
		now = now.Add(31 * time.Second)
	}
}

func TestRestartPolicyDefaultsAndValidate(t *testing.T) {
	p := RestartPolicy{}.withDefaults()
	if p.Delay*12/10 > time.Second {
		t.Errorf("default first restart may wait %s, more than 1s", p.Delay*12/10)
	}
	if err := (RestartPolicy{Delay: time.Second, MaxDelay: time.Millisecond}).Validate(); err == nil {
		t.Error("max delay below delay accepted")
	}
	if err := (RestartPolicy{MaxFailures: -1}).Validate(); err == nil {
		t.Error("negative max failures accepted")
	}
}

func TestRestartPolicyForTask(t *testing.T) {
	p := RestartPolicy{}.withDefaults()
	for _, tt := range []struct {
		name            string
		task            Task
		delay, maxDelay time.Duration
	}{
		{"the node's policy", Task{}, 500 * time.Millisecond, 30 * time.Second},
		{"both given", Task{RestartDelay: 2 * time.Second, RestartMaxDelay: 5 * time.Second}, 2 * time.Second, 5 * time.Second},
		{"delay above the node's cap", Task{RestartDelay: time.Minute}, time.Minute, time.Minute},
		{"cap only", Task{RestartMaxDelay: 2 * time.Second}, 500 * time.Millisecond, 2 * time.Second},
	} {
		got := p.forTask(tt.task)
		if got.Delay != tt.delay || got.MaxDelay != tt.maxDelay || got.MaxFailures != p.MaxFailures {
			t.Errorf("%s: %+v, want delay %s, max %s", tt.name, got, tt.delay, tt.maxDelay)
		}
	}
}
