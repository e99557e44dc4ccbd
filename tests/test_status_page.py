"""
The status page at C{/} and what it reads: the page and its files, their
headers (content types, Content-Security-Policy, nosniff), content
negotiation with the JSON index, C{GET /connections?transitions=K}, and a
static guard against HTML parsing in the page's script.
"""

from __future__ import annotations

import json
import re
from importlib import resources

import pytest

from supervisor.admin.resources import PAGE_POLICY, wantsHTML
from tests.test_admin import JSON, SUMMARY_KEYS, Client, fleetWith
from tests.test_metrics import Fleet

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
PAGE = "text/html; charset=utf-8"
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'"


def packageFile(name: str) -> bytes:
    return resources.files("supervisor.admin").joinpath(name).read_bytes()


def directives(policy: str) -> dict[str, list[str]]:
    parsed = {}
    for directive in policy.split(";"):
        name, *values = directive.split()
        parsed[name] = values
    return parsed


# The page ------------------------------------------------------------------


def test_aBrowserGetsThePage() -> None:
    answer = Client(fleetWith("a")).get("/", headers={"Accept": BROWSER})
    assert answer.code == 200
    assert answer.header("content-type") == PAGE
    assert answer.header("x-content-type-options") == "nosniff"
    assert answer.header("cache-control") == "no-store"
    assert answer.header("vary") == "Accept"
    assert answer.header("referrer-policy") == "no-referrer"
    assert answer.body == packageFile("status.html")
    assert answer.body.startswith(b"<!doctype html>")
    assert b'<script src="status.js" defer></script>' in answer.body
    assert b'<link rel="stylesheet" href="status.css">' in answer.body


def test_thePageHasAStrictContentSecurityPolicy() -> None:
    answer = Client(fleetWith("a")).get("/", headers={"Accept": BROWSER})
    policy = answer.header("content-security-policy")
    assert policy == PAGE_POLICY.decode()
    assert directives(policy) == {
        "default-src": ["'none'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "connect-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "base-uri": ["'none'"],
        "form-action": ["'none'"],
        "frame-ancestors": ["'none'"],
        "require-trusted-types-for": ["'script'"],
        "trusted-types": ["'none'"],
    }
    assert "unsafe" not in policy


@pytest.mark.parametrize(
    ("path", "contentType", "name"),
    [
        ("/status.js", "text/javascript; charset=utf-8", "status.js"),
        ("/status.css", "text/css; charset=utf-8", "status.css"),
    ],
)
def test_thePageFiles(path: str, contentType: str, name: str) -> None:
    client = Client(fleetWith("a"))
    answer = client.get(path)
    assert answer.code == 200
    assert answer.header("content-type") == contentType
    assert answer.header("x-content-type-options") == "nosniff"
    assert answer.header("content-security-policy") == PAGE_POLICY.decode()
    assert answer.body == packageFile(name)
    head = client.request("HEAD", path)
    assert (head.code, head.body) == (200, b"")
    assert head.header("content-type") == contentType
    assert client.get(path + "/more").code == 404
    wrong = client.request("POST", path)
    assert wrong.code == 405 and wrong.header("allow") == "GET, HEAD"


def test_headOfThePage() -> None:
    answer = Client(fleetWith("a")).request("HEAD", "/", headers={"Accept": BROWSER})
    assert answer.code == 200
    assert answer.body == b""
    assert answer.header("content-type") == PAGE
    assert answer.header("content-security-policy") == PAGE_POLICY.decode()


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        "application/json",
        "text/*",
        "application/json, text/html",
        "text/html;q=0.5, application/json",
        "text/html;q=0, */*",
        "text/html;q=oops",
    ],
)
def test_scriptsStillGetTheJSONIndex(accept: str | None) -> None:
    headers = {} if accept is None else {"Accept": accept}
    answer = Client(fleetWith("a")).get("/", headers=headers)
    assert answer.code == 200
    assert answer.json()["paths"][:4] == ["/metrics", "/healthz", "/readyz", "/connections"]
    assert answer.header("vary") == "Accept"
    assert answer.header("content-security-policy") == OTHER_POLICY


@pytest.mark.parametrize(
    ("accept", "html"),
    [
        (BROWSER, True),
        ("text/html", True),
        ("TEXT/HTML; charset=utf-8", True),
        ("application/xhtml+xml", True),
        ("text/html, application/json;q=0.9", True),
        ("text/html;q=0.4, application/json;q=0.3", True),
        ("", False),
        ("application/json;q=1, text/html;q=1", False),
        ("text/plain", False),
    ],
)
def test_wantsHTML(accept: str, html: bool) -> None:
    assert wantsHTML(accept.encode()) is html


def test_everyOtherAnswerForbidsRunningAnything() -> None:
    client = Client(fleetWith("a"))
    for path in ("/healthz", "/connections", "/connections/a", "/nope"):
        assert client.get(path).header("content-security-policy") == OTHER_POLICY, path


# A static guard: no value is ever parsed as HTML -----------------------------

FILES = ("status.html", "status.js", "status.css")


@pytest.mark.parametrize("name", FILES)
def test_noHTMLParsingNorEvalInThePage(name: str) -> None:
    text = packageFile(name).decode()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "createContextualFragment",
        "DOMParser",
        "srcdoc",
        "eval(",
        "Function(",
        "javascript:",
    ):
        assert sink not in text, f"{sink} in {name}"
    # No external asset: every URL is relative to the admin port.
    assert re.search(r"(https?:)?//[a-z0-9]", text, re.IGNORECASE) is None, name


def test_noInlineScriptOrStyleInThePage() -> None:
    html = packageFile("status.html").decode()
    assert re.findall(r"<script\b[^>]*>", html) == ['<script src="status.js" defer>']
    assert "</script>" in html and re.search(r"<script[^>]*>\s*\S+\s*</script>", html) is None
    assert "<style" not in html
    assert re.search(r"\sstyle\s*=", html) is None
    assert re.search(r"\son[a-z]+\s*=", html) is None


def test_theScriptWritesTextOnly() -> None:
    script = packageFile("status.js").decode()
    assert '"use strict";' in script
    assert "textContent" in script and "createElement" in script
    # The data comes from /connections with a timeline and from /breakers,
    # relative to the page.
    assert 'const SOURCE = "connections?transitions=" + TIMELINE;' in script
    assert 'const BREAKERS = "breakers";' in script


# GET /connections?transitions=K ------------------------------------------------


def flapped() -> Fleet:
    """
    C{a} with five transitions (refused, retried, established, lost), C{b}
    with two.
    """
    fleet = fleetWith("a", "b").start()
    fleet.refuse("a")
    fleet.advance(1.0)
    fleet.lose(fleet.accept("a"))
    fleet.refuse("b")
    return fleet


def test_withoutTheParameterTheListIsUnchanged() -> None:
    fleet = flapped()
    client = Client(fleet)
    answer = client.get("/connections")
    body = answer.json()
    for c in body:
        assert set(c) == SUMMARY_KEYS
    details = [client.get(f"/connections/{n}").json() for n in ("a", "b")]
    for detail in details:
        del detail["transitions"], detail["endpoint_attempts"]
    assert body == details
    expected = json.dumps(details, ensure_ascii=False, allow_nan=False).encode() + b"\n"
    assert answer.body == expected
    # An unknown parameter is ignored, as it always was.
    assert client.get("/connections?other=1").body == answer.body
    fleet.stop()


@pytest.mark.parametrize("count", [0, 1, 3, 5, 50])
def test_transitionsParameter(count: int) -> None:
    fleet = flapped()
    client = Client(fleet)
    answer = client.get(f"/connections?transitions={count}")
    assert answer.code == 200
    body = answer.json()
    assert [c["name"] for c in body] == ["a", "b"]
    assert [len(c["transitions"]) for c in body] == [min(count, 5), min(count, 2)]
    for c in body:
        assert set(c) == SUMMARY_KEYS | {"transitions"}
        detail = client.get(f"/connections/{c['name']}").json()
        everything = detail.pop("transitions")
        del detail["endpoint_attempts"]
        assert c.pop("transitions") == everything[len(everything) - min(count, len(everything)) :]
        assert c == detail
    assert client.get(f"/connections/?transitions={count}").body == answer.body
    fleet.stop()


def test_transitionsAreTheLastOnesOldestFirst() -> None:
    fleet = flapped()
    [a, _] = Client(fleet).get("/connections?transitions=2").json()
    assert a["transitions"] == [
        {"time": 1.0, "from": "CONNECTING", "to": "ESTABLISHED", "reason": "ready"},
        {"time": 1.0, "from": "ESTABLISHED", "to": "IDLE", "reason": "lost"},
    ]
    fleet.stop()


@pytest.mark.parametrize(
    "query",
    [
        "transitions=",
        "transitions=-1",
        "transitions=51",
        "transitions=1000",
        "transitions=abc",
        "transitions=1.5",
        "transitions=0x10",
        "transitions=%203",
        "transitions=%EF%BC%93",  # a full-width digit three
        "transitions=3&transitions=4",
    ],
)
def test_aBadTransitionsParameterIs400(query: str) -> None:
    client = Client(fleetWith("a"))
    answer = client.get("/connections?" + query)
    assert answer.code == 400
    assert answer.header("content-type") == JSON
    assert answer.json() == {"error": "transitions must be one integer from 0 to 50"}
    head = client.request("HEAD", "/connections?" + query)
    assert (head.code, head.body) == (400, b"")


def test_theServerClockComesWithTheList() -> None:
    fleet = fleetWith("a")
    fleet.reactor.advance(1767225600.25)
    client = Client(fleet)
    for path in ("/connections", "/connections?transitions=3"):
        answer = client.get(path)
        assert answer.header("netsupervisor-time") == "1767225600.25"
