"""The unit tier's rule holds: a process or a network connection fails the test that tries it (unit/conftest.py)."""

import socket
import subprocess

import pytest
from conftest import TierViolation


def test_starting_a_process_is_refused() -> None:
    with pytest.raises(TierViolation, match=r"started a process \(\['true'\]\)"):
        subprocess.run(["true"], check=True)


def test_connecting_to_the_object_store_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(TierViolation, match="127.0.0.1', 9000"):
        sock.connect(("127.0.0.1", 9000))
