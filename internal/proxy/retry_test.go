package proxy

import "testing"

func TestRetryVerdict(t *testing.T) {
	get := attempt{idempotent: true, made: 1, instances: 3}
	post := attempt{hasBody: true, made: 1, instances: 3}
	with := func(a attempt, f failure, change func(*attempt)) attempt {
		a.failure = f
		if change != nil {
			change(&a)
		}
		return a
	}
	reused := func(a *attempt) { a.reused = true }
	none := verdict{}
	other := func(reason string) verdict { return verdict{retry: true, budget: true, reason: reason} }
	stale := verdict{retry: true, same: true, reason: "stale"}
	connect := verdict{retry: true, reason: "connect"}

	for _, tc := range []struct {
		name string
		a    attempt
		want verdict
	}{
		{"refused GET goes to another instance for free", with(get, connectFailed, nil), connect},
		{"refused POST too: nothing reached the instance", with(post, connectFailed, nil), connect},
		{"refused TCP connection", attempt{failure: connectFailed, made: 2, instances: 3}, connect},
		{"no attempt past the limit", with(get, connectFailed, func(a *attempt) { a.made = maxAttempts }), none},
		{"last allowed attempt may still retry", with(get, connectFailed, func(a *attempt) { a.made = maxAttempts - 1 }), connect},

		{"stale connection, GET unanswered: same instance, free", with(get, noAnswer, reused), stale},
		{"stale connection, POST not written: same instance, free", with(post, notWritten, reused), stale},
		{"stale connection, POST written but unanswered: never again", with(post, noAnswer, reused), none},
		{"stale connection, DELETE with a body unanswered: not replayable", with(get, noAnswer, func(a *attempt) { a.reused, a.hasBody = true, true }), none},
		{"POST whose body went out: never again", with(post, notWritten, func(a *attempt) { a.reused, a.bodyRead = true, true }), none},
		{"fresh connection, GET unanswered: another instance, paid", with(get, noAnswer, nil), other("reset")},
		{"fresh connection, POST not written: may have begun, never again", with(post, notWritten, nil), none},
		{"fresh connection, GET not written: another instance, paid", with(get, notWritten, nil), other("reset")},

		{"GET cut mid-answer: another instance, paid", with(get, broken, nil), other("reset")},
		{"GET cut on a reused connection is no different", with(get, broken, reused), other("reset")},
		{"POST cut mid-request: never again", with(post, broken, nil), none},
		{"PUT without a body cut: idempotent", with(attempt{idempotent: true, made: 1, instances: 2}, broken, nil), other("reset")},

		{"GET answered 503 with instances left: another, paid", with(get, gatewayError, nil), other("5xx")},
		{"GET answered 503 by the last untried instance: passed on", with(get, gatewayError, func(a *attempt) { a.made = 3 }), none},
		{"GET answered 503 by the only instance: passed on", with(get, gatewayError, func(a *attempt) { a.instances = 1 }), none},
		{"POST answered 503: passed on", with(post, gatewayError, nil), none},

		{"client gone: never", with(get, clientGone, nil), none},
		{"client gone on a reused connection: never", with(get, clientGone, reused), none},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := retryVerdict(tc.a); got != tc.want {
				t.Errorf("retryVerdict(%+v) = %+v, want %+v", tc.a, got, tc.want)
			}
		})
	}
}
