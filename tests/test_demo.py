"""The README's first command: the demo goes through min fill, scale-out and scale-in."""

from __future__ import annotations

from sshscale import demo


def test_demo_shows_all_three_phases(home, capsys):
    assert demo.main(["--job-seconds", "0.1", "--pause", "0"]) == 0
    out = capsys.readouterr().out
    assert "below min_size 2" in out
    assert "scale out        : +1" in out and "scale in         : -1" in out
    assert "spike -> scaled out to max_size" in out
    assert "Traceback" not in out
