"""The alarms of one running switch: its rules, which alarms are raised now, and their
actions. ``Alarms.evaluate(now, wall)`` does one round; nothing here reads a clock or
touches asyncio (``runner`` does), so tests drive it by hand against a ``Statistics`` fed
with events.

An alarm is one rule on one key: ``gw_asr`` on gateway ``carrier_a``. Raising and clearing
each log one WARNING (``event=alarm_raised`` / ``event=alarm_cleared``, with the rule, key,
value and threshold in the message and as structured extras), set the Prometheus gauge
``softswitch_alarm_active{rule,key}`` and, for a rule with action ``disable``, take the
gateway out of selection (``LiveState.set_gateway_alarm``: the select stage skips it with
reason ``alarm <rule id>``) or put it back.

The object lives as long as the ``Switch``, so a SIGHUP reload keeps the alarms raised:
:meth:`configure` swaps the rules, keeps each raised alarm whose rule id and key are still
there (judged by the new rule at its next evaluation), and clears, with its log line, every
other one (its rule was removed, or its key is no longer configured).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from softswitch.call.live import LiveState
from softswitch.config import AlarmRule, Config
from softswitch.stats import SWITCH_KEY, Statistics

from .rules import Reading, active_after, read

if TYPE_CHECKING:
    from softswitch.stats.prometheus import Metrics

__all__ = ["ActiveAlarm", "Alarms", "Change", "scope_keys"]

logger = logging.getLogger("softswitch.alarms")


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """A raised alarm as the API shows it: its rule, key, the latest value and since when."""

    rule: str
    scope: str
    key: str
    metric: str
    window: str
    #: ``below`` or ``above``, and the threshold; ``clear`` is where it clears.
    direction: str
    threshold: float
    clear: float
    #: The metric at the latest evaluation (None: no longer measurable; it then clears).
    value: float | None
    attempts: int
    actions: tuple[str, ...]
    #: Wall-clock (epoch seconds) and monotonic times it was raised.
    since: float
    since_monotonic: float

    def view(self) -> dict[str, Any]:
        """JSON-ready, for the management API."""
        return {
            "rule": self.rule,
            "scope": self.scope,
            "key": self.key,
            "metric": self.metric,
            "window": self.window,
            self.direction: self.threshold,
            "clear": self.clear,
            "value": self.value,
            "attempts": self.attempts,
            "actions": list(self.actions),
            "since": dt.datetime.fromtimestamp(self.since, dt.UTC).isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Change:
    """An alarm raised or cleared by a round (or a reload), with why it cleared."""

    alarm: ActiveAlarm
    raised: bool
    why: str = ""


def scope_keys(config: Config, scope: str) -> tuple[str, ...]:
    """The keys a rule without ``key`` watches: every enabled gateway or account of the
    configuration, or the switch's one."""
    if scope == "gateway":
        return tuple(g.id for g in config.gateways if g.enabled)
    if scope == "account":
        return tuple(a.id for a in config.accounts if a.enabled)
    return (SWITCH_KEY,)


def _shown(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


class Alarms:
    """Rules, raised alarms and their actions; run on the event loop only (no locks)."""

    def __init__(
        self, stats: Statistics, live: LiveState, *, metrics: Metrics | None = None
    ) -> None:
        self.stats = stats
        self.live = live
        self.metrics = metrics
        self.rules: tuple[AlarmRule, ...] = ()
        #: Each rule's keys (its ``key``, or every one of its scope).
        self._keys: dict[str, tuple[str, ...]] = {}
        #: Rule id -> monotonic time of its next evaluation.
        self._due: dict[str, float] = {}
        #: (rule id, key) -> the raised alarm.
        self._active: dict[tuple[str, str], ActiveAlarm] = {}

    # -- configuration ------------------------------------------------------------------

    def configure(self, config: Config, now: float) -> list[Change]:
        """Take the configuration's rules (a start, a reload); the alarms cleared because
        their rule or key is gone. New and changed rules are evaluated at the next round."""
        old = {r.id: r for r in self.rules}
        self.rules = config.alarms
        self._keys = {
            r.id: (r.key,) if r.key is not None else scope_keys(config, r.scope)
            for r in config.alarms
        }
        self._due = {
            r.id: self._due.get(r.id, now) if old.get(r.id) == r else now for r in config.alarms
        }
        rules = {r.id: r for r in config.alarms}
        changes: list[Change] = []
        for (rule_id, key), alarm in list(self._active.items()):
            rule = rules.get(rule_id)
            if rule is None or rule.scope != alarm.scope or key not in self._keys[rule_id]:
                why = "rule removed" if rule is None else "rule no longer watches the key"
                changes.append(self._clear(alarm, alarm.value, alarm.attempts, now, why))
            elif rule.scope == "gateway":  # actions may have changed: apply the new ones
                self.live.set_gateway_alarm(key, rule_id, rule.disables)
        return changes

    # -- evaluation -----------------------------------------------------------------------

    def due_in(self, now: float) -> float | None:
        """Seconds until a rule is due (0 if one is); None when there are no rules."""
        if not self._due:
            return None
        return max(0.0, min(self._due.values()) - now)

    def evaluate(self, now: float, wall: float) -> list[Change]:
        """Evaluate every rule that is due at ``now`` (monotonic, the statistics' clock);
        ``wall`` is epoch seconds, for when an alarm was raised. Returns what changed."""
        changes: list[Change] = []
        for rule in self.rules:
            if self._due.get(rule.id, now) > now:
                continue
            self._due[rule.id] = now + rule.interval
            dimension = rule.scope
            for key in self._keys.get(rule.id, ()):
                summary = self.stats.query(dimension, key, rule.window, now)
                change = self._judge(rule, key, read(rule, summary), now, wall)
                if change is not None:
                    changes.append(change)
        return changes

    def active(self) -> list[ActiveAlarm]:
        """The alarms raised now, by rule and key."""
        return [self._active[k] for k in sorted(self._active)]

    def is_active(self, rule_id: str, key: str) -> bool:
        return (rule_id, key) in self._active

    # -- inside ---------------------------------------------------------------------------

    def _judge(
        self, rule: AlarmRule, key: str, reading: Reading, now: float, wall: float
    ) -> Change | None:
        current = self._active.get((rule.id, key))
        after = active_after(rule, reading, current is not None)
        if current is None:
            return self._raise(rule, key, reading, now, wall) if after else None
        if not after:
            if reading.attempts < rule.min_attempts:
                why = f"fewer than {rule.min_attempts} attempts in the window"
            elif reading.value is None:
                why = "nothing to measure in the window"
            else:
                why = "recovered"
            return self._clear(current, reading.value, reading.attempts, now, why)
        self._active[(rule.id, key)] = _updated(current, rule, reading)
        return None

    def _raise(
        self, rule: AlarmRule, key: str, reading: Reading, now: float, wall: float
    ) -> Change:
        direction = "below" if rule.below is not None else "above"
        alarm = ActiveAlarm(
            rule=rule.id,
            scope=rule.scope,
            key=key,
            metric=rule.metric,
            window=rule.window,
            direction=direction,
            threshold=rule.threshold,
            clear=rule.clear_at,
            value=reading.value,
            attempts=reading.attempts,
            actions=rule.actions,
            since=wall,
            since_monotonic=now,
        )
        self._active[(rule.id, key)] = alarm
        disabled = rule.disables and rule.scope == "gateway"
        if disabled:
            self.live.set_gateway_alarm(key, rule.id, True)
        if self.metrics is not None:
            self.metrics.alarm(rule.id, key, True)
        logger.warning(
            "event=alarm_raised rule=%s scope=%s key=%s metric=%s value=%s %s=%g window=%s"
            " attempts=%d actions=%s%s",
            rule.id,
            rule.scope,
            key,
            rule.metric,
            _shown(reading.value),
            direction,
            rule.threshold,
            rule.window,
            reading.attempts,
            ",".join(rule.actions),
            f"; gateway {key} out of routing until the alarm clears" if disabled else "",
            extra={
                "event": "alarm_raised",
                "rule": rule.id,
                "key": key,
                "metric": rule.metric,
                "value": reading.value,
                "threshold": rule.threshold,
            },
        )
        return Change(alarm, raised=True)

    def _clear(
        self, alarm: ActiveAlarm, value: float | None, attempts: int, now: float, why: str
    ) -> Change:
        del self._active[(alarm.rule, alarm.key)]
        back = self.live.set_gateway_alarm(alarm.key, alarm.rule, False)
        if self.metrics is not None:
            self.metrics.alarm(alarm.rule, alarm.key, False)
        lasted = max(0.0, now - alarm.since_monotonic)
        logger.warning(
            "event=alarm_cleared rule=%s scope=%s key=%s metric=%s value=%s clear=%g"
            " attempts=%d after=%.0fs (%s)%s",
            alarm.rule,
            alarm.scope,
            alarm.key,
            alarm.metric,
            _shown(value),
            alarm.clear,
            attempts,
            lasted,
            why,
            f"; gateway {alarm.key} back in routing" if back else "",
            extra={
                "event": "alarm_cleared",
                "rule": alarm.rule,
                "key": alarm.key,
                "metric": alarm.metric,
                "value": value,
                "why": why,
            },
        )
        return Change(alarm, raised=False, why=why)


def _updated(alarm: ActiveAlarm, rule: AlarmRule, reading: Reading) -> ActiveAlarm:
    """The raised alarm with the latest reading and the rule as it is now (a reload may
    have moved its thresholds or actions)."""
    return replace(
        alarm,
        direction="below" if rule.below is not None else "above",
        metric=rule.metric,
        window=rule.window,
        threshold=rule.threshold,
        clear=rule.clear_at,
        actions=rule.actions,
        value=reading.value,
        attempts=reading.attempts,
    )
