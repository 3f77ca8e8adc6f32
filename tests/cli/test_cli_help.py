"""Flags come from the config dataclasses: help from field docstrings, ``--flag/--no-flag``
booleans, the README's command lines parse, and ``bows`` uses the same dispatcher."""

import ast
import inspect
import re
import shlex
import textwrap
from pathlib import Path

import pytest

from bagofdims.cli import CacheConfig, CatalogConfig, QueryConfig, SteerConfig
from bagofdims.cli.app import parse
from bagofdims.cli.main import COMMANDS
from superposition.cli import COMMANDS as BOWS
from superposition.pipeline import FULL, PipelineConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def help_text(table, command, prog, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one option per line
    with pytest.raises(SystemExit) as exit_:
        parse(table, [command, "--help"], prog)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def field_docstrings(cls) -> dict[str, str]:
    """Field name -> the docstring under it, read from the class source (as tyro does)."""
    docs = {}
    for klass in reversed(cls.__mro__[:-1]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and \
                    isinstance(b.value, ast.Constant) and isinstance(b.value.value, str):
                docs[a.target.id] = b.value.value
    return docs


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_shows_every_field_docstring(command, capsys, monkeypatch):
    text = " ".join(help_text(COMMANDS, command, "bagofdims", capsys, monkeypatch).split())
    config = COMMANDS[command][0]
    docs = field_docstrings(config)
    assert set(docs) == set(config.__dataclass_fields__), "every field has a docstring"
    for doc in docs.values():
        assert " ".join(doc.split()) in text
        assert "(default" not in doc, "the default is shown once, by the parser"
    assert "(default: None)" not in text
    assert "--debug, --no-debug" in text


def test_booleans_are_flag_pairs(capsys, monkeypatch):
    text = help_text(COMMANDS, "capture", "bagofdims", capsys, monkeypatch)
    for flag in ("--bos, --no-bos", "--magnitudes, --no-magnitudes", "--overwrite, --no-overwrite"):
        assert flag in text
    assert "(default: runs/MODEL/cache)" in text and "(default: on for decoder LMs)" in text
    text = help_text(COMMANDS, "sites", "bagofdims", capsys, monkeypatch)
    assert "-v, --verbose, --no-verbose" in text


def test_config_dataclass_is_the_cli():
    name, cfg, debug = parse(COMMANDS, ["capture", "--sites", "k.1", "v.1", "--bos",
                                        "--batch-size", "7"], "bagofdims")
    assert name == "capture" and not debug
    assert cfg.sites == ["k.1", "v.1"] and cfg.bos is True and cfg.batch_size == 7
    assert parse(COMMANDS, ["capture"], "bagofdims")[1] == CacheConfig()
    cfg = parse(COMMANDS, ["capture", "--bos-token", "<|endoftext|>"], "bagofdims")[1]
    assert cfg.bos is None and cfg.bos_token == "<|endoftext|>"
    assert parse(COMMANDS, ["capture", "--no-bos"], "bagofdims")[1].bos is False


def test_lists_do_not_swallow_positionals():
    # flags before and after the positionals, in any order
    _, cfg, debug = parse(COMMANDS, ["query", "--site", "resid.2", "cat", "fruit", "-k", "3",
                                     "--debug"], "bagofdims")
    assert cfg == QueryConfig(catalog="cat", name="fruit", site="resid.2", k=3) and debug
    _, cfg, _ = parse(COMMANDS, ["info", "some/cache"], "bagofdims")
    assert cfg.path == "some/cache"
    _, cfg, _ = parse(COMMANDS, ["catalog", "--sites", "resid.1", "resid.2", "--out", "x"], "bagofdims")
    assert cfg.sites == ["resid.1", "resid.2"] and cfg.out == "x"


def readme_commands() -> list[list[str]]:
    text = README.read_text()
    section = text[text.index("## Command line"):]
    block = section[section.index("```bash") + 7:section.index("```", section.index("```bash") + 7)]
    lines = [line.split("  #")[0].strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_readme_command_lines_parse():
    lines = readme_commands()
    assert {argv[0] for argv in lines} == {"bagofdims", "bows"}
    seen = set()
    for argv in lines:
        table = COMMANDS if argv[0] == "bagofdims" else BOWS
        name, cfg, _ = parse(table, argv[1:], argv[0])
        seen.add((argv[0], name))
        assert isinstance(cfg, table[name][0])
    assert {n for p, n in seen if p == "bagofdims"} == set(COMMANDS)  # every command shown
    acts = next(parse(COMMANDS, a[1:], "bagofdims")[1] for a in lines if a[1] == "activations")
    assert (acts.sites, acts.texts, acts.out) == (["resid.10"], "docs.txt", "runs/acts")
    st = next(parse(COMMANDS, a[1:], "bagofdims")[1] for a in lines if a[1] == "steer")
    assert isinstance(st, SteerConfig) and st.feature == "fruit" and st.catalog is None


def test_catalog_defaults_are_derived():
    cfg = parse(COMMANDS, ["catalog"], "bagofdims")[1]
    assert cfg == CatalogConfig() and cfg.cache is None and cfg.out is None


# -- bows ------------------------------------------------------------------------------------------
def test_bows_full_is_the_pipeline_with_the_full_preset(capsys, monkeypatch):
    import superposition.cli as bows

    calls = []
    monkeypatch.setattr(bows, "print_full_estimate", lambda cfg: calls.append(("estimate", cfg)))
    monkeypatch.setattr(bows, "run_pipeline", lambda cfg: calls.append(("run", cfg)))
    assert bows.main(["full", "--vocab", "500"]) == 0
    assert [c[0] for c in calls] == ["estimate", "run"]
    assert calls[1][1] == PipelineConfig(**{**FULL, "vocab": 500})
    calls.clear()
    assert bows.main(["small"]) == 0
    assert calls == [("run", PipelineConfig())]
    text = help_text(BOWS, "full", "bows", capsys, monkeypatch)
    assert "(default: 10000)" in text and "--synthetic, --no-synthetic" in text


def test_bows_full_estimate_prints_minutes(capsys):
    from superposition.cli import print_full_estimate

    print_full_estimate(PipelineConfig(vocab=200, latents="16", batch_size=8, device="cpu"))
    out = capsys.readouterr().out
    assert re.search(r"full configuration on cpu: ~\d+ ms/step x 3170 steps = ~\d+ min for the largest model \(9 models in all", out)


def test_bows_analyze_takes_the_run_as_positional_and_errors_are_one_line(tmp_path, capsys):
    import superposition.cli as bows

    _, cfg, _ = parse(BOWS, ["analyze", "runs/x", "--out", "r"], "bows")
    assert (cfg.run, cfg.out) == ("runs/x", "r")
    assert bows.main(["analyze", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bows analyze: error: ") and len(err.strip().splitlines()) == 1


def test_bows_runs_a_command_through_the_dispatcher(tmp_path):
    import json

    import superposition.cli as bows

    out = tmp_path / "syn"
    assert bows.main(["synthetic", "--steps", "10", "--latent", "2..3", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["steps"] == 10 and metrics["config"]["latent"] == "2..3"


def flag_help(text: str) -> dict[str, str]:
    """Option (``--name`` / ``[METAVAR]``) -> its help, the ``(default: ...)`` cut, from tyro's
    boxed help; an option whose name fills its column has its help on the next lines."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        inner = line.strip().strip("│").strip()
        if line.lstrip().startswith(("╭", "╰")) or not inner:
            entries.append([])  # a box ends the entry before it
        elif re.match(r"--?\w|\[", inner):  # not the rule under the description
            entries.append([inner])
        elif entries and entries[-1]:
            entries[-1].append(inner)
    helps = {}
    for lines in filter(None, entries):
        spec, _, rest = "  ".join(lines).partition("  ")
        name = spec.split(",")[0].split()[0]
        helps[name] = " ".join(re.sub(r"\(default: [^)]*\)\s*$", "", " ".join(rest.split())).split())
    return helps


@pytest.mark.parametrize("command", list(BOWS))
def test_bows_help_shows_a_docstring_for_every_field(command, capsys, monkeypatch):
    from superposition.data import DataConfig
    from superposition.pipeline import PipelineConfig
    from superposition.report import AnalyzeConfig
    from superposition.synthetic import SyntheticConfig
    from superposition.train import TrainConfig

    for base in (DataConfig, TrainConfig, AnalyzeConfig, SyntheticConfig, PipelineConfig):
        docs = field_docstrings(base)
        assert set(docs) == set(base.__dataclass_fields__), f"{base.__name__}: a field lacks a docstring"
        assert all(d.strip() and "(default" not in d for d in docs.values())
    config = BOWS[command][0]
    helps = flag_help(help_text(BOWS, command, "bows", capsys, monkeypatch))
    docs = field_docstrings(config)  # a subclass's docstring (bows analyze's RUN) wins, as in tyro
    for field in config.__dataclass_fields__:
        name = "[RUN]" if (command, field) == ("analyze", "run") else "--" + field.replace("_", "-")
        assert helps.get(name), f"bows {command} {name}: no help"
        assert helps[name] == " ".join(docs[field].split())
