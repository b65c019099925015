"""What the tests expect of a command that refuses bad input: exit code 2 and one ``error:`` line."""

from __future__ import annotations


def one_error_line(capsys, rc: int, *needles: str) -> str:
    """Assert exit code 2 and a single ``error:`` line on stderr containing ``needles``; return it."""
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    for needle in needles:
        assert needle in err, err
    return err
