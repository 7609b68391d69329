"""Retry a flaky operation with exponential backoff and jitter.

Transient failures such as network timeouts often succeed on a later try.
Waiting longer after each failure (0.5s, 1s, 2s, ...) avoids hammering a
struggling service, and random jitter keeps many clients from retrying in
lockstep.
"""

import functools
import random
import time


def backoff_delays(base=0.5, factor=2.0, max_delay=30.0, jitter=True):
    """Yield an endless sequence of delays in seconds."""
    delay = base
    while True:
        if jitter:
            # "Full jitter": pick uniformly between zero and the current cap.
            yield random.uniform(0, delay)
        else:
            yield delay
        delay = min(delay * factor, max_delay)


def retry(attempts=5, exceptions=(Exception,), sleep=time.sleep, **backoff):
    """Decorator that retries the wrapped function on the given exceptions.

    The final exception is re-raised when all attempts are used up.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")

    def decorator(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            delays = backoff_delays(**backoff)
            for attempt in range(1, attempts + 1):
                try:
                    return func(*args, **kwargs)
                except exceptions as exc:
                    if attempt == attempts:
                        raise
                    pause = next(delays)
                    print(f"attempt {attempt} failed ({exc!r}); retrying in {pause:.2f}s")
                    sleep(pause)
        return wrapper

    return decorator


class FlakyService:
    """Simulated dependency that fails a fixed number of times."""

    def __init__(self, failures):
        self.remaining_failures = failures
        self.calls = 0

    def fetch(self):
        """Raise ConnectionError until the failure budget is spent."""
        self.calls += 1
        if self.remaining_failures > 0:
            self.remaining_failures -= 1
            raise ConnectionError("upstream timed out")
        return {"status": "ok", "calls": self.calls}


if __name__ == "__main__":
    service = FlakyService(failures=3)
    waits = []

    # Record the delays instead of actually sleeping, so the demo is instant.
    @retry(attempts=5, exceptions=(ConnectionError,), sleep=waits.append, jitter=False)
    def call():
        return service.fetch()

    print(call(), "delays:", waits)
