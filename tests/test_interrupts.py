import os
import signal

import pytest

from nres.interrupts import Interrupted, deferred_stop, exit_code, stop_signals_raise


def test_exit_codes_are_128_plus_the_signal():
    assert [exit_code(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)] == [130, 143, 138]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
def test_outside_the_loop_a_stop_signal_raises_with_its_exit_code(signum):
    with pytest.raises(Interrupted) as info:
        with stop_signals_raise():
            os.kill(os.getpid(), signum)
    assert info.value.exit_code == exit_code(signum) and isinstance(info.value, KeyboardInterrupt)


def test_in_the_loop_the_first_signal_sets_a_flag_and_the_second_aborts(capsys):
    before = signal.getsignal(signal.SIGTERM)
    with deferred_stop() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop["signum"] == signal.SIGTERM
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGUSR1)
        assert info.value.exit_code == 138
    assert signal.getsignal(signal.SIGTERM) is before  # handlers restored
    assert "SIGTERM: saving a checkpoint" in capsys.readouterr().err
