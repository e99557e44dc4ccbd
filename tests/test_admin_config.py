"""
The configuration keys and checks of the admin hardening: C{admin.max_clients},
and connection names the admin URL space cannot reach.
"""

from __future__ import annotations

import pytest

from supervisor.config import AdminSpec
from supervisor.spec import ConnectionSpec
from tests.test_config import FILE, parse, refused


def test_maxClientsDefaultsTo64() -> None:
    assert parse("").admin.max_clients == 64
    assert AdminSpec().max_clients == 64


def test_maxClientsIsRead() -> None:
    assert parse("[admin]\nmax_clients = 1\n").admin.max_clients == 1


@pytest.mark.parametrize(
    ("value", "got"),
    [("0", "got 0"), ("-1", "got -1"), ("2.5", "got the float 2.5"), ("true", "got the boolean")],
)
def test_maxClientsMustBeAPositiveInteger(value: str, got: str) -> None:
    error = refused(f"[admin]\nmax_clients = {value}\n")
    assert error.keyPath == "admin.max_clients"
    assert str(error).startswith(f"{FILE}: admin.max_clients: expected an integer >= 1, {got}")


@pytest.mark.parametrize("name", [".", ".."])
def test_dotNamesAreRefused(name: str) -> None:
    error = refused(
        '[[connection]]\nname = "ok"\nendpoint = "tcp:host=127.0.0.1:port=1"\n'
        f'[[connection]]\nname = "{name}"\nendpoint = "tcp:host=127.0.0.1:port=1"\n'
    )
    assert str(error) == (
        f"{FILE}: connection[1].name: expected a string matching [A-Za-z0-9_.:-]+ other "
        f'than . and .., got "{name}"'
    )
    with pytest.raises(ValueError, match=r"other than \. and \.\."):
        ConnectionSpec(name, endpoint="tcp:host=127.0.0.1:port=1")


@pytest.mark.parametrize("name", ["...", ".a", "a.", "a..b", "-.-"])
def test_namesWithDotsAreAccepted(name: str) -> None:
    text = f'[[connection]]\nname = "{name}"\nendpoint = "tcp:host=127.0.0.1:port=1"\n'
    assert parse(text).connections[0].name == name
