"""Bad flags and failures: one line on stderr, exit 2 (130 for Ctrl-C), no traceback unless
``--debug``; bugs keep their traceback."""

import errno
import os
import subprocess
import sys

import pytest
import torch

import bagofdims.cli.cache as cache_cmd
from bagofdims.cli import SteerConfig, steer
from bagofdims.cli.app import run
from bagofdims.errors import BagOfDimsError, CacheError, InvalidArgument, OutOfRange


def one_error_line(code, err, command):
    """The error is exactly one stderr line, prefixed with the command; no traceback."""
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert errors[0].startswith(f"bagofdims {command}: error: ")
    return errors[0]


@pytest.mark.parametrize("argv,expected", [
    (["--batch-size", "0"], "--batch-size must be a positive number, got 0"),
    (["--batch-size", "-4"], "--batch-size must be a positive number, got -4"),
    (["--tokens", "-5"], "--tokens must be at least 1, got -5"),
    (["--tokens", "0"], "--tokens must be at least 1, got 0"),
    (["--device", "tpu:0"], "is not a device"),
    (["--no-bos", "--bos-token", "<bos>"], "--no-bos contradicts --bos-token"),
])
def test_capture_flags_are_checked_before_loading_the_model(argv, expected, tmp_path, monkeypatch, cli):
    import bagofdims.models

    def no_load(*a, **k):
        raise AssertionError("the model must not be loaded for a bad flag")

    monkeypatch.setattr(bagofdims.models, "load_model", no_load)
    code, _, err = cli("capture", "--model", "smollm2", "--out", tmp_path / "c", *argv)
    assert expected in one_error_line(code, err, "capture")


def test_tokens_beyond_the_vocabulary_names_its_size(model_dir, tmp_path, cli):
    code, _, err = cli("capture", "--model", model_dir, "--tokens", "500", "--out", tmp_path / "c",
                       "--device", "cpu")
    line = one_error_line(code, err, "capture")
    assert "--tokens 500 is larger than the vocabulary" in line and "96 tokens" in line
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("command", ["capture", "activations", "steer"])
def test_missing_cuda_or_mps_is_one_line(command, tmp_path, monkeypatch, cli):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    extra = {"capture": ["--out", tmp_path / "c"], "steer": ["--feature", "low"],
             "activations": ["--texts", __file__, "--out", tmp_path / "a"]}[command]
    code, _, err = cli(command, "--device", "cuda", *extra)
    line = one_error_line(code, err, command)
    assert "CUDA is not available" in line and "torch.cuda.is_available() is False" in line
    assert "use --device cpu" in line
    code, _, err = cli(command, "--device", "mps", *extra)
    assert "MPS is not available" in one_error_line(code, err, command)


def test_bad_site_is_a_clean_error(model_dir, tmp_path, cli):
    code, _, err = cli("capture", "--model", model_dir, "--sites", "resid.9", "--out",
                       tmp_path / "x", "--device", "cpu")
    assert "Valid sites" in one_error_line(code, err, "capture")


def test_query_dim_beyond_the_width(built, cli):
    code, _, err = cli("query", built[1], "--dim", "999", "--site", "resid.1")
    line = one_error_line(code, err, "query")
    assert "--dim 999" in line and "32 dims (0..31)" in line
    code, _, err = cli("query", built[1], "--dim", "-1")
    assert "--dim -1" in one_error_line(code, err, "query")


def test_query_unknown_site_lists_the_catalogs_sites(built, cli):
    for argv in (["low"], ["w45"], ["--dim", "3"]):
        code, _, err = cli("query", built[1], *argv, "--site", "final")
        line = one_error_line(code, err, "query")
        assert "--site final" in line and "resid.0, resid.1, resid.2" in line


def test_query_needs_a_name_or_dim_and_a_known_name(built, cli):
    code, _, err = cli("query", built[1])
    assert "--dim" in one_error_line(code, err, "query")
    code, _, err = cli("query", built[1], "zzz")
    assert "'zzz'" in one_error_line(code, err, "query")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_steer_strength_must_be_finite_and_nonnegative(value, monkeypatch, cli):
    import bagofdims.models

    monkeypatch.setattr(bagofdims.models, "load_model", lambda *a, **k: pytest.fail("loaded"))
    code, _, err = cli("steer", "--feature", "low", f"--strength={value}")
    assert "--strength must be a finite number >= 0" in one_error_line(code, err, "steer")


def test_steer_positions_and_mode_are_choices(capsys):
    from bagofdims.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["steer", "--feature", "low", "--positions", "first"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err and "'all'" in err and "'last'" in err
    with pytest.raises(InvalidArgument, match="--positions must be one of all, last"):
        steer(SteerConfig(feature="low", positions="first"))  # the Python API checks too
    with pytest.raises(InvalidArgument, match="--mode"):
        steer(SteerConfig(feature="low", mode="sideways"))


def test_steer_on_an_encoder_is_one_line(encoder_dir, built, cli):
    code, _, err = cli("steer", "--model", encoder_dir, "--feature", "low", "--catalog", built[1],
                       "--device", "cpu")
    line = one_error_line(code, err, "steer")
    assert "encoder without generate()" in line and "AttributeError" not in err


def test_parse_errors_are_the_parsers_usage(capsys):
    from bagofdims.cli.main import main

    for argv in (["capture", "--no-such-flag"], ["capture", "--batch-size", "many"], ["info"], []):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_debug_flag_and_env_reraise(tmp_path, monkeypatch, capsys):
    from bagofdims.cli.main import main

    assert main(["info", tmp_path]) == 2
    with pytest.raises(CacheError, match="not a sign cache"):
        main(["info", str(tmp_path), "--debug"])
    with pytest.raises(CacheError):
        main(["--debug", "info", str(tmp_path)])
    monkeypatch.setenv("BAGOFDIMS_DEBUG", "1")
    with pytest.raises(CacheError):
        main(["info", str(tmp_path)])


def test_debug_prints_the_traceback(tmp_path):
    code = "import sys; from bagofdims.cli.main import main; sys.exit(main())"
    env = {k: v for k, v in os.environ.items() if k != "BAGOFDIMS_DEBUG"}
    plain = subprocess.run([sys.executable, "-c", code, "info", str(tmp_path)], env=env,
                           capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().startswith("bagofdims info: error:")
    assert len(plain.stderr.strip().splitlines()) == 1
    debug = subprocess.run([sys.executable, "-c", code, "info", str(tmp_path), "--debug"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "CacheError" in debug.stderr


# -- the dispatcher, on a table of its own ---------------------------------------------------------
from dataclasses import dataclass  # noqa: E402


@dataclass
class Job:
    """A job."""

    out: str = "some/dir"
    """Where it writes."""


def _table(exc):
    def fail(cfg):
        raise exc

    return {"job": (Job, fail, "do the job"), "other": (Job, print, "another job")}


@pytest.mark.parametrize("err_no,fix", [
    (errno.ENOSPC, "cannot write x/y: no space left on the device; free space or choose another --out"),
    (errno.EACCES, "permission denied on x/y; choose a writable --out"),
    (errno.EROFS, "cannot write x/y: read-only file system; choose another --out"),
])
def test_failed_writes_are_one_line_naming_the_path(err_no, fix, capsys):
    code = run(_table(OSError(err_no, os.strerror(err_no))), ["job", "--out", "x/y"], prog="tool")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"tool job: error: {fix}")
    assert len(err.splitlines()) == 1
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(err_no, os.strerror(err_no), "x/y/part.bin")
    assert run(_table(wrapped), ["job"], prog="tool") == 2  # found through the cause
    assert "x/y/part.bin" in capsys.readouterr().err
    text_only = Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                          'message: "No space left on device" })')
    if err_no == errno.ENOSPC:
        assert run(_table(text_only), ["job"], prog="tool") == 2
        assert "cannot write some/dir: no space left" in capsys.readouterr().err


def test_failed_capture_write_names_out(monkeypatch, tmp_path, cli):
    def full(cfg):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_cmd, "build_cache", full)
    code, _, err = cli("capture", "--out", tmp_path / "c")
    line = one_error_line(code, err, "capture")
    assert str(tmp_path / "c") in line and "free space or choose another --out" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_unwritable_out_is_one_line(model_dir, tmp_path, cli):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = cli("capture", "--model", model_dir, "--out", locked / "c", "--device", "cpu")
    finally:
        locked.chmod(0o700)
    assert "permission denied" in one_error_line(code, err, "capture")


def test_interrupt_is_one_line_exit_130(capsys):
    assert run(_table(KeyboardInterrupt()), ["job"], prog="tool") == 130
    err = capsys.readouterr().err
    assert err.startswith("tool job: interrupted") and len(err.strip().splitlines()) == 1
    with pytest.raises(KeyboardInterrupt):
        run(_table(KeyboardInterrupt()), ["job", "--debug"], prog="tool")


def test_bugs_keep_their_traceback():
    with pytest.raises(ZeroDivisionError):
        run(_table(ZeroDivisionError("bug")), ["job"], prog="tool")
    with pytest.raises(FileNotFoundError):  # a plain OSError that is not a failed write
        run(_table(FileNotFoundError(errno.ENOENT, "gone", "f")), ["job"], prog="tool")
    assert issubclass(OutOfRange, BagOfDimsError)


def test_closed_pipe_is_not_a_traceback():
    # `bagofdims sites -v | head -1`: the reader is gone; stop quietly
    assert run(_table(BrokenPipeError(errno.EPIPE, "Broken pipe")), ["job"], prog="tool") == 1
