"""Prime number generation with the Sieve of Eratosthenes.

The classic sieve crosses out multiples of each prime, starting from the
prime's square, leaving only primes unmarked. A segmented variant handles
ranges whose upper bound is too large to sieve in one array.
"""

import math


def sieve(limit):
    """Return a list of all primes <= ``limit``."""
    if limit < 2:
        return []
    # bytearray is compact: one byte per candidate number.
    is_prime = bytearray([1]) * (limit + 1)
    is_prime[0] = is_prime[1] = 0
    for n in range(2, math.isqrt(limit) + 1):
        if is_prime[n]:
            # Smaller multiples were already crossed out by smaller primes.
            is_prime[n * n :: n] = bytes(len(range(n * n, limit + 1, n)))
    return [i for i, flag in enumerate(is_prime) if flag]


def segmented_sieve(low, high):
    """Return primes in the inclusive range [low, high]."""
    if high < 2 or high < low:
        return []
    low = max(low, 2)
    base_primes = sieve(math.isqrt(high))
    marks = bytearray([1]) * (high - low + 1)
    for p in base_primes:
        # First multiple of p inside the segment, but never p itself.
        start = max(p * p, (low + p - 1) // p * p)
        for multiple in range(start, high + 1, p):
            marks[multiple - low] = 0
    return [low + i for i, flag in enumerate(marks) if flag]


def prime_count(limit):
    """Count primes up to ``limit`` (the prime-counting function pi(x))."""
    return len(sieve(limit))


def twin_primes(limit):
    """Return pairs (p, p + 2) where both numbers are prime and <= limit."""
    primes = sieve(limit)
    prime_set = set(primes)
    return [(p, p + 2) for p in primes if p + 2 in prime_set]


if __name__ == "__main__":
    print(sieve(50))
    print("pi(1,000,000) =", prime_count(1_000_000))        # 78498
    print(segmented_sieve(1_000_000_000, 1_000_000_100))
    print(twin_primes(100))
