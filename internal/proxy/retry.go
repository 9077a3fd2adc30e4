package proxy

// The one rule for sending a request again, shared by the HTTP/1.1 path
// (h1forward.go), the HTTP/2 path (RoundTrip in http.go) and the TCP
// proxy (tcp.go). It is a pure function of what happened to an attempt;
// the loops around it do the I/O, spend the retry budget and count the
// metric.

// failure is what went wrong with one attempt to send a request (or, for
// the TCP proxy, a connection) to an instance.
type failure uint8

const (
	// connectFailed: no connection to the instance could be opened, so
	// nothing reached it.
	connectFailed failure = iota + 1
	// notWritten: the connection broke before the whole request was
	// written to it.
	notWritten
	// noAnswer: the request was written, and the connection ended (EOF,
	// reset) before the first byte of an answer.
	noAnswer
	// broken: the connection broke or timed out once the instance may
	// have started on the request.
	broken
	// gatewayError: the instance answered 502, 503 or 504.
	gatewayError
	// clientGone: the client broke off its own request.
	clientGone
)

// attempt is what the retry rule looks at after an attempt failed.
type attempt struct {
	failure failure
	// idempotent: the method may be applied twice (RFC 9110: GET, HEAD,
	// OPTIONS, TRACE, PUT, DELETE).
	idempotent bool
	// hasBody: the request has a body; it is streamed, not kept, so it
	// cannot be sent twice once read.
	hasBody bool
	// bodyRead: some of the body was read from the client and went out.
	bodyRead bool
	// reused: the attempt used a pooled keep-alive connection, which the
	// instance may have closed a moment before (its idle timeout) without
	// the proxy seeing it yet.
	reused bool
	// made: attempts made so far, this one included.
	made int
	// instances: instances in the service's pool.
	instances int
}

// verdict is the rule's answer.
type verdict struct {
	retry bool
	// same: send again to the same instance, on a new connection (the
	// failure was a stale keep-alive connection, not the instance);
	// otherwise to another instance.
	same bool
	// budget: the retry must be paid from the service's retry budget.
	budget bool
	// reason labels tandem_proxy_retries_total.
	reason string
}

// retryVerdict decides whether a failed attempt is sent again, where, and
// whether it costs retry budget:
//
//   - never past maxAttempts, for a client that is gone, or once part of
//     the body went out;
//   - always, to another instance and for free, when no connection could be
//     opened: nothing reached the instance;
//   - to the same instance on a new connection, for free, when a reused
//     connection broke before the request was written, or when it ended
//     before the first answer byte and the request can be replayed (an
//     idempotent method, no body): the instance closed an idle connection
//     as the request went out, as HTTP/1.1 allows (RFC 9112, section
//     9.3.1), which says nothing about the instance;
//   - for an idempotent request without a body, to another instance inside
//     the budget, when the instance died mid-request or timed out, and on
//     502/503/504 while an untried instance is left;
//   - otherwise not: a request that may have reached an instance is never
//     sent again unless it is idempotent, so a POST is never applied twice.
func retryVerdict(a attempt) verdict {
	if a.made >= maxAttempts || a.failure == clientGone || a.bodyRead {
		return verdict{}
	}
	replayable := a.idempotent && !a.hasBody
	switch a.failure {
	case connectFailed:
		return verdict{retry: true, reason: "connect"}
	case notWritten, noAnswer:
		if a.reused && (a.failure == notWritten || replayable) {
			return verdict{retry: true, same: true, reason: "stale"}
		}
		if replayable {
			return verdict{retry: true, budget: true, reason: "reset"}
		}
	case broken:
		if replayable {
			return verdict{retry: true, budget: true, reason: "reset"}
		}
	case gatewayError:
		if replayable && a.made < a.instances {
			return verdict{retry: true, budget: true, reason: "5xx"}
		}
	}
	return verdict{}
}
