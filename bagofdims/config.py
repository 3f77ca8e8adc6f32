"""Dataclass configs that are also command-line flags (one definition serves Python and CLI).

Each field becomes ``--field-name``; its type gives the parser, ``metadata["help"]`` the help
text, and a field without a default becomes a positional argument.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing


def _parser_for(tp):
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        return _parser_for(args[0])
    if origin in (list, tuple):
        return "list", args[0] if args else str
    return "scalar", tp


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got '{text}'")


def add_arguments(parser: argparse.ArgumentParser, cls, positional: str | None = None,
                  defaults: dict | None = None) -> None:
    """Add one flag per dataclass field of ``cls``.

    ``positional`` names a field given without a flag (optional when it has a default);
    ``defaults`` overrides field defaults (e.g. a larger preset of the same config).
    """
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, tp = _parser_for(hints[f.name])
        help_text = f.metadata.get("help", "")
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        if defaults and f.name in defaults:
            has_default, default = True, defaults[f.name]
        kwargs: dict = {"help": f"{help_text} (default: {default})" if has_default else help_text}
        if tp is bool:
            kwargs["type"] = _bool
            kwargs["nargs"] = "?"
            kwargs["const"] = True
        elif kind == "list":
            kwargs["type"] = tp
            kwargs["nargs"] = "+"
        else:
            kwargs["type"] = tp
        if f.name == positional and has_default:
            kwargs.pop("const", None)
            parser.add_argument(f.name, default=default, **{**kwargs, "nargs": "?"})
        elif has_default:
            kwargs["default"] = default
            parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, **kwargs)
        else:
            parser.add_argument(f.name, **kwargs)


def from_args(cls, ns: argparse.Namespace):
    """Build ``cls`` from parsed arguments."""
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})
