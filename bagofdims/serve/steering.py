"""Live steering for the browser: validated requests, streamed side-by-side generations.

A request runs in one worker thread that holds the model's lock for the whole job, so one
generation runs at a time per model (a sign flip changes every forward pass of the model, so two
jobs at once would steer each other). The worker generates greedily, in turn: the baseline, the
feature's flip, and the control's flip when one is asked for, each through a
:class:`transformers.TextIteratorStreamer` whose text goes into one event queue the page reads as
server-sent events. The flip is entered in the worker thread that calls ``generate``, so it needs
no ``any_thread``. After each continuation its perplexity under the unsteered model is computed.

A sweep (``action=sweep``) runs :func:`~bagofdims.steering.effects.strength_sweep` in the same
kind of worker, under the same lock: short greedy continuations at several strengths, one ``row``
event each as it finishes, then the first strength whose perplexity exceeds twice the baseline's.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from dataclasses import dataclass, field

import torch

from bagofdims.devices import input_device
from bagofdims.errors import BagOfDimsError, InvalidArgument, NotFound
from bagofdims.steering.effects import MAX_SWEEP, SWEEP_STRENGTHS, check_strengths
from bagofdims.steering.effects import continuation_perplexity as perplexity

log = logging.getLogger(__name__)

MODES = ("away", "toward", "set")
POSITIONS = ("all", "last")
CONTROLS = ("none", "random", "disjoint", "concept")
MAX_PROMPT_CHARS = 1000
MAX_NEW_TOKENS = 64
MAX_STRENGTH = 100.0
ACTIONS = ("generate", "sweep")
SWEEP_TOKENS = 16  # new tokens per strength of a sweep: enough to judge fluency, quick


@dataclass
class SteerRequest:
    """A checked steering job."""

    features: list  # Feature objects to flip
    prompt: str
    mode: str = "away"
    strength: float = 1.0
    positions: str = "all"
    control: str = "none"
    other: object = None  # the other concept's Feature when control == "concept"
    tokens: int = 24
    form: dict = field(default_factory=dict)  # the raw form, to refill the page
    action: str = "generate"  # or "sweep": the feature's flip at each of ``sweep``'s strengths
    sweep: list = field(default_factory=list)  # ascending strengths (action == "sweep")


def parse_request(cat, form: dict) -> SteerRequest:
    """A :class:`SteerRequest` from form fields (strings); raise InvalidArgument / NotFound with a
    message for the page."""
    from bagofdims.steering.effects import concept_prompts

    names = [n.strip() for n in str(form.get("feature", "")).split(",") if n.strip()]
    if not names:
        raise InvalidArgument("Choose a feature: type a category name of the catalog (several: "
                              "separate them with commas).")
    site = str(form.get("site") or "") or None
    if site is not None and site not in cat.sites:
        raise NotFound(f"Site '{site}' is not in this catalog; pick one of {', '.join(cat.sites)}.")
    features = [_feature(cat, n, site) for n in names]
    mode = str(form.get("mode", "away"))
    if mode not in MODES:
        raise InvalidArgument(f"Mode '{mode}' is not one of {', '.join(MODES)}.")
    positions = str(form.get("positions", "all"))
    if positions not in POSITIONS:
        raise InvalidArgument(f"Positions '{positions}' is not one of {', '.join(POSITIONS)}.")
    strength = _number(form.get("strength", "1.0"), "Strength")
    if not 0 <= strength <= MAX_STRENGTH:
        raise InvalidArgument(f"Strength must be a finite number from 0 to {MAX_STRENGTH:g} "
                              f"(1 is a pure sign flip), not {strength:g}.")
    tokens = _number(form.get("tokens", "24"), "New tokens")
    if tokens != int(tokens) or not 1 <= tokens <= MAX_NEW_TOKENS:
        raise InvalidArgument(f"New tokens must be a whole number from 1 to {MAX_NEW_TOKENS}.")
    action = str(form.get("action") or "generate")
    if action not in ACTIONS:
        raise InvalidArgument(f"Action '{action}' is not one of {', '.join(ACTIONS)}.")
    control = str(form.get("control", "none")) if action == "generate" else "none"  # a sweep has none
    if control not in CONTROLS:
        raise InvalidArgument(f"Control '{control}' is not one of {', '.join(CONTROLS)}.")
    other = None
    if control == "concept":
        name = str(form.get("other", "")).strip()
        if not name:
            raise InvalidArgument("The 'another concept' control needs a concept name in the box "
                                  "beside it.")
        other = _feature(cat, name, features[0].site)
    prompt = str(form.get("prompt", ""))
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidArgument(f"The prompt has {len(prompt)} characters; the limit is "
                              f"{MAX_PROMPT_CHARS}. Shorten it.")
    if not prompt.strip():
        try:
            prompt = concept_prompts(features[0], n=1)[0]
        except InvalidArgument:
            raise InvalidArgument(f"'{features[0].name}' has too few anchor words to build a "
                                  "prompt from; type a prompt.") from None
    sweep = parse_strengths(form.get("strengths")) if action == "sweep" else []
    return SteerRequest(features, prompt, mode, strength, positions, control, other, int(tokens),
                        dict(form), action, sweep)


def parse_strengths(raw) -> list[float]:
    """The sweep's strengths from a comma-separated field (empty: the default list)."""
    parts = [p for p in str(raw or "").replace(",", " ").split() if p]
    if not parts:
        return list(SWEEP_STRENGTHS)
    if len(parts) > MAX_SWEEP:
        raise InvalidArgument(f"A sweep takes at most {MAX_SWEEP} strengths, got {len(parts)}; "
                              "drop some.")
    values = [_number(p, "Each sweep strength") for p in parts]
    bad = [v for v in values if not 0 <= v <= MAX_STRENGTH]
    if bad:
        raise InvalidArgument(f"Sweep strengths must be from 0 to {MAX_STRENGTH:g}, not "
                              f"{', '.join(f'{v:g}' for v in bad)}.")
    return check_strengths(values)


def _feature(cat, name: str, site: str | None):
    if name not in cat.names:
        close = [f.name for f in cat.search(name)[:5]]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise NotFound(f"No feature named '{name}' in this catalog.{hint}")
    return cat.get(name, site)


def _number(raw, what: str) -> float:
    try:
        v = float(str(raw).strip())
    except ValueError:
        raise InvalidArgument(f"{what} must be a number, not '{raw}'.") from None
    if not math.isfinite(v):
        raise InvalidArgument(f"{what} must be a finite number, not '{raw}'.")
    return v


def _streamer_class():
    from transformers import TextIteratorStreamer

    class QueueStreamer(TextIteratorStreamer):
        """Sends each piece of finished text to the job's event queue, tagged with its column."""

        def __init__(self, tok, side: str, events: queue.Queue):
            super().__init__(tok, skip_prompt=True, skip_special_tokens=True)
            self.side, self.events = side, events

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                self.events.put(("token", {"side": self.side, "text": text}))

    return QueueStreamer


class _Cancelled:
    """A stopping criterion that ends generation once the page has gone away."""

    def __init__(self, flag: threading.Event):
        self.flag = flag

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.flag.is_set(), dtype=torch.bool,
                          device=input_ids.device)


def run_job(model, tok, req: SteerRequest, lock: threading.Lock, events: queue.Queue,
            cancel: threading.Event) -> None:
    """The worker: put ``(event, data)`` tuples in ``events``; always ends with done or fail."""
    _locked(lock, events, cancel, "Generation", lambda: _generate(model, tok, req, events, cancel))


def run_sweep(model, tok, req: SteerRequest, lock: threading.Lock, events: queue.Queue,
              cancel: threading.Event) -> None:
    """The sweep's worker: a ``row`` event per strength (the baseline first, each with the chart
    of the rows so far), then ``done`` with the verdict; or ``fail``."""
    _locked(lock, events, cancel, "The sweep", lambda: _sweep(model, tok, req, events, cancel))


def _locked(lock, events, cancel, what: str, work) -> None:
    """Run ``work`` holding the model's lock (waiting in turn); errors become a ``fail`` event."""
    try:
        if not lock.acquire(blocking=False):
            events.put(("status", {"message": "Waiting for the job before this one…"}))
            lock.acquire()
        try:
            if not cancel.is_set():
                work()
        finally:
            lock.release()
    except BagOfDimsError as err:
        events.put(("fail", {"message": str(err)}))
    except Exception:  # a bug: logged with its traceback here, one line on the page
        log.exception("steering job failed")
        events.put(("fail", {"message": f"{what} failed inside the server (see its log); "
                                        "try other settings."}))


def _sweep(model, tok, req: SteerRequest, events: queue.Queue, cancel: threading.Event) -> None:
    from bagofdims.serve.charts import sweep_chart
    from bagofdims.steering.effects import DEGRADE_FACTOR, degrades_at, strength_sweep

    events.put(("status", {"message": f"Sweeping {len(req.sweep)} strengths…"}))
    events.put(("prompt", {"prompt": req.prompt}))
    rows: list[dict] = []

    def row(r: dict) -> None:
        rows.append(r)
        events.put(("row", {**_finite(r), "chart": str(sweep_chart(rows, DEGRADE_FACTOR))}))

    strength_sweep(model, tok, req.features, req.prompt, req.sweep, mode=req.mode,
                   positions=req.positions, max_new_tokens=SWEEP_TOKENS, on_row=row, cancel=cancel)
    if cancel.is_set():
        return
    at = degrades_at(rows, DEGRADE_FACTOR)
    verdict = (f"Text degrades from strength {at:g} (perplexity above {DEGRADE_FACTOR:g}× the "
               "baseline's)." if at is not None else
               f"No degradation up to strength {req.sweep[-1]:g} (perplexity within "
               f"{DEGRADE_FACTOR:g}× the baseline's).")
    events.put(("done", {"message": "Done: " + verdict, "degrades_at": at, "verdict": verdict}))


def _finite(row: dict) -> dict:
    """A row for JSON: NaN / infinity become None (JSON has neither)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def _generate(model, tok, req: SteerRequest, events: queue.Queue, cancel: threading.Event) -> None:
    from transformers import StoppingCriteriaList

    from bagofdims.steering.effects import concept_tokens, require_lm
    from bagofdims.steering.interventions import sign_flip

    require_lm(model)
    events.put(("status", {"message": "Generating…"}))
    events.put(("prompt", {"prompt": req.prompt}))
    device = input_device(model)
    enc = tok([req.prompt], return_tensors="pt").to(device)
    prompt_ids = enc["input_ids"][0]
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and len(prompt_ids) + req.tokens > limit:
        raise InvalidArgument(f"The prompt ({len(prompt_ids)} tokens) plus {req.tokens} new "
                              f"tokens exceeds the model's {limit} positions; shorten it.")
    concept = torch.cat([concept_tokens(f) for f in req.features]).unique()
    streamer = _streamer_class()
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    stop = StoppingCriteriaList([_Cancelled(cancel)])
    runs = [("baseline", None), ("steered", req.features)]
    if req.control in ("random", "disjoint"):
        runs.append(("control", req.control))
    elif req.control == "concept":
        runs.append(("control", req.other))
    for side, what in runs:
        if cancel.is_set():
            return
        flip = None
        if what is not None:
            kw = dict(mode=req.mode, strength=req.strength, positions=req.positions)
            flip = (sign_flip(model, req.features, control=what, **kw) if side == "control"
                    else sign_flip(model, what, **kw))
        with flip if flip is not None else _nothing():
            out = model.generate(**enc, max_new_tokens=req.tokens, do_sample=False,
                                 pad_token_id=pad, streamer=streamer(tok, side, events),
                                 stopping_criteria=stop, return_dict_in_generate=True,
                                 output_logits=True)
        # the first step's logits are the prompt's next-token distribution under this
        # side's flip: the concept's mass costs no extra forward pass
        probs = out.logits[0][0].float().softmax(-1)
        events.put(("mass", {"side": side, "mass": float(probs[concept.to(probs.device)].sum())}))
        new = out.sequences[0, len(prompt_ids):]
        events.put(("ppl", {"side": side, "ppl": perplexity(model, prompt_ids, new)}))
        events.put(("end", {"side": side, "n_tokens": len(new),
                            "text": tok.decode(new, skip_special_tokens=True)}))
    events.put(("done", {"message": "Done: greedy continuations, baseline first."}))


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
