import gc
import importlib
import os
import signal
import sys

import pytest

from nres.interrupts import Interrupted, check, clear, deferred_stop, exit_code, pending, stop_signals_raise


@pytest.fixture(autouse=True)
def no_stop_left():
    """Each test starts and ends without a recorded stop (every stop signal is recorded)."""
    clear()
    yield
    clear()


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


def test_a_stop_raised_in_a_garbage_collection_callback_is_kept_for_the_next_safe_point(capfd):
    def callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(callback)
            os.kill(os.getpid(), signal.SIGTERM)  # Interrupted is raised here, where Python drops it

    with stop_signals_raise():
        gc.callbacks.append(callback)
        gc.collect()
        assert pending() == signal.SIGTERM
        with pytest.raises(Interrupted) as info:
            check()
    assert info.value.exit_code == 143
    assert "Exception ignored" not in capfd.readouterr().err  # dropped quietly, not printed


def test_a_stop_raised_in_a_finaliser_is_kept_for_the_next_safe_point(capfd):
    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGUSR1)

    with stop_signals_raise():
        Finalised()
        assert pending() == signal.SIGUSR1
        with pytest.raises(Interrupted):
            check()
    assert "Exception ignored" not in capfd.readouterr().err


def test_a_stop_during_an_import_lets_the_import_finish_then_raises_at_the_next_safe_point(tmp_path,
                                                                                          monkeypatch):
    (tmp_path / "nres_test_signalled_module.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGINT)\nfinished = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with stop_signals_raise():
        module = importlib.import_module("nres_test_signalled_module")
        assert module.finished and pending() == signal.SIGINT  # not half-imported
        with pytest.raises(Interrupted):
            check()
    sys.modules.pop("nres_test_signalled_module")


def test_the_training_loop_takes_over_a_stop_deferred_before_it(capfd):
    def callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(callback)
            os.kill(os.getpid(), signal.SIGTERM)

    with stop_signals_raise():
        gc.callbacks.append(callback)
        gc.collect()
        with deferred_stop() as stop:
            assert stop["signum"] == signal.SIGTERM  # the loop saves a checkpoint and stops first thing


def test_a_stop_the_command_could_not_raise_still_sets_its_exit_code(tmp_path, monkeypatch, capsys):
    from nres import cli

    # A command whose module receives the stop while it is imported: deferred, then its code.
    (tmp_path / "nres_test_stop_on_import.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGUSR1)\nmain = lambda argv: 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(cli.COMMANDS, "nres-test", "nres_test_stop_on_import:main")
    try:
        assert cli.main(["nres-test"]) == 138
    finally:
        sys.modules.pop("nres_test_stop_on_import", None)
    assert capsys.readouterr().err.strip() == "nres: aborted by SIGUSR1 (the last checkpoint, if any, is intact)"
    assert pending() is None  # acted on: a later command in this process is not stopped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_end_with_parent_stops_a_child_whose_parent_is_gone_and_keeps_one_whose_parent_lives():
    import subprocess

    code = ("import os, time; from nres import interrupts; interrupts.end_with_parent(); "
            "print(interrupts.PARENT_ENV in os.environ, flush=True); time.sleep(float(os.environ['SLEEP']))")
    run = lambda parent, sleep: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                                               env={**os.environ, "NRES_PARENT_PID": parent, "SLEEP": sleep})
    gone = run("1", "30")  # its parent is this test, not pid 1: as if the named parent had died
    assert gone.returncode == -signal.SIGTERM and gone.stdout == "", (gone.returncode, gone.stdout)
    kept = run(str(os.getpid()), "0")
    assert kept.returncode == 0 and kept.stdout.strip() == "False", (kept.returncode, kept.stdout, kept.stderr)
