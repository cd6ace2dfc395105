"""The numbered SIGHUPs of ``workers.reload_acks``, across a real fork."""

from __future__ import annotations

from forking import exit_code, forked

from softswitch.workers.reload_acks import ReloadAcks


def test_an_answer_covers_every_sighup_asked_before_its_handler_ran() -> None:
    acks = ReloadAcks(3)
    acks.ask(1)
    acks.ask(1)  # two SIGHUPs that reach the worker as one: its handler reads 2

    def worker() -> int:
        upto = acks.asked(1)
        acks.answer(1, upto)
        acks.answer(1, 1)  # an older reload's answer, late: never goes back
        return 0

    assert exit_code(forked(worker)) == 0
    assert not acks.unanswered(1)
    acks.ask(1)  # a third, not answered: the worker died in its reload
    assert acks.unanswered(1)
    assert not acks.unanswered(0)
    assert not acks.unanswered(2)
    acks.reset(1)  # its replacement starts at 0
    assert not acks.unanswered(1)
    assert acks.asked(1) == 0
