"""The guest always ends as it was: a freeze that times out, SIGTERM while frozen, a thaw that fails once.

A stand-in for a libvirt domain records the agent calls; libvirt's test
driver cannot make its guest agent time out or fail once.
"""

from __future__ import annotations

import os
import signal

import libvirt
import pytest

from vmlfs.errors import HypervisorError
from vmlfs.hypervisor import consistent


class Domain:
    def __init__(self, freeze_fails: bool = False, thaw_failures: int = 0) -> None:
        self.calls: list[str] = []
        self.freeze_fails, self.thaw_failures = freeze_fails, thaw_failures

    def name(self) -> str:
        return "cvm"

    def isActive(self) -> bool:
        return True

    def state(self) -> tuple[int, int]:
        return libvirt.VIR_DOMAIN_RUNNING, 1

    def fsFreeze(self, mounts, flags) -> int:
        self.calls.append("freeze")
        if self.freeze_fails:
            raise libvirt.libvirtError("Guest agent is not responding: Guest agent not available for now")
        return 1

    def fsThaw(self, mounts, flags) -> int:
        self.calls.append("thaw")
        if self.thaw_failures:
            self.thaw_failures -= 1
            raise libvirt.libvirtError("Guest agent is not responding")
        return 1


def test_a_freeze_that_timed_out_is_thawed_anyway() -> None:
    dom = Domain(freeze_fails=True)
    with pytest.raises(HypervisorError, match="freezing"):
        with consistent(dom, method="freeze"):
            pytest.fail("must not run unfrozen")
    assert dom.calls == ["freeze", "thaw"]


def test_sigterm_while_frozen_thaws_first() -> None:
    dom = Domain()
    with pytest.raises(KeyboardInterrupt):
        with consistent(dom, method="freeze"):
            os.kill(os.getpid(), signal.SIGTERM)
            pytest.fail("SIGTERM must interrupt the body")
    assert dom.calls == ["freeze", "thaw"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler was only there while frozen


def test_a_thaw_that_fails_once_is_retried(monkeypatch) -> None:
    monkeypatch.setattr("vmlfs.hypervisor.snapshots.time.sleep", lambda s: None)
    dom = Domain(thaw_failures=1)
    with consistent(dom, method="freeze") as how:
        assert how == "frozen"
    assert dom.calls == ["freeze", "thaw", "thaw"]
