"""A token bucket rate limiter.

Tokens drip into a bucket at a fixed ``rate`` per second, up to a maximum
``capacity``. Each request spends one or more tokens; if the bucket does
not hold enough, the request is rejected. This permits short bursts up to
the capacity while enforcing a long-run average rate.
"""

import threading
import time


class TokenBucket:
    """Thread-safe token bucket."""

    def __init__(self, rate, capacity, clock=time.monotonic):
        """``rate`` is tokens per second; ``capacity`` is the burst size."""
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be positive")
        self.rate = float(rate)
        self.capacity = float(capacity)
        self._tokens = float(capacity)  # start full so an initial burst is allowed
        self._clock = clock
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self):
        """Add the tokens accumulated since the last refill."""
        now = self._clock()
        elapsed = now - self._last
        self._last = now
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate)

    def try_acquire(self, tokens=1):
        """Spend ``tokens`` if available and return True, else return False."""
        with self._lock:
            self._refill()
            if self._tokens >= tokens:
                self._tokens -= tokens
                return True
            return False

    def wait_time(self, tokens=1):
        """Seconds until ``tokens`` would be available (0 if available now)."""
        with self._lock:
            self._refill()
            deficit = tokens - self._tokens
            return max(0.0, deficit / self.rate)

    def acquire(self, tokens=1):
        """Block until ``tokens`` can be spent."""
        if tokens > self.capacity:
            raise ValueError("request exceeds bucket capacity")
        while not self.try_acquire(tokens):
            time.sleep(self.wait_time(tokens))


class FakeClock:
    """Manually advanced clock, handy for deterministic tests."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


if __name__ == "__main__":
    clock = FakeClock()
    bucket = TokenBucket(rate=2, capacity=5, clock=clock)
    burst = [bucket.try_acquire() for _ in range(7)]
    print("burst:", burst)               # five allowed, then two rejected
    clock.now += 1.5                     # 1.5 s later: three tokens refilled
    print("after 1.5s:", [bucket.try_acquire() for _ in range(4)])
    print("wait for 1 token:", bucket.wait_time())
