"""The web dashboard in a real browser (headless Chromium through Selenium), on a real
``softswitch run`` with SIPp calls through it.

What the operator sees is checked against what the API says and what the switch does: the
overview's and the gateways' figures equal the API's at the same moment (the page refreshes
every 2 s, so each check reads the API, then the page, until they agree, bounded); a click on
hang-up ends the call (SIPp gets the BYE, the CDR says ``operator_hangup``); a click on
disable sends the next call to the next gateway; the token is asked for once. Screenshots
of every page go to ``test-artefacts/dashboard/`` (git-ignored; ``$SOFTSWITCH_ARTEFACTS``
replaces ``test-artefacts``), for a person to look at.

The browser is Debian's ``chromium`` with its ``chromium-driver`` (``scripts/test.sh``
installs both), one for the whole module; Selenium is told where both are, so it never tries
to download a browser or a driver.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from callflow_harness import LOCAL, free_port
from callflow_net import Account, Carrier, Net, ok

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "dashboard-token"
ARTEFACTS = (
    Path(os.environ.get("SOFTSWITCH_ARTEFACTS", Path(__file__).parents[2] / "test-artefacts"))
    / "dashboard"
)

T = TypeVar("T")


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing and CI is set: run scripts/test.sh, which installs it")
    pytest.skip(f"{what} is missing (scripts/test.sh installs it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (starting one costs a second or two)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium (the [test] extra)")
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        _missing("Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's JS errors
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SE_OFFLINE", "true")  # Selenium Manager: never download anything
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(15)
    driver.set_script_timeout(10)
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\ndashboard screenshots: {ARTEFACTS}")
    try:
        yield driver
    finally:
        driver.quit()


class Dashboard:
    """The page in the browser, and the same switch's API over HTTP (urllib)."""

    def __init__(self, driver: Any, port: int, token: str | None) -> None:
        self.driver = driver
        self.base = f"http://{LOCAL}:{port}"
        self.token = token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def open(self, page: str) -> None:
        self.driver.get(f"{self.base}/#{page}")

    def go(self, page: str) -> None:
        """Click the page's tab, as an operator does."""
        self.click(f'nav a[data-page="{page}"]')

    def click(self, selector: str, confirm: bool = False) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.find_element(By.CSS_SELECTOR, selector).click()
        if confirm:  # the page asks before it changes what the switch does
            WebDriverWait(self.driver, 5).until(expected_conditions.alert_is_present())
            self.driver.switch_to.alert.accept()

    def values(self, selector: str) -> dict[str, Any]:
        """The raw figures (``data-value``, JSON) of the elements ``selector`` matches, by
        id or ``data-field``: read in one script, so all from the same refresh."""
        return dict(
            self.driver.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0])).map(e =>"
                " [e.id || e.dataset.field, e.dataset.value === undefined ? null"
                " : JSON.parse(e.dataset.value)])",
                selector,
            )
        )

    def count(self, selector: str) -> int:
        return len(self.driver.find_elements("css selector", selector))

    def screenshot(self, name: str) -> None:
        assert self.driver.save_screenshot(str(ARTEFACTS / f"{name}.png"))

    def errors(self) -> list[str]:
        """The page's console errors since last asked, but the 401 that asks for the token."""
        logged = self.driver.get_log("browser")
        return [
            e["message"]
            for e in logged
            if e["level"] == "SEVERE" and "status of 401" not in e["message"]
        ]


def until(what: Callable[[], T | None], message: str, timeout: float = 10.0) -> T:
    """``what()`` once it is truthy, polled; bounded (the page refreshes every 2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = what()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (gave up after {timeout} s)")
        time.sleep(0.1)


def agree(read_api: Callable[[], dict[str, Any]], read_page: Callable[[], dict[str, Any]]) -> Any:
    """Read the API, then the page, until the page shows what the API said (the page lags
    the API by up to one refresh); the agreed figures. Bounded."""
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []

    def same() -> dict[str, Any] | None:
        expected = read_api()
        shown = {k: v for k, v in read_page().items() if k in expected}
        seen[:] = [(expected, shown)]
        return expected if shown == expected else None

    try:
        return until(same, "the page never showed the API's figures")
    except AssertionError as e:
        raise AssertionError(f"{e}: API {seen[0][0]} page {seen[0][1]}") from None


def start(
    net: Net, browser: Any, carriers: list[Carrier], accounts: list[Account], **kw: Any
) -> Dashboard:
    port = free_port()
    token = kw.pop("token", None)
    management = f'listen = "{LOCAL}:{port}"' + (f'\ntoken = "{token}"' if token else "")
    net.start_switch(carriers, accounts, management=management, **kw)
    return Dashboard(browser, port, token)


def answered_calls(board: Dashboard, count: int) -> list[dict[str, Any]]:
    """The live calls, once exactly ``count`` are answered (bounded)."""

    def answered() -> list[dict[str, Any]] | None:
        calls = [c for c in board.api("GET", "/api/calls")["calls"] if c["state"] == "answered"]
        return calls if len(calls) == count else None

    return until(answered, f"{count} answered calls")


def test_the_pages_show_the_apis_figures_and_hang_up_ends_the_call(net: Net, browser: Any) -> None:
    a, b = Carrier("a"), Carrier("b")
    # An alarm the two held calls raise: the overview lists it as /api/alarms does.
    busy = "\n".join(
        [
            "[[alarms]]",
            'id = "busy"',
            'metric = "concurrent_calls"',
            'scope = "switch"',
            'window = "5m"',
            "above = 1",
            "interval = 1",
        ]
    )
    board = start(net, browser, [a, b], [Account()], tail=busy)
    board.open("overview")  # no token configured, on loopback: the page just works
    carrier = net.carrier(a, "uas_answer", calls=6)
    ok(net, net.customer("uac_call", calls=4, args=["-d", "100", "-r", "10"], label="short"))
    ok(net, net.customer("uac_refused", number="331234567", fill={"EXPECTED": "404"}))
    first = net.customer("uac_wait_bye", label="first")
    (held,) = answered_calls(board, 1)
    second = net.customer("uac_wait_bye", label="second")
    answered_calls(board, 2)

    # the overview: the switch's figures over the page's window, and the last hour's chart
    window = board.driver.execute_script("return document.getElementById('window').value")

    def switch_api() -> dict[str, Any]:
        s = board.api("GET", f"/api/stats/switch/all?window={window}")["summary"]
        return {
            "ov-calls": s["concurrent"]["current"],
            "ov-cps": s["cps"]["current"],
            "ov-attempts": s["attempts"],
            "ov-answered": s["answered"],
            "ov-asr": s["asr"],
            "ov-acd": s["acd"],
            "ov-pdd": s["pdd"]["avg"],
        }

    shown = agree(switch_api, lambda: board.values("#page-overview dd"))
    assert shown["ov-calls"] == 2
    assert (shown["ov-attempts"], shown["ov-answered"], shown["ov-asr"]) == (5, 4, 0.8)
    latest = until(
        lambda: (
            board.driver.find_element("id", "chart-calls").get_attribute("data-latest") == "2"
            and board.api("GET", "/api/history")["points"][-1]
        ),
        "the chart of calls in progress shows the two calls",
    )
    assert latest["calls"] == 2
    (alarm,) = until(lambda: board.api("GET", "/api/alarms")["alarms"], "the alarm raised")
    assert (alarm["rule"], alarm["key"], alarm["value"]) == ("busy", "all", 2)
    row = until(lambda: board.values('#alarms tr[data-key="busy/all"] [data-field]'), "alarm shown")
    assert (row["id"], row["key"], row["value"]) == ("busy", "all", 2)
    board.screenshot("overview")

    # the gateways: each one's figures over the window, as /api/gateways and /api/stats say
    board.go("gateways")

    def gateway_api(gateway: str) -> Callable[[], dict[str, Any]]:
        def read() -> dict[str, Any]:
            s = board.api("GET", f"/api/stats/gateway/{gateway}?window={window}")["summary"]
            state = board.api("GET", f"/api/gateways/{gateway}")
            return {
                "calls": state["calls"],
                "health": state["health"],
                "attempts": s["attempts"],
                "answered": s["answered"],
                "asr": s["asr"],
                "acd": s["acd"],
                "pdd": s["pdd"]["avg"],
            }

        return read

    for gateway, seizures in (("a", 4), ("b", 0)):
        row = f'#gateways tr[data-key="{gateway}"] [data-field]'
        shown = agree(gateway_api(gateway), lambda row=row: board.values(row))
        assert (shown["attempts"], shown["calls"]) == (seizures, 2 if gateway == "a" else 0)
    board.screenshot("gateways")

    # live calls: the first call's hang-up button ends it
    board.go("calls")
    until(lambda: board.count("#calls tbody tr") == 2, "two live calls shown")
    board.screenshot("calls")
    board.click(f'#calls tr[data-key="{held["id"]}"] button[data-action="hangup"]', confirm=True)
    ok(net, first)  # SIPp got the switch's BYE, answered it, and exited 0
    rows = net.cdrs(6)
    hung = [r for r in rows if r["end_reason"] == "operator_hangup"]
    assert [(r["call_id"], r["hangup_side"]) for r in hung] == [(held["id"], "switch")]
    until(lambda: board.count("#calls tbody tr") == 1, "the call leaves the page")
    (other,) = answered_calls(board, 1)
    board.click(f'#calls tr[data-key="{other["id"]}"] button[data-action="hangup"]', confirm=True)
    ok(net, second, carrier)

    # the CDR search finds the call hung up, and the export link carries the same search
    board.go("cdrs")
    board.driver.find_element("id", "cdr-call-id").send_keys(held["id"])
    board.click("#cdr-search")
    found = until(lambda: board.values("#cdrs tbody [data-field]"), "the CDR found")
    assert (found["call_id"], found["end_reason"], found["gateway_id"]) == (
        held["id"],
        "operator_hangup",
        "a",
    )
    csv_link = board.driver.find_element("id", "cdr-csv").get_attribute("href")
    assert csv_link.startswith(f"{board.base}/api/cdrs.csv?call_id=")
    board.screenshot("cdrs")

    # back on the overview, the chart has followed the calls down to none
    board.go("overview")
    until(
        lambda: board.driver.find_element("id", "chart-calls").get_attribute("data-latest") == "0",
        "the chart of calls in progress falls to 0",
    )
    board.screenshot("overview-after")
    assert board.errors() == []


def test_disabling_a_gateway_from_the_page_moves_the_next_call_with_a_token(
    net: Net, browser: Any
) -> None:
    a, b = Carrier("a"), Carrier("b")
    prepaid = Account("prepaid", tech_prefix="7777", extra=('billing = "prepaid"',))
    board = start(
        net, browser, [a, b], [Account(), prepaid], token=TOKEN, billing="sync_interval = 0.2"
    )
    board.open("gateways")
    # the API answers 401 and the page asks for the token, once
    until(lambda: board.driver.find_element("id", "token-dialog").is_displayed(), "token asked")
    board.screenshot("token")
    board.driver.find_element("id", "token-input").send_keys(TOKEN)
    board.click("#token-submit")
    until(lambda: board.values('#gateways tr[data-key="a"] [data-field]'), "gateways shown")

    # disable gateway a with its button: the next call goes to b
    board.click('#gateways tr[data-key="a"] button[data-action="disable"]', confirm=True)
    assert until(lambda: board.api("GET", "/api/gateways/a")["disabled_by_operator"], "a disabled")
    until(
        lambda: (
            board.values('#gateways tr[data-key="a"] [data-field]')["state"]
            == "disabled (operator)"
        ),
        "the page shows a disabled",
    )
    board.screenshot("gateways-disabled")
    carrier_b = net.carrier(b, "uas_answer")
    ok(net, net.customer("uac_call", args=["-d", "100"]), carrier_b)
    (row,) = net.cdrs(1)
    assert [x["gateway_id"] for x in row["attempts"]] == ["b"]  # a not even tried
    assert row["end_reason"] == "normal_clearing"
    # ...and enabled again from the page
    board.click('#gateways tr[data-key="a"] button[data-action="enable"]', confirm=True)
    assert until(lambda: board.api("GET", "/api/gateways/a")["enabled"], "a enabled")

    # accounts: state and the billed account's balance, as the API's meter says
    board.api("POST", "/api/accounts/prepaid/topup", {"amount": "5", "note": "dashboard"})
    until(
        lambda: board.api("GET", "/api/accounts/prepaid/balance")["live"]["balance"] == "5.000000",
        "the switch's meter reads the top-up",
    )
    board.go("accounts")

    def balance() -> dict[str, Any]:
        live = board.api("GET", "/api/accounts/prepaid/balance")["live"]
        return {"balance": live["balance"], "available": live["available"], "billing": "prepaid"}

    shown = agree(balance, lambda: board.values('#accounts tr[data-key="prepaid"] [data-field]'))
    assert shown["balance"] == "5.000000"
    customer = board.values('#accounts tr[data-key="customer"] [data-field]')
    assert (customer["state"], customer["balance"], customer["attempts"]) == ("enabled", None, 1)
    board.screenshot("accounts")
    assert board.errors() == []
