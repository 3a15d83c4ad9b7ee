"""The AUTH failure throttle: free tries, growing delays, lockout, expiry, reset on success."""

from __future__ import annotations

from gateway.stores.throttle import AuthThrottle, Throttle


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_delay_grows_then_locks_then_expires() -> None:
    """Two free failures, then growing delays, then a lock that wears off."""
    clock = FakeClock()
    throttle = AuthThrottle(max_failures=5, lockout_seconds=60, free_failures=2, delay_step=0.5,
                            clock=clock)
    verdicts = [throttle.failure("192.0.2.1") for _ in range(4)]
    assert [v.throttle for v in verdicts] == [Throttle.ANSWER] * 4
    assert [v.delay for v in verdicts] == [0.0, 0.0, 0.5, 1.0]
    assert throttle.failure("192.0.2.1").throttle is Throttle.LOCK
    assert throttle.is_locked("192.0.2.1")
    assert not throttle.is_locked("192.0.2.2")
    clock.now += 61
    assert not throttle.is_locked("192.0.2.1")
    assert throttle.failure("192.0.2.1").delay == 0.0


def test_success_forgets_failures() -> None:
    """A correct login clears the address's count."""
    throttle = AuthThrottle(max_failures=3, clock=FakeClock())
    throttle.failure("192.0.2.1")
    throttle.failure("192.0.2.1")
    throttle.success("192.0.2.1")
    assert throttle.failure("192.0.2.1").throttle is Throttle.ANSWER
    assert not throttle.is_locked("192.0.2.1")
