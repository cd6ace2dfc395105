"""``[[alarms]]`` rules: how the file is read and refused (each problem names its file, key
and reason on one line), and the pure judgement of a reading with hysteresis."""

from __future__ import annotations

from pathlib import Path

import pytest
from alarms_support import config, write

from softswitch.alarms.rules import METRICS, Reading, active_after
from softswitch.config import ALARM_METRICS, STATS_WINDOWS, AlarmRule, ConfigError, load_config
from softswitch.stats import WINDOWS, Statistics


def problems(tmp_path: Path, extra: str) -> list[str]:
    path = write(tmp_path, extra)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    lines = str(e.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)  # one line each, file first
    return [line.removeprefix(f"{path}: ") for line in lines]


def test_a_rule_with_its_documented_defaults(tmp_path: Path) -> None:
    cfg = config(
        tmp_path,
        '[[alarms]]\nid = "gw_asr"\nmetric = "asr"\nscope = "gateway"\nbelow = 0.3\n',
    )
    (rule,) = cfg.alarms
    assert rule == AlarmRule(
        "gw_asr", "asr", "gateway", key=None, window="15m", below=0.3, min_attempts=0
    )
    assert (rule.actions, rule.interval, rule.clear_at, rule.disables) == (
        ("log",),
        5.0,
        0.3,
        False,
    )


def test_windows_and_metrics_are_those_the_alarms_read() -> None:
    assert tuple(WINDOWS) == STATS_WINDOWS
    assert tuple(METRICS) == ALARM_METRICS


def test_every_problem_is_named(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
[[alarms]]
id = "a"
metric = "asr"
scope = "account"
key = "nobody"
below = 0.3
above = 0.9
actions = ["log", "disable", "page"]

[[alarms]]
id = "a"
metric = "pdd_p95"
scope = "gateway"
above = 8
clear = 9
window = "10m"

[[alarms]]
id = "c"
metric = "asr"
scope = "switch"
key = "gw1"
below = 1.5
clear = 0.2
min_attempts = -1

[[alarms]]
id = "d"
metric = "speed"
scope = "gateway"
key = "gwx"
interval = 0
""",
    )
    assert found == [
        "alarms[0].actions[2]: must be 'log' or 'disable', got 'page'",
        "alarms[0]: set exactly one of below and above",
        "alarms[0].actions: 'disable' takes a gateway out of routing; scope is 'account'",
        "alarms[1].window: must be one of '5m', '15m', '1h', '24h', got '10m'",
        "alarms[1].clear: must be <= above (8): the alarm clears below it",
        "alarms[2].min_attempts: must be >= 0, got -1",
        "alarms[2].below: asr is a ratio from 0 to 1, got 1.5",
        "alarms[2].clear: must be >= below (1.5): the alarm clears above it",
        "alarms[2].key: the switch scope has one key, 'all', got 'gw1'",
        "alarms[3].metric: must be one of 'asr', 'ner', 'acd', 'pdd_avg', 'pdd_p95',"
        " 'attempts', 'concurrent_calls', 'cps', got 'speed'",
        "alarms[3].interval: must be > 0, got 0",
        "alarms[3]: set exactly one of below and above",
        "alarms[0].key: no [[accounts]] with id 'nobody'",
        "alarms[1].id: 'a' already used by alarms[0]",
        "alarms[3].key: no [[gateways]] with id 'gwx'",
    ]


def test_a_clear_on_the_wrong_side_and_an_unknown_key_are_refused(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[[alarms]]\nid = "x"\nmetric = "ner"\nscope = "gateway"\nbelow = 0.5\nclear = 0.4\n'
        "cleer = 0.6\n",
    )
    assert found == [
        "alarms[0].cleer: unknown key (did you mean 'clear'?)",
        "alarms[0].clear: must be >= below (0.5): the alarm clears above it",
    ]


BELOW = AlarmRule("r", "asr", "gateway", below=0.3, clear=0.5, min_attempts=10)
ABOVE = AlarmRule("p", "pdd_p95", "gateway", above=8.0, clear=6.0)


@pytest.mark.parametrize(
    ("rule", "reading", "before", "after"),
    [
        # raised strictly past the threshold, with enough attempts
        (BELOW, Reading(0.29, 10), False, True),
        (BELOW, Reading(0.30, 10), False, False),
        (BELOW, Reading(0.0, 9), False, False),  # too few attempts: no evidence
        (BELOW, Reading(None, 0), False, False),
        # hysteresis: stays raised until back at or above clear
        (BELOW, Reading(0.45, 20), True, True),
        (BELOW, Reading(0.50, 20), True, False),
        (BELOW, Reading(0.10, 9), True, False),  # too few attempts left: it clears
        (ABOVE, Reading(8.5, 1), False, True),
        (ABOVE, Reading(8.0, 1), False, False),
        (ABOVE, Reading(7.0, 1), True, True),
        (ABOVE, Reading(6.0, 1), True, False),
        (ABOVE, Reading(None, 3), True, False),  # nothing rang: nothing to measure
    ],
)
def test_raise_and_clear_with_hysteresis(
    rule: AlarmRule, reading: Reading, before: bool, after: bool
) -> None:
    assert active_after(rule, reading, before) is after


def test_every_metric_reads_a_summary() -> None:
    summary = Statistics().query("gateway", "nobody", "5m", 0.0)
    read = {name: metric(summary) for name, metric in METRICS.items()}
    assert read == {
        "asr": None,
        "ner": None,
        "acd": None,
        "pdd_avg": None,
        "pdd_p95": None,
        "attempts": 0.0,
        "concurrent_calls": 0.0,
        "cps": 0.0,
    }
